//! OTLP export of hookbridge's spans (`[tracing] otlp_endpoint`): the
//! ingress's `webhook receive` and the relay's `webhook deliver` spans, in
//! the traces their `traceparent` headers describe.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use bytes::Bytes;
use hookbridge_config::TracingSettings;
use hookbridge_event::trace::{ActiveSpan, SpanKind, SpanSink, TraceContext};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// Installs the exporter; the returned provider flushes on shutdown.
///
/// # Errors
/// When the exporter cannot be built.
pub fn install(settings: &TracingSettings) -> anyhow::Result<Option<SdkTracerProvider>> {
    let Some(url) = &settings.otlp_traces_url else { return Ok(None) };
    let client = TokioHttp {
        client: reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?,
        runtime: tokio::runtime::Handle::current(),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(url.clone())
        .with_protocol(if settings.otlp_json { Protocol::HttpJson } else { Protocol::HttpBinary })
        .build()
        .context("building the OTLP exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(settings.service_name.clone()).build())
        .build();
    hookbridge_event::trace::set_sink(Box::new(OtelSink { tracer: provider.tracer("hookbridge") }));
    tracing::info!(endpoint = %url, "exporting spans over OTLP");
    Ok(Some(provider))
}

struct OtelSink {
    tracer: SdkTracer,
}

impl SpanSink for OtelSink {
    fn start(&self, name: &'static str, kind: SpanKind, parent: Option<TraceContext>) -> Box<dyn ActiveSpan> {
        let cx = parent.map_or_else(Context::new, |p| {
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(p.trace_id),
                SpanId::from_bytes(p.span_id),
                TraceFlags::new(p.flags),
                true,
                TraceState::default(),
            ))
        });
        let kind = match kind {
            SpanKind::Server => opentelemetry::trace::SpanKind::Server,
            SpanKind::Client => opentelemetry::trace::SpanKind::Client,
        };
        Box::new(OtelSpan(self.tracer.span_builder(name).with_kind(kind).start_with_context(&self.tracer, &cx)))
    }
}

struct OtelSpan(opentelemetry_sdk::trace::Span);

impl ActiveSpan for OtelSpan {
    fn context(&self) -> TraceContext {
        let cx = self.0.span_context();
        TraceContext {
            trace_id: cx.trace_id().to_bytes(),
            span_id: cx.span_id().to_bytes(),
            flags: cx.trace_flags().to_u8(),
        }
    }

    fn set_attribute(&mut self, key: &'static str, value: String) {
        self.0.set_attribute(KeyValue::new(key, value));
    }

    fn end(mut self: Box<Self>, error: Option<String>) {
        if let Some(error) = error {
            self.0.set_status(Status::error(error));
        }
        self.0.end();
    }
}

/// The exporter's HTTP client: the batch processor runs on its own thread,
/// so each request is spawned onto the process's Tokio runtime and awaited
/// there (one HTTP stack in the binary, not a second blocking one).
#[derive(Debug)]
struct TokioHttp {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl opentelemetry_http::HttpClient for TokioHttp {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let response = async move {
            let response =
                client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
            let mut builder = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = response.bytes().await?;
            Ok::<_, opentelemetry_http::HttpError>(builder.body(body)?)
        };
        self.runtime.spawn(response).await?
    }
}

/// Flushes and stops the exporter.
pub async fn shutdown(provider: Option<SdkTracerProvider>) {
    if let Some(provider) = provider {
        let provider = Arc::new(provider);
        let flushing = provider.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || flushing.shutdown()).await {
            tracing::warn!(%error, "could not flush the last spans");
        }
    }
}
