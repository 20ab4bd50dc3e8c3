//! Logging and tracing: a `tracing` subscriber (`LOG_FORMAT`, `RUST_LOG`), OpenTelemetry
//! spans exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and the W3C
//! `traceparent` carried in Kafka headers so one trace follows an event across stages.
//!
//! Spans always get OpenTelemetry ids (the SDK tracer is installed even with no
//! exporter), so `traceparent` is written whether or not anything is exported.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// The W3C trace-context header name.
pub const TRACEPARENT: &str = "traceparent";

/// Keeps the tracer provider alive; flushes spans when dropped.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {e}");
        }
    }
}

/// Installs the global subscriber for `service`. Call once, early in `main`, inside the
/// tokio runtime (the OTLP exporter needs it).
pub fn init(service: &str, format: LogFormat) -> TelemetryGuard {
    let mut builder =
        SdkTracerProvider::builder().with_resource(Resource::builder().with_service_name(service.to_owned()).build());
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|s| !s.is_empty());
    let mut export_error = None;
    if endpoint.is_some() {
        // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and the other OTEL_* vars) itself.
        match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => export_error = Some(e.to_string()),
        }
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned()));

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(false).boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };
    // The filter applies to the log output only: spans stay enabled for the OpenTelemetry
    // layer whatever RUST_LOG says, so trace context is always propagated.
    // try_init: tests may call this more than once in one process.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel.with_filter(LevelFilter::INFO))
        .try_init();
    if let Some(e) = export_error {
        tracing::warn!(error = %e, "OTLP exporter not started; spans are not exported");
    } else if let Some(endpoint) = endpoint {
        tracing::info!(%endpoint, "exporting spans over OTLP");
    }
    TelemetryGuard { provider }
}

struct HeaderInjector<'a>(&'a mut Vec<(String, String)>);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// The trace-context headers (`traceparent`, and `tracestate` when set) of `span`.
pub fn trace_headers(span: &tracing::Span) -> Vec<(String, String)> {
    let cx = span.context();
    let mut out = Vec::with_capacity(2);
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut out));
    out
}

/// Adds `span`'s trace-context headers to `headers`.
pub fn inject_trace(span: &tracing::Span, headers: OwnedHeaders) -> OwnedHeaders {
    append_headers(headers, &trace_headers(span))
}

/// Appends pre-computed string headers.
pub fn append_headers(mut headers: OwnedHeaders, pairs: &[(String, String)]) -> OwnedHeaders {
    for (key, value) in pairs {
        headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
    }
    headers
}

struct HeaderExtractor<'a, H: Headers>(&'a H);

impl<H: Headers> Extractor for HeaderExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

/// The trace context carried in a Kafka message's headers (empty when there is none).
pub fn extract_trace<H: Headers>(headers: Option<&H>) -> Context {
    match headers {
        Some(h) => TraceContextPropagator::new().extract(&HeaderExtractor(h)),
        None => Context::new(),
    }
}

/// Makes `span` a child of the trace carried in `headers`, if any.
pub fn continue_trace<H: Headers>(span: &tracing::Span, headers: Option<&H>) {
    let cx = extract_trace(headers);
    // Fails only when the span is disabled; then there is nothing to continue.
    let _ = span.set_parent(cx);
}

/// The value of header `key`, as UTF-8.
pub fn header_str<'a, H: Headers>(headers: &'a H, key: &str) -> Option<&'a str> {
    headers.iter().find(|h| h.key == key).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}
