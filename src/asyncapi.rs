//! The AsyncAPI 3.0 document of everything a configuration publishes: one
//! channel per event type its sources can produce, addressed by the topic
//! (Kafka) or subject (NATS) the bus really uses, each with the JSON Schema
//! of its CloudEvent; the CloudEvents attributes as a message trait; and the
//! relay's outbound webhooks to each subscriber with their Standard Webhooks
//! headers (`docs/asyncapi.md`).

use hookbridge_bus::BusOptions;
use hookbridge_config::Config;
use hookbridge_event::TopicName;
use serde_json::{Map, Value, json};

/// The document, as JSON.
pub fn document(config: &Config) -> Value {
    let types = event_types(config);
    let mut servers = Map::new();
    match &config.bus {
        BusOptions::Kafka(kafka) => {
            for (i, broker) in kafka.brokers.iter().enumerate() {
                servers.insert(
                    format!("kafka-{i}"),
                    json!({
                        "host": broker,
                        "protocol": "kafka",
                        "description": "A bootstrap server of the Kafka cluster hookbridge publishes to.",
                        "bindings": { "kafka": { "bindingVersion": "0.5.0" } },
                    }),
                );
            }
        }
        BusOptions::Nats(nats) => {
            for (i, url) in nats.urls.iter().enumerate() {
                let (protocol, host) = url.split_once("://").unwrap_or(("nats", url));
                servers.insert(
                    format!("nats-{i}"),
                    json!({
                        "host": host,
                        "protocol": protocol,
                        "description": format!("A NATS server; the events are in the JetStream stream `{}`.", nats.stream),
                    }),
                );
            }
        }
        BusOptions::Embedded(_) => {}
    }
    let bus_servers: Vec<Value> = servers.keys().map(|name| json!({ "$ref": format!("#/servers/{name}") })).collect();

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for ty in &types {
        let id = channel_id(ty);
        messages.insert(id.clone(), event_message(ty, &config.bus));
        let mut channel = json!({
            "address": TopicName::new(&config.topic_prefix, ty).to_string(),
            "title": format!("{ty} events"),
            "description": format!("Every `{ty}` event hookbridge accepted from a provider, one CloudEvent per message."),
            "messages": { id.clone(): { "$ref": format!("#/components/messages/{id}") } },
        });
        if !bus_servers.is_empty() {
            channel["servers"] = Value::Array(bus_servers.clone());
        }
        if let BusOptions::Kafka(kafka) = &config.bus {
            let mut topic = json!({ "topic": channel["address"], "bindingVersion": "0.5.0" });
            if kafka.partitions > 0 {
                topic["partitions"] = json!(kafka.partitions);
            }
            if kafka.replication_factor > 0 {
                topic["replicas"] = json!(kafka.replication_factor);
            }
            channel["bindings"] = json!({ "kafka": topic });
        }
        channels.insert(id.clone(), channel);
        operations.insert(
            format!("receive-{id}"),
            json!({
                "action": "receive",
                "title": format!("Consume {ty}"),
                "summary": format!("What a consumer of the bus reads: every `{ty}` event."),
                "channel": { "$ref": format!("#/channels/{id}") },
                "messages": [{ "$ref": format!("#/channels/{id}/messages/{id}") }],
            }),
        );
    }
    let mut parts = Parts { servers, channels, operations, messages };
    webhooks(config, &types, &mut parts);
    let security = streams(config, &types, &mut parts);
    let Parts { servers, channels, operations, messages } = parts;

    let mut components = json!({
        "schemas": schemas(),
        "messages": messages,
        "messageTraits": {
            "cloudEvent": {
                "summary": "A CloudEvent 1.0 in structured mode: the whole event is the payload.",
                "contentType": "application/cloudevents+json; charset=UTF-8",
                "headers": cloud_event_headers(&config.bus),
            },
            "standardWebhooks": {
                "summary": "Signed with Standard Webhooks (https://www.standardwebhooks.com).",
                "headers": {
                    "type": "object",
                    "required": ["webhook-id", "webhook-timestamp", "webhook-signature"],
                    "properties": {
                        "webhook-id": { "type": "string", "description": "The event's id: the same on every attempt and replay, to drop a repeat." },
                        "webhook-timestamp": { "type": "string", "description": "Unix seconds when this attempt was signed." },
                        "webhook-signature": { "type": "string", "description": "Space-separated signatures over `<webhook-id>.<webhook-timestamp>.<body>`: `v1,<base64 HMAC-SHA256>` with a `whsec_` secret, `v1a,<base64 Ed25519>` with a `whsk_` key." },
                    },
                },
            },
        },
    });
    if let Some(security) = security {
        components["securitySchemes"] = security;
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "hookbridge events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The provider webhooks hookbridge verifies and normalizes, as the events it publishes \
                on its bus (one channel per event type) and delivers to its subscribers as signed webhooks. \
                Generated from the configuration by `hookbridge asyncapi`.",
        },
        "defaultContentType": "application/cloudevents+json; charset=UTF-8",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": components,
    })
}

