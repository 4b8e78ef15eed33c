//! `millrace::Metrics`: the Prometheus text of workers running in this
//! process (the series `millrace worker` serves at `/metrics`).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use millrace::{Client, Config, HandlerError, Metrics, Record, RetryPolicy, TopicSpec, Worker};
use tokio::sync::Semaphore;

/// One sample line: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format, checking every sample's family has a `# TYPE`
/// line and every line is well formed.
fn parse(text: &str) -> Vec<Sample> {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "{line}"
            );
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut labels = BTreeMap::new();
                // Label values here never hold ',' or escapes.
                for pair in inner.split(',') {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("{line}"));
                    labels.insert(k.to_string(), v.to_string());
                }
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE for {name}");
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

/// The samples named `name` whose labels include all of `labels`.
fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The one sample named `name` with exactly the labels of `topic`, `group`.
fn value(samples: &[Sample], name: &str, topic: &str, group: &str) -> u64 {
    let found: Vec<_> = find(samples, name, &[("topic", topic), ("group", group)])
        .into_iter()
        .filter(|s| s.labels.len() == 2)
        .collect();
    assert_eq!(found.len(), 1, "{name} for {topic}/{group}: {found:?}");
    found[0].value as u64
}

/// The sum of a per-partition gauge over the partitions of `topic`, `group`.
fn per_partition(samples: &[Sample], name: &str, topic: &str, group: &str) -> (usize, u64) {
    let found = find(samples, name, &[("topic", topic), ("group", group)]);
    (found.len(), found.iter().map(|s| s.value as u64).sum())
}

