//! The library's error type.
//!
//! Every fallible public function returns [`Result`]. Variants say what went
//! wrong in terms of millrace (a bad name, a topic conflict, an oversize
//! payload) rather than in terms of Redis, so callers can match on them; Redis
//! failures keep the underlying [`redis::RedisError`] for its predicates.

use std::time::Duration;

/// A `Result` with millrace's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic or group name breaks the naming rules.
    #[error("invalid {what} name {name:?}: {reason}")]
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
    /// The topic exists with other settings.
    #[error("topic {name} exists with other settings: {differences}")]
    TopicConflict {
        /// The topic.
        name: String,
        /// What differs, as `field: existing X, requested Y; ...`.
        differences: String,
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
    /// Redis could not be reached, refused us, or failed a command.
    #[error("redis: {0}")]
    Redis(redis::RedisError),
    /// Redis refused a write because it reached `maxmemory` and evicts
    /// nothing. The refused command (or script) wrote nothing; trying again
    /// once memory frees succeeds.
    #[error(
        "Redis is out of memory (maxmemory reached, no eviction): the write was refused and nothing was written; free memory or raise maxmemory ({0})"
    )]
    OutOfMemory(redis::RedisError),
    /// A blocking-connection pool could not hand out a connection.
    #[error("redis connection pool: {0}")]
    Pool(String),
    /// An operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The producer was closed while a publish was waiting.
    #[error("producer closed")]
    ProducerClosed,
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        if e.code() == Some("OOM") {
            Error::OutOfMemory(e)
        } else {
            Error::Redis(e)
        }
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
                    || matches!(
                        e.code(),
                        Some("TRYAGAIN" | "LOADING" | "CLUSTERDOWN" | "MASTERDOWN" | "BUSY")
                    )
            }
            Error::Pool(_) | Error::Timeout(_) | Error::OutOfMemory(_) => true,
            _ => false,
        }
    }

    /// True when Redis could not be reached or dropped the connection
    /// (the CLI's exit code 3).
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
            Error::Pool(_) | Error::Timeout(_) | Error::UnsupportedServer { .. } => true,
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
        )
    }
}
