//! Who may read which event types: bearer tokens, each with its patterns.

use hookbridge_event::EventPattern;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// One `[[streams.tokens]]` entry.
#[derive(Debug, Clone)]
pub struct StreamToken {
    /// Names the token in logs and metric labels (never the token itself).
    pub name: String,
    pub token: SecretString,
    /// The event types this token may read.
    pub events: Vec<EventPattern>,
}

/// The token `given` matches, compared in constant time against every
/// configured token (so the time taken says nothing about which is close).
pub(crate) fn find<'a>(tokens: &'a [StreamToken], given: &str) -> Option<&'a StreamToken> {
    let mut found = None;
    for token in tokens {
        if bool::from(token.token.expose_secret().as_bytes().ct_eq(given.as_bytes())) && found.is_none() {
            found = Some(token);
        }
    }
    found
}

/// Whether every type `asked` matches is one `allowed` lets through.
pub(crate) fn covers(allowed: &[EventPattern], asked: &EventPattern) -> bool {
    allowed.iter().any(|a| match (a, asked) {
        (EventPattern::All, _) => true,
        (EventPattern::Prefix(family), EventPattern::Prefix(narrower)) => narrower.starts_with(family.as_str()),
        (EventPattern::Prefix(family), EventPattern::Exact(ty)) => ty.starts_with(family.as_str()),
        (EventPattern::Exact(one), EventPattern::Exact(ty)) => one == ty,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> EventPattern {
        EventPattern::parse(s).unwrap()
    }

    #[test]
    fn a_token_covers_what_its_patterns_include() {
        let email = [p("email.*"), p("message.created")];
        for ok in ["email.*", "email.bounced", "message.created"] {
            assert!(covers(&email, &p(ok)), "{ok}");
        }
        for refused in ["*", "message.*", "message.failed", "emails.sent"] {
            assert!(!covers(&email, &p(refused)), "{refused}");
        }
        assert!(covers(&[p("*")], &p("*")));
    }

    #[test]
    fn tokens_are_found_by_value() {
        let tokens = [
            StreamToken { name: "a".into(), token: SecretString::from("token-a-0123456789"), events: vec![] },
            StreamToken { name: "b".into(), token: SecretString::from("token-b-0123456789"), events: vec![] },
        ];
        assert_eq!(find(&tokens, "token-b-0123456789").map(|t| t.name.as_str()), Some("b"));
        assert!(find(&tokens, "token-b-012345678").is_none());
        assert!(find(&tokens, "").is_none());
    }
}
