//! `millrace group list|describe|pause|resume|reset`: thin calls to the library's group API,
//! printed as lines, tables or JSON.

use millrace::ResetPlan;
use millrace::{GroupInfo, StartAt};
use serde::Serialize;

use crate::cli::{
    Global, GroupCommand, GroupDescribeArgs, GroupListArgs, GroupPauseArgs, GroupResetArgs,
};
use crate::error::CliError;
use crate::output::{Out, note, rfc3339_ms, table};

pub async fn run(global: &Global, cmd: GroupCommand, out: &mut Out) -> Result<(), CliError> {
    match cmd {
        GroupCommand::List(args) => list(global, args, out).await,
        GroupCommand::Describe(args) => describe(global, args, out).await,
        GroupCommand::Pause(args) => pause(global, args, true, out).await,
        GroupCommand::Resume(args) => pause(global, args, false, out).await,
        GroupCommand::Reset(args) => reset(global, args, out).await,
    }
}

async fn list(global: &Global, args: GroupListArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    let client = crate::connect(global).await?;
    let names = client.list_groups(&args.topic).await?;
    if args.json {
        return out.json_pretty(&names);
    }
    if names.is_empty() {
        return out.line("no groups");
    }
    out.line(names.join("\n"))
}

async fn describe(global: &Global, args: GroupDescribeArgs, out: &mut Out) -> Result<(), CliError> {
    // Check both names before connecting: a typo should not need Redis.
    millrace::keys::validate_topic(&args.topic)?;
    millrace::keys::validate_name("group", &args.group)?;
    let client = crate::connect(global).await?;
    let info = client.describe_group(&args.topic, &args.group).await?;
    if args.json {
        out.json_pretty(&DescribeJson::new(&info))
    } else {
        out.line(describe_text(&info))
    }
}

/// `group describe --json`: the library's `GroupInfo`, with the members'
/// times in RFC 3339 (UTC, milliseconds) like every time the CLI prints.
#[derive(Debug, Serialize)]
struct DescribeJson<'a> {
    topic: &'a str,
    group: &'a str,
    paused: bool,
    members: Vec<MemberJson<'a>>,
    partitions: &'a [millrace::PartitionInfo],
    lag: u64,
    pending: u64,
}

/// One member in `group describe --json`; a time Redis has no record of
/// is null.
#[derive(Debug, Serialize)]
struct MemberJson<'a> {
    id: &'a str,
    is_static: bool,
    joined_at: Option<String>,
    last_heartbeat_at: Option<String>,
    session_deadline_at: Option<String>,
}

impl<'a> DescribeJson<'a> {
    fn new(info: &'a GroupInfo) -> Self {
        let at = |ms: u64| (ms > 0).then(|| rfc3339_ms(ms));
        DescribeJson {
            topic: &info.topic,
            group: &info.group,
            paused: info.paused,
            members: info
                .members
                .iter()
                .map(|m| MemberJson {
                    id: &m.id,
                    is_static: m.is_static,
                    joined_at: at(m.joined_ms),
                    last_heartbeat_at: at(m.last_heartbeat_ms),
                    session_deadline_at: at(m.session_deadline_ms),
                })
                .collect(),
            partitions: &info.partitions,
            lag: info.lag,
            pending: info.pending,
        }
    }
}

/// `pause` (or, with `paused` false, `resume`). Both are idempotent; an
/// unknown group fails as in `describe`.
async fn pause(
    global: &Global,
    args: GroupPauseArgs,
    paused: bool,
    out: &mut Out,
) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    millrace::keys::validate_name("group", &args.group)?;
    let client = crate::connect(global).await?;
    if paused {
        client.pause_group(&args.topic, &args.group).await?;
        out.line(format_args!(
            "paused group {} on {} (members stop taking new messages within a heartbeat)",
            args.group, args.topic
        ))
    } else {
        client.resume_group(&args.topic, &args.group).await?;
        out.line(format_args!(
            "resumed group {} on {}",
            args.group, args.topic
        ))
    }
}