/// The event types the configured sources can publish, sorted, each once.
fn event_types(config: &Config) -> Vec<&str> {
    let mut types: Vec<&str> = config.ingress.sources.iter().flat_map(|source| source.provider.event_types()).collect();
    types.sort_unstable();
    types.dedup();
    types
}

/// A channel or message id: the type with `-` for `.` (ids allow
/// letters, digits, `-` and `_`).
fn channel_id(ty: &str) -> String {
    ty.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect()
}

fn event_message(ty: &str, bus: &BusOptions) -> Value {
    let mut message = json!({
        "name": ty,
        "title": ty,
        "contentType": "application/cloudevents+json; charset=UTF-8",
        "payload": payload(ty),
        "traits": [{ "$ref": "#/components/messageTraits/cloudEvent" }],
    });
    if let BusOptions::Kafka(_) = bus {
        message["bindings"] = json!({
            "kafka": {
                "key": { "type": "string", "description": "The event's `subject` (the provider's message id), or its id without one." },
                "bindingVersion": "0.5.0",
            }
        });
    }
    message
}

/// The CloudEvent schema with its `type` fixed to `ty`.
fn payload(ty: &str) -> Value {
    json!({
        "allOf": [
            { "$ref": "#/components/schemas/CloudEvent" },
            { "type": "object", "properties": { "type": { "const": ty } } },
        ]
    })
}

/// An event as the relay POSTs it: the same CloudEvent, signed.
fn webhook_message(ty: &str) -> Value {
    json!({
        "name": format!("{ty} webhook"),
        "title": format!("{ty}, delivered"),
        "contentType": "application/cloudevents+json; charset=UTF-8",
        "payload": payload(ty),
        "traits": [{ "$ref": "#/components/messageTraits/standardWebhooks" }],
    })
}

/// The headers that carry the CloudEvents attributes on each backend.
fn cloud_event_headers(bus: &BusOptions) -> Value {
    match bus {
        BusOptions::Kafka(_) => json!({
            "type": "object",
            "description": "The CloudEvents Kafka binding's headers, for routing without parsing the value.",
            "properties": {
                "content-type": { "type": "string", "const": "application/cloudevents+json; charset=UTF-8" },
                "ce_id": { "type": "string", "description": "The event's id." },
                "ce_type": { "type": "string", "description": "The event's type." },
                "ce_source": { "type": "string", "description": "The event's source." },
            },
        }),
        BusOptions::Nats(_) => json!({
            "type": "object",
            "properties": {
                "Nats-Msg-Id": { "type": "string", "description": "`<source>#<id>`: JetStream drops a duplicate within the stream's duplicate window." },
            },
        }),
        BusOptions::Embedded(_) => json!({ "type": "object" }),
    }
}

/// What the document's parts gather: servers, channels, operations and the
/// messages of its components.
struct Parts {
    servers: Map<String, Value>,
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    messages: Map<String, Value>,
}

