//! Consume throughput against a private redis-server: a raw
//! `XREADGROUP COUNT 100` + `XACK` loop next to a millrace `Worker` with a
//! no-op handler (ordered and shared mode), over pre-filled partitions.
//! Medians of several repetitions, as ratios to the raw loop.
//!
//! `cargo bench --bench consume` (`MILLRACE_BENCH_N`, default 100 000).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use millrace::local::PrivateRedis;
use millrace::{Client, Config, Mode, Record, StartAt, TopicSpec, Worker};

const PARTITIONS: u32 = 8;
const REPS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn fill(client: &Client, n: usize) {
    let mut conn = client.connection();
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    client
        .create_topic(&TopicSpec::new("bench", PARTITIONS).unwrap())
        .await
        .unwrap();
    let payload = vec![b'x'; 100];
    let records: Vec<Record> = (0..n)
        .map(|i| Record::raw(payload.clone()).key(format!("key-{}", i % 1000)))
        .collect();
    client.publish_batch("bench", records).await.unwrap();
}

/// Raw redis-rs: per partition stream, XREADGROUP COUNT 100 then XACK, one task
/// per partition.
async fn raw(client: &Client, n: usize) -> f64 {
    let keys: Vec<String> = (0..PARTITIONS)
        .map(|p| client.keys().stream("bench", p, 0))
        .collect();
    for k in &keys {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(k)
            .arg("raw")
            .arg("0")
            .query_async(&mut client.connection())
            .await
            .unwrap();
    }
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|k| {
            let mut conn = client.connection();
            let done = done.clone();
            tokio::spawn(async move {
                loop {
                    let v: redis::Value = redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg("raw")
                        .arg("c")
                        .arg("COUNT")
                        .arg(100)
                        .arg("STREAMS")
                        .arg(&k)
                        .arg(">")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    let ids = ids(&v);
                    if ids.is_empty() {
                        return;
                    }
                    let _: i64 = redis::cmd("XACK")
                        .arg(&k)
                        .arg("raw")
                        .arg(&ids)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    done.fetch_add(ids.len(), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), n);
    n as f64 / started.elapsed().as_secs_f64()
}

fn ids(v: &redis::Value) -> Vec<String> {
    use redis::Value;
    let mut out = Vec::new();
    if let Value::Array(streams) = v {
        for s in streams {
            if let Value::Array(kv) = s
                && let Some(Value::Array(entries)) = kv.get(1)
            {
                for e in entries {
                    if let Value::Array(parts) = e {
                        out.push(redis::from_redis_value(parts[0].clone()).unwrap());
                    }
                }
            }
        }
    }
    out
}

async fn worker(client: &Client, n: usize, mode: Mode, concurrency: usize) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let w = Worker::builder(client, "w")
        .mode(mode)
        .start_at(StartAt::Earliest)
        .concurrency(concurrency)
        .heartbeat_interval(Duration::from_millis(200))
        .batch(100)
        .handle_raw("bench", move |_m, _c| {
            d.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let started = Instant::now();
    let h = w.start().await.unwrap();
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    h.shutdown().await.unwrap();
    rate
}

#[tokio::main]
async fn main() -> millrace::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let n: usize = std::env::var("MILLRACE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let (_server, url) = match std::env::var("MILLRACE_REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let s = PrivateRedis::start()?;
            let url = s.url();
            (Some(s), url)
        }
    };
    let client = Client::connect(Config::new(url)?.prefix("bench")?).await?;
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("raw XREADGROUP 100 + XACK", vec![]),
        ("worker ordered, concurrency 100", vec![]),
        ("worker ordered, concurrency 1", vec![]),
        ("worker shared, concurrency 100", vec![]),
    ];
    for _ in 0..REPS {
        fill(&client, n).await;
        rows[0].1.push(raw(&client, n).await);
        fill(&client, n).await;
        rows[1].1.push(worker(&client, n, Mode::Ordered, 100).await);
        fill(&client, n).await;
        rows[2].1.push(worker(&client, n, Mode::Ordered, 1).await);
        fill(&client, n).await;
        rows[3].1.push(worker(&client, n, Mode::Shared, 100).await);
    }
    let ceiling = median(rows[0].1.clone());
    println!("consume, 100-byte payload, {PARTITIONS} partitions, {n} msgs, median of {REPS}:");
    for (name, v) in rows {
        let m = median(v);
        println!("  {name:<34} {m:>10.0} msg/s  {:.2}", m / ceiling);
    }
    Ok(())
}
