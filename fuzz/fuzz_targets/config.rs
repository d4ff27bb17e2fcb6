#![no_main]
//! Configuration loading: any text is either a config or a list of
//! problems, never a panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Secrets and TLS files named in the text are read as configured; the
    // fuzzer only finds paths that exist by chance, and reading is harmless.
    let _ = hookbridge_config::Config::from_toml(text);
});
