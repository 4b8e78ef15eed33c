//! The backend: one connected Redis (single server or cluster) with what
//! every step needs to talk to it — the multiplexed connection, the pool of
//! blocking connections, the key space, the loaded scripts and what the
//! server reported on connect. Cheap to clone; clones share all of it.

use std::sync::Arc;

use redis::{Cmd, Value};

use super::Store;
use crate::config::Config;
use crate::error::Result;
use crate::store::conn::{self, BlockingConn, BlockingPool, Conn, ServerInfo};
use crate::store::keys::KeySpace;
use crate::store::scripts::Scripts;
use crate::store::sentinel::Subscriber;

/// A connected Redis and the means to run millrace's steps on it.
#[derive(Clone)]
pub(crate) struct Backend {
    parts: Arc<Parts>,
}

struct Parts {
    config: Config,
    conn: Conn,
    pool: BlockingPool,
    keys: KeySpace,
    scripts: Scripts,
    info: ServerInfo,
    subscriber: Subscriber,
}

impl Backend {
    /// Connects, checks the server and preloads the scripts.
    pub(crate) async fn connect(config: Config) -> Result<Backend> {
        let conn::Connected {
            mut conn,
            pool,
            info,
            subscriber,
        } = conn::connect(&config).await?;
        let scripts = Scripts::new();
        conn::load_scripts(&scripts, &mut conn).await?;
        tracing::debug!(server = %info.server, version = %info.version, cluster = info.cluster, "connected");
        Ok(Backend {
            parts: Arc::new(Parts {
                keys: KeySpace::new(config.prefix.clone()),
                config,
                conn,
                pool,
                scripts,
                info,
                subscriber,
            }),
        })
    }

    /// The configuration connected with.
    pub(crate) fn config(&self) -> &Config {
        &self.parts.config
    }

    /// What the server reported on connect.
    pub(crate) fn info(&self) -> &ServerInfo {
        &self.parts.info
    }

    /// The key space (prefix and key builders).
    pub(crate) fn keys(&self) -> &KeySpace {
        &self.parts.keys
    }

    /// The script registry.
    pub(crate) fn scripts(&self) -> &Scripts {
        &self.parts.scripts
    }

    /// A new Pub/Sub connection subscribed to `channel`, split into the
    /// side that sends (pings) and the stream of messages.
    pub(crate) async fn subscribe(
        &self,
        channel: &str,
    ) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
        let (generation, client) = self.parts.subscriber.client().await?;
        let connect = client.get_async_pubsub();
        let connected = tokio::time::timeout(self.parts.config.connect_timeout, connect)
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting for replies timed out",
                )))
            });
        let mut pubsub = connected.inspect_err(|e| self.parts.subscriber.failed(generation, e))?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub.split())
    }

    /// A clone of the multiplexed connection.
    pub(crate) fn connection(&self) -> Conn {
        self.parts.conn.clone()
    }

    /// Whether this is a cluster (each partition's commands go to its own
    /// slot; scripts stand in for `WATCH`), without cloning the connection.
    pub(crate) fn is_cluster(&self) -> bool {
        self.parts.conn.is_cluster()
    }

    /// The pool of dedicated connections for blocking reads.
    pub(crate) fn pool(&self) -> &BlockingPool {
        &self.parts.pool
    }

    /// A dedicated connection for a blocking read.
    pub(crate) async fn blocking_connection(&self) -> Result<BlockingConn> {
        self.parts.pool.get().await
    }

    /// The typed atomic steps, on this backend's connection.
    pub(crate) fn store(&self) -> Store<'_> {
        Store::new(self.connection(), &self.parts.scripts, &self.parts.keys)
    }

    /// Runs groups of commands, each within one slot (see
    /// [`Store::query_grouped`]).
    pub(crate) async fn query_grouped(&self, groups: Vec<Vec<Cmd>>) -> Result<Vec<Vec<Value>>> {
        self.store().query_grouped(groups).await
    }

    /// Redis's clock in milliseconds (`TIME`).
    pub(crate) async fn redis_time_ms(&self) -> Result<u64> {
        let (secs, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut self.connection())
            .await?;
        Ok(secs * 1000 + micros / 1000)
    }
}
