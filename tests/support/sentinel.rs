//! A Redis Sentinel set-up of real processes on loopback: a primary, its
//! replicas and three sentinels (quorum 2, a primary is down after 1 s).

use std::time::{Duration, Instant};

use redis::Value;

use super::RedisServer;

/// `args` sent to the server on `port` over a fresh connection (redis-rs's
/// synchronous client: replies with arrays), or `None` if it fails.
pub fn query(port: u16, args: &[&str]) -> Option<Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<Value>(&mut conn).ok()
}

/// The length of an array reply (0 for anything else).
fn array_len(v: Option<Value>) -> usize {
    match v {
        Some(Value::Array(items)) => items.len(),
        _ => 0,
    }
}

/// Whether the server on `port` is a replica whose link to its primary is
/// up and synced (`ROLE`: `slave host port connected offset`).
pub fn synced_replica(port: u16) -> bool {
    match query(port, &["ROLE"]) {
        Some(Value::Array(items)) => {
            let text = |i: usize| {
                items
                    .get(i)
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            };
            text(0).as_deref() == Some("slave") && text(3).as_deref() == Some("connected")
        }
        _ => false,
    }
}

/// The role a data server reports (`master`, `slave`), if it answers.
pub fn role(port: u16) -> Option<String> {
    match query(port, &["ROLE"])? {
        Value::Array(items) => redis::from_redis_value_ref::<String>(items.first()?).ok(),
        _ => None,
    }
}

/// The master name the sentinels monitor.
pub const MASTER: &str = "mr-primary";

/// Data servers (the primary and its replicas) and three sentinels.
pub struct SentinelSet {
    /// The data servers; which one is the primary changes with failovers.
    pub servers: Vec<RedisServer>,
    pub sentinels: Vec<RedisServer>,
}

/// Arguments for a data server: fast full syncs without a disk.
const DATA_ARGS: &[&str] = &[
    "--repl-diskless-sync",
    "yes",
    "--repl-diskless-sync-delay",
    "0",
];

impl SentinelSet {
    /// A primary with `replicas` replicas and three sentinels that all
    /// know every replica and each other (so a failover can start at once).
    pub fn start(replicas: usize) -> SentinelSet {
        Self::start_via(replicas, |primary| primary)
    }

    /// [`SentinelSet::start`], with each replica replicating from the port
    /// `upstream(primary port)` gives (a proxy the test can stall). Once
    /// the sentinels reconfigure a replica it replicates directly.
    pub fn start_via(replicas: usize, mut upstream: impl FnMut(u16) -> u16) -> SentinelSet {
        let primary = RedisServer::start_with(DATA_ARGS);
        let mut servers = vec![primary];
        for _ in 0..replicas {
            let from = upstream(servers[0].port()).to_string();
            let mut args = DATA_ARGS.to_vec();
            args.extend(["--replicaof", "127.0.0.1", &from]);
            servers.push(RedisServer::start_with(&args));
        }
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_sentinel(MASTER, servers[0].port()))
            .collect();
        let set = SentinelSet { servers, sentinels };
        set.wait_known(replicas, Duration::from_secs(60));
        set
    }

    /// `redis+sentinel://` URL naming the three sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// The port every sentinel names as the primary, if they agree.
    pub fn agreed_primary(&self) -> Option<u16> {
        let mut named = self.sentinels.iter().map(|s| {
            let v = query(s.port(), &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])?;
            redis::from_redis_value::<(String, u16)>(v)
                .ok()
                .map(|(_, p)| p)
        });
        let first = named.next().flatten()?;
        named.all(|p| p == Some(first)).then_some(first)
    }

    /// Waits until every sentinel knows `replicas` replicas and the two
    /// other sentinels.
    fn wait_known(&self, replicas: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ready = self.sentinels.iter().all(|s| {
                let count = |what: &str| array_len(query(s.port(), &["SENTINEL", what, MASTER]));
                count("REPLICAS") >= replicas && count("SENTINELS") >= 2
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not learn the set-up in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines each sentinel logged.
    pub fn sentinel_logs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| {
                let log = s.log();
                let lines: Vec<&str> = log.lines().collect();
                format!(
                    "--- sentinel {} ---\n{}",
                    s.port(),
                    lines[lines.len().saturating_sub(25)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The server on `port`.
    pub fn server(&mut self, port: u16) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .expect("a data server of the set")
    }

    /// SIGKILLs the primary the sentinels agree on, waits until they agree
    /// on another one that says it is a primary, and starts the old one
    /// again (empty: it has no persistence), waiting until the sentinels
    /// have made it a synced replica of the new primary: until then it is
    /// an empty primary nobody names, and a second failover could promote
    /// it and lose everything (Redis's own advice: a primary without
    /// persistence must not restart by itself). Returns the old and new
    /// primaries' ports and when the old one was killed.
    pub fn fail_over(&mut self, within: Duration) -> (u16, u16, Instant) {
        let old = self
            .agreed_primary()
            .expect("the sentinels agree on a primary");
        self.server(old).stop();
        let killed = Instant::now();
        let deadline = Instant::now() + within;
        let new = loop {
            if let Some(p) = self.agreed_primary()
                && p != old
                && role(p).as_deref() == Some("master")
            {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "no failover from {old} within {within:?}; the sentinels logged:\n{}",
                self.sentinel_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.server(old).restart();
        while !synced_replica(old) {
            assert!(
                Instant::now() < deadline + within,
                "{old} did not become a synced replica of {new}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (old, new, killed)
    }
}
