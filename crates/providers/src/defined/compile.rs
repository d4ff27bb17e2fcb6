//! Checks a definition as written and compiles it; every problem is
//! reported at once with its key path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use hookbridge_event::data::BounceKind;

use super::format::{
    Algorithm, AuthKind, Encoding, OneOrMany, RawAuth, RawDefinition, RawField, RawLocation, Shape, SignatureFormat,
};
use super::{Auth, Definition, EventSpec, IdSpec, Location, Part, Pointer, Rule};

/// The `data` fields a definition may point at.
pub(crate) const DATA_FIELDS: &[&str] = &[
    "message_id",
    "from",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "subject",
    "tags",
    "bounce_kind",
    "bounce_code",
    "bounce_message",
    "rejection",
    "complaint",
    "url",
    "user_agent",
    "ip",
    "domain",
    "domain_id",
    "resource_id",
];

/// One problem with a definition: its file (user definitions), the key
/// path inside it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionProblem {
    pub file: Option<PathBuf>,
    pub key: String,
    pub message: String,
}

impl DefinitionProblem {
    pub(crate) fn at(file: &Path, key: &str, message: String) -> Self {
        Self { file: Some(file.to_owned()), key: key.to_owned(), message }
    }

    pub(crate) fn file(file: &Path, message: String) -> Self {
        Self { file: Some(file.to_owned()), key: String::new(), message }
    }

    pub(crate) fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_owned());
        self
    }
}

impl fmt::Display for DefinitionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

struct Problems(Vec<DefinitionProblem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(DefinitionProblem { file: None, key: key.into(), message: message.into() });
    }

    fn pointer(&mut self, key: &str, text: &str) -> Option<Pointer> {
        Pointer::parse(text).map_err(|e| self.push(key, e)).ok()
    }

    fn pointers(&mut self, key: &str, list: Option<OneOrMany>) -> Vec<Pointer> {
        let list = list.map(OneOrMany::into_vec).unwrap_or_default();
        let many = list.len() > 1;
        list.iter()
            .enumerate()
            .filter_map(|(i, p)| self.pointer(&if many { format!("{key}[{i}]") } else { key.to_owned() }, p))
            .collect()
    }

    fn location(&mut self, key: &str, raw: Option<RawLocation>) -> Option<Location> {
        let raw = raw?;
        let mut found = Vec::new();
        if let Some(h) = raw.header {
            let names: Vec<String> = h.into_vec();
            if names.is_empty() || names.iter().any(|n| http::HeaderName::from_bytes(n.as_bytes()).is_err()) {
                self.push(format!("{key}.header"), "must name one or more valid headers");
            }
            match raw.key {
                Some(key) if !key.is_empty() => found.push(Location::HeaderKey(names, key)),
                Some(_) => {
                    self.push(format!("{key}.key"), "is empty");
                    found.push(Location::Header(names));
                }
                None => found.push(Location::Header(names)),
            }
        } else if raw.key.is_some() {
            self.push(format!("{key}.key"), "goes with a header");
        }
        if let Some(p) = raw.json
            && let Some(p) = self.pointer(&format!("{key}.json"), &p)
        {
            found.push(Location::Json(p));
        }
        if let Some(f) = raw.form {
            found.push(Location::Form(f));
        }
        if let Some(q) = raw.query {
            found.push(Location::Query(q));
        }
        if found.len() != 1 {
            self.push(key, "give exactly one of header, json, form, query");
            return None;
        }
        found.pop()
    }
}

