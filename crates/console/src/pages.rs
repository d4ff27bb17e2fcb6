//! The console's pages, rendered on the server; every value shown is
//! escaped by maud. Actions are forms posting the session's CSRF token and
//! answering with a redirect back (post/redirect/get).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use hookbridge_bus::{AttemptQuery, AttemptRecord, TailFrom, Tailed};
use hookbridge_event::EventPattern;
use maud::{Markup, html};

use crate::Console;
use crate::charts;
use crate::layout::{Page, refused};
use crate::session::{Form, Signed};

type Params = Query<BTreeMap<String, String>>;

/// The answer to a failed read of the relay or the bus.
fn failed(error: &hookbridge_relay::Error) -> Response {
    let status = match error {
        hookbridge_relay::Error::UnknownSubscriber(_)
        | hookbridge_relay::Error::UnknownReplay(_)
        | hookbridge_relay::Error::UnknownEvent(_) => StatusCode::NOT_FOUND,
        hookbridge_relay::Error::Invalid(_) | hookbridge_relay::Error::DisabledInConfig(_) => StatusCode::BAD_REQUEST,
        hookbridge_relay::Error::Bus(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    refused(status, &error.to_string())
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn csrf_field(signed: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(signed.csrf); }
}

fn flash(params: &BTreeMap<String, String>) -> Markup {
    html! {
        @if let Some(done) = params.get("done") {
            p.message role="status" { (done) }
        }
    }
}

/// `path?done=message`, for a redirect after an action.
fn done(path: &str, message: &str) -> Redirect {
    let sep = if path.contains('?') { '&' } else { '?' };
    let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("done", message).finish();
    Redirect::to(&format!("{path}{sep}{query}"))
}

/// The subscriber a page is asked for, or the first configured.
fn chosen(params: &BTreeMap<String, String>, names: &[String]) -> Option<String> {
    param(params, "subscriber").map(str::to_owned).or_else(|| names.first().cloned())
}

fn param<'a>(params: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    params.get(key).map(String::as_str).map(str::trim).filter(|v| !v.is_empty())
}

pub(crate) async fn overview(State(console): State<Console>, Extension(signed): Extension<Signed>) -> Response {
    console.samples.refresh(&console.registry);
    let samples = console.samples.all();
    let webhooks = charts::rates(&samples, |s| &s.webhooks);
    let deliveries = charts::rates(&samples, |s| &s.deliveries);
    let backlog = charts::levels(&samples, |s| &s.backlog);
    let subscribers = console.relay.subscribers().await;
    Page::new("Overview", "Overview", &signed.csrf)
        .render(html! {
            div.charts {
                (charts::chart("Webhooks per second, by source and answer", "/s", &webhooks))
                (charts::chart("Deliveries per second, by outcome", "/s", &deliveries))
                (charts::chart("Backlog per subscriber", "events", &backlog))
            }
            h2 { "Subscribers now" }
            @match subscribers {
                Ok(views) => (subscriber_table(&views, None)),
                Err(error) => p.message.error { (error) },
            }
            p.quiet { "Charts show this process's own metrics over the last ten minutes, sampled every " (charts::EVERY.as_secs()) " s; a process that runs only the relay has no webhooks to show." }
        })
        .into_response()
}

/// The subscribers; with actions, each one's last failed attempt and its
/// enable/disable button.
fn subscriber_table(
    views: &[hookbridge_relay::SubscriberView],
    actions: Option<(&Signed, &BTreeMap<String, AttemptRecord>)>,
) -> Markup {
    fn state_text(state: &str) -> &str {
        if state == "circuit_open" { "circuit open" } else { state }
    }
    html! {
        table {
            thead { tr {
                th scope="col" { "Subscriber" } th scope="col" { "State" } th.num scope="col" { "Backlog" }
                th.num scope="col" { "Retries" } th.num scope="col" { "Dead letters" } th scope="col" { "Oldest undelivered" }
                @if actions.is_some() { th scope="col" { "Last error" } th scope="col" { "Action" } }
            } }
            tbody {
                @for v in views {
                    tr data-subscriber=(v.name) {
                        td { a href={ "/console/attempts?subscriber=" (v.name) } { (v.name) } br; span.quiet { (v.url) } }
                        td { span class={ "state " (v.state) } { (state_text(v.state)) }
                            @if let Some(d) = &v.disabled { br; span.quiet { (d.reason) } } }
                        td.num { (v.status.backlog) }
                        td.num { (v.status.pending_retries) }
                        td.num { a href={ "/console/dead-letters?subscriber=" (v.name) } { (v.status.dead_letters) } }
                        td { (v.status.oldest_undelivered.map(time).unwrap_or_else(|| "-".into())) }
                        @if let Some((signed, last_errors)) = actions {
                            td {
                                @match last_errors.get(&v.name) {
                                    Some(a) => {
                                        a href={ "/console/attempts?subscriber=" (v.name) "&status=failed" } { (describe(a)) }
                                        br; span.quiet { (time(a.at)) }
                                    },
                                    None => span.quiet { "none recorded" },
                                }
                            }
                            td {
                                @let (action, label) = if v.state == "disabled" { ("enable", "Enable") } else { ("disable", "Disable") };
                                form.inline method="post" action={ "/console/subscribers/" (v.name) "/" (action) } {
                                    (csrf_field(signed))
                                    button.secondary type="submit" aria-label={ (label) " " (v.name) } { (label) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn subscribers(
    State(console): State<Console>,
    Extension(signed): Extension<Signed>,
    Query(params): Params,
) -> Response {
    let views = match console.relay.subscribers().await {
        Ok(views) => views,
        Err(error) => return failed(&error),
    };
    // Each subscriber's last failed attempt, from the delivery record.
    let mut last_errors = BTreeMap::new();
    for v in &views {
        let query =
            AttemptQuery { status: Some(hookbridge_bus::StatusFilter::Failed), limit: 1, ..AttemptQuery::default() };
        if let Ok(Some(a)) = console.relay.attempts(&v.name, query).await.map(|a| a.into_iter().next()) {
            last_errors.insert(v.name.clone(), a);
        }
    }
    Page::new("Subscribers", "Subscribers", &signed.csrf)
        .render(html! {
            (flash(&params))
            (subscriber_table(&views, Some((&signed, &last_errors))))
            p.quiet { "Disabling a subscriber stops its deliveries on every relay process; its events wait on the bus. Enabling it closes its circuit." }
        })
        .into_response()
}

fn describe(a: &AttemptRecord) -> String {
    match (a.status, &a.error) {
        (Some(status), _) => format!("HTTP {status} ({})", a.outcome.replace('_', " ")),
        (None, Some(error)) => error.clone(),
        (None, None) => a.outcome.replace('_', " "),
    }
}

pub(crate) async fn set_enabled(
    State(console): State<Console>,
    Extension(signed): Extension<Signed>,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(refused) = Form::parse(&body).csrf_refusal(&signed) {
        return refused;
    }
    let enable = match action.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return refused(StatusCode::NOT_FOUND, "No such action."),
    };
    match console.relay.set_enabled(&name, enable).await {
        Ok(view) => done("/console/subscribers", &format!("{} is now {}.", view.name, view.state)).into_response(),
        Err(error) => failed(&error),
    }
}

pub(crate) async fn sources(State(console): State<Console>, Extension(signed): Extension<Signed>) -> Response {
    // source → outcome → reason → count, from this process's metrics.
    let mut by_source: BTreeMap<String, BTreeMap<(String, String), f64>> = BTreeMap::new();
    let mut ingress = false;
    for family in console.registry.gather() {
        if family.name() != "hookbridge_ingress_requests_total" {
            continue;
        }
        ingress = true;
        for m in family.get_metric() {
            let label =
                |name: &str| m.get_label().iter().find(|l| l.name() == name).map_or("", |l| l.value()).to_owned();
            *by_source.entry(label("source")).or_default().entry((label("outcome"), label("reason"))).or_default() +=
                m.get_counter().get_value();
        }
    }
    let sum = |counts: &BTreeMap<(String, String), f64>, keep: &dyn Fn(&str) -> bool| {
        counts.iter().filter(|((outcome, _), _)| keep(outcome)).fold(0.0, |total, (_, n)| total + n)
    };
    Page::new("Sources", "Sources", &signed.csrf)
        .render(html! {
            @if !ingress {
                p.message { "This process does not run the ingress: its sources' answers are counted by the ingress processes (see their /metrics)." }
            }
            p.quiet { "Webhooks answered since this process started, from its metrics." }
            table {
                thead { tr {
                    th scope="col" { "Source" } th.num scope="col" { "Accepted" } th.num scope="col" { "Duplicates" }
                    th.num scope="col" { "Rejected" } th scope="col" { "Rejections by answer and reason" }
                } }
                tbody {
                    @for (source, counts) in &by_source {
                        tr data-source=(source) {
                            td { (source) }
                            td.num { (sum(counts, &|o| o == "accepted")) }
                            td.num { (sum(counts, &|o| o == "duplicate")) }
                            td.num { (sum(counts, &|o| o != "accepted" && o != "duplicate")) }
                            td {
                                @for ((outcome, reason), n) in counts.iter().filter(|((o, _), n)| **n > 0.0 && o != "accepted" && o != "duplicate") {
                                    span { (outcome) @if !reason.is_empty() && reason != "none" { " (" (reason) ")" } ": " strong { (n) } } br;
                                }
                            }
                        }
                    }
                }
            }
        })
        .into_response()
}

/// How many events the events page reads at most, and for how long.
const EVENTS_SCANNED: usize = 20_000;
const EVENTS_SHOWN: usize = 100;

pub(crate) async fn events(
    State(console): State<Console>,
    Extension(signed): Extension<Signed>,
    Query(params): Params,
) -> Response {
    let ty = param(&params, "type");
    let source = param(&params, "source");
    let subject = param(&params, "subject");
    let since = match param(&params, "since").map(DateTime::parse_from_rfc3339).transpose() {
        Ok(since) => since.map_or_else(|| Utc::now() - chrono::Duration::minutes(15), |t| t.with_timezone(&Utc)),
        Err(_) => {
            return refused(StatusCode::BAD_REQUEST, "`since` is not an RFC 3339 time (e.g. 2026-12-05T10:00:00Z).");
        }
    };
    let patterns = match ty.map(EventPattern::parse).transpose() {
        Ok(pattern) => vec![pattern.unwrap_or(EventPattern::All)],
        Err(error) => return refused(StatusCode::BAD_REQUEST, &format!("`type`: {error}")),
    };
    let mut shown = std::collections::VecDeque::new();
    let mut scanned = 0;
    let mut error = None;
    match console.bus.tail(patterns, TailFrom::Time(since)).await {
        Ok(mut tail) => {
            // Read until caught up (nothing more for a moment), within bounds.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while scanned < EVENTS_SCANNED {
                let wait =
                    deadline.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_millis(300));
                match tokio::time::timeout(wait, tail.next()).await {
                    Ok(Ok(Tailed::Event { event, published_at, .. })) => {
                        scanned += 1;
                        let source_ok = source.is_none_or(|s| event.source.contains(s) || event.provider == s);
                        let subject_ok = subject.is_none_or(|s| event.subject.as_deref() == Some(s));
                        if source_ok && subject_ok {
                            shown.push_front((event, published_at));
                            shown.truncate(EVENTS_SHOWN);
                        }
                    }
                    Ok(Ok(Tailed::Resync { .. })) => {}
                    Ok(Err(e)) => {
                        error = Some(e.to_string());
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        Err(e) => error = Some(e.to_string()),
    }
    let value = |key: &str| params.get(key).cloned().unwrap_or_default();
    Page::new("Events", "Events", &signed.csrf)
        .render(html! {
            form.filters method="get" action="/console/events" role="search" {
                label { "Type" input name="type" value=(value("type")) placeholder="email.* or email.bounced"; }
                label { "Source or provider" input name="source" value=(value("source")); }
                label { "Subject" input name="subject" value=(value("subject")); }
                label { "Since" input name="since" value=(value("since")) placeholder=(time(since)); }
                button type="submit" { "Filter" }
            }
            @if let Some(error) = error { p.message.error role="alert" { "Cannot read the bus: " (error) } }
            p.quiet { "The newest " (shown.len()) " of " (scanned) " events read since " (time(since)) " (at most " (EVENTS_SCANNED) " read; narrow with a later since)." }
            table {
                thead { tr { th scope="col" { "Published" } th scope="col" { "Type" } th scope="col" { "Source" } th scope="col" { "Subject" } th scope="col" { "Event" } } }
                tbody {
                    @for (event, at) in &shown {
                        tr {
                            td { (time(*at)) } td { (event.ty) } td { (event.source) } td { (event.subject.as_deref().unwrap_or("-")) }
                            td { a href={ "/console/events/" (urlencode(&event.id)) "?type=" (urlencode(&event.ty)) "&at=" (urlencode(&time(*at))) } { (event.id) } }
                        }
                    }
                }
            }
        })
        .into_response()
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(crate) async fn event(
    State(console): State<Console>,
    Extension(signed): Extension<Signed>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let hint = match (param(&params, "type"), param(&params, "at").map(DateTime::parse_from_rfc3339)) {
        (Some(ty), Some(Ok(at))) => Some((ty.to_owned(), at.with_timezone(&Utc))),
        _ => None,
    };
    let view = match console.relay.event_near(&id, hint).await {
        Ok(view) => view,
        Err(error) => return failed(&error),
    };
    Page::new(format!("Event {id}"), "Events", &signed.csrf)
        .render(html! {
            p { "Type " code { (view.ty) } ", published " (time(view.published_at)) "." }
            h2 { "At each subscriber" }
            table {
                thead { tr { th scope="col" { "Subscriber" } th scope="col" { "Fate" } th.num scope="col" { "Attempts" } th scope="col" { "Last attempt" } th scope="col" { "Last status" } } }
                tbody {
                    @for f in &view.subscribers {
                        tr {
                            td { (f.subscriber) }
                            td { span class={ "fate-" (f.fate) } { (f.fate.replace('_', " ")) } }
                            td.num { (f.attempts) }
                            td { (f.last_attempt_at.map(time).unwrap_or_else(|| "-".into())) }
                            td { (f.last_status.map_or_else(|| "-".to_owned(), |s| s.to_string())) }
                        }
                    }
                }
            }
            h2 { "Attempts" }
            (attempt_table(&view.attempts, true))
            h2 { "The CloudEvent" }
            @match &view.event {
                Some(event) => pre { (serde_json::to_string_pretty(event).unwrap_or_default()) },
                None => p.quiet { "No longer on the bus (removed by retention), or it cannot be read now." },
            }
        })
        .into_response()
}

fn attempt_table(attempts: &[AttemptRecord], show_subscriber: bool) -> Markup {
    html! {
        @if attempts.is_empty() {
            p.quiet { "No attempt recorded." }
        } @else {
            table.attempts {
                thead { tr {
                    th scope="col" { "Time" }
                    @if show_subscriber { th scope="col" { "Subscriber" } } @else { th scope="col" { "Event" } }
                    th.num scope="col" { "#" } th scope="col" { "Outcome" } th scope="col" { "Status or error" }
                    th.num scope="col" { "ms" } th scope="col" { "Next attempt" } th scope="col" { "Response" }
                } }
                tbody {
                    @for a in attempts {
                        tr {
                            td { (time(a.at)) }
                            @if show_subscriber { td { (a.subscriber) } }
                            @else { td { a href={ "/console/events/" (urlencode(&a.event_id)) } { (a.event_id) } br; span.quiet { (a.event_type) } } }
                            td.num { (a.attempt) }
                            td { span class={ "outcome-" (a.outcome) } { (a.outcome.replace('_', " ")) }
                                @if let Some(replay) = &a.replay { br; span.quiet { "replay " (replay) } } }
                            td { (a.status.map_or_else(|| a.error.clone().unwrap_or_default(), |s| format!("HTTP {s}"))) }
                            td.num { (format!("{:.1}", a.latency_ms)) }
                            td { (a.next_attempt_at.map(time).unwrap_or_else(|| "-".into())) }
                            td {
                                @if a.response.is_empty() { span.quiet { "-" } } @else {
                                    details { summary { "Response (" (a.response.len()) " bytes)" } pre.response { (a.response) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn attempts(
    State(console): State<Console>,
    Extension(signed): Extension<Signed>,
    Query(params): Params,
) -> Response {
    let names = console.relay.subscriber_names();
    let subscriber = chosen(&params, &names);
    let status = match param(&params, "status").map(str::parse::<hookbridge_bus::StatusFilter>).transpose() {
        Ok(status) => status,
        Err(error) => return refused(StatusCode::BAD_REQUEST, &error),
    };
    let query = AttemptQuery {
        event: param(&params, "event").map(str::to_owned),
        status,
        limit: 200,
        ..AttemptQuery::default()
    };
    let found = match &subscriber {
        Some(name) => match console.relay.attempts(name, query).await {
            Ok(found) => found,
            Err(error) => return failed(&error),
        },
        None => Vec::new(),
    };
    let value = |key: &str| params.get(key).cloned().unwrap_or_default();
    Page::new("Attempts", "Attempts", &signed.csrf)
        .render(html! {
            form.filters method="get" action="/console/attempts" role="search" {
                label { "Subscriber"
                    select name="subscriber" {
                        @for name in &names { option value=(name) selected[subscriber.as_ref() == Some(name)] { (name) } }
                    }
                }
                label { "Event id" input name="event" value=(value("event")); }
                label { "Status"
                    select name="status" {
                        @for (v, text) in [("", "any"), ("failed", "failed"), ("delivered", "delivered"), ("retry_scheduled", "retry scheduled"), ("dead_lettered", "dead-lettered"), ("5xx", "5xx"), ("4xx", "4xx")] {
                            option value=(v) selected[value("status") == v] { (text) }
                        }
                    }
                }
                button type="submit" { "Show" }
            }
            p.quiet { (found.len()) " attempts, newest first (at most 200)." }
            (attempt_table(&found, false))
        })
        .into_response()
}

pub(crate) async fn dead_letters(
    State(console): State<Console>,
    Extension(signed): Extension<Signed>,
    Query(params): Params,
) -> Response {
    let names = console.relay.subscriber_names();
    let Some(subscriber) = chosen(&params, &names) else {
        return Page::new("Dead letters", "Dead letters", &signed.csrf)
            .render(html! { p { "No subscriber is configured." } })
            .into_response();
    };
    let letters = match console.relay.dead_letters(&subscriber).await {
        Ok(letters) => letters,
        Err(error) => return failed(&error),
    };
    let action = |what: &str| format!("/console/dead-letters/{}/{what}", urlencode(&subscriber));
    Page::new("Dead letters", "Dead letters", &signed.csrf)
        .render(html! {
            (flash(&params))
            form.filters method="get" action="/console/dead-letters" {
                label { "Subscriber"
                    select name="subscriber" {
                        @for name in &names { option value=(name) selected[*name == subscriber] { (name) } }
                    }
                }
                button type="submit" { "Show" }
            }
            p { strong { (letters.len()) } " dead letters kept for " (subscriber) "." }
            @if !letters.is_empty() {
                form id="letters" method="post" action=(action("replay")) {
                    (csrf_field(&signed))
                    table {
                        thead { tr { th scope="col" { "Select" } th scope="col" { "Event" } th scope="col" { "Type" } th.num scope="col" { "Attempts" } th scope="col" { "Last error" } th scope="col" { "Dead-lettered" } } }
                        tbody {
                            @for l in &letters {
                                tr {
                                    td { input type="checkbox" name="id" value=(l.id) id={ "dl-" (l.id) } aria-label={ "Select " (l.event.id) }; }
                                    td { label for={ "dl-" (l.id) } { (l.event.id) }
                                        details { summary { "Inspect" } pre { (String::from_utf8_lossy(&l.event.to_json())) } } }
                                    td { (l.event.ty) }
                                    td.num { (l.failure.attempts) }
                                    td { (l.failure.last_error) }
                                    td { (time(l.dead_lettered_at)) }
                                }
                            }
                        }
                    }
                    button type="submit" { "Replay selected" } " "
                    button.danger type="submit" formaction=(action("discard")) data-confirm="Discard the selected dead letters for good?" { "Discard selected" } " "
                    button.secondary type="submit" name="all" value="1" { "Replay all" }
                }
            }
        })
        .into_response()
}

pub(crate) async fn act_on_dead_letters(
    State(console): State<Console>,
    Extension(signed): Extension<Signed>,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = form.csrf_refusal(&signed) {
        return refused;
    }
    let ids: Vec<Option<&str>> =
        if form.get("all").is_some() { vec![None] } else { form.all("id").into_iter().map(Some).collect() };
    if ids.is_empty() {
        return done(&format!("/console/dead-letters?subscriber={}", urlencode(&name)), "Nothing was selected.")
            .into_response();
    }
    let mut count = 0;
    for id in ids {
        let result = match action.as_str() {
            "replay" => console.relay.replay_dead_letters(&name, id).await,
            "discard" => console.relay.discard_dead_letters(&name, id).await,
            _ => return refused(StatusCode::NOT_FOUND, "No such action."),
        };
        match result {
            Ok(n) => count += n,
            Err(error) => return failed(&error),
        }
    }
    let verb = if action == "replay" { "handed back for delivery" } else { "discarded" };
    done(&format!("/console/dead-letters?subscriber={}", urlencode(&name)), &format!("{count} dead letters {verb}."))
        .into_response()
}

pub(crate) async fn replay_form(State(console): State<Console>, Extension(signed): Extension<Signed>) -> Response {
    let names = console.relay.subscriber_names();
    let hour_ago = time(Utc::now() - chrono::Duration::hours(1));
    Page::new("Replay", "Replay", &signed.csrf)
        .render(html! {
            p { "Re-delivers to one subscriber what the bus retains in a time window, through a group of its own: its live deliveries go on. Each event gets one attempt; a failure goes to its dead letters." }
            form.stack method="post" action="/console/replay" {
                (csrf_field(&signed))
                label { "Subscriber" select name="subscriber" { @for name in &names { option value=(name) { (name) } } } }
                label { "Since (RFC 3339)" input name="since" value=(hour_ago) required; }
                label { "Until (empty: now)" input name="until"; }
                label { "Only these event types (comma-separated, optional)" input name="events" placeholder="email.bounced, email.complained"; }
                button type="submit" { "Start the replay" }
            }
        })
        .into_response()
}

pub(crate) async fn start_replay(
    State(console): State<Console>,
    Extension(signed): Extension<Signed>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = form.csrf_refusal(&signed) {
        return refused;
    }
    let parse = |key: &str| {
        form.get(key).map(|t| DateTime::parse_from_rfc3339(t.trim()).map(|t| t.with_timezone(&Utc))).transpose()
    };
    let (Ok(Some(since)), Ok(until)) = (parse("since"), parse("until")) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "`since` (required) and `until` must be RFC 3339 times, e.g. 2026-12-05T10:00:00Z.",
        );
    };
    let events: Result<Vec<EventPattern>, _> = form
        .get("events")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(EventPattern::parse)
        .collect();
    let Ok(events) = events else {
        return refused(StatusCode::BAD_REQUEST, "An event type is not a type or a family (email.bounced, email.*).");
    };
    let subscriber = form.get("subscriber").unwrap_or_default();
    match console.relay.start_replay(subscriber, since, until, events).await {
        Ok(view) => Redirect::to(&format!("/console/replays/{}", urlencode(&view.id))).into_response(),
        Err(error) => failed(&error),
    }
}

pub(crate) async fn replay(
    State(console): State<Console>,
    Extension(signed): Extension<Signed>,
    Path(id): Path<String>,
) -> Response {
    let view = match console.relay.replay(&id) {
        Ok(view) => view,
        Err(error) => return failed(&error),
    };
    let settled = view.delivered + view.failed + view.skipped;
    let total = view.total.unwrap_or(0).max(settled);
    let page = Page::new(format!("Replay {}", view.id), "Replay", &signed.csrf).render(html! {
        p { "To " strong { (view.subscriber) } ", events published from " (time(view.since)) " to " (time(view.until)) "." }
        p role="status" id="replay-status" {
            @if view.done { "Done: " } @else { "Running: " }
            (view.delivered) " delivered, " (view.failed) " failed (dead-lettered), " (view.skipped) " skipped"
        }
        progress max=(total.max(1)) value=(settled) aria-label="Replay progress" { (settled) " of " (total) }
        @if !view.done { p.quiet { "This page refreshes every second until the replay is done." } }
    });
    let mut response = page.into_response();
    if !view.done {
        response.headers_mut().insert("refresh", axum::http::HeaderValue::from_static("1"));
    }
    response
}

pub(crate) async fn tail(Extension(signed): Extension<Signed>) -> Response {
    Page::new("Live tail", "Live tail", &signed.csrf)
        .render(html! {
            p id="tail-status" role="status" { "Connecting…" }
            p { "Events received: " span id="tail-count" { "0" } }
            ul id="tail" data-stream="/console/tail/stream" aria-live="polite" {}
        })
        .into_response()
}

/// Every event published from now on, as Server-Sent Events, while the page is open.
pub(crate) async fn tail_stream(State(console): State<Console>) -> Response {
    let tail = match console.bus.tail(vec![EventPattern::All], TailFrom::Now).await {
        Ok(tail) => tail,
        Err(error) => return refused(StatusCode::SERVICE_UNAVAILABLE, &format!("Cannot read the bus: {error}")),
    };
    let stream = futures_util::stream::unfold(tail, |mut tail| async move {
        loop {
            match tail.next().await {
                Ok(Tailed::Event { event, published_at, .. }) => {
                    let data = serde_json::json!({
                        "id": event.id, "type": event.ty, "subject": event.subject, "source": event.source,
                        "published_at": time(published_at),
                    });
                    return Some((
                        Ok::<_, Infallible>(SseEvent::default().event("event").data(data.to_string())),
                        tail,
                    ));
                }
                Ok(Tailed::Resync { .. }) => {}
                Err(_) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
