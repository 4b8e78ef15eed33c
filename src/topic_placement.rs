//! Placement of topics on a Redis Cluster: choosing a balanced topic's
//! partition tags at creation, and the report `topic placement` prints
//! (each partition's slot and primary, each primary's share of the topic
//! and of all topics, and the slot moves that would even the topic again
//! after a reshard).
//!
//! The totals across topics are not kept anywhere: at creation, and in the
//! report, they are counted from every registered topic's metadata (its
//! partitions' tags) and the cluster's current slot map. So a reshard or a
//! deleted topic is accounted for with no record to repair, and the next
//! topic starts where the topics that exist now leave off.

use serde::Serialize;

use crate::config::redact_url;
use crate::error::{Error, Result};
use crate::placement::plan::{self, PlanError, ShardSlots};
use crate::placement::{Placement, Tags, advice};
use crate::store::backend::Backend;
use crate::store::cluster_slots::Primary;
use crate::store::topics::Layout;

/// Where one partition of a topic lives.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PartitionPlacement {
    /// The partition.
    pub partition: u32,
    /// Its hash tag (the text between the braces of its keys).
    pub tag: String,
    /// Its slot (on a cluster; `None` on a single server).
    pub slot: Option<u16>,
    /// The primary serving it (`host:port`).
    pub primary: String,
    /// The primary's replicas.
    pub replicas: Vec<String>,
    /// Messages in its lane streams.
    pub messages: u64,
    /// Bytes its lane streams take (`MEMORY USAGE`); `None` when the
    /// server refuses the command.
    pub bytes: Option<u64>,
}

/// One primary's share of a topic and of all topics.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PrimaryShare {
    /// `host:port`.
    pub node: String,
    /// The cluster node id (`None` on a single server).
    pub id: Option<String>,
    /// Slots it serves (16384 on a single server).
    pub slots: u32,
    /// The topic's partitions it holds.
    pub partitions: u64,
    /// Their fraction of the topic's partitions (0 to 1).
    pub share: f64,
    /// Partitions of all topics it holds.
    pub all_partitions: u64,
    /// Their fraction of all topics' partitions (0 to 1).
    pub all_share: f64,
}

/// A slot to move to even a topic again, as `CLUSTER SETSLOT` and
/// `MIGRATE` (or `redis-cli --cluster reshard`) would move it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SlotMove {
    /// The slot.
    pub slot: u16,
    /// The topic's partitions in it (all move with it).
    pub partitions: Vec<u32>,
    /// The primary serving it now (`host:port`).
    pub from: String,
    /// Its node id.
    pub from_id: String,
    /// The primary to move it to (`host:port`).
    pub to: String,
    /// Its node id.
    pub to_id: String,
}

/// What `topic placement` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TopicPlacement {
    /// The topic.
    pub topic: String,
    /// The scheme of its hash tags.
    pub placement: Placement,
    /// Whether the server is a cluster.
    pub cluster: bool,
    /// Every partition, in order.
    pub partitions: Vec<PartitionPlacement>,
    /// Every primary, in the order of their first slot.
    pub primaries: Vec<PrimaryShare>,
    /// The most partitions of the topic one primary holds.
    pub busiest: u64,
    /// The most any primary should hold: ⌈P/S⌉.
    pub ideal_max: u64,
    /// Whether every primary holds at most `ideal_max` partitions.
    pub even: bool,
    /// The slot moves that would even the topic again (none when even).
    /// Advice only: nothing is moved.
    pub moves: Vec<SlotMove>,
}

fn shard_slots(primaries: &[Primary]) -> Vec<ShardSlots> {
    primaries
        .iter()
        .map(|p| ShardSlots {
            node: p.addr.clone(),
            ranges: p.ranges.clone(),
        })
        .collect()
}

