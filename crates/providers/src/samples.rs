//! Realistic sample webhooks, signed the way each provider signs them: for
//! `hookbridge send-sample`, the tests and the benchmark.

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use crate::whippy::Scheme;
use crate::{HmacSecret, Provider, mailpace, mailpipe, whippy};

/// Signs bodies as one provider does.
#[derive(Debug)]
pub enum Signer {
    MailPace(Box<SigningKey>),
    Mailpipe(HmacSecret),
    Whippy(HmacSecret, Scheme),
}

impl Signer {
    pub fn provider(&self) -> Provider {
        match self {
            Self::MailPace(_) => Provider::MailPace,
            Self::Mailpipe(_) => Provider::Mailpipe,
            Self::Whippy(..) => Provider::Whippy,
        }
    }

    /// The signature header (lowercase name, value) for `body` sent at `now`.
    pub fn header(&self, body: &[u8], now: DateTime<Utc>) -> (&'static str, String) {
        match self {
            Self::MailPace(key) => (mailpace::SIGNATURE_HEADER, mailpace::sign(key, body)),
            Self::Mailpipe(secret) => (mailpipe::SIGNATURE_HEADER, mailpipe::sign(secret, body)),
            Self::Whippy(secret, scheme) => (whippy::SIGNATURE_HEADER, whippy::sign(secret, *scheme, body, now)),
        }
    }
}

/// A sample webhook body of `event` from `provider`. `seq` makes the ids
/// unique, so distinct samples are distinct events.
/// A defined provider's body is unsigned here: its signer is
/// [`crate::defined::DefinedSigner`].
pub fn body(provider: &Provider, event: &str, seq: u64, now: DateTime<Utc>) -> Vec<u8> {
    let value = match provider {
        Provider::MailPace => mailpace_body(event, seq, now),
        Provider::Mailpipe => mailpipe_body(event, seq, now),
        Provider::Whippy => whippy_body(event, seq, now),
        Provider::Defined(d) => {
            let signer = crate::defined::DefinedSigner::new(d.clone(), crate::defined::Credential::None, None);
            let element = signer.element(event, seq, now).unwrap_or_else(|_| json!({}));
            return signer.request(vec![element], seq, now).body;
        }
    };
    serde_json::to_vec(&value).expect("sample serializes")
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn mailpace_body(event: &str, seq: u64, now: DateTime<Utc>) -> Value {
    let status = event.strip_prefix("email.").unwrap_or(event);
    json!({
        "event": event,
        "payload": {
            "status": status,
            "id": 100_000 + seq,
            "domain_id": 42,
            "created_at": rfc3339(now - chrono::Duration::seconds(3)),
            "updated_at": rfc3339(now),
            "from": "Acme Billing <billing@acme.example>",
            "to": "ada@example.com, grace@example.org",
            "htmlbody": "<p>Your invoice is attached.</p>",
            "textbody": "Your invoice is attached.",
            "cc": null,
            "bcc": "audit@acme.example",
            "subject": format!("Invoice #{seq}"),
            "replyto": "support@acme.example",
            "message_id": format!("<{seq}.a1b2c3@mailer.mailpace.com>"),
            "list_unsubscribe": null,
            "tags": ["invoice", "billing"]
        }
    })
}

fn mailpipe_body(event: &str, seq: u64, now: DateTime<Utc>) -> Value {
    let data = match event {
        "email.received" => json!({
            "message_id": format!("msg_in{seq}"),
            "mailbox_id": "mbx_xyz789",
            "mailbox_email": "support@acme.example",
            "from": "customer@example.com",
            "to": ["support@acme.example"],
            "subject": "Help with my order",
            "snippet": "Hi, I placed an order yesterday and...",
            "has_attachments": false,
            "received_at": rfc3339(now)
        }),
        "email.bounced" => json!({
            "message_id": format!("msg_out{seq}"),
            "recipient": "nobody@invalid-domain.example",
            "bounce_type": "hard",
            "bounce_code": "550",
            "bounce_message": "5.1.1 The email account that you tried to reach does not exist."
        }),
        "domain.verified" => json!({
            "domain_id": format!("dom_{seq}"),
            "domain": "acme.example",
            "verified_at": rfc3339(now)
        }),
        _ => json!({
            "message_id": format!("msg_out{seq}"),
            "from": "billing@acme.example",
            "to": ["ada@example.com"],
            "subject": format!("Invoice #{seq}")
        }),
    };
    json!({ "id": format!("evt_{seq:08x}"), "type": event, "created_at": rfc3339(now), "data": data })
}

fn whippy_body(event: &str, seq: u64, now: DateTime<Utc>) -> Value {
    let data = if event.starts_with("message.") {
        json!({
            "id": format!("7f1c2a4e-0000-4000-8000-{seq:012x}"),
            "to": "+15555550123",
            "from": "+15555550199",
            "body": "Your appointment is confirmed for tomorrow at 10am.",
            "direction": "OUTBOUND",
            "channel_id": "c0ffee00-0000-4000-8000-000000000001",
            "contact_id": "c0ffee00-0000-4000-8000-000000000002",
            "created_at": rfc3339(now - chrono::Duration::seconds(1)),
            "updated_at": rfc3339(now),
            "attachments": [],
            "campaign_id": null,
            "type": "sms",
            "delivery_status": if event == "message.created" { "queued" } else { "delivered" }
        })
    } else {
        json!({
            "id": format!("5eed0000-0000-4000-8000-{seq:012x}"),
            "created_at": rfc3339(now - chrono::Duration::seconds(1)),
            "updated_at": rfc3339(now)
        })
    };
    json!({ "data": data, "event": event, "request_id": format!("req_{seq:016x}") })
}
