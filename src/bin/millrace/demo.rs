//! `millrace demo`: an ERP's invoices, told in about ten seconds.
//!
//! With no Redis configured it starts a private `redis-server` from PATH
//! ([`PrivateRedis`]) and stops it at the end; with `--redis`,
//! `MILLRACE_REDIS_URL` or `REDIS_URL` it works under the prefix `demo` (or
//! `--prefix`) and deletes its topics at the end, so it never touches other
//! data.
//!
//! The story: ten tenants publish invoices to `erp.v1.invoice.created`
//! (six partitions, keyed by tenant); three groups fan out over them
//! (`notification`, ordered; `pdf-report`, two members sharing the
//! partitions; `audit`). The PDF renderer has a bug that makes some invoices
//! fail three times and land in the dead-letter queue; the fix is deployed
//! and the dead letters are replayed to `pdf-report` only. Then a payment
//! reminder is published with a delay, a cron schedule fires every second
//! for a few seconds, the workers shut down gracefully and a summary table
//! closes the story.
//!
//! Ctrl-C at any point prints `interrupted`, stops the workers, stops the
//! private server and exits 130.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use millrace::HEADER_FIRE_TIME;
use millrace::RetryPolicy;
use millrace::StatsSnapshot;
use millrace::local::{PrivateRedis, find_redis_server};
use millrace::redact_url;
use millrace::{
    Client, Event, HandlerError, PublishOptions, ScheduleSpec, Scheduler, TopicSpec, Worker,
    WorkerHandle,
};
use millrace::{ReplayTo, Selection};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use crate::cli::{DemoArgs, Global};
use crate::error::CliError;
use crate::output::{Out, note, table};

const INVOICES: &str = "erp.v1.invoice.created";
const REMINDERS: &str = "erp.v1.invoice.reminder";
const SCHEDULE: &str = "nightly-report";
/// The key prefix on a Redis the user named, unless `--prefix` says otherwise.
const DEMO_PREFIX: &str = "demo";
const TENANTS: [&str; 10] = [
    "acme", "globex", "wayne", "stark", "wonka", "hooli", "nakatomi", "oscorp", "vandelay", "duff",
];
const INVOICES_PER_TENANT: u64 = 30;
/// The PDF renderer's bug: totals that are a multiple of this many euros.
const BAD_MULTIPLE: u64 = 37;
const REMINDER_DELAY: Duration = Duration::from_secs(2);
const SCHEDULER_RUN: Duration = Duration::from_secs(3);
/// Longest wait for any one step.
const STEP_LIMIT: Duration = Duration::from_secs(20);
/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

/// Logging unless `RUST_LOG` says otherwise: warnings, except the handlers'
/// failures, which the story tells itself.
pub const LOG_FILTER: &str = "warn,millrace::consumer::runtime::handling=error";

#[derive(Serialize, Deserialize)]
struct InvoiceCreated {
    tenant: String,
    invoice: String,
    /// 1, 2, 3, … per tenant, in publish order.
    seq: u64,
    cents: u64,
}

impl Event for InvoiceCreated {
    const TOPIC: &'static str = INVOICES;
    fn key(&self) -> Option<String> {
        Some(self.tenant.clone())
    }
}

/// A payment reminder, or (from the cron schedule) a nightly report.
#[derive(Serialize, Deserialize)]
struct Reminder {
    kind: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    invoice: Option<String>,
}

impl Event for Reminder {
    const TOPIC: &'static str = REMINDERS;
    fn key(&self) -> Option<String> {
        self.tenant.clone()
    }
}

/// An invoice's total: deterministic, between 100 and 9 099 euros.
fn euros(tenant: usize, seq: u64) -> u64 {
    100 + (tenant as u64 * 7_919 + seq * 104_729) % 9_000
}

/// Whether the buggy renderer fails on this total.
fn hits_the_bug(cents: u64) -> bool {
    cents.is_multiple_of(BAD_MULTIPLE * 100)
}

