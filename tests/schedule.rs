//! Cron schedules: add / list / remove, exactly one message per fire time
//! however many schedulers run, and one catch-up message after a pause.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use millrace::{Client, Config, Error, Message, ScheduleSpec, Scheduler, StartAt, TopicSpec};
use millrace::{HEADER_FIRE_TIME, HEADER_SCHEDULE};
use redis::AsyncCommands;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOPIC: &str = "erp.v1.report.due";

async fn client(test: &str) -> Client {
    let c = support::client(test).await;
    c.create_topic(&TopicSpec::new(TOPIC, 2).unwrap())
        .await
        .unwrap();
    c
}

async fn messages(c: &Client) -> Vec<Message> {
    let mut reader = c.reader(TOPIC, StartAt::Earliest).await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = reader.next().await.unwrap() {
        out.push(m);
    }
    out
}

async fn last_fire(c: &Client, name: &str) -> Option<u64> {
    c.schedule_last_fires().await.unwrap().get(name).copied()
}

/// A scheduler running in a task, stopped by dropping or sending on `stop`.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn start(c: &Client) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let scheduler = Scheduler::new(c).reload_interval(Duration::from_millis(500));
    let task = tokio::spawn(scheduler.run(stopped));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the scheduler stops promptly")
            .expect("the scheduler does not panic");
    }
}

#[tokio::test]
async fn schedules_are_added_listed_replaced_and_removed() {
    let c = client("round_trip").await;
    let nightly = ScheduleSpec::new(
        "nightly-report",
        "0 2 * * *",
        TOPIC,
        json!({"report": "sales"}),
    )
    .unwrap()
    .tz("Europe/Berlin")
    .key("tenant-1")
    .header("source", "schedule");
    let minutely = ScheduleSpec::new("a-minutely", "* * * * *", TOPIC, json!(1)).unwrap();
    c.add_schedule(&nightly).await.unwrap();
    c.add_schedule(&minutely).await.unwrap();
    assert_eq!(
        c.list_schedules().await.unwrap(),
        vec![minutely.clone(), nightly.clone()]
    );

    // The same timing again (here with other data) keeps the last fire,
    // so a missed fire is still caught up after a redeploy...
    let _: () = c
        .connection()
        .hset(c.keys().schedules_last(), "nightly-report", "1000")
        .await
        .unwrap();
    let mut nightly_v2 = nightly.clone();
    nightly_v2.data = json!({"report": "sales", "v": 2});
    c.add_schedule(&nightly_v2).await.unwrap();
    assert_eq!(last_fire(&c, "nightly-report").await, Some(1000));
    // ...while another timing starts from now.
    let now = c.redis_time_ms().await.unwrap();
    let hourly = ScheduleSpec::new("nightly-report", "0 * * * *", TOPIC, json!(2)).unwrap();
    c.add_schedule(&hourly).await.unwrap();
    assert!(last_fire(&c, "nightly-report").await >= Some(now));
    assert_eq!(
        c.list_schedules().await.unwrap(),
        vec![minutely.clone(), hourly]
    );

    assert!(c.remove_schedule("nightly-report").await.unwrap());
    assert!(!c.remove_schedule("nightly-report").await.unwrap());
    assert_eq!(c.list_schedules().await.unwrap(), vec![minutely]);
    assert_eq!(last_fire(&c, "nightly-report").await, None);

    let missing = ScheduleSpec::new("x", "* * * * *", "no.such.topic", json!(null)).unwrap();
    let e = c.add_schedule(&missing).await.unwrap_err();
    assert!(
        matches!(e, Error::TopicNotFound(ref t) if t == "no.such.topic"),
        "{e}"
    );
}

