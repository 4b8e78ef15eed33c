//! `millrace dlq list|show|replay|purge`: thin calls to the library's
//! dead-letter API, printed as a table, a list of fields or JSON.

use millrace::{Client, Headers, MessageId, StreamId};
use millrace::{DeadLetter, ReplayTo, Selection};
use serde::Serialize;
use serde_json::Value;

use crate::cli::{DlqCommand, DlqListArgs, DlqPurgeArgs, DlqReplayArgs, DlqShowArgs, Global};
use crate::error::CliError;
use crate::output::{Out, rfc3339_ms, table};
use crate::tail_cmd::payload_fields;

/// Characters of the error shown in a `list` table row.
const ERROR_WIDTH: usize = 60;

pub async fn run(global: &Global, cmd: DlqCommand, out: &mut Out) -> Result<(), CliError> {
    match cmd {
        DlqCommand::List(args) => list(global, args, out).await,
        DlqCommand::Show(args) => show(global, args, out).await,
        DlqCommand::Replay(args) => replay(global, args, out).await,
        DlqCommand::Purge(args) => purge(global, args, out).await,
    }
}

async fn list(global: &Global, args: DlqListArgs, out: &mut Out) -> Result<(), CliError> {
    // Check the names before connecting: a typo should not need Redis.
    millrace::keys::validate_topic(&args.topic)?;
    check_group(args.group.as_deref())?;
    let client = crate::connect(global).await?;
    let dead = client
        .dead_letters(&args.topic, args.group.as_deref(), args.limit)
        .await?;
    if args.json {
        for d in &dead {
            out.json_line(&DeadLetterLine::new(d))?;
        }
        return Ok(());
    }
    if dead.is_empty() {
        return out.line("no dead letters");
    }
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|d| {
            vec![
                format!("{}:{}", d.partition, d.id),
                d.message_id.to_string(),
                d.group.clone(),
                d.attempts.to_string(),
                rfc3339_ms(d.failed_at_ms),
                truncate(&one_line(&d.error), ERROR_WIDTH),
            ]
        })
        .collect();
    out.line(table(
        &["ID", "MESSAGE", "GROUP", "ATTEMPTS", "FAILED AT", "ERROR"],
        &rows,
    ))
}

async fn show(global: &Global, args: DlqShowArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    check_id(&args.id)?;
    let client = crate::connect(global).await?;
    let found = if args.id.contains(':') {
        client.dead_letter(&args.topic, &args.id).await?
    } else {
        unique(
            &args.topic,
            &args.id,
            holding(&client, &args.topic, &args.id).await?,
        )?
    };
    let Some(d) = found else {
        return Err(CliError::other(format!(
            "dead letter {} does not exist on topic {}",
            args.id, args.topic
        ))
        .hint(format!(
            "`millrace dlq list {}` shows its dead letters",
            args.topic
        )));
    };
    let line = DeadLetterLine::new(&d);
    if args.json {
        out.json_pretty(&line)
    } else {
        out.line(line.human())
    }
}

async fn replay(global: &Global, args: DlqReplayArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    check_group(args.group.as_deref())?;
    let selection = selection(args.ids, args.all)?;
    let to = if args.to_topic {
        ReplayTo::Topic
    } else {
        ReplayTo::Group
    };
    let client = crate::connect(global).await?;
    let selection = resolve(&client, &args.topic, selection).await?;
    let n = client
        .replay_dead_letters(&args.topic, &selection, args.group.as_deref(), to)
        .await?;
    let target = match (to, &args.group) {
        (ReplayTo::Topic, _) => format!("topic {}", args.topic),
        (ReplayTo::Group, Some(g)) => format!("group {g}"),
        (ReplayTo::Group, None) => "their groups".to_string(),
    };
    out.line(format_args!("replayed {} to {target}", dead_letters(n)))
}

async fn purge(global: &Global, args: DlqPurgeArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    check_group(args.group.as_deref())?;
    let selection = selection(args.ids, args.all)?;
    if !args.yes {
        return Err(CliError::usage(format!(
            "refusing to purge dead letters of topic {} without --yes",
            args.topic
        ))
        .hint(format!(
            "purged dead letters are gone for good, and how many match is only known when it \
             runs; count them first with `millrace dlq list {}`, then add --yes to confirm",
            args.topic
        )));
    }
    let client = crate::connect(global).await?;
    let selection = resolve(&client, &args.topic, selection).await?;
    let n = client
        .purge_dead_letters(&args.topic, &selection, args.group.as_deref())
        .await?;
    out.line(format_args!("purged {}", dead_letters(n)))
}

/// `--id ...` or `--all` (clap makes sure it is exactly one of them), with
/// each id checked before connecting.
fn selection(ids: Vec<String>, all: bool) -> Result<Selection, CliError> {
    if all {
        return Ok(Selection::All);
    }
    for id in &ids {
        check_id(id)?;
    }
    Ok(Selection::Ids(ids))
}

