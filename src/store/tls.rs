//! TLS material for `rediss://` connections: a CA to trust instead of the
//! public roots, and a client certificate and key for mutual TLS.
//!
//! [`Config`](crate::Config) reads and checks the PEM when it is given, so a
//! missing file, a file that holds no certificate or a key that does not
//! belong to its certificate is reported before anything connects, naming the
//! file. [`crate::store::conn`] hands the bytes to redis-rs for every connection it
//! makes (the multiplexed one, the blocking pool, the cluster client). The
//! bytes are never shown: `Debug` prints where they came from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// PEM bytes and the file they were read from (`None` when given in memory).
#[derive(Clone)]
pub(crate) struct Pem {
    path: Option<PathBuf>,
    bytes: Vec<u8>,
}

impl Pem {
    /// Reads a PEM file; `what` names it in the error.
    pub(crate) fn read(what: &'static str, path: &Path) -> Result<Pem> {
        let bytes = std::fs::read(path).map_err(|source| Error::TlsFile {
            what,
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Pem {
            path: Some(path.to_path_buf()),
            bytes,
        })
    }

    /// PEM given in memory.
    pub(crate) fn bytes(bytes: Vec<u8>) -> Pem {
        Pem { path: None, bytes }
    }

    fn invalid(&self, what: &'static str, reason: impl Into<String>) -> Error {
        Error::TlsPem {
            what,
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Every certificate in the PEM: at least one, each well-formed.
    fn certificates(&self, what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(what, format!("not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(self.invalid(what, "no CERTIFICATE block found"));
        }
        Ok(certs)
    }

    fn private_key(&self, what: &'static str) -> Result<PrivateKeyDer<'static>> {
        // The key's own bytes never reach the message.
        PrivateKeyDer::from_pem_slice(&self.bytes).map_err(|e| {
            self.invalid(
                what,
                match e {
                    rustls_pki_types::pem::Error::NoItemsFound => {
                        "no private key block found (PKCS#8, PKCS#1 or SEC1 PEM)".to_string()
                    }
                    other => format!("not a valid PEM private key: {other}"),
                },
            )
        })
    }

    fn origin(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "<PEM in memory>".to_string(),
        }
    }
}

/// What [`Config`](crate::Config) holds for TLS. Empty unless set.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    ca: Option<Pem>,
    client: Option<(Pem, Pem)>,
}

/// Names used in errors.
const CA: &str = "CA certificate";
const CLIENT_CERT: &str = "client certificate";
const CLIENT_KEY: &str = "client key";

impl TlsSettings {
    /// Whether neither a CA nor a client certificate was given.
    pub(crate) fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    /// Sets the CA after checking that it holds usable trust anchors.
    pub(crate) fn set_ca(&mut self, pem: Pem) -> Result<()> {
        let mut store = RootCertStore::empty();
        for cert in pem.certificates(CA)? {
            store
                .add(cert)
                .map_err(|e| pem.invalid(CA, format!("not a usable CA certificate: {e}")))?;
        }
        self.ca = Some(pem);
        Ok(())
    }

    /// Sets the client certificate and key after checking that both parse
    /// and that the key belongs to the certificate.
    pub(crate) fn set_client(&mut self, cert: Pem, key: Pem) -> Result<()> {
        let chain = cert.certificates(CLIENT_CERT)?;
        let der = key.private_key(CLIENT_KEY)?;
        CertifiedKey::from_der(chain, der, &provider()).map_err(|e| {
            let reason = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "it is not the key of the client certificate {}",
                    cert.origin()
                ),
                other => format!(
                    "cannot be used with the client certificate {}: {other}",
                    cert.origin()
                ),
            };
            key.invalid(CLIENT_KEY, reason)
        })?;
        self.client = Some((cert, key));
        Ok(())
    }

    /// The certificates for redis-rs, or `None` to use the public roots
    /// without a client certificate.
    pub(crate) fn certificates(&self) -> Option<redis::TlsCertificates> {
        if self.is_empty() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.bytes.clone(),
                    client_key: key.bytes.clone(),
                }),
            root_cert: self.ca.as_ref().map(|ca| ca.bytes.clone()),
        })
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca", &self.ca.as_ref().map(Pem::origin))
            .field(
                "client_cert",
                &self.client.as_ref().map(|(cert, _)| cert.origin()),
            )
            .field(
                "client_key",
                &self.client.as_ref().map(|(_, key)| key.origin()),
            )
            .finish()
    }
}

/// The crypto provider millrace's rustls is built with (ring).
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Makes ring the process's rustls provider unless one is installed already.
///
/// redis-rs builds its TLS configs with the process default, which rustls
/// only picks by itself when exactly one provider feature is compiled in; an
/// application that also links aws-lc-rs would otherwise panic on its first
/// `rediss://` connection.
pub(crate) fn install_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = CryptoProvider::install_default(provider());
    }
}

/// The TLS failure behind a connection error, if it was one: a certificate
/// the server or the client rejected, a handshake alert.
pub(crate) fn handshake_failure(e: &redis::RedisError) -> Option<String> {
    // redis-rs keeps the io::Error in an `Arc<dyn Error>`, which is what
    // `source()` hands out; rustls's error is the io::Error's payload.
    let source = std::error::Error::source(e)?;
    let io = match source.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
        Some(shared) => shared.downcast_ref::<std::io::Error>()?,
        None => source.downcast_ref::<std::io::Error>()?,
    };
    let tls = io.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(tls.to_string())
}
