//! The overview ([`Client::overview`](crate::Client::overview)): every
//! topic with its lengths, and every group's lag, pending count, pause flag
//! and live members, read in a number of round trips that does not depend
//! on how many topics, groups or partitions there are.
//!
//! The reads are three steps of the store ([`crate::store::overview`]):
//! the topic names; every topic's settings and groups with Redis's clock;
//! then every group's flag and members and every lane's `XINFO`. What they
//! read is turned into the figures by [`survey_topic`], which is pure and
//! counts lag and pending by the rule [`describe_group`](crate::Client::describe_group)
//! uses (`group::lag`), reading each lane's replies once.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::group::{group_facts, stream_facts};
use crate::store::keys::validate_topic;
use crate::store::overview::{Surveyed, TopicHead, TopicReads};
use crate::topic::{Catalog, SchemaPolicy, TopicSpec};

/// Every topic at one moment, as the dashboard shows it
/// ([`Client::overview`](crate::Client::overview)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Overview {
    /// Redis's clock when the groups' members were counted (ms since the
    /// epoch).
    pub time_ms: u64,
    /// How many round trips to Redis the overview took: 3 (the topic
    /// names, then every topic's settings and groups, then everything
    /// else), 2 when there is no topic. On a cluster each round trip is one
    /// pipeline per slot, all in flight at once.
    pub round_trips: u32,
    /// Every topic, by name; a topic deleted while it was read is left out.
    pub topics: Vec<TopicOverview>,
}

/// One topic in the [`Overview`]: its settings, what its streams hold, and
/// each group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TopicOverview {
    /// The topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Number of lanes.
    pub lanes: u8,
    /// Time retention in milliseconds.
    pub retention_ms: u64,
    /// Length cap per partition lane.
    pub max_len: Option<u64>,
    /// Whether publishes must match the topic's schema.
    pub schema: SchemaPolicy,
    /// Messages across all partitions and lanes.
    pub length: u64,
    /// Messages per partition (all lanes).
    pub partition_lengths: Vec<u64>,
    /// Delayed messages waiting across partitions.
    pub delayed: u64,
    /// Dead letters across partitions.
    pub dlq_length: u64,
    /// Messages ever added to the topic's lane streams (the sum of their
    /// `entries-added`): a counter for publish rates. Trimming does not
    /// lower it; a delayed message counts once it is promoted, a dead
    /// letter replayed to the topic once more.
    pub published: u64,
    /// Each consumer group, by name.
    pub groups: Vec<GroupOverview>,
}

/// One consumer group of a topic in the [`Overview`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GroupOverview {
    /// The group.
    pub group: String,
    /// Messages not yet delivered to the group, all partitions and lanes
    /// (as [`GroupInfo::lag`](crate::GroupInfo::lag)).
    pub lag: u64,
    /// Messages delivered but not acknowledged (as
    /// [`GroupInfo::pending`](crate::GroupInfo::pending)).
    pub pending: u64,
    /// Whether the group is paused.
    pub paused: bool,
    /// Live members: those whose session has not expired.
    pub members: u64,
    /// Messages the group read from the lanes and no longer has pending
    /// (handled, dead-lettered, or parked for a retry): per lane stream
    /// its `entries-read` minus its pending count (never below 0), summed.
    /// A counter for handling rates: a group created at `latest` starts at
    /// what the stream had already taken, and a lane whose count Redis
    /// cannot tell (after a reset on an old server) adds 0.
    pub handled: u64,
}

/// What [`survey`] found: the clock, the topics and the round trips.
struct Survey {
    time_ms: u64,
    topics: Vec<TopicOverview>,
    round_trips: u32,
}

/// Every topic: three round trips (two when there is none).
pub(crate) async fn overview(cat: &Catalog) -> Result<Overview> {
    let mut names = cat.store().topic_names().await?;
    names.sort();
    let survey = survey(cat, &names).await?;
    Ok(Overview {
        time_ms: survey.time_ms,
        round_trips: survey.round_trips + 1,
        topics: survey.topics,
    })
}

/// One topic, as the overview shows it: two round trips.
pub(crate) async fn topic_overview(cat: &Catalog, name: &str) -> Result<TopicOverview> {
    validate_topic(name)?;
    survey(cat, &[name.to_string()])
        .await?
        .topics
        .pop()
        .ok_or_else(|| Error::TopicNotFound(name.to_string()))
}

