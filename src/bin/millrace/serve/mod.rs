//! `millrace serve`: the HTTP API under `/api/v1` and the page that uses it.
//!
//! Safety first: it listens on loopback unless told otherwise, and any
//! other address needs a token (`--token-file`); with a token, every
//! mutating request needs `Authorization: Bearer <token>` (and on a
//! non-loopback address every request does); `--read-only` refuses every
//! mutating request. Listing is bounded: no request reads more than a page
//! of a stream.

mod api;
pub mod bench;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use millrace::Client;

use crate::cli::{Global, ServeArgs};
use crate::error::CliError;

/// What every request handler shares.
#[derive(Clone)]
pub struct Shared {
    pub client: Client,
    pub read_only: bool,
    pub token: Option<Arc<str>>,
    loopback: bool,
}

/// Refuses to listen beyond loopback without a token.
pub fn check_bind(listen: &SocketAddr, token: Option<&str>) -> Result<(), CliError> {
    if !listen.ip().is_loopback() && token.is_none() {
        return Err(CliError::usage(format!(
            "refusing to serve on {listen} without a token: anyone who can reach it could publish, replay and purge"
        ))
        .hint("give --token-file FILE, or listen on 127.0.0.1"));
    }
    Ok(())
}

/// The token in `path`: its first line, trimmed; it must not be empty.
pub fn read_token(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(format!("cannot read --token-file {}: {e}", path.display()))
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 {
        return Err(CliError::usage(format!(
            "the token in {} is too short: use at least 16 characters",
            path.display()
        )));
    }
    Ok(token)
}

pub async fn run(global: &Global, args: ServeArgs) -> Result<(), CliError> {
    let listen: SocketAddr = args.listen.parse().map_err(|_| {
        CliError::usage(format!("--listen: expected IP:PORT, got {:?}", args.listen))
    })?;
    let token = args.token_file.as_deref().map(read_token).transpose()?;
    check_bind(&listen, token.as_deref())?;
    let client = crate::connect(global).await?;
    let shared = Shared {
        client,
        read_only: args.read_only,
        token: token.map(Arc::from),
        loopback: listen.ip().is_loopback(),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::other(format!("cannot listen on {listen}: {e}")))?;
    let local = listener.local_addr().unwrap_or(listen);
    crate::output::note(&format!(
        "serving http://{local}/ (API under /api/v1{})",
        if args.read_only { ", read-only" } else { "" }
    ));
    let stop = crate::schedule_cmd::shutdown_signal()?;
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| CliError::other(format!("serving on {local}: {e}")))
}

/// The whole application: the page, the API, and the guard in front.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", axum::routing::get(page))
        .route("/app.js", axum::routing::get(script))
        .nest("/api/v1", api::routes())
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// The page: one embedded file, no external assets.
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
                ),
            ),
        ],
        include_str!("page.html"),
    )
        .into_response()
}

/// The page's script (served from here: the page runs no inline script).
async fn script() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        include_str!("app.js"),
    )
        .into_response()
}

/// Read-only and token checks, before any handler runs.
async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if mutating && s.read_only {
        return api::error(
            StatusCode::FORBIDDEN,
            "read_only",
            "this server is read-only",
        );
    }
    if let Some(token) = &s.token
        && (mutating || !s.loopback)
        && !bearer_matches(&req, token)
    {
        let mut r = api::error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this request needs the server's token: Authorization: Bearer <token>",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(req).await
}

/// Whether the request carries `Authorization: Bearer <token>` (compared
/// in constant time).
fn bearer_matches(req: &Request, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_goes_without_a_token() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_bind(&lo, None).is_ok());
        assert!(check_bind(&any, None).is_err());
        assert!(check_bind(&any, Some("0123456789abcdef")).is_ok());
        assert!(check_bind(&"[::1]:1".parse().unwrap(), None).is_ok());
    }
}
