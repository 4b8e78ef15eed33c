//! `scale.cluster.{1,3}.{produce,consume}`: `produce.batch` and
//! `consume.ordered.c100` on a topic of 12 partitions, on the run's server
//! and on a local Redis Cluster of three primaries started for it
//! ([`crate::local::PrivateCluster`], equal slot ranges), its partitions
//! placed evenly (4 per primary); `scale.cluster.3.hash.*` the same with
//! the hash placement of topics created before balanced placement.
//!
//! On the cluster the server CPU is the sum over the primaries (each asked
//! for `INFO cpu` on its own connection), so `server_cpu_us` compares with
//! the one server's: a cost that only a cluster has (cross-slot work,
//! redirections) would show as more CPU per message. Two more figures per
//! scenario: `.busiest_share`, the busiest primary's share of that CPU (a
//! third is even; the topic's placement decides it), and `.cpu_per_one_server`,
//! the cluster's server CPU per message over the one server's.

use super::cpu::Meter;
use super::{BenchOptions, Consume, consume, produce_batch};
use crate::client::Client;
use crate::config::Config;
use crate::error::Result;
use crate::group::Mode;
use crate::local::PrivateCluster;
use crate::placement::Placement;

/// Partitions of the cluster scenarios' topics: a multiple of three.
const PARTITIONS: u32 = 12;

/// Primaries of the local cluster.
const PRIMARIES: usize = 3;

/// Which scenario of a run.
#[derive(Clone, Copy)]
enum Kind {
    Produce,
    Consume,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Produce => "produce",
            Kind::Consume => "consume",
        }
    }
}

async fn one(client: &Client, o: &BenchOptions, kind: Kind, m: &Meter) -> Result<f64> {
    let payload = vec![b'x'; o.payload_bytes];
    match kind {
        Kind::Produce => produce_batch(client, o, &payload, m).await,
        Kind::Consume => {
            let run = Consume {
                mode: Mode::Ordered,
                concurrency: 100,
                groups: 1,
                n: o.n,
            };
            consume(client, o, &payload, run, m).await
        }
    }
}

/// Runs the selected cluster scenarios, handing each figure to `push`.
pub(crate) async fn run(
    client: &Client,
    o: &BenchOptions,
    m: &Meter,
    push: &mut dyn FnMut(&str, &'static str, Vec<f64>),
) -> Result<()> {
    if !o.selects("scale.cluster") {
        return Ok(());
    }
    let twelve = BenchOptions {
        partitions: PARTITIONS,
        ..o.clone()
    };
    let mut one_server = Vec::new();
    for kind in [Kind::Produce, Kind::Consume] {
        let v = super::reps(o, || one(client, &twelve, kind, m)).await?;
        one_server.push(m.peek().map(|c| c.server_us));
        push(&format!("scale.cluster.1.{}", kind.name()), "msg/s", v);
    }
    let cluster = match PrivateCluster::start(PRIMARIES) {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!("bench: scale.cluster.3 skipped: no local cluster: {why}");
            return Ok(());
        }
    };
    let config = Config::cluster(cluster.urls())?.prefix(client.keys().prefix())?;
    let cc = Client::connect(config).await?;
    let mut nodes = Vec::new();
    for url in cluster.urls() {
        nodes.push(
            redis::Client::open(url)?
                .get_multiplexed_async_connection()
                .await?,
        );
    }
    m.watch_nodes(nodes);
    let result = async {
        // Balanced placement (the default) under the plain names; the hash
        // placement of earlier versions as `.hash`, for comparison.
        for (placement, infix) in [(Placement::Balanced, ""), (Placement::Hash, ".hash")] {
            let placed = BenchOptions {
                placement,
                ..twelve.clone()
            };
            for (kind, single) in [Kind::Produce, Kind::Consume].into_iter().zip(&one_server) {
                let v = super::reps(o, || one(&cc, &placed, kind, m)).await?;
                let cpu = m.peek();
                let busiest = cpu.map(|c| c.busiest_share);
                let per_one = cpu
                    .zip(*single)
                    .filter(|(_, s)| *s > 0.0)
                    .map(|(c, s)| c.server_us / s);
                let name = format!("scale.cluster.{PRIMARIES}{infix}.{}", kind.name());
                push(&name, "msg/s", v);
                if let Some(b) = busiest {
                    push(&format!("{name}.busiest_share"), "share", vec![b]);
                }
                if let Some(r) = per_one {
                    push(&format!("{name}.cpu_per_one_server"), "share", vec![r]);
                }
            }
        }
        Ok(())
    }
    .await;
    m.watch_nodes(Vec::new());
    result
}
