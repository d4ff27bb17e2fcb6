//! A verified body into normalized events: one per element of a batch.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use hookbridge_event::data::{
    Bounce, BounceKind, Complaint, DomainData, EmailData, Engagement, MessagingData, Normalized, Rejection,
    ResourceData, address_list,
};
use hookbridge_event::{DATA_CONTENT_TYPE, Event, SPEC_VERSION, taxonomy};
use serde_json::Value;
use serde_json::value::RawValue;

use super::format::{Shape, TimeFormat};
use super::pointer::{Pointer, text};
use super::verify::Request;
use super::{Definition, IdSpec, Rule};
use crate::PayloadError;
use crate::normalize::{SourceMeta, derived_id};

/// One element of a body: its raw JSON (the event's `original`) and value.
struct Element {
    raw: Box<RawValue>,
    value: Value,
}

fn element(raw: Box<RawValue>, provider: &'static str) -> Result<Element, PayloadError> {
    let value: Value = serde_json::from_str(raw.get()).map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
    if !value.is_object() {
        return Err(PayloadError::shape(provider, "each event must be a JSON object"));
    }
    Ok(Element { raw, value })
}

fn json_elements(text: &[u8], shape: Shape, provider: &'static str) -> Result<Vec<Element>, PayloadError> {
    let invalid = |e: serde_json::Error| PayloadError::InvalidJson(e.to_string());
    let is_array = text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    match (shape, is_array) {
        (Shape::Json, true) => Err(PayloadError::shape(provider, "the body must be one JSON object, not an array")),
        (Shape::JsonArray, false) => Err(PayloadError::shape(provider, "the body must be a JSON array of events")),
        (_, true) => serde_json::from_slice::<Vec<Box<RawValue>>>(text)
            .map_err(invalid)?
            .into_iter()
            .map(|raw| element(raw, provider))
            .collect(),
        (_, false) => Ok(vec![element(serde_json::from_slice::<Box<RawValue>>(text).map_err(invalid)?, provider)?]),
    }
}

fn elements(definition: &Definition, body: &[u8], provider: &'static str) -> Result<Vec<Element>, PayloadError> {
    match definition.shape {
        Shape::FormJson => {
            let field = definition.form_field.as_deref().unwrap_or_default();
            let value = form_urlencoded::parse(body)
                .find(|(k, _)| k == field)
                .map(|(_, v)| v.into_owned())
                .ok_or_else(|| PayloadError::shape(provider, format!("the form has no `{field}` field")))?;
            json_elements(value.as_bytes(), Shape::JsonOrArray, provider)
        }
        Shape::Sns => {
            let envelope: Value = serde_json::from_slice(body).map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
            if envelope.get("Type").and_then(Value::as_str) != Some("Notification") {
                // Subscription handshakes carry no event.
                return Ok(Vec::new());
            }
            let message = envelope
                .get("Message")
                .and_then(Value::as_str)
                .ok_or_else(|| PayloadError::shape(provider, "the SNS message has no Message"))?;
            let raw: Box<RawValue> = serde_json::from_str(message)
                .map_err(|e| PayloadError::shape(provider, format!("the SNS Message is not JSON: {e}")))?;
            let mut element = element(raw, provider)?;
            let mut lookup = envelope;
            if let Some(map) = lookup.as_object_mut() {
                map.remove("Message");
                map.remove("Signature");
            }
            element.value.as_object_mut().expect("an object").insert("$envelope".into(), lookup);
            Ok(vec![element])
        }
        shape => json_elements(body, shape, provider),
    }
}

fn first_text(pointers: &[Pointer], value: &Value) -> Option<String> {
    pointers.iter().find_map(|p| p.find(value).and_then(text))
}

