//! The dashboard's benchmarks in `millrace bench` (part of the full run,
//! before the library's scenarios so that their topics are not in the
//! overview; `--only serve` runs them alone): the real router on a loopback
//! port, on the bench's Redis.
//!
//! - `serve.overview.*`: many topics × partitions × groups (200 × 16 × 5;
//!   `--quick`: 20 × 4 × 2), a few messages in each partition. The median
//!   time of one `GET /api/v1/topics` from a keep-alive client, and of
//!   `Client::overview` alone; the round trips and Redis commands of one
//!   refresh (the commands from `INFO stats`, minus the `INFO` itself); and
//!   once, for comparison, the way before the overview
//!   (`serve.overview.before_*`: `describe_topic`, then `describe_group`
//!   per group).
//! - `serve.publish`: 100 keep-alive HTTP/1.1 clients, each POSTing one
//!   JSON record per request; `serve.publish.library`: `publish_record`
//!   from 100 tasks, on the same Redis in the same run; and
//!   `serve.publish_share`, the first as a share of the second.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use millrace::bench::{BenchOptions, Figure};
use millrace::{Client, Record, StartAt, TopicSpec};
use serde_json::{Value, json};

use super::Shared;
use crate::error::CliError;

/// How many topics, partitions and groups `serve.overview` reads.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Topics.
    pub topics: usize,
    /// Partitions per topic.
    pub partitions: u32,
    /// Groups per topic.
    pub groups: usize,
}

impl Shape {
    /// 200 topics × 16 partitions × 5 groups.
    pub fn full() -> Self {
        Shape {
            topics: 200,
            partitions: 16,
            groups: 5,
        }
    }

    /// 20 topics × 4 partitions × 2 groups (a smoke run).
    pub fn quick() -> Self {
        Shape {
            topics: 20,
            partitions: 4,
            groups: 2,
        }
    }
}

/// Messages published into each partition of the overview's topics.
const PER_PARTITION: usize = 10;
/// Concurrent HTTP clients (and library tasks) of `serve.publish`.
const PUBLISHERS: usize = 100;
/// Topics created or deleted at once while setting up.
const SETUP_CONCURRENCY: usize = 32;

/// Whether a serve scenario is selected (`--only` as for the others).
pub fn selected(o: &BenchOptions) -> bool {
    o.selects("serve.overview") || o.selects("serve.publish")
}

/// Runs the selected serve scenarios on `client`'s Redis and prefix;
/// their figures, in order.
pub async fn run(client: &Client, o: &BenchOptions, shape: Shape) -> Result<Vec<Figure>, CliError> {
    // The HTTP client is reqwest built without a TLS provider of its own:
    // the process's (ring) is installed first, as for `http` handlers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The server has its own connection, as a `millrace serve` would.
    let served = Served::start(Client::connect(client.config().clone()).await?).await?;
    let mut figures = Vec::new();
    if o.selects("serve.overview") {
        tracing::info!("bench: serve.overview");
        overview(client, o, shape, &served, &mut figures).await?;
    }
    if o.selects("serve.publish") {
        tracing::info!("bench: serve.publish");
        publish(client, o, &served, &mut figures).await?;
    }
    Ok(figures)
}

/// The router on a loopback port, until dropped.
struct Served {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(client: Client) -> Result<Served, CliError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| CliError::other(format!("bench: cannot listen: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::other(format!("bench: {e}")))?;
        let shared = Shared::new(client, false, None, true);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, super::router(shared)).await;
        });
        Ok(Served {
            base: format!("http://{addr}/api/v1"),
            task,
        })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn http_error(e: reqwest::Error) -> CliError {
    CliError::other(format!("bench: HTTP: {e}"))
}

/// A keep-alive HTTP/1.1 client.
fn http_client() -> Result<reqwest::Client, CliError> {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(http_error)
}

/// A figure of one or more samples (the median is its value).
fn figure(name: &str, unit: &'static str, mut samples: Vec<f64>) -> Figure {
    samples.sort_by(|a, b| a.total_cmp(b));
    let value = samples.get(samples.len() / 2).copied().unwrap_or(0.0);
    Figure {
        name: name.to_string(),
        value,
        unit,
        samples,
        ..Figure::default()
    }
}

