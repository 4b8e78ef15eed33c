//! Test harness: private `redis-server` processes for integration tests.
//!
//! Use from an integration test with `mod support;`.
//!
//! * [`RedisServer`] — an owned server on a free loopback port, killed on drop;
//!   can be stopped and restarted on the same port. [`RedisServer::start_tls`]
//!   starts one that speaks only TLS, with certificates from [`tls::Pki`].
//! * [`shared`] — one server per test binary, started lazily; isolate tests
//!   with [`unique_prefix`].
//! * [`RedisCluster`] / [`shared_cluster`] — a three-master Redis Cluster;
//!   [`RedisCluster::start_tls`] starts one that speaks only TLS.
//! * [`wait_until`] — poll an async condition with a deadline instead of sleeping.
//!
//! Every child process is forked from one dedicated thread that never exits
//! and gets `PR_SET_PDEATHSIG = SIGKILL`, so no `redis-server` outlives the
//! test process, even for the never-dropped shared servers.
//!
//! Tests never use a Redis they did not start.
#![allow(dead_code)]

pub mod groups;
pub mod prom;
pub mod sentinel;
pub mod serve;
pub mod tls;

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to answer `PING` after being spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new cluster may take to report `cluster_state:ok` on every node.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval for readiness checks.
const POLL: Duration = Duration::from_millis(10);
/// Cluster ports must leave room for the cluster bus port (`port + 10000`).
const MAX_CLUSTER_PORT: u16 = 55000;
const CLUSTER_BUS_OFFSET: u16 = 10000;

// ---------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The binary named by the environment variable `var` (a path, checked to
/// be an executable file), or else `name` found on `PATH`.
fn find_bin(var: &str, name: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            use std::os::unix::fs::PermissionsExt;
            let ok = fs::metadata(&path)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            assert!(
                ok,
                "{var}={} is not an executable file: point it at a redis-server / \
                 valkey-server (or redis-cli / valkey-cli) binary, or unset it to use PATH",
                path.display()
            );
            Some(path)
        }
        _ => find_on_path(name),
    }
}

/// Path of `redis-server` (`MILLRACE_REDIS_SERVER` when set, else from
/// `PATH`), or a panic explaining how to install it.
pub fn redis_server_bin() -> PathBuf {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| find_bin("MILLRACE_REDIS_SERVER", "redis-server"))
        .clone()
        .unwrap_or_else(|| {
            panic!(
                "redis-server not found on PATH: install it (Debian: apt-get install redis-server) \
                 or set MILLRACE_REDIS_SERVER — tests never use a shared Redis"
            )
        })
}

/// Path of `redis-cli` (needed to create a cluster; `MILLRACE_REDIS_CLI`
/// when set, else from `PATH`), or a panic explaining how to install it.
pub fn redis_cli_bin() -> PathBuf {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| find_bin("MILLRACE_REDIS_CLI", "redis-cli"))
        .clone()
        .unwrap_or_else(|| {
            panic!(
                "redis-cli not found on PATH: install it (Debian: apt-get install redis-tools) \
                 or set MILLRACE_REDIS_CLI — tests never use a shared Redis"
            )
        })
}

/// What the server binary calls itself and its version, from
/// `redis-server --version` ("Redis server v=7.0.15 ...", "Valkey server
/// v=9.1.2 ..."): `("redis", "7.0.15")`, `("valkey", "9.1.2")` — the words
/// the library's `ServerInfo` uses.
pub fn server_kind_and_version() -> (String, String) {
    static KIND: OnceLock<(String, String)> = OnceLock::new();
    KIND.get_or_init(|| {
        let bin = redis_server_bin();
        let out = Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", bin.display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let kind = text
            .split_whitespace()
            .next()
            .map(str::to_lowercase)
            .unwrap_or_default();
        let version = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no version in `{} --version`: {text}", bin.display()));
        (kind, version)
    })
    .clone()
}

