//! CPU time per message: the Redis server's (from `INFO cpu` before and
//! after, so it works against any server, `--redis` too; it counts whatever
//! else that server did meanwhile) and this process's (`getrusage`: the
//! client, and the worker when it runs in this process).

use std::sync::Mutex;

use crate::client::Client;
use crate::error::{Error, Result};

/// The server's CPU seconds so far (`used_cpu_sys + used_cpu_user`), from an
/// `INFO cpu` reply. Pure.
pub(crate) fn server_cpu_seconds(info: &str) -> Option<f64> {
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(field("used_cpu_sys")? + field("used_cpu_user")?)
}

async fn server_cpu_of(conn: &mut impl redis::aio::ConnectionLike) -> Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    server_cpu_seconds(&info).ok_or_else(|| Error::Decode("INFO cpu has no used_cpu_sys".into()))
}

/// This process's CPU seconds so far (user + system).
pub(crate) fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU per message over the measured part of each repetition: a scenario
/// calls [`Meter::start`] where its clock starts and [`Meter::stop`] with
/// the messages it moved.
///
/// The server is the client's one, or (see [`Meter::watch_nodes`]) the
/// sum over a cluster's nodes, each asked on its own connection.
#[derive(Default)]
pub(crate) struct Meter {
    state: Mutex<MeterState>,
}

#[derive(Default)]
struct MeterState {
    /// A cluster's node connections, when set.
    nodes: Vec<redis::aio::MultiplexedConnection>,
    /// Server (per node), client seconds at the start.
    started: Option<(Vec<f64>, f64)>,
    /// Per repetition: (server, client) microseconds per message, and the
    /// busiest node's share of the server CPU.
    samples: Vec<(f64, f64, f64)>,
}

/// What [`Meter::take`] returns: medians over the repetitions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cpu {
    /// The server's (all nodes') CPU microseconds per message.
    pub server_us: f64,
    /// This process's (and its worker processes') CPU microseconds per
    /// message.
    pub client_us: f64,
    /// The busiest node's share of the server CPU (1 on one server).
    pub busiest_share: f64,
}

impl Meter {
    fn lock(&self) -> std::sync::MutexGuard<'_, MeterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Meters the server CPU on these nodes (a cluster's primaries) rather
    /// than through the client; empty: through the client again.
    pub(crate) fn watch_nodes(&self, nodes: Vec<redis::aio::MultiplexedConnection>) {
        self.lock().nodes = nodes;
    }

    /// Each node's CPU seconds so far (one entry: the client's server).
    async fn server_cpu(&self, client: &Client) -> Result<Vec<f64>> {
        let nodes = self.lock().nodes.clone();
        if nodes.is_empty() {
            return Ok(vec![server_cpu_of(&mut client.connection()).await?]);
        }
        let mut out = Vec::with_capacity(nodes.len());
        for mut conn in nodes {
            out.push(server_cpu_of(&mut conn).await?);
        }
        Ok(out)
    }

    /// The measured part begins.
    pub(crate) async fn start(&self, client: &Client) -> Result<()> {
        let server = self.server_cpu(client).await?;
        self.lock().started = Some((server, own_cpu_seconds()));
        Ok(())
    }

    /// The measured part moved `messages`.
    pub(crate) async fn stop(&self, client: &Client, messages: usize) -> Result<()> {
        self.stop_with_client_cpu(client, messages, 0.0).await
    }

    /// The measured part moved `messages`, and other client processes (the
    /// worker processes of a scenario) spent `others` CPU seconds on it.
    pub(crate) async fn stop_with_client_cpu(
        &self,
        client: &Client,
        messages: usize,
        others: f64,
    ) -> Result<()> {
        let client_now = own_cpu_seconds() + others;
        let server_now = self.server_cpu(client).await?;
        let mut st = self.lock();
        if let Some((server, client)) = st.started.take()
            && messages > 0
        {
            let per = |secs: f64| secs.max(0.0) * 1e6 / messages as f64;
            let deltas: Vec<f64> = server_now
                .iter()
                .zip(&server)
                .map(|(now, then)| (now - then).max(0.0))
                .collect();
            let total: f64 = deltas.iter().sum();
            let busiest = deltas.iter().copied().fold(0.0, f64::max);
            let share = if total > 0.0 { busiest / total } else { 1.0 };
            st.samples
                .push((per(total), per(client_now - client), share));
        }
        Ok(())
    }

    /// The medians of the repetitions since the last take, and a fresh
    /// start.
    pub(crate) fn take(&self) -> Option<Cpu> {
        let cpu = self.peek();
        self.lock().samples.clear();
        cpu
    }

    /// The medians of the repetitions since the last take, without
    /// starting afresh.
    pub(crate) fn peek(&self) -> Option<Cpu> {
        let st = self.lock();
        if st.samples.is_empty() {
            return None;
        }
        let median =
            |f: fn(&(f64, f64, f64)) -> f64| super::median(st.samples.iter().map(f).collect());
        Some(Cpu {
            server_us: median(|s| s.0),
            client_us: median(|s| s.1),
            busiest_share: median(|s| s.2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_cpu_adds_system_and_user_time() {
        let info = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\nused_cpu_sys_children:9.0\r\n";
        assert_eq!(server_cpu_seconds(info), Some(3.75));
        assert_eq!(server_cpu_seconds("# CPU\r\nused_cpu_user:1\r\n"), None);
    }

    #[test]
    fn client_cpu_grows_with_work() {
        let before = own_cpu_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(own_cpu_seconds() > before);
    }
}
