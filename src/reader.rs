//! Reading a topic without a consumer group: for read models, debugging and
//! `millrace tail`.
//!
//! A [`Reader`] keeps a cursor per partition lane, reads each with `XRANGE`
//! in batches (one pipeline, or one per partition on a cluster) and merges
//! them by stream id, so messages come out in publish-time order across
//! partitions. At the end it stops, or with `follow` waits on a blocking
//! `XREAD` on a dedicated pooled connection (one per partition on a cluster,
//! where one `XREAD` cannot span slots).

use std::collections::VecDeque;
use std::str::FromStr;

use crate::envelope::{Message, StreamId};
use crate::error::{Error, Result};
use crate::store::lane_reads::{LaneCursor, LaneRef};
use crate::topic::Catalog;
use crate::topic::TopicSpec;

/// Where a reader (or a group, later) starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained message.
    Earliest,
    /// Only messages published after the reader started.
    Latest,
    /// Messages published at or after this time (ms since the epoch).
    TimeMs(u64),
    /// Messages with this stream id or later, in every partition.
    Id(StreamId),
}

impl FromStr for StartAt {
    type Err = Error;

    /// `earliest`, `latest`, an RFC 3339 time, or a stream id (`<ms>-<seq>`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            _ if s.contains('T') => {
                let t =
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| {
                            Error::invalid("start", format!("{s:?} is not an RFC 3339 time: {e}"))
                        })?;
                let ms = t.unix_timestamp_nanos() / 1_000_000;
                Ok(StartAt::TimeMs(u64::try_from(ms).unwrap_or(0)))
            }
            _ if s.contains(':') => Err(Error::invalid(
                "start",
                match crate::id::MessageId::parse(s) {
                    Ok(id) => format!(
                        "{s:?} is a message id, not a position: a start applies to every \
                         partition; use earliest, latest, an RFC 3339 time or a stream id \
                         (this message was first published as {})",
                        id.first()
                    ),
                    Err(_) => {
                        format!("{s:?}: use earliest, latest, an RFC 3339 time or a stream id")
                    }
                },
            )),
            _ => StreamId::parse(s).map(StartAt::Id).map_err(|_| {
                Error::invalid(
                    "start",
                    format!("{s:?}: use earliest, latest, an RFC 3339 time or a stream id"),
                )
            }),
        }
    }
}

/// One partition lane as the reader goes through it.
struct Lane {
    /// The lane stream.
    at: LaneRef,
    /// Last id delivered (or the position before the start): exclusive.
    after: StreamId,
    buffer: VecDeque<Message>,
    /// True once a read found nothing new.
    drained: bool,
}

impl Lane {
    /// Where the next read of this lane starts.
    fn cursor(&self) -> LaneCursor {
        LaneCursor {
            at: self.at,
            after: self.after,
        }
    }
}

/// Reads a topic without a group, in publish-time order across partitions.
pub struct Reader {
    client: Catalog,
    spec: TopicSpec,
    lanes: Vec<Lane>,
    batch: usize,
    follow: bool,
}

impl Reader {
    /// A reader of `topic` from `start`.
    pub(crate) async fn open(client: &Catalog, topic: &str, start: StartAt) -> Result<Reader> {
        let spec = client.topic(topic).await?;
        let mut lanes = Vec::new();
        for partition in 0..spec.partitions {
            for lane in 0..spec.lanes {
                lanes.push(Lane {
                    at: LaneRef { partition, lane },
                    after: StreamId { ms: 0, seq: 0 },
                    buffer: VecDeque::new(),
                    drained: false,
                });
            }
        }
        match start {
            StartAt::Earliest => {}
            StartAt::TimeMs(ms) => {
                for l in &mut lanes {
                    l.after = StreamId { ms, seq: 0 }.predecessor();
                }
            }
            StartAt::Id(id) => {
                for l in &mut lanes {
                    l.after = id.predecessor();
                }
            }
            StartAt::Latest => {
                let at: Vec<LaneRef> = lanes.iter().map(|l| l.at).collect();
                let last = client.store().last_lane_ids(topic, &at).await?;
                for (l, last) in lanes.iter_mut().zip(last) {
                    if let Some(id) = last {
                        l.after = id;
                    }
                }
            }
        }
        Ok(Reader {
            client: client.clone(),
            spec,
            lanes,
            batch: 500,
            follow: false,
        })
    }

