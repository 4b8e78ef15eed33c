//! Redis's own limits in the same run: plain TCP connections (4, as the
//! redis-rs ceilings have pipelines in flight) stream pre-built commands as
//! fast as Redis answers (at most 1 000 outstanding each), and the replies
//! are only counted, never decoded into values. What millrace (or the redis-rs ceilings) reach is then a share
//! of what the server itself can do.
//!
//! - `limit.xadd`: `XADD key * k "" h "" d <payload>` round-robin over the
//!   partitions' keys.
//! - `limit.read_ack`: the streams filled beforehand with known ids
//!   (`1-1`, `1-2`, ...), then `XREADGROUP COUNT 100` and the `XACK` of the
//!   hundred ids it delivers, per key in turn, each key on one connection
//!   (Redis runs one connection's commands in order, so each `XACK` names
//!   exactly what the read before it delivered).
//!
//! Only on one server over plain TCP (not TLS, a cluster or Sentinel): the
//! scenarios say so and are left out elsewhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::cpu::Meter;
use super::{BenchOptions, xadd_entry};
use crate::client::Client;
use crate::error::{Error, Result};

/// Connections streaming at once.
const CONNECTIONS: usize = 4;
/// Commands in flight per connection at most (written, reply not yet
/// counted): with [`CONNECTIONS`], as many as the redis-rs `XADD` ceiling
/// has (4 pipelines of 1 000).
const WINDOW: usize = 1000;

/// Where the limits can run: the server's plain TCP address and login, or
/// why not.
pub(crate) fn target(client: &Client) -> std::result::Result<ConnectionInfo, String> {
    let urls = &client.config().urls;
    if client.server_info().cluster || urls.len() != 1 {
        return Err("a cluster (the limits use one server)".into());
    }
    let info = urls[0]
        .as_str()
        .into_connection_info()
        .map_err(|_| "not a plain redis:// URL (Sentinel?)".to_string())?;
    match info.addr() {
        ConnectionAddr::Tcp(..) => Ok(info),
        _ => Err("not plain TCP (TLS or a socket)".into()),
    }
}

/// The length of the first complete RESP2 reply in `buf` and whether it is
/// an error reply; `None` while incomplete. Pure, for the reply counter.
pub(crate) fn reply_len(buf: &[u8]) -> std::result::Result<Option<(usize, bool)>, String> {
    fn line(buf: &[u8], from: usize) -> Option<usize> {
        buf.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| from + i)
    }
    fn number(buf: &[u8], from: usize, end: usize) -> std::result::Result<i64, String> {
        std::str::from_utf8(&buf[from..end])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "a malformed length".to_string())
    }
    fn one(buf: &[u8], at: usize) -> std::result::Result<Option<usize>, String> {
        let Some(&kind) = buf.get(at) else {
            return Ok(None);
        };
        let Some(end) = line(buf, at + 1) else {
            return Ok(None);
        };
        let next = end + 2;
        match kind {
            b'+' | b'-' | b':' => Ok(Some(next)),
            b'$' => {
                let n = number(buf, at + 1, end)?;
                if n < 0 {
                    return Ok(Some(next));
                }
                let stop = next + n as usize + 2;
                Ok((buf.len() >= stop).then_some(stop))
            }
            b'*' => {
                let n = number(buf, at + 1, end)?;
                let mut pos = next;
                for _ in 0..n.max(0) {
                    match one(buf, pos)? {
                        Some(p) => pos = p,
                        None => return Ok(None),
                    }
                }
                Ok(Some(pos))
            }
            other => Err(format!("an unexpected reply type {:?}", other as char)),
        }
    }
    Ok(one(buf, 0)?.map(|len| (len, buf.first() == Some(&b'-'))))
}

fn io(e: std::io::Error) -> Error {
    Error::from(redis::RedisError::from(e))
}

