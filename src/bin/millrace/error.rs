//! How the binary fails: one `error:` line, an optional `hint:` line, and an
//! exit code scripts can branch on.
//!
//! Library errors are classified by their own predicates
//! ([`millrace::Error::is_invalid_input`], [`millrace::Error::is_unreachable`]),
//! so a new library error kind lands in the right exit code without a change
//! here.

use std::fmt;

/// Exit code: bad usage or invalid input.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: Redis unreachable or refused us.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: anything else.
pub const EXIT_OTHER: u8 = 1;
/// A request got no reply within its timeout.
pub const EXIT_TIMEOUT: u8 = 4;

/// A failed command: what to tell the user and how to exit.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    pub hint: Option<String>,
    /// Ends the process with `code` and prints nothing (a closed stdout).
    pub silent: bool,
}

impl CliError {
    fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            hint: None,
            silent: false,
        }
    }

    /// Bad usage or invalid input (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(EXIT_USAGE, message)
    }

    /// Anything else (exit 1).
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(EXIT_OTHER, message)
    }

    /// The reader of stdout went away (`| head`): stop quietly, exit 0.
    pub fn stdout_closed() -> Self {
        CliError {
            silent: true,
            ..Self::new(0, "")
        }
    }

    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Puts `context: ` in front of the message.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl From<millrace::Error> for CliError {
    fn from(e: millrace::Error) -> Self {
        let code = if e.is_unreachable() {
            EXIT_UNREACHABLE
        } else if e.is_invalid_input() {
            EXIT_USAGE
        } else if matches!(e, millrace::Error::RequestTimeout { .. }) {
            EXIT_TIMEOUT
        } else if matches!(e, millrace::Error::GroupHasMembers { .. }) {
            // A refused request (`group reset` without --force), like a
            // conflicting `topic create`: exit 2.
            EXIT_USAGE
        } else {
            EXIT_OTHER
        };
        let err = CliError::new(code, e.to_string());
        match &e {
            millrace::Error::TopicNotFound(name) => err.hint(format!(
                "create it with: millrace topic create {name} --partitions N"
            )),
            millrace::Error::TopicConflict { name, .. } => err.hint(format!(
                "`millrace topic describe {name}` shows its settings"
            )),
            millrace::Error::GroupNotFound { topic, .. } => {
                err.hint(format!("`millrace group list {topic}` shows its groups"))
            }
            millrace::Error::NoResponders { topic, group, .. } => err.hint(format!(
                "start a worker of group {group} on {topic}; `millrace group list {topic}` shows its groups"
            )),
            millrace::Error::RequestTimeout {
                topic,
                message_id: Some(id),
                ..
            } => err.hint(format!(
                "the request stays published; `millrace message show {topic} {id}` shows where it stands"
            )),
            millrace::Error::GroupHasMembers { topic, group, .. } => err.hint(format!(
                "`millrace group describe {topic} {group}` shows them; \
                 --force resets anyway (they carry on from the new position)"
            )),
            _ if code == EXIT_UNREACHABLE => match unreachable_hint(&e) {
                Some(h) => err.hint(h),
                None => err,
            },
            _ => err,
        }
    }
}

fn unreachable_hint(e: &millrace::Error) -> Option<&'static str> {
    match e {
        millrace::Error::UnsupportedServer { .. } => None,
        millrace::Error::AuthFailed { .. } => Some("check the user and password in the Redis URL"),
        millrace::Error::PermissionDenied { .. } => Some(
            "the Redis user lacks a permission millrace needs: see the ACL rule in docs/security.md",
        ),
        millrace::Error::TlsHandshake { reason, .. } => Some(tls_hint(reason)),
        millrace::Error::Redis(r)
            if r.kind() == redis::ErrorKind::AuthenticationFailed
                || matches!(r.code(), Some("NOAUTH" | "WRONGPASS")) =>
        {
            Some("check the user and password in the Redis URL")
        }
        millrace::Error::Redis(r) if r.code() == Some("NOPERM") => Some(
            "the Redis user lacks a permission millrace needs: see the ACL rule in docs/security.md",
        ),
        _ => Some("is redis-server running? set --redis or MILLRACE_REDIS_URL"),
    }
}

/// What to do about a failed TLS handshake, from rustls's reason.
fn tls_hint(reason: &str) -> &'static str {
    if reason.contains("CertificateRequired") {
        "the server requires a client certificate: set --tls-cert and --tls-key"
    } else if reason.contains("invalid peer certificate") {
        "the server's certificate is not trusted: give the CA that signed it with --tls-ca"
    } else if reason.contains("alert") {
        "the server refused the client certificate: is it signed by a CA the server trusts?"
    } else {
        "check --tls-ca, --tls-cert and --tls-key against the server's TLS settings"
    }
}

/// Replaces the password of `url` wherever it appears in `text`.
///
/// Library errors never include the URL, but a server or driver message
/// might echo what it was given; this keeps the promise that passwords are
/// never printed whatever the message.
pub fn scrub_password(text: &str, url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return text.to_string();
    };
    let Some(raw) = parsed.password().filter(|p| !p.is_empty()) else {
        return text.to_string();
    };
    let mut out = text.replace(raw, "***");
    if let Ok(decoded) = urlencoding_decode(raw)
        && !decoded.is_empty()
    {
        out = out.replace(&decoded, "***");
    }
    out
}

/// Percent-decodes a URL component (the password as typed, e.g. `p%40ss`).
fn urlencoding_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_get_the_documented_exit_codes() {
        let bad_name = millrace::TopicSpec::new("Bad Name", 1).unwrap_err();
        assert_eq!(CliError::from(bad_name).code, EXIT_USAGE);
        let bad_duration = millrace::duration::parse_duration("5 parsecs").unwrap_err();
        assert_eq!(CliError::from(bad_duration).code, EXIT_USAGE);
        let refused = millrace::Error::Redis(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let e = CliError::from(refused);
        assert_eq!(e.code, EXIT_UNREACHABLE);
        assert!(e.hint.unwrap().contains("redis-server running"));
        let missing = CliError::from(millrace::Error::TopicNotFound("a.b".into()));
        assert_eq!(missing.code, EXIT_OTHER);
        let no_group = CliError::from(millrace::Error::GroupNotFound {
            topic: "a.b".into(),
            group: "g".into(),
        });
        assert_eq!(no_group.code, EXIT_OTHER);
        assert_eq!(no_group.message, "group g does not exist on topic a.b");
        assert_eq!(
            no_group.hint.as_deref(),
            Some("`millrace group list a.b` shows its groups")
        );
        let bad_group = millrace::keys::validate_name("group", "Audit").unwrap_err();
        assert_eq!(CliError::from(bad_group).code, EXIT_USAGE);
        let busy = CliError::from(millrace::Error::GroupHasMembers {
            topic: "a.b".into(),
            group: "g".into(),
            members: vec!["m1".into(), "m2".into()],
        });
        assert_eq!(busy.code, EXIT_USAGE);
        assert_eq!(
            busy.message,
            "group g on a.b has 2 live member(s) (m1, m2): stop them first or force the reset"
        );
    }

    #[test]
    fn passwords_are_scrubbed_raw_and_decoded() {
        let url = "redis://app:p%40ss@127.0.0.1:6379";
        assert_eq!(
            scrub_password("auth p%40ss failed for p@ss", url),
            "auth *** failed for ***"
        );
        assert_eq!(scrub_password("no secret", "redis://h:1"), "no secret");
    }
}