/// `reset`: a dry run (the plan) unless `--execute`; refused while the group
/// has live members unless `--force` (exit 2, see `error.rs`).
async fn reset(global: &Global, args: GroupResetArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    millrace::keys::validate_name("group", &args.group)?;
    let to: StartAt = args.to.parse().map_err(|e| match e {
        millrace::Error::InvalidArgument { reason, .. } => {
            CliError::usage(format!("invalid --to: {reason}"))
        }
        other => CliError::from(other),
    })?;
    let client = crate::connect(global).await?;
    let plan = if args.execute {
        client
            .reset_group(&args.topic, &args.group, &to, args.force)
            .await?
    } else {
        client
            .plan_group_reset(&args.topic, &args.group, &to)
            .await?
    };
    if !plan.members.is_empty() {
        let n = plan.members.len();
        note(&if plan.applied {
            format!("warning: {n} live member(s) carry on from the new position")
        } else {
            format!("warning: the group has {n} live member(s): --execute refuses unless --force")
        });
    }
    if args.json {
        out.json_pretty(&plan)
    } else {
        out.line(reset_text(&plan))
    }
}

/// The human form of `reset`: per partition lane the move and the lag it
/// leaves, the totals, and whether anything changed.
fn reset_text(plan: &ResetPlan) -> String {
    let rows: Vec<Vec<String>> = plan
        .partitions
        .iter()
        .map(|l| {
            vec![
                l.partition.to_string(),
                l.lane.to_string(),
                l.from.clone().unwrap_or_else(|| "-".to_string()),
                l.to.clone(),
                l.lag_after.to_string(),
            ]
        })
        .collect();
    let pending = match plan.pending {
        0 => String::new(),
        n => format!(" ({n} pending stay pending)"),
    };
    let last = if plan.applied {
        format!(
            "reset group {} on {} to {}",
            plan.group, plan.topic, plan.to
        )
    } else {
        "dry run: nothing changed; add --execute to apply".to_string()
    };
    format!(
        "{}\n\nlag after reset: {}{pending}\n{last}",
        table(&["PARTITION", "LANE", "FROM", "TO", "LAG AFTER"], &rows),
        plan.lag_after,
    )
}