/// Connects and logs in as `info` says.
async fn connect(info: &ConnectionInfo) -> Result<TcpStream> {
    let ConnectionAddr::Tcp(host, port) = info.addr() else {
        return Err(Error::Config("the limits need plain TCP".into()));
    };
    let mut stream = TcpStream::connect((host.as_str(), *port))
        .await
        .map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let settings = info.redis_settings();
    let mut hello = Vec::new();
    let mut replies = 0;
    if let Some(password) = settings.password() {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = settings.username() {
            auth.arg(user);
        }
        hello.extend(auth.arg(password).get_packed_command());
        replies += 1;
    }
    if settings.db() != 0 {
        hello.extend(redis::cmd("SELECT").arg(settings.db()).get_packed_command());
        replies += 1;
    }
    if replies > 0 {
        stream.write_all(&hello).await.map_err(io)?;
        let mut buf = Vec::new();
        let mut seen = 0;
        while seen < replies {
            let mut chunk = [0u8; 512];
            let got = stream.read(&mut chunk).await.map_err(io)?;
            if got == 0 {
                return Err(Error::Decode("the server closed the connection".into()));
            }
            buf.extend_from_slice(&chunk[..got]);
            while let Some((len, failed)) = reply_len(&buf).map_err(Error::Decode)? {
                if failed {
                    return Err(Error::Decode(String::from_utf8_lossy(&buf[..len]).into()));
                }
                buf.drain(..len);
                seen += 1;
            }
        }
    }
    Ok(stream)
}

/// Streams `commands` (each packed, with the number of replies it gets) on
/// one connection, at most [`WINDOW`] replies outstanding; the time from
/// the first write to the last reply. Any error reply fails the run.
async fn stream_commands(
    info: &ConnectionInfo,
    commands: Vec<(Vec<u8>, usize)>,
) -> Result<Duration> {
    let expected: usize = commands.iter().map(|(_, r)| r).sum();
    let (mut rd, mut wr) = connect(info).await?.into_split();
    let window = Arc::new(Semaphore::new(WINDOW));
    let started = Instant::now();
    let writer = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut out = Vec::with_capacity(64 * 1024);
            for (cmd, replies) in commands {
                let permit = window
                    .acquire_many(replies as u32)
                    .await
                    .map_err(|_| "the reader stopped".to_string())?;
                permit.forget();
                out.extend_from_slice(&cmd);
                if out.len() >= 16 * 1024 || window.available_permits() == 0 {
                    wr.write_all(&out).await.map_err(|e| e.to_string())?;
                    out.clear();
                }
            }
            wr.write_all(&out).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(wr)
        })
    };
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut counted = 0;
    while counted < expected {
        let got = rd.read(&mut chunk).await.map_err(io)?;
        if got == 0 {
            return Err(Error::Decode("the server closed the connection".into()));
        }
        buf.extend_from_slice(&chunk[..got]);
        let mut at = 0;
        while let Some((len, failed)) = reply_len(&buf[at..]).map_err(Error::Decode)? {
            if failed {
                let text = String::from_utf8_lossy(&buf[at..at + len]).into_owned();
                return Err(Error::Decode(format!("limit run: {}", text.trim())));
            }
            at += len;
            counted += 1;
            window.add_permits(1);
        }
        buf.drain(..at);
    }
    let elapsed = started.elapsed();
    writer
        .await
        .map_err(|_| Error::ProducerClosed)?
        .map_err(Error::Decode)?;
    Ok(elapsed)
}

/// [`stream_commands`] on [`CONNECTIONS`] connections at once, each
/// `(connection, command, replies)` on its connection; the slowest one's
/// time.
async fn stream_parallel(
    info: &ConnectionInfo,
    commands: Vec<(usize, Vec<u8>, usize)>,
) -> Result<Duration> {
    let mut parts: Vec<Vec<(Vec<u8>, usize)>> = vec![Vec::new(); CONNECTIONS];
    for (conn, cmd, replies) in commands {
        parts[conn % CONNECTIONS].push((cmd, replies));
    }
    let runs = parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| stream_commands(info, p));
    let times = futures_util::future::try_join_all(runs).await?;
    Ok(times.into_iter().max().unwrap_or_default())
}

fn keys(client: &Client, o: &BenchOptions, what: &str) -> Vec<String> {
    (0..o.partitions.max(1))
        .map(|p| format!("{}:bench-limit-{what}:{{l:{p}}}", client.keys().prefix()))
        .collect()
}

