//! The [`Scheduler`]: publishes every schedule's messages at their fire
//! times. Schedules themselves (specs, [`Timetable`], add / list / remove)
//! are in [`crate::schedule`], which explains missed fires and times.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::Client;
use crate::duration::Doubling;
use crate::error::{Error, Result};
use crate::producer::{Producer, PublishOptions, Record};
use crate::schedule::*;
use crate::topic::Catalog;

/// First wait after a failure (Redis unreachable); doubles up to the max.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Redis's clock, as of the last reload, carried forward on the local
/// monotonic clock.
#[derive(Clone, Copy, Debug)]
struct Clock {
    redis_ms: u64,
    at: Instant,
}

impl Clock {
    fn now_ms(&self) -> u64 {
        self.redis_ms + self.at.elapsed().as_millis() as u64
    }

    fn instant_of(&self, ms: u64) -> Instant {
        self.at + Duration::from_millis(ms.saturating_sub(self.redis_ms))
    }
}

/// One loaded schedule and what this scheduler knows of its last fire.
struct Entry {
    /// The stored JSON: a changed one is a replaced schedule.
    raw: String,
    spec: ScheduleSpec,
    timetable: Timetable,
    last_ms: u64,
}

/// What happened to one fire.
enum Fired {
    /// Published now (or found already published under its dedup id).
    Published { duplicate: bool },
    /// Another scheduler got there first: `last` is at or past the fire.
    Behind(u64),
    /// The schedule was removed or replaced since the last reload.
    Changed,
}

/// Publishes every schedule's messages at their fire times, until shut down.
///
/// ```no_run
/// # async fn run(client: millrace::Client) {
/// millrace::Scheduler::new(&client)
///     .run(async { tokio::signal::ctrl_c().await.ok(); })
///     .await;
/// # }
/// ```
#[must_use = "a Scheduler does nothing until .run() is awaited"]
pub struct Scheduler {
    catalog: Catalog,
    producer: Producer,
    reload_interval: Duration,
}

impl Scheduler {
    /// A scheduler on this client's connection and prefix.
    pub fn new(client: &Client) -> Self {
        Scheduler {
            catalog: client.catalog().clone(),
            producer: client.producer().clone(),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }

    /// How often schedules are reloaded, picking up adds, replacements and
    /// removals (default 5 s).
    pub fn reload_interval(mut self, every: Duration) -> Self {
        self.reload_interval = every.max(Duration::from_millis(10));
        self
    }

    /// Runs until `shutdown` completes. Redis failures are logged and
    /// retried with backoff; nothing here panics or gives up.
    pub async fn run<F: Future>(self, shutdown: F) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut warned: HashMap<String, String> = HashMap::new();
        let mut clock: Option<Clock> = None;
        let mut next_reload = Instant::now();
        // Separate backoffs: a reload that works says nothing about publishing.
        let mut reload_retry = Doubling::new(RETRY_MIN, RETRY_MAX);
        let mut fire_retry = Doubling::new(RETRY_MIN, RETRY_MAX);
        let mut paused_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if now >= next_reload && paused_until.is_none_or(|p| now >= p) {
                let reload = self.reload(&mut entries, &mut warned);
                let outcome = tokio::select! {
                    biased;
                    _ = &mut shutdown => return,
                    r = reload => r,
                };
                match outcome {
                    Ok(c) => {
                        clock = Some(c);
                        next_reload = Instant::now() + self.reload_interval;
                        reload_retry.reset();
                        paused_until = None;
                    }
                    Err(e) => {
                        let wait = reload_retry.next_wait();
                        tracing::warn!(error = %e, retry_in = ?wait, "scheduler: loading schedules failed");
                        paused_until = Some(Instant::now() + wait);
                        next_reload = Instant::now();
                    }
                }
            }
            // The earliest fire, if the clock is known and nothing failed
            // just now.
            let due = match (clock, paused_until) {
                (Some(c), None) => {
                    let now_ms = c.now_ms();
                    entries
                        .values()
                        .filter_map(|e| {
                            Some((e.timetable.due(e.last_ms, now_ms)?, e.spec.name.clone()))
                        })
                        .min()
                        .map(|(fire, name)| (c.instant_of(fire), fire, name))
                }
                _ => None,
            };
            let mut wake = paused_until.unwrap_or(next_reload).max(next_reload);
            if let Some((at, _, _)) = &due {
                wake = wake.min(*at);
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            let Some((at, fire_ms, name)) = due else {
                continue;
            };
            if Instant::now() < at {
                // Woken for a reload.
                continue;
            }
            let Some(entry) = entries.get(&name) else {
                continue;
            };
            let result = tokio::select! {
                biased;
                _ = &mut shutdown => return,
                r = self.fire(entry, fire_ms) => r,
            };
            let Some(entry) = entries.get_mut(&name) else {
                continue;
            };
            match result {
                Ok(Fired::Published { duplicate }) => {
                    tracing::debug!(schedule = %name, fire_time = %fire_time_rfc3339(fire_ms), duplicate, "schedule fired");
                    entry.last_ms = entry.last_ms.max(fire_ms);
                    fire_retry.reset();
                }
                Ok(Fired::Behind(stored)) => {
                    entry.last_ms = entry.last_ms.max(stored);
                }
                Ok(Fired::Changed) => {
                    next_reload = Instant::now();
                }
                Err(e) if e.is_invalid_input() || matches!(e, Error::TopicNotFound(_)) => {
                    // Retrying cannot help (the topic was deleted, the
                    // payload is too large): skip this fire.
                    tracing::warn!(schedule = %name, fire_time = %fire_time_rfc3339(fire_ms), error = %e, "scheduler: fire skipped");
                    entry.last_ms = entry.last_ms.max(fire_ms);
                }
                Err(e) => {
                    // Redis unreachable, failing over, out of memory...: try
                    // again after a pause. The fire stays due; if later ones
                    // pass meanwhile, only the latest is published.
                    let wait = fire_retry.next_wait();
                    tracing::warn!(schedule = %name, fire_time = %fire_time_rfc3339(fire_ms), error = %e, retry_in = ?wait, "scheduler: publish failed; will retry");
                    paused_until = Some(Instant::now() + wait);
                    next_reload = Instant::now();
                }
            }
        }
    }

