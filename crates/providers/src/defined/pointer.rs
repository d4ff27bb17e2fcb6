//! JSON pointers (RFC 6901) with one addition: a `*` segment stands for
//! every member of an object or element of an array, for payloads whose keys
//! vary (SparkPost's `msys.<kind>_event`) or that list recipients.

use serde_json::Value;

/// A checked pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Any,
}

impl Pointer {
    /// # Errors
    /// When `text` is neither empty nor starts with `/`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.is_empty() && !text.starts_with('/') {
            return Err(format!("`{text}` is not a JSON pointer (it starts with `/`)"));
        }
        let segments = text
            .split('/')
            .skip(1)
            .map(|s| if s == "*" { Segment::Any } else { Segment::Key(s.replace("~1", "/").replace("~0", "~")) })
            .collect();
        Ok(Self { text: text.to_owned(), segments })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first non-null value the pointer reaches.
    pub fn find<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        let mut found = None;
        walk(value, &self.segments, &mut |v| {
            if v.is_null() {
                false
            } else {
                found = Some(v);
                true
            }
        });
        found
    }

    /// Every non-null value the pointer reaches, in document order.
    pub fn find_all<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        let mut all = Vec::new();
        walk(value, &self.segments, &mut |v| {
            if !v.is_null() {
                all.push(v);
            }
            false
        });
        all
    }

    /// Sets the value at the pointer (the first match of a `*`), creating
    /// objects on the way; for samples.
    pub fn set(&self, root: &mut Value, new: Value) {
        let mut at = root;
        for segment in &self.segments {
            at = match segment {
                Segment::Key(key) => match at {
                    Value::Array(items) => match key.parse::<usize>().ok().filter(|i| *i < items.len()) {
                        Some(i) => &mut items[i],
                        None => return,
                    },
                    other => {
                        if !other.is_object() {
                            *other = Value::Object(serde_json::Map::new());
                        }
                        other.as_object_mut().expect("an object").entry(key.clone()).or_insert(Value::Null)
                    }
                },
                Segment::Any => match at {
                    Value::Object(map) => match map.values_mut().next() {
                        Some(v) => v,
                        None => return,
                    },
                    Value::Array(items) => match items.first_mut() {
                        Some(v) => v,
                        None => return,
                    },
                    _ => return,
                },
            };
        }
        *at = new;
    }
}

/// Calls `visit` on every value reached until it returns true.
fn walk<'a>(value: &'a Value, segments: &[Segment], visit: &mut dyn FnMut(&'a Value) -> bool) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return visit(value);
    };
    match first {
        Segment::Key(key) => {
            let next = match value {
                Value::Object(map) => map.get(key),
                Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            next.is_some_and(|v| walk(v, rest, visit))
        }
        Segment::Any => match value {
            Value::Object(map) => map.values().any(|v| walk(v, rest, visit)),
            Value::Array(items) => items.iter().any(|v| walk(v, rest, visit)),
            _ => false,
        },
    }
}

/// A value as text: a non-empty string, a number, or a boolean.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wildcards_reach_varying_keys_and_list_elements() {
        let v = json!({"msys": {"track_event": {"type": "click", "x/y": 1}}, "to": [{"a": "p@x"}, {"a": null}, {"a": "q@x"}]});
        assert_eq!(Pointer::parse("/msys/*/type").unwrap().find(&v), Some(&json!("click")));
        assert_eq!(Pointer::parse("/msys/track_event/x~1y").unwrap().find(&v), Some(&json!(1)));
        let all = Pointer::parse("/to/*/a").unwrap().find_all(&v);
        assert_eq!(all, [&json!("p@x"), &json!("q@x")]);
        assert_eq!(Pointer::parse("/to/2/a").unwrap().find(&v), Some(&json!("q@x")));
        assert!(Pointer::parse("/nope/*").unwrap().find(&v).is_none());
        assert!(Pointer::parse("type").is_err());
        assert_eq!(Pointer::parse("").unwrap().find(&v), Some(&v));
    }

    #[test]
    fn set_creates_the_path() {
        let mut v = json!({"msys": {"message_event": {"type": "x"}}});
        Pointer::parse("/msys/*/type").unwrap().set(&mut v, json!("bounce"));
        Pointer::parse("/a/b").unwrap().set(&mut v, json!(1));
        assert_eq!(v, json!({"msys": {"message_event": {"type": "bounce"}}, "a": {"b": 1}}));
    }
}
