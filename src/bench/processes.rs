//! `scale.processes.{1,2,4}.consume`: one ordered group served by 1, 2 and
//! 4 worker *processes* (`millrace bench-worker`, a no-op handler at
//! concurrency 100), sharing the partitions as a deployment's replicas do.
//!
//! The group is created paused, the topic filled and the workers started;
//! once every partition has an owner and each worker owns some, the group
//! is resumed. The rate counts acknowledged messages (`entries-read` minus
//! pending, from `XINFO GROUPS`) from the first one to the last; the
//! client CPU is the workers' own (each reports its `getrusage` on request)
//! plus this process's.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::cpu::{Meter, own_cpu_seconds};
use super::{BenchOptions, fresh_topic, records, reps};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::group::Mode;
use crate::reader::StartAt;

/// The worker process counts.
const PROCESSES: [usize; 3] = [1, 2, 4];

const TOPIC: &str = "bench.procs";
const GROUP: &str = "procs";

/// How to start a benchmark worker process: the program and the arguments
/// before the topic (e.g. `millrace --redis URL --prefix bench
/// bench-worker`); the scenario appends `TOPIC GROUP`.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The `millrace` executable.
    pub program: PathBuf,
    /// Arguments before the topic and group.
    pub args: Vec<String>,
    /// Environment variables to set (the Redis URL goes here rather than
    /// on the command line, where `ps` would show a password).
    pub env: Vec<(String, String)>,
}

