//! `http` handlers: POST the payload as JSON, metadata as `X-Millrace-*`
//! headers, over pooled keep-alive connections. 2xx acks; 4xx is permanent
//! except 408 and 429; 5xx, timeouts and connection errors are retryable
//! (a `Retry-After` in seconds is honoured).

use std::time::Duration;

use millrace::{Context, HandlerError, Message};

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
) -> Result<(), HandlerError> {
    let body = payload_json(&msg)?;
    let mut req = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-millrace-topic", &*ctx.topic)
        .header("x-millrace-group", &*ctx.group)
        .header("x-millrace-partition", ctx.partition.to_string())
        .header("x-millrace-id", ctx.id.to_string())
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
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| HandlerError::retry(format!("POST {url}: {e}")))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if verdict(status) == Verdict::Ack {
        return Ok(());
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
