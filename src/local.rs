//! A private `redis-server` for demos, examples and benchmarks: started from
//! `PATH` (or the binary named by `MILLRACE_REDIS_SERVER`) on a free loopback
//! port in a temporary directory, with nothing persisted, and stopped when
//! dropped.
//!
//! This is how `millrace demo` and `millrace bench` run on a machine with no
//! Redis set up; it never touches a Redis it did not start.
//!
//! Only with the hidden feature `tools` (which `cli` turns on): not part of
//! the library's API.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A `redis-server` child process, killed on drop, and on Linux also when the
/// thread that started it ends (`PR_SET_PDEATHSIG`), so a killed demo or
/// benchmark leaves no server behind. Start it from a long-lived thread
/// (such as the one running `main`). Elsewhere a process killed outright
/// leaves its server running.
#[derive(Debug)]
pub struct PrivateRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// The environment variable naming the server binary to start instead of
/// `redis-server` from `PATH`: a `redis-server` or `valkey-server` of any
/// supported version (docs/compatibility.md).
pub const SERVER_ENV: &str = "MILLRACE_REDIS_SERVER";

/// Finds the server binary: the file named by `MILLRACE_REDIS_SERVER` when
/// that is set and not empty (`None` when it names no file), else
/// `redis-server` on `PATH`.
pub fn find_redis_server() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os(SERVER_ENV).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

impl PrivateRedis {
    /// Starts a server and waits until it accepts connections (up to 10 s).
    pub fn start() -> Result<PrivateRedis> {
        Self::start_with(&[])
    }

    /// A private server replicating from the one on loopback `port`
    /// (`--replicaof 127.0.0.1 port`), e.g. for replica acknowledgements.
    pub fn start_replica_of(port: u16) -> Result<PrivateRedis> {
        Self::start_with(&["--replicaof", "127.0.0.1", &port.to_string()])
    }

    /// [`PrivateRedis::start`] with extra server arguments.
    pub fn start_with(extra: &[&str]) -> Result<PrivateRedis> {
        let bin = find_redis_server().ok_or_else(|| match std::env::var_os(SERVER_ENV) {
            Some(named) if !named.is_empty() => Error::Config(format!(
                "{SERVER_ENV}={} is not a file; point it at a redis-server or valkey-server \
                 binary, or unset it to use redis-server from PATH",
                PathBuf::from(named).display()
            )),
            _ => Error::Config(
                "redis-server not found on PATH; install it (Debian/Ubuntu: apt-get install \
                 redis-server, macOS: brew install redis), set MILLRACE_REDIS_SERVER to its \
                 path, or pass --redis URL"
                    .into(),
            ),
        })?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::Config(format!("no free loopback port: {e}")))?;
        let dir =
            std::env::temp_dir().join(format!("millrace-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
        let log = std::fs::File::create(dir.join("redis.log"))
            .map_err(|e| Error::Config(format!("cannot create log: {e}")))?;
        let mut cmd = Command::new(&bin);
        die_with_parent(&mut cmd);
        let child = cmd
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Config(format!("cannot start {}: {e}", bin.display())))?;
        let mut server = PrivateRedis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(server.dir.join("redis.log")).unwrap_or_default();
                return Err(Error::Config(format!(
                    "redis-server exited ({status}) before accepting connections: {}",
                    log.lines().last().unwrap_or("")
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(Duration::from_secs(10)));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Redis in `MILLRACE_REDIS_URL` when it is set, else a private
    /// server started here (kept alive by the returned handle): what the
    /// examples run on.
    pub fn from_env_or_start() -> Result<(Option<PrivateRedis>, String)> {
        match std::env::var("MILLRACE_REDIS_URL") {
            Ok(url) if !url.is_empty() => Ok((None, url)),
            _ => {
                let server = PrivateRedis::start()?;
                let url = server.url();
                Ok((Some(server), url))
            }
        }
    }
}

/// Slots in a Redis Cluster.
const SLOTS: u32 = 16_384;

/// `primaries` private servers made into a Redis Cluster of primaries only,
/// the slots split into equal ranges in port order: for benchmarks (a
/// local cluster's per-shard cost). Stopped when dropped.
#[derive(Debug)]
pub struct PrivateCluster {
    nodes: Vec<PrivateRedis>,
}

impl PrivateCluster {
    /// Starts the servers, assigns the slots, introduces the nodes and
    /// waits (up to 30 s) until every node says the cluster is ok.
    pub fn start(primaries: usize) -> Result<PrivateCluster> {
        let primaries = primaries.max(1);
        let mut nodes = Vec::with_capacity(primaries);
        for _ in 0..primaries {
            nodes.push(PrivateRedis::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])?);
        }
        let cluster = PrivateCluster { nodes };
        let n = primaries as u32;
        for (i, node) in cluster.nodes.iter().enumerate() {
            let i = i as u32;
            let (first, last) = (i * SLOTS / n, (i + 1) * SLOTS / n - 1);
            let mut conn = node.sync_connection()?;
            redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .exec(&mut conn)?;
            if i > 0 {
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(cluster.nodes[0].port)
                    .exec(&mut conn)?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &cluster.nodes {
            let mut conn = node.sync_connection()?;
            loop {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn)?;
                let ok = info.lines().any(|l| l.trim() == "cluster_state:ok")
                    && info
                        .lines()
                        .any(|l| l.trim() == format!("cluster_known_nodes:{primaries}"));
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Timeout(Duration::from_secs(30)));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    /// The nodes' URLs, in slot order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateRedis::url).collect()
    }
}

impl PrivateRedis {
    fn sync_connection(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.url())?.get_connection()?)
    }
}

/// Has the server killed when the thread that starts it ends (Linux
/// `PR_SET_PDEATHSIG`), even when the process is killed and cannot drop the
/// [`PrivateRedis`].
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl in the forked child before exec only sets a signal for
    // it (it is async-signal-safe and touches no memory of the parent).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Elsewhere there is no parent-death signal: the server stops when the
/// [`PrivateRedis`] is dropped (a normal end, an error, a panic that
/// unwinds) but outlives a process killed by a signal it does not handle;
/// stop it by hand then (its directory under the temp dir is named
/// `millrace-redis-PID-PORT`).
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