#[tokio::test]
async fn invalid_schedules_are_refused_with_clear_messages() {
    let c = client("invalid").await;
    let ok = || ScheduleSpec::new("ok", "* * * * *", TOPIC, json!(null)).unwrap();
    let cron = |expr: &str| ScheduleSpec {
        cron: expr.into(),
        ..ok()
    };
    let cases: Vec<(&str, ScheduleSpec)> = vec![
        (
            "name",
            ScheduleSpec {
                name: "Nightly Report".into(),
                ..ok()
            },
        ),
        ("too few fields", cron("* * *")),
        ("minute out of range", cron("61 * * * *")),
        ("not a day", cron("0 9 * * funday")),
        ("both day fields", cron("0 9 1 * mon")),
        ("crate form", cron("0 0 25 * * *")),
        ("garbage", cron("x * * * * *")),
        ("zone", ok().tz("Europe/Atlantis")),
        (
            "topic",
            ScheduleSpec {
                topic: "reports.dlq".into(),
                ..ok()
            },
        ),
    ];
    let mut text = String::new();
    for (what, spec) in cases {
        let e = c.add_schedule(&spec).await.unwrap_err();
        assert!(e.is_invalid_input(), "{what}: {e}");
        assert!(
            matches!(e, Error::InvalidArgument { .. } | Error::InvalidName { .. }),
            "{what}: {e:?}"
        );
        text.push_str(&format!("{what}: {e}\n"));
    }
    insta::assert_snapshot!(text);
    assert_eq!(c.list_schedules().await.unwrap(), vec![]);
}

#[tokio::test]
async fn two_schedulers_publish_each_fire_exactly_once() {
    let c = client("two_schedulers").await;
    let spec = ScheduleSpec::new("tick", "* * * * * *", TOPIC, json!({"tick": true}))
        .unwrap()
        .key("k");
    c.add_schedule(&spec).await.unwrap();
    let added = last_fire(&c, "tick").await.expect("add marks now");
    let t0 = c.redis_time_ms().await.unwrap();
    let a = start(&c);
    // A second scheduler on its own connection, as another process would be.
    let other = Client::connect(c.config().clone()).await.unwrap();
    let b = start(&other);

    support::wait_until(Duration::from_secs(15), "five fires", || async {
        last_fire(&c, "tick").await >= Some(t0 + 5000)
    })
    .await;
    a.stop().await;
    b.stop().await;

    let messages = messages(&c).await;
    let fires: BTreeSet<String> = messages
        .iter()
        .map(|m| m.headers[HEADER_FIRE_TIME].clone())
        .collect();
    assert_eq!(
        fires.len(),
        messages.len(),
        "a fire was published twice: {fires:?}"
    );
    // Every fire time the schedule has from the add to the last one
    // published, each once: none doubled by the second scheduler, none
    // skipped. (The count follows from the fire times, not from how long
    // the test ran.)
    let mut published: Vec<u64> = messages.iter().map(fire_ms).collect();
    published.sort_unstable();
    let last = *published.last().expect("fires were published");
    assert!(last >= t0 + 5000, "{published:?}");
    let mut expected = Vec::new();
    let mut at = added;
    while let Some(next) = spec.next_fire_after(at).unwrap().filter(|&n| n <= last) {
        expected.push(next);
        at = next;
    }
    assert_eq!(
        published, expected,
        "published fires against the schedule's"
    );
    for m in &messages {
        assert_eq!(m.headers[HEADER_SCHEDULE], "tick");
        assert_eq!(m.key.as_deref(), Some("k"));
        assert_eq!(
            m.decode::<serde_json::Value>().unwrap(),
            json!({"tick": true})
        );
    }
    // Whole seconds, none published before its time.
    for m in &messages {
        let fire = fire_ms(m);
        assert_eq!(fire % 1000, 0, "{m:?}");
        assert!(fire <= m.published_at_ms(), "{m:?}");
    }
}

