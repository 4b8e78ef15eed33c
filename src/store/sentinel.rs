//! Redis Sentinel: `redis+sentinel://` URLs, finding the current primary
//! through the sentinels, and following it when a replica is promoted.
//!
//! [`SentinelUrl`] is pure (parsing and redaction). [`Primary`] asks the
//! sentinels for the primary's address (`SENTINEL GET-MASTER-ADDR-BY-NAME`),
//! connects and checks (`HELLO`'s role) that the server is a primary, and hands
//! out the result by *generation*: every connection made for a generation
//! reports failures back ([`Primary::suspect`]), and the next user of the
//! generation asks the sentinels again. A demoted primary answers writes
//! with `READONLY`, so a connection that meets it is dropped too; nothing
//! keeps writing to a server that is no longer the primary.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::error::{Error, Result};

/// A parsed `redis+sentinel://` (or `rediss+sentinel://`) URL:
/// `redis+sentinel://[user:password@]host1:26379,host2:26379/master-name[/db]`.
/// The credentials are the data nodes' (the primary's); the sentinels are
/// asked without them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    /// TLS to the sentinels and to the primary.
    pub tls: bool,
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The scheme's prefix, in lower case, if `u` is a Sentinel URL.
fn sentinel_scheme(u: &str) -> Option<bool> {
    let (scheme, _) = u.split_once("://")?;
    match scheme.to_ascii_lowercase().as_str() {
        "redis+sentinel" => Some(false),
        "rediss+sentinel" => Some(true),
        _ => None,
    }
}

/// Whether `u` is a `redis+sentinel://` or `rediss+sentinel://` URL.
pub(crate) fn is_sentinel_url(u: &str) -> bool {
    sentinel_scheme(u).is_some()
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl SentinelUrl {
    /// Parses `u`; `None` when it is not a Sentinel URL at all, an error
    /// (saying what is wrong, without the password) when it is a bad one.
    pub(crate) fn parse(u: &str) -> Option<std::result::Result<SentinelUrl, String>> {
        let tls = sentinel_scheme(u)?;
        Some(Self::parse_rest(u, tls))
    }

    fn parse_rest(u: &str, tls: bool) -> std::result::Result<SentinelUrl, String> {
        let (_, rest) = u.split_once("://").unwrap_or(("", u));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((i, h)) => (Some(i), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(i) => match i.split_once(':') {
                Some((user, pass)) => (
                    Some(percent_decode(user)).filter(|s| !s.is_empty()),
                    Some(percent_decode(pass)),
                ),
                None => (Some(percent_decode(i)).filter(|s| !s.is_empty()), None),
            },
        };
        let mut sentinels = Vec::new();
        for h in hosts.split(',') {
            let bad_port = || format!("sentinel {h:?}: the port is not a number");
            let (host, port) = match h.strip_prefix('[') {
                // [v6 address] or [v6 address]:port
                Some(inner) => {
                    let (host, rest) = inner.split_once(']').ok_or_else(bad_port)?;
                    match rest.strip_prefix(':') {
                        Some(p) => (host, p.parse::<u16>().map_err(|_| bad_port())?),
                        None if rest.is_empty() => (host, 26379),
                        None => return Err(bad_port()),
                    }
                }
                None => match h.rsplit_once(':') {
                    Some((host, p)) => (host, p.parse::<u16>().map_err(|_| bad_port())?),
                    None => (h, 26379),
                },
            };
            if host.is_empty() {
                return Err("no sentinel host (expected host:port[,host:port...])".into());
            }
            sentinels.push((host.to_string(), port));
        }
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let master = segments
            .next()
            .map(percent_decode)
            .ok_or("no master name (expected .../master-name[/db])")?;
        let db = match segments.next() {
            None => 0,
            Some(d) => d
                .parse::<i64>()
                .map_err(|_| format!("database {d:?} is not a number"))?,
        };
        if let Some(extra) = segments.next() {
            return Err(format!(
                "unexpected {extra:?} after the database (expected .../master-name[/db])"
            ));
        }
        Ok(SentinelUrl {
            tls,
            sentinels,
            master,
            db,
            username,
            password,
        })
    }

    /// The URL of a data node at `host:port` with this URL's credentials,
    /// database and TLS.
    pub(crate) fn node_url(&self, host: &str, port: u16) -> String {
        let mut u = url::Url::parse(if self.tls { "rediss://h" } else { "redis://h" })
            .expect("a constant URL parses");
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let _ = u.set_host(Some(&host));
        let _ = u.set_port(Some(port));
        if let Some(user) = &self.username {
            let _ = u.set_username(user);
        }
        if let Some(pass) = &self.password {
            let _ = u.set_password(Some(pass));
        }
        u.set_path(&format!("/{}", self.db));
        u.to_string()
    }

    /// The URL of the sentinel at `host:port` (no credentials).
    fn sentinel_url(&self, host: &str, port: u16) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        if host.contains(':') {
            format!("{scheme}://[{host}]:{port}")
        } else {
            format!("{scheme}://{host}:{port}")
        }
    }
}