// ---------------------------------------------------------------------------
// Child processes tied to the lifetime of the test process
// ---------------------------------------------------------------------------

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that it is SIGKILLed when the test process dies.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
/// not the process. Test threads come and go (and `shared()` may first be
/// called from any of them), so every fork happens on one dedicated thread
/// that lives as long as the process. `Child` handles work from any thread.
fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("redis-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop never ends...
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // ...and if it somehow did, this thread must still not exit.
                loop {
                    thread::park();
                }
            })
            .expect("failed to start the redis-spawner thread");
        tx
    });

    let parent_pid = std::process::id();
    // SAFETY: the closure runs between fork and exec; prctl, getppid and
    // _exit are async-signal-safe and nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The test process died before prctl took effect: don't linger.
            if libc::getppid() as u32 != parent_pid {
                libc::_exit(1);
            }
            Ok(())
        });
    }

    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .expect("redis-spawner thread is gone");
    reply_rx
        .recv()
        .expect("redis-spawner thread dropped a request")
}

/// Directories of never-dropped (shared) servers, removed when the process exits.
fn remove_at_exit(dir: &Path) {
    static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static REGISTERED: OnceLock<()> = OnceLock::new();

    extern "C" fn cleanup() {
        if let Ok(dirs) = DIRS.lock() {
            for dir in dirs.iter() {
                let _ = fs::remove_dir_all(dir);
            }
        }
    }

    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.to_path_buf());
    REGISTERED.get_or_init(|| {
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe {
            libc::atexit(cleanup);
        }
    });
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// Ports handed out by this process, so that two servers never pick the same one.
fn claimed_ports() -> std::sync::MutexGuard<'static, HashSet<u16>> {
    static CLAIMED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    CLAIMED
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A loopback port that is free right now (found by binding `127.0.0.1:0`).
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if claimed_ports().insert(port) {
            return port;
        }
    }
    panic!("could not find a free loopback port");
}

/// `count` ports below 55000 whose cluster bus port (`p + 10000`) is free too.
fn free_cluster_ports(count: usize) -> Vec<u16> {
    // Keep every listener open until all ports are chosen, so none repeats.
    let mut held = Vec::new();
    for _ in 0..10_000 {
        if held.len() == count {
            break;
        }
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let port = listener.local_addr().expect("local_addr").port();
        if port >= MAX_CLUSTER_PORT {
            continue;
        }
        let bus = port + CLUSTER_BUS_OFFSET;
        {
            let claimed = claimed_ports();
            if claimed.contains(&port) || claimed.contains(&bus) {
                continue;
            }
        }
        let Ok(bus_listener) = TcpListener::bind(("127.0.0.1", bus)) else {
            continue;
        };
        held.push((port, listener, bus_listener));
    }
    assert_eq!(
        held.len(),
        count,
        "could not find {count} free loopback ports below {MAX_CLUSTER_PORT} with free bus ports"
    );
    let mut claimed = claimed_ports();
    held.into_iter()
        .map(|(port, _listener, _bus)| {
            claimed.insert(port);
            claimed.insert(port + CLUSTER_BUS_OFFSET);
            port
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Raw RESP (no async runtime needed)
// ---------------------------------------------------------------------------

/// Sends one command over a fresh TCP connection and returns the reply:
/// simple strings as `+OK`, errors as `-ERR ...`, integers as `:1`, bulk
/// strings as their bare contents (`""` for nil). Arrays are not supported.
pub fn resp_command(port: u16, args: &[&str]) -> io::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;

    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{}\r\n", arg.len(), arg));
    }
    stream.write_all(request.as_bytes())?;

    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    match line.as_bytes().first() {
        Some(b'+' | b'-' | b':') => Ok(line.to_string()),
        Some(b'$') => {
            let len: i64 = line[1..]
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.to_string()))?;
            if len < 0 {
                return Ok(String::new());
            }
            let mut body = vec![0; len as usize + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len as usize);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected RESP reply: {line:?}"),
        )),
    }
}

