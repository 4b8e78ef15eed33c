//! Certificates for TLS tests, made on the spot with rcgen: a CA, a server
//! certificate for `127.0.0.1` and `localhost` signed by it, a client
//! certificate signed by it, and a second, unrelated CA (trusted by nobody)
//! with a client certificate of its own. Written as PEM files into a temp
//! dir that lives as long as the [`Pki`].

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// A certificate and its key, as PEM files.
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The test PKI: every file is PEM.
pub struct Pki {
    dir: TempDir,
    /// The CA the server's and the client's certificates are signed by.
    pub ca: PathBuf,
    /// The server's certificate (SANs `127.0.0.1`, `localhost`) and key.
    pub server: Identity,
    /// A client certificate signed by [`Pki::ca`].
    pub client: Identity,
    /// A CA nobody trusts.
    pub stranger_ca: PathBuf,
    /// A client certificate signed by [`Pki::stranger_ca`].
    pub stranger_client: Identity,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no SANs");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().expect("generate a CA key");
    let cert = params.self_signed(&key).expect("self-sign the CA");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("valid SANs");
    params.distinguished_name.push(DnType::CommonName, name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("generate a key");
    let cert = params.signed_by(&key, issuer).expect("sign a certificate");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// Generates everything into a fresh temp dir.
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("millrace-pki-")
            .tempdir()
            .expect("temp dir for certificates");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write a PEM file");
            path
        };
        let (ca_pem, issuer) = ca("millrace test CA");
        let (server_cert, server_key) = leaf(
            &issuer,
            "localhost",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &issuer,
            "millrace-client",
            &["millrace-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (stranger_pem, stranger) = ca("stranger CA");
        let (s_cert, s_key) = leaf(
            &stranger,
            "stranger",
            &["stranger"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca: write("ca.pem", &ca_pem),
            server: Identity {
                cert: write("server.pem", &server_cert),
                key: write("server.key", &server_key),
            },
            client: Identity {
                cert: write("client.pem", &client_cert),
                key: write("client.key", &client_key),
            },
            stranger_ca: write("stranger-ca.pem", &stranger_pem),
            stranger_client: Identity {
                cert: write("stranger.pem", &s_cert),
                key: write("stranger.key", &s_key),
            },
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis-server` arguments for a TLS-only server with these files;
    /// `auth_clients` is `--tls-auth-clients yes|no`.
    pub fn server_args(&self, auth_clients: bool) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--tls-cert-file".into(),
            path(&self.server.cert),
            "--tls-key-file".into(),
            path(&self.server.key),
            "--tls-ca-cert-file".into(),
            path(&self.ca),
            "--tls-auth-clients".into(),
            if auth_clients { "yes" } else { "no" }.into(),
        ]
    }
}