/// `u` with the password of a Sentinel URL replaced by `***`, or `None`
/// when `u` is not one.
pub(crate) fn redact_sentinel_url(u: &str) -> Option<String> {
    sentinel_scheme(u)?;
    let (scheme, rest) = u.split_once("://")?;
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let authority = match authority.rsplit_once('@') {
        Some((info, hosts)) => match info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("{info}@{hosts}"),
        },
        None => authority.to_string(),
    };
    Some(match path {
        Some(p) => format!("{scheme}://{authority}/{p}"),
        None => format!("{scheme}://{authority}"),
    })
}

/// What [`Primary`] knows now.
struct State {
    generation: u64,
    /// The primary's client (its URL with credentials and TLS).
    client: redis::Client,
    /// Its address, for errors and logs.
    addr: String,
    /// The multiplexed connection to it, made on first use.
    conn: Option<MultiplexedConnection>,
    /// A connection of this generation failed: ask the sentinels again.
    stale: bool,
}

/// The current primary behind a set of sentinels, shared by every
/// connection of one client.
pub(crate) struct Primary {
    spec: SentinelUrl,
    certs: Option<redis::TlsCertificates>,
    connect_timeout: Duration,
    response_timeout: Duration,
    state: Mutex<State>,
    /// One resolution at a time; the others wait and use its result.
    resolving: tokio::sync::Mutex<()>,
}

/// Whether `e` says the server is not (or no longer) a usable primary, or
/// the connection to it is gone.
pub(crate) fn is_failover_error(e: &RedisError) -> bool {
    matches!(
        e.code(),
        Some("READONLY" | "MASTERDOWN" | "LOADING" | "NOREPLICAS")
    ) || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
}

fn is_readonly(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "READONLY")
}

fn redis_err(what: String) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        what,
    ))
}