/// The topics `names` (those that exist), in the order given: one round
/// trip for their settings and groups, one for the rest.
async fn survey(cat: &Catalog, names: &[String]) -> Result<Survey> {
    let store = cat.store();
    let heads = store.overview_heads(names).await?;
    let found = found_topics(names, heads.topics)?;
    // The settings were read here, not through the catalog's cache: record
    // each topic's partition tags before its keys are built.
    for (spec, _) in &found {
        cat.keys().remember(&spec.name, spec.tags.clone());
    }
    let surveyed: Vec<Surveyed<'_>> = found
        .iter()
        .map(|(spec, groups)| Surveyed {
            layout: spec.layout(),
            groups,
        })
        .collect();
    let (reads, round_trips) = if surveyed.is_empty() {
        (Vec::new(), 1)
    } else {
        (store.overview_reads(&surveyed, heads.time_ms).await?, 2)
    };
    let topics = found
        .iter()
        .zip(reads)
        .filter_map(|((spec, groups), reads)| survey_topic(spec, groups, reads))
        .collect();
    Ok(Survey {
        time_ms: heads.time_ms,
        topics,
        round_trips,
    })
}

/// The topics whose settings were found, each with its groups sorted (a
/// topic deleted after its name was listed has none: left out).
fn found_topics(names: &[String], heads: Vec<TopicHead>) -> Result<Vec<(TopicSpec, Vec<String>)>> {
    let mut out = Vec::with_capacity(names.len());
    for (name, head) in names.iter().zip(heads) {
        let Some(meta) = head.meta else { continue };
        let mut groups = head.groups;
        groups.sort();
        out.push((TopicSpec::from_fields(name, &meta)?, groups));
    }
    Ok(out)
}

