//! `GET /streams/events`: Server-Sent Events.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
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
) -> Response {
    let (pump, client) = match open(&shared, &headers, query, "sse", kill.map(|k| k.0), frame).await {
        Ok(opened) => opened,
        Err(refusal) => return refusal.into_response(),
    };
    let mut heartbeat = tokio::time::interval(shared.settings.heartbeat);
    heartbeat.reset();
    let state = Stream { pump, heartbeat, client, started: false, done: false };
    let body = Body::from_stream(futures_util::stream::unfold(state, next));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

struct Stream {
    pump: Pump,
    heartbeat: tokio::time::Interval,
    client: Connected,
    started: bool,
    done: bool,
}

async fn next(mut s: Stream) -> Option<(Result<Bytes, Infallible>, Stream)> {
    if s.done {
        return None;
    }
    if !s.started {
        // Sent at once, so the client (and any proxy) sees the stream open;
        // sets the browser's reconnection delay to a second.
        s.started = true;
        return Some((Ok(Bytes::from_static(b"retry: 1000\n: connected\n\n")), s));
    }
    tokio::select! {
        biased;
        end = &mut s.pump.end => {
            s.done = true;
            let end = end.ok()?;
            Some((Ok(disconnect(end, s.client.shared.settings.client_buffer)), s))
        }
        out = s.pump.frames.recv() => {
            let out = out?;
            if let Some(at) = out.published_at {
                s.client.sent(at);
            }
            s.heartbeat.reset();
            Some((Ok(out.frame), s))
        }
        _ = s.heartbeat.tick() => Some((Ok(Bytes::from_static(b": heartbeat\n\n")), s)),
    }
}

/// An event or a resync as an SSE frame.
fn frame(item: &Tailed) -> Bytes {
    match item {
        Tailed::Event { event, cursor, .. } => {
            let json = event.to_json();
            let mut out = BytesMut::with_capacity(json.len() + cursor.len() + event.ty.len() + 24);
            out.put_slice(b"id: ");
            out.put_slice(cursor.as_bytes());
            out.put_slice(b"\nevent: ");
            out.put_slice(event.ty.as_bytes());
            out.put_slice(b"\ndata: ");
            // JSON has line breaks only as whitespace between tokens (never
            // inside a string): as spaces it is the same document on one line.
            out.extend(json.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
            out.put_slice(b"\n\n");
            out.freeze()
        }
        Tailed::Resync { oldest } => {
            let data = serde_json::json!({
                "oldest": oldest,
                "message": "events before this cursor are no longer retained by the bus; the stream goes on from it",
            });
            Bytes::from(format!("id: {oldest}\nevent: resync\ndata: {data}\n\n"))
        }
    }
}

fn disconnect(end: End, buffer: usize) -> Bytes {
    let data = serde_json::json!({ "reason": end.reason(), "message": end.message(buffer) });
    Bytes::from(format!("event: disconnect\ndata: {data}\n\n"))
}
