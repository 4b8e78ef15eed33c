//! Connections: one multiplexed, reconnecting connection for non-blocking
//! commands and pipelines, and a pool of dedicated connections for blocking
//! reads, each for a single server or a Redis Cluster.
//!
//! The cluster is detected on connect (`INFO` says `cluster_enabled:1`), so
//! the same URL style works for both. Above this module nothing knows which
//! one it talks to, except that pipelines must stay within one slot: callers
//! group commands per partition (see [`Conn::is_cluster`]).

use std::collections::HashMap;
use std::time::Duration;

use deadpool::managed;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, ConnectionAddr, Pipeline, RedisFuture, Value};

use crate::config::{Config, redact_url};
use crate::error::{Error, PoolFailure, Result};
use crate::store::direct::{DirectConn, DirectManager};
use crate::store::scripts::{Script, Scripts};
use crate::store::sentinel::{FollowConn, FollowManager, Primary, SentinelUrl, Subscriber};
use crate::store::tls;

/// What the server said about itself on connect.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// `redis`, `valkey`, or whatever the server calls itself.
    pub server: String,
    /// Its version as reported (`7.0.15`).
    pub version: String,
    /// Whether it runs in cluster mode.
    pub cluster: bool,
}

/// Parses `INFO` text and refuses servers older than Redis 7.0.
pub(crate) fn parse_server_info(info: &str) -> Result<ServerInfo> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    let redis_version = field("redis_version");
    let (server, version) = match (field("valkey_version"), &redis_version) {
        (Some(v), _) => ("valkey".to_string(), v),
        (None, Some(v)) => ("redis".to_string(), v.clone()),
        (None, None) => {
            return Err(Error::UnsupportedServer {
                server: "unknown".into(),
                reason: "INFO does not report redis_version".into(),
            });
        }
    };
    // Compatible servers report the Redis version they implement here.
    let compat = redis_version.as_deref().unwrap_or(&version);
    check_version(&server, &version, compat)?;
    Ok(ServerInfo {
        server,
        version,
        cluster: field("cluster_enabled").as_deref() == Some("1"),
    })
}

/// Parses the reply of a bare `HELLO` (`server`, `version`, `mode`, ...),
/// which a user without the `INFO` permission may still send: Redis lets
/// every user run `HELLO` and `AUTH`.
pub(crate) fn parse_hello(fields: &HashMap<String, Value>) -> Result<ServerInfo> {
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
    };
    let Some(version) = text("version") else {
        return Err(Error::UnsupportedServer {
            server: "unknown".into(),
            reason: "HELLO does not report a version (and INFO was refused)".into(),
        });
    };
    let server = text("server").unwrap_or_else(|| "redis".to_string());
    check_version(&server, &version, &version)?;
    Ok(ServerInfo {
        server,
        version,
        cluster: text("mode").as_deref() == Some("cluster"),
    })
}

/// Refuses servers implementing a Redis older than 7.0.
fn check_version(server: &str, version: &str, compat: &str) -> Result<()> {
    let major: u32 = compat
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(Error::UnsupportedServer {
            server: format!("{server} {version}"),
            reason: "millrace needs Redis 7.0 or later (or a compatible server)".into(),
        });
    }
    Ok(())
}

/// The multiplexed connection: cheap to clone, reconnects by itself. Use
/// it with redis-rs's commands (it implements
/// [`ConnectionLike`]).
#[derive(Clone)]
pub struct Conn(ConnKind);

#[derive(Clone)]
enum ConnKind {
    /// A single server (or a primary behind a proxy).
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
    /// The primary behind Redis Sentinel, followed across promotions.
    Followed(FollowConn),
}

impl Conn {
    /// Whether commands for different partitions must go in separate pipelines.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, ConnKind::Cluster(_))
    }

    /// Behind Sentinel: the primary in use may no longer be the one (no
    /// replica confirmed a write, as on the wrong side of a partition):
    /// the next command asks the sentinels again. Nothing elsewhere.
    pub(crate) fn suspect_primary(&self) {
        if let ConnKind::Followed(f) = &self.0 {
            f.suspect_current();
        }
    }

    /// Runs a script by SHA, loading every script again on `NOSCRIPT`
    /// (a restarted or failed-over server forgets them).
    pub(crate) async fn eval(
        &mut self,
        scripts: &Scripts,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<Value> {
        let cmd = script.cmd(keys, args);
        match cmd.query_async::<Value>(self).await {
            Err(e) if is_noscript(&e) => {
                load_scripts(scripts, self).await?;
                Ok(cmd.query_async::<Value>(self).await?)
            }
            other => Ok(other?),
        }
    }
}

