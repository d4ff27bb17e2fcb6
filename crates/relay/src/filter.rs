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
    /// Which of the event's `data` the expression reads: only those
    /// fields are converted into CEL values for each event.
    data: DataUse,
    /// The other variables it names: only those are bound.
    variables: Vec<Variable>,
}

/// A variable of the CloudEvent besides `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variable {
    Id,
    Type,
    Source,
    Subject,
    Time,
    Provider,
    ProviderEvent,
}

impl Variable {
    const ALL: [(Self, &'static str); 7] = [
        (Self::Id, "id"),
        (Self::Type, "type"),
        (Self::Source, "source"),
        (Self::Subject, "subject"),
        (Self::Time, "time"),
        (Self::Provider, "provider"),
        (Self::ProviderEvent, "providerevent"),
    ];

    fn name(self) -> &'static str {
        Self::ALL.iter().find(|(v, _)| *v == self).map(|(_, n)| *n).expect("listed")
    }

    fn value(self, event: &Event) -> Value {
        let text = |s: &str| Value::String(Arc::new(s.to_owned()));
        match self {
            Self::Id => text(&event.id),
            Self::Type => text(&event.ty),
            Self::Source => text(&event.source),
            Self::Subject => text(event.subject.as_deref().unwrap_or_default()),
            Self::Time => Value::Timestamp(event.time.fixed_offset()),
            Self::Provider => text(&event.provider),
            Self::ProviderEvent => text(&event.providerevent),
        }
    }
}

/// What an expression reads of `data`, found in its syntax tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DataUse {
    /// Nothing: `data` is never built.
    None,
    /// Only these top-level fields (`data.bounce.kind` reads `bounce`):
    /// the rest, `original` (the provider's payload) above all, is skipped.
    Fields(std::collections::BTreeSet<String>),
    /// `data` as a whole (e.g. `"to" in data`, or a macro variable named
    /// `data`): every field.
    All,
}

impl DataUse {
    fn of(expr: &cel::IdedExpr) -> Self {
        let mut fields = std::collections::BTreeSet::new();
        let mut whole = false;
        visit(expr, &mut fields, &mut whole);
        match (whole, fields.is_empty()) {
            (true, _) => Self::All,
            (false, true) => Self::None,
            (false, false) => Self::Fields(fields),
        }
    }
}

/// Collects the fields selected on `data` (`whole`: `data` used otherwise).
fn visit(expr: &cel::IdedExpr, fields: &mut std::collections::BTreeSet<String>, whole: &mut bool) {
    use cel::common::ast::{EntryExpr, Expr};
    match &expr.expr {
        Expr::Ident(name) => *whole |= name == "data",
        Expr::Select(select) => match &select.operand.expr {
            Expr::Ident(name) if name == "data" => {
                fields.insert(select.field.clone());
            }
            _ => visit(&select.operand, fields, whole),
        },
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                visit(target, fields, whole);
            }
            call.args.iter().for_each(|a| visit(a, fields, whole));
        }
        Expr::Comprehension(c) => {
            // A macro variable named `data` would shadow it: take it all.
            *whole |= c.iter_var == "data" || c.accu_var == "data" || c.iter_var2.as_deref() == Some("data");
            for e in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                visit(e, fields, whole);
            }
        }
        Expr::List(list) => list.elements.iter().for_each(|e| visit(e, fields, whole)),
        Expr::Map(map) => map.entries.iter().for_each(|e| match &e.expr {
            EntryExpr::MapEntry(entry) => {
                visit(&entry.key, fields, whole);
                visit(&entry.value, fields, whole);
            }
            EntryExpr::StructField(field) => visit(&field.value, fields, whole),
        }),
        Expr::Struct(st) => st.entries.iter().for_each(|e| match &e.expr {
            EntryExpr::MapEntry(entry) => {
                visit(&entry.key, fields, whole);
                visit(&entry.value, fields, whole);
            }
            EntryExpr::StructField(field) => visit(&field.value, fields, whole),
        }),
        Expr::Literal(_) | Expr::Unspecified => {}
    }
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
        let data = DataUse::of(program.expression());
        let references = program.references();
        let variables =
            Variable::ALL.iter().filter(|(_, name)| references.has_variable(name)).map(|(v, _)| *v).collect();
        Ok(Self { source: source.to_owned(), program, root: Context::default(), data, variables })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn evaluate(&self, event: &Event) -> Verdict {
        let mut context = self.root.new_inner_scope();
        for variable in &self.variables {
            context.add_variable_from_value(variable.name(), variable.value(event));
        }
        let data = match &self.data {
            DataUse::None => None,
            DataUse::Fields(names) => Some(only_fields(event, names)),
            DataUse::All => Some(json_to_cel(event.data.get())),
        };
        match data {
            None => {}
            Some(Ok(data)) => context.add_variable_from_value("data", data),
            Some(Err(error)) => return Verdict::Error(format!("the event's data cannot be read: {error}")),
        }
        match self.program.execute(&context) {
            Ok(Value::Bool(true)) => Verdict::Pass,
            Ok(_) => Verdict::Reject,
            Err(error) => Verdict::Error(error.to_string()),
        }
    }
}

