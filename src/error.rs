//! The library's error type.
//!
//! Every fallible public function returns [`Result`]. Variants say what went
//! wrong in terms of millrace (a bad name, a topic conflict, an oversize
//! payload) rather than in terms of Redis, so callers can match on them; Redis
//! failures keep the underlying [`redis::RedisError`] for its predicates.

use std::path::PathBuf;
use std::time::Duration;

/// A `Result` with millrace's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic or group name breaks the naming rules.
    #[error("invalid {what} name {}: {reason}", shown_name(.name))]
    InvalidName {
        /// `"topic"` or `"group"`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Any other argument that is out of range or malformed.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// What was being checked (`"partitions"`, `"key"`, `"duration"`...).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration (URL, prefix, timeouts) is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The topic does not exist.
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    /// The group does not exist on the topic.
    #[error("group {group} does not exist on topic {topic}")]
    GroupNotFound {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// A group reset was refused: the group has live members, which would
    /// carry on from the new position with messages already in hand. Stop
    /// them first, or force the reset. Neither retryable nor
    /// [`is_invalid_input`](Error::is_invalid_input): the same call succeeds
    /// once the members are gone (the CLI exits 2 on it, as a refused input).
    #[error(
        "group {group} on {topic} has {} live member(s) ({}): stop them first or force the reset",
        .members.len(),
        member_list(.members)
    )]
    GroupHasMembers {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// The live members, sorted.
        members: Vec<String>,
    },
    /// A schema document is not a usable JSON Schema (draft 2020-12): every
    /// problem, each as `<JSON pointer>: <what is wrong>`.
    #[error("invalid schema: {}", .errors.join("; "))]
    SchemaInvalid {
        /// Every problem found.
        errors: Vec<String>,
    },
    /// A schema is not compatible with the topic's registered versions
    /// under the subject's mode: every reason, each with the JSON pointer
    /// of its place.
    #[error(
        "schema is not {mode} compatible with topic {topic}'s: {}",
        reason_list(.reasons)
    )]
    SchemaIncompatible {
        /// The topic (subject).
        topic: String,
        /// The subject's compatibility mode.
        mode: crate::compat::CompatMode,
        /// Every reason.
        reasons: Vec<crate::compat::Incompatibility>,
    },
    /// Registrations of a topic's schema kept coming in between this one's
    /// check and its write; nothing was registered. Try again.
    #[error("the schema subject of topic {0} kept changing while registering; try again")]
    SchemaBusy(String),
    /// A payload does not match the topic's schema: every failing place,
    /// each as `<JSON pointer into the payload>: <what is wrong>`.
    #[error(
        "payload does not match schema version {version} of topic {topic}: {}",
        .errors.join("; ")
    )]
    SchemaViolation {
        /// The topic.
        topic: String,
        /// The schema version it was checked against.
        version: u32,
        /// Every failing place.
        errors: Vec<String>,
    },
    /// The topic has no schema version to check against (none registered,
    /// or not the version asked for).
    #[error("topic {topic} has no schema{}", .version.map(|v| format!(" version {v}")).unwrap_or_default())]
    SchemaNotFound {
        /// The topic.
        topic: String,
        /// The version asked for; `None` for the latest.
        version: Option<u32>,
    },
    /// This member no longer holds the partition (its lease moved on to
    /// another member): what it would write for the message is refused.
    #[error(
        "partition {partition} of topic {topic} is no longer this member's (its lease moved on)"
    )]
    NotOwner {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// No message with this id in the topic (never published, or trimmed
    /// before any group could remember it).
    #[error("message {id} not found in topic {topic}")]
    MessageNotFound {
        /// The topic.
        topic: String,
        /// The message id.
        id: String,
    },
    /// A request's group cannot answer: it does not exist on the topic, or
    /// none of its members is alive. Raised before anything is published.
    #[error("no responders for topic {topic}: {reason}")]
    NoResponders {
        /// The topic.
        topic: String,
        /// The group asked to answer.
        group: String,
        /// Why: `group G does not exist` or `group G has no live member`.
        reason: String,
    },
    /// No reply came within the request's timeout (the request stays
    /// published: a member may still handle it later).
    #[error("no reply from group {group} of topic {topic} within {:?}{}", .timeout, .message_id.as_ref().map(|m| format!(" (message {m})")).unwrap_or_default())]
    RequestTimeout {
        /// The topic.
        topic: String,
        /// The group asked to answer.
        group: String,
        /// How long the requester waited.
        timeout: std::time::Duration,
        /// The request's message id, once it was published.
        message_id: Option<String>,
    },
    /// The handler of a request failed for good (a permanent failure, or
    /// out of attempts): the message was dead-lettered with this error.
    #[error(
        "group {group} of topic {topic} failed message {message_id} after {attempts} attempt(s): {error}"
    )]
    RequestFailed {
        /// The topic.
        topic: String,
        /// The group that handled it.
        group: String,
        /// The request's message id.
        message_id: String,
        /// Attempts made.
        attempts: u32,
        /// The handler's last error.
        error: String,
    },
    /// The topic exists with other settings.
    #[error("topic {name} exists with other settings: {differences}")]
    TopicConflict {
        /// The topic.
        name: String,
        /// What differs, as `field: existing X, requested Y; ...`.
        differences: String,
    },
    /// A step would build a partition's keys for a topic whose settings
    /// (and so whose partition tags) this client has not read: a bug, never
    /// a fallback to other keys.
    #[error(
        "the partition tags of topic {0} are unknown: its settings were not read before its keys were built"
    )]
    PlacementUnknown(String),
    /// No balanced placement could be found for a topic on a cluster.
    #[error("cannot place topic {topic} on the cluster: {reason}")]
    Placement {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// A lane number at or above the topic's lane count.
    #[error("topic {topic} has {lanes} lane(s); priority {priority} is out of range")]
    LaneOutOfRange {
        /// The topic.
        topic: String,
        /// The topic's lane count.
        lanes: u8,
        /// The requested lane.
        priority: u8,
    },
    /// An encoded message is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of payload, key and headers together.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A payload could not be encoded to MessagePack.
    #[error("cannot encode payload: {0}")]
    Encode(String),
    /// A stream entry or payload could not be decoded.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// The server is older than Redis 7.0 or lacks a needed command.
    #[error("unsupported server {server}: {reason}")]
    UnsupportedServer {
        /// What the server says it is (`redis 6.2.6`).
        server: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Redis could not be reached, or failed a command.
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
    /// Redis refused a write because it reached `maxmemory` and evicts
    /// nothing. The refused command (or script) wrote nothing; trying again
    /// once memory frees succeeds.
    #[error(
        "Redis is out of memory (maxmemory reached, no eviction): the write was refused and nothing was written; free memory or raise maxmemory ({0})"
    )]
    OutOfMemory(#[source] redis::RedisError),
    /// Redis refused the login: a wrong user or password (`WRONGPASS`), a
    /// disabled user, or a password required but not given (`NOAUTH`).
    #[error("redis refused the login: {message}")]
    AuthFailed {
        /// Why, in Redis's words where it gave some.
        message: String,
        /// Redis's error.
        #[source]
        source: redis::RedisError,
    },
    /// The Redis user may not run a command millrace needs, or may not
    /// touch a key it needs (`NOPERM`, or the same refusal inside one of
    /// millrace's scripts, which then names the script's command).
    #[error("redis denied permission (ACL): {message}")]
    PermissionDenied {
        /// What was refused, as Redis said it (plus, for a script, which
        /// command of which script).
        message: String,
        /// Redis's error.
        #[source]
        source: redis::RedisError,
    },
    /// The TLS handshake failed: the server's certificate is not trusted
    /// (set a CA), or the server refused the client certificate or its
    /// absence.
    #[error("TLS handshake with {addr} failed: {reason}")]
    TlsHandshake {
        /// `host:port` (never the URL, which may hold a password).
        addr: String,
        /// What rustls reported.
        reason: String,
    },
    /// A TLS certificate or key file could not be read.
    #[error("cannot read the TLS {what} {}: {source}", .path.display())]
    TlsFile {
        /// `"CA certificate"`, `"client certificate"` or `"client key"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A TLS certificate or key does not parse, or a key does not belong to
    /// its certificate.
    #[error("invalid TLS {what}{}: {reason}", origin_suffix(.path))]
    TlsPem {
        /// `"CA certificate"`, `"client certificate"` or `"client key"`.
        what: &'static str,
        /// The file, or `None` for PEM given in memory.
        path: Option<PathBuf>,
        /// What is wrong with it (never its contents).
        reason: String,
    },
    /// A blocking-connection pool could not hand out a connection (or
    /// could not be built).
    #[error("redis connection pool: {message}")]
    Pool {
        /// What went wrong, matchable.
        kind: PoolFailure,
        /// The pool's own words.
        message: String,
    },
    /// An operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The producer was closed while a publish was waiting.
    #[error("producer closed")]
    ProducerClosed,
    /// A write asked for replica acknowledgements ([`Acks::Replicas`], or
    /// fsyncs with [`Acks::Fsynced`](crate::Acks::Fsynced)) was
    /// made on the primary, but fewer replicas than asked confirmed it in
    /// time (`WAIT`). The outcome is unknown: the write stands while the
    /// primary does, and a failover now may lose it. Publish again with the
    /// same dedup id to be sure without duplicating it.
    ///
    /// [`Acks::Replicas`]: crate::Acks::Replicas
    #[error(
        "written on the primary, but {acked} of {wanted} replica(s) confirmed it{} within {timeout:?}: the outcome is unknown (a failover now may lose it); publish again with the same dedup id",
        if *.primary_fsynced == Some(false) { " and the primary had not fsynced it" } else { "" }
    )]
    NotReplicated {
        /// Replicas asked for.
        wanted: u32,
        /// Replicas that confirmed in time.
        acked: u32,
        /// How long it waited.
        timeout: Duration,
        /// With [`Acks::Fsynced`](crate::Acks::Fsynced): whether the
        /// primary fsynced it in time (`None` for `Acks::Replicas`).
        primary_fsynced: Option<bool>,
    },
}