impl Primary {
    /// Asks the sentinels for the primary and checks it; fails when none
    /// of them names a reachable primary.
    pub(crate) async fn connect(
        spec: SentinelUrl,
        certs: Option<redis::TlsCertificates>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Primary> {
        let (client, addr) = resolve(&spec, certs.as_ref(), connect_timeout)
            .await
            .map_err(Error::from)?;
        Ok(Primary {
            spec,
            certs,
            connect_timeout,
            response_timeout,
            state: Mutex::new(State {
                generation: 1,
                client,
                addr,
                conn: None,
                stale: false,
            }),
            resolving: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether connections of `generation` should be let go.
    pub(crate) fn is_outdated(&self, generation: u64) -> bool {
        let s = self.lock();
        s.generation != generation || s.stale
    }

    /// A connection of `generation` failed in a way a failover explains:
    /// the next user asks the sentinels again.
    pub(crate) fn suspect(&self, generation: u64) {
        let mut s = self.lock();
        if s.generation == generation && !s.stale {
            tracing::debug!(primary = %s.addr, "primary suspected; asking the sentinels again");
            s.stale = true;
            s.conn = None;
        }
    }

    /// The primary's client and its generation, asking the sentinels first
    /// if the last one was suspected.
    pub(crate) async fn client(&self) -> std::result::Result<(u64, redis::Client), RedisError> {
        {
            let s = self.lock();
            if !s.stale {
                return Ok((s.generation, s.client.clone()));
            }
        }
        let _one = self.resolving.lock().await;
        {
            let s = self.lock();
            if !s.stale {
                return Ok((s.generation, s.client.clone()));
            }
        }
        let (client, addr) = resolve(&self.spec, self.certs.as_ref(), self.connect_timeout).await?;
        let mut s = self.lock();
        if s.addr != addr {
            tracing::info!(from = %s.addr, to = %addr, "following the promoted primary");
        }
        s.generation += 1;
        s.client = client.clone();
        s.addr = addr;
        s.conn = None;
        s.stale = false;
        Ok((s.generation, client))
    }

    /// The multiplexed connection to the primary, made if needed.
    async fn multiplexed(&self) -> std::result::Result<(u64, MultiplexedConnection), RedisError> {
        {
            let s = self.lock();
            if let (false, Some(c)) = (s.stale, &s.conn) {
                return Ok((s.generation, c.clone()));
            }
        }
        let (generation, client) = self.client().await?;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let conn = match client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                self.suspect(generation);
                return Err(e);
            }
        };
        let mut s = self.lock();
        if s.generation == generation && !s.stale {
            s.conn.get_or_insert(conn.clone());
        }
        Ok((generation, conn))
    }
}

/// Opens a client for `url` with `certs` (TLS) or without.
fn open_client(
    url: &str,
    certs: Option<&redis::TlsCertificates>,
) -> std::result::Result<redis::Client, RedisError> {
    match certs {
        Some(c) => redis::Client::build_with_tls(url, c.clone()),
        None => redis::Client::open(url),
    }
}

/// Asks the sentinel at `host:port` where the primary of `spec.master` is.
async fn ask_sentinel(
    spec: &SentinelUrl,
    certs: Option<&redis::TlsCertificates>,
    (host, port): (&str, u16),
    cfg: &AsyncConnectionConfig,
) -> std::result::Result<Option<(String, u16)>, RedisError> {
    let sentinel = open_client(&spec.sentinel_url(host, port), certs)?;
    let mut conn = sentinel
        .get_multiplexed_async_connection_with_config(cfg)
        .await?;
    redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(&spec.master)
        .query_async(&mut conn)
        .await
}

/// How often [`watch`] asks the sentinels where the primary is.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// While `primary` is in use: every [`WATCH_EVERY`], asks the sentinels
/// (the first that answers) where the primary is, and suspects the current
/// generation when they name another. So a client follows a promotion
/// even when nothing it does fails: a worker reading a primary that was
/// cut off from the sentinels (the wrong side of a partition) moves to the
/// new one within about a second of the sentinels' switch.
pub(crate) fn watch(primary: &std::sync::Arc<Primary>) {
    let weak = std::sync::Arc::downgrade(primary);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(p) = weak.upgrade() else {
                return;
            };
            let cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(p.connect_timeout))
                .set_response_timeout(Some(p.connect_timeout));
            let (generation, addr) = {
                let s = p.lock();
                (s.generation, s.addr.clone())
            };
            for (host, port) in &p.spec.sentinels {
                match ask_sentinel(&p.spec, p.certs.as_ref(), (host, *port), &cfg).await {
                    Ok(Some((h, port))) => {
                        if format!("{h}:{port}") != addr {
                            tracing::info!(from = %addr, to = %format!("{h}:{port}"),
                                "the sentinels name another primary");
                            p.suspect(generation);
                        }
                        break;
                    }
                    _ => continue,
                }
            }
        }
    });
}

/// Asks each sentinel in turn for the primary of `spec.master`, connects to
/// the address given and checks with `HELLO` that it is a primary. Returns
/// the primary's client and address.
async fn resolve(
    spec: &SentinelUrl,
    certs: Option<&redis::TlsCertificates>,
    timeout: Duration,
) -> std::result::Result<(redis::Client, String), RedisError> {
    let open = |url: &str| open_client(url, certs);
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut why = Vec::new();
    for (host, port) in &spec.sentinels {
        let asked = ask_sentinel(spec, certs, (host, *port), &cfg);
        let (phost, pport) = match asked.await {
            Ok(Some(a)) => a,
            Ok(None) => {
                why.push(format!("{host}:{port} knows no master {:?}", spec.master));
                continue;
            }
            Err(e) => {
                why.push(format!("{host}:{port}: {e}"));
                continue;
            }
        };
        let addr = format!("{phost}:{pport}");
        let checked = async {
            let client = open(&spec.node_url(&phost, pport))?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?;
            // HELLO (without a version: the protocol stays) tells the
            // role, and every user may send it; ROLE needs more rights.
            let hello: std::collections::HashMap<String, Value> =
                redis::cmd("HELLO").query_async(&mut conn).await?;
            let role = hello
                .get("role")
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .unwrap_or_default();
            Ok::<_, RedisError>((client, role))
        };
        match checked.await {
            Ok((client, role)) if role == "master" => return Ok((client, addr)),
            Ok((_, role)) => why.push(format!(
                "{host}:{port} names {addr}, which is a {role}, not a primary (a failover under way?)"
            )),
            // A refused login is the user's to fix, not a failover.
            Err(e) if e.kind() == redis::ErrorKind::AuthenticationFailed => return Err(e),
            Err(e) if e.code() == Some("WRONGPASS") || e.code() == Some("NOAUTH") => {
                return Err(e);
            }
            Err(e) => why.push(format!("{host}:{port} names {addr}: {e}")),
        }
    }
    Err(redis_err(format!(
        "no primary for {:?} through the sentinels: {}",
        spec.master,
        why.join("; ")
    )))
}

