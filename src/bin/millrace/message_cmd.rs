//! `millrace message show`: a message and where it stands in every group
//! of its topic; `message find`: a key's newest messages; `message cancel`:
//! cancel one for a group.

use millrace::{Client, GroupState, MessageId, MessageState, MessageStatus, StreamId};
use serde_json::{Value, json};

use crate::cli::{Global, MessageCancelArgs, MessageCommand, MessageFindArgs, MessageShowArgs};
use crate::error::CliError;
use crate::output::{Out, rfc3339_ms, table};
use crate::tail_cmd::TailLine;

pub async fn run(global: &Global, cmd: MessageCommand, out: &mut Out) -> Result<(), CliError> {
    match cmd {
        MessageCommand::Show(args) => show(global, args, out).await,
        MessageCommand::Find(args) => find_by_key(global, args, out).await,
        MessageCommand::Cancel(args) => cancel(global, args, out).await,
    }
}

async fn cancel(global: &Global, args: MessageCancelArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    millrace::keys::validate_name("group", &args.group)?;
    let client = crate::connect(global).await?;
    let id = find(&client, &args.topic, &args.id).await?.message_id;
    let outcome = client.cancel(&args.topic, &id, &args.group).await?;
    if args.json {
        let (what, state) = match outcome {
            millrace::CancelOutcome::Requested => ("requested", None),
            millrace::CancelOutcome::Removed => ("removed", None),
            millrace::CancelOutcome::Finished(s) => ("finished", Some(s.as_str())),
            _ => ("unknown", None),
        };
        let mut v = json!({"topic": args.topic, "group": args.group, "message_id": id.to_string(), "outcome": what});
        if let Some(s) = state {
            v["state"] = json!(s);
        }
        return out.json_line(&v);
    }
    let (g, id) = (&args.group, &id);
    match outcome {
        millrace::CancelOutcome::Requested => out.line(format_args!(
            "cancel requested: group {g} skips {id}, or stops it if it runs or waits to retry (within a heartbeat)"
        )),
        millrace::CancelOutcome::Removed => out.line(format_args!(
            "cancelled: {id} was waiting to retry in group {g}; its retry is removed"
        )),
        millrace::CancelOutcome::Finished(s) => out.line(format_args!(
            "nothing to cancel: {id} is already {s} in group {g}"
        )),
        _ => out.line("done"),
    }
}

async fn find_by_key(
    global: &Global,
    args: MessageFindArgs,
    out: &mut Out,
) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    millrace::envelope::validate_key(&args.key).map_err(|e| CliError::from(e).context("--key"))?;
    if args.limit == 0 {
        return Err(CliError::usage("--limit must be at least 1"));
    }
    let client = crate::connect(global).await?;
    let found = client
        .messages_by_key(&args.topic, &args.key, args.limit)
        .await?;
    if args.json {
        for s in &found {
            out.json_line(&as_json(s))?;
        }
        return Ok(());
    }
    if found.is_empty() {
        return out.line(format_args!(
            "no messages with key {:?} among the newest {} of each lane",
            args.key,
            millrace::KEY_SCAN
        ));
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|s| {
            let published = s
                .message
                .as_ref()
                .map_or_else(|| "-".to_string(), |m| rfc3339_ms(m.published_at_ms()));
            let groups: Vec<String> = s
                .groups
                .iter()
                .map(|g| format!("{}={}", g.group, g.state))
                .collect();
            vec![
                s.message_id.to_string(),
                published,
                stored(s).to_string(),
                if groups.is_empty() {
                    "-".to_string()
                } else {
                    groups.join(" ")
                },
            ]
        })
        .collect();
    out.line(table(&["MESSAGE", "PUBLISHED", "STORED", "GROUPS"], &rows))
}

