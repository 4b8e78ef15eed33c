//! `http` handlers: POST the payload as JSON, metadata as `X-Millrace-*`
//! headers, over pooled keep-alive connections. 2xx acks (a JSON body is
//! the result, kept and sent to a requester); 4xx is permanent
//! except 408 and 429; 5xx, timeouts and connection errors are retryable
//! (a `Retry-After` in seconds is honoured). `https://` endpoints are
//! verified with the system's roots, or with the handler's `ca` only.

use std::time::Duration;

use millrace::{Context, HandlerError, Message};
use rustls_pki_types::CertificateDer;

use super::exec::payload_json;

/// What a response status means for the message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ack,
    Permanent,
    Retry,
}

/// The meaning of a status code.
pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Ack,
        408 | 429 => Verdict::Retry,
        400..=499 => Verdict::Permanent,
        _ => Verdict::Retry,
    }
}

/// Whom a client trusts to be the `https://` server.
pub enum Trust<'a> {
    /// Nobody: for `http://` URLs, so that they never need the system's
    /// roots (a container may have none).
    Nobody,
    /// The system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` when set).
    System,
    /// These CA certificates only (a handler's `ca`).
    Only(&'a [CertificateDer<'static>]),
}

/// A client for handlers: pooled keep-alive connections, TLS by rustls
/// with the ring provider millrace already uses.
pub fn client(trust: Trust<'_>) -> Result<reqwest::Client, String> {
    // reqwest's rustls takes the process's provider: millrace's own, ring.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let system = matches!(trust, Trust::System);
    let builder = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(60));
    let builder = match trust {
        Trust::Nobody => builder.tls_certs_only([]),
        Trust::System => builder,
        Trust::Only(certs) => builder.tls_certs_only(
            certs
                .iter()
                .map(|c| reqwest::Certificate::from_der(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error_chain(&e))?,
        ),
    };
    builder.build().map_err(|e| match system {
        true => format!(
            "{}: an https:// handler without ca trusts the system's CA certificates; install them or set ca",
            error_chain(&e)
        ),
        false => error_chain(&e),
    })
}

/// An error and its causes, `: `-separated: reqwest's own text leaves out
/// why a request failed (a refused connection, a certificate not trusted).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// Header name for a message header: `X-Millrace-Header-<name>`.
fn header_name(name: &str) -> Option<reqwest::header::HeaderName> {
    reqwest::header::HeaderName::from_bytes(format!("x-millrace-header-{name}").as_bytes()).ok()
}

/// Posts one message.
pub async fn run(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    msg: Message,
    ctx: Context,
) -> Result<Option<serde_json::Value>, HandlerError> {
    let body = payload_json(&msg)?;
    let mut req = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-millrace-topic", &*ctx.topic)
        .header("x-millrace-group", &*ctx.group)
        .header("x-millrace-partition", ctx.partition.to_string())
        .header("x-millrace-id", ctx.message_id.to_string())
        .header("x-millrace-stream-id", ctx.id.to_string())
        .header("x-millrace-attempt", ctx.attempt.to_string())
        .header("x-millrace-epoch", ctx.epoch.to_string());
    if let Some(k) = &ctx.key {
        req = req.header("x-millrace-key", k);
    }
    for (name, value) in &ctx.headers {
        if let (Some(n), Ok(v)) = (
            header_name(name),
            reqwest::header::HeaderValue::from_str(value),
        ) {
            req = req.header(n, v);
        }
    }
    // The attempt's process span, for the endpoint's spans to join (with
    // [otel]); else the trace context the message came with.
    if let Some(tp) = millrace::current_traceparent()
        .or_else(|| ctx.headers.get(millrace::HEADER_TRACEPARENT).cloned())
    {
        req = req.header(millrace::HEADER_TRACEPARENT, tp);
    }
    // A cancelled message (or a message's own timeout) drops the request.
    let resp = tokio::select! {
        r = req.body(body).send() => {
            r.map_err(|e| HandlerError::retry(format!("POST {url}: {}", error_chain(&e))))?
        }
        _ = ctx.cancel.cancelled() => {
            return Err(HandlerError::retry(format!("POST {url} was abandoned (cancelled)")));
        }
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if verdict(status) == Verdict::Ack {
        // The JSON body is the result; an empty or non-JSON body is none.
        let body = resp
            .bytes()
            .await
            .map_err(|e| HandlerError::retry(format!("POST {url}: reading the answer: {e}")))?;
        return Ok(serde_json::from_slice(&body).ok());
    }
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.chars().take(500).collect();
    let what = format!("POST {url} answered {status}: {}", text.trim());
    match (verdict(status), retry_after) {
        (Verdict::Permanent, _) => Err(HandlerError::permanent(what)),
        (_, Some(d)) => Err(HandlerError::retry_after(what, d)),
        _ => Err(HandlerError::retry(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_mean_what_cli_md_says() {
        assert_eq!(verdict(200), Verdict::Ack);
        assert_eq!(verdict(204), Verdict::Ack);
        assert_eq!(verdict(422), Verdict::Permanent);
        assert_eq!(verdict(404), Verdict::Permanent);
        assert_eq!(verdict(408), Verdict::Retry);
        assert_eq!(verdict(429), Verdict::Retry);
        assert_eq!(verdict(503), Verdict::Retry);
        assert_eq!(verdict(500), Verdict::Retry);
    }
}