/// The dead letters with the bare id `id` (`ms-seq`), in any partition.
///
/// Each partition's dead-letter stream makes its own ids, so two partitions
/// can hold the same one (two failures in the same millisecond); the
/// library then takes them all (replay, purge) or either one (show).
async fn holding(client: &Client, topic: &str, id: &str) -> Result<Vec<DeadLetter>, CliError> {
    let partitions = client.topic(topic).await?.partitions;
    let mut found = Vec::new();
    for p in 0..partitions {
        found.extend(client.dead_letter(topic, &format!("{p}:{id}")).await?);
    }
    Ok(found)
}

/// The one dead letter of `found` (none if empty); an error naming the
/// partitions when a bare id is in more than one.
fn unique(
    topic: &str,
    id: &str,
    mut found: Vec<DeadLetter>,
) -> Result<Option<DeadLetter>, CliError> {
    if found.len() > 1 {
        let addresses: Vec<String> = found
            .iter()
            .map(|d| format!("{}:{}", d.partition, d.id))
            .collect();
        return Err(CliError::usage(format!(
            "dead-letter id {id} is in {} partitions of {topic}: {}",
            found.len(),
            addresses.join(", ")
        ))
        .hint("give it as PARTITION:ID, as `millrace dlq list` shows it"));
    }
    Ok(found.pop())
}

/// `selection` with each bare id replaced by its `PARTITION:ID`, so an id
/// picks one dead letter, not one per partition that happens to hold it.
/// Nothing is done if a bare id is ambiguous; an unknown one is kept (it
/// matches nothing).
async fn resolve(
    client: &Client,
    topic: &str,
    selection: Selection,
) -> Result<Selection, CliError> {
    let Selection::Ids(ids) = selection else {
        return Ok(selection);
    };
    let mut resolved = Vec::with_capacity(ids.len());
    for id in ids {
        if id.contains(':') {
            resolved.push(id);
            continue;
        }
        match unique(topic, &id, holding(client, topic, &id).await?)? {
            Some(d) => resolved.push(format!("{}:{}", d.partition, d.id)),
            None => resolved.push(id),
        }
    }
    Ok(Selection::Ids(resolved))
}

fn check_group(group: Option<&str>) -> Result<(), CliError> {
    if let Some(g) = group {
        millrace::keys::validate_name("group", g)?;
    }
    Ok(())
}

/// A dead-letter id is `ms-seq` or `PARTITION:ms-seq`; a message id
/// `PARTITION:LANE:ID` names every dead letter of that message.
fn check_id(id: &str) -> Result<(), CliError> {
    if id.matches(':').count() == 2 {
        return MessageId::parse(id).map(drop).map_err(|e| {
            CliError::usage(e.to_string()).hint(
                "a message id is PARTITION:LANE:ID (e.g. 3:0:1764237599000-2), as `millrace dlq list` shows it",
            )
        });
    }
    let stream_id = match id.split_once(':') {
        Some((p, rest)) if p.parse::<u32>().is_ok() => rest,
        Some(_) => "",
        None => id,
    };
    StreamId::parse(stream_id).map(drop).map_err(|_| {
        CliError::usage(format!(
            "invalid dead-letter id {id:?}: write it as PARTITION:ID (e.g. 3:1764237600123-0) \
             or ID, or give the message id PARTITION:LANE:ID, as `millrace dlq list` shows them"
        ))
    })
}

fn dead_letters(n: usize) -> String {
    format!("{n} dead letter{}", if n == 1 { "" } else { "s" })
}

/// The first line of `s`, with ` ...` when there were more.
fn one_line(s: &str) -> String {
    let mut lines = s.trim().lines();
    let first = lines.next().unwrap_or_default().to_string();
    if lines.next().is_some() {
        first + " ..."
    } else {
        first
    }
}

/// At most `max` characters of `s`, the last one `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// One dead letter as `dlq list --json` and `dlq show --json` print it.
#[derive(Debug, Serialize)]
pub(crate) struct DeadLetterLine<'a> {
    /// The message's identity, `P:L:first id`.
    message_id: String,
    /// The id in its partition's dead-letter stream (`P:id` addresses it).
    id: &'a str,
    group: &'a str,
    partition: u32,
    lane: u8,
    origin_id: &'a str,
    key: Option<&'a str>,
    /// The payload as JSON; absent when it is not MessagePack.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    headers: &'a Headers,
    attempts: u32,
    error: &'a str,
    failed_at: String,
    /// The payload bytes when they are not MessagePack (raw publishes).
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_base64: Option<String>,
}

impl<'a> DeadLetterLine<'a> {
    pub(crate) fn new(d: &'a DeadLetter) -> Self {
        let (data, raw_base64) = payload_fields(&d.payload);
        DeadLetterLine {
            message_id: d.message_id.to_string(),
            id: &d.id,
            group: &d.group,
            partition: d.partition,
            lane: d.lane,
            origin_id: &d.origin_id,
            key: d.key.as_deref(),
            data,
            headers: &d.headers,
            attempts: d.attempts,
            error: &d.error,
            failed_at: rfc3339_ms(d.failed_at_ms),
            raw_base64,
        }
    }