/// The ids `text` may name: one for `P:L:ID` or `P:ID` (lane 0), or every
/// partition and lane of the topic for a bare stream id.
fn candidates(text: &str, partitions: u32, lanes: u8) -> Result<Vec<MessageId>, CliError> {
    let bad = |e: millrace::Error| {
        CliError::from(e).context("message id").hint(
            "use PARTITION:LANE:ID as publish, tail and dlq list print it, PARTITION:ID, or a stream id",
        )
    };
    match text.matches(':').count() {
        2 => Ok(vec![MessageId::parse(text).map_err(bad)?]),
        1 => {
            let (p, id) = text.split_once(':').unwrap_or_default();
            let p: u32 = p.parse().map_err(|_| {
                CliError::usage(format!("message id {text:?}: {p:?} is not a partition"))
            })?;
            Ok(vec![MessageId::new(p, 0, id).map_err(bad)?])
        }
        _ => {
            let id = StreamId::parse(text).map_err(bad)?.to_string();
            let mut all = Vec::new();
            for p in 0..partitions {
                for lane in 0..lanes {
                    all.push(MessageId::new(p, lane, &id).map_err(bad)?);
                }
            }
            Ok(all)
        }
    }
}

async fn find(client: &Client, topic: &str, text: &str) -> Result<MessageStatus, CliError> {
    let spec = client.topic(topic).await?;
    let ids = candidates(text, spec.partitions, spec.lanes)?;
    let bare = ids.len() > 1;
    let mut found = Vec::new();
    for id in ids {
        if let Some(s) = client.message_status(topic, &id).await? {
            // A bare id names the entry that is there, not every lane
            // whose stream has been trimmed past it.
            if !bare || s.message.is_some() {
                found.push(s);
            }
        }
    }
    if found.len() > 1 {
        let names: Vec<String> = found.iter().map(|s| s.message_id.to_string()).collect();
        return Err(CliError::usage(format!(
            "{text} names messages in several partitions or lanes: {}",
            names.join(", ")
        ))
        .hint("use one of those ids"));
    }
    found
        .pop()
        .ok_or_else(|| CliError::other(format!("message {text} not found in topic {topic}")))
}

async fn show(global: &Global, args: MessageShowArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    let client = crate::connect(global).await?;
    let status = find(&client, &args.topic, &args.id).await?;
    if args.json {
        out.json_pretty(&as_json(&status))
    } else {
        out.line(human(&status))
    }
}

/// Where the message itself is.
fn stored(s: &MessageStatus) -> &'static str {
    match (&s.message, s.due_ms) {
        (Some(_), Some(_)) => "delayed",
        (Some(_), None) => "stored",
        (None, _) => "gone",
    }
}

/// The `--json` object: the message as `tail --json` prints it (or only
/// its id once trimmed), where it is, and the groups.
pub fn as_json(s: &MessageStatus) -> Value {
    let mut v = match &s.message {
        Some(m) => serde_json::to_value(TailLine::new(m)).unwrap_or(Value::Null),
        None => json!({
            "message_id": s.message_id.to_string(),
            "partition": s.message_id.partition(),
            "lane": s.message_id.lane(),
        }),
    };
    v["stored"] = stored(s).into();
    if let Some(due) = s.due_ms {
        v["due_at"] = rfc3339_ms(due).into();
    }
    v["groups"] = s.groups.iter().map(group_json).collect();
    v
}

fn group_json(g: &GroupState) -> Value {
    let mut v = json!({"group": g.group, "state": g.state.as_str()});
    let at = |ms: Option<u64>| ms.map(rfc3339_ms);
    for (name, value) in [
        ("attempt", g.attempt.map(Value::from)),
        ("member", g.member.clone().map(Value::from)),
        ("since", at(g.since_ms).map(Value::from)),
        ("due", at(g.due_ms).map(Value::from)),
        ("error", g.error.clone().map(Value::from)),
        ("dead_letter", g.dead_letter.clone().map(Value::from)),
        ("failed_at", at(g.failed_at_ms).map(Value::from)),
        ("result", g.result.clone()),
        ("done_at", at(g.done_at_ms).map(Value::from)),
        ("progress", g.progress.clone()),
        ("progress_at", at(g.progress_at_ms).map(Value::from)),
    ] {
        if let Some(value) = value {
            v[name] = value;
        }
    }
    v
}