/// A name as quoted in an error: escaped (control characters cannot reach
/// a terminal), and cut after 64 characters so a 10 000-character name does
/// not flood a log line.
pub(crate) fn shown_name(name: &str) -> String {
    const SHOWN: usize = 64;
    match name.char_indices().nth(SHOWN) {
        None => format!("{name:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &name[..cut], name.len()),
    }
}

/// Up to five member ids, then how many more.
fn member_list(members: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut list = members
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if members.len() > SHOWN {
        list.push_str(&format!(" and {} more", members.len() - SHOWN));
    }
    list
}

/// Why a connection pool failed ([`Error::Pool`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolFailure {
    /// No connection was free, or none could be made, in time.
    Timeout,
    /// The pool was closed (the client is shutting down).
    Closed,
    /// The pool could not be built.
    Build,
    /// Anything else the pool reported.
    Other,
}

impl From<redis::RedisError> for Error {
    /// Sorts Redis's refusals (`WRONGPASS`, `NOAUTH`, `NOPERM`, `OOM`) into
    /// their own variants; everything else is [`Error::Redis`].
    fn from(e: redis::RedisError) -> Self {
        let (code, detail) = first_server_error(&e);
        if let Some(message) = login_refused(e.kind(), code.as_deref(), &detail) {
            return Error::AuthFailed { message, source: e };
        }
        if let Some(message) = permission_denied(code.as_deref(), &detail) {
            return Error::PermissionDenied { message, source: e };
        }
        if code.as_deref() == Some("OOM") {
            return Error::OutOfMemory(e);
        }
        Error::Redis(e)
    }
}