fn parse_time(value: &Value, format: TimeFormat) -> Option<DateTime<Utc>> {
    let seconds = |s: f64| {
        let whole = s.trunc() as i64;
        let nanos = ((s - s.trunc()) * 1e9).round() as u32;
        Utc.timestamp_opt(whole, nanos.min(999_999_999)).single()
    };
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match format {
        TimeFormat::Unix => number.and_then(seconds),
        TimeFormat::UnixMs => number.and_then(|ms| seconds(ms / 1000.0)),
        TimeFormat::Rfc3339 => value.as_str().and_then(rfc3339),
        TimeFormat::Auto => match number {
            Some(n) => seconds(n),
            None => value.as_str().and_then(|s| {
                rfc3339(s).or_else(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok().map(|t| t.and_utc()))
            }),
        },
    }
}

fn rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// The rule of an element: the first with its name whose conditions hold.
fn rule<'a>(definition: &'a Definition, name: &str, value: &Value) -> Option<&'a Rule> {
    definition.rules.iter().find(|r| {
        r.name == name && r.when.iter().all(|(p, want)| p.find(value).and_then(text).is_some_and(|v| v == *want))
    })
}

/// A list field: arrays of strings, a (comma-separated) string, or an
/// object's `key:value` pairs (tags).
fn list(pointers: Option<&Vec<Pointer>>, value: &Value, addresses: bool) -> Vec<String> {
    let mut out = Vec::new();
    for pointer in pointers.into_iter().flatten() {
        for found in pointer.find_all(value) {
            match found {
                Value::Object(map) if !addresses => {
                    out.extend(map.iter().filter_map(|(k, v)| text(v).map(|v| format!("{k}:{v}"))));
                }
                Value::String(s) if !addresses => {
                    // A tag list sent as JSON text (Brevo's `tag`).
                    match serde_json::from_str::<Vec<String>>(s) {
                        Ok(items) => out.extend(items),
                        Err(_) if !s.is_empty() => out.push(s.clone()),
                        Err(_) => {}
                    }
                }
                Value::Array(items) if !addresses => out.extend(items.iter().filter_map(text)),
                other => out.extend(address_list(Some(other))),
            }
        }
        if !out.is_empty() {
            break;
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

fn normalized(
    definition: &Definition,
    ty: &str,
    rule: Option<&Rule>,
    value: &Value,
    provider_event: &str,
    subject: Option<&str>,
) -> Normalized {
    let data = &definition.event.data;
    let field = |name: &str| data.get(name).and_then(|p| first_text(p, value));
    if ty.starts_with("email.") {
        let mut email = EmailData {
            message_id: field("message_id").or_else(|| subject.map(str::to_owned)),
            from: field("from"),
            to: list(data.get("to"), value, true),
            cc: list(data.get("cc"), value, true),
            bcc: list(data.get("bcc"), value, true),
            reply_to: field("reply_to"),
            subject: field("subject"),
            tags: list(data.get("tags"), value, false),
            ..EmailData::default()
        };
        if ty == taxonomy::EMAIL_BOUNCED || ty == taxonomy::EMAIL_DEFERRED {
            let from_value = field("bounce_kind").and_then(|v| rule.and_then(|r| r.bounce_kinds.get(&v).copied()));
            let default = if ty == taxonomy::EMAIL_DEFERRED { BounceKind::Soft } else { BounceKind::Unknown };
            email.bounce = Some(Bounce {
                kind: rule.and_then(|r| r.bounce).or(from_value).unwrap_or(default),
                code: field("bounce_code"),
                message: field("bounce_message"),
            });
        }
        if ty == taxonomy::EMAIL_REJECTED {
            let reason = field("rejection")
                .or_else(|| rule.and_then(|r| r.reason.clone()))
                .unwrap_or_else(|| provider_event.to_owned());
            email.rejection = Some(Rejection { reason });
        }
        if ty == taxonomy::EMAIL_COMPLAINED {
            email.complaint = Some(Complaint { kind: field("complaint") });
        }
        if ty == taxonomy::EMAIL_OPENED || ty == taxonomy::EMAIL_CLICKED {
            let engagement = Engagement { url: field("url"), user_agent: field("user_agent"), ip: field("ip") };
            // Only what the provider says: nothing when it says nothing.
            if engagement != Engagement::default() {
                email.engagement = Some(engagement);
            }
        }
        Normalized::Email(email)
    } else if ty.starts_with("domain.") {
        Normalized::Domain(DomainData { domain: field("domain"), domain_id: field("domain_id") })
    } else if ty.starts_with("message.") {
        Normalized::Messaging(MessagingData {
            message_id: field("message_id").or_else(|| subject.map(str::to_owned)),
            from: field("from"),
            to: list(data.get("to"), value, true),
            ..MessagingData::default()
        })
    } else {
        Normalized::Resource(ResourceData { resource_id: field("resource_id").or_else(|| subject.map(str::to_owned)) })
    }
}

/// The events of a verified request from a provider of `definition`.
///
/// # Errors
/// [`PayloadError`] when the body is not this definition's shape, or an
/// element has no event name.
pub(crate) fn normalize(
    definition: &Definition,
    request: &Request<'_>,
    source: &SourceMeta,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, PayloadError> {
    let provider = definition.label;
    let elements = elements(definition, request.body, provider)?;
    let header_id = match &definition.event.id {
        Some(IdSpec::Header(names)) => {
            names.iter().find_map(|n| request.headers.get(n.as_str())).and_then(|v| v.to_str().ok()).map(str::to_owned)
        }
        _ => None,
    };
    let batch = elements.len() > 1;
    let spec = &definition.event;
    let mut events = Vec::with_capacity(elements.len());
    for (index, element) in elements.into_iter().enumerate() {
        let value = &element.value;
        let Some(name) = first_text(&spec.ty, value) else {
            if definition.ignore_unnamed {
                continue;
            }
            let at = spec.ty.iter().map(Pointer::as_str).collect::<Vec<_>>().join(" or ");
            return Err(PayloadError::shape(provider, format!("an event has no name at {at}")));
        };
        let rule = rule(definition, &name, value);
        let ty = rule.map_or_else(|| name.clone(), |r| r.ty.clone());
        let id = match &spec.id {
            Some(IdSpec::Pointers(pointers)) => first_text(pointers, value),
            Some(IdSpec::Header(_)) => {
                header_id.as_ref().map(|h| if batch { format!("{h}-{index}") } else { h.clone() })
            }
            None => None,
        };
        let id = id.unwrap_or_else(|| {
            // No id from the provider: one from the element itself, stable
            // across the provider's retries.
            let parts: Vec<Option<String>> = spec
                .id_from
                .iter()
                .map(|p| p.as_ref().map(|p| p.find(value).and_then(text).unwrap_or_default()))
                .collect();
            if parts.iter().flatten().any(|p| !p.is_empty()) {
                let all: Vec<&[u8]> = parts.iter().map(|p| p.as_deref().unwrap_or(name.as_str()).as_bytes()).collect();
                derived_id(&spec.id_prefix, &all)
            } else {
                derived_id(&spec.id_prefix, &[element.raw.get().as_bytes()])
            }
        });
        let subject = first_text(&spec.subject, value);
        let time = spec.time.iter().find_map(|p| p.find(value)).and_then(|v| parse_time(v, spec.time_format));
        let normalized = normalized(definition, &ty, rule, value, &name, subject.as_deref());
        // The SNS envelope was added for lookups; what redaction keeps must
        // not carry it (without redaction the raw element is kept as it is).
        let original = if definition.shape == Shape::Sns && !source.redactor.is_empty() {
            let mut value = value.clone();
            value.as_object_mut().expect("an object").remove("$envelope");
            source.redactor.original(&element.raw, &value)
        } else {
            source.redactor.original(&element.raw, value)
        };
        events.push(Event {
            specversion: SPEC_VERSION.to_owned(),
            id,
            source: source.event_source.clone(),
            ty,
            time: time.unwrap_or(now),
            subject,
            datacontenttype: DATA_CONTENT_TYPE.to_owned(),
            provider: definition.name.clone(),
            providerevent: name,
            ingesttime: now,
            traceparent: None,
            data: normalized.into_data(&original),
        });
    }
    Ok(events)
}
