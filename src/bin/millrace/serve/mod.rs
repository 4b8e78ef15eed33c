//! `millrace serve`: the HTTP API under `/api/v1` and the page that uses it.
//!
//! Safety first: it listens on loopback unless told otherwise, and any
//! other address needs a token (`--token-file`); with a token, every
//! mutating request needs it (and on a non-loopback address every request
//! does): `Authorization: Bearer <token>` from API clients, the session
//! cookie set by the login form (plus its CSRF header) from the page.
//! `--read-only` refuses every mutating request. Changes from another
//! site's page are refused, and a loopback server answers only to loopback
//! host names (see `auth.rs`). Listing is bounded: no request reads more
//! than a page or a stated window of a stream.

mod api;
mod auth;
pub mod bench;
mod filter;
mod history;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
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
    sessions: Arc<auth::Sessions>,
    history: Arc<history::History>,
}

impl Shared {
    /// What a server for `client` shares; `loopback` says whether it
    /// listens on a loopback address.
    pub fn new(client: Client, read_only: bool, token: Option<String>, loopback: bool) -> Self {
        Shared {
            client,
            read_only,
            token: token.map(Arc::from),
            loopback,
            sessions: Arc::default(),
            history: Arc::new(history::History::new(DEFAULT_SAMPLE_EVERY)),
        }
    }

    /// Samples for the charts every `every` (default 10 s).
    pub fn sample_every(mut self, every: std::time::Duration) -> Self {
        self.history = Arc::new(history::History::new(every.max(MIN_SAMPLE_EVERY)));
        self
    }

    /// Samples the overview for the charts until the process ends (a
    /// failed sample is skipped: the charts show a gap).
    pub fn spawn_sampler(&self) -> tokio::task::JoinHandle<()> {
        let s = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(s.history.interval());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                match api::overview_list(&s).await {
                    Ok((at_ms, topics)) => s.history.record(at_ms, &topics),
                    Err(e) => tracing::debug!(error = %e, "dashboard sample skipped"),
                }
            }
        })
    }

    /// How the request proves it holds the token, if it does.
    fn signed_in(&self, headers: &HeaderMap) -> Option<SignedIn> {
        let token = self.token.as_deref()?;
        if bearer_matches(headers, token) {
            return Some(SignedIn::Bearer);
        }
        let id = auth::session_cookie(headers)?;
        self.sessions.csrf(id).map(SignedIn::Session)
    }
}

/// How a request proved it holds the token.
enum SignedIn {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The login's session cookie; its CSRF token.
    Session(String),
}

/// How often the charts are sampled unless told.
pub const DEFAULT_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// The shortest sampling interval taken.
const MIN_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

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
    let every = millrace::duration::parse_duration(&args.sample_every)
        .map_err(|e| CliError::from(e).context("--sample-every"))?;
    let client = crate::connect(global).await?;
    let shared =
        Shared::new(client, args.read_only, token, listen.ip().is_loopback()).sample_every(every);
    let listener = bind(listen).await?;
    let local = listener.local_addr().unwrap_or(listen);
    crate::output::note(&format!(
        "serving http://{local}/ (API under /api/v1{})",
        if args.read_only { ", read-only" } else { "" }
    ));
    let stop = crate::schedule_cmd::shutdown_signal()?;
    serve_until(listener, shared, stop)
        .await
        .map_err(|e| CliError::other(format!("serving on {local}: {e}")))
}

/// A listener on `listen`, or an error that says which address.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, CliError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::other(format!("cannot listen on {listen}: {e}")))
}

/// Serves the dashboard and the API on `listener`, sampling for the
/// charts, until `stop` completes (then in-flight requests finish).
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    shared: Shared,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _sampler = AbortOnDrop(shared.spawn_sampler());
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(stop)
        .await
}

/// The dashboard of a worker's `[serve]` table, served by a task of the
/// worker's process (with its own sampler) until that task is aborted. A
/// token file that cannot be read or an address that cannot be bound is
/// the worker's error, returned before the task starts.
pub async fn spawn_in_worker(
    client: &Client,
    cfg: &crate::worker::config::ServeConfig,
) -> Result<tokio::task::JoinHandle<()>, CliError> {
    let token = cfg.token_file.as_deref().map(read_token).transpose()?;
    check_bind(&cfg.listen, token.as_deref())?;
    let shared = Shared::new(
        client.clone(),
        cfg.read_only,
        token,
        cfg.listen.ip().is_loopback(),
    )
    .sample_every(cfg.sample_every);
    let listener = bind(cfg.listen)
        .await
        .map_err(|e| e.context("serve.listen"))?;
    let local = listener.local_addr().unwrap_or(cfg.listen);
    tracing::info!(%local, read_only = cfg.read_only, "serving the dashboard and /api/v1");
    Ok(tokio::spawn(async move {
        if let Err(e) = serve_until(listener, shared, std::future::pending()).await {
            tracing::error!(%local, error = %e, "the dashboard stopped");
        }
    }))
}