/// True when a server on `port` answers `PING`: with `+PONG`, or with
/// `-NOAUTH` when it requires a password (it is up either way).
pub fn ping(port: u16) -> bool {
    matches!(resp_command(port, &["PING"]), Ok(reply) if reply == "+PONG" || reply.starts_with("-NOAUTH"))
}

// ---------------------------------------------------------------------------
// RedisServer
// ---------------------------------------------------------------------------

/// Why a launch did not produce a ready server.
enum LaunchError {
    /// The port was taken (by another process, or still held after a kill).
    AddrInUse,
    /// Anything else; carries a description including the log.
    Failed(String),
}

/// Whether the server binary speaks TLS: probed once per test process by
/// starting it with `--tls-port` and a throwaway certificate. A server built
/// without TLS refuses that: Redis 7.0 does not know the directive ("Bad
/// directive"), Redis 7.2+ and Valkey have no TLS connection type ("Failed
/// finding connection listener of tls", Valkey 9 "Missing implement of
/// connection type tls"). Any other failure is a panic, so a
/// broken TLS setup is not mistaken for a build without it.
pub fn server_speaks_tls() -> bool {
    static TLS: OnceLock<bool> = OnceLock::new();
    *TLS.get_or_init(|| {
        let pki = tls::Pki::generate();
        for _ in 0..5 {
            match RedisServer::try_start_on(free_port(), pki.server_args(false), true) {
                Ok(_server) => return true,
                Err(LaunchError::AddrInUse) => continue,
                Err(LaunchError::Failed(log)) => {
                    let without_tls = [
                        "Bad directive",              // Redis 7.0
                        "listener of tls",            // Redis 7.2+
                        "connection type tls",        // Valkey
                        "Failed finding TLS support", // Valkey
                    ];
                    if without_tls.iter().any(|sign| log.contains(sign)) {
                        return false;
                    }
                    panic!("cannot tell whether redis-server speaks TLS: {log}");
                }
            }
        }
        panic!("redis-server: every port tried was already in use");
    })
}

/// For a test that needs a TLS-capable server: `true` (and a line on stderr
/// saying why) when the server was built without TLS, and the test should
/// return; Debian's redis-server always has TLS.
pub fn skip_without_tls() -> bool {
    if server_speaks_tls() {
        return false;
    }
    eprintln!(
        "skipped: {} was built without TLS (build it with BUILD_TLS=yes to run this test)",
        redis_server_bin().display()
    );
    true
}

/// A private `redis-server` on a loopback port, in its own temp dir.
/// SIGKILLed (and reaped) on drop.
pub struct RedisServer {
    port: u16,
    /// TLS only: `--port 0 --tls-port port` (readiness is then seen in the
    /// log and by a TCP connect, since a plain PING gets no answer).
    tls: bool,
    args: Vec<String>,
    /// Extra environment of the process (e.g. `LD_PRELOAD`).
    env: Vec<(String, String)>,
    dir: TempDir,
    log_path: PathBuf,
    child: Option<Child>,
    /// A sentinel: the master it monitors (`name`, port), written into its
    /// config file on first launch (the sentinel rewrites the file).
    sentinel_of: Option<(String, u16)>,
}