/// The code and text of the server error behind `e` (the first one, for a
/// pipeline whose commands failed), or no code and `e`'s text.
fn first_server_error(e: &redis::RedisError) -> (Option<String>, String) {
    let first = e
        .clone()
        .into_server_errors()
        .and_then(|errors| errors.first().map(|(_, s)| s.clone()));
    match first {
        Some(s) => (
            Some(s.code().to_string()),
            s.details().unwrap_or_default().trim().to_string(),
        ),
        None => (e.code().map(String::from), e.to_string()),
    }
}

/// Why Redis refused the login, if it did.
fn login_refused(kind: redis::ErrorKind, code: Option<&str>, detail: &str) -> Option<String> {
    match code {
        Some(code @ ("WRONGPASS" | "NOAUTH")) => Some(format!("{code} {detail}")),
        // redis-rs's own verdict on a refused AUTH while connecting.
        _ if kind == redis::ErrorKind::AuthenticationFailed => {
            Some("wrong user or password, or the user is disabled".to_string())
        }
        _ => None,
    }
}

/// What an ACL refused, if the server error `code`/`detail` is such a
/// refusal: `NOPERM` for a command sent directly, or an error from inside a
/// script (Redis 7.0 says "The user executing the script can't ...", Redis
/// 7.2+ and Valkey "ACL failure in script: User ... has no permissions
/// ..."), which then names the script and the command at the line Redis
/// reports.
fn permission_denied(code: Option<&str>, detail: &str) -> Option<String> {
    match code {
        Some("NOPERM") => Some(format!("NOPERM {detail}")),
        Some(_)
            if detail.starts_with("The user executing the script can't")
                || detail.starts_with("ACL failure in script")
                || detail.contains("NOPERM") =>
        {
            Some(match crate::store::scripts::denied_call(detail) {
                Some(call) => format!("{call}: {detail}"),
                None => detail.to_string(),
            })
        }
        _ => None,
    }
}

