//! Connection settings: where Redis is, the key prefix, and timeouts.
//!
//! A [`Config`] is plain data, built before anything connects and handed to
//! [`Client::connect`](crate::Client::connect). Its `Debug` output and every
//! URL it shows go through [`redact_url`], so a password never reaches a log;
//! TLS certificates and keys are shown by file name only.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::keys::validate_prefix;
use crate::store::sentinel;
use crate::store::tls::{Pem, TlsSettings};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "mr";

/// The default limit on one message (payload, key and headers together).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// How to reach Redis and how to behave there.
#[derive(Clone)]
pub struct Config {
    pub(crate) urls: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) block_timeout: Duration,
    pub(crate) blocking_pool_size: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) tls: TlsSettings,
}

impl Config {
    /// A config for one Redis URL: `redis://[user:password@]host[:port][/db]`
    /// or `rediss://` for TLS. A cluster is detected on connect, so the URL
    /// of any one cluster node works; [`Config::cluster`] lists more seeds.
    ///
    /// Behind Redis Sentinel:
    /// `redis+sentinel://[user:password@]host1:26379,host2:26379/master-name[/db]`
    /// (`rediss+sentinel://` for TLS to the sentinels and the primary; the
    /// credentials are the primary's, the sentinels are asked without
    /// them). Every connection goes to the primary the sentinels name and
    /// follows a promotion by itself.
    pub fn new(url: impl Into<String>) -> Result<Self> {
        Self::cluster([url.into()])
    }

    /// A config with several seed URLs (Redis Cluster nodes).
    pub fn cluster<I, S>(urls: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        if urls.is_empty() {
            return Err(Error::Config("no Redis URL given".into()));
        }
        for u in &urls {
            check_url(u)?;
        }
        if urls.len() > 1
            && let Some(u) = urls.iter().find(|u| sentinel::is_sentinel_url(u))
        {
            return Err(Error::Config(format!(
                "a Sentinel URL names all the sentinels itself and goes alone; got {} with other URLs",
                redact_url(u)
            )));
        }
        Ok(Config {
            urls,
            prefix: DEFAULT_PREFIX.to_string(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            block_timeout: Duration::from_secs(2),
            blocking_pool_size: 16,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tls: TlsSettings::default(),
        })
    }

    /// Sets the key prefix (default `mr`): letters, digits, `_`, `-` and `.`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        validate_prefix(&prefix)?;
        self.prefix = prefix;
        Ok(self)
    }

    /// How long to wait for a TCP/TLS connection (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long to wait for the reply to a non-blocking command or pipeline
    /// (default 10 s; redis-rs's own default of 500 ms is too short for large
    /// pipelines on a busy server).
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long a blocking read waits on the server (`BLOCK`, default 2 s).
    /// Blocking connections time out at this plus the response timeout.
    #[must_use]
    pub fn block_timeout(mut self, timeout: Duration) -> Self {
        self.block_timeout = timeout;
        self
    }

    /// Maximum number of dedicated connections for blocking reads (default 16).
    #[must_use]
    pub fn blocking_pool_size(mut self, size: usize) -> Self {
        self.blocking_pool_size = size.max(1);
        self
    }

    /// Largest message accepted by publish, in bytes (default 1 MiB).
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Trusts the CA certificate(s) in a PEM file for `rediss://`
    /// connections, instead of the public (webpki) roots. The file is read
    /// and checked now: an unreadable file is [`Error::TlsFile`], one without
    /// a usable certificate [`Error::TlsPem`], both naming the file.
    pub fn tls_ca_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let pem = Pem::read("CA certificate", path.as_ref())?;
        self.with_ca(pem)
    }

    /// Trusts the CA certificate(s) in PEM bytes, as [`Config::tls_ca_file`].
    pub fn tls_ca_pem(self, pem: impl Into<Vec<u8>>) -> Result<Self> {
        self.with_ca(Pem::bytes(pem.into()))
    }

    /// Presents a client certificate (PEM, optionally followed by its chain)
    /// and its private key (PEM: PKCS#8, PKCS#1 or SEC1) for mutual TLS.
    /// Both files are read and checked now, including that the key belongs
    /// to the certificate.
    pub fn tls_client_cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self> {
        let cert = Pem::read("client certificate", cert.as_ref())?;
        let key = Pem::read("client key", key.as_ref())?;
        self.with_client(cert, key)
    }

    /// Presents a client certificate and key given as PEM bytes, as
    /// [`Config::tls_client_cert_files`].
    pub fn tls_client_cert_pem(
        self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Self> {
        self.with_client(Pem::bytes(cert.into()), Pem::bytes(key.into()))
    }

    fn with_ca(mut self, pem: Pem) -> Result<Self> {
        self.require_tls_urls()?;
        self.tls.set_ca(pem)?;
        Ok(self)
    }

    fn with_client(mut self, cert: Pem, key: Pem) -> Result<Self> {
        self.require_tls_urls()?;
        self.tls.set_client(cert, key)?;
        Ok(self)
    }

    /// Whether any URL is `rediss://` (in any letter case).
    pub(crate) fn uses_tls(&self) -> bool {
        self.urls.iter().any(|u| is_tls_url(u))
    }

    /// Certificates only apply to `rediss://`: refuse them for a plain URL
    /// rather than connecting without the TLS the caller asked for.
    fn require_tls_urls(&self) -> Result<()> {
        match self.urls.iter().find(|u| !is_tls_url(u)) {
            Some(u) => Err(Error::Config(format!(
                "TLS certificates need a rediss:// URL; {} is not one",
                redact_url(u)
            ))),
            None => Ok(()),
        }
    }

    /// Whether a CA or a client certificate was set.
    pub fn has_tls_certificates(&self) -> bool {
        !self.tls.is_empty()
    }

    /// The largest message accepted by publish, in bytes.
    pub fn message_limit(&self) -> usize {
        self.max_message_bytes
    }

    /// The key prefix in use.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// The seed URLs with passwords replaced by `***`.
    pub fn redacted_urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| redact_url(u)).collect()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("urls", &self.redacted_urls())
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("block_timeout", &self.block_timeout)
            .field("blocking_pool_size", &self.blocking_pool_size)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("tls", &self.tls)
            .finish()
    }
}

