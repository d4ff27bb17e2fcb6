//! Removal of configured fields from the provider's original payload, for
//! teams that must not spread message bodies (`redact_fields`).
//!
//! A plain name (`htmlbody`) removes that key at any depth; a dotted path
//! (`payload.htmlbody`) removes exactly that key from the webhook body.

use serde_json::Value;
use serde_json::value::RawValue;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    anywhere: Vec<String>,
    paths: Vec<Vec<String>>,
}

impl Redactor {
    pub fn new<S: AsRef<str>>(fields: &[S]) -> Self {
        let mut redactor = Self::default();
        for field in fields {
            let field = field.as_ref();
            if field.contains('.') {
                redactor.paths.push(field.split('.').map(str::to_owned).collect());
            } else {
                redactor.anywhere.push(field.to_owned());
            }
        }
        redactor
    }

    pub fn is_empty(&self) -> bool {
        self.anywhere.is_empty() && self.paths.is_empty()
    }

    /// The original payload to publish: the raw body untouched, or with the
    /// configured fields removed.
    pub fn original(&self, raw: &RawValue, parsed: &Value) -> Box<RawValue> {
        if self.is_empty() {
            return raw.to_owned();
        }
        let mut value = parsed.clone();
        self.apply(&mut value);
        serde_json::value::to_raw_value(&value).expect("JSON value serializes")
    }

    fn apply(&self, value: &mut Value) {
        if !self.anywhere.is_empty() {
            remove_anywhere(value, &self.anywhere);
        }
        for path in &self.paths {
            remove_path(value, path);
        }
    }
}

fn remove_anywhere(value: &mut Value, names: &[String]) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !names.iter().any(|n| n == k));
            map.values_mut().for_each(|v| remove_anywhere(v, names));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| remove_anywhere(v, names)),
        _ => {}
    }
}

fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cursor = value;
    for key in parents {
        match cursor.get_mut(key.as_str()) {
            Some(next) => cursor = next,
            None => return,
        }
    }
    if let Value::Object(map) = cursor {
        map.remove(last.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(fields: &[&str], v: Value) -> Value {
        let raw = serde_json::value::to_raw_value(&v).unwrap();
        serde_json::from_str(Redactor::new(fields).original(&raw, &v).get()).unwrap()
    }

    #[test]
    fn names_are_removed_at_any_depth_and_paths_exactly() {
        let body = json!({"event": "e", "payload": {"htmlbody": "<p>", "textbody": "t", "list": [{"htmlbody": 1}]}, "textbody": "top"});
        assert_eq!(
            run(&["htmlbody"], body.clone()),
            json!({"event": "e", "payload": {"textbody": "t", "list": [{}]}, "textbody": "top"})
        );
        assert_eq!(
            run(&["payload.textbody", "missing.path"], body),
            json!({"event": "e", "payload": {"htmlbody": "<p>", "list": [{"htmlbody": 1}]}, "textbody": "top"})
        );
    }

    #[test]
    fn redaction_keeps_the_order_of_the_other_keys() {
        let raw = RawValue::from_string(r#"{"z":1,"htmlbody":"x","a":2,"m":3}"#.into()).unwrap();
        let parsed: Value = serde_json::from_str(raw.get()).unwrap();
        assert_eq!(Redactor::new(&["htmlbody"]).original(&raw, &parsed).get(), r#"{"z":1,"a":2,"m":3}"#);
    }

    #[test]
    fn no_fields_keeps_the_raw_bytes() {
        let raw = RawValue::from_string(r#"{"a" : 1.0}"#.into()).unwrap();
        let parsed: Value = serde_json::from_str(raw.get()).unwrap();
        assert_eq!(Redactor::default().original(&raw, &parsed).get(), r#"{"a" : 1.0}"#);
    }
}
