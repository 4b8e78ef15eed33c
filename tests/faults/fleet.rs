//! Worker processes: the real `millrace worker` binary, started, killed,
//! paused and stopped by the scenarios. Each start is a new incarnation with
//! its own number, which its handler URL carries to the ledger.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::verdict::{Cause, Exit};

const BIN: &str = env!("CARGO_BIN_EXE_millrace");

/// What every worker of the fleet runs.
#[derive(Clone)]
pub struct Plan {
    pub redis_url: String,
    pub prefix: String,
    pub topic: String,
    pub groups: Vec<String>,
    pub ledger_url: String,
    pub concurrency: usize,
    pub session_timeout: Duration,
    pub max_attempts: u32,
}

pub struct Fleet {
    plan: Plan,
    dir: tempfile::TempDir,
    /// Slots: the process running in each, if any, with its incarnation.
    slots: Vec<Option<(usize, Child, u16)>>,
    incarnations: usize,
    /// Whether a worker was ever stopped (SIGSTOP).
    pub paused_ever: bool,
    /// How every worker process that ended ended.
    pub exits: Vec<Exit>,
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

impl Fleet {
    /// With `MILLRACE_CHAOS_KEEP` set, the configs and worker logs stay
    /// (their directory is printed).
    pub fn new(plan: Plan, slots: usize) -> Fleet {
        let mut dir = tempfile::Builder::new()
            .prefix("millrace-chaos-")
            .tempdir()
            .unwrap();
        if std::env::var_os("MILLRACE_CHAOS_KEEP").is_some() {
            dir.disable_cleanup(true);
            println!("worker configs and logs in {}", dir.path().display());
        }
        Fleet {
            plan,
            dir,
            slots: (0..slots).map(|_| None).collect(),
            incarnations: 0,
            paused_ever: false,
            exits: Vec::new(),
        }
    }

    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    pub fn is_running(&self, slot: usize) -> bool {
        self.slots[slot].is_some()
    }

    /// The process id of the worker in `slot`.
    pub fn pid(&self, slot: usize) -> Option<u32> {
        self.slots[slot].as_ref().map(|(_, c, _)| c.id())
    }

    /// The metrics port of the worker in `slot`.
    pub fn metrics_port(&self, slot: usize) -> Option<u16> {
        self.slots[slot].as_ref().map(|(_, _, p)| *p)
    }

    /// The incarnation running in `slot`.
    pub fn worker_in(&self, slot: usize) -> Option<usize> {
        self.slots[slot].as_ref().map(|(w, _, _)| *w)
    }

    /// The last `n` lines incarnation `worker` logged.
    pub fn log_tail(&self, worker: usize, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("worker-{worker}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The slot running incarnation `worker`.
    pub fn slot_of(&self, worker: usize) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|(w, _, _)| *w == worker))
    }

    fn config(&self, worker: usize, metrics_port: u16) -> PathBuf {
        let p = &self.plan;
        let mut toml = format!(
            "session_timeout = \"{}ms\"\ndrain_timeout = \"5s\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            p.session_timeout.as_millis()
        );
        for g in &p.groups {
            toml.push_str(&format!(
                "\n[[consumers]]\ntopic = \"{}\"\ngroup = \"{g}\"\nmode = \"ordered\"\nconcurrency = {}\n\
                 [consumers.retry]\nmax_attempts = {}\nbackoff = \"fixed\"\ndelay = \"20ms\"\nmax_delay = \"20ms\"\njitter = 0.0\n\
                 [consumers.handler]\nhttp = \"{}/w/{worker}\"\ntimeout = \"20s\"\n",
                p.topic, p.concurrency, p.max_attempts, p.ledger_url
            ));
        }
        let path = self.dir.path().join(format!("worker-{worker}.toml"));
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// Starts a new incarnation in `slot` (which must be empty).
    pub fn start(&mut self, slot: usize) -> usize {
        assert!(self.slots[slot].is_none(), "slot {slot} is busy");
        self.incarnations += 1;
        let worker = self.incarnations;
        let port = free_port();
        let cfg = self.config(worker, port);
        let log =
            std::fs::File::create(self.dir.path().join(format!("worker-{worker}.log"))).unwrap();
        let child = Command::new(BIN)
            .args([
                "--redis",
                &self.plan.redis_url,
                "--prefix",
                &self.plan.prefix,
            ])
            .args(["worker", "--log-format", "json", "--config"])
            .arg(cfg)
            .env("RUST_LOG", "millrace=info,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.slots[slot] = Some((worker, child, port));
        worker
    }

    /// Notes how `worker` ended.
    fn exited(&mut self, worker: usize, cause: Cause, status: std::process::ExitStatus) {
        self.exits.push(Exit {
            worker,
            cause,
            code: status.code(),
            status: status.to_string(),
        });
    }

    /// If the worker in `slot` has already exited by itself, notes that
    /// (it died: the suite did nothing to it) and empties the slot.
    fn reap_if_dead(&mut self, slot: usize) -> bool {
        let died = match &mut self.slots[slot] {
            Some((w, child, _)) => match child.try_wait() {
                Ok(Some(status)) => Some((*w, status)),
                _ => None,
            },
            None => None,
        };
        match died {
            Some((w, status)) => {
                self.slots[slot] = None;
                self.exited(w, Cause::Died, status);
                true
            }
            None => false,
        }
    }

    /// SIGKILLs the worker in `slot` and reaps it.
    pub fn kill(&mut self, slot: usize) {
        if self.reap_if_dead(slot) {
            return;
        }
        if let Some((w, mut child, _)) = self.slots[slot].take() {
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                self.exited(w, Cause::Killed, status);
            }
        }
    }

    /// SIGTERMs the worker in `slot` and waits for it to exit; returns its
    /// exit code.
    pub fn stop(&mut self, slot: usize, within: Duration) -> Option<i32> {
        if self.reap_if_dead(slot) {
            return None;
        }
        let (w, mut child, _) = self.slots[slot].take()?;
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.exited(w, Cause::Stopped, status);
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("worker in slot {slot} did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGSTOPs (true) or SIGCONTs (false) the worker in `slot`.
    pub fn pause(&mut self, slot: usize, paused: bool) {
        self.paused_ever |= paused;
        if let Some((_, child, _)) = &self.slots[slot] {
            signal(child, if paused { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// Notes every worker that has exited by itself (they should not).
    pub fn reap_dead(&mut self) {
        for slot in 0..self.slots.len() {
            self.reap_if_dead(slot);
        }
    }
}
impl Drop for Fleet {
    fn drop(&mut self) {
        for slot in 0..self.slots.len() {
            self.kill(slot);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
