//! Property tests: a subscription pattern matches exactly what its
//! documented semantics say, and the taxonomy's metric labels stay bounded.

use hookbridge_event::taxonomy::{self, KNOWN, OTHER, PASSTHROUGH_FAMILIES, PASSTHROUGH_KNOWN};
use hookbridge_event::{EventPattern, TopicName};
use proptest::prelude::*;

/// An event type as providers send them: dot-separated non-empty tokens.
fn event_type() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("email".to_owned()),
        Just("message".to_owned()),
        Just("bounced".to_owned()),
        "[a-z0-9_-]{1,6}",
        "[A-Za-z0-9_:/ -]{1,6}",
    ];
    prop::collection::vec(token, 1..4).prop_map(|tokens| tokens.join("."))
}

fn tokens(ty: &str) -> Vec<&str> {
    ty.split('.').collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn star_matches_every_type(ty in event_type()) {
        prop_assert!(EventPattern::parse("*").unwrap().matches(&ty));
    }

    #[test]
    fn an_exact_pattern_matches_only_its_type(pattern in event_type(), ty in event_type()) {
        let parsed = EventPattern::parse(&pattern).unwrap();
        prop_assert_eq!(parsed.matches(&ty), ty == pattern);
        prop_assert!(parsed.matches(&pattern));
    }

    /// `family.*`: every type whose leading tokens are the family's, with at
    /// least one token more; never the family itself.
    #[test]
    fn a_family_matches_the_types_under_it(family in event_type(), ty in event_type()) {
        let parsed = EventPattern::parse(&format!("{family}.*")).unwrap();
        let (f, t) = (tokens(&family), tokens(&ty));
        let expected = t.len() > f.len() && t[..f.len()] == f[..];
        prop_assert_eq!(parsed.matches(&ty), expected, "{}.* against {}", family, ty);
        prop_assert!(!parsed.matches(&family));
    }

    #[test]
    fn a_pattern_reads_back_as_it_is_written(pattern in prop_oneof![
        Just("*".to_owned()),
        event_type(),
        event_type().prop_map(|f| format!("{f}.*")),
    ]) {
        let parsed = EventPattern::parse(&pattern).unwrap();
        prop_assert_eq!(parsed.to_string(), pattern.clone());
        prop_assert_eq!(EventPattern::parse(&parsed.to_string()).unwrap(), parsed);
    }

    /// A `*` anywhere but alone or as the last token, or an empty token, is
    /// refused: never silently read as something else.
    #[test]
    fn malformed_patterns_are_refused(a in "[a-z]{1,4}", b in "[a-z]{1,4}") {
        for bad in [
            format!("{a}*"), format!("*.{a}"), format!("{a}.*.{b}"), format!("{a}..{b}"),
            format!(".{a}"), format!("{a}."), format!("{a}.**"), String::new(), format!("{a}.*.*"),
        ] {
            prop_assert!(EventPattern::parse(&bad).is_err(), "{:?} is refused", bad);
        }
    }

    /// Whatever the type, its metric label is one of a fixed set, and the
    /// taxonomy's own names keep theirs.
    #[test]
    fn labels_are_bounded(ty in event_type()) {
        let label = taxonomy::label_for(&ty);
        prop_assert!(KNOWN.contains(&label) || PASSTHROUGH_KNOWN.contains(&label) || label == OTHER);
        prop_assert_eq!(label == ty, KNOWN.contains(&ty.as_str()) || PASSTHROUGH_KNOWN.contains(&ty.as_str()));
    }

    /// A topic name is `<prefix>.<type>` with every token sanitized to
    /// `[a-z0-9_-]`, one token per type token.
    #[test]
    fn topics_are_valid_for_every_backend(ty in event_type()) {
        let topic = TopicName::new("hookbridge", &ty);
        let rest = topic.event_type("hookbridge").unwrap();
        prop_assert_eq!(rest.split('.').count(), ty.split('.').count());
        prop_assert!(rest.split('.').all(|t| !t.is_empty() && t.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))));
    }
}

#[test]
fn the_taxonomy_lists_are_consistent() {
    for ty in KNOWN.iter().chain(PASSTHROUGH_KNOWN) {
        assert_eq!(taxonomy::label_for(ty), *ty);
        assert!(taxonomy::is_known(ty));
    }
    for ty in PASSTHROUGH_KNOWN {
        let family = ty.split_once('.').unwrap().0;
        assert!(PASSTHROUGH_FAMILIES.contains(&family), "{ty}'s family is passed through");
    }
}
