//! Where a topic's partitions live on a Redis Cluster: the slot of each
//! partition's hash tag, the tags a balanced topic chose at creation, and
//! how uneven a topic has become after slots moved. Pure logic; the store
//! reads the cluster's slot map and the topics' metadata.
//!
//! A topic with the **hash** scheme (every topic created before balanced
//! placement, every topic on a single server, and any topic created with
//! [`Placement::Hash`]) tags partition `p` with `T:p`, so its slot is
//! whatever CRC16 gives. A **balanced** topic created on a cluster tags it
//! `T:p.n`, with `n` found by search so that each primary holds ⌊P/S⌋ or
//! ⌈P/S⌉ of the topic's partitions; the suffixes are written once, in the
//! topic's metadata, and every client reads them from there.

pub mod advice;
pub mod plan;
pub mod slot;

use std::sync::Arc;

use serde::Serialize;

/// How a topic's partitions are placed on a Redis Cluster, as asked for at
/// creation (see [`TopicSpec::placement`](crate::TopicSpec::placement)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Partition `p`'s hash tag is `T:p`: its slot is whatever CRC16
    /// gives (the scheme of every topic created before balanced placement).
    Hash,
    /// On a cluster, each partition's tag is chosen so the topic's
    /// partitions spread evenly over the primaries, and the totals of all
    /// topics stay even. On a single server it is the same as `Hash`.
    #[default]
    Balanced,
}

impl Placement {
    /// `hash` or `balanced`.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Hash => "hash",
            Placement::Balanced => "balanced",
        }
    }

    /// Parses `hash` or `balanced` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "hash" => Some(Placement::Hash),
            "balanced" => Some(Placement::Balanced),
            _ => None,
        }
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hash tags of one topic's partitions, as its metadata says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tags {
    /// `T:p` for every partition.
    Hash,
    /// `T:p.n`, with suffix `n` of partition `p` at index `p`.
    Balanced(Arc<[u32]>),
}

impl Tags {
    /// The scheme.
    pub fn scheme(&self) -> Placement {
        match self {
            Tags::Hash => Placement::Hash,
            Tags::Balanced(_) => Placement::Balanced,
        }
    }

    /// The suffix of partition `p`, when the topic is balanced and has it.
    pub fn suffix(&self, p: u32) -> Option<u32> {
        match self {
            Tags::Hash => None,
            Tags::Balanced(s) => s.get(p as usize).copied(),
        }
    }

    /// The hash tag of partition `p` of `topic` (no braces).
    pub fn tag(&self, topic: &str, p: u32) -> String {
        match self.suffix(p) {
            Some(n) => plan::balanced_tag(topic, p, n),
            None => format!("{topic}:{p}"),
        }
    }

    /// The slot of partition `p` of `topic`.
    pub fn slot(&self, topic: &str, p: u32) -> u16 {
        slot::tag_slot(&self.tag(topic, p))
    }

    /// As stored in the meta hash's field `tags`: the suffixes joined by
    /// `,` (empty for the hash scheme).
    pub(crate) fn stored(&self) -> String {
        match self {
            Tags::Hash => String::new(),
            Tags::Balanced(s) => s.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        }
    }

    /// From the meta hash's fields `placement` and `tags`: absent or `hash`
    /// is the hash scheme; `balanced` needs exactly `partitions` suffixes.
    pub(crate) fn from_stored(
        placement: Option<&str>,
        tags: Option<&str>,
        partitions: u32,
    ) -> Result<Self, String> {
        match placement {
            None | Some("") | Some("hash") => Ok(Tags::Hash),
            Some("balanced") => {
                let suffixes = tags
                    .unwrap_or_default()
                    .split(',')
                    .map(|n| {
                        n.parse::<u32>()
                            .map_err(|_| format!("bad tag suffix {n:?}"))
                    })
                    .collect::<Result<Vec<u32>, String>>()?;
                if suffixes.len() != partitions as usize {
                    return Err(format!(
                        "{} tag suffixes for {partitions} partitions",
                        suffixes.len()
                    ));
                }
                Ok(Tags::Balanced(suffixes.into()))
            }
            Some(other) => Err(format!("unknown placement {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_refuse_what_does_not_fit() {
        let t = Tags::Balanced(vec![3, 0, 17].into());
        assert_eq!(t.tag("orders", 2), "orders:2.17");
        assert_eq!(Tags::Hash.tag("orders", 2), "orders:2");
        let back = Tags::from_stored(Some("balanced"), Some(&t.stored()), 3).unwrap();
        assert_eq!(back, t);
        assert_eq!(Tags::from_stored(None, None, 3).unwrap(), Tags::Hash);
        assert!(Tags::from_stored(Some("balanced"), Some("1,2"), 3).is_err());
        assert!(Tags::from_stored(Some("balanced"), None, 1).is_err());
        assert!(Tags::from_stored(Some("sideways"), None, 1).is_err());
    }
}