#[tokio::test]
async fn a_missed_stretch_is_published_once_on_return() {
    let c = client("missed").await;
    let spec = ScheduleSpec::new("minutely", "* * * * *", TOPIC, json!("catch up")).unwrap();
    c.add_schedule(&spec).await.unwrap();
    // Keep clear of a minute boundary, so the regular next fire cannot come
    // while the test looks.
    support::wait_until(Duration::from_secs(61), "the start of a minute", || async {
        c.redis_time_ms().await.unwrap() % 60_000 < 50_000
    })
    .await;
    let now = c.redis_time_ms().await.unwrap();
    let latest_minute = now - now % 60_000;
    let ten_minutes_ago = now - 10 * 60_000;
    let _: () = c
        .connection()
        .hset(
            c.keys().schedules_last(),
            "minutely",
            ten_minutes_ago.to_string(),
        )
        .await
        .unwrap();

    let running = start(&c);
    // `last` reaches the latest missed minute only after everything the
    // scheduler published for the catch-up.
    support::wait_until(Duration::from_secs(10), "the catch-up", || async {
        last_fire(&c, "minutely").await == Some(latest_minute)
    })
    .await;
    running.stop().await;

    let messages = messages(&c).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(
        messages[0].headers[HEADER_FIRE_TIME],
        millrace::fire_time_rfc3339(latest_minute)
    );
    assert_eq!(
        messages[0].decode::<serde_json::Value>().unwrap(),
        json!("catch up")
    );
}

#[tokio::test]
async fn a_new_schedule_does_not_publish_fires_from_before_it_was_added() {
    let c = client("fresh").await;
    let spec = ScheduleSpec::new("every-second", "* * * * * *", TOPIC, json!(0)).unwrap();
    c.add_schedule(&spec).await.unwrap();
    let added = last_fire(&c, "every-second").await.expect("add marks now");
    let running = start(&c);
    support::wait_until(Duration::from_secs(10), "two fires", || async {
        last_fire(&c, "every-second").await >= Some(added - added % 1000 + 2000)
    })
    .await;
    running.stop().await;
    let fires: Vec<u64> = messages(&c).await.iter().map(fire_ms).collect();
    assert!(!fires.is_empty());
    assert!(
        fires.iter().all(|&f| f > added),
        "{fires:?} vs the add at {added}"
    );
}

#[tokio::test]
async fn a_scheduler_rides_out_a_redis_outage_and_catches_up_once() {
    support::init_tracing();
    // Persistent, so the schedule and `last` survive the restart (the
    // server is SIGKILLed: fsync every write).
    let mut server =
        support::RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let config = Config::new(server.url())
        .unwrap()
        .prefix(support::unique_prefix("outage"))
        .unwrap();
    let c = Client::connect(config).await.unwrap();
    c.create_topic(&TopicSpec::new(TOPIC, 1).unwrap())
        .await
        .unwrap();
    let spec = ScheduleSpec::new("tick", "* * * * * *", TOPIC, json!(0)).unwrap();
    c.add_schedule(&spec).await.unwrap();
    let running = start(&c);
    let fired = |c: &Client| {
        let c = c.clone();
        async move {
            let fires = c.schedule_last_fires().await.ok()?;
            fires.get("tick").copied().filter(|l| l % 1000 == 0)
        }
    };
    support::wait_until(Duration::from_secs(10), "a first fire", || async {
        fired(&c).await.is_some()
    })
    .await;

    // The outage: every call fails while the scheduler keeps trying.
    let down = c.redis_time_ms().await.unwrap();
    server.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    support::wait_until(Duration::from_secs(10), "redis back", || async {
        c.redis_time_ms().await.is_ok()
    })
    .await;
    let back = c.redis_time_ms().await.unwrap();
    support::wait_until(
        Duration::from_secs(20),
        "fires after the outage",
        || async { fired(&c).await >= Some(back + 1000) },
    )
    .await;
    running.stop().await;

    let fires: Vec<u64> = messages(&c).await.iter().map(fire_ms).collect();
    assert!(fires.windows(2).all(|w| w[0] < w[1]), "{fires:?}");
    // Redis was down for at least 3 s after `down`. Those fires were not
    // published one by one: the first one after `down` is the latest of
    // them, published on return.
    let after: Vec<u64> = fires.into_iter().filter(|&f| f > down).collect();
    assert!(
        after.first().is_some_and(|&first| first >= down + 2000),
        "down at {down}: {after:?}"
    );
}

fn fire_ms(m: &Message) -> u64 {
    chrono::DateTime::parse_from_rfc3339(&m.headers[HEADER_FIRE_TIME])
        .unwrap()
        .timestamp_millis() as u64
}
