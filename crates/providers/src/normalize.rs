//! What every provider's normalizer shares: parsing, field access and the
//! assembly of the envelope.

use chrono::{DateTime, Utc};
use hookbridge_event::data::Normalized;
use hookbridge_event::{DATA_CONTENT_TYPE, Event, SPEC_VERSION};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::{PayloadError, Provider, Redactor};

/// What the normalizer needs to know about the configured source.
#[derive(Debug, Clone)]
pub struct SourceMeta {
    /// The CloudEvents `source` attribute of this source's events.
    pub event_source: String,
    pub redactor: Redactor,
}

impl SourceMeta {
    /// The default `source` attribute for a source named `name`.
    pub fn default_event_source(name: &str) -> String {
        format!("urn:hookbridge:source:{name}")
    }
}

/// A webhook body parsed twice: as raw JSON (for the untouched original) and
/// as a value (to read fields from).
pub(crate) struct Parsed<'a> {
    pub raw: &'a RawValue,
    pub value: Value,
}

pub(crate) fn parse(body: &[u8]) -> Result<Parsed<'_>, PayloadError> {
    let raw: &RawValue = serde_json::from_slice(body).map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
    let value: Value = serde_json::from_str(raw.get()).map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
    Ok(Parsed { raw, value })
}

/// A string field, or a number rendered as text (ids arrive as either).
pub(crate) fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn time(value: Option<&Value>) -> Option<DateTime<Utc>> {
    value.and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
}

pub(crate) fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// A stable id from parts of the payload: hex SHA-256, 32 characters.
pub(crate) fn derived_id(prefix: &str, parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    format!("{prefix}{}", hex::encode(&digest[..16]))
}

/// The parts of an event a provider module works out.
pub(crate) struct Fields {
    pub id: String,
    pub ty: String,
    pub provider_event: String,
    pub subject: Option<String>,
    pub time: Option<DateTime<Utc>>,
    pub normalized: Normalized,
}

pub(crate) fn assemble(
    provider: Provider,
    fields: Fields,
    parsed: &Parsed<'_>,
    source: &SourceMeta,
    now: DateTime<Utc>,
) -> Event {
    let original = source.redactor.original(parsed.raw, &parsed.value);
    Event {
        specversion: SPEC_VERSION.to_owned(),
        id: fields.id,
        source: source.event_source.clone(),
        ty: fields.ty,
        time: fields.time.unwrap_or(now),
        subject: fields.subject,
        datacontenttype: DATA_CONTENT_TYPE.to_owned(),
        provider: provider.as_str().to_owned(),
        providerevent: fields.provider_event,
        ingesttime: now,
        traceparent: None,
        data: fields.normalized.into_data(&original),
    }
}