impl Error {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what,
            reason: reason.into(),
        }
    }

    /// True when trying again later may succeed: connection errors, timeouts,
    /// a cluster that is resharding or a server that is loading.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    // A cluster node that died, until the slot map is
                    // refreshed (a failover under way).
                    || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
                    || matches!(
                        e.code(),
                        Some(
                            "TRYAGAIN"
                                | "LOADING"
                                | "CLUSTERDOWN"
                                | "MASTERDOWN"
                                | "BUSY"
                                | "READONLY"
                        )
                    )
            }
            Error::Pool { .. }
            | Error::Timeout(_)
            | Error::OutOfMemory(_)
            | Error::NotReplicated { .. } => true,
            _ => false,
        }
    }

    /// True when Redis could not be reached, dropped the connection, or
    /// refused us (login, ACL permission, TLS handshake): the CLI's exit
    /// code 3.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.kind() == redis::ErrorKind::AuthenticationFailed
                    || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
                    || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
            }
            Error::Pool { .. }
            | Error::Timeout(_)
            | Error::UnsupportedServer { .. }
            | Error::AuthFailed { .. }
            | Error::PermissionDenied { .. }
            | Error::TlsHandshake { .. } => true,
            _ => false,
        }
    }

    /// True for errors caused by what the caller passed in (names, arguments,
    /// configuration, payload size): retrying the same call cannot help.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidName { .. }
                | Error::InvalidArgument { .. }
                | Error::Config(_)
                | Error::TopicConflict { .. }
                | Error::LaneOutOfRange { .. }
                | Error::PayloadTooLarge { .. }
                | Error::Encode(_)
                | Error::TlsFile { .. }
                | Error::TlsPem { .. }
                | Error::SchemaInvalid { .. }
                | Error::SchemaViolation { .. }
        )
    }
}

/// Turns a `redis::Value::ServerError` into an error, leaving other values alone.
pub(crate) fn check(v: redis::Value) -> Result<redis::Value> {
    match v {
        redis::Value::ServerError(e) => Err(Error::from(redis::RedisError::from(e))),
        other => Ok(other),
    }
}

/// The `Display` tail naming where PEM came from: ` /path/to/ca.pem`, or
/// nothing for PEM given in memory.
fn reason_list(reasons: &[crate::compat::Incompatibility]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn origin_suffix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" {}", p.display()),
        None => " (given in memory)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_refusals_inside_scripts_are_permission_errors_on_every_server() {
        let refusals = [
            // Redis 7.0.
            "The user executing the script can't run this command or subcommand script: 00, on @user_script:1.",
            // Redis 7.2+ and Valkey.
            "ACL failure in script: User app has no permissions to run the 'hset' command script: 00, on @user_script:1.",
        ];
        for detail in refusals {
            assert_eq!(
                permission_denied(Some("ERR"), detail).as_deref(),
                Some(detail),
                "{detail}"
            );
        }
        assert_eq!(permission_denied(Some("ERR"), "unknown command 'x'"), None);
    }
}
