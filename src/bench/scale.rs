//! The scale scenarios: one thing varied at a time, the rest as in the main
//! scenarios, each a few seconds.
//!
//! - `scale.payload.{100b,1kb,16kb}.{produce,consume}`: `produce.batch` and
//!   `consume.ordered.c100` with larger payloads (fewer messages as they
//!   grow, at most 200 MB a run);
//! - `scale.partitions.{1,8,64}.consume`: `consume.ordered.c100` over 1, 8
//!   and 64 partitions.
//!
//! Each is metered like the main scenarios (CPU per message).

use super::cpu::Meter;
use super::{BenchOptions, Consume, consume, produce_batch, reps};
use crate::client::Client;
use crate::error::Result;
use crate::group::Mode;

/// At most this many payload bytes in one run.
const BYTES_PER_RUN: usize = 200_000_000;

/// The payload sizes, with their names.
const PAYLOADS: [(&str, usize); 3] = [("100b", 100), ("1kb", 1_000), ("16kb", 16_000)];

/// The partition counts.
const PARTITIONS: [u32; 3] = [1, 8, 64];

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
    Ok(())
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