/// What the handlers saw, shared with the story.
#[derive(Default)]
struct Tally {
    emails: AtomicUsize,
    out_of_order: AtomicUsize,
    last_seq: Mutex<HashMap<String, u64>>,
    rendered: AtomicUsize,
    /// The fix is deployed.
    fixed: AtomicBool,
    rendered_after_fix: Mutex<Vec<String>>,
    audited: AtomicUsize,
    reminder_at: Mutex<Option<Instant>>,
    /// Nightly reports received: partition and fire time (RFC 3339).
    reports: Mutex<Vec<(u32, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `millrace demo`.
pub async fn run(global: &Global, args: DemoArgs, out: &mut Out) -> Result<(), CliError> {
    // A dashboard needs its address checked before the story starts.
    let serve = if args.serve {
        let listen: std::net::SocketAddr = args.listen.parse().map_err(|_| {
            CliError::usage(format!("--listen: expected IP:PORT, got {:?}", args.listen))
        })?;
        crate::serve::check_bind(&listen, None)?;
        Some(listen)
    } else {
        None
    };
    // The story is told as it happens, not at the end.
    out.flush_each_line(true);
    // From here on Ctrl-C is ours: the story stops, the server is stopped.
    let interrupted = CancellationToken::new();
    let watcher = tokio::spawn({
        let interrupted = interrupted.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.cancel();
            }
        }
    });
    let result = run_with(global, serve, out, &interrupted).await;
    watcher.abort();
    result
}

/// Whether the user named a Redis: `--redis`, `MILLRACE_REDIS_URL` or
/// `REDIS_URL`.
fn redis_given(global: &Global) -> bool {
    let set = |v: Option<String>| v.is_some_and(|u| !u.is_empty());
    set(global.redis.clone()) || set(std::env::var("REDIS_URL").ok())
}

fn start_error(e: millrace::Error) -> CliError {
    let text = match e {
        millrace::Error::Config(text) => text,
        other => other.to_string(),
    };
    if find_redis_server().is_none() {
        // The text says what is missing and how to get it.
        CliError::other(text)
            .hint("install redis-server (Debian/Ubuntu: apt-get install redis-server)")
    } else {
        CliError::other(format!("cannot start a private redis-server: {text}"))
            .hint("or run the demo on a Redis you started: millrace demo --redis URL")
    }
}

async fn run_with(
    global: &Global,
    serve: Option<std::net::SocketAddr>,
    out: &mut Out,
    interrupted: &CancellationToken,
) -> Result<(), CliError> {
    let started = Instant::now();
    out.line("millrace demo: an ERP's invoices, on Redis Streams")?;
    out.line("")?;
    let explicit = redis_given(global);
    let (server, target) = if explicit {
        let prefix = if global.prefix_set {
            global.prefix.clone()
        } else {
            DEMO_PREFIX.to_string()
        };
        let target = Global {
            redis: Some(global.redis_url()),
            prefix,
            prefix_set: true,
            ..global.clone()
        };
        (None, target)
    } else {
        let server = PrivateRedis::start().map_err(start_error)?;
        // The private server speaks plain TCP: no TLS files.
        let target = Global {
            redis: Some(server.url()),
            prefix: global.prefix.clone(),
            prefix_set: global.prefix_set,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        };
        (Some(server), target)
    };
    let url = target.redis_url();
    match &server {
        Some(s) => out.line(format!(
            "1. started a private redis-server on 127.0.0.1:{}",
            s.port()
        ))?,
        None => out.line(format!(
            "1. using {} (key prefix {:?}; the demo's topics are deleted at the end)",
            redact_url(&url),
            target.prefix
        ))?,
    }
    let client = crate::connect(&target).await?;

    let mut demo = Demo {
        out,
        client,
        tally: Arc::default(),
        members: Vec::new(),
        started,
    };
    let outcome = tokio::select! {
        biased;
        () = interrupted.cancelled() => None,
        r = demo.story(explicit) => Some(r),
    };
    // A Ctrl-C in a terminal also stops the private server (same process
    // group), which the story may notice first: that is an interruption too.
    let outcome = match outcome {
        Some(Err(_))
            if tokio::time::timeout(Duration::from_millis(300), interrupted.cancelled())
                .await
                .is_ok() =>
        {
            None
        }
        o => o,
    };
    let outcome = match (outcome, serve) {
        (Some(Ok(())), Some(listen)) => Some(demo.serve_until(listen, interrupted).await),
        (o, _) => o,
    };
    let result = match outcome {
        Some(Ok(())) => {
            if explicit {
                demo.delete_topics().await
            } else {
                Ok(())
            }
        }
        Some(Err(e)) => {
            demo.stop_quickly(server.is_some()).await;
            if explicit {
                let _ = tokio::time::timeout(Duration::from_secs(3), demo.delete_topics()).await;
            }
            Err(e)
        }
        None => {
            note("interrupted");
            demo.stop_quickly(server.is_some()).await;
            if explicit {
                let _ = tokio::time::timeout(Duration::from_secs(3), demo.delete_topics()).await;
            }
            Err(CliError {
                code: EXIT_INTERRUPTED,
                message: String::new(),
                hint: None,
                silent: true,
            })
        }
    };
    // The client's connections go before the server does.
    drop(demo);
    if let Some(server) = server {
        drop(server);
        if result.is_ok() {
            out.line("stopped the private redis-server")?;
        }
    }
    result
}

