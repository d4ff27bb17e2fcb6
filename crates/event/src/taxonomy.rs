//! The normalized event types (see `providers.md`, "A normalized taxonomy").
//!
//! Providers map their names onto these; a name hookbridge does not know is
//! published under the provider's own name and never dropped. Metric labels
//! use [`label_for`], which folds unknown names into [`OTHER`] so label
//! cardinality stays bounded.

pub const EMAIL_QUEUED: &str = "email.queued";
pub const EMAIL_DELIVERED: &str = "email.delivered";
pub const EMAIL_DEFERRED: &str = "email.deferred";
pub const EMAIL_BOUNCED: &str = "email.bounced";
pub const EMAIL_REJECTED: &str = "email.rejected";
pub const EMAIL_COMPLAINED: &str = "email.complained";
pub const EMAIL_OPENED: &str = "email.opened";
pub const EMAIL_CLICKED: &str = "email.clicked";
pub const EMAIL_RECEIVED: &str = "email.received";
pub const EMAIL_UNSUBSCRIBED: &str = "email.unsubscribed";
pub const EMAIL_SUBSCRIBED: &str = "email.subscribed";
pub const DOMAIN_VERIFIED: &str = "domain.verified";

/// Every normalized email/domain type.
pub const KNOWN: &[&str] = &[
    EMAIL_QUEUED,
    EMAIL_DELIVERED,
    EMAIL_DEFERRED,
    EMAIL_BOUNCED,
    EMAIL_REJECTED,
    EMAIL_COMPLAINED,
    EMAIL_OPENED,
    EMAIL_CLICKED,
    EMAIL_RECEIVED,
    EMAIL_UNSUBSCRIBED,
    EMAIL_SUBSCRIBED,
    DOMAIN_VERIFIED,
];

/// Resource families passed through from messaging providers (Whippy's
/// `resource.type` names): `message.*`, `contact.*`, ...
pub const PASSTHROUGH_FAMILIES: &[&str] = &["message", "contact", "campaign", "conversation", "sequence", "call"];

/// The passed-through names a provider documents (Whippy's), each its own
/// metric label; other names of those families are published as they are
/// and counted under [`OTHER`].
pub const PASSTHROUGH_KNOWN: &[&str] = &[
    "message.created",
    "message.updated",
    "campaign.updated",
    "call.analyzed",
    "contact.created",
    "conversation.updated",
    "sequence.updated",
];

/// Label value for types outside the taxonomy.
pub const OTHER: &str = "other";

/// Whether `ty` belongs to the taxonomy (a known type or a known family).
pub fn is_known(ty: &str) -> bool {
    KNOWN.contains(&ty) || ty.split_once('.').is_some_and(|(family, _)| PASSTHROUGH_FAMILIES.contains(&family))
}

/// A bounded metric label for an event type: one of [`KNOWN`],
/// [`PASSTHROUGH_KNOWN`] or [`OTHER`], whatever a (signed) payload names.
pub fn label_for(ty: &str) -> &str {
    if KNOWN.contains(&ty) || PASSTHROUGH_KNOWN.contains(&ty) { ty } else { OTHER }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_fold_into_one_label() {
        assert_eq!(label_for("email.delivered"), "email.delivered");
        assert_eq!(label_for("message.created"), "message.created");
        assert_eq!(label_for("email.teleported"), OTHER);
        assert_eq!(label_for("weird"), OTHER);
        assert_eq!(label_for("message.x-chosen-by-the-payload"), OTHER, "cardinality stays bounded");
    }
}