/// The event's `data` as CEL with only the fields in `names`; the others
/// are skipped over, never built.
fn only_fields(event: &Event, names: &std::collections::BTreeSet<String>) -> Result<Value, String> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    /// Keeps the fields named; stops reading once it has them all (the
    /// provider's payload, `original`, comes last and is the largest part).
    struct Only<'a> {
        names: &'a std::collections::BTreeSet<String>,
        kept: &'a mut std::collections::HashMap<cel::objects::Key, Value>,
        stopped_early: &'a mut bool,
    }

    impl<'de> Visitor<'de> for Only<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if self.names.contains(key.as_ref()) {
                    let value = map.next_value_seed(Cel)?;
                    self.kept.insert(cel::objects::Key::String(Arc::new(key.into_owned())), value);
                    if self.kept.len() == self.names.len() {
                        *self.stopped_early = true;
                        return Ok(());
                    }
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }

    impl<'de> DeserializeSeed<'de> for Only<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_map(self)
        }
    }

    let (mut kept, mut stopped_early) = (std::collections::HashMap::new(), false);
    let mut deserializer = serde_json::Deserializer::from_str(event.data.get());
    let read = Only { names, kept: &mut kept, stopped_early: &mut stopped_early }.deserialize(&mut deserializer);
    // Stopping early leaves the object unclosed, which the deserializer
    // reports: what was kept is complete all the same.
    if let Err(error) = read
        && !stopped_early
    {
        return Err(error.to_string());
    }
    Ok(Value::Map(cel::objects::Map { map: Arc::new(kept) }))
}

/// A JSON text as a CEL value.
fn json_to_cel(json: &str) -> Result<Value, String> {
    use serde::de::DeserializeSeed;
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = Cel.deserialize(&mut deserializer).map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Reads a JSON value straight into a CEL value, as `cel::to_value` makes
/// it from a `serde_json::Value` (non-negative integers unsigned).
struct Cel;

impl<'de> serde::de::DeserializeSeed<'de> for Cel {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Cel {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::UInt(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(Arc::new(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(Arc::new(v)))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(Cel)? {
            items.push(item);
        }
        Ok(Value::List(Arc::new(items)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = std::collections::HashMap::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.insert(cel::objects::Key::String(Arc::new(key)), map.next_value_seed(Cel)?);
        }
        Ok(Value::Map(cel::objects::Map { map: Arc::new(entries) }))
    }
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
    fn only_the_fields_of_data_an_expression_reads_are_built() {
        let fields = |source: &str| EventFilter::compile(source).unwrap().data;
        let set = |names: &[&str]| DataUse::Fields(names.iter().map(|n| (*n).to_owned()).collect());
        assert_eq!(fields(r#"type == "email.sent""#), DataUse::None);
        assert_eq!(fields(r#"data.bounce.kind == "hard" && has(data.to)"#), set(&["bounce", "to"]));
        assert_eq!(fields(r#"data.to.exists(t, t.endsWith("@example.com"))"#), set(&["to"]));
        assert_eq!(fields(r#""to" in data"#), DataUse::All);
        assert_eq!(fields(r#"[1].exists(data, data > 0) && data.to.size() > 0"#), DataUse::All);
        assert_eq!(fields(r#"data.original.bounce_type == "hard""#), set(&["original"]));
        // Whatever is built, the verdicts are those of the whole `data`.
        let e = event("email.bounced", r#"{"to":["a@example.com"],"bounce":{"kind":"hard"},"original":{"x":1}}"#);
        for (source, verdict) in [
            (r#"data.to.exists(t, t.endsWith("@example.com"))"#, Verdict::Pass),
            (r#""original" in data && has(data.bounce)"#, Verdict::Pass),
            (r#"has(data.tags)"#, Verdict::Reject),
            (r#"data.original.x == 1 && data.bounce.kind == "soft""#, Verdict::Reject),
        ] {
            assert_eq!(EventFilter::compile(source).unwrap().evaluate(&e), verdict, "{source}");
        }
    }

    #[test]
    fn json_becomes_the_cel_value_cel_itself_makes_of_it() {
        let json = r#"{"a":[1,-2,3.5,"x",null,true],"b":{"c":{"d":"e"}},"n":18446744073709551615,"s":"\u00e9\n"}"#;
        let direct = json_to_cel(json).unwrap();
        let via_serde = cel::to_value(serde_json::from_str::<serde_json::Value>(json).unwrap()).unwrap();
        assert_eq!(direct, via_serde);
        assert!(json_to_cel("{").is_err());
        assert!(json_to_cel("{} x").is_err());
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