impl RedisServer {
    /// Starts a Redis Sentinel monitoring the primary on `primary_port` as
    /// `master` (quorum 2, down after 1 s, failover timeout 3 s).
    pub fn start_sentinel(master: &str, primary_port: u16) -> RedisServer {
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("millrace-sentinel-")
                .tempdir()
                .expect("cannot create a temp dir for a sentinel");
            let log_path = dir.path().join("redis.log");
            let mut server = RedisServer {
                port: free_port(),
                tls: false,
                args: Vec::new(),
                env: Vec::new(),
                dir,
                log_path,
                child: None,
                sentinel_of: Some((master.to_string(), primary_port)),
            };
            match server.launch() {
                Ok(()) => return server,
                Err(LaunchError::AddrInUse) => continue,
                Err(LaunchError::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!("redis-server --sentinel: every port tried was already in use");
    }

    /// Starts a server with the default (non-persistent) configuration.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line arguments, e.g.
    /// `&["--appendonly", "yes"]` (later arguments override earlier ones).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Self::start_any_port(args, false)
    }

    /// [`RedisServer::start_with`], with extra environment variables for the
    /// process, e.g. an `LD_PRELOAD` shim; restarts keep them.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> RedisServer {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for _ in 0..5 {
            match Self::try_start_with(free_port(), args.clone(), false, env.clone()) {
                Ok(server) => return server,
                Err(LaunchError::AddrInUse) => continue,
                Err(LaunchError::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!("redis-server: every port tried was already in use");
    }

    /// Starts a server that accepts only TLS connections (`--port 0
    /// --tls-port P`), with the server certificate and CA of `pki`;
    /// `auth_clients` requires client certificates signed by its CA.
    /// `extra` arguments follow (e.g. `--requirepass`).
    pub fn start_tls(pki: &tls::Pki, auth_clients: bool, extra: &[&str]) -> RedisServer {
        let mut args = pki.server_args(auth_clients);
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::start_any_port(args, true)
    }

    fn start_any_port(args: Vec<String>, tls: bool) -> RedisServer {
        for _ in 0..5 {
            match Self::try_start_on(free_port(), args.clone(), tls) {
                Ok(server) => return server,
                Err(LaunchError::AddrInUse) => continue,
                Err(LaunchError::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!("redis-server: every port tried was already in use");
    }

    fn try_start_on(port: u16, args: Vec<String>, tls: bool) -> Result<RedisServer, LaunchError> {
        Self::try_start_with(port, args, tls, Vec::new())
    }

    fn try_start_with(
        port: u16,
        args: Vec<String>,
        tls: bool,
        env: Vec<(String, String)>,
    ) -> Result<RedisServer, LaunchError> {
        let dir = tempfile::Builder::new()
            .prefix("millrace-redis-")
            .tempdir()
            .expect("cannot create a temp dir for redis-server");
        let log_path = dir.path().join("redis.log");
        let mut server = RedisServer {
            port,
            tls,
            args,
            env,
            dir,
            log_path,
            child: None,
            sentinel_of: None,
        };
        server.launch()?;
        Ok(server)
    }

    /// Spawns the process and waits until it answers `PING`.
    fn launch(&mut self) -> Result<(), LaunchError> {
        assert!(self.child.is_none(), "redis-server already running");
        let log_start = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("cannot open the redis-server log file");
        let mut cmd = Command::new(redis_server_bin());
        if let Some((master, primary)) = &self.sentinel_of {
            let conf = self.dir.path().join("sentinel.conf");
            if !conf.exists() {
                // 1 s by default (short tests); MILLRACE_SENTINEL_DOWN_AFTER_MS
                // for long runs, where a full sync under load can stall a
                // new primary past 1 s.
                let down_after: u64 = std::env::var("MILLRACE_SENTINEL_DOWN_AFTER_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000);
                fs::write(
                    &conf,
                    format!(
                        "sentinel monitor {master} 127.0.0.1 {primary} 2\n\
                         sentinel down-after-milliseconds {master} {down_after}\n\
                         sentinel failover-timeout {master} 3000\n\
                         sentinel parallel-syncs {master} 2\n"
                    ),
                )
                .expect("cannot write sentinel.conf");
            }
            cmd.arg(&conf).arg("--sentinel");
        }
        let port = self.port.to_string();
        let ports: &[&str] = if self.tls {
            &["--port", "0", "--tls-port", &port]
        } else {
            &["--port", &port]
        };
        cmd.arg("--save")
            .arg("")
            .args(["--appendonly", "no", "--bind", "127.0.0.1"])
            .args(ports)
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file handle"))
            .stderr(log);
        let child = spawn_tied_to_process(cmd).map_err(|e| {
            LaunchError::Failed(format!(
                "cannot spawn {}: {e}",
                redis_server_bin().display()
            ))
        })?;
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let log = self.log_since(log_start);
                if log.contains("Address already in use") {
                    return Err(LaunchError::AddrInUse);
                }
                return Err(LaunchError::Failed(format!(
                    "redis-server on port {} exited during startup ({status}); log:\n{log}",
                    self.port
                )));
            }
            let ready = if self.tls {
                self.log_since(log_start)
                    .contains("Ready to accept connections")
                    && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                ping(self.port)
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(LaunchError::Failed(format!(
                    "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log_since(log_start)
                )));
            }
            thread::sleep(POLL);
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let text = fs::read(&self.log_path).unwrap_or_default();
        let start = (offset as usize).min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The server's working directory (`--dir`), e.g. to inspect AOF files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server has logged so far (across restarts).
    pub fn log(&self) -> String {
        self.log_since(0)
    }

    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the server and waits for it to exit (a crash, not a shutdown).
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the server again on the same port, with the same arguments and
    /// directory (so persisted data, e.g. an AOF, is reloaded). Stops it first
    /// if it is still running. Retries briefly while the port is still held.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(LaunchError::AddrInUse) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50));
                }
                Err(LaunchError::AddrInUse) => panic!(
                    "redis-server could not restart: port {} stayed in use for {READY_TIMEOUT:?}",
                    self.port
                ),
                Err(LaunchError::Failed(msg)) => panic!("{msg}"),
            }
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                _ => {
                    self.child = None;
                    false
                }
            },
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// One shared server per test binary
// ---------------------------------------------------------------------------

/// The per-binary server returned by [`shared`]. It cannot be stopped; it dies
/// with the test process. Isolate tests with [`unique_prefix`].
pub struct SharedServer {
    server: RedisServer,
}

impl SharedServer {
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// The one server of this test binary, started on first use.
pub fn shared() -> &'static SharedServer {
    static SHARED: OnceLock<SharedServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        let server = RedisServer::start();
        remove_at_exit(server.dir());
        SharedServer { server }
    })
}

/// Shorthand for `shared().url()`.
pub fn shared_url() -> String {
    shared().url()
}

/// A key prefix unique to this test and process: `t<n>_<pid>_<name>`, at most
/// 40 characters of `[a-z0-9_-]` (no `:`, `{` or `}`, so callers may add
/// their own separators or hash tags).
pub fn unique_prefix(test_name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let head = format!("t{n}_{}_", std::process::id());
    let name: String = test_name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40usize.saturating_sub(head.len()))
        .collect();
    head + &name
}

// ---------------------------------------------------------------------------
// RedisCluster
// ---------------------------------------------------------------------------

/// One line of `CLUSTER NODES`: port, flags, primary's id (or `-`), id,
/// first slot range (or `-`).
type NodeLine = (u16, String, String, String, String);

/// Three cluster-enabled masters (no replicas) on loopback, slots spread by
/// `redis-cli --cluster create`. Killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// `redis-cli` arguments to reach a node (`--tls --cacert ...` for a
    /// TLS cluster, none otherwise).
    cli_args: Vec<String>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        Self::start_nodes_and_create(Vec::new(), Vec::new(), false)
    }

    /// Three primaries with a replica each (six nodes) and a
    /// `cluster-node-timeout` of 1 s: a dead primary's replica takes over
    /// within seconds. Returns once every replica is synced.
    pub fn start_with_replicas() -> RedisCluster {
        let extra = [
            "--cluster-node-timeout",
            "1000",
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ]
        .map(String::from)
        .to_vec();
        let cluster = Self::create(extra, Vec::new(), false, 1);
        cluster.wait_settled(CLUSTER_TIMEOUT);
        cluster
    }

    /// A cluster that speaks only TLS, to clients and between nodes
    /// (`--port 0 --tls-port P --tls-cluster yes --tls-replication yes`), with
    /// the certificates of `pki`; `auth_clients` requires client
    /// certificates signed by its CA. Nodes present [`tls::Pki::client`]
    /// to each other on the cluster bus (the server certificate is for
    /// server use only).
    pub fn start_tls(pki: &tls::Pki, auth_clients: bool) -> RedisCluster {
        Self::start_tls_with(pki, auth_clients, &[])
    }

    /// [`RedisCluster::start_tls`] with `extra` server arguments (e.g.
    /// `--cluster-announce-ip`).
    pub fn start_tls_with(pki: &tls::Pki, auth_clients: bool, extra: &[&str]) -> RedisCluster {
        let path = |p: &Path| p.display().to_string();
        let mut args = pki.server_args(auth_clients);
        args.extend(
            [
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
                "--tls-client-cert-file",
                &path(&pki.client.cert),
                "--tls-client-key-file",
                &path(&pki.client.key),
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut cli_args: Vec<String> = vec!["--tls".into(), "--cacert".into(), path(&pki.ca)];
        if auth_clients {
            cli_args.extend([
                "--cert".into(),
                path(&pki.client.cert),
                "--key".into(),
                path(&pki.client.key),
            ]);
        }
        Self::start_nodes_and_create(args, cli_args, true)
    }

    fn start_nodes_and_create(
        extra: Vec<String>,
        cli_args: Vec<String>,
        tls: bool,
    ) -> RedisCluster {
        Self::create(extra, cli_args, tls, 0)
    }

    /// Three primaries, each with `replicas` replicas.
    fn create(
        extra: Vec<String>,
        cli_args: Vec<String>,
        tls: bool,
        replicas: usize,
    ) -> RedisCluster {
        let cli = redis_cli_bin();
        let nodes = Self::start_nodes(3 * (1 + replicas), extra, tls);
        let ports: Vec<u16> = nodes.iter().map(RedisServer::port).collect();

        let mut create = Command::new(&cli);
        create.args(&cli_args).args(["--cluster", "create"]);
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = spawn_tied_to_process(create)
            .and_then(Child::wait_with_output)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli.display()));
        let cluster = RedisCluster { nodes, cli_args };
        if !output.status.success() {
            panic!(
                "redis-cli --cluster create failed ({}):\n{}{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                cluster.logs()
            );
        }

        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        for port in &ports {
            loop {
                match cluster.command(*port, &["CLUSTER", "INFO"]) {
                    Ok(info) if info.contains("cluster_state:ok") => break,
                    _ if Instant::now() >= deadline => panic!(
                        "cluster node 127.0.0.1:{port} did not reach cluster_state:ok \
                         within {CLUSTER_TIMEOUT:?}\n{}",
                        cluster.logs()
                    ),
                    _ => thread::sleep(POLL),
                }
            }
        }
        cluster
    }

    /// One command to the node on `port`: raw RESP for a plain cluster,
    /// `redis-cli` with the TLS arguments for a TLS one (its reply as
    /// `redis-cli` prints it).
    pub fn command(&self, port: u16, args: &[&str]) -> io::Result<String> {
        if self.cli_args.is_empty() {
            return resp_command(port, args);
        }
        let mut cmd = Command::new(redis_cli_bin());
        cmd.args(&self.cli_args)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = spawn_tied_to_process(cmd).and_then(Child::wait_with_output)?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn start_nodes(count: usize, extra: Vec<String>, tls: bool) -> Vec<RedisServer> {
        let mut args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra);
        // A port may be taken between choosing and binding: start over then.
        for _ in 0..5 {
            let mut nodes = Vec::new();
            for port in free_cluster_ports(count) {
                match RedisServer::try_start_on(port, args.clone(), tls) {
                    Ok(node) => nodes.push(node),
                    Err(LaunchError::AddrInUse) => break,
                    Err(LaunchError::Failed(msg)) => panic!("{msg}"),
                }
            }
            if nodes.len() == count {
                return nodes;
            }
        }
        panic!("could not start {count} cluster nodes: ports kept being taken");
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} log ---\n{}", n.port(), n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for a TLS cluster) of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The first node's url.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// `CLUSTER NODES` as one node sees it: (port, flags, primary's id or
    /// `-`, id, first slot or `-`) per node.
    fn nodes_seen_by(&self, port: u16) -> Option<Vec<(u16, String, String, String)>> {
        Some(
            self.slots_seen_by(port)?
                .into_iter()
                .map(|(p, f, m, id, _)| (p, f, m, id))
                .collect(),
        )
    }

    /// [`RedisCluster::nodes_seen_by`] with each node's first slot range
    /// (`-` for none).
    fn slots_seen_by(&self, port: u16) -> Option<Vec<NodeLine>> {
        let text = self.command(port, &["CLUSTER", "NODES"]).ok()?;
        Some(
            text.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(' ').collect();
                    let port = f.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                    Some((
                        port,
                        f.get(2)?.to_string(),
                        f.get(3)?.to_string(),
                        f[0].to_string(),
                        f.get(8).map_or("-".to_string(), |s| s.to_string()),
                    ))
                })
                .collect(),
        )
    }

    /// The ports of the nodes serving slots (primaries not failed), as the
    /// first node that answers sees them, in the order of their slots (so
    /// index i is the same shard before and after a failover).
    pub fn primaries(&self) -> Vec<u16> {
        let Some(seen) = self.ports().into_iter().find_map(|p| self.slots_seen_by(p)) else {
            return Vec::new();
        };
        let mut out: Vec<(u32, u16)> = seen
            .into_iter()
            .filter(|(_, flags, _, _, _)| flags.contains("master") && !flags.contains("fail"))
            .map(|(p, _, _, _, slots)| {
                let first = slots.split('-').next().and_then(|s| s.parse().ok());
                (first.unwrap_or(u32::MAX), p)
            })
            .collect();
        out.sort_unstable();
        out.into_iter().map(|(_, p)| p).collect()
    }

    /// Starts one more cluster-enabled node and joins it as a primary that
    /// serves no slot (`CLUSTER MEET`), as `redis-cli --cluster add-node`
    /// does; waits until every node knows it and it sees the cluster `ok`.
    /// Returns its port. (The
    /// cluster then has four primaries: [`RedisCluster::wait_settled`]
    /// expects three.)
    pub fn add_empty_primary(&mut self, within: Duration) -> u16 {
        assert!(self.cli_args.is_empty(), "plain clusters only");
        let node = Self::start_nodes(1, Vec::new(), false)
            .pop()
            .expect("one node");
        let port = node.port();
        let first = self.ports()[0];
        self.nodes.push(node);
        let reply = self
            .command(first, &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()])
            .expect("CLUSTER MEET");
        assert_eq!(reply, "+OK");
        let deadline = Instant::now() + within;
        loop {
            let known = self.ports().into_iter().all(|p| {
                self.nodes_seen_by(p).is_some_and(|seen| {
                    seen.iter().any(|(q, f, _, _)| {
                        *q == port && f.contains("master") && !f.contains("handshake")
                    }) && seen.len() == self.nodes.len()
                })
            });
            let ok = self
                .command(port, &["CLUSTER", "INFO"])
                .is_ok_and(|i| i.contains("cluster_state:ok"));
            if known && ok {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "node {port} did not join within {within:?}"
            );
            thread::sleep(POLL);
        }
    }

    /// Whether every node that answers says `cluster_state:ok`, sees three
    /// primaries none failed, and (a replica) has its link up.
    fn settled(&self) -> bool {
        let running: Vec<u16> = self.ports().into_iter().filter(|p| ping(*p)).collect();
        running.iter().all(|p| {
            let ok = self
                .command(*p, &["CLUSTER", "INFO"])
                .is_ok_and(|i| i.contains("cluster_state:ok"));
            let seen = self.nodes_seen_by(*p).unwrap_or_default();
            let primaries = seen
                .iter()
                .filter(|(_, f, _, _)| f.contains("master") && !f.contains("fail"))
                .count();
            let failed = seen.iter().any(|(_, f, _, _)| f.contains("fail"));
            let me = seen.iter().find(|(_, f, _, _)| f.contains("myself"));
            let linked = match me {
                Some((_, f, _, _)) if f.contains("slave") => self
                    .command(*p, &["INFO", "replication"])
                    .is_ok_and(|i| i.contains("master_link_status:up")),
                Some(_) => true,
                None => false,
            };
            ok && primaries == 3 && !failed && linked
        })
    }

    /// Waits until [`RedisCluster::settled`] (a panic after `within`).
    pub fn wait_settled(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.settled() {
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle within {within:?}: {:?}",
                self.primaries()
            );
            thread::sleep(POLL);
        }
    }

    /// SIGKILLs the primary on `port`, waits until its replica serves its
    /// slots (the cluster is `ok` again on every other node), starts it
    /// again (it rejoins as a replica, from its nodes.conf) and waits until
    /// it is synced. Returns the new primary's port and when the old one
    /// was killed.
    pub fn fail_over(&mut self, port: u16, within: Duration) -> (u16, Instant) {
        let seen = self.nodes_seen_by(port).expect("the primary answers");
        let id = seen
            .iter()
            .find(|(_, f, _, _)| f.contains("myself"))
            .map(|(_, _, _, id)| id.clone())
            .expect("the node knows itself");
        let replica = seen
            .iter()
            .find(|(_, _, primary, _)| *primary == id)
            .map(|(p, ..)| *p)
            .expect("the primary has a replica");
        let node = self.nodes.iter_mut().find(|n| n.port() == port).unwrap();
        node.stop();
        let killed = Instant::now();
        let deadline = killed + within;
        loop {
            let promoted = self.nodes_seen_by(replica).is_some_and(|seen| {
                seen.iter()
                    .any(|(p, f, _, _)| *p == replica && f.contains("master"))
            });
            let ok = self
                .command(replica, &["CLUSTER", "INFO"])
                .is_ok_and(|i| i.contains("cluster_state:ok"));
            if promoted && ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{replica} did not take over from {port}"
            );
            thread::sleep(POLL);
        }
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap()
            .restart();
        self.wait_settled(within);
        (replica, killed)
    }
}

