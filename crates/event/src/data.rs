//! The normalized `data` of each event family.
//!
//! Every family carries the provider's payload, untouched (or with the
//! source's `redact_fields` removed), under `original`, so nothing a consumer
//! may need is lost. The normalized fields are the ones consumers key on;
//! message bodies are never copied out of `original`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `data` of every `email.*` type.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EmailData {
    /// The provider's id of the message (MailPace `message_id`, Mailpipe `message_id`).
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Option<String>,
    pub subject: Option<String>,
    pub tags: Vec<String>,
    /// Set on `email.bounced` (and `email.deferred`, a soft bounce).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce: Option<Bounce>,
    /// Set on `email.rejected`: why the provider refused to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// Set on `email.complained`: the feedback the recipient's mailbox sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complaint: Option<Complaint>,
    /// Set on `email.opened` and `email.clicked`, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement: Option<Engagement>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Complaint {
    /// The feedback type as the provider gives it (e.g. `abuse`), when it does.
    pub kind: Option<String>,
}

/// What a provider tells of an open or a click.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Engagement {
    /// The link clicked (`email.clicked`).
    pub url: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BounceKind {
    /// Permanent: delivery will not be attempted again.
    Hard,
    /// Temporary: the provider retries.
    Soft,
    /// The provider did not say.
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bounce {
    pub kind: BounceKind,
    /// SMTP status code as the provider gave it, e.g. `550`.
    pub code: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rejection {
    /// `spam` for MailPace's own outbound filter.
    pub reason: String,
}

/// `data` of `domain.*` types.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DomainData {
    pub domain: Option<String>,
    pub domain_id: Option<String>,
}

/// `data` of messaging `message.*` types (Whippy SMS, email, WhatsApp, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MessagingData {
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub to: Vec<String>,
    /// `inbound` or `outbound`, as the provider says.
    pub direction: Option<String>,
    /// Channel of the message: `email`, `sms`, `mms`, `whatsapp`, `note`, `call`.
    pub channel: Option<String>,
    pub channel_id: Option<String>,
    pub contact_id: Option<String>,
    pub campaign_id: Option<String>,
    pub delivery_status: Option<String>,
}

/// `data` of every other type (contacts, campaigns, unknown names): the
/// resource id, when there is one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ResourceData {
    pub resource_id: Option<String>,
}

/// The normalized fields of one event, by family.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    Email(EmailData),
    Domain(DomainData),
    Messaging(MessagingData),
    Resource(ResourceData),
}

#[derive(Serialize)]
struct WithOriginal<'a, T> {
    #[serde(flatten)]
    fields: &'a T,
    original: &'a RawValue,
}

impl Normalized {
    /// The event's `data`: these fields plus `original`.
    pub fn into_data(self, original: &RawValue) -> Box<RawValue> {
        let json = match &self {
            Self::Email(f) => serde_json::to_string(&WithOriginal { fields: f, original }),
            Self::Domain(f) => serde_json::to_string(&WithOriginal { fields: f, original }),
            Self::Messaging(f) => serde_json::to_string(&WithOriginal { fields: f, original }),
            Self::Resource(f) => serde_json::to_string(&WithOriginal { fields: f, original }),
        }
        .expect("normalized data serializes");
        RawValue::from_string(json).expect("serde_json output is valid JSON")
    }
}

/// Splits a provider's address field: a JSON array of strings, or one string
/// that may be a comma-separated list. Blank entries are dropped.
pub fn address_list(value: Option<&serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::String(s)) => {
            s.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect()
        }
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn address_lists_split_strings_and_arrays() {
        assert_eq!(address_list(Some(&json!("a@x.io, b@x.io,"))), ["a@x.io", "b@x.io"]);
        assert_eq!(address_list(Some(&json!(["a@x.io", 3, " b@x.io "]))), ["a@x.io", "b@x.io"]);
        assert!(address_list(Some(&json!(null))).is_empty());
        assert!(address_list(None).is_empty());
    }

    #[test]
    fn data_keeps_original_byte_for_byte() {
        let original = RawValue::from_string(r#"{"b": 1.50, "a":[ ]}"#.to_owned()).unwrap();
        let data = Normalized::Resource(ResourceData { resource_id: Some("r1".into()) }).into_data(&original);
        assert_eq!(data.get(), r#"{"resource_id":"r1","original":{"b": 1.50, "a":[ ]}}"#);
    }
}