/// A topic's figures from what the second step read of it (`groups` in
/// the order they were read); `None` if it was deleted meanwhile.
fn survey_topic(spec: &TopicSpec, groups: &[String], reads: TopicReads) -> Option<TopicOverview> {
    if !reads.exists {
        return None;
    }
    let mut partition_lengths = Vec::with_capacity(reads.partitions.len());
    let (mut delayed, mut dlq_length, mut published) = (0, 0, 0);
    let mut per_group: Vec<GroupOverview> = groups
        .iter()
        .zip(&reads.groups)
        .map(|(g, r)| GroupOverview {
            group: g.clone(),
            paused: r.paused,
            members: r.live_members,
            ..GroupOverview::default()
        })
        .collect();
    for part in &reads.partitions {
        let mut length = 0;
        // A lane stream that never existed holds nothing and has no groups.
        for lane in part.lanes.iter().flatten() {
            // Each reply read once, whatever the number of groups.
            let stream = stream_facts(&lane.stream);
            let read = group_facts(&lane.groups);
            length += stream.length.unwrap_or(0);
            published += stream.entries_added;
            for g in &mut per_group {
                let Some(facts) = read.iter().find(|f| f.name == g.group) else {
                    continue;
                };
                let (lag, pending) = facts.counts(&stream);
                g.lag += lag;
                g.pending += pending;
                g.handled += facts.entries_read.unwrap_or(0).saturating_sub(pending);
            }
        }
        partition_lengths.push(length);
        delayed += part.delayed;
        dlq_length += part.dead_letters;
    }
    Some(TopicOverview {
        name: spec.name.clone(),
        partitions: spec.partitions,
        lanes: spec.lanes,
        retention_ms: spec.retention.as_millis() as u64,
        max_len: spec.max_len,
        schema: spec.schema,
        length: partition_lengths.iter().sum(),
        partition_lengths,
        delayed,
        dlq_length,
        published,
        groups: per_group,
    })
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;
    use crate::store::groups::LaneXinfo;
    use crate::store::overview::{GroupReads, PartitionReads};

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn pairs(kv: &[(&str, Value)]) -> Value {
        Value::Array(kv.iter().flat_map(|(k, v)| [bulk(k), v.clone()]).collect())
    }

    /// A lane holding `length` of `added` entries, last id `last`, read by
    /// `groups`: (name, last delivered, entries-read, pending).
    fn lane(length: i64, added: i64, last: &str, groups: &[(&str, &str, i64, i64)]) -> LaneXinfo {
        LaneXinfo {
            stream: pairs(&[
                ("length", Value::Int(length)),
                ("last-generated-id", bulk(last)),
                ("entries-added", Value::Int(added)),
            ]),
            groups: Value::Array(
                groups
                    .iter()
                    .map(|(name, delivered, read, pending)| {
                        pairs(&[
                            ("name", bulk(name)),
                            ("pending", Value::Int(*pending)),
                            ("last-delivered-id", bulk(delivered)),
                            ("entries-read", Value::Int(*read)),
                            ("lag", Value::Int(added - read)),
                        ])
                    })
                    .collect(),
            ),
        }
    }

    fn spec() -> TopicSpec {
        TopicSpec::new("orders", 2).unwrap().lanes(2)
    }

    #[test]
    fn lengths_lag_pending_and_handled_add_up_over_partitions_and_lanes() {
        let groups = vec!["audit".to_string(), "billing".to_string()];
        let reads = TopicReads {
            exists: true,
            groups: vec![
                GroupReads {
                    paused: true,
                    live_members: 0,
                },
                GroupReads {
                    paused: false,
                    live_members: 2,
                },
            ],
            partitions: vec![
                PartitionReads {
                    lanes: vec![
                        Some(lane(
                            10,
                            12,
                            "9-0",
                            &[("audit", "4-0", 5, 1), ("billing", "9-0", 12, 3)],
                        )),
                        None,
                    ],
                    delayed: 2,
                    dead_letters: 1,
                },
                PartitionReads {
                    lanes: vec![
                        Some(lane(3, 3, "7-0", &[("billing", "7-0", 3, 0)])),
                        Some(lane(1, 1, "8-0", &[("audit", "0-0", 0, 0)])),
                    ],
                    delayed: 0,
                    dead_letters: 4,
                },
            ],
        };
        let t = survey_topic(&spec(), &groups, reads).unwrap();
        assert_eq!(t.partition_lengths, vec![10, 4]);
        assert_eq!((t.length, t.published), (14, 16));
        assert_eq!((t.delayed, t.dlq_length), (2, 5));
        let audit = &t.groups[0];
        // Lag 7 on the first lane, 1 on partition 1's lane 1; audit has no
        // position on partition 1's lane 0.
        assert_eq!((audit.lag, audit.pending, audit.handled), (8, 1, 4));
        assert_eq!((audit.paused, audit.members), (true, 0));
        let billing = &t.groups[1];
        assert_eq!((billing.lag, billing.pending, billing.handled), (0, 3, 12));
        assert_eq!((billing.paused, billing.members), (false, 2));
    }

    #[test]
    fn handled_is_never_negative_and_a_deleted_topic_is_left_out() {
        let groups = vec!["g".to_string()];
        let reads = |exists| TopicReads {
            exists,
            groups: vec![GroupReads::default()],
            partitions: vec![PartitionReads {
                // Pending above entries-read (counters drift on Redis 7.0).
                lanes: vec![Some(lane(5, 5, "5-0", &[("g", "5-0", 2, 4)])), None],
                ..PartitionReads::default()
            }],
        };
        let t = survey_topic(&spec(), &groups, reads(true)).unwrap();
        assert_eq!((t.groups[0].handled, t.groups[0].pending), (0, 4));
        assert_eq!(survey_topic(&spec(), &groups, reads(false)), None);
    }

    #[test]
    fn topics_without_settings_are_left_out_and_groups_sorted() {
        let names = vec!["a".to_string(), "b".to_string()];
        let meta: Vec<(String, String)> = [
            ("partitions", "2"),
            ("lanes", "1"),
            ("retention_ms", "1000"),
            ("max_len", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let heads = vec![
            TopicHead {
                meta: None,
                groups: vec!["x".into()],
            },
            TopicHead {
                meta: Some(meta),
                groups: vec!["z".into(), "m".into()],
            },
        ];
        let found = found_topics(&names, heads).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.name, "b");
        assert_eq!(found[0].0.partitions, 2);
        assert_eq!(found[0].1, vec!["m".to_string(), "z".to_string()]);
        let bad = vec![TopicHead {
            meta: Some(vec![("lanes".into(), "1".into())]),
            groups: vec![],
        }];
        assert!(matches!(
            found_topics(&names[..1], bad),
            Err(Error::Decode(_))
        ));
    }
}
