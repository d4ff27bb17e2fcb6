//! Providers described by a definition file instead of code: how a request
//! proves where it comes from, where the signature and its inputs are, the
//! shape of the body, and how each element becomes a normalized event.
//!
//! The built-in catalogue (`crates/providers/definitions/*.toml`) is
//! compiled into the binary; users add their own with
//! `[ingress] provider_dirs`. The format is described in
//! `docs/provider-definitions.md`.

mod compile;
mod extract;
pub(crate) mod format;
pub mod pointer;
pub(crate) mod sample;
pub mod sns;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hookbridge_event::data::BounceKind;
use serde_json::Value;

pub use compile::DefinitionProblem;
pub(crate) use extract::normalize;
use format::{Algorithm, AuthKind, Encoding, SecretFormat, Shape, SignatureFormat, TimeFormat};
pub use pointer::Pointer;
pub use sample::DefinedSigner;
pub use sample::{Credential, SignedRequest, p256_keypair};
pub use verify::{Request, Verified, Verifier};

/// The built-in definitions: (file name, text).
const BUILTIN: &[(&str, &str)] = &[
    ("sendgrid.toml", include_str!("../../definitions/sendgrid.toml")),
    ("mailgun.toml", include_str!("../../definitions/mailgun.toml")),
    ("postmark.toml", include_str!("../../definitions/postmark.toml")),
    ("resend.toml", include_str!("../../definitions/resend.toml")),
    ("loops.toml", include_str!("../../definitions/loops.toml")),
    ("brevo.toml", include_str!("../../definitions/brevo.toml")),
    ("sparkpost.toml", include_str!("../../definitions/sparkpost.toml")),
    ("mandrill.toml", include_str!("../../definitions/mandrill.toml")),
    ("customerio.toml", include_str!("../../definitions/customerio.toml")),
    ("ses.toml", include_str!("../../definitions/ses.toml")),
];

/// One provider, as its definition describes it.
#[derive(Debug)]
pub struct Definition {
    pub name: String,
    /// The name for the life of the process (metric labels, error texts),
    /// interned once when the definition is read.
    pub(crate) label: &'static str,
    pub title: String,
    pub docs: Option<String>,
    pub setup: Vec<String>,
    pub unconfirmed: Vec<String>,
    /// Compiled into the binary (not from `provider_dirs`).
    pub builtin: bool,
    /// Where it was read from (user definitions).
    pub path: Option<PathBuf>,
    pub(crate) auth: Vec<Auth>,
    pub(crate) shape: Shape,
    pub(crate) form_field: Option<String>,
    pub(crate) ignore_unnamed: bool,
    pub(crate) event: EventSpec,
    pub(crate) rules: Vec<Rule>,
    pub(crate) sample: Option<Value>,
}

#[derive(Debug)]
pub(crate) struct Auth {
    pub kind: AuthKind,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub signature: Option<Location>,
    pub signature_prefix: Option<String>,
    pub signature_separator: Option<String>,
    pub signature_format: SignatureFormat,
    pub timestamp: Option<Location>,
    pub tolerance: Option<Duration>,
    pub id: Option<Location>,
    pub token: Option<Location>,
    pub token_prefix: Option<String>,
    pub signed: Vec<Part>,
    pub secret_format: SecretFormat,
    pub refuse_replayed_token: bool,
}

/// Where a value is in a request.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// The first of these headers that is present.
    Header(Vec<String>),
    /// The values of `key=` in the first of these headers present.
    HeaderKey(Vec<String>, String),
    Json(Pointer),
    Form(String),
    Query(String),
}

impl Location {
    /// How the docs and errors name it.
    pub fn describe(&self) -> String {
        match self {
            Self::Header(names) => names.join(" or "),
            Self::HeaderKey(names, key) => format!("{}={} of {}", key, "…", names.join(" or ")),
            Self::Json(p) => format!("body field {}", p.as_str()),
            Self::Form(f) => format!("form field {f}"),
            Self::Query(q) => format!("query parameter {q}"),
        }
    }
}

/// One piece of the signed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Literal(String),
    Body,
    Timestamp,
    Id,
    Token,
    Url,
    SortedForm,
}

#[derive(Debug)]
pub(crate) enum IdSpec {
    Pointers(Vec<Pointer>),
    Header(Vec<String>),
}

#[derive(Debug)]
pub(crate) struct EventSpec {
    pub id: Option<IdSpec>,
    /// `None` is the event name.
    pub id_from: Vec<Option<Pointer>>,
    pub id_prefix: String,
    pub ty: Vec<Pointer>,
    pub time: Vec<Pointer>,
    pub time_format: TimeFormat,
    pub subject: Vec<Pointer>,
    pub data: BTreeMap<String, Vec<Pointer>>,
}

#[derive(Debug)]
pub(crate) struct Rule {
    pub name: String,
    pub when: Vec<(Pointer, String)>,
    pub ty: String,
    pub bounce: Option<BounceKind>,
    pub bounce_kinds: BTreeMap<String, BounceKind>,
    pub reason: Option<String>,
}