/// The multiplexed connection of a Sentinel set-up: always to the current
/// primary. A command refused with `READONLY` (a demoted primary) is sent
/// once more to the primary the sentinels name; any other failure a
/// failover explains is returned, and the next command goes to the
/// primary named then.
#[derive(Clone)]
pub(crate) struct FollowConn(pub(crate) std::sync::Arc<Primary>);

impl FollowConn {
    /// The primary of the current generation is suspected (see
    /// [`Primary::suspect`]).
    pub(crate) fn suspect_current(&self) {
        let generation = self.0.lock().generation;
        self.0.suspect(generation);
    }

    async fn command(&self, cmd: &Cmd) -> std::result::Result<Value, RedisError> {
        for attempt in 0..2 {
            let (generation, mut conn) = self.0.multiplexed().await?;
            match conn.req_packed_command(cmd).await {
                Ok(v) if is_readonly(&v) && attempt == 0 => self.0.suspect(generation),
                Ok(v) => return Ok(v),
                Err(e) if e.code() == Some("READONLY") && attempt == 0 => {
                    self.0.suspect(generation);
                }
                Err(e) => {
                    if is_failover_error(&e) {
                        self.0.suspect(generation);
                    }
                    return Err(e);
                }
            }
        }
        Err(redis_err(
            "the primary refused the command twice (READONLY)".into(),
        ))
    }

    async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> std::result::Result<Vec<Value>, RedisError> {
        let (generation, mut conn) = self.0.multiplexed().await?;
        match conn.req_packed_commands(pipeline, offset, count).await {
            // Part of a pipeline may have run: it is not sent again.
            Ok(values) => {
                if values.iter().any(is_readonly) {
                    self.0.suspect(generation);
                }
                Ok(values)
            }
            Err(e) => {
                if is_failover_error(&e) {
                    self.0.suspect(generation);
                }
                Err(e)
            }
        }
    }
}

impl ConnectionLike for FollowConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.pipeline(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.0.spec.db
    }
}

/// A dedicated (blocking-read) connection to the primary of one
/// generation: the pool lets it go once the primary is suspected or
/// replaced.
pub(crate) struct FollowedConn {
    generation: u64,
    primary: std::sync::Arc<Primary>,
    conn: FollowedKind,
}

enum FollowedKind {
    /// Plain TCP: our own lean connection.
    Direct(crate::store::direct::DirectConn),
    /// TLS: redis-rs's.
    Multiplexed(MultiplexedConnection),
}

impl FollowedConn {
    /// Made for the current primary, not suspected since.
    pub(crate) fn is_current(&self) -> bool {
        !self.primary.is_outdated(self.generation)
    }

    fn check<T>(
        &self,
        r: std::result::Result<T, RedisError>,
        readonly: impl Fn(&T) -> bool,
    ) -> std::result::Result<T, RedisError> {
        match &r {
            Ok(v) if readonly(v) => self.primary.suspect(self.generation),
            Err(e) if is_failover_error(e) => self.primary.suspect(self.generation),
            _ => {}
        }
        r
    }
}

impl ConnectionLike for FollowedConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = match &mut self.conn {
                FollowedKind::Direct(c) => c.req_packed_command(cmd).await,
                FollowedKind::Multiplexed(c) => c.req_packed_command(cmd).await,
            };
            self.check(r, is_readonly)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = match &mut self.conn {
                FollowedKind::Direct(c) => c.req_packed_commands(pipeline, offset, count).await,
                FollowedKind::Multiplexed(c) => {
                    c.req_packed_commands(pipeline, offset, count).await
                }
            };
            self.check(r, |v: &Vec<Value>| v.iter().any(is_readonly))
        })
    }

    fn get_db(&self) -> i64 {
        self.primary.spec.db
    }
}

/// Makes [`FollowedConn`]s for the blocking pool, always to the primary
/// the sentinels name now.
pub(crate) struct FollowManager {
    pub(crate) primary: std::sync::Arc<Primary>,
    /// A blocking read's: its BLOCK plus the response timeout.
    pub(crate) response_timeout: Duration,
}

impl deadpool::managed::Manager for FollowManager {
    type Type = FollowedConn;
    type Error = RedisError;