/// A blocking pool that could not be built.
fn pool_build_failed(e: impl std::fmt::Display) -> Error {
    Error::Pool {
        kind: PoolFailure::Build,
        message: e.to_string(),
    }
}

/// Loads every script of `scripts` (on a cluster, into every primary).
pub(crate) async fn load_scripts(scripts: &Scripts, conn: &mut Conn) -> Result<()> {
    let mut pipe = redis::pipe();
    for s in scripts.all() {
        pipe.cmd("SCRIPT").arg("LOAD").arg(s.source());
    }
    match conn.0 {
        // A cluster routes SCRIPT LOAD to every node, one command at a time.
        ConnKind::Cluster(_) => {
            for s in scripts.all() {
                let _: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(s.source())
                    .query_async(conn)
                    .await?;
            }
        }
        ConnKind::Single(_) | ConnKind::Followed(_) => {
            let _: Vec<String> = pipe.query_async(conn).await?;
        }
    }
    Ok(())
}

/// Runs a pipeline whose first `count` commands matter (any after them are
/// ignored ones); returns their replies in order, server errors included as
/// `Value::ServerError`. Script calls that met `NOSCRIPT` did not run: the
/// scripts are loaded again and just those commands are sent again.
pub(crate) async fn run_pipeline(
    conn: &mut Conn,
    scripts: &Scripts,
    pipe: Pipeline,
    count: usize,
) -> redis::RedisResult<Vec<Value>> {
    Ok(run_pipeline_noting_retries(conn, scripts, pipe, count)
        .await?
        .0)
}

/// [`run_pipeline`], saying too whether some commands had to be sent
/// again (after the pipeline's last command: a `WAIT` at its end does not
/// cover them).
pub(crate) async fn run_pipeline_noting_retries(
    conn: &mut Conn,
    scripts: &Scripts,
    mut pipe: Pipeline,
    count: usize,
) -> redis::RedisResult<(Vec<Value>, bool)> {
    pipe.ignore_errors();
    let mut values: Vec<Value> = pipe.query_async(conn).await?;
    values.truncate(count);
    let missing: Vec<usize> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT"))
        .map(|(n, _)| n)
        .collect();
    if missing.is_empty() {
        return Ok((values, false));
    }
    if let Err(e) = load_scripts(scripts, conn).await {
        tracing::warn!(error = %e, "reloading scripts failed");
    }
    let mut again = redis::pipe();
    again.ignore_errors();
    let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
    for &n in &missing {
        again.add_command(cmds[n].clone());
    }
    let retried: Vec<Value> = again.query_async(conn).await?;
    for (n, v) in missing.into_iter().zip(retried) {
        values[n] = v;
    }
    Ok((values, true))
}

/// Runs `cmd` and returns its reply as it came: an error reply becomes an
/// error, errors nested inside the reply are left for the caller to meet.
/// (redis-rs's `query_async` walks and rebuilds the whole reply looking for
/// nested errors: for a read of 100 entries, a fifth of a consumer's work.)
pub(crate) async fn query_value(
    conn: &mut impl redis::aio::ConnectionLike,
    cmd: &Cmd,
) -> crate::error::Result<Value> {
    crate::error::check(conn.req_packed_command(cmd).await?)
}

pub(crate) fn is_noscript(e: &redis::RedisError) -> bool {
    e.code() == Some("NOSCRIPT")
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            ConnKind::Single(c) => c.req_packed_command(cmd),
            ConnKind::Cluster(c) => c.req_packed_command(cmd),
            ConnKind::Followed(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            ConnKind::Single(c) => c.req_packed_commands(pipeline, offset, count),
            ConnKind::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            ConnKind::Followed(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            ConnKind::Single(c) => c.get_db(),
            ConnKind::Cluster(c) => c.get_db(),
            ConnKind::Followed(c) => c.get_db(),
        }
    }
}

