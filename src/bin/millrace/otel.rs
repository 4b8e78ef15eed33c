//! The worker's traces for `[otel]`: the library's spans (see
//! `millrace::TraceRelation`) exported over OTLP/gRPC or OTLP/HTTP
//! (protobuf) by a batch span processor on its own thread, through
//! `tracing-opentelemetry`.
//!
//! The gRPC exporter's channel runs on the tokio runtime it is built in:
//! [`layer`] must be called inside the program's runtime, and
//! [`Traces::shutdown`] called while that runtime still runs.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::tonic_types::transport::ClientTlsConfig;
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

use crate::worker::config::{OtelConfig, OtlpProtocol};

/// The exporter's provider: flushed and stopped by [`Traces::shutdown`].
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Sends what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("millrace: exporting the last spans failed: {e}");
        }
    }
}

/// The collector URL spans are posted to: the endpoint as given when it
/// has a path, else with OTLP's `/v1/traces`.
pub fn traces_url(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(u) if u.path() != "/" && !u.path().is_empty() => endpoint.to_string(),
        _ => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
    }
}

/// The layer that exports millrace's spans (target `millrace`, level
/// `INFO` and above) to `cfg.endpoint`, and its provider. Called inside a
/// tokio runtime (the gRPC channel's task is spawned on it).
pub fn layer<S>(cfg: &OtelConfig) -> Result<(impl Layer<S>, Traces), String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // Both exporters use rustls (ring) for https:// collectors.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = match cfg.protocol {
        OtlpProtocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(&cfg.endpoint))
            .build(),
        OtlpProtocol::Grpc => {
            let grpc = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(cfg.endpoint.clone());
            let grpc = if cfg.endpoint.starts_with("https://") {
                grpc.with_tls_config(ClientTlsConfig::new().with_webpki_roots())
            } else {
                grpc
            };
            grpc.build()
        }
    }
    .map_err(|e| format!("otel.endpoint: cannot build the OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("millrace"))
        .with_filter(Targets::new().with_target("millrace", tracing::Level::INFO));
    Ok((layer, Traces { provider }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_to_a_bare_endpoint() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c.example/otlp/v1/traces"),
            "https://c.example/otlp/v1/traces"
        );
    }
}