/// The human form of `describe`: a line of totals, the members, then owner,
/// lag and pending per partition.
fn describe_text(info: &GroupInfo) -> String {
    let none = || "-".to_string();
    let count = info.members.len();
    let header = format!(
        "group {} on topic {}: {}{count} member{}, lag {}, pending {}",
        info.group,
        info.topic,
        if info.paused { "paused, " } else { "" },
        if count == 1 { "" } else { "s" },
        info.lag,
        info.pending,
    );
    let members = if info.members.is_empty() {
        "no members".to_string()
    } else {
        let rows: Vec<Vec<String>> = info
            .members
            .iter()
            .map(|m| {
                vec![
                    m.id.clone(),
                    if m.is_static { "yes" } else { "no" }.to_string(),
                    // 0: the member's info is missing (it is being removed).
                    if m.last_heartbeat_ms == 0 {
                        none()
                    } else {
                        rfc3339_ms(m.last_heartbeat_ms)
                    },
                ]
            })
            .collect();
        table(&["ID", "STATIC", "LAST HEARTBEAT"], &rows)
    };
    let partitions: Vec<Vec<String>> = info
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.owner.clone().unwrap_or_else(none),
                p.lag.to_string(),
                p.pending.to_string(),
            ]
        })
        .collect();
    format!(
        "{header}\n\n{members}\n\n{}",
        table(&["PARTITION", "OWNER", "LAG", "PENDING"], &partitions)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace::{MemberInfo, PartitionInfo};

    fn partition(partition: u32, owner: Option<&str>, lag: u64, pending: u64) -> PartitionInfo {
        let mut v = PartitionInfo::default();
        v.partition = partition;
        v.owner = owner.map(str::to_string);
        v.assigned = owner.map(str::to_string);
        v.epoch = 1;
        v.lag = lag;
        v.pending = pending;
        v
    }

    #[test]
    fn describe_reads_as_tables() {
        let info = {
            let mut v = GroupInfo::default();
            v.paused = false;
            v.topic = "erp.v1.invoice.created".into();
            v.group = "pdf-report".into();
            v.members = vec![
                {
                    let mut v = MemberInfo::default();
                    v.id = "worker-a".into();
                    v.is_static = true;
                    v.joined_ms = 1_764_237_000_000;
                    v.last_heartbeat_ms = 1_764_237_600_123;
                    v.session_deadline_ms = 1_764_237_630_123;
                    v
                },
                {
                    let mut v = MemberInfo::default();
                    v.id = "0f3c9e1a".into();
                    v.is_static = false;
                    v.joined_ms = 1_764_237_500_000;
                    v.last_heartbeat_ms = 1_764_237_601_000;
                    v.session_deadline_ms = 1_764_237_631_000;
                    v
                },
            ];
            v.partitions = vec![
                partition(0, Some("worker-a"), 12, 3),
                partition(1, None, 0, 0),
                partition(2, Some("0f3c9e1a"), 1500, 16),
            ];
            v.lag = 1512;
            v.pending = 19;
            v
        };
        assert_eq!(
            describe_text(&info),
            "\
group pdf-report on topic erp.v1.invoice.created: 2 members, lag 1512, pending 19

ID        STATIC  LAST HEARTBEAT
worker-a  yes     2025-11-27T10:00:00.123Z
0f3c9e1a  no      2025-11-27T10:00:01.000Z

PARTITION  OWNER     LAG   PENDING
0          worker-a  12    3
1          -         0     0
2          0f3c9e1a  1500  16"
        );
    }

    #[test]
    fn describe_json_shows_member_times_in_rfc3339() {
        let mut member = MemberInfo::default();
        member.id = "worker-a".into();
        member.is_static = true;
        member.joined_ms = 1_764_237_000_000;
        member.last_heartbeat_ms = 1_764_237_600_123;
        let mut info = GroupInfo::default();
        info.topic = "t".into();
        info.group = "g".into();
        info.members = vec![member];
        info.partitions = vec![partition(0, Some("worker-a"), 2, 1)];
        info.lag = 2;
        info.pending = 1;
        assert_eq!(
            serde_json::to_value(DescribeJson::new(&info)).unwrap(),
            serde_json::json!({
                "topic": "t", "group": "g", "paused": false,
                "members": [{
                    "id": "worker-a", "is_static": true,
                    "joined_at": "2025-11-27T09:50:00.000Z",
                    "last_heartbeat_at": "2025-11-27T10:00:00.123Z",
                    "session_deadline_at": null
                }],
                "partitions": [{
                    "partition": 0, "owner": "worker-a", "assigned": "worker-a",
                    "epoch": 1, "lag": 2, "pending": 1
                }],
                "lag": 2, "pending": 1
            })
        );
    }

    fn reset_plan(applied: bool, pending: u64) -> ResetPlan {
        use millrace::LaneReset;
        let lane = |partition: u32, lane: u8, from: Option<&str>, lag_after: u64| {
            let mut v = LaneReset::default();
            v.partition = partition;
            v.lane = lane;
            v.from = from.map(str::to_string);
            v.to = "1764237599999-18446744073709551615".into();
            v.lag_before = Some(0);
            v.lag_after = lag_after;
            v.pending = pending;
            v
        };
        let mut v = ResetPlan::default();
        v.topic = "t".into();
        v.group = "g".into();
        v.to = "2025-11-27T10:00:00Z".into();
        v.members = vec![];
        v.partitions = vec![
            lane(0, 0, Some("1764237600500-0"), 12),
            lane(0, 1, Some("0-0"), 0),
            lane(1, 0, None, 3),
        ];
        v.lag_after = 15;
        v.pending = 3 * pending;
        v.applied = applied;
        v
    }

    #[test]
    fn reset_reads_as_a_table_and_says_whether_it_changed_anything() {
        assert_eq!(
            reset_text(&reset_plan(false, 0)),
            "\
PARTITION  LANE  FROM             TO                                  LAG AFTER
0          0     1764237600500-0  1764237599999-18446744073709551615  12
0          1     0-0              1764237599999-18446744073709551615  0
1          0     -                1764237599999-18446744073709551615  3

lag after reset: 15
dry run: nothing changed; add --execute to apply"
        );
        let applied = reset_text(&reset_plan(true, 2));
        assert!(
            applied.ends_with(
                "\n\nlag after reset: 15 (6 pending stay pending)\n\
                 reset group g on t to 2025-11-27T10:00:00Z"
            ),
            "{applied}"
        );
    }

    #[test]
    fn a_group_without_members_says_so() {
        let info = {
            let mut v = GroupInfo::default();
            v.paused = true;
            v.topic = "t".into();
            v.group = "g".into();
            v.members = vec![];
            v.partitions = vec![partition(0, None, 1, 0)];
            v.lag = 1;
            v.pending = 0;
            v
        };
        assert_eq!(
            describe_text(&info),
            "\
group g on topic t: paused, 0 members, lag 1, pending 0

no members

PARTITION  OWNER  LAG  PENDING
0          -      1    0"
        );
    }
}
