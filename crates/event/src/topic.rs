//! Topic naming and subscription patterns.
//!
//! A topic is `<prefix>.<event type>`, e.g. `hookbridge.email.delivered`.
//! Names must be valid as Kafka topics and NATS subjects alike, so each
//! dot-separated token keeps only `[a-z0-9_-]` (lowercased, anything else
//! becomes `_`); the event's own `type` is never changed.

use std::fmt;

/// A bus topic name, valid for every backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    /// The topic for events of type `ty` under `prefix`.
    pub fn new(prefix: &str, ty: &str) -> Self {
        let mut name = String::with_capacity(prefix.len() + ty.len() + 1);
        name.push_str(prefix);
        for token in ty.split('.') {
            name.push('.');
            if token.is_empty() {
                name.push('_');
            }
            name.extend(token.chars().map(sanitize_char));
        }
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The event-type part of the topic (everything after `prefix.`).
    pub fn event_type<'a>(&'a self, prefix: &str) -> Option<&'a str> {
        self.0.strip_prefix(prefix)?.strip_prefix('.')
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn sanitize_char(c: char) -> char {
    match c {
        'a'..='z' | '0'..='9' | '_' | '-' => c,
        'A'..='Z' => c.to_ascii_lowercase(),
        _ => '_',
    }
}

/// Checks a topic prefix: dot-separated tokens of `[a-z0-9_-]`.
///
/// # Errors
/// When the prefix is empty or has another character.
pub fn validate_prefix(prefix: &str) -> Result<(), PatternError> {
    let ok = !prefix.is_empty()
        && prefix
            .split('.')
            .all(|t| !t.is_empty() && t.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-')));
    if ok {
        Ok(())
    } else {
        Err(PatternError(format!(
            "`{prefix}` is not a valid topic prefix: use dot-separated tokens of a-z, 0-9, _ and -"
        )))
    }
}

/// Which event types a subscriber wants: an exact type, a family
/// (`message.*`, every type starting `message.`), or everything (`*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventPattern {
    All,
    Prefix(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(String);

impl EventPattern {
    /// Parses `*`, `family.*` or an exact type.
    ///
    /// # Errors
    /// On an empty pattern or a `*` anywhere but as the whole pattern or the
    /// last token.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        if s == "*" {
            return Ok(Self::All);
        }
        let (body, wildcard) = match s.strip_suffix(".*") {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.is_empty() || body.contains('*') || body.split('.').any(str::is_empty) {
            return Err(PatternError(format!(
                "`{s}` is not an event pattern: use an exact type (email.bounced), a family (message.*) or *"
            )));
        }
        Ok(if wildcard { Self::Prefix(format!("{body}.")) } else { Self::Exact(body.to_owned()) })
    }

    pub fn matches(&self, ty: &str) -> bool {
        match self {
            Self::All => true,
            Self::Prefix(prefix) => ty.starts_with(prefix.as_str()),
            Self::Exact(exact) => ty == exact,
        }
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Exact(exact) => f.write_str(exact),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_is_prefix_dot_type() {
        assert_eq!(TopicName::new("hookbridge", "email.delivered").as_str(), "hookbridge.email.delivered");
        let t = TopicName::new("hb", "message.created");
        assert_eq!(t.event_type("hb"), Some("message.created"));
    }

    #[test]
    fn odd_provider_names_become_safe_topics() {
        assert_eq!(TopicName::new("hb", "Email Opened>*").as_str(), "hb.email_opened__");
        assert_eq!(TopicName::new("hb", "a..b").as_str(), "hb.a._.b");
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(validate_prefix("hookbridge").is_ok());
        assert!(validate_prefix("acme.prod-1").is_ok());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("a..b").is_err());
        assert!(validate_prefix("Upper").is_err());
    }

    #[test]
    fn patterns_match_exact_family_and_all() {
        let exact = EventPattern::parse("email.bounced").unwrap();
        assert!(exact.matches("email.bounced"));
        assert!(!exact.matches("email.bounced2"));
        let family = EventPattern::parse("message.*").unwrap();
        assert!(family.matches("message.created"));
        assert!(!family.matches("messages.created"));
        assert!(!family.matches("message"));
        assert!(EventPattern::parse("*").unwrap().matches("anything"));
        for bad in ["", "email.*.x", "*.bounced", ".*", "a..b"] {
            assert!(EventPattern::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(family.to_string(), "message.*");
    }
}