impl Definition {
    /// The provider's event names, each once, in the definition's order.
    pub fn events(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if !names.contains(&rule.name.as_str()) {
                names.push(&rule.name);
            }
        }
        names
    }

    /// The normalized types its events are published under, each once.
    pub fn event_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if !types.contains(&rule.ty.as_str()) {
                types.push(&rule.ty);
            }
        }
        types
    }

    /// `(event name, condition, normalized type)` of every mapping, for
    /// `providers show` and the docs.
    pub fn mappings(&self) -> Vec<(String, String, String)> {
        self.rules
            .iter()
            .map(|r| {
                let when = r.when.iter().map(|(p, v)| format!("{} = {v}", p.as_str())).collect::<Vec<_>>().join(", ");
                let mut ty = r.ty.clone();
                if let Some(kind) = r.bounce {
                    ty.push_str(&format!(" ({})", bounce_name(kind)));
                }
                (r.name.clone(), when, ty)
            })
            .collect()
    }

    /// How a request proves where it comes from, one line per method.
    pub fn authentication(&self) -> Vec<String> {
        self.auth.iter().map(verify::describe).collect()
    }

    /// Whether its requests carry several events.
    pub fn batches(&self) -> bool {
        matches!(self.shape, Shape::JsonArray | Shape::JsonOrArray | Shape::FormJson)
    }

    /// The body shape, for `providers show`.
    pub fn body_shape(&self) -> String {
        match self.shape {
            Shape::Json => "one JSON object".into(),
            Shape::JsonArray => "a JSON array, one event per element".into(),
            Shape::JsonOrArray => "a JSON object, or an array of them (a batch)".into(),
            Shape::Sns => "an Amazon SNS message whose Message is the event".into(),
            Shape::FormJson => format!(
                "a form whose `{}` field holds a JSON array, one event per element",
                self.form_field.as_deref().unwrap_or("?")
            ),
        }
    }

    /// What a source of this provider must configure, by key.
    pub fn credentials(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        for auth in &self.auth {
            let key = match auth.kind {
                AuthKind::Hmac | AuthKind::Token => "secrets",
                AuthKind::Ed25519 | AuthKind::EcdsaP256 => "public_keys",
                AuthKind::Basic => "username + password",
                AuthKind::Sns => "topic_arns",
                AuthKind::None => "allowed_ips",
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    /// Whether the signed content includes the request URL (`webhook_url`).
    pub fn signs_url(&self) -> bool {
        self.auth.iter().any(|a| a.signed.contains(&Part::Url))
    }
}

pub(crate) fn bounce_name(kind: BounceKind) -> &'static str {
    match kind {
        BounceKind::Hard => "hard",
        BounceKind::Soft => "soft",
        BounceKind::Unknown => "unknown",
    }
}

/// The providers a configuration can name: the built-in definitions plus
/// those found in `provider_dirs`.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    definitions: BTreeMap<String, Arc<Definition>>,
}

impl Catalogue {
    /// The built-in definitions, compiled anew (the process's copy is
    /// [`crate::builtin_catalogue`]).
    ///
    /// # Panics
    /// When a built-in definition is invalid (a test checks they are not).
    pub fn builtin() -> Self {
        let mut definitions = BTreeMap::new();
        for (file, text) in BUILTIN {
            let definition = compile::from_toml(text, true)
                .unwrap_or_else(|problems| panic!("built-in definition {file} is invalid: {problems:?}"));
            definitions.insert(definition.name.clone(), Arc::new(definition));
        }
        Self { definitions }
    }

    /// The built-ins plus every `*.toml` in `dirs`.
    ///
    /// # Errors
    /// Every problem of every file, each with its file and key path.
    pub fn load(dirs: &[PathBuf]) -> Result<Self, Vec<DefinitionProblem>> {
        // The built-ins are compiled once per process (`builtin_catalogue`).
        let mut catalogue = crate::builtin_catalogue().clone();
        let mut problems = Vec::new();
        for dir in dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) => {
                    problems.push(DefinitionProblem::file(dir, format!("cannot read the directory: {e}")));
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for file in files {
                match load_file(&file) {
                    Ok(definition) => {
                        if let Some(existing) = catalogue.definitions.get(&definition.name) {
                            let where_ = existing
                                .path
                                .as_ref()
                                .map_or_else(|| "a built-in provider".to_owned(), |p| p.display().to_string());
                            problems.push(DefinitionProblem::at(
                                &file,
                                "name",
                                format!("`{}` is already defined by {where_}", definition.name),
                            ));
                        } else {
                            catalogue.definitions.insert(definition.name.clone(), Arc::new(definition));
                        }
                    }
                    Err(mut errs) => problems.append(&mut errs),
                }
            }
        }
        if problems.is_empty() { Ok(catalogue) } else { Err(problems) }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Definition>> {
        self.definitions.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Definition>> {
        self.definitions.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.definitions.keys().map(String::as_str).collect()
    }
}

/// Reads one definition from its text (what `provider_dirs` files hold).
///
/// # Errors
/// Every problem, with key paths relative to the text.
pub fn parse(text: &str) -> Result<Definition, Vec<DefinitionProblem>> {
    compile::from_toml(text, false)
}

fn load_file(path: &Path) -> Result<Definition, Vec<DefinitionProblem>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![DefinitionProblem::file(path, format!("cannot read: {e}"))])?;
    let mut definition = compile::from_toml(&text, false)
        .map_err(|problems| problems.into_iter().map(|p| p.in_file(path)).collect::<Vec<_>>())?;
    definition.path = Some(path.to_owned());
    Ok(definition)
}

#[cfg(test)]
mod tests;
