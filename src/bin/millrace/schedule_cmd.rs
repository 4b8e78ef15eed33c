//! `millrace schedule add|list|remove` and `millrace scheduler`: thin calls
//! to the library's schedule API, and a [`millrace::Scheduler`] run until
//! SIGINT or SIGTERM.

use millrace::{ScheduleSpec, Scheduler};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::cli::{Global, ScheduleAddArgs, ScheduleCommand, ScheduleListArgs, ScheduleRemoveArgs};
use crate::error::CliError;
use crate::jsonl::{DATA_HINT, parse_data, parse_header};
use crate::output::{Out, table};

pub async fn run(global: &Global, cmd: ScheduleCommand, out: &mut Out) -> Result<(), CliError> {
    match cmd {
        ScheduleCommand::Add(args) => add(global, args, out).await,
        ScheduleCommand::List(args) => list(global, args, out).await,
        ScheduleCommand::Remove(args) => remove(global, args, out).await,
    }
}

async fn add(global: &Global, args: ScheduleAddArgs, out: &mut Out) -> Result<(), CliError> {
    // Check everything before connecting (and before reading stdin): a typo
    // should not need Redis.
    let mut spec = ScheduleSpec::new(&args.name, &args.cron, &args.topic, serde_json::Value::Null)?;
    if let Some(tz) = &args.tz {
        spec = spec.tz(tz);
    }
    if let Some(k) = &args.key {
        spec = spec.key(k);
    }
    for h in &args.headers {
        let (name, value) = parse_header(h).map_err(CliError::usage)?;
        spec = spec.header(name, value);
    }
    spec.validate()?;
    let text = if args.data == "-" {
        let mut buf = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut buf)
            .await
            .map_err(|e| CliError::other(format!("cannot read stdin: {e}")))?;
        String::from_utf8(buf).map_err(|_| CliError::usage("stdin is not valid UTF-8"))?
    } else {
        args.data.clone()
    };
    spec.data = parse_data(&text).map_err(|e| CliError::usage(e).hint(DATA_HINT))?;

    let client = crate::connect(global).await?;
    client.add_schedule(&spec).await?;
    let now = client.redis_time_ms().await?;
    match spec.next_fire_after(now)? {
        Some(next) => out.line(format_args!(
            "added schedule {}: next fire {}",
            spec.name,
            millrace::fire_time_rfc3339(next)
        )),
        None => out.line(format_args!(
            "added schedule {}: it never fires again",
            spec.name
        )),
    }
}

/// One schedule in `schedule list --json`.
#[derive(Debug, Serialize)]
struct ScheduleRow {
    name: String,
    cron: String,
    tz: Option<String>,
    topic: String,
    key: Option<String>,
    data: serde_json::Value,
    headers: millrace::Headers,
    /// RFC 3339 (UTC); null when the schedule never fires again.
    next_fire: Option<String>,
}

async fn list(global: &Global, args: ScheduleListArgs, out: &mut Out) -> Result<(), CliError> {
    let client = crate::connect(global).await?;
    let specs = client.list_schedules().await?;
    let now = client.redis_time_ms().await?;
    let mut rows = Vec::with_capacity(specs.len());
    for s in specs {
        let next_fire = s
            .next_fire_after(now)
            .map_err(|e| CliError::from(e).context(format!("schedule {}", s.name)))?
            .map(millrace::fire_time_rfc3339);
        rows.push(ScheduleRow {
            name: s.name,
            cron: s.cron,
            tz: s.tz,
            topic: s.topic,
            key: s.key,
            data: s.data,
            headers: s.headers,
            next_fire,
        });
    }
    if args.json {
        return out.json_pretty(&rows);
    }
    if rows.is_empty() {
        return out.line("no schedules");
    }
    let none = || "-".to_string();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.cron.clone(),
                r.tz.clone().unwrap_or_else(|| "UTC".into()),
                r.topic.clone(),
                r.next_fire.clone().unwrap_or_else(none),
            ]
        })
        .collect();
    out.line(table(&["NAME", "CRON", "TZ", "TOPIC", "NEXT_FIRE"], &cells))
}

async fn remove(global: &Global, args: ScheduleRemoveArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_name("schedule", &args.name)?;
    let client = crate::connect(global).await?;
    if client.remove_schedule(&args.name).await? {
        out.line(format_args!("removed schedule {}", args.name))
    } else {
        Err(
            CliError::other(format!("schedule {} does not exist", args.name))
                .hint("`millrace schedule list` shows the schedules"),
        )
    }
}

/// `millrace scheduler`: publishes every schedule's messages until SIGINT
/// or SIGTERM, then exits 0. Redis failures while running are logged and
/// retried; only the first connection must succeed.
pub async fn scheduler(global: &Global) -> Result<(), CliError> {
    let client = crate::connect(global).await?;
    let stop = shutdown_signal()?;
    tracing::info!("scheduler running");
    Scheduler::new(&client).run(stop).await;
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM. The handlers are installed before this
/// returns, so a signal that arrives early is not missed.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind| {
        signal(kind).map_err(|e| CliError::other(format!("cannot listen for signals: {e}")))
    };
    let mut interrupt = install(SignalKind::interrupt())?;
    let mut terminate = install(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
