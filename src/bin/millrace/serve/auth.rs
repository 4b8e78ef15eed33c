//! Who may do what on `millrace serve`: the token (a bearer header for API
//! clients, a login form that sets an HttpOnly session cookie for the
//! page), the cross-site checks every change passes, and the Host check
//! that keeps a loopback server from being reached through a rebound DNS
//! name.
//!
//! A change made with the session cookie also needs the session's CSRF
//! token in `X-Millrace-CSRF` (the page reads it from `GET /api/v1/server`;
//! another site can neither read it nor send a custom header without a
//! CORS preflight this server never grants). Every change made by a
//! browser (one that sends `Origin` or `Sec-Fetch-Site`) must come from
//! this server's own origin.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

/// The session cookie's name.
pub const COOKIE: &str = "millrace_session";
/// The header carrying a session's CSRF token.
pub const CSRF_HEADER: &str = "x-millrace-csrf";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most live sessions kept (the oldest go first).
const MAX_SESSIONS: usize = 1000;

/// The logged-in sessions of this process (a restart logs everyone out).
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

#[derive(Clone)]
struct Session {
    csrf: String,
    expires: Instant,
}

impl Sessions {
    /// A new session: its cookie value and its CSRF token.
    pub fn open(&self) -> std::io::Result<(String, String)> {
        let (id, csrf) = (random_hex()?, random_hex()?);
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, s| s.expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            live.remove(&oldest);
        }
        live.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        Ok((id, csrf))
    }

    /// The CSRF token of the live session `id`.
    pub fn csrf(&self, id: &str) -> Option<String> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    /// Ends the session `id`.
    pub fn close(&self, id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(id);
    }
}

/// 32 random bytes from the system, as hex.
fn random_hex() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal, compared in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of the session cookie, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that opens session `id`.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Why a browser's change is refused as cross-site, if it is: an
/// `Origin` other than this server's own (`http://` + its `Host`), or
/// `Sec-Fetch-Site` other than `same-origin` / `none`.
pub fn cross_site(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = host.map(|h| format!("http://{h}"));
        if own.as_deref() != Some(origin) {
            return Some(format!(
                "a change from another origin ({origin:?}) is refused"
            ));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return Some(format!("a change from a {site} page is refused"));
        }
    }
    None
}

/// Whether `Host` names a loopback address (`127.0.0.1`, `[::1]`,
/// `localhost`, any port): what a loopback server answers to, so a page
/// whose DNS name was rebound to 127.0.0.1 cannot read it.
pub fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/1.0 without Host: not a browser on another name.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_the_own_origin_may_change() {
        assert_eq!(cross_site(&headers(&[("host", "127.0.0.1:8080")])), None);
        assert_eq!(
            cross_site(&headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin"),
            ])),
            None
        );
        for bad in [
            headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:9090"),
            ]),
            headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]),
            headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-site")]),
        ] {
            assert!(cross_site(&bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_names_only() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:1",
            "[::1]:80",
            "127.0.0.1",
            "localhost",
        ] {
            assert!(loopback_host(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in ["evil.example:8080", "10.0.0.1:80", "localhost.evil.example"] {
            assert!(!loopback_host(&headers(&[("host", bad)])), "{bad}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; millrace_session=abc; b=2")]);
        assert_eq!(session_cookie(&h), Some("abc"));
        assert_eq!(session_cookie(&headers(&[("cookie", "a=1")])), None);
    }

    #[test]
    fn sessions_open_and_close() {
        let s = Sessions::default();
        let (id, csrf) = s.open().unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        assert_eq!(s.csrf(&id), Some(csrf));
        s.close(&id);
        assert_eq!(s.csrf(&id), None);
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