    /// Reads the specs, the last fires and Redis's clock.
    async fn reload(
        &self,
        entries: &mut HashMap<String, Entry>,
        warned: &mut HashMap<String, String>,
    ) -> Result<Clock> {
        let client = &self.catalog;
        let raw = client.store().schedules_json().await?;
        let last = schedule_last_fires(client).await?;
        let now_ms = client.redis_time_ms().await?;
        let clock = Clock {
            redis_ms: now_ms,
            at: Instant::now(),
        };
        entries.retain(|name, _| raw.contains_key(name));
        warned.retain(|name, _| raw.contains_key(name));
        for (name, json) in raw {
            let stored_last = last.get(&name).copied();
            if let Some(e) = entries.get_mut(&name)
                && e.raw == json
            {
                e.last_ms = e.last_ms.max(stored_last.unwrap_or(0));
                continue;
            }
            let parsed = decode_spec(&name, &json).and_then(|spec| {
                spec.validate()?;
                let timetable = spec.timetable()?;
                Ok((spec, timetable))
            });
            match parsed {
                Ok((spec, timetable)) => {
                    warned.remove(&name);
                    // No mark at all (written by hand): start from now.
                    let last_ms = stored_last.unwrap_or(now_ms);
                    entries.insert(
                        name,
                        Entry {
                            raw: json,
                            spec,
                            timetable,
                            last_ms,
                        },
                    );
                }
                Err(e) => {
                    entries.remove(&name);
                    if warned.get(&name) != Some(&json) {
                        tracing::warn!(schedule = %name, error = %e, "scheduler: ignoring an unusable schedule");
                        warned.insert(name, json);
                    }
                }
            }
        }
        Ok(clock)
    }

    /// Publishes one fire unless it is already past: checks the stored spec
    /// and `last`, publishes with the fire's dedup id, then marks `last`.
    async fn fire(&self, entry: &Entry, fire_ms: u64) -> Result<Fired> {
        let client = &self.catalog;
        let name = &entry.spec.name;
        let stored = client.store().stored_schedule(name).await?;
        if stored.json.as_deref() != Some(entry.raw.as_str()) {
            return Ok(Fired::Changed);
        }
        if let Some(last) = stored.last_ms
            && last >= fire_ms
        {
            return Ok(Fired::Behind(last));
        }
        let spec = &entry.spec;
        let mut headers = spec.headers.clone();
        headers.insert(HEADER_SCHEDULE.into(), name.clone());
        headers.insert(HEADER_FIRE_TIME.into(), fire_time_rfc3339(fire_ms));
        let mut options = PublishOptions::new()
            .headers(headers)
            .dedup_id(format!("schedule:{name}:{fire_ms}"))
            .dedup_ttl(FIRE_DEDUP_TTL);
        if let Some(k) = &spec.key {
            options = options.key(k);
        }
        let record = Record::encode(&spec.data)?.options(options);
        let receipt = self.producer.publish(&spec.topic, record).await?;
        let reply = client.store().mark_fired(name, fire_ms).await;
        if let Err(e) = reply {
            // Published all the same; the next fire's mark moves `last` on,
            // and the dedup id stops a republish meanwhile.
            tracing::warn!(schedule = %name, error = %e, "scheduler: recording the fire failed");
        }
        Ok(Fired::Published {
            duplicate: receipt.duplicate,
        })
    }
}