    /// The human form of `show`: one field per line, the error last and in
    /// full (its further lines indented under the first).
    fn human(&self) -> String {
        let escaped = |s: &str| s.escape_debug().to_string();
        let data = match (&self.data, &self.raw_base64) {
            (_, Some(raw)) => format!("raw:{raw}"),
            (Some(data), None) => data.to_string(),
            (None, None) => String::new(),
        };
        let headers = if self.headers.is_empty() {
            "-".to_string()
        } else {
            serde_json::to_string(self.headers).unwrap_or_default()
        };
        let mut error = self.error.trim_end().lines();
        let rows = vec![
            vec!["message id".into(), self.message_id.clone()],
            vec!["group".into(), self.group.to_string()],
            vec!["partition".into(), self.partition.to_string()],
            vec!["lane".into(), self.lane.to_string()],
            vec!["origin id".into(), self.origin_id.to_string()],
            vec![
                "key".into(),
                self.key.map_or_else(|| "-".to_string(), escaped),
            ],
            vec!["headers".into(), headers],
            vec!["data".into(), data],
            vec!["attempts".into(), self.attempts.to_string()],
            vec!["failed at".into(), self.failed_at.clone()],
            vec!["error".into(), error.next().unwrap_or_default().to_string()],
        ];
        let id = format!("{}:{}", self.partition, self.id);
        let mut text = table(&["dead letter", &id], &rows);
        // The label column: the widest label and two spaces.
        let indent = " ".repeat("dead letter".len() + 2);
        for line in error {
            text.push('\n');
            text.push_str(&indent);
            text.push_str(line);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_letter(payload: &[u8], error: &str) -> DeadLetter {
        let mut headers = Headers::new();
        headers.insert("trace".into(), "abc".into());
        let mut v = DeadLetter::default();
        v.id = "1764237600123-0".into();
        v.partition = 3;
        v.lane = 0;
        v.group = "pdf-report".into();
        v.origin_id = "1764237599000-2".into();
        v.message_id = MessageId::parse("3:0:1764237599000-2").unwrap();
        v.key = Some("tenant-1".into());
        v.payload = payload.to_vec();
        v.headers = headers;
        v.attempts = 5;
        v.error = error.into();
        v.failed_at_ms = 1_764_237_600_123;
        v
    }

    #[test]
    fn json_lines_have_the_documented_fields() {
        let payload = millrace::envelope::encode(&serde_json::json!({"invoice": "inv-1"})).unwrap();
        let d = dead_letter(&payload, "bad invoice");
        assert_eq!(
            serde_json::to_value(DeadLetterLine::new(&d)).unwrap(),
            serde_json::json!({
                "message_id": "3:0:1764237599000-2",
                "id": "1764237600123-0", "group": "pdf-report", "partition": 3, "lane": 0,
                "origin_id": "1764237599000-2", "key": "tenant-1",
                "data": {"invoice": "inv-1"}, "headers": {"trace": "abc"},
                "attempts": 5, "error": "bad invoice",
                "failed_at": "2025-11-27T10:00:00.123Z"
            })
        );
        let raw = dead_letter(b"hello", "x");
        let v = serde_json::to_value(DeadLetterLine::new(&raw)).unwrap();
        assert_eq!(v.get("data"), None, "raw bytes come instead of data");
        assert_eq!(v["raw_base64"], "aGVsbG8=");
    }

    #[test]
    fn show_reads_as_fields_with_the_whole_error() {
        let d = dead_letter(b"hello", "exit status 1\nTraceback:\n  boom");
        assert_eq!(
            DeadLetterLine::new(&d).human(),
            "\
dead letter  3:1764237600123-0
message id   3:0:1764237599000-2
group        pdf-report
partition    3
lane         0
origin id    1764237599000-2
key          tenant-1
headers      {\"trace\":\"abc\"}
data         raw:aGVsbG8=
attempts     5
failed at    2025-11-27T10:00:00.123Z
error        exit status 1
             Traceback:
               boom"
        );
    }

    #[test]
    fn errors_are_cut_to_one_short_line_in_tables() {
        assert_eq!(one_line("a\nb"), "a ...");
        assert_eq!(one_line("  a  \n"), "a");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate(&"é".repeat(70), 60).chars().count(), 60);
    }

    #[test]
    fn ids_are_checked_before_connecting() {
        assert!(check_id("1764237600123-0").is_ok());
        assert!(check_id("3:1764237600123-0").is_ok());
        assert!(check_id("3:0:1764237600123-0").is_ok());
        for bad in [
            "",
            "x",
            "3:",
            "p:1-0",
            "1-0:3",
            "-1:1-0",
            "3:0:",
            "3:x:1-0",
            "3:0:1-0:1",
        ] {
            let e = check_id(bad).unwrap_err();
            assert_eq!(e.code, crate::error::EXIT_USAGE, "{bad}");
        }
    }
}