    async fn create(&self) -> std::result::Result<FollowedConn, RedisError> {
        let (generation, client) = self.primary.client().await?;
        let info = client.get_connection_info();
        let connect_timeout = self.primary.connect_timeout;
        let made = if crate::store::direct::DirectConn::supports(info) {
            crate::store::direct::DirectConn::connect(info, connect_timeout, self.response_timeout)
                .await
                .map(FollowedKind::Direct)
        } else {
            let cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(self.response_timeout));
            client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map(FollowedKind::Multiplexed)
        };
        match made {
            Ok(conn) => Ok(FollowedConn {
                generation,
                primary: self.primary.clone(),
                conn,
            }),
            Err(e) => {
                if is_failover_error(&e) {
                    self.primary.suspect(generation);
                }
                Err(e)
            }
        }
    }

    async fn recycle(
        &self,
        conn: &mut FollowedConn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<RedisError> {
        if self.primary.is_outdated(conn.generation) {
            return Err(deadpool::managed::RecycleError::message(
                "the primary changed since this connection was made",
            ));
        }
        match &mut conn.conn {
            FollowedKind::Direct(c) => c.ping().await?,
            FollowedKind::Multiplexed(c) => {
                let _: String = redis::cmd("PING").query_async(c).await?;
            }
        }
        Ok(())
    }
}

/// Where Pub/Sub connections go: a fixed server, or the current primary.
#[derive(Clone)]
pub(crate) enum Subscriber {
    /// One server (on a cluster, any node: classic Pub/Sub reaches all).
    Fixed(Box<redis::Client>),
    /// The primary the sentinels name when the connection is made.
    Followed(std::sync::Arc<Primary>),
}

impl Subscriber {
    /// The client to open a Pub/Sub connection with, and its generation
    /// (0 for a fixed server).
    pub(crate) async fn client(&self) -> std::result::Result<(u64, redis::Client), RedisError> {
        match self {
            Subscriber::Fixed(c) => Ok((0, (**c).clone())),
            Subscriber::Followed(p) => p.client().await,
        }
    }

    /// Connecting with the client of `generation` failed with `e`.
    pub(crate) fn failed(&self, generation: u64, e: &RedisError) {
        if let Subscriber::Followed(p) = self
            && is_failover_error(e)
        {
            p.suspect(generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse() {
        let u = SentinelUrl::parse("redis+sentinel://app:p%40ss@h1:26379,h2:26380/orders/2")
            .unwrap()
            .unwrap();
        assert_eq!(
            u,
            SentinelUrl {
                tls: false,
                sentinels: vec![("h1".into(), 26379), ("h2".into(), 26380)],
                master: "orders".into(),
                db: 2,
                username: Some("app".into()),
                password: Some("p@ss".into()),
            }
        );
        assert_eq!(
            u.node_url("10.0.0.5", 6379),
            "redis://app:p%40ss@10.0.0.5:6379/2"
        );
        let t = SentinelUrl::parse("REDISS+SENTINEL://:pw@[::1]:5000,h,[::2]/mymaster")
            .unwrap()
            .unwrap();
        assert!(t.tls);
        assert_eq!(
            t.sentinels,
            vec![
                ("::1".into(), 5000),
                ("h".into(), 26379),
                ("::2".into(), 26379)
            ]
        );
        assert_eq!((t.username.as_deref(), t.db), (None, 0));
        assert_eq!(t.node_url("::1", 7000), "rediss://:pw@[::1]:7000/0");
        assert!(SentinelUrl::parse("redis://h:1").is_none());
    }

    #[test]
    fn bad_sentinel_urls_say_what_is_wrong() {
        for (u, says) in [
            ("redis+sentinel://h1:26379", "no master name"),
            ("redis+sentinel://h1:x/m", "port is not a number"),
            ("redis+sentinel://h1,,h2/m", "no sentinel host"),
            ("redis+sentinel://h1/m/zero", "database \"zero\""),
            ("redis+sentinel://h1/m/0/x", "unexpected \"x\""),
        ] {
            let e = SentinelUrl::parse(u).unwrap().unwrap_err();
            assert!(e.contains(says), "{u}: {e}");
        }
    }

    #[test]
    fn sentinel_passwords_are_redacted() {
        assert_eq!(
            redact_sentinel_url("redis+sentinel://app:s3cret@h1,h2:1/m/1").unwrap(),
            "redis+sentinel://app:***@h1,h2:1/m/1"
        );
        assert_eq!(
            redact_sentinel_url("redis+sentinel://h1/m").unwrap(),
            "redis+sentinel://h1/m"
        );
        assert_eq!(redact_sentinel_url("redis://a:b@h"), None);
    }
}