/// Commands Redis has processed so far (`INFO stats`).
async fn commands_processed(client: &Client) -> Result<u64, CliError> {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut client.connection())
        .await
        .map_err(|e| CliError::other(format!("bench: INFO: {e}")))?;
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| CliError::other("bench: INFO stats has no total_commands_processed"))
}

/// What one refresh took and how many commands it sent: `INFO` before and
/// after, the clock only around `step`. The `INFO` before is counted by
/// the one after; nothing else of this process talks to Redis meanwhile.
async fn measured<T, F, Fut>(client: &Client, step: F) -> Result<(Duration, u64, T), CliError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, CliError>>,
{
    let before = commands_processed(client).await?;
    let started = Instant::now();
    let out = step().await?;
    let took = started.elapsed();
    let after = commands_processed(client).await?;
    Ok((took, after.saturating_sub(before + 1), out))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn topic_names(shape: Shape) -> Vec<String> {
    (0..shape.topics)
        .map(|i| format!("bench.serve.t{i:03}"))
        .collect()
}

/// Deletes the topics (where they exist), `SETUP_CONCURRENCY` at once.
async fn delete_all(client: &Client, names: &[String]) -> Result<(), CliError> {
    stream::iter(names)
        .map(|n| client.delete_topic(n))
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<bool>>()
        .await?;
    Ok(())
}

/// Creates the topics with their groups (from the start) and
/// `PER_PARTITION` messages per partition, many topics at once.
async fn create_all(client: &Client, names: &[String], shape: Shape) -> Result<(), CliError> {
    stream::iter(names)
        .map(|name| async move {
            client
                .create_topic(&TopicSpec::new(name, shape.partitions)?)
                .await?;
            for g in 0..shape.groups {
                client
                    .create_group(name, &format!("g{g}"), &StartAt::Earliest)
                    .await?;
            }
            // Keyless: spread round robin over the partitions.
            let records = (0..PER_PARTITION * shape.partitions as usize)
                .map(|i| Record::encode(&i))
                .collect::<millrace::Result<Vec<Record>>>()?;
            for r in client.publish_batch(name, records).await? {
                r?;
            }
            Ok::<(), millrace::Error>(())
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// `serve.overview.*`.
async fn overview(
    client: &Client,
    o: &BenchOptions,
    shape: Shape,
    served: &Served,
    figures: &mut Vec<Figure>,
) -> Result<(), CliError> {
    let names = topic_names(shape);
    delete_all(client, &names).await?;
    let started = Instant::now();
    create_all(client, &names, shape).await?;
    tracing::info!(took = ?started.elapsed(), "bench: serve.overview set up");
    let result = overview_figures(client, o, shape, served, figures).await;
    delete_all(client, &names).await?;
    result
}

async fn overview_figures(
    client: &Client,
    o: &BenchOptions,
    shape: Shape,
    served: &Served,
    figures: &mut Vec<Figure>,
) -> Result<(), CliError> {
    let http = http_client()?;
    let url = format!("{}/topics", served.base);
    let get = || async {
        let r = http.get(&url).send().await.map_err(http_error)?;
        if !r.status().is_success() {
            return Err(CliError::other(format!("bench: GET {url}: {}", r.status())));
        }
        r.bytes().await.map_err(http_error)
    };
    // Warm up: the connection is open and kept alive from here on.
    let body = get().await?;
    let first: Value = serde_json::from_slice(&body)
        .map_err(|e| CliError::other(format!("bench: GET {url}: {e}")))?;
    let seen = first["topics"].as_array().map_or(0, Vec::len);
    if seen < shape.topics {
        return Err(CliError::other(format!(
            "bench: the overview shows {seen} topics, expected at least {}",
            shape.topics
        )));
    }
    let samples = 4 * o.reps.max(1);
    let (mut http_ms, mut http_commands) = (Vec::new(), Vec::new());
    let mut round_trips = Vec::new();
    for _ in 0..samples {
        let (took, sent, body) = measured(client, get).await?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| CliError::other(format!("bench: GET {url}: {e}")))?;
        round_trips.push(v["round_trips"].as_f64().unwrap_or(0.0));
        http_ms.push(ms(took));
        http_commands.push(sent as f64);
    }
    let mut lib_ms = Vec::new();
    for _ in 0..samples {
        let (took, _, _) = measured(client, || async { Ok(client.overview().await?) }).await?;
        lib_ms.push(ms(took));
    }
    // Once: the way before the overview, a describe per topic and group.
    let (took, sent, _) = measured(client, || async {
        for name in client.list_topics().await? {
            let info = client.describe_topic(&name).await?;
            for g in &info.groups {
                client.describe_group(&name, g).await?;
            }
        }
        Ok(())
    })
    .await?;
    figures.push(figure("serve.overview.http_ms", "ms", http_ms));
    figures.push(figure("serve.overview.library_ms", "ms", lib_ms));
    figures.push(figure("serve.overview.round_trips", "count", round_trips));
    figures.push(figure("serve.overview.commands", "count", http_commands));
    figures.push(figure("serve.overview.before_ms", "ms", vec![ms(took)]));
    figures.push(figure(
        "serve.overview.before_commands",
        "count",
        vec![sent as f64],
    ));
    Ok(())
}

/// A record as `POST .../messages` takes it: about 100 bytes of JSON data.
fn record_json(i: usize) -> Value {
    json!({
        "data": {"invoice": format!("inv-{i:06}"), "cents": 420, "currency": "EUR", "note": "x".repeat(40)},
        "key": format!("key-{}", i % 1000),
    })
}

/// `serve.publish`, `serve.publish.library` and `serve.publish_share`.
async fn publish(
    client: &Client,
    o: &BenchOptions,
    served: &Served,
    figures: &mut Vec<Figure>,
) -> Result<(), CliError> {
    let topic = "bench.serve.publish";
    client.delete_topic(topic).await?;
    client
        .create_topic(&TopicSpec::new(topic, o.partitions)?)
        .await?;
    let n = (o.n / 4).max(PUBLISHERS);
    let (mut over_http, mut library) = (Vec::new(), Vec::new());
    for _ in 0..o.reps.max(1) {
        over_http.push(publish_http(served, topic, n).await?);
        library.push(publish_library(client, topic, n).await?);
    }
    client.delete_topic(topic).await?;
    let shares: Vec<f64> = over_http
        .iter()
        .zip(&library)
        .map(|(h, l)| h / l.max(1e-9))
        .collect();
    let http = figure("serve.publish", "msg/s", over_http);
    let lib = figure("serve.publish.library", "msg/s", library);
    // The median of the repetitions' shares (each a pair run back to back).
    let share = figure("serve.publish_share", "share", shares);
    figures.extend([http, lib, share]);
    Ok(())
}

/// `n` records POSTed one per request by `PUBLISHERS` keep-alive clients;
/// messages per second.
async fn publish_http(served: &Served, topic: &str, n: usize) -> Result<f64, CliError> {
    let url = format!("{}/topics/{topic}/messages", served.base);
    let probe = format!("{}/server", served.base);
    let mut clients = Vec::with_capacity(PUBLISHERS);
    for c in 0..PUBLISHERS {
        let http = http_client()?;
        // Open the connection before the clock starts.
        http.get(&probe).send().await.map_err(http_error)?;
        let bodies: Vec<Bytes> = (c..n)
            .step_by(PUBLISHERS)
            .map(|i| Bytes::from(record_json(i).to_string()))
            .collect();
        clients.push((http, bodies));
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(http, bodies)| {
            let url = url.clone();
            tokio::spawn(async move {
                for body in bodies {
                    let r = http
                        .post(&url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body)
                        .send()
                        .await
                        .map_err(http_error)?;
                    let status = r.status();
                    let text = r.bytes().await.map_err(http_error)?;
                    if status != reqwest::StatusCode::CREATED {
                        return Err(CliError::other(format!(
                            "bench: POST {url}: {status}: {}",
                            String::from_utf8_lossy(&text)
                        )));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| CliError::other(format!("bench: {e}")))??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// The same `n` records through `publish_record` from `PUBLISHERS` tasks,
/// each built from its JSON as the server builds it; messages per second.
async fn publish_library(client: &Client, topic: &str, n: usize) -> Result<f64, CliError> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|c| {
            let client = client.clone();
            let topic = topic.to_string();
            tokio::spawn(async move {
                for i in (c..n).step_by(PUBLISHERS) {
                    let v = record_json(i);
                    let key = v["key"].as_str().unwrap_or_default().to_string();
                    let record = Record::encode(&v["data"])?.key(key);
                    client.publish_record(&topic, record).await?;
                }
                Ok::<(), millrace::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| CliError::other(format!("bench: {e}")))??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64().max(1e-9))
}