/// The relay's outbound webhooks: one server and channel per subscriber,
/// with the event messages its `events` patterns match.
fn webhooks(config: &Config, types: &[&str], parts: &mut Parts) {
    for subscriber in &config.relay.subscribers {
        let url = &subscriber.url;
        let server = format!("subscriber-{}", channel_id(&subscriber.name));
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        parts.servers.insert(
            server.clone(),
            json!({
                "host": host,
                "protocol": url.scheme(),
                "description": format!("Subscriber `{}`: the relay POSTs each event it subscribes to here.", subscriber.name),
            }),
        );
        let matching: Vec<&&str> =
            types.iter().filter(|ty| subscriber.events.iter().any(|pattern| pattern.matches(ty))).collect();
        let mut messages = Map::new();
        for ty in &matching {
            let id = format!("webhook-{}", channel_id(ty));
            parts.messages.entry(id.clone()).or_insert_with(|| webhook_message(ty));
            messages.insert(id.clone(), json!({ "$ref": format!("#/components/messages/{id}") }));
        }
        let channel = format!("webhook-{}", channel_id(&subscriber.name));
        parts.channels.insert(
            channel.clone(),
            json!({
                "address": url.path(),
                "title": format!("Webhooks to {}", subscriber.name),
                "description": format!(
                    "Each event matching {} is POSTed once it is on the bus, signed with Standard Webhooks; retried on failure, then kept in the subscriber's dead letters.",
                    subscriber.events.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
                ),
                "servers": [{ "$ref": format!("#/servers/{server}") }],
                "messages": messages,
                "bindings": { "http": { "bindingVersion": "0.3.0" } },
            }),
        );
        let refs: Vec<Value> = matching
            .iter()
            .map(|ty| json!({ "$ref": format!("#/channels/{channel}/messages/webhook-{}", channel_id(ty)) }))
            .collect();
        parts.operations.insert(
            format!("deliver-{}", channel_id(&subscriber.name)),
            json!({
                "action": "send",
                "title": format!("Deliver to {}", subscriber.name),
                "summary": "The relay sends each event as an HTTP POST; a 2xx answer settles it.",
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": refs,
                "bindings": { "http": { "method": "POST", "bindingVersion": "0.3.0" } },
            }),
        );
    }
}