/// What a group's row says beyond its state.
fn detail(g: &GroupState) -> String {
    let at = |ms: Option<u64>| ms.map(rfc3339_ms).unwrap_or_default();
    match g.state {
        MessageState::InFlight => {
            let mut d = format!(
                "member {} since {}",
                g.member.as_deref().unwrap_or("?"),
                at(g.since_ms)
            );
            if let Some(p) = &g.progress {
                d.push_str(&format!(", progress {p} at {}", at(g.progress_at_ms)));
            }
            d
        }
        MessageState::Retrying => {
            let mut d = format!("due {}", at(g.due_ms));
            if let Some(e) = &g.error {
                d.push_str(&format!(", last error: {}", e.escape_debug()));
            }
            d
        }
        MessageState::DeadLettered => format!(
            "{} (dead letter {}, {})",
            g.error.as_deref().unwrap_or("").escape_debug(),
            g.dead_letter.as_deref().unwrap_or("?"),
            at(g.failed_at_ms)
        ),
        MessageState::Unread if g.due_ms.is_some() => format!("delayed until {}", at(g.due_ms)),
        MessageState::Cancelled => format!("cancelled {}", at(g.done_at_ms)),
        MessageState::Done => match &g.result {
            Some(r) => format!("{}, result {r}", at(g.done_at_ms)),
            None => "-".to_string(),
        },
        _ => "-".to_string(),
    }
}

/// The human form: the message, then a row per group.
fn human(s: &MessageStatus) -> String {
    let mut head = match &s.message {
        Some(m) => TailLine::new(m).human(),
        None => format!("{}  (trimmed: no longer stored)", s.message_id),
    };
    if let Some(due) = s.due_ms {
        head.push_str(&format!("\ndelayed until {}", rfc3339_ms(due)));
    }
    if s.groups.is_empty() {
        return format!("{head}\n\nno groups");
    }
    let rows: Vec<Vec<String>> = s
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.state.to_string(),
                g.attempt.map_or_else(|| "-".to_string(), |a| a.to_string()),
                detail(g),
            ]
        })
        .collect();
    format!(
        "{head}\n\n{}",
        table(&["GROUP", "STATE", "ATTEMPT", "DETAIL"], &rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_one_place_or_every_partition_and_lane() {
        let one = candidates("2:1:1796405040643-0", 4, 2).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].to_string(), "2:1:1796405040643-0");
        let lane0 = candidates("3:1796405040643-0", 4, 2).unwrap();
        assert_eq!(lane0[0].to_string(), "3:0:1796405040643-0");
        assert_eq!(candidates("1796405040643-0", 4, 2).unwrap().len(), 8);
        assert!(candidates("x:1796405040643-0", 4, 2).is_err());
        assert!(candidates("nonsense", 4, 2).is_err());
    }

    #[test]
    fn each_state_reads_as_a_row() {
        let mut g = GroupState::default();
        g.group = "pdf".into();
        g.state = MessageState::Retrying;
        g.attempt = Some(2);
        g.due_ms = Some(0);
        g.error = Some("upstream\ndown".into());
        assert_eq!(
            detail(&g),
            "due 1970-01-01T00:00:00.000Z, last error: upstream\\ndown"
        );
        g.state = MessageState::DeadLettered;
        g.dead_letter = Some("1:5-0".into());
        g.failed_at_ms = Some(0);
        assert_eq!(
            detail(&g),
            "upstream\\ndown (dead letter 1:5-0, 1970-01-01T00:00:00.000Z)"
        );
        g.state = MessageState::Done;
        assert_eq!(detail(&g), "-");
        g.result = Some(serde_json::json!({"cents": 1200}));
        g.done_at_ms = Some(0);
        assert_eq!(
            detail(&g),
            "1970-01-01T00:00:00.000Z, result {\"cents\":1200}"
        );
    }
}