/// A task stopped when its handle goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The whole application: the page, the API, and the guard in front.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", axum::routing::get(page))
        .route("/{script}", axum::routing::get(script))
        .route("/login", axum::routing::get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .nest("/api/v1", api::routes())
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// The content security policy of every page: nothing from elsewhere, no
/// inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'";

fn html(body: impl Into<axum::body::Body>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
        ],
        body.into(),
    )
        .into_response()
}

/// The page: one embedded file, no external assets.
async fn page() -> Response {
    html(include_str!("page.html"))
}

/// The page's scripts, embedded (the page runs no inline script).
const SCRIPTS: [(&str, &str); 4] = [
    ("ui.js", include_str!("ui.js")),
    ("topic.js", include_str!("topic.js")),
    ("admin.js", include_str!("admin.js")),
    ("app.js", include_str!("app.js")),
];

/// One of the page's scripts.
async fn script(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match SCRIPTS.iter().find(|(n, _)| *n == name) {
        Some((_, body)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            )],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn login_page() -> Response {
    html(include_str!("login.html"))
}

/// The login form's answer: the token right opens a session (an HttpOnly,
/// SameSite=Strict cookie) and goes back to the page; wrong, the form
/// again with 401.
async fn login(State(s): State<Shared>, body: axum::body::Bytes) -> Response {
    let Some(token) = s.token.as_deref() else {
        return api::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server has no token: there is nothing to sign in to",
        );
    };
    let given = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !auth::same_secret(given.trim(), token) {
        let mut r = html(include_str!("login.html").replace(
            "<!--failed-->",
            "<p class=\"error\" id=\"login-error\">That token is not this server's.</p>",
        ));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    let (id, _) = match s.sessions.open() {
        Ok(x) => x,
        Err(e) => {
            return api::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed",
                &format!("cannot open a session: {e}"),
            );
        }
    };
    see_other("./", Some(auth::set_cookie(&id)))
}

/// Ends the session and goes back to the page.
async fn logout(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(id) = auth::session_cookie(&headers) {
        s.sessions.close(id);
    }
    see_other("./", Some(auth::clear_cookie()))
}

fn see_other(to: &'static str, cookie: Option<String>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// Host, cross-site, read-only and token checks, before any handler runs.
async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if s.loopback && !auth::loopback_host(headers) {
        return api::error(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            "this server listens on loopback and answers only to 127.0.0.1, [::1] or localhost",
        );
    }
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if mutating && let Some(why) = auth::cross_site(headers) {
        return api::error(StatusCode::FORBIDDEN, "cross_site", &why);
    }
    let path = req.uri().path();
    // The login form, and the static script any page needs.
    let open = matches!(path, "/login" | "/logout")
        || SCRIPTS
            .iter()
            .any(|(n, _)| path.strip_prefix('/') == Some(n));
    if mutating && s.read_only && !open {
        return api::error(
            StatusCode::FORBIDDEN,
            "read_only",
            "this server is read-only",
        );
    }
    // Reads on loopback go without the token.
    let needs_token = mutating || !s.loopback;
    if s.token.is_none() || open || !needs_token {
        return next.run(req).await;
    }
    match s.signed_in(headers) {
        Some(SignedIn::Bearer) => next.run(req).await,
        Some(SignedIn::Session(csrf)) => {
            let given = headers
                .get(auth::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if mutating && !auth::same_secret(given, &csrf) {
                return api::error(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "a change made with the session cookie needs the page's X-Millrace-CSRF header",
                );
            }
            next.run(req).await
        }
        None if path == "/" => see_other("login", None),
        None => {
            let mut r = api::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this request needs the server's token: Authorization: Bearer <token>, or sign in at /login",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// Whether the request carries `Authorization: Bearer <token>` (compared
/// in constant time).
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| auth::same_secret(given, token))
}

/// Whether the request is signed in, and the CSRF token its page must send
/// with changes (for a session).
pub fn session_of(s: &Shared, headers: &HeaderMap) -> (bool, Option<String>) {
    match s.signed_in(headers) {
        Some(SignedIn::Bearer) => (true, None),
        Some(SignedIn::Session(csrf)) => (true, Some(csrf)),
        None => (false, None),
    }
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