/// Runs the selected process scenarios, handing each figure to `push`.
pub(crate) async fn run(
    client: &Client,
    o: &BenchOptions,
    m: &Meter,
    push: &mut dyn FnMut(&str, &'static str, Vec<f64>),
) -> Result<()> {
    for k in PROCESSES {
        let name = format!("scale.processes.{k}.consume");
        if !o.selects(&name) {
            continue;
        }
        let Some(command) = &o.worker_command else {
            tracing::warn!("bench: {name} skipped: no worker program to start");
            continue;
        };
        let v = reps(o, || one_run(client, o, command, k, m)).await?;
        push(&name, "msg/s", v);
    }
    Ok(())
}

/// One worker process, spoken to over its stdin and stdout.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    async fn start(command: &WorkerCommand) -> Result<Proc> {
        let mut child = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .args([TOPIC, GROUP])
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::Config(format!("cannot start {}: {e}", command.program.display()))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Config("a bench worker without pipes".into()));
        };
        let mut p = Proc {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        };
        let ready = p.line().await?;
        if ready != "ready" {
            return Err(Error::Decode(format!("bench worker said {ready:?}")));
        }
        Ok(p)
    }

    async fn line(&mut self) -> Result<String> {
        let next = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line()).await;
        match next {
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => Err(Error::Decode("a bench worker stopped".into())),
            Ok(Err(e)) => Err(Error::Decode(format!("a bench worker's output: {e}"))),
            Err(_) => Err(Error::Decode(
                "a bench worker did not answer in 30 s".into(),
            )),
        }
    }

    /// The process's CPU seconds so far.
    async fn cpu(&mut self) -> Result<f64> {
        self.stdin
            .write_all(b"cpu\n")
            .await
            .map_err(|e| Error::Decode(format!("a bench worker's input: {e}")))?;
        let line = self.line().await?;
        line.strip_prefix("cpu ")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Decode(format!("bench worker said {line:?}")))
    }

    /// Closes its input (it shuts down) and waits for it.
    async fn stop(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn one_run(
    client: &Client,
    o: &BenchOptions,
    command: &WorkerCommand,
    k: usize,
    m: &Meter,
) -> Result<f64> {
    fresh_topic(client, TOPIC, o.partitions).await?;
    client
        .create_group(TOPIC, GROUP, &StartAt::Earliest)
        .await?;
    client.pause_group(TOPIC, GROUP).await?;
    let payload = vec![b'x'; o.payload_bytes];
    client.publish_batch(TOPIC, records(o.n, &payload)).await?;
    let mut procs = Vec::with_capacity(k);
    for _ in 0..k {
        procs.push(Proc::start(command).await?);
    }
    let result = measure(client, o, &mut procs, k, m).await;
    for p in procs {
        p.stop().await;
    }
    client.delete_topic(TOPIC).await?;
    result
}

async fn measure(
    client: &Client,
    o: &BenchOptions,
    procs: &mut [Proc],
    k: usize,
    m: &Meter,
) -> Result<f64> {
    settled(client, o.partitions, k).await?;
    let mut before = own_cpu_seconds();
    for p in procs.iter_mut() {
        before += p.cpu().await?;
    }
    m.start(client).await?;
    client.resume_group(TOPIC, GROUP).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first: Option<(Instant, u64)> = None;
    let done = loop {
        let acked = acknowledged(client, o.partitions).await?;
        let now = Instant::now();
        if first.is_none() && acked > 0 {
            first = Some((now, acked));
        }
        if acked >= o.n as u64 {
            break now;
        }
        if now > deadline {
            return Err(Error::Decode(format!(
                "{k} bench workers acknowledged {acked} of {} in 120 s",
                o.n
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let mut after = own_cpu_seconds();
    for p in procs.iter_mut() {
        after += p.cpu().await?;
    }
    m.stop_with_client_cpu(client, o.n, after - before).await?;
    let (start, at_start) = first.unwrap_or((done, 0));
    let moved = (o.n as u64).saturating_sub(at_start).max(1);
    Ok(moved as f64 / done.duration_since(start).as_secs_f64().max(1e-9))
}

/// Waits until every partition has an owner and each of the `k` workers
/// owns some (the paused group's members have joined and balanced).
async fn settled(client: &Client, partitions: u32, k: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let g = client.describe_group(TOPIC, GROUP).await?;
        let owners: BTreeSet<&str> = g
            .partitions
            .iter()
            .filter_map(|p| p.owner.as_deref())
            .collect();
        let all_owned = g.partitions.iter().all(|p| p.owner.is_some());
        let balanced = g
            .partitions
            .iter()
            .all(|p| p.owner.is_some() && p.owner == p.assigned);
        if all_owned && balanced && owners.len() == k.min(partitions as usize) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Decode(format!(
                "{k} bench workers did not share the partitions in 60 s: {} owners",
                owners.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Messages the group has acknowledged: per partition stream, its
/// `entries-read` minus its pending count (`XINFO GROUPS`, pipelined).
async fn acknowledged(client: &Client, partitions: u32) -> Result<u64> {
    let mut pipe = redis::pipe();
    for p in 0..partitions {
        pipe.cmd("XINFO")
            .arg("GROUPS")
            .arg(client.keys().stream(TOPIC, p, 0));
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut client.connection()).await?;
    let mut total = 0u64;
    for reply in replies {
        let (read, pending) = group_progress(&reply, GROUP)
            .ok_or_else(|| Error::Decode(format!("XINFO GROUPS has no group {GROUP}")))?;
        total += read.saturating_sub(pending);
    }
    Ok(total)
}

/// `entries-read` and `pending` of `group` in an `XINFO GROUPS` reply. Pure.
pub(crate) fn group_progress(reply: &redis::Value, group: &str) -> Option<(u64, u64)> {
    use redis::Value;
    let Value::Array(groups) = reply else {
        return None;
    };
    for g in groups {
        let fields: Vec<(&Value, &Value)> = match g {
            Value::Array(kv) => kv
                .chunks(2)
                .filter_map(|c| Some((c.first()?, c.get(1)?)))
                .collect(),
            Value::Map(kv) => kv.iter().map(|(a, b)| (a, b)).collect(),
            _ => continue,
        };
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| {
                    matches!(k, Value::BulkString(b) if b == name.as_bytes())
                        || matches!(k, Value::SimpleString(s) if s == name)
                })
                .map(|(_, v)| *v)
        };
        let is_ours = matches!(get("name"), Some(Value::BulkString(b)) if b == group.as_bytes());
        if !is_ours {
            continue;
        }
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(i)) => Some((*i).max(0) as u64),
            Some(Value::Nil) | None => Some(0),
            _ => None,
        };
        return Some((int(get("entries-read"))?, int(get("pending"))?));
    }
    None
}

/// The body of `millrace bench-worker TOPIC GROUP`: an ordered worker with
/// a no-op handler at concurrency 100. Prints `ready` once started, answers
/// each `cpu` line on stdin with `cpu <seconds>` (its user + system time),
/// and shuts down when stdin closes.
pub async fn worker_process(client: &Client, topic: &str, group: &str) -> Result<()> {
    let worker = crate::consumer::Worker::builder(client, group)
        .mode(Mode::Ordered)
        .start_at(StartAt::Earliest)
        .concurrency(100)
        .heartbeat_interval(Duration::from_millis(200))
        .handle_raw(topic, |_m, _c| async { Ok(()) })
        .start()
        .await?;
    say("ready").await?;
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = input.next_line().await {
        if line.trim() == "cpu" {
            say(&format!("cpu {}", own_cpu_seconds())).await?;
        }
    }
    worker.shutdown().await.map(drop)
}

/// One line on stdout, flushed (the bench reads it at once).
async fn say(line: &str) -> Result<()> {
    let mut out = tokio::io::stdout();
    let io = |e: std::io::Error| Error::Decode(format!("bench worker output: {e}"));
    out.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(io)?;
    out.flush().await.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn progress_is_read_of_the_named_group() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("name"),
                bulk("other"),
                bulk("pending"),
                Value::Int(9),
                bulk("entries-read"),
                Value::Int(90),
            ]),
            Value::Array(vec![
                bulk("name"),
                bulk("procs"),
                bulk("consumers"),
                Value::Int(2),
                bulk("pending"),
                Value::Int(3),
                bulk("last-delivered-id"),
                bulk("1-5"),
                bulk("entries-read"),
                Value::Int(40),
                bulk("lag"),
                Value::Int(0),
            ]),
        ]);
        assert_eq!(group_progress(&reply, "procs"), Some((40, 3)));
        assert_eq!(group_progress(&reply, "missing"), None);
        let unread = Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("procs"),
            bulk("pending"),
            Value::Int(0),
            bulk("entries-read"),
            Value::Nil,
        ])]);
        assert_eq!(group_progress(&unread, "procs"), Some((0, 0)));
    }
}