/// Reads and compiles a definition.
///
/// # Errors
/// Every problem, with key paths relative to the file.
pub(crate) fn from_toml(text: &str, builtin: bool) -> Result<Definition, Vec<DefinitionProblem>> {
    let raw: RawDefinition = toml::from_str(text).map_err(|e| {
        let message = e.message().to_owned();
        let key = e.span().map(|s| format!("line {}", text[..s.start].matches('\n').count() + 1)).unwrap_or_default();
        vec![DefinitionProblem { file: None, key, message }]
    })?;
    compile(raw, builtin)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn bounce_kind(text: &str) -> Option<BounceKind> {
    match text {
        "hard" => Some(BounceKind::Hard),
        "soft" => Some(BounceKind::Soft),
        "unknown" => Some(BounceKind::Unknown),
        _ => None,
    }
}

fn compile(raw: RawDefinition, builtin: bool) -> Result<Definition, Vec<DefinitionProblem>> {
    let mut p = Problems(Vec::new());
    if !valid_name(&raw.name) || ["mailpace", "mailpipe", "whippy"].contains(&raw.name.as_str()) {
        p.push("name", format!("`{}` must be 1-64 characters of a-z, 0-9, - and _, and not a code provider", raw.name));
    }
    if raw.auth.is_empty() {
        p.push("auth", "list at least one [[auth]] method (type = \"none\" with the source's allowed_ips for none)");
    }
    let auth: Vec<Auth> = raw.auth.into_iter().enumerate().filter_map(|(i, a)| auth(&mut p, i, a)).collect();
    let takes_secrets = auth.iter().filter(|a| matches!(a.kind, AuthKind::Hmac | AuthKind::Token)).count();
    if takes_secrets > 1 {
        p.push("auth", "only one hmac or token method may take the source's secrets");
    }
    let sns_auth = auth.iter().any(|a| a.kind == AuthKind::Sns);
    if sns_auth != (raw.body.shape == Shape::Sns) {
        p.push("body.shape", "an sns method and the sns body shape go together");
    }
    if raw.body.shape == Shape::FormJson && raw.body.field.is_none() {
        p.push("body.field", "a form_json body names the form field that holds the JSON");
    }
    if raw.body.shape != Shape::FormJson && raw.body.field.is_some() {
        p.push("body.field", "only a form_json body has a field");
    }
    let ev = raw.event;
    let id = match ev.id {
        None => None,
        Some(RawField::Pointers(list)) => Some(IdSpec::Pointers(p.pointers("event.id", Some(list)))),
        Some(RawField::Located(loc)) => match p.location("event.id", Some(loc)) {
            Some(Location::Header(names)) => Some(IdSpec::Header(names)),
            Some(Location::Json(ptr)) => Some(IdSpec::Pointers(vec![ptr])),
            Some(_) => {
                p.push("event.id", "an id is a pointer into the element or a header");
                None
            }
            None => None,
        },
    };
    let mut id_from: Vec<Option<Pointer>> = Vec::new();
    for (i, text) in ev.id_from.iter().enumerate() {
        if text == "{event}" {
            id_from.push(None);
        } else if let Some(pointer) = p.pointer(&format!("event.id_from[{i}]"), text) {
            id_from.push(Some(pointer));
        }
    }
    if !id_from.is_empty() && !id_from.contains(&None) {
        id_from.insert(0, None);
    }
    let ty = p.pointers("event.type", Some(ev.ty));
    let time = p.pointers("event.time", ev.time);
    let subject = p.pointers("event.subject", ev.subject);
    let mut data = BTreeMap::new();
    for (field, list) in ev.data {
        if !DATA_FIELDS.contains(&field.as_str()) {
            p.push(format!("event.data.{field}"), format!("not a data field (one of: {})", DATA_FIELDS.join(", ")));
            continue;
        }
        let pointers = p.pointers(&format!("event.data.{field}"), Some(list));
        data.insert(field, pointers);
    }
    let mut rules = Vec::new();
    for (i, r) in raw.events.into_iter().enumerate() {
        let at = format!("events[{i}]");
        if r.name.is_empty() {
            p.push(format!("{at}.name"), "is empty");
        }
        if r.ty.is_empty() || r.ty.chars().any(|c| c.is_whitespace()) {
            p.push(format!("{at}.type"), format!("`{}` is not an event type", r.ty));
        }
        let when = r
            .when
            .into_iter()
            .filter_map(|(ptr, value)| p.pointer(&format!("{at}.when"), &ptr).map(|ptr| (ptr, value)))
            .collect();
        let bounce = r.bounce.as_deref().and_then(|b| {
            let kind = bounce_kind(b);
            if kind.is_none() {
                p.push(format!("{at}.bounce"), format!("`{b}` is not hard, soft or unknown"));
            }
            kind
        });
        let mut bounce_kinds = BTreeMap::new();
        for (value, kind) in r.bounce_kinds {
            match bounce_kind(&kind) {
                Some(k) => {
                    bounce_kinds.insert(value, k);
                }
                None => p.push(format!("{at}.bounce_kinds.{value}"), format!("`{kind}` is not hard, soft or unknown")),
            }
        }
        if !bounce_kinds.is_empty() && !data.contains_key("bounce_kind") {
            p.push(format!("{at}.bounce_kinds"), "needs event.data.bounce_kind to read the value from");
        }
        rules.push(Rule { name: r.name, when, ty: r.ty, bounce, bounce_kinds, reason: r.reason });
    }
    let sample = raw.sample.and_then(|s| {
        serde_json::from_str::<serde_json::Value>(&s)
            .map_err(|e| p.push("sample", format!("is not JSON: {e}")))
            .ok()
            .filter(|v| {
                let object = v.is_object();
                if !object {
                    p.push("sample", "must be one JSON object (one element of the body)");
                }
                object
            })
    });
    if !p.0.is_empty() {
        return Err(p.0);
    }
    let id_prefix = ev.id_prefix.unwrap_or_else(|| format!("{}-", raw.name));
    Ok(Definition {
        title: raw.title.unwrap_or_else(|| raw.name.clone()),
        label: crate::intern(&raw.name),
        name: raw.name,
        docs: raw.docs,
        setup: raw.setup,
        unconfirmed: raw.unconfirmed,
        builtin,
        path: None,
        auth,
        shape: raw.body.shape,
        form_field: raw.body.field,
        ignore_unnamed: raw.body.ignore_unnamed,
        event: EventSpec { id, id_from, id_prefix, ty, time, time_format: ev.time_format, subject, data },
        rules,
        sample,
    })
}

fn signed_parts(p: &mut Problems, key: &str, template: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        if start > 0 {
            parts.push(Part::Literal(rest[..start].to_owned()));
        }
        let Some(end) = rest[start..].find('}') else {
            p.push(key, "a `{` is not closed");
            return parts;
        };
        let name = &rest[start + 1..start + end];
        parts.push(match name {
            "body" => Part::Body,
            "timestamp" => Part::Timestamp,
            "id" => Part::Id,
            "token" => Part::Token,
            "url" => Part::Url,
            "sorted_form" => Part::SortedForm,
            other => {
                p.push(
                    key,
                    format!(
                        "`{{{other}}}` is not one of {{body}} {{timestamp}} {{id}} {{token}} {{url}} {{sorted_form}}"
                    ),
                );
                Part::Literal(String::new())
            }
        });
        rest = &rest[start + end + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_owned()));
    }
    parts
}

