//! Publish throughput against a private redis-server: the raw pipelined XADD
//! ceiling next to millrace's auto-batched `publish` and `publish_batch`,
//! printed as medians of several repetitions and ratios to the ceiling.
//!
//! `cargo bench --bench publish` (set `MILLRACE_REDIS_URL` to use another
//! server; `MILLRACE_BENCH_N` for messages per repetition, default 200 000).

use std::sync::Arc;
use std::time::Instant;

use millrace::local::PrivateRedis;
use millrace::{Client, Config, Record, TopicSpec};
use tokio::sync::Semaphore;

const PARTITIONS: u32 = 8;
const REPS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Raw redis-rs: pipelines of 1 000 XADDs over 8 streams, 4 in flight.
async fn raw_xadd(client: &Client, n: usize, payload: &[u8]) -> f64 {
    let conn = client.connection();
    let sem = Arc::new(Semaphore::new(4));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in 0..n.div_ceil(1000) {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let mut conn = conn.clone();
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            let p = (chunk * 1000 + i) % PARTITIONS as usize;
            pipe.cmd("XADD")
                .arg(format!("raw:{{bench:{p}}}:s:0"))
                .arg("*")
                .arg("k")
                .arg("")
                .arg("h")
                .arg("")
                .arg("d")
                .arg(payload)
                .ignore();
        }
        tasks.push(tokio::spawn(async move {
            let _: () = pipe.query_async(&mut conn).await.unwrap();
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// millrace `publish` from many concurrent callers (auto-batched), keyed.
async fn concurrent_publish(client: &Client, n: usize, payload: &[u8]) -> f64 {
    let producer = client.producer().clone();
    let callers = 256;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let producer = producer.clone();
            let payload = payload.to_vec();
            tokio::spawn(async move {
                for i in (c..n).step_by(callers) {
                    let r = Record::raw(payload.clone()).key(format!("key-{}", i % 1000));
                    producer.publish("bench", r).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// millrace `publish_batch` of the whole set, keyed.
async fn batch_publish(client: &Client, n: usize, payload: &[u8]) -> f64 {
    let records: Vec<Record> = (0..n)
        .map(|i| Record::raw(payload.to_vec()).key(format!("key-{}", i % 1000)))
        .collect();
    let started = Instant::now();
    let results = client.publish_batch("bench", records).await.unwrap();
    assert!(results.iter().all(Result::is_ok));
    n as f64 / started.elapsed().as_secs_f64()
}

async fn reset(client: &Client) {
    let mut conn = client.connection();
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    client
        .create_topic(&TopicSpec::new("bench", PARTITIONS).unwrap())
        .await
        .unwrap();
}

#[tokio::main]
async fn main() -> millrace::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // cargo test --benches asks for a list
    }
    let n: usize = std::env::var("MILLRACE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let (_server, url) = match std::env::var("MILLRACE_REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let s = PrivateRedis::start()?;
            let url = s.url();
            (Some(s), url)
        }
    };
    let client = Client::connect(Config::new(url)?.prefix("bench")?).await?;
    let payload = vec![b'x'; 100];
    let (mut raw, mut conc, mut batch) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPS {
        reset(&client).await;
        raw.push(raw_xadd(&client, n, &payload).await);
        reset(&client).await;
        conc.push(concurrent_publish(&client, n, &payload).await);
        reset(&client).await;
        batch.push(batch_publish(&client, n, &payload).await);
    }
    let (raw, conc, batch) = (median(raw), median(conc), median(batch));
    println!("publish, 100-byte payload, {PARTITIONS} partitions, {n} msgs, median of {REPS}:");
    println!("  raw pipelined XADD          {:>10.0} msg/s  1.00", raw);
    println!(
        "  millrace publish (256 tasks) {:>9.0} msg/s  {:.2}",
        conc,
        conc / raw
    );
    println!(
        "  millrace publish_batch      {:>10.0} msg/s  {:.2}",
        batch,
        batch / raw
    );
    Ok(())
}
