//! `millrace topic create|list|describe|placement|delete`: thin calls to
//! the library's topic API, printed as a sentence, a table or JSON.

use std::time::Duration;

use millrace::duration::{format_duration, parse_duration};
use millrace::{Created, Error, Placement, TopicInfo, TopicPlacement, TopicSpec};
use serde::Serialize;

use crate::cli::{
    Global, TopicCommand, TopicCreateArgs, TopicDeleteArgs, TopicDescribeArgs, TopicListArgs,
    TopicPlacementArgs,
};
use crate::error::CliError;
use crate::output::{Out, table};

pub async fn run(global: &Global, cmd: TopicCommand, out: &mut Out) -> Result<(), CliError> {
    match cmd {
        TopicCommand::Create(args) => create(global, args, out).await,
        TopicCommand::List(args) => list(global, args, out).await,
        TopicCommand::Describe(args) => describe(global, args, out).await,
        TopicCommand::Placement(args) => placement(global, args, out).await,
        TopicCommand::Delete(args) => delete(global, args, out).await,
    }
}

async fn create(global: &Global, args: TopicCreateArgs, out: &mut Out) -> Result<(), CliError> {
    // Check everything before connecting: a typo should not need Redis.
    let retention =
        parse_duration(&args.retention).map_err(|e| CliError::from(e).context("--retention"))?;
    let mut spec = TopicSpec::new(&args.name, args.partitions)?
        .lanes(args.lanes)
        .retention(retention);
    if let Some(n) = args.max_len {
        spec = spec.max_len(n);
    }
    spec = spec.schema(crate::schema_cmd::policy_arg(&args.schema)?);
    spec = spec.placement(Placement::parse(&args.placement).ok_or_else(|| {
        CliError::usage(format!(
            "--placement {}: use balanced or hash",
            args.placement
        ))
    })?);
    spec.validate()?;
    let client = crate::connect(global).await?;
    match client.create_topic(&spec).await? {
        Created::New => out.line(format_args!("created topic {}", spec.name)),
        Created::Existing => out.line(format_args!(
            "topic {} exists with the same settings",
            spec.name
        )),
    }
}

/// One topic in `topic list --json`: its settings.
#[derive(Debug, Serialize)]
struct TopicRow {
    name: String,
    partitions: u32,
    lanes: u8,
    retention_ms: u64,
    max_len: Option<u64>,
}

impl From<TopicSpec> for TopicRow {
    fn from(s: TopicSpec) -> Self {
        TopicRow {
            name: s.name,
            partitions: s.partitions,
            lanes: s.lanes,
            retention_ms: s.retention.as_millis() as u64,
            max_len: s.max_len,
        }
    }
}

async fn list(global: &Global, args: TopicListArgs, out: &mut Out) -> Result<(), CliError> {
    let client = crate::connect(global).await?;
    let mut rows = Vec::new();
    for name in client.list_topics().await? {
        match client.topic(&name).await {
            Ok(spec) => rows.push(TopicRow::from(spec)),
            // Deleted between the two reads.
            Err(Error::TopicNotFound(_)) => {}
            Err(e) => return Err(CliError::from(e).context(format!("topic {name}"))),
        }
    }
    if args.json {
        return out.json_pretty(&rows);
    }
    if rows.is_empty() {
        return out.line("no topics");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.partitions.to_string(),
                r.lanes.to_string(),
                format_duration(Duration::from_millis(r.retention_ms)),
                r.max_len.map_or_else(|| "-".to_string(), |n| n.to_string()),
            ]
        })
        .collect();
    out.line(table(
        &["NAME", "PARTITIONS", "LANES", "RETENTION", "MAX_LEN"],
        &cells,
    ))
}

async fn describe(global: &Global, args: TopicDescribeArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.name)?;
    let client = crate::connect(global).await?;
    let info = client.describe_topic(&args.name).await?;
    let schema = Subject {
        mode: client.schema_mode(&args.name).await?.to_string(),
        version: client.schema(&args.name, None).await?.map(|v| v.version),
    };
    if args.json {
        let mut v = serde_json::to_value(&info)
            .map_err(|e| CliError::other(format!("cannot print the topic: {e}")))?;
        v["schema_mode"] = schema.mode.into();
        v["schema_version"] = schema.version.into();
        out.json_pretty(&v)
    } else {
        out.line(describe_text(&info, &schema))
    }
}

/// The topic's schema subject, as `describe` shows it.
struct Subject {
    mode: String,
    /// The latest version, if any.
    version: Option<u32>,
}

/// The human form of `describe`: settings, then lengths per partition.
fn describe_text(info: &TopicInfo, schema: &Subject) -> String {
    let none = || "-".to_string();
    let groups = if info.groups.is_empty() {
        none()
    } else {
        info.groups.join(", ")
    };
    let settings = table(
        &["topic", &info.name],
        &[
            vec!["partitions".into(), info.partitions.to_string()],
            vec!["lanes".into(), info.lanes.to_string()],
            vec![
                "retention".into(),
                format_duration(Duration::from_millis(info.retention_ms)),
            ],
            vec![
                "max_len".into(),
                info.max_len.map_or_else(none, |n| n.to_string()),
            ],
            vec!["length".into(), info.length.to_string()],
            vec!["delayed".into(), info.delayed.to_string()],
            vec!["dead letters".into(), info.dlq_length.to_string()],
            vec!["groups".into(), groups],
            vec![
                "schema".into(),
                match schema.version {
                    Some(v) => format!("version {v} ({}, {})", schema.mode, info.schema),
                    None => format!("- ({}, {})", schema.mode, info.schema),
                },
            ],
        ],
    );
    let partitions: Vec<Vec<String>> = info
        .partition_lengths
        .iter()
        .enumerate()
        .map(|(p, n)| vec![p.to_string(), n.to_string()])
        .collect();
    format!(
        "{settings}\n\n{}",
        table(&["PARTITION", "LENGTH"], &partitions)
    )
}

