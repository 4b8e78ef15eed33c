//! Cancelling a message for one group, wherever it stands: a retry parked
//! in the group's retry set is removed here; otherwise the group is asked
//! (`lua/cancel_request.lua`) and its members act within a heartbeat: a
//! message not yet started is skipped, a running handler's
//! `Context::cancel` fires (an `exec` handler's process group gets SIGTERM,
//! then SIGKILL), a wait to retry in place ends. Either way the message is
//! acked for the group with `cancelled` as its result.

use serde::Serialize;

use crate::envelope;
use crate::error::{Error, Result};
use crate::id::MessageId;
use crate::reply::DEFAULT_RESULT_TTL;
use crate::status::{self, MessageState};
use crate::store::keys::validate_name;
use crate::store::results::ResultOf;
use crate::topic::Catalog;

/// What [`Client::cancel`](crate::Client::cancel) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The group's members were asked: whoever comes to the message skips
    /// it; if it runs or waits to retry, its member stops it (within a
    /// heartbeat, about a second).
    Requested,
    /// It waited in the group's retry set (shared mode): removed, and
    /// recorded as cancelled.
    Removed,
    /// Nothing to cancel: the group is done with it (its state says how).
    Finished(MessageState),
}

pub(crate) async fn cancel(
    cat: &Catalog,
    topic: &str,
    id: &MessageId,
    group: &str,
) -> Result<CancelOutcome> {
    validate_name("group", group)?;
    cat.topic_cached(topic).await?;
    let store = cat.store();
    if !store.group_exists(topic, group).await? {
        return Err(Error::GroupNotFound {
            topic: topic.to_string(),
            group: group.to_string(),
        });
    }
    let not_found = || Error::MessageNotFound {
        topic: topic.to_string(),
        id: id.to_string(),
    };
    let status = status::message_status(cat, topic, id)
        .await?
        .ok_or_else(not_found)?;
    let state = status
        .groups
        .iter()
        .find(|g| g.group == group)
        .map(|g| g.state)
        .unwrap_or_default();
    if let MessageState::Done
    | MessageState::DeadLettered
    | MessageState::Gone
    | MessageState::Cancelled = state
    {
        return Ok(CancelOutcome::Finished(state));
    }
    let (p, lane, first) = (id.partition(), id.lane(), id.first());
    let parked: Vec<Vec<u8>> = store
        .parked_retries(topic, p, group)
        .await?
        .into_iter()
        .filter_map(|(member, _)| {
            let (l, _, origin) = envelope::retry_origin(&member)?;
            (l == lane && origin == first).then_some(member)
        })
        .collect();
    if store.remove_parked(topic, p, group, &parked).await? > 0 {
        let of = ResultOf {
            topic,
            partition: p,
            group,
            lane,
            first,
        };
        let ttl = u64::try_from(DEFAULT_RESULT_TTL.as_millis()).unwrap_or(u64::MAX);
        store.keep_cancelled(of, ttl).await?;
        return Ok(CancelOutcome::Removed);
    }
    store.request_cancel(topic, group, &id.to_string()).await?;
    Ok(CancelOutcome::Requested)
}
