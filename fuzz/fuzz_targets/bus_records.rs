#![no_main]
//! The bus's stored formats: embedded-bus records (live, delayed, dead
//! letters) and what NATS and Kafka read back (event and failure JSON).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hookbridge_bus::fuzzing::embedded_records(data);
    hookbridge_bus::fuzzing::broker_payloads(data);
});