async fn placement(
    global: &Global,
    args: TopicPlacementArgs,
    out: &mut Out,
) -> Result<(), CliError> {
    millrace::keys::validate_name("topic", &args.name)?;
    let client = crate::connect(global).await?;
    let report = client.topic_placement(&args.name).await?;
    if args.json {
        out.json_pretty(&report)
    } else {
        out.line(placement_text(&report))
    }
}

fn percent(f: f64) -> String {
    format!("{:.0}%", f * 100.0)
}

/// The human form of `placement`: partitions, primaries, then the verdict
/// and the moves that would even the topic.
fn placement_text(r: &TopicPlacement) -> String {
    let dash = || "-".to_string();
    let partitions: Vec<Vec<String>> = r
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.tag.clone(),
                p.slot.map_or_else(dash, |s| s.to_string()),
                p.primary.clone(),
                if p.replicas.is_empty() {
                    dash()
                } else {
                    p.replicas.join(",")
                },
                p.messages.to_string(),
                p.bytes.map_or_else(dash, |b| b.to_string()),
            ]
        })
        .collect();
    let primaries: Vec<Vec<String>> = r
        .primaries
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                n.slots.to_string(),
                n.partitions.to_string(),
                percent(n.share),
                n.all_partitions.to_string(),
                percent(n.all_share),
            ]
        })
        .collect();
    let verdict = if !r.cluster {
        format!(
            "topic {} ({} placement) on a single server: nothing to balance",
            r.topic, r.placement
        )
    } else if r.even {
        format!(
            "topic {} ({} placement) is even: the busiest primary holds {} of {} partitions (at most {})",
            r.topic,
            r.placement,
            r.busiest,
            r.partitions.len(),
            r.ideal_max
        )
    } else {
        format!(
            "topic {} ({} placement) is uneven: the busiest primary holds {} of {} partitions, {} more than {}",
            r.topic,
            r.placement,
            r.busiest,
            r.partitions.len(),
            r.busiest - r.ideal_max,
            r.ideal_max
        )
    };
    let mut text = format!(
        "{}\n\n{}\n\n{verdict}",
        table(
            &[
                "PARTITION",
                "TAG",
                "SLOT",
                "PRIMARY",
                "REPLICAS",
                "MESSAGES",
                "BYTES"
            ],
            &partitions
        ),
        table(
            &[
                "PRIMARY",
                "SLOTS",
                "PARTITIONS",
                "SHARE",
                "ALL_TOPICS",
                "ALL_SHARE"
            ],
            &primaries
        ),
    );
    if !r.moves.is_empty() {
        text.push_str("\nmoves that would even it (not done; each slot moves with its keys):");
        for m in &r.moves {
            let parts: Vec<String> = m.partitions.iter().map(u32::to_string).collect();
            text.push_str(&format!(
                "\n  slot {} (partition {}): {} -> {} ({})",
                m.slot,
                parts.join(","),
                m.from,
                m.to,
                m.to_id
            ));
        }
    }
    text
}

async fn delete(global: &Global, args: TopicDeleteArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.name)?;
    if !args.yes {
        return Err(CliError::usage(format!(
            "refusing to delete topic {} without --yes",
            args.name
        ))
        .hint(
            "deleting a topic removes every message, delayed message, dead letter and group \
             position in it; add --yes to confirm",
        ));
    }
    let client = crate::connect(global).await?;
    if client.delete_topic(&args.name).await? {
        out.line(format_args!("deleted topic {}", args.name))
    } else {
        Err(CliError::from(Error::TopicNotFound(args.name)).hint("nothing was deleted"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_reads_as_a_table() {
        let info = {
            let mut v = TopicInfo::default();
            v.name = "erp.v1.invoice.created".into();
            v.partitions = 2;
            v.lanes = 1;
            v.retention_ms = 604_800_000;
            v.max_len = None;
            v.length = 5;
            v.partition_lengths = vec![3, 2];
            v.delayed = 0;
            v.groups = vec!["billing".into(), "pdf".into()];
            v.dlq_length = 1;
            v.schema = millrace::SchemaPolicy::Required;
            v
        };
        let schema = Subject {
            mode: "BACKWARD".into(),
            version: Some(3),
        };
        assert_eq!(
            describe_text(&info, &schema),
            "\
topic         erp.v1.invoice.created
partitions    2
lanes         1
retention     7d
max_len       -
length        5
delayed       0
dead letters  1
groups        billing, pdf
schema        version 3 (BACKWARD, required)

PARTITION  LENGTH
0          3
1          2"
        );
    }
}
