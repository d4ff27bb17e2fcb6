//! `GET /streams/ws`: the same stream over WebSocket, one JSON text frame
//! per item:
//!
//! - `{"type":"event","cursor":"…","event":{…CloudEvent…}}`
//! - `{"type":"resync","oldest":"…"}`
//! - `{"type":"disconnect","reason":"slow","message":"…"}`, then a close frame.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use hookbridge_bus::Tailed;

use crate::pump::{End, Pump};
use crate::{Connected, Shared, StreamQuery, open};

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
    kill: Option<axum::Extension<crate::Kill>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Refused before the upgrade, with a plain HTTP status.
    let (pump, client) = match open(&shared, &headers, query, "ws", kill.map(|k| k.0), frame).await {
        Ok(opened) => opened,
        Err(refusal) => return refusal.into_response(),
    };
    let heartbeat = shared.settings.heartbeat;
    upgrade.on_upgrade(move |socket| run(socket, pump, client, heartbeat))
}

async fn run(mut socket: WebSocket, mut pump: Pump, client: Connected, heartbeat: std::time::Duration) {
    let mut ping = tokio::time::interval(heartbeat);
    ping.reset();
    loop {
        tokio::select! {
            biased;
            end = &mut pump.end => {
                let Ok(end) = end else { break };
                let data = serde_json::json!({
                    "type": "disconnect",
                    "reason": end.reason(),
                    "message": end.message(client.shared.settings.client_buffer),
                });
                let _ = socket.send(Message::Text(data.to_string().into())).await;
                let code = if end == End::Shutdown { 1001 } else { 1008 };
                let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: end.reason().into() }))).await;
                break;
            }
            out = pump.frames.recv() => {
                let Some(out) = out else { break };
                let Ok(text) = Utf8Bytes::try_from(out.frame) else { continue };
                // A client that takes nothing blocks this send: the reader
                // then ends the stream as slow, and the socket is dropped.
                tokio::select! {
                    sent = socket.send(Message::Text(text)) => if sent.is_err() { break },
                    _ = &mut pump.end => break,
                }
                if let Some(at) = out.published_at {
                    client.sent(at);
                }
                ping.reset();
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_) | Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// An event or a resync as a JSON text frame.
fn frame(item: &Tailed) -> Bytes {
    match item {
        Tailed::Event { event, cursor, .. } => {
            let json = event.to_json();
            let mut out = BytesMut::with_capacity(json.len() + cursor.len() + 40);
            out.put_slice(br#"{"type":"event","cursor":"#);
            out.put_slice(serde_json::to_string(cursor).unwrap_or_default().as_bytes());
            out.put_slice(br#","event":"#);
            out.put_slice(&json);
            out.put_slice(b"}");
            out.freeze()
        }
        Tailed::Resync { oldest } => Bytes::from(serde_json::json!({ "type": "resync", "oldest": oldest }).to_string()),
    }
}
