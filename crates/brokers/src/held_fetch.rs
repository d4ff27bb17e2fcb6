//! Fetches answered as Kafka answers them, in front of noida-db's engine.
//!
//! A Kafka broker answers a Fetch that finds no records after
//! `max_wait_ms`, or as soon as records arrive. noida-db answers it at once,
//! so every consumer with nothing to read asks again straight away: a busy
//! loop per idle group, in the client and in the broker. It also ignores
//! the request's size limits, so a large backlog comes back as one answer
//! larger than a client accepts. This relay sits between each client
//! connection and the engine and forwards every request; a Fetch whose
//! answer has no records it holds, asking the engine again when any client
//! produces, until `max_wait_ms` has passed; an answer larger than the
//! request's `max_bytes` it cuts to whole record batches within it (the
//! first batch always goes, as in Kafka); a group's first join it can hold
//! as Kafka's `group.initial.rebalance.delay.ms` does. It does not apply the smaller
//! `partition_max_bytes`: the engine copies a partition's whole rest into
//! every answer, so cutting each to it makes a drain quadratic.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{FetchRequest, FetchResponse, JoinGroupRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;
const JOIN_GROUP: i16 = 11;
/// Longest hold whatever a request asks (librdkafka's default is 500 ms).
const MAX_HOLD: Duration = Duration::from_secs(1);

/// What the relays of one broker share: a count of the produce requests
/// forwarded, which held fetches wait on, of the fetches answered, and the
/// groups that have joined.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    count: Mutex<u64>,
    moved: Condvar,
    pub(crate) fetches: AtomicU64,
    /// How long a group's first join waits (Kafka's
    /// `group.initial.rebalance.delay.ms`, 3 s by default there).
    pub(crate) first_join_delay: Duration,
    joined: Mutex<std::collections::HashSet<String>>,
}

impl Shared {
    pub(crate) fn new(first_join_delay: Duration) -> Self {
        Self { first_join_delay, ..Self::default() }
    }

    /// Whether `group` joins for the first time.
    fn first_join(&self, group: &str) -> bool {
        self.joined.lock().expect("joined lock").insert(group.to_owned())
    }

    fn bump(&self) {
        *self.count.lock().expect("produced lock") += 1;
        self.moved.notify_all();
    }

    fn now(&self) -> u64 {
        *self.count.lock().expect("produced lock")
    }

    /// Waits until the count passes `seen` or `until`; whether it moved.
    fn wait_past(&self, seen: u64, until: Instant) -> bool {
        let mut count = self.count.lock().expect("produced lock");
        while *count == seen {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = self.moved.wait_timeout(count, left).expect("produced lock").0;
        }
        true
    }
}

/// Serves one client connection through a connection of its own to the
/// engine listening on `engine`.
pub(crate) fn relay(client: TcpStream, engine: std::net::SocketAddr, shared: &Shared) {
    let Ok(upstream) = TcpStream::connect(engine) else { return };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client, mut upstream) = (client, upstream);
    while let Some(request) = read_frame(&mut client) {
        let (key, version) = match request.get(..4) {
            Some(h) => (i16::from_be_bytes([h[0], h[1]]), i16::from_be_bytes([h[2], h[3]])),
            None => return,
        };
        if key == PRODUCE {
            // Counted once the engine has it: a woken fetch then finds it.
            let Some(answer) = exchange(&mut upstream, &request) else { return };
            shared.bump();
            if write_frame(&mut client, &answer).is_err() {
                return;
            }
            continue;
        }
        if key == JOIN_GROUP && !shared.first_join_delay.is_zero() {
            let mut buf = request.clone();
            let group = RequestHeader::decode(&mut buf, JoinGroupRequest::header_version(version))
                .and_then(|_| JoinGroupRequest::decode(&mut buf, version));
            if group.is_ok_and(|join| shared.first_join(join.group_id.as_str())) {
                std::thread::sleep(shared.first_join_delay);
            }
        }
        let ask = (key == FETCH).then(|| Ask::read(&request, version)).flatten();
        // Read before asking: a produce after it wakes the hold below.
        let mut seen = shared.now();
        let Some(mut answer) = exchange(&mut upstream, &request) else { return };
        if let Some(ask) = &ask {
            let until = Instant::now() + ask.wait.min(MAX_HOLD);
            let mut read = Answer::read(&answer, version);
            while read.as_ref().is_some_and(Answer::is_empty) && Instant::now() < until {
                shared.wait_past(seen, until);
                seen = shared.now();
                let Some(again) = exchange(&mut upstream, &request) else { return };
                answer = again;
                read = Answer::read(&answer, version);
            }
            if let Some(cut) = read.and_then(|read| read.cut(ask, version)) {
                answer = cut;
            }
        }
        if key == FETCH {
            shared.fetches.fetch_add(1, Ordering::Relaxed);
        }
        if write_frame(&mut client, &answer).is_err() {
            return;
        }
    }
}

/// Accepts the engine's own connections on a listener only the relays use.
pub(crate) fn engine_listener(engine: noida::kafka::engine::Engine) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("bound");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let engine = engine.clone();
            std::thread::spawn(move || noida::kafka::connection::handle_connection(stream, engine));
        }
    });
    addr
}

fn exchange(upstream: &mut TcpStream, request: &[u8]) -> Option<Bytes> {
    write_frame(upstream, request).ok()?;
    read_frame(upstream)
}