/// Creates cluster connections with our own timeouts for the blocking pool
/// (deadpool-redis's cluster manager cannot set a response timeout, and a
/// blocking read needs one longer than its BLOCK).
pub struct ClusterManager {
    client: ClusterClient,
}

impl managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<ClusterConnection, redis::RedisError> {
        self.client.get_async_connection().await
    }

    async fn recycle(
        &self,
        conn: &mut ClusterConnection,
        _: &managed::Metrics,
    ) -> managed::RecycleResult<redis::RedisError> {
        let _: String = redis::cmd("PING").query_async(conn).await?;
        Ok(())
    }
}

/// The pool of dedicated connections for blocking reads.
#[derive(Clone)]
pub enum BlockingPool {
    /// Single server over plain TCP: our own connections (see `direct::DirectConn`).
    Direct(managed::Pool<DirectManager>),
    /// Single server (TLS, Unix socket): deadpool-redis.
    Single(deadpool_redis::Pool),
    /// Cluster: deadpool over [`ClusterManager`].
    Cluster(managed::Pool<ClusterManager>),
    /// The primary behind Redis Sentinel: deadpool over [`FollowManager`].
    Followed(managed::Pool<FollowManager>),
}

/// A connection taken from the client's pool of blocking connections; hold it for a read loop
/// rather than taking one per read (each take costs a PING).
pub struct BlockingConn(BlockingKind);

enum BlockingKind {
    /// Single server over plain TCP.
    Direct(managed::Object<DirectManager>),
    /// Single server.
    Single(deadpool_redis::Connection),
    /// Cluster.
    Cluster(managed::Object<ClusterManager>),
    /// The primary behind Redis Sentinel.
    Followed(managed::Object<FollowManager>),
}

impl BlockingPool {
    /// True while another taker would still get a connection without
    /// waiting (an idle one, or room to open one).
    pub(crate) fn has_spare(&self) -> bool {
        let s = match self {
            BlockingPool::Direct(p) => p.status(),
            BlockingPool::Single(p) => p.status(),
            BlockingPool::Cluster(p) => p.status(),
            BlockingPool::Followed(p) => p.status(),
        };
        s.waiting == 0 && (s.available > 0 || s.size < s.max_size)
    }

    /// Takes a connection.
    pub async fn get(&self) -> Result<BlockingConn> {
        match self {
            BlockingPool::Direct(p) => p
                .get()
                .await
                .map(|c| BlockingConn(BlockingKind::Direct(c)))
                .map_err(pool_error),
            BlockingPool::Single(p) => p
                .get()
                .await
                .map(|c| BlockingConn(BlockingKind::Single(c)))
                .map_err(pool_error),
            BlockingPool::Cluster(p) => p
                .get()
                .await
                .map(|c| BlockingConn(BlockingKind::Cluster(c)))
                .map_err(pool_error),
            BlockingPool::Followed(p) => p
                .get()
                .await
                .map(|c| BlockingConn(BlockingKind::Followed(c)))
                .map_err(pool_error),
        }
    }
}

/// A connection the pool could not make is reported like any other (a
/// refused login stays [`Error::AuthFailed`]); the pool's own failures
/// (timeouts, closed) are [`Error::Pool`].
fn pool_error(e: managed::PoolError<redis::RedisError>) -> Error {
    match e {
        managed::PoolError::Backend(b) => Error::from(b),
        other => Error::Pool {
            kind: match &other {
                managed::PoolError::Timeout(_) => PoolFailure::Timeout,
                managed::PoolError::Closed => PoolFailure::Closed,
                _ => PoolFailure::Other,
            },
            message: other.to_string(),
        },
    }
}

impl BlockingConn {
    /// Whether the connection still leads to the primary: false once the
    /// primary behind Redis Sentinel changed (or is suspected) since it was
    /// made. A kept connection must be let go then: the old primary may
    /// still answer (cut off from the sentinels, not from us), with its own
    /// stale copy of every lease.
    pub(crate) fn is_current(&self) -> bool {
        match &self.0 {
            BlockingKind::Followed(c) => c.is_current(),
            _ => true,
        }
    }

