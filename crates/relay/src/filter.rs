//! A subscriber's content filter: a CEL expression over the CloudEvent,
//! compiled once when the configuration is loaded.
//!
//! The expression sees `id`, `type`, `source`, `subject` (empty when the
//! event has none), `time` (a timestamp), `provider`, `providerevent` and
//! `data` (the normalized fields and `data.original`). An event passes when
//! the expression is `true`; `false`, a value of another type, or an error
//! at run time (a field the event does not have) is a non-match.

use std::sync::Arc;

use cel::{Context, Program, Value};
use hookbridge_event::Event;

/// A compiled filter.
pub struct EventFilter {
    source: String,
    program: Program,
    /// The standard functions, registered once: each evaluation binds the
    /// event's variables in a child scope of it.
    root: Context<'static, 'static>,
    /// Whether the expression names `data`: building it means parsing the
    /// event's payload, so it is built only then.
    uses_data: bool,
    /// Whether it may read `data.original` (the provider's payload, the
    /// largest part): left out of `data` unless the text mentions it.
    uses_original: bool,
}

impl std::fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EventFilter").field(&self.source).finish()
    }
}

/// What a filter made of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Reject,
    /// The expression failed on this event (counted, and a non-match).
    Error(String),
}

impl EventFilter {
    /// Compiles `source`.
    ///
    /// # Errors
    /// The parser's message, with the line and column of the problem.
    pub fn compile(source: &str) -> Result<Self, String> {
        let program = Program::compile(source).map_err(|e| e.to_string())?;
        let uses_data = program.references().has_variable("data");
        let uses_original = source.contains("original");
        Ok(Self { source: source.to_owned(), program, root: Context::default(), uses_data, uses_original })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn evaluate(&self, event: &Event) -> Verdict {
        let mut context = self.root.new_inner_scope();
        let text = |s: &str| Value::String(Arc::new(s.to_owned()));
        context.add_variable_from_value("id", text(&event.id));
        context.add_variable_from_value("type", text(&event.ty));
        context.add_variable_from_value("source", text(&event.source));
        context.add_variable_from_value("subject", text(event.subject.as_deref().unwrap_or_default()));
        context.add_variable_from_value("time", Value::Timestamp(event.time.fixed_offset()));
        context.add_variable_from_value("provider", text(&event.provider));
        context.add_variable_from_value("providerevent", text(&event.providerevent));
        if self.uses_data {
            let data = if self.uses_original {
                serde_json::from_str::<serde_json::Value>(event.data.get())
                    .map_err(|e| e.to_string())
                    .and_then(|json| cel::to_value(json).map_err(|e| e.to_string()))
            } else {
                without_original(event)
            };
            match data {
                Ok(data) => context.add_variable_from_value("data", data),
                Err(error) => return Verdict::Error(format!("the event's data cannot be read: {error}")),
            }
        }
        match self.program.execute(&context) {
            Ok(Value::Bool(true)) => Verdict::Pass,
            Ok(_) => Verdict::Reject,
            Err(error) => Verdict::Error(error.to_string()),
        }
    }
}

/// The event's `data` as CEL, every field but `original` (never parsed).
fn without_original(event: &Event) -> Result<Value, String> {
    let fields: std::collections::BTreeMap<&str, &serde_json::value::RawValue> =
        serde_json::from_str(event.data.get()).map_err(|e| e.to_string())?;
    let mut map = serde_json::Map::new();
    for (name, raw) in fields {
        if name != "original" {
            map.insert(name.to_owned(), serde_json::from_str(raw.get()).map_err(|e| e.to_string())?);
        }
    }
    cel::to_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ty: &str, data: &str) -> Event {
        let json = format!(
            r#"{{"specversion":"1.0","id":"evt_1","source":"urn:hookbridge:source:mailpace","type":"{ty}","time":"2026-12-04T10:00:00Z","subject":"msg-1","datacontenttype":"application/json","provider":"mailpace","providerevent":"{ty}","ingesttime":"2026-12-04T10:00:00Z","data":{data}}}"#
        );
        Event::from_json(json.as_bytes()).expect("a valid event")
    }

    #[test]
    fn filters_see_the_cloud_event_and_its_data() {
        let hard = event("email.bounced", r#"{"bounce":{"kind":"hard"},"original":{}}"#);
        let soft = event("email.bounced", r#"{"bounce":{"kind":"soft"},"original":{}}"#);
        let filter = EventFilter::compile(r#"data.bounce.kind == "hard" && source.endsWith(":mailpace")"#).unwrap();
        assert_eq!(filter.evaluate(&hard), Verdict::Pass);
        assert_eq!(filter.evaluate(&soft), Verdict::Reject);
        let by_time =
            EventFilter::compile(r#"time > timestamp("2026-01-01T00:00:00Z") && subject == "msg-1""#).unwrap();
        assert_eq!(by_time.evaluate(&hard), Verdict::Pass);
        assert_eq!(
            EventFilter::compile(r#"type.startsWith("email.") ? 1 : 2"#).unwrap().evaluate(&hard),
            Verdict::Reject
        );
        let original = event("email.bounced", r#"{"bounce":{"kind":"hard"},"original":{"bounce_type":"hard"}}"#);
        let by_payload = EventFilter::compile(r#"data.original.bounce_type == "hard""#).unwrap();
        assert_eq!(by_payload.evaluate(&original), Verdict::Pass, "the provider's payload when asked for");
    }

    #[test]
    fn a_missing_field_is_an_error_and_a_bad_expression_says_where() {
        let delivered = event("email.delivered", r#"{"original":{}}"#);
        let filter = EventFilter::compile(r#"data.bounce.kind == "hard""#).unwrap();
        assert!(matches!(filter.evaluate(&delivered), Verdict::Error(_)));
        let error = EventFilter::compile(r#"data.bounce.kind =="#).unwrap_err();
        assert!(error.contains("1:19") || error.contains("1:20"), "{error}");
    }
}