async fn delete(client: &Client, keys: &[String]) -> Result<()> {
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut client.connection())
        .await?;
    Ok(())
}

/// `limit.xadd`: `o.n` `XADD`s streamed on the four connections.
pub(crate) async fn xadd(
    client: &Client,
    info: &ConnectionInfo,
    o: &BenchOptions,
    payload: &[u8],
    m: &Meter,
) -> Result<f64> {
    let keys = keys(client, o, "xadd");
    delete(client, &keys).await?;
    let commands: Vec<(usize, Vec<u8>, usize)> = (0..o.n)
        .map(|i| {
            let cmd = xadd_entry(&keys[i % keys.len()], "*", payload).get_packed_command();
            (i % keys.len(), cmd, 1)
        })
        .collect();
    m.start(client).await?;
    let elapsed = stream_parallel(info, commands).await?;
    m.stop(client, o.n).await?;
    delete(client, &keys).await?;
    Ok(o.n as f64 / elapsed.as_secs_f64().max(1e-9))
}

/// `limit.read_ack`: `o.n` entries with known ids read 100 at a time and
/// acknowledged, streamed on the four connections (each key on one).
pub(crate) async fn read_ack(
    client: &Client,
    info: &ConnectionInfo,
    o: &BenchOptions,
    payload: &[u8],
    m: &Meter,
) -> Result<f64> {
    const BATCH: usize = 100;
    let keys = keys(client, o, "read");
    delete(client, &keys).await?;
    let per_key = o.n.div_ceil(keys.len()).div_ceil(BATCH) * BATCH;
    let mut conn = client.connection();
    for k in &keys {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(k)
            .arg("limit")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await?;
        for chunk in 0..per_key.div_ceil(1000) {
            let mut pipe = redis::pipe();
            for i in chunk * 1000..((chunk + 1) * 1000).min(per_key) {
                pipe.add_command(xadd_entry(k, &format!("1-{}", i + 1), payload))
                    .ignore();
            }
            let _: () = pipe.query_async(&mut conn).await?;
        }
    }
    let mut commands = Vec::with_capacity(2 * per_key / BATCH * keys.len());
    for b in 0..per_key / BATCH {
        for (on, k) in keys.iter().enumerate() {
            let read = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("limit")
                .arg("c")
                .arg("COUNT")
                .arg(BATCH)
                .arg("STREAMS")
                .arg(k)
                .arg(">")
                .get_packed_command();
            let mut ack = redis::cmd("XACK");
            ack.arg(k).arg("limit");
            for i in b * BATCH..(b + 1) * BATCH {
                ack.arg(format!("1-{}", i + 1));
            }
            commands.push((on, read, 1));
            commands.push((on, ack.get_packed_command(), 1));
        }
    }
    let total = per_key * keys.len();
    m.start(client).await?;
    let elapsed = stream_parallel(info, commands).await?;
    m.stop(client, total).await?;
    delete(client, &keys).await?;
    Ok(total as f64 / elapsed.as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::reply_len;

    #[test]
    fn reply_lengths_cover_every_resp2_type_and_wait_for_the_rest() {
        assert_eq!(reply_len(b"+OK\r\n"), Ok(Some((5, false))));
        assert_eq!(reply_len(b"-ERR no\r\n+OK\r\n"), Ok(Some((9, true))));
        assert_eq!(reply_len(b":42\r\n"), Ok(Some((5, false))));
        assert_eq!(reply_len(b"$3\r\nabc\r\n"), Ok(Some((9, false))));
        assert_eq!(reply_len(b"$-1\r\n"), Ok(Some((5, false))));
        assert_eq!(reply_len(b"*-1\r\n"), Ok(Some((5, false))));
        let nested = b"*2\r\n*2\r\n$3\r\n1-1\r\n*0\r\n:7\r\n";
        assert_eq!(reply_len(nested), Ok(Some((nested.len(), false))));
        // Incomplete at every cut: nothing counted yet.
        for cut in 0..nested.len() {
            assert_eq!(reply_len(&nested[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(reply_len(b"$3\r\nab"), Ok(None));
        assert!(reply_len(b"?x\r\n").is_err());
        assert!(reply_len(b"$x\r\n").is_err());
    }
}
