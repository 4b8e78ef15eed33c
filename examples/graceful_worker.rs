//! A worker that stops gracefully: on SIGINT or SIGTERM (or, here, once
//! the work is done) it stops taking messages, lets the handlers in flight
//! finish, acks them and hands its partitions to the group's other
//! members. Nothing is lost and nothing is handled twice by this group.
//!
//! It publishes 200 jobs, runs a worker whose handler takes a few
//! milliseconds, and asks it to stop halfway: what it did not take is
//! still there for the next member, which handles the rest. Uses the Redis
//! in `MILLRACE_REDIS_URL` if set (under the prefix `graceful-example`);
//! otherwise a private `redis-server` from PATH.
//!
//! ```text
//! cargo run --example graceful_worker
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use millrace::local::PrivateRedis;
use millrace::{Client, Config, Event, Worker};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Serialize, Deserialize)]
struct Job {
    n: u64,
}

impl Event for Job {
    const TOPIC: &'static str = "jobs.v1.render";
    fn key(&self) -> Option<String> {
        Some(format!("k{}", self.n % 8))
    }
}

/// A worker of group `render` that counts what it handles; it stops when
/// `stop` is notified, a signal comes, or `handled` reaches `until`.
fn worker(client: &Client, handled: Arc<AtomicU64>) -> millrace::Result<Worker> {
    Worker::builder(client, "render")
        .concurrency(8)
        .handle(move |job: Job, _ctx| {
            let handled = handled.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let _ = job.n;
                handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
}

/// Resolves on SIGINT or SIGTERM (a service's usual shutdown signal).
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_server, url) = PrivateRedis::from_env_or_start()?;
    let client = Client::connect(Config::new(&url)?.prefix("graceful-example")?).await?;
    client
        .create_topic(&millrace::TopicSpec::new(Job::TOPIC, 4)?)
        .await?;
    client
        .create_group(Job::TOPIC, "render", &millrace::StartAt::Earliest)
        .await?;
    for n in 0..200 {
        client.publish(&Job { n }).await?;
    }

    // The first member stops on a signal, or when it has done about half.
    let first = Arc::new(AtomicU64::new(0));
    let halfway = Arc::new(Notify::new());
    let watch = {
        let (first, halfway) = (first.clone(), halfway.clone());
        tokio::spawn(async move {
            while first.load(Ordering::SeqCst) < 100 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            halfway.notify_one();
        })
    };
    let stats = worker(&client, first.clone())?
        .run(async {
            tokio::select! {
                _ = signal() => println!("signal: stopping"),
                _ = halfway.notified() => println!("halfway: stopping"),
            }
        })
        .await?;
    watch.abort();
    println!(
        "first member: handled {} and acked {} before it left",
        stats.handled, stats.acked
    );

    // The next member finds only what the first did not finish.
    let second = Arc::new(AtomicU64::new(0));
    let handle = worker(&client, second.clone())?.start().await?;
    while first.load(Ordering::SeqCst) + second.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown().await?;
    let (a, b) = (first.load(Ordering::SeqCst), second.load(Ordering::SeqCst));
    println!("second member: handled {b}; together {} of 200", a + b);
    assert_eq!(a + b, 200, "every job handled exactly once by the group");
    let g = client.describe_group(Job::TOPIC, "render").await?;
    assert_eq!((g.lag, g.pending), (0, 0));
    client.delete_topic(Job::TOPIC).await?;
    Ok(())
}