/// The slots of every partition of every registered topic (the hash
/// scheme for a topic whose metadata says none, skipped when it has no
/// readable metadata).
async fn all_topic_slots(backend: &Backend) -> Result<Vec<u16>> {
    let store = backend.store();
    let mut slots = Vec::new();
    for name in store.topic_names().await? {
        let Some(fields) = store.topic_meta(&name).await? else {
            continue;
        };
        let field = |f: &str| fields.iter().find(|(k, _)| k == f).map(|(_, v)| v.as_str());
        let Some(partitions) = field("partitions").and_then(|v| v.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(tags) = Tags::from_stored(field("placement"), field("tags"), partitions) else {
            continue;
        };
        slots.extend((0..partitions).map(|p| tags.slot(&name, p)));
    }
    Ok(slots)
}

/// Chooses the tags of a new balanced topic of `partitions` partitions on
/// the cluster: even over the current primaries, the extra partitions on
/// those that hold the fewest of all topics now.
pub(crate) async fn balanced_tags(backend: &Backend, topic: &str, partitions: u32) -> Result<Tags> {
    let primaries = backend.store().cluster_primaries().await?;
    let shards = shard_slots(&primaries);
    let totals = plan::counts(&all_topic_slots(backend).await?, &shards);
    match plan::plan(topic, partitions, &shards, &totals) {
        Ok(suffixes) => Ok(Tags::Balanced(suffixes.into())),
        Err(e) => Err(Error::Placement {
            topic: topic.to_string(),
            reason: match e {
                PlanError::NoPrimaries => "the cluster reports no primary serving slots".into(),
                PlanError::NoSuffix { partition, node } => {
                    format!("no hash tag for partition {partition} lands on {node}")
                }
            },
        }),
    }
}

fn fraction(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

/// The placement report of a topic whose settings are `layout` and `tags`.
pub(crate) async fn report(
    backend: &Backend,
    layout: Layout<'_>,
    tags: &Tags,
) -> Result<TopicPlacement> {
    let store = backend.store();
    let keys = backend.keys();
    let topic = layout.topic;
    let lengths = store.topic_lengths(layout).await?;
    let stream_keys: Vec<Vec<String>> = (0..layout.partitions)
        .map(|p| {
            (0..layout.lanes)
                .map(|l| keys.stream(topic, p, l))
                .collect()
        })
        .collect();
    let bytes = store.memory_usage(stream_keys).await?;
    let messages = |p: u32| -> u64 { lengths.get(p as usize).map_or(0, |l| l.lanes.iter().sum()) };
    let byte = |p: u32| bytes.as_ref().and_then(|b| b.get(p as usize).copied());
    let p_count = u64::from(layout.partitions);

    if !backend.is_cluster() {
        let node = server_addr(backend);
        let all = all_topic_slots(backend).await?.len() as u64;
        let partitions = (0..layout.partitions)
            .map(|p| PartitionPlacement {
                partition: p,
                tag: tags.tag(topic, p),
                slot: None,
                primary: node.clone(),
                replicas: Vec::new(),
                messages: messages(p),
                bytes: byte(p),
            })
            .collect();
        return Ok(TopicPlacement {
            topic: topic.to_string(),
            placement: tags.scheme(),
            cluster: false,
            partitions,
            primaries: vec![PrimaryShare {
                node,
                id: None,
                slots: u32::from(crate::placement::slot::SLOTS),
                partitions: p_count,
                share: fraction(p_count, p_count),
                all_partitions: all,
                all_share: fraction(all, all),
            }],
            busiest: p_count,
            ideal_max: p_count,
            even: true,
            moves: Vec::new(),
        });
    }

    let primaries = store.cluster_primaries().await?;
    let shards = shard_slots(&primaries);
    let owner = |slot: u16| shards.iter().position(|s| s.serves(slot));
    let slots: Vec<u16> = (0..layout.partitions)
        .map(|p| tags.slot(topic, p))
        .collect();
    let all = plan::counts(&all_topic_slots(backend).await?, &shards);
    let all_sum: u64 = all.iter().sum();
    let e = advice::evenness(&slots, primaries.len(), owner);
    let partitions = (0..layout.partitions)
        .map(|p| {
            let slot = slots[p as usize];
            let primary = owner(slot).map(|i| &primaries[i]);
            PartitionPlacement {
                partition: p,
                tag: tags.tag(topic, p),
                slot: Some(slot),
                primary: primary.map_or_else(|| "unserved".to_string(), |n| n.addr.clone()),
                replicas: primary.map(|n| n.replicas.clone()).unwrap_or_default(),
                messages: messages(p),
                bytes: byte(p),
            }
        })
        .collect();
    let shares = primaries
        .iter()
        .zip(&shards)
        .enumerate()
        .map(|(i, (n, s))| PrimaryShare {
            node: n.addr.clone(),
            id: Some(n.id.clone()),
            slots: s.slot_count(),
            partitions: e.counts[i],
            share: fraction(e.counts[i], p_count),
            all_partitions: all[i],
            all_share: fraction(all[i], all_sum),
        })
        .collect();
    let moves = e
        .moves
        .iter()
        .map(|m| SlotMove {
            slot: m.slot,
            partitions: m.partitions.clone(),
            from: primaries[m.from].addr.clone(),
            from_id: primaries[m.from].id.clone(),
            to: primaries[m.to].addr.clone(),
            to_id: primaries[m.to].id.clone(),
        })
        .collect();
    Ok(TopicPlacement {
        topic: topic.to_string(),
        placement: tags.scheme(),
        cluster: true,
        partitions,
        primaries: shares,
        busiest: e.busiest,
        ideal_max: e.ideal_max,
        even: e.busiest <= e.ideal_max,
        moves,
    })
}

/// `host:port` of a single server, from the first configured URL.
fn server_addr(backend: &Backend) -> String {
    let Some(u) = backend.config().urls.first() else {
        return String::new();
    };
    match url::Url::parse(u) {
        Ok(parsed) if parsed.host_str().is_some() => format!(
            "{}:{}",
            parsed.host_str().unwrap_or_default(),
            parsed.port().unwrap_or(6379)
        ),
        _ => redact_url(u),
    }
}