    /// Takes the connection out of its pool: when dropped it is closed
    /// rather than reused. For a blocking read abandoned midway, whose reply
    /// could otherwise still arrive (and deliver messages) on a pooled
    /// connection.
    pub fn detach(self) {
        match self.0 {
            BlockingKind::Direct(c) => drop(managed::Object::take(c)),
            BlockingKind::Single(c) => drop(deadpool_redis::Connection::take(c)),
            BlockingKind::Cluster(c) => drop(managed::Object::take(c)),
            BlockingKind::Followed(c) => drop(managed::Object::take(c)),
        }
    }
}

/// Holds a blocking connection during one read; if the read is dropped
/// before it completes, the connection is detached from the pool and closed.
pub(crate) struct ReadGuard(Option<BlockingConn>);

impl ReadGuard {
    pub(crate) fn new(conn: BlockingConn) -> Self {
        ReadGuard(Some(conn))
    }

    pub(crate) fn conn(&mut self) -> &mut BlockingConn {
        // Always Some until `done` or drop.
        self.0.as_mut().expect("ReadGuard used after done")
    }

    /// The read completed: the connection goes back to the pool.
    pub(crate) fn done(mut self) {
        self.0.take();
    }

    /// The read completed: the caller keeps the connection (out of the pool).
    pub(crate) fn into_inner(mut self) -> Option<BlockingConn> {
        self.0.take()
    }

    /// The read completed: the connection goes back to `held` for the next
    /// read of the same loop, or to the pool if `held` has one already.
    pub(crate) fn keep(mut self, held: &HeldConns, pool: &BlockingPool) {
        if let Some(c) = self.0.take() {
            held.put(c, pool);
        }
    }
}

/// The blocking connection a read loop keeps between its reads, so a read
/// does not pay the pool's check on every take (a `PING` round trip, on the
/// path of an idle member's latency). One at most: many loops share the
/// pool (on a cluster a loop reads several slots at once, and the others go
/// back to the pool), and only while the pool has connections to spare. A
/// connection whose read failed or was abandoned is not kept (see
/// [`ReadGuard`]).
#[derive(Default)]
pub(crate) struct HeldConns(std::sync::Mutex<Vec<BlockingConn>>);

impl HeldConns {
    /// A kept connection, else one from the pool.
    pub(crate) async fn take(&self, pool: &BlockingPool) -> Result<ReadGuard> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match kept {
            Some(c) if c.is_current() => Ok(ReadGuard::new(c)),
            Some(old) => {
                old.detach();
                Ok(ReadGuard::new(pool.get().await?))
            }
            None => Ok(ReadGuard::new(pool.get().await?)),
        }
    }

    /// Keeps `c` unless one is kept already or the pool has none to spare
    /// (then `c` drops here and goes back to the pool: a kept connection
    /// must never leave other readers waiting on an empty pool).
    fn put(&self, c: BlockingConn, pool: &BlockingPool) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_empty() && pool.has_spare() {
            held.push(c);
        }
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.detach();
        }
    }
}

impl ConnectionLike for BlockingConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            BlockingKind::Direct(c) => (**c).req_packed_command(cmd),
            BlockingKind::Single(c) => c.req_packed_command(cmd),
            BlockingKind::Cluster(c) => (**c).req_packed_command(cmd),
            BlockingKind::Followed(c) => (**c).req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            BlockingKind::Direct(c) => (**c).req_packed_commands(pipeline, offset, count),
            BlockingKind::Single(c) => c.req_packed_commands(pipeline, offset, count),
            BlockingKind::Cluster(c) => (**c).req_packed_commands(pipeline, offset, count),
            BlockingKind::Followed(c) => (**c).req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            BlockingKind::Direct(c) => c.get_db(),
            BlockingKind::Single(c) => c.get_db(),
            BlockingKind::Cluster(c) => (**c).get_db(),
            BlockingKind::Followed(c) => (**c).get_db(),
        }
    }
}

