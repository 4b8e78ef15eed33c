//! The dedicated read connection on a plain-TCP single server: one socket,
//! requests written whole, replies decoded by [`crate::store::resp`]. Used by the
//! blocking pool for fetches, waits and fenced reads (one request at a time
//! per connection, which is all a read loop needs), where redis-rs's reply
//! parser was most of a consumer's client CPU. TLS, Unix sockets and
//! clusters keep redis-rs's connections.
//!
//! A connection that fails, times out, or whose request is dropped midway
//! is broken for good: a reply could still be on its way, and the next
//! request must not read it. The pool's recycle check then discards it.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisError, RedisFuture, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::store::resp;

/// A plain-TCP connection speaking RESP2.
pub struct DirectConn {
    stream: TcpStream,
    /// Received bytes not decoded yet start at `start`.
    buf: Vec<u8>,
    start: usize,
    response_timeout: Duration,
    db: i64,
    /// Set while a request is under way and left set if it fails or is
    /// dropped.
    broken: bool,
}

fn io_error(kind: std::io::ErrorKind, what: &str) -> RedisError {
    RedisError::from(std::io::Error::new(kind, what.to_string()))
}

impl DirectConn {
    /// Whether `info` names a server this connection can reach (plain TCP).
    pub fn supports(info: &ConnectionInfo) -> bool {
        matches!(info.addr(), ConnectionAddr::Tcp(..))
    }

    /// Connects, logs in and selects the database of `info`.
    pub async fn connect(
        info: &ConnectionInfo,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<DirectConn, RedisError> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(io_error(
                std::io::ErrorKind::Unsupported,
                "direct connections are plain TCP only",
            ));
        };
        let stream =
            tokio::time::timeout(connect_timeout, TcpStream::connect((host.as_str(), *port)))
                .await
                .map_err(|_| io_error(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let settings = info.redis_settings();
        let mut conn = DirectConn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            response_timeout,
            db: settings.db(),
            broken: false,
        };
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
            conn.one(&auth).await?;
        }
        if settings.db() != 0 {
            conn.one(redis::cmd("SELECT").arg(settings.db())).await?;
        }
        Ok(conn)
    }

    /// Sends `cmd` and returns its reply; an error reply is an error.
    async fn one(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        let mut v = self.request(&cmd.get_packed_command(), 0, 1).await?;
        match v.pop() {
            Some(Value::ServerError(e)) => Err(e.into()),
            Some(v) => Ok(v),
            None => Err(io_error(std::io::ErrorKind::InvalidData, "no reply")),
        }
    }

    /// Writes `packed` (commands whose replies are `skip + count`) and
    /// returns the last `count` replies.
    async fn request(
        &mut self,
        packed: &[u8],
        skip: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        if self.broken {
            return Err(io_error(
                std::io::ErrorKind::BrokenPipe,
                "connection broken by an earlier failed request",
            ));
        }
        self.broken = true;
        let timeout = self.response_timeout;
        let replies = tokio::time::timeout(timeout, self.exchange(packed, skip, count))
            .await
            .map_err(|_| io_error(std::io::ErrorKind::TimedOut, "response timed out"))??;
        self.broken = false;
        Ok(replies)
    }

    async fn exchange(
        &mut self,
        packed: &[u8],
        skip: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        self.stream.write_all(packed).await?;
        let mut out = Vec::with_capacity(count);
        let mut seen = 0;
        while seen < skip + count {
            let decoded = resp::decode(&self.buf[self.start..])
                .map_err(|e| io_error(std::io::ErrorKind::InvalidData, &e.0))?;
            match decoded {
                Some((v, used)) => {
                    self.start += used;
                    if seen >= skip {
                        out.push(v);
                    }
                    seen += 1;
                }
                None => self.fill().await?,
            }
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(out)
    }

    /// Reads more bytes, first moving the undecoded rest to the front.
    async fn fill(&mut self) -> Result<(), RedisError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(64 * 1024);
        match self.stream.read_buf(&mut self.buf).await? {
            0 => Err(io_error(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )),
            _ => Ok(()),
        }
    }

    /// Whether the connection still answers `PING` (the pool's recycle
    /// check).
    pub async fn ping(&mut self) -> Result<(), RedisError> {
        // UNWATCH first: a connection given back mid-watch must not carry
        // its WATCH to the next taker.
        let mut pipe = redis::pipe();
        pipe.cmd("UNWATCH").cmd("PING");
        let v = self.request(&pipe.get_packed_pipeline(), 1, 1).await?;
        match v.first() {
            Some(Value::SimpleString(s)) if s == "PONG" => Ok(()),
            other => Err(io_error(
                std::io::ErrorKind::InvalidData,
                &format!("unexpected PING reply {other:?}"),
            )),
        }
    }
}

impl ConnectionLike for DirectConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut v = self.request(&cmd.get_packed_command(), 0, 1).await?;
            v.pop()
                .ok_or_else(|| io_error(std::io::ErrorKind::InvalidData, "no reply"))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.request(&pipeline.get_packed_pipeline(), offset, count)
                .await
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

/// Makes [`DirectConn`]s for the blocking pool.
pub struct DirectManager {
    pub(crate) info: ConnectionInfo,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
}

impl deadpool::managed::Manager for DirectManager {
    type Type = DirectConn;
    type Error = RedisError;

    async fn create(&self) -> Result<DirectConn, RedisError> {
        DirectConn::connect(&self.info, self.connect_timeout, self.response_timeout).await
    }

    async fn recycle(
        &self,
        conn: &mut DirectConn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<RedisError> {
        conn.ping().await?;
        Ok(())
    }
}