fn read_frame(stream: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0; 4];
    stream.read_exact(&mut len).ok()?;
    let len = usize::try_from(i32::from_be_bytes(len)).ok()?;
    let mut frame = vec![0; len];
    stream.read_exact(&mut frame).ok()?;
    Some(Bytes::from(frame))
}

fn write_frame(stream: &mut TcpStream, frame: &[u8]) -> std::io::Result<()> {
    let len = i32::try_from(frame.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
    stream.write_all(&out)
}

/// What a Fetch request asks for: how long to wait for records, and how
/// many bytes of them at most.
#[derive(Debug)]
struct Ask {
    wait: Duration,
    max_bytes: usize,
}

impl Ask {
    /// `None` for a request this cannot read.
    fn read(request: &[u8], version: i16) -> Option<Self> {
        let mut buf = Bytes::copy_from_slice(request);
        RequestHeader::decode(&mut buf, FetchRequest::header_version(version)).ok()?;
        let fetch = FetchRequest::decode(&mut buf, version).ok()?;
        let max_bytes = usize::try_from(fetch.max_bytes).ok().filter(|&n| n > 0);
        Some(Self {
            wait: Duration::from_millis(u64::try_from(fetch.max_wait_ms).unwrap_or(0)),
            // Before v3 a request has no overall limit.
            max_bytes: max_bytes.filter(|_| version >= 3).unwrap_or(usize::MAX),
        })
    }

    /// Cuts the answer's records to whole batches within `max_bytes`;
    /// whether any were cut.
    fn cut_records(&self, response: &mut FetchResponse) -> bool {
        let (mut total, mut cut) = (0, false);
        for partition in response.responses.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            let Some(records) = &partition.records else { continue };
            let kept = self.kept(records, total);
            if kept < records.len() {
                partition.records = Some(records.slice(..kept));
                cut = true;
            }
            total += kept;
        }
        cut
    }

    /// How many bytes of whole batches of `records` fit after `total`.
    fn kept(&self, records: &[u8], total: usize) -> usize {
        let mut kept = 0;
        // A batch: base offset (8 bytes), length (4), then that many bytes.
        while let Some(len) = records.get(kept + 8..kept + 12) {
            let end = kept + 12 + usize::try_from(i32::from_be_bytes([len[0], len[1], len[2], len[3]])).unwrap_or(0);
            let first_of_answer = total == 0 && kept == 0;
            let fits = total + end <= self.max_bytes;
            if end > records.len() || !(fits || first_of_answer) {
                break;
            }
            kept = end;
        }
        kept
    }
}

/// A Fetch answer read.
struct Answer {
    header: ResponseHeader,
    response: FetchResponse,
}

impl Answer {
    /// `None` for an answer this cannot read.
    fn read(answer: &Bytes, version: i16) -> Option<Self> {
        let mut buf = answer.clone();
        let header = ResponseHeader::decode(&mut buf, FetchResponse::header_version(version)).ok()?;
        let response = FetchResponse::decode(&mut buf, version).ok()?;
        Some(Self { header, response })
    }

    /// Whether it has neither records nor an error to report.
    fn is_empty(&self) -> bool {
        self.response.error_code == 0
            && self.response.responses.iter().all(|topic| {
                topic.partitions.iter().all(|p| p.error_code == 0 && p.records.as_ref().is_none_or(Bytes::is_empty))
            })
    }

    /// The answer cut to whole record batches within the request's
    /// `max_bytes`, if it was over it.
    fn cut(mut self, ask: &Ask, version: i16) -> Option<Bytes> {
        if !ask.cut_records(&mut self.response) {
            return None;
        }
        let mut out = BytesMut::new();
        self.header.encode(&mut out, FetchResponse::header_version(version)).ok()?;
        self.response.encode(&mut out, version).ok()?;
        Some(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// `n` batches of `size` bytes each (header included).
    fn batches(n: usize, size: usize) -> Bytes {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend_from_slice(&(i as i64).to_be_bytes());
            out.extend_from_slice(&i32::try_from(size - 12).unwrap().to_be_bytes());
            out.extend(std::iter::repeat_n(7u8, size - 12));
        }
        Bytes::from(out)
    }

    #[test]
    fn answers_are_cut_to_whole_batches_within_the_limit() {
        let ask = Ask { wait: Duration::ZERO, max_bytes: 250 };
        assert_eq!(ask.kept(&batches(6, 50), 0), 250, "five whole batches within 250");
        assert_eq!(ask.kept(&batches(5, 50), 120), 100, "after 120 bytes of other partitions");
        assert_eq!(ask.kept(&batches(5, 50), 240), 0);
        assert_eq!(ask.kept(&batches(2, 500), 0), 500, "the answer's first batch goes whatever its size");
        assert_eq!(ask.kept(&batches(2, 500), 10), 0);
        let partial = batches(2, 50).slice(..80);
        assert_eq!(ask.kept(&partial, 0), 50, "a partial batch at the end is dropped");
        assert_eq!(ask.kept(&[], 0), 0);
    }

    #[test]
    fn a_wait_ends_when_something_is_produced_or_at_its_deadline() {
        let produced = Arc::new(Shared::default());
        let seen = produced.now();
        let start = Instant::now();
        assert!(!produced.wait_past(seen, start + Duration::from_millis(30)));
        assert!(start.elapsed() >= Duration::from_millis(30));
        let bumper = produced.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            bumper.bump();
        });
        assert!(produced.wait_past(seen, Instant::now() + Duration::from_secs(10)));
        t.join().unwrap();
    }
}