/// Everything [`connect`] sets up.
pub(crate) struct Connected {
    pub conn: Conn,
    pub pool: BlockingPool,
    pub info: ServerInfo,
    /// For Pub/Sub connections (a requester's replies): the first URL's
    /// server. On a cluster any node will do: classic Pub/Sub messages
    /// reach every node.
    pub subscriber: Subscriber,
}

/// Connects, checks the server, picks single or cluster, and builds the pool.
pub(crate) async fn connect(config: &Config) -> Result<Connected> {
    let first = &config.urls[0];
    let certs = config.tls.certificates();
    if config.uses_tls() {
        tls::install_crypto_provider();
    }
    if let Some(spec) = SentinelUrl::parse(first) {
        let spec =
            spec.map_err(|e| Error::Config(format!("bad Redis URL {}: {e}", redact_url(first))))?;
        return connect_sentinel(config, spec, certs).await;
    }
    let client = match &certs {
        Some(certs) => redis::Client::build_with_tls(first.as_str(), certs.clone()),
        None => redis::Client::open(first.as_str()),
    }
    .map_err(|e| Error::Config(format!("bad Redis URL {}: {e}", redact_url(first))))?;
    let addr = client.get_connection_info().addr().to_string();
    let (mut probe, probe_cfg, info) = probe(&client, config).await?;
    if info.cluster && config.uses_tls() {
        check_cluster_handshakes(&client, &mut probe, &probe_cfg).await?;
    }
    drop(probe);

    let blocking_response = config.block_timeout + config.response_timeout;
    if info.cluster {
        let build = |response: Duration| {
            let mut builder = ClusterClient::builder(config.urls.iter().map(String::as_str))
                .connection_timeout(config.connect_timeout)
                .response_timeout(response);
            if let Some(certs) = &certs {
                builder = builder.certs(certs.clone());
            }
            builder.build()
        };
        let main = build(config.response_timeout)?;
        let conn = Conn(ConnKind::Cluster(
            main.get_async_connection()
                .await
                .map_err(|e| connect_error(&addr, e))?,
        ));
        let manager = ClusterManager {
            client: build(blocking_response)?,
        };
        let pool = build_pool(manager, config.blocking_pool_size)?;
        Ok(Connected {
            conn,
            pool: BlockingPool::Cluster(pool),
            info,
            subscriber: Subscriber::Fixed(Box::new(client)),
        })
    } else {
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let conn = Conn(ConnKind::Single(
            client
                .get_connection_manager_with_config(manager_cfg)
                .await
                .map_err(|e| connect_error(&addr, e))?,
        ));
        if DirectConn::supports(client.get_connection_info()) {
            let manager = DirectManager {
                info: client.get_connection_info().clone(),
                connect_timeout: config.connect_timeout,
                response_timeout: blocking_response,
            };
            let pool = build_pool(manager, config.blocking_pool_size)?;
            return Ok(Connected {
                conn,
                pool: BlockingPool::Direct(pool),
                info,
                subscriber: Subscriber::Fixed(Box::new(client)),
            });
        }
        let blocking_cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(blocking_response));
        // The client's connection info carries the TLS certificates, so the
        // pool's connections present and trust the same ones.
        let manager = deadpool_redis::Manager::new_with_config(
            client.get_connection_info().clone(),
            blocking_cfg,
        )?;
        let pool = build_pool(manager, config.blocking_pool_size)?;
        Ok(Connected {
            conn,
            pool: BlockingPool::Single(pool),
            info,
            subscriber: Subscriber::Fixed(Box::new(client)),
        })
    }
}

/// The blocking pool over `manager`'s connections, at most `size` of them.
fn build_pool<M, W>(manager: M, size: usize) -> Result<managed::Pool<M, W>>
where
    M: managed::Manager,
    W: From<managed::Object<M>>,
{
    managed::Pool::<M, W>::builder(manager)
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(pool_build_failed)
}

/// A first connection to `client`'s server, the settings it was made with,
/// and what the server says it is (refusing servers older than 7.0).
async fn probe(
    client: &redis::Client,
    config: &Config,
) -> Result<(
    redis::aio::MultiplexedConnection,
    AsyncConnectionConfig,
    ServerInfo,
)> {
    let addr = client.get_connection_info().addr().to_string();
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| connect_error(&addr, e))?;
    let info = server_info(&mut conn)
        .await
        .map_err(|e| connect_error(&addr, e))??;
    Ok((conn, cfg, info))
}

