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

async fn server_cpu(client: &Client) -> Result<f64> {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut client.connection())
        .await?;
    server_cpu_seconds(&info).ok_or_else(|| Error::Decode("INFO cpu has no used_cpu_sys".into()))
}

/// This process's CPU seconds so far (user + system).
fn client_cpu() -> f64 {
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
#[derive(Default)]
pub(crate) struct Meter {
    state: Mutex<MeterState>,
}

#[derive(Default)]
struct MeterState {
    started: Option<(f64, f64)>,
    /// Per repetition: (server, client) microseconds per message.
    samples: Vec<(f64, f64)>,
}

impl Meter {
    fn lock(&self) -> std::sync::MutexGuard<'_, MeterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The measured part begins.
    pub(crate) async fn start(&self, client: &Client) -> Result<()> {
        let server = server_cpu(client).await?;
        self.lock().started = Some((server, client_cpu()));
        Ok(())
    }

    /// The measured part moved `messages`.
    pub(crate) async fn stop(&self, client: &Client, messages: usize) -> Result<()> {
        let (client_now, server_now) = (client_cpu(), server_cpu(client).await?);
        let mut st = self.lock();
        if let Some((server, client)) = st.started.take()
            && messages > 0
        {
            let per = |secs: f64| secs.max(0.0) * 1e6 / messages as f64;
            st.samples
                .push((per(server_now - server), per(client_now - client)));
        }
        Ok(())
    }

    /// The medians of the repetitions since the last take (server, client
    /// µs per message), and a fresh start.
    pub(crate) fn take(&self) -> Option<(f64, f64)> {
        let samples = std::mem::take(&mut self.lock().samples);
        if samples.is_empty() {
            return None;
        }
        let server = super::median(samples.iter().map(|s| s.0).collect());
        let client = super::median(samples.iter().map(|s| s.1).collect());
        Some((server, client))
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
        let before = client_cpu();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(client_cpu() > before);
    }
}
