//! `Client::overview`: the same figures as `describe_topic` and
//! `describe_group` (the control) for topics with several groups, live
//! members, lag, pending, a paused group, dead letters and delayed
//! messages, on one server and on a cluster; and a number of round trips
//! that does not grow with the topics and groups (counted, and timed
//! through a proxy that delays every packet).

mod support;

use std::future::pending;
use std::time::{Duration, Instant};

use millrace::{
    Client, Config, Error, HandlerError, Overview, Record, StartAt, TopicOverview, TopicSpec,
    Worker,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn client(url: &str, prefix: &str) -> Client {
    Client::connect(Config::new(url).unwrap().prefix(prefix).unwrap())
        .await
        .unwrap()
}

/// Checks one topic of the overview against `describe_topic` and each
/// group against `describe_group`; `Err` says what differs.
async fn against_control(c: &Client, t: &TopicOverview) -> Result<(), String> {
    let d = c.describe_topic(&t.name).await.unwrap();
    let ours = (
        t.partitions,
        t.lanes,
        t.retention_ms,
        t.max_len,
        t.schema,
        t.length,
        t.partition_lengths.clone(),
        t.delayed,
        t.dlq_length,
    );
    let control = (
        d.partitions,
        d.lanes,
        d.retention_ms,
        d.max_len,
        d.schema,
        d.length,
        d.partition_lengths.clone(),
        d.delayed,
        d.dlq_length,
    );
    if ours != control {
        return Err(format!("{}: {ours:?} != {control:?}", t.name));
    }
    let names: Vec<&str> = t.groups.iter().map(|g| g.group.as_str()).collect();
    if names != d.groups {
        return Err(format!("{}: groups {names:?} != {:?}", t.name, d.groups));
    }
    for g in &t.groups {
        let gi = c.describe_group(&t.name, &g.group).await.unwrap();
        let ours = (g.lag, g.pending, g.paused, g.members);
        let control = (gi.lag, gi.pending, gi.paused, gi.members.len() as u64);
        if ours != control {
            return Err(format!("{}/{}: {ours:?} != {control:?}", t.name, g.group));
        }
    }
    Ok(())
}

/// An overview equal to the control, taken once the workers are quiet (a
/// few tries: a worker may move between the two reads).
async fn settled_overview(c: &Client) -> Overview {
    let mut last = String::new();
    for _ in 0..20 {
        let o = c.overview().await.unwrap();
        let mut differs = None;
        for t in &o.topics {
            if let Err(why) = against_control(c, t).await {
                differs = Some(why);
                break;
            }
        }
        match differs {
            None => {
                let names = c.list_topics().await.unwrap();
                let ours: Vec<&str> = o.topics.iter().map(|t| t.name.as_str()).collect();
                assert_eq!(ours, names, "every topic, by name");
                return o;
            }
            Some(why) => last = why,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the overview never matched the control: {last}");
}

fn topic<'a>(o: &'a Overview, name: &str) -> &'a TopicOverview {
    o.topics.iter().find(|t| t.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_equals_describe_topic_and_describe_group() {
    let c = client(&support::shared_url(), &support::unique_prefix("control")).await;
    let orders = TopicSpec::new("orders", 4).unwrap().lanes(2);
    c.create_topic(&orders).await.unwrap();
    c.create_topic(&TopicSpec::new("audit.log", 2).unwrap().max_len(1000))
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("quiet", 3).unwrap())
        .await
        .unwrap();
    for g in ["billing", "halted", "picky", "slow", "stuck"] {
        c.create_group("orders", g, &StartAt::Earliest)
            .await
            .unwrap();
    }
    c.create_group("quiet", "idle", &StartAt::Earliest)
        .await
        .unwrap();
    c.pause_group("orders", "halted").await.unwrap();
    let records: Vec<Record> = (0..40u32)
        .map(|i| {
            Record::encode(&i)
                .unwrap()
                .key(format!("k{i}"))
                .priority((i % 2) as u8)
        })
        .collect();
    assert!(
        c.publish_batch("orders", records)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    for i in 0..3u32 {
        c.publish_record(
            "orders",
            Record::encode(&i).unwrap().delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    }
    for i in 0..5u32 {
        c.publish_record("audit.log", Record::encode(&i).unwrap())
            .await
            .unwrap();
    }

    let billing = Worker::builder(&c, "billing")
        .handle_raw("orders", |_m, _c| async { Ok(()) })
        .start()
        .await
        .unwrap();
    let picky = Worker::builder(&c, "picky")
        .handle_raw("orders", |m, _c| async move {
            let n: u32 = m.decode().map_err(HandlerError::permanent)?;
            if n.is_multiple_of(2) {
                return Err(HandlerError::permanent("even"));
            }
            Ok(())
        })
        .start()
        .await
        .unwrap();
    let stuck = Worker::builder(&c, "stuck")
        .concurrency(2)
        .handle_raw("orders", |_m, _c| async {
            pending::<()>().await;
            Ok(())
        })
        .start()
        .await
        .unwrap();
    support::wait_until(Duration::from_secs(30), "the workers settle", || {
        let c = c.clone();
        async move {
            let o = c.overview().await.unwrap();
            let t = topic(&o, "orders");
            let g = |n: &str| t.groups.iter().find(|g| g.group == n).unwrap().clone();
            t.dlq_length == 20
                && g("billing").handled == 40
                && g("picky").handled == 40
                && g("stuck").pending > 0
        }
    })
    .await;

    let o = settled_overview(&c).await;
    assert_eq!(o.round_trips, 3);
    assert!(
        o.time_ms > 1_700_000_000_000,
        "Redis's clock: {}",
        o.time_ms
    );
    let t = topic(&o, "orders");
    assert_eq!((t.partitions, t.lanes), (4, 2));
    assert_eq!(
        (t.length, t.published, t.delayed, t.dlq_length),
        (40, 40, 3, 20)
    );
    let g = |n: &str| t.groups.iter().find(|g| g.group == n).unwrap();
    let row = |n: &str| {
        let g = g(n);
        (g.lag, g.pending, g.paused, g.members, g.handled)
    };
    assert_eq!(row("billing"), (0, 0, false, 1, 40));
    assert_eq!(
        row("picky"),
        (0, 0, false, 1, 40),
        "dead letters are handled"
    );
    assert_eq!(row("halted"), (40, 0, true, 0, 0));
    assert_eq!(row("slow"), (40, 0, false, 0, 0));
    let s = g("stuck");
    assert_eq!((s.members, s.handled), (1, 0));
    assert!(s.pending > 0 && s.lag + s.pending == 40, "{s:?}");
    let a = topic(&o, "audit.log");
    assert_eq!((a.length, a.published, a.max_len), (5, 5, Some(1000)));
    assert!(a.groups.is_empty());
    let q = topic(&o, "quiet");
    assert_eq!((q.length, q.published, q.groups[0].lag), (0, 0, 0));

    // One topic alone reads the same, in two round trips.
    assert_eq!(&c.topic_overview("orders").await.unwrap(), t);
    assert!(matches!(
        c.topic_overview("nothing").await,
        Err(Error::TopicNotFound(_))
    ));
    assert!(
        c.topic_overview("Bad Name")
            .await
            .unwrap_err()
            .is_invalid_input()
    );

    // A deleted topic is gone from the next overview.
    c.delete_topic("audit.log").await.unwrap();
    let o = c.overview().await.unwrap();
    assert!(o.topics.iter().all(|t| t.name != "audit.log"));

    stuck.abort();
    billing.shutdown().await.unwrap();
    picky.shutdown().await.unwrap();
}

/// `topics` topics of 4 partitions with `groups` groups each, a few
/// messages in each.
async fn topics_with_groups(c: &Client, topics: usize, groups: usize) {
    for t in 0..topics {
        let name = format!("t{t:02}");
        c.create_topic(&TopicSpec::new(&name, 4).unwrap())
            .await
            .unwrap();
        for g in 0..groups {
            c.create_group(&name, &format!("g{g}"), &StartAt::Earliest)
                .await
                .unwrap();
        }
        let records: Vec<Record> = (0..8u32).map(|i| Record::encode(&i).unwrap()).collect();
        c.publish_batch(&name, records).await.unwrap();
    }
}

/// A TCP proxy to `target` that holds every chunk for `delay` in each
/// direction (keeping their order): each round trip costs `2 * delay`.
async fn slow_proxy(target: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                return;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pump(ri, wo, delay));
            tokio::spawn(pump(ro, wi, delay));
        }
    });
    port
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0; 64 << 10];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        let at = tokio::time::Instant::now() + delay;
        if tx.send((at, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}

/// Commands Redis has processed (`INFO stats`).
async fn commands(c: &Client) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut c.connection())
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_stay_the_same_for_one_topic_and_for_thirty_with_four_groups() {
    // Its own server: the command counts are not disturbed by other tests.
    let server = support::RedisServer::start();
    let one = client(&server.url(), "one").await;
    topics_with_groups(&one, 1, 1).await;
    let many = client(&server.url(), "many").await;
    topics_with_groups(&many, 30, 4).await;

    let delay = Duration::from_millis(250);
    let proxy = slow_proxy(server.port(), delay).await;
    let url = format!("redis://127.0.0.1:{proxy}");
    let mut seen = Vec::new();
    for prefix in ["one", "many"] {
        let direct = client(&server.url(), prefix).await;
        let slow = client(&url, prefix).await;
        let control = slow.overview().await.unwrap();
        let before = commands(&direct).await;
        let started = Instant::now();
        let o = slow.overview().await.unwrap();
        let took = started.elapsed();
        // Minus the INFO of `before` itself.
        let sent = commands(&direct).await - before - 1;
        assert_eq!(o.topics, control.topics);
        assert_eq!(o.round_trips, 3, "{prefix}");
        // Three round trips of 500 ms, and less than a fourth.
        assert!(
            took >= 6 * delay && took < 8 * delay,
            "{prefix}: {took:?} for {} round trips",
            o.round_trips
        );
        seen.push((o.topics.len(), sent));
    }
    // 1 + 1 topic × (2 + 1) + 1 TIME + (1 + 1 group × 2 + 4 partitions × 4).
    assert_eq!(seen[0], (1, 1 + 2 + 1 + 1 + 2 + 16));
    assert_eq!(seen[1], (30, 1 + 30 * 2 + 1 + 30 * (1 + 4 * 2 + 4 * 4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_equals_the_control_on_a_cluster() {
    let cluster = support::shared_cluster();
    let c = Client::connect(
        Config::cluster(cluster.urls())
            .unwrap()
            .prefix(support::unique_prefix("overview"))
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(c.server_info().cluster);
    c.create_topic(&TopicSpec::new("jobs", 6).unwrap())
        .await
        .unwrap();
    c.create_topic(&TopicSpec::new("mail", 3).unwrap())
        .await
        .unwrap();
    for g in ["done", "later"] {
        c.create_group("jobs", g, &StartAt::Earliest).await.unwrap();
    }
    c.pause_group("jobs", "later").await.unwrap();
    let records: Vec<Record> = (0..30u32)
        .map(|i| Record::encode(&i).unwrap().key(format!("k{i}")))
        .collect();
    c.publish_batch("jobs", records).await.unwrap();
    c.publish_record(
        "jobs",
        Record::encode(&99u32)
            .unwrap()
            .delay(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let w = Worker::builder(&c, "done")
        .handle_raw("jobs", |m, _c| async move {
            let n: u32 = m.decode().map_err(HandlerError::permanent)?;
            if n < 3 {
                return Err(HandlerError::permanent("small"));
            }
            Ok(())
        })
        .start()
        .await
        .unwrap();
    support::wait_until(Duration::from_secs(30), "the group handled all", || {
        let c = c.clone();
        async move {
            let o = c.overview().await.unwrap();
            let t = topic(&o, "jobs");
            t.groups[0].handled == 30 && t.dlq_length == 3
        }
    })
    .await;
    let o = settled_overview(&c).await;
    assert_eq!(o.round_trips, 3);
    let t = topic(&o, "jobs");
    assert_eq!(
        (t.length, t.published, t.delayed, t.dlq_length),
        (30, 30, 1, 3)
    );
    let row = |g: &millrace::GroupOverview| (g.lag, g.pending, g.paused, g.members, g.handled);
    assert_eq!(row(&t.groups[0]), (0, 0, false, 1, 30));
    assert_eq!(row(&t.groups[1]), (30, 0, true, 0, 0));
    assert_eq!(topic(&o, "mail").length, 0);
    w.shutdown().await.unwrap();
}
