//! Prometheus metrics of the workers running in this process: the series
//! `millrace worker` serves at `/metrics`, for a service of your own.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::client::Client;
use crate::consumer::{LatencyHistogram, WorkerStats};
use crate::group::GroupInfo;

/// The workers whose metrics a scrape reports, and the client that reads
/// their groups' lag, pending counts, members, leases and dead letters from
/// Redis.
///
/// [`Metrics::render`] returns the Prometheus text format (the same series
/// `millrace worker` serves at `/metrics`), each family with its `# HELP`
/// and `# TYPE` lines. Labels are only `topic`, `group` and `partition`
/// (and a histogram's `le`), so the number of series is bounded by the
/// topics, groups and partitions watched.
///
/// | Series | Type | Labels | From |
/// |---|---|---|---|
/// | `millrace_handled_total` | counter | `topic`, `group` | [`WorkerStats::handled`] |
/// | `millrace_failed_total` | counter | `topic`, `group` | [`WorkerStats::failed`] (errors and panics) |
/// | `millrace_retried_total` | counter | `topic`, `group` | [`WorkerStats::retried`] |
/// | `millrace_dead_lettered_total` | counter | `topic`, `group` | [`WorkerStats::dead_lettered`] |
/// | `millrace_panicked_total` | counter | `topic`, `group` | [`WorkerStats::panicked`] |
/// | `millrace_cancelled_total` | counter | `topic`, `group` | [`WorkerStats::cancelled`] |
/// | `millrace_acked_total` | counter | `topic`, `group` | [`WorkerStats::acked`] |
/// | `millrace_stale_acks_total` | counter | `topic`, `group` | [`WorkerStats::stale_acks`] |
/// | `millrace_unreplicated_total` | counter | `topic`, `group` | [`WorkerStats::unreplicated`]: acks and dead-letterings no replica confirmed in time (with [`WorkerBuilder::acks`](crate::WorkerBuilder::acks)) |
/// | `millrace_trimmed_unhandled_total` | counter | `topic`, `group` | [`WorkerStats::trimmed_unhandled`] |
/// | `millrace_rebalances_total` | counter | `topic`, `group` | [`WorkerStats::rebalances`] |
/// | `millrace_handler_duration_seconds` | histogram | `topic`, `group` | [`WorkerStats::latency`] (buckets: [`LATENCY_BUCKETS`](crate::LATENCY_BUCKETS)) |
/// | `millrace_end_to_end_latency_seconds` | histogram | `topic`, `group` | [`WorkerStats::end_to_end`]: publish to the first attempt's start (buckets: [`END_TO_END_BUCKETS`](crate::END_TO_END_BUCKETS)) |
/// | `millrace_consumer_lag_messages` | gauge | `topic`, `group`, `partition` | [`Client::describe_group`] |
/// | `millrace_pending_messages` | gauge | `topic`, `group`, `partition` | [`Client::describe_group`] |
/// | `millrace_owned_partitions` | gauge | `topic`, `group` | partition leases held by the watched members |
/// | `millrace_group_members` | gauge | `topic`, `group` | live members of the group, every process ([`Client::describe_group`]) |
/// | `millrace_published_total` | counter | `topic` | messages ever added to the topic's streams, by any producer ([`TopicOverview::published`](crate::TopicOverview::published), once per topic) |
/// | `millrace_dlq_messages` | gauge | `topic` | [`TopicOverview::dlq_length`](crate::TopicOverview::dlq_length) (once per topic) |
/// | `millrace_redis_up` | gauge | none | 0 if a group could not be read at this scrape |
///
/// The worker counters and the histograms are read from memory: they count
/// what this process did (aggregate them across processes with `sum`). The
/// gauges and `millrace_published_total` describe the whole group or topic,
/// whichever process reports them (aggregate them with `max`), and cost a
/// few Redis round trips per watched group and topic at each scrape. Redis being unreachable does not fail the scrape: the gauges it
/// would have given are left out and `millrace_redis_up` is 0. Workers
/// added more than once for one topic and group (several workers of a
/// group in one process) give one series each, their counters summed.
///
/// `Metrics` is a cheap handle (clones share the same list of workers), so
/// it can be the state of an HTTP route and still take workers started
/// later. Serving it with axum:
///
/// ```no_run
/// use axum::extract::State;
/// use axum::http::header::CONTENT_TYPE;
/// use axum::response::IntoResponse;
/// use axum::routing::get;
/// use millrace::{Client, Metrics, Worker};
///
/// async fn metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
///     ([(CONTENT_TYPE, Metrics::CONTENT_TYPE)], metrics.render().await)
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::open("redis://127.0.0.1:6379").await?;
/// let worker = Worker::builder(&client, "pdf-report")
///     .handle_raw("erp.v1.invoice.created", |_msg, _ctx| async { Ok(()) })
///     .build()?;
///
/// let registry = Metrics::new(&client);
/// // Before `start`, which consumes the worker.
/// registry.add(
///     "erp.v1.invoice.created",
///     "pdf-report",
///     worker.member_id(),
///     worker.stats(),
/// );
/// let handle = worker.start().await?;
///
/// let app = axum::Router::new()
///     .route("/metrics", get(metrics))
///     .with_state(registry);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.ok(); })
///     .await?;
/// handle.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Metrics {
    client: Client,
    watched: Arc<Mutex<Vec<Watched>>>,
}