    /// Keep waiting for new messages at the end instead of stopping.
    #[must_use]
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// Messages fetched per partition lane per read (default 500).
    #[must_use]
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The next message in time order; `None` at the end when not following.
    pub async fn next(&mut self) -> Result<Option<Message>> {
        loop {
            self.refill().await?;
            let best = self
                .lanes
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.buffer.front().map(|m| (m.id, i)))
                .min();
            if let Some((_, i)) = best {
                let lane = &mut self.lanes[i];
                let m = lane.buffer.pop_front();
                if let Some(m) = &m {
                    lane.after = m.id;
                }
                return Ok(m);
            }
            if !self.follow {
                return Ok(None);
            }
            self.block().await?;
        }
    }

    /// Reads every lane whose buffer is empty and that was not drained.
    async fn refill(&mut self) -> Result<()> {
        let need: Vec<usize> = (0..self.lanes.len())
            .filter(|&i| self.lanes[i].buffer.is_empty() && !self.lanes[i].drained)
            .collect();
        if need.is_empty() {
            return Ok(());
        }
        let count = self.batch;
        let cursors: Vec<LaneCursor> = need.iter().map(|&i| self.lanes[i].cursor()).collect();
        let read = self
            .client
            .store()
            .read_lanes(&self.spec.name, &cursors, count)
            .await?;
        for (&i, msgs) in need.iter().zip(read) {
            let msgs = msgs?;
            let l = &mut self.lanes[i];
            l.drained = msgs.len() < count;
            l.buffer.extend(msgs);
        }
        Ok(())
    }

    /// Waits for new entries in any lane (up to the block timeout).
    async fn block(&mut self) -> Result<()> {
        let block = self.client.config().block_timeout;
        let cursors: Vec<LaneCursor> = self.lanes.iter().map(Lane::cursor).collect();
        let news = self
            .client
            .wait_for_lanes(&self.spec.name, &cursors, self.batch, block)
            .await?;
        // Something arrived: hand it out now; other partitions' blocked
        // reads are dropped and simply read again next time.
        for n in news {
            let l = &mut self.lanes[n.index];
            for m in n.messages {
                let m = m?;
                if m.id > l.after && l.buffer.back().is_none_or(|b| m.id > b.id) {
                    l.buffer.push_back(m);
                }
            }
            l.drained = false;
        }
        Ok(())
    }
}

/// The last `per_lane` entries of every lane of `topic` (`XREVRANGE`, one
/// pipeline), merged by stream id as a [`Reader`] merges them, oldest
/// first, and of those the newest `total`.
pub(crate) async fn latest(
    client: &Catalog,
    topic: &str,
    per_lane: usize,
    total: usize,
) -> Result<Vec<Message>> {
    let spec = client.topic(topic).await?;
    let lanes: Vec<LaneRef> = (0..spec.partitions)
        .flat_map(|partition| (0..spec.lanes).map(move |lane| LaneRef { partition, lane }))
        .collect();
    let per_lane = client
        .store()
        .last_lane_entries(topic, &lanes, per_lane)
        .await?;
    Ok(newest(per_lane, total))
}

/// The newest `count` of lanes' entries (each lane newest first), oldest
/// first; ties between lanes in lane order, as the reader emits them.
fn newest(per_lane: Vec<Vec<Message>>, count: usize) -> Vec<Message> {
    let mut all: Vec<(StreamId, usize, Message)> = per_lane
        .into_iter()
        .enumerate()
        .flat_map(|(i, msgs)| msgs.into_iter().map(move |m| (m.id, i, m)))
        .collect();
    all.sort_by_key(|(id, i, _)| (*id, *i));
    let skip = all.len().saturating_sub(count);
    all.into_iter().skip(skip).map(|(_, _, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!("earliest".parse::<StartAt>().unwrap(), StartAt::Earliest);
        assert_eq!(
            "2026-01-01T00:00:00Z".parse::<StartAt>().unwrap(),
            StartAt::TimeMs(1_767_225_600_000)
        );
        assert_eq!(
            "5-1".parse::<StartAt>().unwrap(),
            StartAt::Id(StreamId { ms: 5, seq: 1 })
        );
        assert!("yesterday".parse::<StartAt>().is_err());
        let e = "2:0:5-1".parse::<StartAt>().unwrap_err().to_string();
        assert!(e.contains("is a message id, not a position"), "{e}");
    }

    #[test]
    fn predecessor_makes_a_cursor_inclusive() {
        assert_eq!(
            StreamId { ms: 10, seq: 0 }.predecessor(),
            StreamId {
                ms: 9,
                seq: u64::MAX
            }
        );
        assert_eq!(
            StreamId { ms: 10, seq: 3 }.predecessor(),
            StreamId { ms: 10, seq: 2 }
        );
    }
}