/// The streams listener's servers (HTTP for Server-Sent Events, WS), its two
/// channels and their messages; the security schemes, when it is configured.
fn streams(config: &Config, types: &[&str], parts: &mut Parts) -> Option<Value> {
    let settings = config.streams.as_ref()?;
    let security = json!([{ "$ref": "#/components/securitySchemes/streamToken" }, { "$ref": "#/components/securitySchemes/streamAccessToken" }]);
    for (name, protocol, what) in [("streams-sse", "http", "Server-Sent Events"), ("streams-ws", "ws", "WebSocket")] {
        parts.servers.insert(
            name.into(),
            json!({
                "host": settings.listen.to_string(),
                "protocol": protocol,
                "description": format!("hookbridge's streams listener ({what}): every event type, resumable from a cursor."),
                "security": security,
            }),
        );
    }
    let query = json!({
        "type": "object",
        "properties": {
            "types": { "type": "string", "description": "Comma-separated event patterns (email.*, message.created, *); default: all the token may read." },
            "after": { "type": "string", "description": "A cursor: resume just after that event (SSE: the Last-Event-ID header wins)." },
            "since": { "type": "string", "format": "date-time", "description": "Start with the first event published at or after this time." },
            "access_token": { "type": "string", "description": "The stream token, for clients that cannot set Authorization (EventSource)." },
        },
    });
    let mut refs = Vec::new();
    let mut channel_messages = Map::new();
    for ty in types {
        let id = format!("stream-{}", channel_id(ty));
        parts.messages.insert(
            id.clone(),
            json!({
                "name": ty,
                "title": format!("{ty} (stream)"),
                "summary": format!("SSE: `id:` the cursor, `event: {ty}`, `data:` the CloudEvent on one line. WebSocket: {{\"type\":\"event\",\"cursor\":…,\"event\":…}}."),
                "contentType": "application/json",
                "payload": payload(ty),
            }),
        );
        channel_messages.insert(id.clone(), json!({ "$ref": format!("#/components/messages/{id}") }));
    }
    for (id, summary, payload) in [
        (
            "stream-resync",
            "The cursor asked for is older than the bus retains: `id:` (and `oldest`) is the oldest cursor there is, and the stream goes on from it.",
            json!({ "type": "object", "required": ["oldest"], "properties": { "oldest": { "type": "string" }, "message": { "type": "string" } } }),
        ),
        (
            "stream-disconnect",
            "The server ends the stream: reason `slow` (the client fell a buffer behind), `shutdown` or `unavailable`. Reconnect with the last event's cursor.",
            json!({ "type": "object", "required": ["reason"], "properties": { "reason": { "type": "string", "enum": ["slow", "shutdown", "unavailable"] }, "message": { "type": "string" } } }),
        ),
    ] {
        parts.messages.insert(id.into(), json!({ "name": id.trim_start_matches("stream-"), "summary": summary, "contentType": "application/json", "payload": payload }));
        channel_messages.insert(id.into(), json!({ "$ref": format!("#/components/messages/{id}") }));
    }
    for (channel, address, server, bindings) in [
        ("streams-events", "/streams/events", "streams-sse", json!({ "http": { "bindingVersion": "0.3.0" } })),
        (
            "streams-ws",
            "/streams/ws",
            "streams-ws",
            json!({ "ws": { "method": "GET", "query": query, "bindingVersion": "0.1.0" } }),
        ),
    ] {
        parts.channels.insert(
            channel.into(),
            json!({
                "address": address,
                "title": format!("Stream at {address}"),
                "description": "The events of the types asked for, as they are published (or from a cursor or a time), each with its cursor. Resuming from a cursor misses nothing and repeats nothing, across restarts and on any replica.",
                "servers": [{ "$ref": format!("#/servers/{server}") }],
                "messages": channel_messages,
                "bindings": bindings,
            }),
        );
        refs.clear();
        for id in channel_messages.keys() {
            refs.push(json!({ "$ref": format!("#/channels/{channel}/messages/{id}") }));
        }
        parts.operations.insert(
            format!("receive-{channel}"),
            json!({
                "action": "receive",
                "title": format!("Read {address}"),
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": refs,
            }),
        );
    }
    Some(json!({
        "streamToken": { "type": "http", "scheme": "bearer", "description": "A [[streams.tokens]] token in `Authorization: Bearer`." },
        "streamAccessToken": { "type": "httpApiKey", "name": "access_token", "in": "query", "description": "The same token as `?access_token=`." },
    }))
}

/// The event schema (`crates/event/schema/event.schema.json`) as AsyncAPI
/// components: its `$defs` become sibling schemas, so the references
/// resolve inside the document, and the draft's own `$schema`/`$id` go.
fn schemas() -> Value {
    let mut schema: Value = serde_json::from_str(hookbridge_event::SCHEMA_JSON).expect("the event schema is JSON");
    let object = schema.as_object_mut().expect("the event schema is an object");
    object.remove("$schema");
    object.remove("$id");
    let defs = object.remove("$defs").and_then(|d| d.as_object().cloned()).unwrap_or_default();
    let mut schemas = Map::new();
    for (name, mut def) in defs {
        rewrite_refs(&mut def);
        schemas.insert(format!("Event{}", capitalized(&name)), def);
    }
    rewrite_refs(&mut schema);
    schemas.insert("CloudEvent".into(), schema);
    Value::Object(schemas)
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if key == "$ref"
                    && let Some(name) = inner.as_str().and_then(|r| r.strip_prefix("#/$defs/"))
                {
                    *inner = Value::String(format!("#/components/schemas/Event{}", capitalized(name)));
                } else {
                    rewrite_refs(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}