fn redis_up(samples: &[Sample]) -> u64 {
    let found = find(samples, "millrace_redis_up", &[]);
    assert_eq!(found.len(), 1);
    found[0].value as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_renders_its_workers_counters_histogram_and_gauges() {
    let c = support::client("metrics").await;
    c.create_topic(&TopicSpec::new("jobs", 2).unwrap())
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("idle", 1).unwrap())
        .await
        .unwrap();
    // Message 100 waits for a permit: while it does, it is pending.
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let worker = Worker::builder(&c, "g")
        .retry(
            RetryPolicy::attempts(3)
                .fixed(Duration::from_millis(20))
                .jitter(0.0),
        )
        .handle_raw("jobs", move |msg, ctx| {
            let n: u32 = msg.decode().unwrap();
            if n == 3 && ctx.attempt == 1 {
                panic!("message 3 panics once");
            }
            let g = g.clone();
            async move {
                match n {
                    5 => Err(HandlerError::permanent("message 5 is refused")),
                    100 => {
                        g.acquire().await.unwrap().forget();
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        })
        .build()
        .unwrap();
    let idle = Worker::builder(&c, "g")
        .handle_raw("idle", |_msg, _ctx| async { Ok(()) })
        .build()
        .unwrap();

    let metrics = Metrics::new(&c);
    metrics.add("jobs", "g", worker.member_id(), worker.stats());
    // The negative control: another registry, with only the idle worker.
    let other = Metrics::new(&c);
    other.add("idle", "g", idle.member_id(), idle.stats());
    let stats = worker.stats();
    let worker = worker.start().await.unwrap();
    let idle = idle.start().await.unwrap();

    let recs: Vec<Record> = (0..6u32).map(|i| Record::encode(&i).unwrap()).collect();
    c.publish_batch("jobs", recs).await.unwrap();
    support::wait_until(Duration::from_secs(15), "five handled, one dead", || {
        let s = stats.snapshot();
        async move { s.handled == 5 && s.dead_lettered == 1 && s.acked == 5 }
    })
    .await;
    // Both partitions leased to the one member.
    let m = metrics.clone();
    support::wait_until(Duration::from_secs(15), "two partitions owned", || {
        let m = m.clone();
        async move {
            let s = parse(&m.render().await);
            value(&s, "millrace_owned_partitions", "jobs", "g") == 2
        }
    })
    .await;

    let text = metrics.render().await;
    let s = parse(&text);
    let v = |name: &str| value(&s, name, "jobs", "g");
    assert_eq!(v("millrace_handled_total"), 5, "{text}");
    assert_eq!(
        v("millrace_failed_total"),
        2,
        "a panic and a refusal: {text}"
    );
    assert_eq!(v("millrace_panicked_total"), 1, "{text}");
    assert_eq!(v("millrace_retried_total"), 1, "the panic: {text}");
    assert_eq!(v("millrace_dead_lettered_total"), 1, "{text}");
    // The dead letter is not counted as acked.
    assert_eq!(v("millrace_acked_total"), 5, "{text}");
    assert_eq!(v("millrace_stale_acks_total"), 0, "{text}");
    assert_eq!(v("millrace_unreplicated_total"), 0, "{text}");
    assert_eq!(v("millrace_trimmed_unhandled_total"), 0, "{text}");
    assert_eq!(v("millrace_handler_duration_seconds_count"), 7, "{text}");
    // The end-to-end latency counts first attempts only: 6 messages.
    assert_eq!(v("millrace_end_to_end_latency_seconds_count"), 6, "{text}");
    let e2e = find(
        &s,
        "millrace_end_to_end_latency_seconds_bucket",
        &[("topic", "jobs"), ("group", "g")],
    );
    assert_eq!(e2e.len(), millrace::END_TO_END_BUCKETS.len() + 1);
    // Published and handled within this test: all under a minute.
    let minute = find(
        &s,
        "millrace_end_to_end_latency_seconds_bucket",
        &[("topic", "jobs"), ("group", "g"), ("le", "60")],
    );
    assert_eq!(minute[0].value, 6.0, "{text}");
    assert_eq!(v("millrace_group_members"), 1, "{text}");
    let published = find(&s, "millrace_published_total", &[("topic", "jobs")]);
    assert_eq!(published.len(), 1, "{text}");
    assert_eq!(published[0].value, 6.0, "{text}");
    let violations = support::prom::naming_violations(&text);
    assert!(violations.is_empty(), "{violations:#?}\n{text}");
    support::prom::promtool_check_metrics(&text);
    let inf = find(
        &s,
        "millrace_handler_duration_seconds_bucket",
        &[("topic", "jobs"), ("group", "g"), ("le", "+Inf")],
    );
    assert_eq!(inf.len(), 1);
    assert_eq!(inf[0].value, 7.0);
    let buckets = find(
        &s,
        "millrace_handler_duration_seconds_bucket",
        &[("topic", "jobs"), ("group", "g")],
    );
    assert_eq!(buckets.len(), millrace::LATENCY_BUCKETS.len() + 1);
    assert!(
        buckets.windows(2).all(|w| w[0].value <= w[1].value),
        "cumulative: {text}"
    );
    assert_eq!(
        per_partition(&s, "millrace_consumer_lag_messages", "jobs", "g"),
        (2, 0),
        "{text}"
    );
    assert_eq!(
        per_partition(&s, "millrace_pending_messages", "jobs", "g"),
        (2, 0),
        "{text}"
    );
    let dlq = find(&s, "millrace_dlq_messages", &[("topic", "jobs")]);
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].value, 1.0, "{text}");
    assert_eq!(redis_up(&s), 1);
    // Only what was added.
    assert!(find(&s, "millrace_handled_total", &[("topic", "idle")]).is_empty());

    // The other registry shows the idle worker at zero and nothing of jobs.
    let other_text = other.render().await;
    let o = parse(&other_text);
    assert!(
        o.iter()
            .all(|x| x.labels.get("topic").map(String::as_str) != Some("jobs")),
        "{other_text}"
    );
    assert_eq!(value(&o, "millrace_handled_total", "idle", "g"), 0);
    assert_eq!(value(&o, "millrace_panicked_total", "idle", "g"), 0);
    assert_eq!(
        value(&o, "millrace_handler_duration_seconds_count", "idle", "g"),
        0
    );
    assert_eq!(
        per_partition(&o, "millrace_consumer_lag_messages", "idle", "g"),
        (1, 0)
    );
    assert_eq!(redis_up(&o), 1);

    // A message in a handler is pending.
    c.publish_record("jobs", Record::encode(&100u32).unwrap())
        .await
        .unwrap();
    let m = metrics.clone();
    support::wait_until(Duration::from_secs(15), "one pending", || {
        let m = m.clone();
        async move {
            let s = parse(&m.render().await);
            per_partition(&s, "millrace_pending_messages", "jobs", "g").1 == 1
        }
    })
    .await;
    gate.add_permits(1);
    support::wait_until(Duration::from_secs(15), "100 handled", || {
        let n = stats.snapshot().acked;
        async move { n == 6 }
    })
    .await;

    // With the worker gone, new messages are lag.
    let last = worker.shutdown().await.unwrap();
    assert_eq!(last.handled, 6);
    let recs: Vec<Record> = (10..13u32).map(|i| Record::encode(&i).unwrap()).collect();
    c.publish_batch("jobs", recs).await.unwrap();
    let text = metrics.render().await;
    let s = parse(&text);
    assert_eq!(
        per_partition(&s, "millrace_consumer_lag_messages", "jobs", "g"),
        (2, 3),
        "{text}"
    );
    assert_eq!(
        per_partition(&s, "millrace_pending_messages", "jobs", "g"),
        (2, 0),
        "{text}"
    );
    assert_eq!(
        value(&s, "millrace_owned_partitions", "jobs", "g"),
        0,
        "{text}"
    );
    assert_eq!(
        value(&s, "millrace_handled_total", "jobs", "g"),
        6,
        "{text}"
    );
    assert_eq!(
        value(&s, "millrace_handler_duration_seconds_count", "jobs", "g"),
        8,
        "{text}"
    );
    assert_eq!(
        value(&s, "millrace_end_to_end_latency_seconds_count", "jobs", "g"),
        7,
        "{text}"
    );
    // The group has no live member now (the idle worker, in g too, is
    // a member of another topic's group g).
    assert_eq!(
        value(&s, "millrace_group_members", "jobs", "g"),
        0,
        "{text}"
    );
    assert_eq!(value(&o, "millrace_group_members", "idle", "g"), 1);
    idle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_registry_renders_only_types_and_redis_up() {
    let c = support::client("metrics_empty").await;
    let text = Metrics::new(&c).render().await;
    let s = parse(&text);
    assert_eq!(s.len(), 1, "{text}");
    assert_eq!(redis_up(&s), 1);
    assert!(
        text.contains("# TYPE millrace_panicked_total counter\n"),
        "{text}"
    );
    assert_eq!(Metrics::CONTENT_TYPE, "text/plain; version=0.0.4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_the_counters_and_reports_redis_up_zero() {
    let mut server = support::RedisServer::start();
    let config = Config::new(server.url())
        .unwrap()
        .response_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2));
    let c = Client::connect(config).await.unwrap();
    c.create_topic(&TopicSpec::new("jobs", 1).unwrap())
        .await
        .unwrap();
    let stats = Arc::new(millrace::WorkerStats::default());
    stats
        .handled
        .fetch_add(4, std::sync::atomic::Ordering::Relaxed);
    let metrics = Metrics::new(&c);
    metrics.add("jobs", "g", "m1", stats);
    c.create_group("jobs", "g", &millrace::StartAt::Earliest)
        .await
        .unwrap();
    let s = parse(&metrics.render().await);
    assert_eq!(redis_up(&s), 1);
    assert_eq!(
        per_partition(&s, "millrace_consumer_lag_messages", "jobs", "g").0,
        1
    );

    server.stop();
    let text = tokio::time::timeout(Duration::from_secs(20), metrics.render())
        .await
        .expect("a scrape with Redis down ends");
    let s = parse(&text);
    assert_eq!(redis_up(&s), 0, "{text}");
    assert_eq!(value(&s, "millrace_handled_total", "jobs", "g"), 4);
    assert!(
        find(&s, "millrace_consumer_lag_messages", &[]).is_empty(),
        "{text}"
    );
    assert!(find(&s, "millrace_dlq_messages", &[]).is_empty(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_follows_the_naming_rules_and_promtool_agrees() {
    let c = support::client("metrics_naming").await;
    c.create_topic(&TopicSpec::new("orders", 3).unwrap())
        .await
        .unwrap();
    let worker = Worker::builder(&c, "billing")
        .handle_raw("orders", |_msg, _ctx| async { Ok(()) })
        .build()
        .unwrap();
    let metrics = Metrics::new(&c);
    metrics.add("orders", "billing", worker.member_id(), worker.stats());
    let stats = worker.stats();
    let worker = worker.start().await.unwrap();
    let recs: Vec<Record> = (0..5u32).map(|i| Record::encode(&i).unwrap()).collect();
    c.publish_batch("orders", recs).await.unwrap();
    support::wait_until(Duration::from_secs(15), "five acked", || {
        let n = stats.snapshot().acked;
        async move { n == 5 }
    })
    .await;
    let text = metrics.render().await;
    // Every family the renderer has, each with samples here.
    for family in [
        "millrace_handled_total",
        "millrace_cancelled_total",
        "millrace_handler_duration_seconds",
        "millrace_end_to_end_latency_seconds",
        "millrace_consumer_lag_messages",
        "millrace_pending_messages",
        "millrace_owned_partitions",
        "millrace_group_members",
        "millrace_published_total",
        "millrace_dlq_messages",
        "millrace_redis_up",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family}:\n{text}"
        );
        assert!(text.contains(&format!("\n{family}")), "{family}:\n{text}");
    }
    let violations = support::prom::naming_violations(&text);
    assert!(violations.is_empty(), "{violations:#?}\n{text}");
    support::prom::promtool_check_metrics(&text);
    worker.shutdown().await.unwrap();
}

/// The negative control of the naming checker: an exposition breaking each
/// rule once is caught, rule by rule.
#[test]
fn the_naming_checker_catches_each_broken_rule() {
    let bad = "\
# HELP millrace_handled Messages handled.
# TYPE millrace_handled counter
millrace_handled{topic=\"t\",group=\"g\"} 3
# HELP millrace_lag Lag.
# TYPE millrace_lag gauge
millrace_lag{topic=\"t\",group=\"g\",partition=\"0\"} 1
# HELP millrace_handler_duration_ms Handler time.
# TYPE millrace_handler_duration_ms histogram
millrace_handler_duration_ms_bucket{topic=\"t\",le=\"5\"} 1
millrace_handler_duration_ms_sum{topic=\"t\"} 2
millrace_handler_duration_ms_count{topic=\"t\"} 1
# HELP millrace_attempts_total Attempts.
# TYPE millrace_attempts_total counter
millrace_attempts_total{topic=\"t\",message_id=\"0:0:1-0\"} 1
millrace_attempts_total{topic=\"t\",message_id=\"0:0:1-0\"} 2
# TYPE millrace_queue_age gauge
millrace_queue_age{topic=\"t\"} 4
# HELP millrace_retries_total Retries.
# TYPE millrace_retries_total gauge
millrace_retries_total 1
millrace_orphan 1
millrace_attempts_total{topic=\"u\"} 3
";
    let v = support::prom::naming_violations(bad);
    let caught = |what: &str| {
        assert!(
            v.iter().any(|x| x.contains(what)),
            "{what:?} not caught in {v:#?}"
        );
    };
    caught("counter millrace_handled does not end in _total");
    caught("gauge millrace_lag does not end in a unit");
    caught("millrace_handler_duration_ms measures time but does not end in _seconds");
    caught("non-base or abbreviated unit _ms");
    caught("has no le=\"+Inf\" bucket");
    caught("label message_id of millrace_attempts_total");
    caught("appears twice");
    caught("millrace_queue_age has no # HELP");
    caught("millrace_queue_age measures time");
    caught("gauge millrace_retries_total ends in _total");
    caught("millrace_orphan has no # HELP or # TYPE");
    caught("millrace_attempts_total's samples are not one block");
    // The same checker passes a good exposition.
    let good = "\
# HELP millrace_handled_total Messages handled.
# TYPE millrace_handled_total counter
millrace_handled_total{topic=\"t\",group=\"g\"} 3
# HELP millrace_handler_duration_seconds Handler time.
# TYPE millrace_handler_duration_seconds histogram
millrace_handler_duration_seconds_bucket{topic=\"t\",group=\"g\",le=\"0.5\"} 1
millrace_handler_duration_seconds_bucket{topic=\"t\",group=\"g\",le=\"+Inf\"} 2
millrace_handler_duration_seconds_sum{topic=\"t\",group=\"g\"} 2.5
millrace_handler_duration_seconds_count{topic=\"t\",group=\"g\"} 2
";
    assert_eq!(support::prom::naming_violations(good), Vec::<String>::new());
    // promtool, where it runs, also refuses the bad one and passes the good.
    if support::prom::promtool_check_metrics(good) {
        let refused = std::panic::catch_unwind(|| support::prom::promtool_check_metrics(bad));
        assert!(refused.is_err(), "promtool passed the bad exposition");
    }
}