fn auth(p: &mut Problems, i: usize, raw: RawAuth) -> Option<Auth> {
    let at = format!("auth[{i}]");
    let before = p.0.len();
    let has_signature = raw.signature.is_some();
    let signature = p.location(&format!("{at}.signature"), raw.signature);
    let timestamp = p.location(&format!("{at}.timestamp"), raw.timestamp);
    let id = p.location(&format!("{at}.id"), raw.id);
    let token = p.location(&format!("{at}.token"), raw.token);
    let signed = raw.signed.as_deref().map(|t| signed_parts(p, &format!("{at}.signed"), t)).unwrap_or_default();
    let signs = matches!(raw.kind, AuthKind::Hmac | AuthKind::Ed25519 | AuthKind::EcdsaP256);
    if signs {
        if signature.is_none() {
            p.push(format!("{at}.signature"), "a signing method says where the signature is");
        }
        if signed.is_empty() {
            p.push(format!("{at}.signed"), "a signing method says what is signed, e.g. \"{body}\"");
        }
        for (part, located, name) in [
            (Part::Timestamp, timestamp.is_some(), "timestamp"),
            (Part::Id, id.is_some(), "id"),
            (Part::Token, token.is_some(), "token"),
        ] {
            if signed.contains(&part) && !located {
                p.push(format!("{at}.{name}"), format!("the signed content uses {{{name}}}: say where it is"));
            }
        }
    } else if has_signature || !signed.is_empty() {
        p.push(&at, "only hmac, ed25519 and ecdsa_p256 methods have a signature");
    }
    if raw.kind == AuthKind::Token && token.is_none() {
        p.push(format!("{at}.token"), "a token method says where the token is");
    }
    if raw.tolerance.is_some() && timestamp.is_none() {
        p.push(format!("{at}.tolerance"), "a tolerance needs a timestamp");
    }
    if raw.refuse_replayed_token && !(raw.kind == AuthKind::Hmac && signed.contains(&Part::Token)) {
        p.push(format!("{at}.refuse_replayed_token"), "applies to an hmac method that signs a {token}");
    }
    if raw.algorithm.is_some() && raw.kind != AuthKind::Hmac {
        p.push(format!("{at}.algorithm"), "only hmac methods choose an algorithm");
    }
    if raw.signature_format.is_some() && raw.kind != AuthKind::EcdsaP256 {
        p.push(format!("{at}.signature_format"), "only ecdsa_p256 methods have a signature format");
    }
    if p.0.len() > before {
        return None;
    }
    Some(Auth {
        kind: raw.kind,
        algorithm: raw.algorithm.unwrap_or(Algorithm::Sha256),
        encoding: raw.encoding.unwrap_or(match raw.kind {
            AuthKind::Hmac => Encoding::Hex,
            _ => Encoding::Base64,
        }),
        signature,
        signature_prefix: raw.signature_prefix,
        signature_separator: raw.signature_separator,
        signature_format: raw.signature_format.unwrap_or(SignatureFormat::Der),
        timestamp,
        tolerance: raw.tolerance,
        id,
        token,
        token_prefix: raw.token_prefix,
        signed,
        secret_format: raw.secret_format,
        refuse_replayed_token: raw.refuse_replayed_token,
    })
}