/// The one cluster of this test binary, started on first use; dies with the
/// test process.
pub fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = RedisCluster::start();
        for node in &cluster.nodes {
            remove_at_exit(node.dir());
        }
        cluster
    })
}

/// True while a client of the server on `port` waits in a blocking `XREAD`
/// (`CLIENT LIST`: `cmd=xread`, flag `b`).
pub fn blocked_in_xread(port: u16) -> bool {
    resp_command(port, &["CLIENT", "LIST"]).is_ok_and(|list| {
        list.lines().any(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            fields.contains(&"cmd=xread")
                && fields
                    .iter()
                    .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('b')))
        })
    })
}

// ---------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------

/// Polls `f` every 10 ms until it returns true; panics naming `what` if that
/// does not happen within `deadline` (wall-clock time).
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if f().await {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sends the library's `tracing` output to the test's captured output,
/// filtered by `RUST_LOG` (nothing unless it is set).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A config for the shared private server under a fresh prefix for `test`.
pub fn config(test: &str) -> millrace::Config {
    millrace::Config::new(shared_url())
        .expect("the shared server's URL is valid")
        .prefix(unique_prefix(test))
        .expect("unique prefixes are valid")
}

/// A client of the shared private server under a fresh prefix for `test`
/// (with `RUST_LOG` output in the test's captured output).
pub async fn client(test: &str) -> millrace::Client {
    init_tracing();
    millrace::Client::connect(config(test))
        .await
        .expect("the shared server accepts connections")
}

// ---------------------------------------------------------------------------
// Child processes (the millrace binary under test)
// ---------------------------------------------------------------------------

/// Sends SIGTERM to a child process.
pub fn term(child: &Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// Waits for a child to exit; kills it and panics after `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait on a child") {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the process did not exit within {within:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Everything a child wrote to its (piped) stderr; waits for it to close.
pub fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}