/// Connects through Redis Sentinel: every connection kind goes to the
/// primary the sentinels name and follows it across promotions.
async fn connect_sentinel(
    config: &Config,
    spec: SentinelUrl,
    certs: Option<redis::TlsCertificates>,
) -> Result<Connected> {
    let master = spec.master.clone();
    let primary = std::sync::Arc::new(
        Primary::connect(spec, certs, config.connect_timeout, config.response_timeout).await?,
    );
    crate::store::sentinel::watch(&primary);
    let (_, client) = primary.client().await?;
    let addr = client.get_connection_info().addr().to_string();
    let (probe, _, info) = probe(&client, config).await?;
    drop(probe);
    if info.cluster {
        return Err(Error::Config(format!(
            "the sentinels' primary for {master:?} ({addr}) is a cluster node: use its redis:// URL"
        )));
    }
    let manager = FollowManager {
        primary: primary.clone(),
        response_timeout: config.block_timeout + config.response_timeout,
    };
    let pool = build_pool(manager, config.blocking_pool_size)?;
    Ok(Connected {
        conn: Conn(ConnKind::Followed(FollowConn(primary.clone()))),
        pool: BlockingPool::Followed(pool),
        info,
        subscriber: Subscriber::Followed(primary),
    })
}

/// Asks the server what it is: `INFO`, or `HELLO` when the user may not run
/// `INFO` (it is in the `@dangerous` ACL category). The outer error is the
/// command's, the inner one the verdict on the server.
async fn server_info(
    conn: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<Result<ServerInfo>> {
    match redis::cmd("INFO").query_async::<String>(conn).await {
        Ok(text) => Ok(parse_server_info(&text)),
        Err(e) if e.code() == Some("NOPERM") => {
            let fields: HashMap<String, Value> = redis::cmd("HELLO").query_async(conn).await?;
            Ok(parse_hello(&fields))
        }
        Err(e) => Err(e),
    }
}

/// On a TLS cluster, a handshake with every master the first node announces
/// in `CLUSTER SLOTS`. redis-rs's cluster client reduces a failed handshake
/// with a node it found there to text (or to "no connections found"), so it
/// is tried here first, where it can be reported as
/// [`Error::TlsHandshake`] naming the node: typically a certificate that does
/// not cover the address the node announces. Anything other than a failed
/// handshake is left to the cluster client.
async fn check_cluster_handshakes(
    client: &redis::Client,
    probe: &mut redis::aio::MultiplexedConnection,
    cfg: &AsyncConnectionConfig,
) -> Result<()> {
    let first = client.get_connection_info();
    let ConnectionAddr::TcpTls {
        host: first_host,
        port: first_port,
        insecure,
        tls_params,
    } = first.addr()
    else {
        return Ok(());
    };
    // A user who may not run CLUSTER SLOTS fails later, with a clear NOPERM.
    let Ok(slots) = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async::<Vec<Value>>(probe)
        .await
    else {
        return Ok(());
    };
    for (host, port) in cluster_masters(&slots) {
        if (&host, port) == (first_host, *first_port) {
            continue;
        }
        let node = first.clone().set_addr(ConnectionAddr::TcpTls {
            host: host.clone(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        });
        let Ok(node) = redis::Client::open(node) else {
            continue;
        };
        if let Err(e) = node.get_multiplexed_async_connection_with_config(cfg).await
            && let Some(reason) = tls::handshake_failure(&e)
        {
            return Err(Error::TlsHandshake {
                addr: format!("{host}:{port}"),
                reason,
            });
        }
    }
    Ok(())
}

/// The masters of a `CLUSTER SLOTS` reply (`[start, end, [host, port, id,
/// ...], replicas...]` per range), each once, in reply order. A host that
/// is empty or `?` (the node does not know its address) is left out: the
/// cluster client uses the URL's host for it.
pub(crate) fn cluster_masters(slots: &[Value]) -> Vec<(String, u16)> {
    let mut out: Vec<(String, u16)> = Vec::new();
    for range in slots {
        let Value::Array(parts) = range else {
            continue;
        };
        let Some(Value::Array(master)) = parts.get(2) else {
            continue;
        };
        let host = master
            .first()
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
        let port = master
            .get(1)
            .and_then(|v| redis::from_redis_value_ref::<u16>(v).ok());
        if let (Some(host), Some(port)) = (host, port)
            && !host.is_empty()
            && host != "?"
            && !out.iter().any(|(h, p)| *h == host && *p == port)
        {
            out.push((host, port));
        }
    }
    out
}

/// A failed connect: a TLS handshake failure gets its own error naming the
/// address; anything else is sorted by [`Error::from`].
fn connect_error(addr: &str, e: redis::RedisError) -> Error {
    match tls::handshake_failure(&e) {
        Some(reason) => Error::TlsHandshake {
            addr: addr.to_string(),
            reason,
        },
        None => Error::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_failures_keep_their_kind_and_redis_errors_their_source() {
        use std::error::Error as _;
        let timeout = pool_error(managed::PoolError::Timeout(managed::TimeoutType::Wait));
        assert!(
            matches!(
                timeout,
                Error::Pool {
                    kind: PoolFailure::Timeout,
                    ..
                }
            ),
            "{timeout:?}"
        );
        assert!(timeout.is_retryable());
        let closed = pool_error(managed::PoolError::Closed);
        assert!(matches!(
            closed,
            Error::Pool {
                kind: PoolFailure::Closed,
                ..
            }
        ));
        let refused = Error::from(redis::RedisError::from((
            redis::ErrorKind::Io,
            "connection refused",
        )));
        assert!(matches!(refused, Error::Redis(_)));
        assert!(refused.source().is_some(), "Error::Redis keeps its source");
    }

    #[test]
    fn old_servers_are_refused_clearly() {
        let e = parse_server_info("# Server\r\nredis_version:6.2.6\r\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported server redis 6.2.6: millrace needs Redis 7.0 or later (or a compatible server)"
        );
        let ok = parse_server_info("redis_version:7.0.15\r\ncluster_enabled:1\r\n").unwrap();
        assert!(ok.cluster);
        let valkey = parse_server_info("redis_version:7.2.4\r\nvalkey_version:8.0.1\r\n").unwrap();
        assert_eq!(valkey.server, "valkey");
        assert!(parse_server_info("nothing").is_err());
    }

    #[test]
    fn cluster_masters_are_read_from_cluster_slots() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let node =
            |host: &str, port: i64| Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]);
        let range = |start: i64, end: i64, nodes: Vec<Value>| {
            let mut parts = vec![Value::Int(start), Value::Int(end)];
            parts.extend(nodes);
            Value::Array(parts)
        };
        let slots = vec![
            range(0, 99, vec![node("10.0.0.1", 6379), node("10.0.0.9", 6379)]),
            range(100, 199, vec![node("10.0.0.2", 6380)]),
            range(200, 299, vec![node("10.0.0.1", 6379)]),
            range(300, 399, vec![node("?", 6381)]),
            range(400, 499, vec![node("", 6382)]),
            Value::Int(7),
        ];
        assert_eq!(
            cluster_masters(&slots),
            vec![
                ("10.0.0.1".to_string(), 6379),
                ("10.0.0.2".to_string(), 6380)
            ]
        );
    }

    #[test]
    fn hello_stands_in_for_info() {
        let hello = |pairs: &[(&str, &str)]| -> HashMap<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::BulkString(v.as_bytes().to_vec())))
                .collect()
        };
        let single = parse_hello(&hello(&[
            ("server", "redis"),
            ("version", "7.0.15"),
            ("mode", "standalone"),
        ]))
        .unwrap();
        assert_eq!((single.server.as_str(), single.cluster), ("redis", false));
        let cluster = parse_hello(&hello(&[
            ("server", "valkey"),
            ("version", "8.0.1"),
            ("mode", "cluster"),
        ]))
        .unwrap();
        assert!(cluster.cluster);
        let old = parse_hello(&hello(&[("server", "redis"), ("version", "6.2.6")])).unwrap_err();
        assert!(matches!(old, Error::UnsupportedServer { .. }), "{old}");
        assert!(parse_hello(&HashMap::new()).is_err());
    }
}
