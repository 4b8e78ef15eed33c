//! The scale scenarios: one thing varied at a time, the rest as in the main
//! scenarios, each a few seconds.
//!
//! - `scale.payload.{100b,1kb,16kb}.{produce,consume}`: `produce.batch` and
//!   `consume.ordered.c100` with larger payloads (fewer messages as they
//!   grow, at most 200 MB a run);
//! - `scale.partitions.{1,8,64}.consume`: `consume.ordered.c100` over 1, 8
//!   and 64 partitions;
//! - `scale.backlog.memory` and `scale.backlog.consume`: 10 × n messages
//!   waiting (1 M in a full run): the Redis memory each takes, then the
//!   ordered consume of all of them (one repetition: it is the largest);
//! - `scale.processes.{1,2,4}.consume`: ordered consume by 1, 2 and 4
//!   worker processes sharing one group (see [`super::processes`]).
//!
//! Each is metered like the main scenarios (CPU per message).

use super::cpu::Meter;
use super::{
    BenchOptions, Consume, consume, drain, fresh_topic, produce_batch, records, reps, used_memory,
};
use crate::client::Client;
use crate::error::Result;
use crate::group::Mode;

/// At most this many payload bytes in one run.
const BYTES_PER_RUN: usize = 200_000_000;

/// The payload sizes, with their names.
const PAYLOADS: [(&str, usize); 3] = [("100b", 100), ("1kb", 1_000), ("16kb", 16_000)];

/// The partition counts.
const PARTITIONS: [u32; 3] = [1, 8, 64];

/// Waiting messages in the backlog scenario, per message of a throughput run.
const BACKLOG_PER_N: usize = 10;

/// Messages published per call while filling the backlog.
const FILL_CHUNK: usize = 50_000;

/// Messages per run with `bytes` payloads: `o.n`, fewer for large ones.
pub(crate) fn messages_for(o: &BenchOptions, bytes: usize) -> usize {
    o.n.min(BYTES_PER_RUN / bytes.max(1)).max(100)
}

/// Runs the selected scale scenarios, handing each figure to `push`.
pub(crate) async fn run(
    client: &Client,
    o: &BenchOptions,
    m: &Meter,
    push: &mut dyn FnMut(&str, &'static str, Vec<f64>),
) -> Result<()> {
    for (name, bytes) in PAYLOADS {
        let payload = vec![b'x'; bytes];
        let sized = BenchOptions {
            n: messages_for(o, bytes),
            ..o.clone()
        };
        let produce = format!("scale.payload.{name}.produce");
        if o.selects(&produce) {
            let v = reps(o, || produce_batch(client, &sized, &payload, m)).await?;
            push(&produce, "msg/s", v);
        }
        let consume_name = format!("scale.payload.{name}.consume");
        if o.selects(&consume_name) {
            let run = Consume {
                mode: Mode::Ordered,
                concurrency: 100,
                groups: 1,
                n: sized.n,
            };
            let v = reps(o, || consume(client, &sized, &payload, run, m)).await?;
            push(&consume_name, "msg/s", v);
        }
    }
    let payload = vec![b'x'; o.payload_bytes];
    for partitions in PARTITIONS {
        let name = format!("scale.partitions.{partitions}.consume");
        if o.selects(&name) {
            let spread = BenchOptions {
                partitions,
                ..o.clone()
            };
            let run = Consume {
                mode: Mode::Ordered,
                concurrency: 100,
                groups: 1,
                n: o.n,
            };
            let v = reps(o, || consume(client, &spread, &payload, run, m)).await?;
            push(&name, "msg/s", v);
        }
    }
    if o.selects("scale.backlog") {
        let (bytes, rate) = backlog(client, o, m).await?;
        // The consume first: the CPU metered is its.
        push("scale.backlog.consume", "msg/s", vec![rate]);
        push("scale.backlog.memory", "bytes", vec![bytes]);
    }
    super::processes::run(client, o, m, push).await?;
    Ok(())
}

/// Fills `bench.consume` with 10 × n messages (Redis memory per message
/// from `used_memory` before and after), then drains them with one ordered
/// worker at concurrency 100.
async fn backlog(client: &Client, o: &BenchOptions, m: &Meter) -> Result<(f64, f64)> {
    let n = o.n * BACKLOG_PER_N;
    let payload = vec![b'x'; o.payload_bytes];
    fresh_topic(client, "bench.consume", o.partitions).await?;
    let before = used_memory(client).await?;
    let mut left = n;
    while left > 0 {
        let chunk = left.min(FILL_CHUNK);
        client
            .publish_batch("bench.consume", records(chunk, &payload))
            .await?;
        left -= chunk;
    }
    let per_message = used_memory(client).await?.saturating_sub(before) as f64 / n as f64;
    let run = Consume {
        mode: Mode::Ordered,
        concurrency: 100,
        groups: 1,
        n,
    };
    let rate = drain(client, run, m).await?;
    client.delete_topic("bench.consume").await?;
    Ok((per_message, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_payloads_run_fewer_messages() {
        let o = BenchOptions::full();
        assert_eq!(messages_for(&o, 100), 100_000);
        assert_eq!(messages_for(&o, 16_000), 12_500);
        let q = BenchOptions {
            n: 500,
            ..BenchOptions::quick()
        };
        assert_eq!(messages_for(&q, 16_000), 500);
    }
}