fn is_tls_url(u: &str) -> bool {
    match sentinel::SentinelUrl::parse(u) {
        Some(s) => s.is_ok_and(|s| s.tls),
        None => url::Url::parse(u).is_ok_and(|p| p.scheme() == "rediss"),
    }
}

fn check_url(u: &str) -> Result<()> {
    if let Some(parsed) = sentinel::SentinelUrl::parse(u) {
        return parsed
            .map(|_| ())
            .map_err(|e| Error::Config(format!("bad Redis URL {}: {e}", redact_url(u))));
    }
    let parsed = url::Url::parse(u)
        .map_err(|e| Error::Config(format!("bad Redis URL {}: {e}", redact_url(u))))?;
    match parsed.scheme() {
        "redis" | "rediss" => {}
        other => {
            return Err(Error::Config(format!(
                "bad Redis URL {}: scheme {other:?} is not redis://, rediss:// or redis+sentinel://",
                redact_url(u)
            )));
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::Config(format!(
            "bad Redis URL {}: no host",
            redact_url(u)
        )));
    }
    Ok(())
}

/// Replaces the password of a Redis URL with `***`; a string that does not
/// parse as a URL is hidden whole past its scheme, since it may still hold one.
pub fn redact_url(u: &str) -> String {
    if let Some(r) = sentinel::redact_sentinel_url(u) {
        return r;
    }
    match url::Url::parse(u) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // set_password only fails for URLs that cannot have one.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => match u.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://<unparseable>"),
            None => "<unparseable>".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let c = Config::new("redis://app:s3cret@127.0.0.1:6380/2").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@127.0.0.1:6380"), "{shown}");
        assert_eq!(
            redact_url("rediss://:pw@h:1"),
            "rediss://:***@h:1".to_string()
        );
        assert!(!redact_url("redis://u:pw@[bad").contains("pw"));
    }

    #[test]
    fn tls_is_seen_in_any_letter_case() {
        assert!(Config::new("REDISS://h:1").unwrap().uses_tls());
        assert!(!Config::new("redis://h:1").unwrap().uses_tls());
        let e = Config::new("Redis://h:1")
            .unwrap()
            .tls_ca_pem(b"x".to_vec())
            .unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }

    #[test]
    fn sentinel_urls_are_taken_alone_and_their_passwords_hidden() {
        let c = Config::new("rediss+sentinel://app:s3cret@h1:26379,h2/orders/1").unwrap();
        assert!(c.uses_tls());
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@h1:26379,h2/orders/1"), "{shown}");
        assert!(!Config::new("redis+sentinel://h1/m").unwrap().uses_tls());
        let e = Config::cluster(["redis+sentinel://h1/m", "redis://h2"]).unwrap_err();
        assert!(e.to_string().contains("goes alone"), "{e}");
        let e = Config::new("redis+sentinel://:pw@h1:x/m").unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
        assert!(!e.to_string().contains("pw@"), "{e}");
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for u in ["http://x", "not a url", "redis://"] {
            let e = Config::new(u).unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{u}: {e}");
        }
        assert!(matches!(
            Config::cluster(Vec::<String>::new()),
            Err(Error::Config(_))
        ));
    }
}