struct Demo<'a> {
    out: &'a mut Out,
    client: Client,
    tally: Arc<Tally>,
    /// Running workers, by group.
    members: Vec<(&'static str, WorkerHandle)>,
    started: Instant,
}

/// Polls `done` every 10 ms until it holds; an error after [`STEP_LIMIT`].
async fn wait_until(what: &str, done: impl Fn() -> bool) -> Result<(), CliError> {
    let deadline = Instant::now() + STEP_LIMIT;
    while !done() {
        if Instant::now() > deadline {
            return Err(CliError::other(format!(
                "the demo gave up after {} s waiting for {what}",
                STEP_LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Cents as `8325.00 EUR`.
fn money(cents: u64) -> String {
    format!("{}.{:02} EUR", cents / 100, cents % 100)
}

impl Demo<'_> {
    /// Serves the dashboard on what the story left until Ctrl-C.
    async fn serve_until(
        &mut self,
        listen: std::net::SocketAddr,
        interrupted: &CancellationToken,
    ) -> Result<(), CliError> {
        let shared = crate::serve::Shared::new(self.client.clone(), false, None, true)
            .sample_every(Duration::from_secs(2));
        let listener = crate::serve::bind(listen).await?;
        let local = listener.local_addr().unwrap_or(listen);
        self.out.line("")?;
        self.out.line(format!(
            "dashboard: http://{local}/ (the data stays until Ctrl-C)"
        ))?;
        crate::serve::serve_until(listener, shared, interrupted.clone().cancelled_owned())
            .await
            .map_err(|e| CliError::other(format!("serving on {local}: {e}")))
    }

    async fn story(&mut self, explicit: bool) -> Result<(), CliError> {
        if explicit {
            // Leftovers of an interrupted run.
            self.delete_topics().await?;
        }
        self.create_topics().await?;
        self.start_groups().await?;
        let published = self.publish_invoices().await?;
        let replayed = self.fix_and_replay(published).await?;
        self.delayed_reminder().await?;
        let fires = self.cron_job().await?;
        self.shutdown_and_summarise(published, replayed, fires)
            .await
    }

    async fn delete_topics(&self) -> Result<(), CliError> {
        self.client.remove_schedule(SCHEDULE).await?;
        // The fires' dedup markers (kept for a day) go too: nothing is left.
        let markers: Vec<String> = lock(&self.tally.reports)
            .iter()
            .filter_map(|(p, fire)| {
                let ms = OffsetDateTime::parse(fire, &Rfc3339).ok()?.unix_timestamp() * 1000;
                let id = format!("schedule:{SCHEDULE}:{ms}");
                Some(self.client.keys().dedup(REMINDERS, *p, &id))
            })
            .collect();
        for key in markers {
            redis::cmd("DEL")
                .arg(key)
                .query_async::<()>(&mut self.client.connection())
                .await
                .map_err(millrace::Error::from)?;
        }
        for topic in [INVOICES, REMINDERS] {
            self.client.delete_topic(topic).await?;
        }
        Ok(())
    }

    async fn create_topics(&mut self) -> Result<(), CliError> {
        for (topic, partitions) in [(INVOICES, 6), (REMINDERS, 2)] {
            self.client
                .create_topic(&TopicSpec::new(topic, partitions)?)
                .await?;
        }
        self.out.line(format!(
            "2. created topic {INVOICES} (6 partitions: a tenant's invoices stay in one, in order)"
        ))?;
        self.out.line(format!(
            "   and {REMINDERS} (2 partitions) for delayed reminders and cron jobs"
        ))?;
        Ok(())
    }

    async fn start_groups(&mut self) -> Result<(), CliError> {
        let notification = self.notification().await?;
        self.members.push(("notification", notification));
        for _ in 0..2 {
            let member = self.pdf_member().await?;
            self.members.push(("pdf-report", member));
        }
        let audit = self.audit().await?;
        self.members.push(("audit", audit));

        let pdf_parts = || -> Vec<Vec<u32>> {
            self.members
                .iter()
                .filter(|(g, _)| *g == "pdf-report")
                .map(|(_, m)| {
                    let mut p = m.owned_partitions(INVOICES);
                    p.sort_unstable();
                    p
                })
                .collect()
        };
        wait_until("pdf-report's two members to share the partitions", || {
            let parts = pdf_parts();
            parts.len() == 2
                && parts[0].len() == 3
                && parts[1].len() == 3
                && parts[0].iter().all(|p| !parts[1].contains(p))
        })
        .await?;
        let parts = pdf_parts();
        let lines = [
            "3. started three consumer groups; each sees every invoice:".to_string(),
            "   notification  1 member, ordered: emails each invoice; a tenant's invoices arrive in order"
                .to_string(),
            format!(
                "   pdf-report    2 members sharing the partitions: member 1 owns partitions {:?}, member 2 owns {:?}",
                parts[0], parts[1]
            ),
            "                 (renders PDFs; 3 attempts, 50 ms apart, then the dead-letter queue)"
                .to_string(),
            "   audit         1 member: records every invoice".to_string(),
        ];
        for line in lines {
            self.out.line(line)?;
        }
        Ok(())
    }

    /// `notification`: emails invoices (checking each tenant's order) and
    /// sends reminders and nightly reports.
    async fn notification(&self) -> Result<WorkerHandle, CliError> {
        let (t1, t2) = (self.tally.clone(), self.tally.clone());
        Ok(Worker::builder(&self.client, "notification")
            .block(Duration::from_millis(250))
            .drain_timeout(Duration::from_secs(5))
            .handle(move |inv: InvoiceCreated, _| {
                let t = t1.clone();
                async move {
                    let prev = lock(&t.last_seq)
                        .insert(inv.tenant.clone(), inv.seq)
                        .unwrap_or(0);
                    if inv.seq != prev + 1 {
                        t.out_of_order.fetch_add(1, Relaxed);
                    }
                    t.emails.fetch_add(1, Relaxed);
                    Ok(())
                }
            })
            .handle(move |r: Reminder, ctx| {
                let t = t2.clone();
                async move {
                    if r.kind == "nightly-report" {
                        let fire = ctx.headers.get(HEADER_FIRE_TIME).cloned();
                        let fire = fire.unwrap_or_else(|| "?".into());
                        lock(&t.reports).push((ctx.partition, fire));
                    } else {
                        lock(&t.reminder_at).get_or_insert_with(Instant::now);
                    }
                    Ok(())
                }
            })
            .start()
            .await?)
    }

    /// A `pdf-report` member. Until the fix, the renderer fails on totals
    /// that are a multiple of 37 euros.
    async fn pdf_member(&self) -> Result<WorkerHandle, CliError> {
        let t = self.tally.clone();
        Ok(Worker::builder(&self.client, "pdf-report")
            .heartbeat_interval(Duration::from_millis(200)) // rebalance quickly for the demo
            .block(Duration::from_millis(250))
            .drain_timeout(Duration::from_secs(5))
            .retry(
                RetryPolicy::attempts(3)
                    .fixed(Duration::from_millis(50))
                    .jitter(0.0),
            )
            .handle(move |inv: InvoiceCreated, _| {
                let t = t.clone();
                async move {
                    let fixed = t.fixed.load(Relaxed);
                    if !fixed && hits_the_bug(inv.cents) {
                        return Err(HandlerError::retry(format!(
                            "layout error: the total {} does not fit the total box",
                            money(inv.cents)
                        )));
                    }
                    t.rendered.fetch_add(1, Relaxed);
                    if fixed {
                        lock(&t.rendered_after_fix).push(inv.invoice);
                    }
                    Ok(())
                }
            })
            .start()
            .await?)
    }

    async fn audit(&self) -> Result<WorkerHandle, CliError> {
        let t = self.tally.clone();
        Ok(Worker::builder(&self.client, "audit")
            .block(Duration::from_millis(250))
            .drain_timeout(Duration::from_secs(5))
            .handle(move |_: InvoiceCreated, _| {
                t.audited.fetch_add(1, Relaxed);
                async { Ok(()) }
            })
            .start()
            .await?)
    }

    fn stats(&self, group: &str) -> StatsSnapshot {
        let mut sum = StatsSnapshot::default();
        for (_, m) in self.members.iter().filter(|(g, _)| *g == group) {
            add(&mut sum, &m.stats());
        }
        sum
    }

    /// Step 4: ten producers, one per tenant. Returns how many invoices
    /// went out.
    async fn publish_invoices(&mut self) -> Result<usize, CliError> {
        let start = Instant::now();
        let mut producers = tokio::task::JoinSet::<millrace::Result<usize>>::new();
        for (t, tenant) in TENANTS.into_iter().enumerate() {
            let client = self.client.clone();
            producers.spawn(async move {
                // Each publish is awaited, so a tenant's invoices go out in order.
                for seq in 1..=INVOICES_PER_TENANT {
                    let invoice = InvoiceCreated {
                        tenant: tenant.into(),
                        invoice: format!("inv-{tenant}-{seq}"),
                        seq,
                        cents: euros(t, seq) * 100,
                    };
                    client.publish(&invoice).await?;
                }
                Ok(INVOICES_PER_TENANT as usize)
            });
        }
        let mut published = 0;
        while let Some(done) = producers.join_next().await {
            published += done.map_err(|e| CliError::other(format!("a producer failed: {e}")))??;
        }
        self.out.line(format!(
            "4. 10 producers (one per tenant) published {published} invoices keyed by tenant in {} ms",
            ms(start.elapsed())
        ))?;
        self.out.line(format!(
            "   the PDF renderer has a bug: it fails on totals that are a multiple of {BAD_MULTIPLE} EUR"
        ))?;
        let t = self.tally.clone();
        let expected = published;
        wait_until("every group to see every invoice", || {
            let pdf = self.stats("pdf-report");
            t.emails.load(Relaxed) >= expected
                && t.audited.load(Relaxed) >= expected
                && t.rendered.load(Relaxed) + pdf.dead_lettered as usize >= expected
        })
        .await?;
        let pdf = self.stats("pdf-report");
        self.out.line(format!(
            "   after {} ms: notification emailed {} ({} out of order), audit recorded {}, pdf-report rendered {}",
            ms(start.elapsed()),
            t.emails.load(Relaxed),
            t.out_of_order.load(Relaxed),
            t.audited.load(Relaxed),
            t.rendered.load(Relaxed),
        ))?;
        let dead = self
            .client
            .dead_letters(INVOICES, Some("pdf-report"), usize::MAX)
            .await?;
        self.out.line(format!(
            "   {} invoices failed 3 times in pdf-report ({} retries) and went to the dead-letter queue",
            dead.len(),
            pdf.retried
        ))?;
        if let Some(d) = dead.first() {
            let name = millrace::envelope::decode::<InvoiceCreated>(&d.payload)
                .map(|i| i.invoice)
                .unwrap_or_else(|_| d.origin_id.clone());
            self.out.line(format!(
                "   e.g. {name} (message {}, {} attempts): {}",
                d.message_id, d.attempts, d.error
            ))?;
        }
        self.out.line(
            "   notification and audit handled all of them: one group's failure leaves the others alone",
        )?;
        Ok(published)
    }

    /// Step 5: deploy the fix, replay the dead letters to pdf-report.
    async fn fix_and_replay(&mut self, published: usize) -> Result<usize, CliError> {
        self.tally.fixed.store(true, Relaxed);
        self.out
            .line("5. deploying the fix: the renderer now handles every total")?;
        let replayed = self
            .client
            .replay_dead_letters(
                INVOICES,
                &Selection::All,
                Some("pdf-report"),
                ReplayTo::Group,
            )
            .await?;
        self.out.line(format!(
            "   replayed {replayed} dead letters to pdf-report only (notification and audit do not see them again)"
        ))?;
        let t = self.tally.clone();
        wait_until("pdf-report to render the replayed invoices", || {
            t.rendered.load(Relaxed) >= published
        })
        .await?;
        let left = self
            .client
            .dead_letters(INVOICES, None, usize::MAX)
            .await?
            .len();
        let mut names = lock(&t.rendered_after_fix).clone();
        names.sort();
        self.out.line(format!(
            "   dead-letter queue: {left} left; pdf-report has now rendered {} of {published} invoices, these at last:",
            t.rendered.load(Relaxed)
        ))?;
        self.out.line(format!("   {}", names.join(", ")))?;
        self.out.line(format!(
            "   notification still emailed {} and audit recorded {}: no duplicates",
            t.emails.load(Relaxed),
            t.audited.load(Relaxed)
        ))?;
        Ok(replayed)
    }

    /// Step 6: a reminder published with a 2 s delay.
    async fn delayed_reminder(&mut self) -> Result<(), CliError> {
        let reminder = Reminder {
            kind: "payment-reminder".into(),
            tenant: Some("acme".into()),
            invoice: Some("inv-acme-1".into()),
        };
        let sent = Instant::now();
        self.client
            .publish_with(&reminder, PublishOptions::new().delay(REMINDER_DELAY))
            .await?;
        self.out.line(format!(
            "6. published a payment reminder for inv-acme-1 with a delay of {} s (in real life: 14 days)",
            REMINDER_DELAY.as_secs()
        ))?;
        let t = self.tally.clone();
        wait_until("the delayed reminder", || lock(&t.reminder_at).is_some()).await?;
        let arrived = lock(&t.reminder_at).map_or(Duration::ZERO, |at| at - sent);
        let late = arrived.as_millis() as i128 - REMINDER_DELAY.as_millis() as i128;
        self.out.line(format!(
            "   notification got it {:.3} s later: {late} ms after it was due",
            arrived.as_secs_f64()
        ))?;
        Ok(())
    }

    /// Step 7: a cron schedule firing every second, for about 3 s.
    /// Returns how often it fired.
    async fn cron_job(&mut self) -> Result<usize, CliError> {
        let data = serde_json::json!({ "kind": "nightly-report", "report": "sales" });
        let spec = ScheduleSpec::new(SCHEDULE, "* * * * * *", REMINDERS, data)?.key("reports");
        self.client.add_schedule(&spec).await?;
        self.out.line(format!(
            "7. added the cron schedule {SCHEDULE} (\"* * * * * *\": every second; in real life \"0 2 * * *\") -> {REMINDERS}"
        ))?;
        Scheduler::new(&self.client)
            .run(tokio::time::sleep(SCHEDULER_RUN))
            .await;
        self.client.remove_schedule(SCHEDULE).await?;
        // Everything in the reminder topic but the one reminder is a fire.
        let fires =
            (self.client.describe_topic(REMINDERS).await?.length as usize).saturating_sub(1);
        let t = self.tally.clone();
        wait_until("the nightly reports", || lock(&t.reports).len() >= fires).await?;
        let mut times: Vec<String> = lock(&t.reports).iter().map(|(_, f)| f.clone()).collect();
        times.sort();
        // 2026-11-27T02:00:00Z -> 02:00:00
        let times: Vec<&str> = times
            .iter()
            .map(|t| t.split_once('T').map_or(t.as_str(), |(_, time)| time))
            .map(|t| t.trim_end_matches('Z'))
            .collect();
        self.out.line(format!(
            "   a scheduler ran for {} s: the schedule fired {fires} times, and notification got",
            SCHEDULER_RUN.as_secs(),
        ))?;
        self.out
            .line(format!("   the reports of {} (UTC)", times.join(", ")))?;
        self.out.line("   removed the schedule")?;
        Ok(fires)
    }

    /// Step 8: graceful shutdown and the summary table.
    async fn shutdown_and_summarise(
        &mut self,
        published: usize,
        replayed: usize,
        fires: usize,
    ) -> Result<(), CliError> {
        let stopping = Instant::now();
        let members = std::mem::take(&mut self.members);
        let count = members.len();
        let finals = join_all(
            members
                .into_iter()
                .map(|(group, m)| async move { (group, m.shutdown().await) }),
        )
        .await;
        let mut per_group: Vec<(&str, usize, StatsSnapshot)> = Vec::new();
        for (group, result) in finals {
            let stats = result?;
            match per_group.iter_mut().find(|(g, _, _)| *g == group) {
                Some((_, n, sum)) => {
                    *n += 1;
                    add(sum, &stats);
                }
                None => per_group.push((group, 1, stats)),
            }
        }
        self.out.line(format!(
            "8. shut down {count} workers gracefully in {} ms: each finished its messages, acked them and left its group",
            ms(stopping.elapsed())
        ))?;
        self.out.line("")?;

        let t = &self.tally;
        let what = |group: &str| match group {
            "notification" => format!(
                "{} invoice emails ({} out of order), {} reminder, {} nightly reports",
                t.emails.load(Relaxed),
                t.out_of_order.load(Relaxed),
                usize::from(lock(&t.reminder_at).is_some()),
                lock(&t.reports).len()
            ),
            "pdf-report" => format!("{} PDFs", t.rendered.load(Relaxed)),
            _ => format!("{} invoices recorded", t.audited.load(Relaxed)),
        };
        let mut rows = Vec::new();
        let mut total = StatsSnapshot::default();
        let mut total_replayed = 0;
        for (group, n, s) in &per_group {
            let r = if *group == "pdf-report" { replayed } else { 0 };
            total_replayed += r;
            add(&mut total, s);
            rows.push(vec![
                group.to_string(),
                n.to_string(),
                s.handled.to_string(),
                s.retried.to_string(),
                s.dead_lettered.to_string(),
                r.to_string(),
                what(group),
            ]);
        }
        rows.push(vec![
            "total".into(),
            count.to_string(),
            total.handled.to_string(),
            total.retried.to_string(),
            total.dead_lettered.to_string(),
            total_replayed.to_string(),
            String::new(),
        ]);
        let header = [
            "GROUP",
            "MEMBERS",
            "HANDLED",
            "RETRIED",
            "DEAD-LETTERED",
            "REPLAYED",
            "WHAT",
        ];
        self.out.line(table(&header, &rows))?;
        self.out.line("")?;
        self.out.line(format!(
            "published {published} invoices, 1 delayed reminder and {fires} scheduled reports; done in {:.1} s",
            self.started.elapsed().as_secs_f64()
        ))?;
        Ok(())
    }

    /// After an error or Ctrl-C: stop the workers without lingering. On the
    /// private server (about to go) they simply stop; elsewhere they leave
    /// their groups, within a few seconds.
    async fn stop_quickly(&mut self, private: bool) {
        let members = std::mem::take(&mut self.members);
        if private {
            for (_, m) in members {
                m.abort();
            }
            return;
        }
        let all = join_all(members.into_iter().map(|(_, m)| m.shutdown()));
        let _ = tokio::time::timeout(Duration::from_secs(3), all).await;
    }
}

fn add(sum: &mut StatsSnapshot, s: &StatsSnapshot) {
    sum.handled += s.handled;
    sum.failed += s.failed;
    sum.retried += s.retried;
    sum.dead_lettered += s.dead_lettered;
    sum.panicked += s.panicked;
    sum.acked += s.acked;
}