/// One worker's part in a scrape.
#[derive(Clone)]
struct Watched {
    topic: String,
    group: String,
    member: String,
    stats: Arc<WorkerStats>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let watched = self.snapshot();
        f.debug_struct("Metrics")
            .field(
                "watched",
                &watched
                    .iter()
                    .map(|w| (&w.topic, &w.group, &w.member))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The `Content-Type` of what [`Metrics::render`] returns (Prometheus
    /// text format 0.0.4).
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4";

    /// An empty registry whose gauges are read through `client`.
    pub fn new(client: &Client) -> Metrics {
        Metrics {
            client: client.clone(),
            watched: Arc::default(),
        }
    }

    /// Adds a worker's consumption of `topic` in `group`: `member` is its
    /// [`Worker::member_id`](crate::Worker::member_id) (for the partitions it
    /// owns) and `stats` its [`Worker::stats`](crate::Worker::stats), taken
    /// before [`Worker::start`](crate::Worker::start).
    ///
    /// A worker's counters cover all the topics it handles: add a worker
    /// that handles several topics once per topic and each topic's series
    /// show the worker's totals (so do not sum them over topics).
    pub fn add(&self, topic: &str, group: &str, member: &str, stats: Arc<WorkerStats>) {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Watched {
                topic: topic.to_string(),
                group: group.to_string(),
                member: member.to_string(),
                stats,
            });
    }

    /// The metrics now, in the Prometheus text format
    /// ([`Metrics::CONTENT_TYPE`]). Reads each watched group (and each
    /// topic's dead letters) from Redis; a failed read leaves those gauges
    /// out and sets `millrace_redis_up` to 0 rather than failing.
    pub async fn render(&self) -> String {
        let mut scrape = Scrape {
            groups: watched_groups(&self.snapshot()),
            topics: Vec::new(),
            redis_up: true,
        };
        for g in &mut scrape.groups {
            match self.client.describe_group(&g.topic, &g.group).await {
                Ok(info) => g.info = Some(info),
                Err(_) => scrape.redis_up = false,
            }
            let base = g.topic.strip_suffix(".dlq").unwrap_or(&g.topic);
            if !scrape.topics.iter().any(|t| t.topic == base)
                && let Ok(t) = self.client.topic_overview(base).await
            {
                scrape.topics.push(TopicFacts {
                    topic: t.name,
                    dlq: t.dlq_length,
                    published: t.published,
                });
            }
        }
        let mut out = String::new();
        scrape.write(&mut out);
        out
    }

    fn snapshot(&self) -> Vec<Watched> {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Where a family's samples come from.
#[derive(Clone, Copy)]
enum Source {
    Counter(fn(&WorkerStats) -> &AtomicU64),
    Histogram(fn(&WorkerStats) -> &LatencyHistogram),
    /// Per partition, from the group's description.
    Lag,
    Pending,
    OwnedPartitions,
    GroupMembers,
    /// Per topic, from its overview.
    Published,
    Dlq,
    RedisUp,
}

/// One metric family: what `# HELP` and `# TYPE` say, and its labels
/// (besides a histogram's `le`).
struct Family {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    source: Source,
}

impl Family {
    /// `{topic="...",...}` with the family's label names and these values.
    fn labels(&self, values: &[&str]) -> String {
        debug_assert_eq!(self.labels.len(), values.len(), "{}", self.name);
        let pairs: Vec<(&str, &str)> = self
            .labels
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect();
        labels(&pairs)
    }

    fn kind(&self) -> &'static str {
        match self.source {
            Source::Counter(_) | Source::Published => "counter",
            Source::Histogram(_) => "histogram",
            _ => "gauge",
        }
    }
}

const TG: &[&str] = &["topic", "group"];
const TGP: &[&str] = &["topic", "group", "partition"];

/// Every family a scrape has, in its order. `scripts/check-dashboards`
/// reads the names and sources from here (keep `name:` before `source:`).
const FAMILIES: [Family; 20] = [
    Family {
        name: "millrace_handled_total",
        help: "Messages whose handler succeeded.",
        labels: TG,
        source: Source::Counter(|s| &s.handled),
    },
    Family {
        name: "millrace_failed_total",
        help: "Handler failures (errors, panics and timeouts), retried or not.",
        labels: TG,
        source: Source::Counter(|s| &s.failed),
    },
    Family {
        name: "millrace_retried_total",
        help: "Handler failures that were retried.",
        labels: TG,
        source: Source::Counter(|s| &s.retried),
    },
    Family {
        name: "millrace_dead_lettered_total",
        help: "Messages moved to the dead-letter queue.",
        labels: TG,
        source: Source::Counter(|s| &s.dead_lettered),
    },
    Family {
        name: "millrace_panicked_total",
        help: "Handler panics.",
        labels: TG,
        source: Source::Counter(|s| &s.panicked),
    },
    Family {
        name: "millrace_cancelled_total",
        help: "Messages cancelled by a request (skipped, stopped, or their retry given up).",
        labels: TG,
        source: Source::Counter(|s| &s.cancelled),
    },
    Family {
        name: "millrace_acked_total",
        help: "Messages acknowledged.",
        labels: TG,
        source: Source::Counter(|s| &s.acked),
    },
    Family {
        name: "millrace_stale_acks_total",
        help: "Acks refused because the partition's lease had moved to another member.",
        labels: TG,
        source: Source::Counter(|s| &s.stale_acks),
    },
    Family {
        name: "millrace_unreplicated_total",
        help: "Acks and dead-letterings no replica confirmed in time (a failover may hand them back).",
        labels: TG,
        source: Source::Counter(|s| &s.unreplicated),
    },
    Family {
        name: "millrace_trimmed_unhandled_total",
        help: "Pending messages found trimmed away before they were handled.",
        labels: TG,
        source: Source::Counter(|s| &s.trimmed_unhandled),
    },
    Family {
        name: "millrace_rebalances_total",
        help: "Partitions gained or lost by this process.",
        labels: TG,
        source: Source::Counter(|s| &s.rebalances),
    },
    Family {
        name: "millrace_handler_duration_seconds",
        help: "Handler run time, every attempt.",
        labels: TG,
        source: Source::Histogram(|s| &s.latency),
    },
    Family {
        name: "millrace_end_to_end_latency_seconds",
        help: "From a message's publish time to the start of its first attempt.",
        labels: TG,
        source: Source::Histogram(|s| &s.end_to_end),
    },
    Family {
        name: "millrace_consumer_lag_messages",
        help: "Messages not yet delivered to the group, per partition.",
        labels: TGP,
        source: Source::Lag,
    },
    Family {
        name: "millrace_pending_messages",
        help: "Messages delivered to the group and not yet acknowledged, per partition.",
        labels: TGP,
        source: Source::Pending,
    },
    Family {
        name: "millrace_owned_partitions",
        help: "Partition leases held by this process's members of the group (ordered mode).",
        labels: TG,
        source: Source::OwnedPartitions,
    },
    Family {
        name: "millrace_group_members",
        help: "Live members of the group, in every process.",
        labels: TG,
        source: Source::GroupMembers,
    },
    Family {
        name: "millrace_published_total",
        help: "Messages ever added to the topic's streams (by any producer; Redis's entries-added).",
        labels: &["topic"],
        source: Source::Published,
    },
    Family {
        name: "millrace_dlq_messages",
        help: "Dead letters of the topic, all groups.",
        labels: &["topic"],
        source: Source::Dlq,
    },
    Family {
        name: "millrace_redis_up",
        help: "1, or 0 when reading a group from Redis failed at this scrape.",
        labels: &[],
        source: Source::RedisUp,
    },
];

/// One watched (topic, group) at a scrape: the stats of the workers added
/// for it (each once), their member ids, and the group as Redis describes
/// it (`None` when that read failed).
struct WatchedGroup {
    topic: String,
    group: String,
    members: Vec<String>,
    stats: Vec<Arc<WorkerStats>>,
    info: Option<GroupInfo>,
}

/// The watched workers by (topic, group), in the order first added.
fn watched_groups(watched: &[Watched]) -> Vec<WatchedGroup> {
    let mut groups: Vec<WatchedGroup> = Vec::new();
    for w in watched {
        let i = match groups
            .iter()
            .position(|g| g.topic == w.topic && g.group == w.group)
        {
            Some(i) => i,
            None => {
                groups.push(WatchedGroup {
                    topic: w.topic.clone(),
                    group: w.group.clone(),
                    members: Vec::new(),
                    stats: Vec::new(),
                    info: None,
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        if !g.members.contains(&w.member) {
            g.members.push(w.member.clone());
        }
        if !g.stats.iter().any(|s| Arc::ptr_eq(s, &w.stats)) {
            g.stats.push(w.stats.clone());
        }
    }
    groups
}

/// A watched topic's figures at a scrape (a `.dlq` view's base topic, once).
struct TopicFacts {
    topic: String,
    dlq: u64,
    published: u64,
}

/// What one scrape read, written family by family.
struct Scrape {
    groups: Vec<WatchedGroup>,
    topics: Vec<TopicFacts>,
    redis_up: bool,
}

impl Scrape {
    fn write(&self, out: &mut String) {
        for f in &FAMILIES {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind());
            self.write_samples(out, f);
        }
    }

    fn write_samples(&self, out: &mut String, f: &Family) {
        let name = f.name;
        match f.source {
            Source::Counter(get) => {
                for g in &self.groups {
                    let l = f.labels(&[&g.topic, &g.group]);
                    let v: u64 = g.stats.iter().map(|s| get(s).load(Ordering::Relaxed)).sum();
                    let _ = writeln!(out, "{name}{l} {v}");
                }
            }
            Source::Histogram(get) => {
                for g in &self.groups {
                    write_histogram(
                        out,
                        f,
                        &[&g.topic, &g.group],
                        g.stats.iter().map(|s| get(s)),
                    );
                }
            }
            Source::Lag | Source::Pending => {
                for g in &self.groups {
                    let Some(info) = &g.info else { continue };
                    for p in &info.partitions {
                        let l = f.labels(&[&g.topic, &g.group, &p.partition.to_string()]);
                        let v = if matches!(f.source, Source::Lag) {
                            p.lag
                        } else {
                            p.pending
                        };
                        let _ = writeln!(out, "{name}{l} {v}");
                    }
                }
            }
            Source::OwnedPartitions | Source::GroupMembers => {
                for g in &self.groups {
                    let Some(info) = &g.info else { continue };
                    let v = if matches!(f.source, Source::GroupMembers) {
                        info.members.len()
                    } else {
                        info.partitions
                            .iter()
                            .filter(|p| p.owner.as_ref().is_some_and(|o| g.members.contains(o)))
                            .count()
                    };
                    let l = f.labels(&[&g.topic, &g.group]);
                    let _ = writeln!(out, "{name}{l} {v}");
                }
            }
            Source::Published | Source::Dlq => {
                for t in &self.topics {
                    let l = f.labels(&[&t.topic]);
                    let v = if matches!(f.source, Source::Dlq) {
                        t.dlq
                    } else {
                        t.published
                    };
                    let _ = writeln!(out, "{name}{l} {v}");
                }
            }
            Source::RedisUp => {
                let _ = writeln!(out, "{name} {}", u8::from(self.redis_up));
            }
        }
    }
}

/// `{k="v",...}`, values escaped as the text format wants (`\\`, `\"`,
/// `\n`).
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// One (topic, group)'s histogram: the buckets, sum and count of
/// `histograms` added up (they share their bounds).
fn write_histogram<'a>(
    out: &mut String,
    f: &Family,
    values: &[&str],
    histograms: impl Iterator<Item = &'a LatencyHistogram>,
) {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let (mut count, mut sum) = (0, 0.0);
    for h in histograms {
        let (b, c, s) = h.cumulative();
        if buckets.is_empty() {
            buckets = b;
        } else {
            for (acc, (_, n)) in buckets.iter_mut().zip(b) {
                acc.1 += n;
            }
        }
        count += c;
        sum += s;
    }
    let name = f.name;
    let pairs: Vec<(&str, &str)> = f
        .labels
        .iter()
        .copied()
        .zip(values.iter().copied())
        .collect();
    let l = labels(&pairs);
    let bucket = |le: &str| {
        let mut with_le = pairs.clone();
        with_le.push(("le", le));
        labels(&with_le)
    };
    for (le, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{} {n}", bucket(&le.to_string()));
    }
    let _ = writeln!(out, "{name}_bucket{} {count}", bucket("+Inf"));
    let _ = writeln!(out, "{name}_sum{l} {sum}");
    let _ = writeln!(out, "{name}_count{l} {count}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{MemberInfo, PartitionInfo};

    fn group(topic: &str, group: &str, stats: Vec<Arc<WorkerStats>>) -> WatchedGroup {
        WatchedGroup {
            topic: topic.into(),
            group: group.into(),
            members: vec!["m1".into()],
            stats,
            info: None,
        }
    }

    fn text(scrape: &Scrape) -> String {
        let mut out = String::new();
        scrape.write(&mut out);
        out
    }

    #[test]
    fn stats_render_as_prometheus_text() {
        let stats = Arc::new(WorkerStats::default());
        stats.handled.fetch_add(3, Ordering::Relaxed);
        stats.panicked.fetch_add(1, Ordering::Relaxed);
        stats.cancelled.fetch_add(2, Ordering::Relaxed);
        stats.end_to_end.record(std::time::Duration::from_secs(45));
        let out = text(&Scrape {
            groups: vec![group("erp.v1.invoice.created", "pdf", vec![stats])],
            topics: vec![],
            redis_up: true,
        });
        let l = "{topic=\"erp.v1.invoice.created\",group=\"pdf\"}";
        for line in [
            format!("millrace_handled_total{l} 3"),
            format!("millrace_panicked_total{l} 1"),
            format!("millrace_cancelled_total{l} 2"),
            format!("millrace_failed_total{l} 0"),
            "millrace_handler_duration_seconds_bucket{topic=\"erp.v1.invoice.created\",group=\"pdf\",le=\"0.001\"} 0".into(),
            "millrace_handler_duration_seconds_bucket{topic=\"erp.v1.invoice.created\",group=\"pdf\",le=\"10\"} 0".into(),
            "millrace_handler_duration_seconds_bucket{topic=\"erp.v1.invoice.created\",group=\"pdf\",le=\"+Inf\"} 0".into(),
            format!("millrace_handler_duration_seconds_sum{l} 0"),
            "millrace_end_to_end_latency_seconds_bucket{topic=\"erp.v1.invoice.created\",group=\"pdf\",le=\"30\"} 0".into(),
            "millrace_end_to_end_latency_seconds_bucket{topic=\"erp.v1.invoice.created\",group=\"pdf\",le=\"60\"} 1".into(),
            format!("millrace_end_to_end_latency_seconds_sum{l} 45"),
            format!("millrace_end_to_end_latency_seconds_count{l} 1"),
            "millrace_redis_up 1".into(),
        ] {
            assert!(out.contains(&format!("{line}\n")), "{line} in:\n{out}");
        }
        // Without the group's description, no gauges of it.
        assert!(!out.contains("millrace_group_members{"), "{out}");
    }

    #[test]
    fn each_family_is_one_block_after_its_help_and_type() {
        let mut info = GroupInfo::default();
        info.members.push(MemberInfo::default());
        for partition in 0..2 {
            info.partitions.push(PartitionInfo {
                partition,
                ..Default::default()
            });
        }
        let mut a = group("a", "g", vec![Arc::default()]);
        a.info = Some(info.clone());
        let mut b = group("b", "g", vec![Arc::default()]);
        b.info = Some(info);
        let out = text(&Scrape {
            groups: vec![a, b],
            topics: vec![
                TopicFacts {
                    topic: "a".into(),
                    dlq: 0,
                    published: 5,
                },
                TopicFacts {
                    topic: "b".into(),
                    dlq: 3,
                    published: 9,
                },
            ],
            redis_up: false,
        });
        let mut seen: Vec<&str> = Vec::new();
        let mut current = "";
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!seen.contains(&name), "{name} twice");
                seen.push(name);
                current = name;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(rest.starts_with(&format!("{current} ")), "{line}");
                continue;
            }
            let series = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| series.strip_suffix(s))
                .filter(|f| *f == current)
                .unwrap_or(series);
            assert_eq!(family, current, "{line} outside its family's block");
        }
        let names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        assert_eq!(seen, names);
        assert!(out.contains("millrace_group_members{topic=\"b\",group=\"g\"} 1\n"));
        assert!(out.contains(
            "millrace_consumer_lag_messages{topic=\"a\",group=\"g\",partition=\"1\"} 0\n"
        ));
        assert!(out.contains("millrace_dlq_messages{topic=\"b\"} 3\n"));
        assert!(out.contains("millrace_published_total{topic=\"a\"} 5\n"));
        assert!(out.contains("millrace_redis_up 0\n"));
    }

    #[test]
    fn workers_of_one_group_give_one_series_their_counters_summed() {
        let (s1, s2) = (
            Arc::new(WorkerStats::default()),
            Arc::new(WorkerStats::default()),
        );
        s1.handled.fetch_add(2, Ordering::Relaxed);
        s2.handled.fetch_add(5, Ordering::Relaxed);
        s1.latency.record(std::time::Duration::from_millis(3));
        s2.latency.record(std::time::Duration::from_millis(30));
        let w = |member: &str, stats: &Arc<WorkerStats>| Watched {
            topic: "t".into(),
            group: "g".into(),
            member: member.into(),
            stats: stats.clone(),
        };
        // s1 added twice (the same worker) counts once.
        let mut groups = watched_groups(&[w("m1", &s1), w("m2", &s2), w("m1", &s1)]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].members, ["m1", "m2"]);
        let mut info = GroupInfo::default();
        for (partition, owner) in [(0, "m1"), (1, "m2"), (2, "elsewhere")] {
            info.partitions.push(PartitionInfo {
                partition,
                owner: Some(owner.into()),
                ..Default::default()
            });
        }
        groups[0].info = Some(info);
        let out = text(&Scrape {
            groups,
            topics: vec![],
            redis_up: true,
        });
        let l = "{topic=\"t\",group=\"g\"}";
        assert!(
            out.contains(&format!("millrace_handled_total{l} 7\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("millrace_owned_partitions{l} 2\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("millrace_handler_duration_seconds_count{l} 2\n")),
            "{out}"
        );
        assert!(
            out.contains(
                "millrace_handler_duration_seconds_bucket{topic=\"t\",group=\"g\",le=\"0.005\"} 1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "millrace_handler_duration_seconds_bucket{topic=\"t\",group=\"g\",le=\"0.05\"} 2\n"
            ),
            "{out}"
        );
        assert_eq!(out.matches("millrace_handled_total{").count(), 1);
    }

    /// docs/cli.md's table of the worker's /metrics names every family with
    /// its type and labels.
    #[test]
    fn the_cli_reference_lists_every_family() {
        let doc = include_str!("../docs/cli.md");
        let start = doc.find("| metric | type | labels | meaning |").unwrap();
        let rows: Vec<(String, String, String)> = doc[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (
                    cells[1].trim_matches('`').to_string(),
                    cells[2].to_string(),
                    cells[3].to_string(),
                )
            })
            .collect();
        let families: Vec<(String, String, String)> = FAMILIES
            .iter()
            .map(|f| {
                (
                    f.name.to_string(),
                    f.kind().to_string(),
                    f.labels.join(", "),
                )
            })
            .collect();
        assert_eq!(rows, families);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("topic", "a\\b\"c\nd"), ("group", "g")]),
            "{topic=\"a\\\\b\\\"c\\nd\",group=\"g\"}"
        );
    }
}
