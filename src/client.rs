//! The [`Client`]: one handle on Redis for topics, publishing and reading.
//!
//! It owns the connections ([`crate::conn`]), the key space, the script
//! registry and a cache of topic settings. Cheap to clone; clones share all of
//! it. Topic operations live in [`crate::topic`], publishing in
//! [`crate::producer`], reading in [`crate::reader`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use redis::{Cmd, Value};

use crate::config::Config;
use crate::conn::{self, BlockingConn, BlockingPool, Conn, ServerInfo};
use crate::duration::Doubling;
use crate::error::Result;
use crate::keys::KeySpace;
use crate::producer::{Producer, ProducerConfig};
use crate::scripts::Scripts;
use crate::store::Store;
use crate::topic::TopicSpec;

/// A connected millrace client.
///
/// ```no_run
/// # async fn run() -> millrace::Result<()> {
/// let client = millrace::Client::connect(millrace::Config::new("redis://127.0.0.1:6379")?).await?;
/// client.create_topic(&millrace::TopicSpec::new("erp.v1.invoice.created", 8)?).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: Config,
    pub conn: Conn,
    pub pool: BlockingPool,
    pub keys: KeySpace,
    pub scripts: Arc<Scripts>,
    pub info: ServerInfo,
    pub topics: Mutex<HashMap<String, Arc<TopicSpec>>>,
    pub producer: OnceLock<Producer>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .field("server", &self.inner.info)
            .finish()
    }
}

impl Client {
    /// Connects, checks that the server is Redis 7.0+ (or compatible),
    /// detects a cluster and preloads the scripts.
    pub async fn connect(config: Config) -> Result<Client> {
        let conn::Connected {
            mut conn,
            pool,
            info,
        } = conn::connect(&config).await?;
        let scripts = Arc::new(Scripts::new());
        conn::load_scripts(&scripts, &mut conn).await?;
        tracing::debug!(server = %info.server, version = %info.version, cluster = info.cluster, "connected");
        Ok(Client {
            inner: Arc::new(Inner {
                keys: KeySpace::new(config.prefix.clone()),
                config,
                conn,
                pool,
                scripts,
                info,
                topics: Mutex::new(HashMap::new()),
                producer: OnceLock::new(),
            }),
        })
    }

    /// Connects to one URL with the default settings.
    pub async fn open(url: &str) -> Result<Client> {
        Client::connect(Config::new(url)?).await
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// What the server reported on connect.
    pub fn server_info(&self) -> &ServerInfo {
        &self.inner.info
    }

    /// The key space (prefix and key builders).
    pub fn keys(&self) -> &KeySpace {
        &self.inner.keys
    }

    /// A clone of the multiplexed connection, for commands of your own.
    pub fn connection(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// A dedicated connection for blocking reads.
    pub async fn blocking_connection(&self) -> Result<BlockingConn> {
        self.inner.pool.get().await
    }

    /// The client's shared producer (auto-batching, default settings),
    /// started on first use.
    pub fn producer(&self) -> &Producer {
        self.inner
            .producer
            .get_or_init(|| Producer::start(self.clone(), ProducerConfig::default()))
    }

    /// A new producer with its own batching settings.
    pub fn producer_with(&self, config: ProducerConfig) -> Producer {
        Producer::start(self.clone(), config)
    }

    /// Runs groups of commands; each group must stay within one slot.
    /// On a single server everything goes in one pipeline; on a cluster each
    /// group is its own pipeline, all in flight at once. Returns each
    /// command's reply or server error, in order.
    pub(crate) async fn query_grouped(&self, groups: Vec<Vec<Cmd>>) -> Result<Vec<Vec<Value>>> {
        self.store().query_grouped(groups).await
    }

    /// The store: typed atomic steps on this client's connection, scripts
    /// and key space.
    pub(crate) fn store(&self) -> Store<'_> {
        Store::new(self.connection(), &self.inner.scripts, &self.inner.keys)
    }

    /// Redis's clock in milliseconds (`TIME`).
    pub async fn redis_time_ms(&self) -> Result<u64> {
        let (secs, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut self.connection())
            .await?;
        Ok(secs * 1000 + micros / 1000)
    }
}

pub(crate) use crate::error::check;

/// Runs an idempotent Redis step (a read, releasing a lease, leaving a
/// group) again while its failure is one that passes: after a restart or a
/// cut, the multiplexed connection fails its next command while it
/// reconnects. Up to five tries, 0.75 s of waiting in all; then the error
/// stands.
pub(crate) async fn idempotent<T, F, Fut>(mut step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Doubling::new(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_millis(400),
    );
    for _ in 0..4 {
        match step().await {
            Err(e) if e.is_retryable() => {
                tracing::debug!(error = %e, "idempotent step failed; trying again");
                tokio::time::sleep(delay.next_wait()).await;
            }
            other => return other,
        }
    }
    step().await
}
