//! W3C trace context, carried through hookbridge: the ingress starts (or
//! continues) a trace, the event carries its `traceparent` (the CloudEvents
//! distributed-tracing extension), and the relay continues it on every
//! delivery, so one trace spans provider → bus → subscriber.
//!
//! Spans are started through a process-wide [`SpanSink`], like `tracing`'s
//! global dispatcher: by default hookbridge only generates the ids (nothing
//! is exported); with OTLP configured, the binary installs a sink that
//! exports real OpenTelemetry spans with those ids.

use std::fmt;
use std::sync::OnceLock;

/// `traceparent` of a span: version 00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Bit 0: sampled.
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` header; `None` for anything malformed or the
    /// all-zero ids the specification forbids.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
            || ![version, trace, span, flags].iter().all(|p| lower_hex(p))
        {
            return None;
        }
        let mut context = Self { trace_id: [0; 16], span_id: [0; 8], flags: 0 };
        for (i, byte) in context.trace_id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&trace[2 * i..2 * i + 2], 16).ok()?;
        }
        for (i, byte) in context.span_id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&span[2 * i..2 * i + 2], 16).ok()?;
        }
        context.flags = u8::from_str_radix(flags, 16).ok()?;
        (context.trace_id != [0; 16] && context.span_id != [0; 8]).then_some(context)
    }

    /// A new trace (sampled) with random ids.
    pub fn new_root() -> Self {
        Self { trace_id: random(), span_id: random(), flags: 1 }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        Self { span_id: random(), ..*self }
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() || bytes.iter().all(|b| *b == 0) {
        bytes[N - 1] = 1;
    }
    bytes
}

impl fmt::Display for TraceContext {
    /// `00-<trace id>-<span id>-<flags>` in lowercase hex, written at once
    /// (every delivery sends one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        let encoded = hex::encode_to_slice(self.trace_id, &mut text[3..35])
            .and_then(|()| hex::encode_to_slice(self.span_id, &mut text[36..52]))
            .and_then(|()| hex::encode_to_slice([self.flags], &mut text[53..55]));
        encoded.map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// What a span is, for exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// hookbridge receives a request (the ingress).
    Server,
    /// hookbridge sends a request (a delivery).
    Client,
}

/// A span in progress.
pub trait ActiveSpan: Send {
    /// Its ids, to propagate.
    fn context(&self) -> TraceContext;
    fn set_attribute(&mut self, key: &'static str, value: String);
    /// Ends it; `error` marks it failed.
    fn end(self: Box<Self>, error: Option<String>);
}

/// Where spans go.
pub trait SpanSink: Send + Sync {
    fn start(&self, name: &'static str, kind: SpanKind, parent: Option<TraceContext>) -> Box<dyn ActiveSpan>;
}

static SINK: OnceLock<Box<dyn SpanSink>> = OnceLock::new();

/// Installs the process's span sink, once (later calls are ignored).
pub fn set_sink(sink: Box<dyn SpanSink>) {
    let _ = SINK.set(sink);
}

/// Starts a span: a child of `parent`, or a new trace.
pub fn start(name: &'static str, kind: SpanKind, parent: Option<TraceContext>) -> Box<dyn ActiveSpan> {
    match SINK.get() {
        Some(sink) => sink.start(name, kind, parent),
        None => Box::new(IdsOnly(parent.map_or_else(TraceContext::new_root, |p| p.child()))),
    }
}

/// Without an exporter: ids for propagation, nothing recorded.
struct IdsOnly(TraceContext);

impl ActiveSpan for IdsOnly {
    fn context(&self) -> TraceContext {
        self.0
    }
    fn set_attribute(&mut self, _: &'static str, _: String) {}
    fn end(self: Box<Self>, _: Option<String>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_headers() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(header).unwrap();
        assert_eq!(context.to_string(), header);
        assert_eq!(context.flags, 1);
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn children_keep_the_trace_and_get_a_new_span() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        let span = start("test", SpanKind::Server, Some(root));
        assert_eq!(span.context().trace_id, root.trace_id);
    }
}
