//! The command line, as clap sees it: names, flags and help texts.
//!
//! Only parsing lives here. Values that need the library to check them
//! (durations, times, JSON, topic names) stay strings until the command that
//! uses them, so a bad one is reported as one `error:` line with exit code 2
//! rather than as clap's multi-line usage error.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

/// Where Redis is when neither `--redis`, `MILLRACE_REDIS_URL` nor
/// `REDIS_URL` says.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// millrace: a job and event queue on Redis Streams.
#[derive(Debug, Parser)]
#[command(name = "millrace", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Redis URL, redis://[user:password@]host[:port][/db] or rediss:// (TLS)
    /// [default: $REDIS_URL, else redis://127.0.0.1:6379]
    // Env values are hidden in --help: the URL may hold a password, and help
    // should not change with the environment.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "MILLRACE_REDIS_URL",
        hide_env_values = true
    )]
    pub redis: Option<String>,

    /// Key prefix: the namespace of every Redis key millrace writes
    #[arg(
        long,
        global = true,
        value_name = "P",
        env = "MILLRACE_PREFIX",
        hide_env_values = true,
        default_value = millrace::DEFAULT_PREFIX
    )]
    pub prefix: String,

    /// Whether `--prefix` or `MILLRACE_PREFIX` gave the prefix (rather than
    /// the default); set by `main` from clap's value source.
    #[arg(skip)]
    pub prefix_set: bool,

    /// CA certificate (PEM) to trust for rediss:// instead of the public roots
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "MILLRACE_TLS_CA",
        hide_env_values = true
    )]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS; goes with --tls-key
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "MILLRACE_TLS_CERT",
        hide_env_values = true
    )]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of the client certificate
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "MILLRACE_TLS_KEY",
        hide_env_values = true
    )]
    pub tls_key: Option<PathBuf>,
}

/// TLS files for `rediss://`: a CA to trust, a client certificate and key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Each file of `self`, else of `fallback` (flags win over a file's `[tls]`).
    pub fn or(self, fallback: TlsFiles) -> TlsFiles {
        TlsFiles {
            ca: self.ca.or(fallback.ca),
            cert: self.cert.or(fallback.cert),
            key: self.key.or(fallback.key),
        }
    }
}

impl Global {
    /// The TLS files given by flags or environment (an empty value is unset).
    pub fn tls(&self) -> TlsFiles {
        let given = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        TlsFiles {
            ca: given(&self.tls_ca),
            cert: given(&self.tls_cert),
            key: given(&self.tls_key),
        }
    }

    /// The Redis URL to use: the flag or `MILLRACE_REDIS_URL`, then
    /// `REDIS_URL`, then the local default.
    pub fn redis_url(&self) -> String {
        self.redis
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_REDIS_URL.to_string())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe and delete topics
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Publish a message to a topic (or many, one JSON object per line, with --jsonl)
    Publish(PublishArgs),
    /// Print a topic's messages, without a consumer group
    Tail(TailArgs),
    /// List consumer groups, show their members, lag and pending, pause, resume and reset them
    #[command(subcommand)]
    Group(GroupCommand),
    /// List, show, replay and purge dead letters: messages a group gave up on
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Register, check, list and show a topic's JSON Schemas; set its compatibility mode
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Publish a request and wait for a group's reply: what its handler returned
    Request(RequestArgs),
    /// Serve the HTTP API (/api/v1) and the dashboard page
    Serve(ServeArgs),
    /// Where a message stands in every group of its topic
    #[command(subcommand)]
    Message(MessageCommand),
    /// Add, list and remove cron schedules that publish messages
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Publish the schedules' messages at their fire times, until SIGINT or SIGTERM
    Scheduler,
    /// Run the consumers of a TOML file (handlers: programs or HTTP endpoints) until SIGINT or SIGTERM
    Worker(WorkerArgs),
    /// Measure millrace against raw Redis (and BullMQ, when Node is installed) on a private redis-server
    Bench(BenchArgs),
    /// One worker process of the benchmark's `scale.processes` scenarios
    #[command(hide = true)]
    BenchWorker(BenchWorkerArgs),
    /// Tell an ERP's story: three groups, dead letters and a replay, a delayed and a cron job
    ///
    /// Starts a private redis-server from PATH on a free loopback port and
    /// stops it at the end, unless --redis, MILLRACE_REDIS_URL or REDIS_URL
    /// names a Redis: then it works under the prefix `demo` (or --prefix) and
    /// deletes its topics at the end.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// At the end, keep the Redis and its data and serve the dashboard
    /// until Ctrl-C
    #[arg(long)]
    pub serve: bool,
    /// Where the dashboard listens with --serve (loopback only)
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    pub listen: String,
}

/// `millrace bench-worker TOPIC GROUP` (hidden): one worker process of the
/// `scale.processes.*` benchmark scenarios.
#[derive(Debug, Args)]
pub struct BenchWorkerArgs {
    /// Topic to consume
    pub topic: String,
    /// Group to join
    pub group: String,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print one JSON object with every figure and ratio
    #[arg(long)]
    pub json: bool,
    /// A smoke run: small counts, one repetition (seconds, not minutes)
    #[arg(long)]
    pub quick: bool,
    /// Messages per throughput run (default 100000; 5000 with --quick)
    #[arg(long, value_name = "N")]
    pub n: Option<usize>,
    /// Repetitions per scenario; the median is reported (default 3)
    #[arg(long, value_name = "R")]
    pub reps: Option<usize>,
    /// Do not run the BullMQ peer
    #[arg(long)]
    pub no_bullmq: bool,
    /// Run only the scenarios whose names start with these prefixes,
    /// comma-separated (e.g. `produce,consume.ordered`); Redis's limits and
    /// the raw ceilings always run
    #[arg(long, value_name = "PREFIXES", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Also write the run as `DIR/bench.json` and SVG charts (throughput
    /// against the limits and BullMQ, shares of the limits, CPU per
    /// message, the latency distribution)
    #[arg(long, value_name = "DIR")]
    pub report: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The worker's TOML file: consumers (topic, group, mode, concurrency,
    /// retry, rate limit, handler), metrics address, instance id
    #[arg(long, value_name = "FILE")]
    pub config: std::path::PathBuf,
    /// Log lines as human text or JSON objects (level from RUST_LOG)
    #[arg(long, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,
}

#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Show a message and its state in every group: unread, in_flight, retrying, dead_lettered, done, gone or cancelled
    Show(MessageShowArgs),
    /// A key's newest messages, each with its state in every group
    Find(MessageFindArgs),
    /// Cancel a message for a group: skip it, stop its running handler, or drop its retry
    Cancel(MessageCancelArgs),
}

#[derive(Debug, Args)]
pub struct MessageCancelArgs {
    /// Topic name
    pub topic: String,
    /// Message id, as for message show
    pub id: String,
    /// The group to cancel it for
    #[arg(long, value_name = "G")]
    pub group: String,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MessageFindArgs {
    /// Topic name
    pub topic: String,
    /// The partition key
    #[arg(long, value_name = "K")]
    pub key: String,
    /// Most messages shown, newest first
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// Print one JSON object per message
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MessageShowArgs {
    /// Topic name
    pub topic: String,
    /// Message id: PARTITION:LANE:ID as publish, tail and dlq list print it;
    /// PARTITION:ID (lane 0); or a bare stream id (looked up in every
    /// partition and lane)
    pub id: String,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic; succeeds if it exists with the same settings
    Create(TopicCreateArgs),
    /// List topics and their settings
    List(TopicListArgs),
    /// Show a topic's settings, lengths, groups and dead letters
    Describe(TopicDescribeArgs),
    /// Show where a topic's partitions live on a cluster, each primary's
    /// share, and the slot moves that would even the topic again
    Placement(TopicPlacementArgs),
    /// Delete a topic and everything in it
    Delete(TopicDeleteArgs),
}

#[derive(Debug, Args)]
pub struct TopicCreateArgs {
    /// Topic name: lowercase letters, digits, '.', '-' and '_' (e.g. erp.v1.invoice.created)
    pub name: String,
    /// Number of partitions (1 to 1024): the unit of ordering and parallelism
    #[arg(long, value_name = "N")]
    pub partitions: u32,
    /// Number of priority lanes (1 to 16); lane 0 is the most urgent
    #[arg(long, value_name = "L", default_value_t = 1)]
    pub lanes: u8,
    /// How long messages are kept: 250ms, 30s, 5m, 2h, 7d
    #[arg(long, value_name = "DUR", default_value = "7d")]
    pub retention: String,
    /// Approximate cap on the length of each partition lane
    #[arg(long, value_name = "N")]
    pub max_len: Option<u64>,
    /// required: every publish must match the topic's latest schema version
    /// (or the one it pins), or it is refused; optional: publishes are not
    /// checked unless they pin a version
    #[arg(long, value_name = "POLICY", default_value = "optional")]
    pub schema: String,
    /// On a Redis Cluster: balanced spreads the partitions evenly over the
    /// primaries; hash places partition p by the CRC16 of `T:p`, as topics
    /// created before balanced placement are. Ignored on a single server
    /// and for a topic that exists
    #[arg(long, value_name = "SCHEME", default_value = "balanced")]
    pub placement: String,
}

#[derive(Debug, Args)]
pub struct TopicListArgs {
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TopicDescribeArgs {
    /// Topic name
    pub name: String,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TopicPlacementArgs {
    /// Topic name
    pub name: String,
    /// Print one JSON object instead of tables
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TopicDeleteArgs {
    /// Topic name
    pub name: String,
    /// Confirm: every message, delayed message, dead letter and group
    /// position of the topic is deleted
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Topic to publish to
    pub topic: String,
    /// The payload as JSON text, or - to read it from stdin
    #[arg(
        value_name = "DATA",
        required_unless_present = "jsonl",
        conflicts_with = "jsonl"
    )]
    pub data: Option<String>,
    /// Partition key: messages with one key stay in one partition, in order
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// Make the message visible after this delay: 250ms, 30s, 5m, 2h, 7d
    #[arg(long, value_name = "DUR", conflicts_with = "at")]
    pub delay: Option<String>,
    /// Make the message visible at this time (RFC 3339, e.g. 2026-11-27T10:00:00Z)
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Priority lane (0 is the most urgent; must be below the topic's lanes)
    #[arg(long, value_name = "N")]
    pub priority: Option<u8>,
    /// Idempotency id: publishing the same id again within an hour publishes
    /// nothing and prints the first message's id. Checked within the
    /// partition the message goes to: the same id with another --key can be
    /// published again
    #[arg(long, value_name = "ID")]
    pub dedup_id: Option<String>,
    /// A header, as name=value (repeatable)
    #[arg(long = "header", value_name = "K=V")]
    pub headers: Vec<String>,
    /// Give up on this message after N attempts, or the group's own
    /// maximum if that is fewer (the header millrace-max-attempts)
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Check the payload against this version of the topic's schema rather
    /// than the latest (also with --jsonl, for every line)
    #[arg(long, value_name = "N")]
    pub schema_version: Option<u32>,
    /// When the publish counts as done: primary (the default), or
    /// replicas:N[:TIMEOUT] to wait until N replicas have it (WAIT; default
    /// timeout 1s). Fewer in time is an error whose outcome is unknown:
    /// publish again with --dedup-id
    #[arg(long, value_name = "SPEC", default_value = "primary")]
    pub acks: String,
    /// Read many messages from stdin, one JSON object per line:
    /// {"data": ..., "key"?, "headers"?, "delay"?, "priority"?, "dedup_id"?,
    /// "max_attempts"?}. Every line is checked before anything is published
    #[arg(
        long,
        conflicts_with_all = ["key", "delay", "at", "priority", "dedup_id", "headers", "max_attempts"]
    )]
    pub jsonl: bool,
    /// Print the receipt (or the count, with --jsonl) as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; anything but loopback needs --token-file
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Refuse every change (publish, pause, resume): look, do not touch
    #[arg(long)]
    pub read_only: bool,
    /// A file whose first line is the token (16+ characters) that
    /// changes need, as Authorization: Bearer <token> (every request,
    /// beyond loopback)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// How often the server samples rates and lag for the charts (it
    /// keeps the last hour)
    #[arg(long, value_name = "DUR", default_value = "10s")]
    pub sample_every: String,
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Topic to send the request to
    pub topic: String,
    /// The payload as JSON text, or - to read it from stdin
    #[arg(value_name = "DATA")]
    pub data: String,
    /// The group whose handler answers
    #[arg(long, value_name = "G")]
    pub group: String,
    /// How long to wait for the reply (exit 4 when none came)
    #[arg(long, value_name = "DUR", default_value = "5s")]
    pub timeout: String,
    /// Partition key
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// A header, as name=value (repeatable)
    #[arg(long = "header", value_name = "K=V")]
    pub headers: Vec<String>,
    /// Priority lane (0 is the most urgent)
    #[arg(long, value_name = "N")]
    pub priority: Option<u8>,
    /// Print {"topic", "group", "message_id", "result"} as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Topic to read
    pub topic: String,
    /// Where to start: earliest, latest, an RFC 3339 time or a stream id
    #[arg(long, value_name = "FROM", default_value = "earliest")]
    pub from: String,
    /// Stop after this many messages
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// At the end, wait for new messages instead of stopping
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print one JSON object per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List a topic's consumer groups
    List(GroupListArgs),
    /// Show a group's members, and per partition its owner, lag and pending
    Describe(GroupDescribeArgs),
    /// Pause a group: its members stop taking new messages (in-flight work finishes)
    Pause(GroupPauseArgs),
    /// Resume a paused group
    Resume(GroupPauseArgs),
    /// Move a group to the start, the end, a time or an id (a dry run unless --execute)
    Reset(GroupResetArgs),
}

#[derive(Debug, Args)]
pub struct GroupListArgs {
    /// Topic name
    pub topic: String,
    /// Print a JSON array of group names
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GroupDescribeArgs {
    /// Topic name
    pub topic: String,
    /// Group name
    pub group: String,
    /// Print one JSON object instead of tables
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GroupPauseArgs {
    /// Topic name
    pub topic: String,
    /// Group name
    pub group: String,
}

#[derive(Debug, Args)]
pub struct GroupResetArgs {
    /// Topic name
    pub topic: String,
    /// Group name
    pub group: String,
    /// Where the group's next reads start: earliest (replay everything
    /// retained), latest (skip everything), an RFC 3339 time or a stream id
    #[arg(long, value_name = "POSITION")]
    pub to: String,
    /// Apply the reset; without it, only print what would change
    #[arg(long)]
    pub execute: bool,
    /// Reset even while the group has live members (they carry on from the
    /// new position)
    #[arg(long, requires = "execute")]
    pub force: bool,
    /// Print the plan as one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first
    List(DlqListArgs),
    /// Show one dead letter in full
    Show(DlqShowArgs),
    /// Put dead letters back: to the group that gave up on them, or to the whole topic
    Replay(DlqReplayArgs),
    /// Delete dead letters
    Purge(DlqPurgeArgs),
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    /// Topic name
    pub topic: String,
    /// Only the dead letters of this group
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Print at most this many
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
    /// Print one JSON object per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DlqShowArgs {
    /// Topic name
    pub topic: String,
    /// Dead-letter id: PARTITION:ID as `dlq list` shows it, or ID (looked up in every partition)
    pub id: String,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["ids", "all"])))]
pub struct DlqReplayArgs {
    /// Topic name
    pub topic: String,
    /// Dead letters to replay: PARTITION:ID or ID (repeatable)
    #[arg(long = "id", value_name = "ID", num_args = 1..)]
    pub ids: Vec<String>,
    /// Replay every dead letter (of --group, if given)
    #[arg(long)]
    pub all: bool,
    /// Only the dead letters of this group
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Replay to the whole topic (every group sees them again) instead of
    /// only to the group that gave up on each
    #[arg(long)]
    pub to_topic: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["ids", "all"])))]
pub struct DlqPurgeArgs {
    /// Topic name
    pub topic: String,
    /// Dead letters to delete: PARTITION:ID or ID (repeatable)
    #[arg(long = "id", value_name = "ID", num_args = 1..)]
    pub ids: Vec<String>,
    /// Delete every dead letter (of --group, if given)
    #[arg(long)]
    pub all: bool,
    /// Only the dead letters of this group
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Confirm: the dead letters are deleted for good
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Register a JSON Schema as the topic's next version (checked against the earlier ones)
    Register(SchemaFileArgs),
    /// Check a JSON Schema against the topic's versions: exit 0 compatible, 1 not; changes nothing
    Check(SchemaFileArgs),
    /// List the topic's schema versions
    List(SchemaListArgs),
    /// Print one version (the latest unless --version)
    Show(SchemaShowArgs),
    /// What changed from version A to version B, and who it breaks
    Diff(SchemaDiffArgs),
    /// Print the topic's compatibility mode and schema policy, or set them
    Mode(SchemaModeArgs),
    /// Print the default compatibility mode (of topics without one of their own), or set it
    DefaultMode(SchemaDefaultModeArgs),
}

#[derive(Debug, Args)]
pub struct SchemaDefaultModeArgs {
    /// NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL or FULL_TRANSITIVE
    pub mode: Option<String>,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SchemaFileArgs {
    /// Topic name (the schema's subject)
    pub topic: String,
    /// The JSON Schema document (draft 2020-12), or - for stdin
    pub file: String,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SchemaListArgs {
    /// Topic name
    pub topic: String,
    /// Print one JSON object per version
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct SchemaShowArgs {
    /// Topic name
    pub topic: String,
    /// The version (default: the latest)
    #[arg(long, value_name = "N")]
    pub version: Option<u32>,
    /// Print one JSON object (topic, version, schema)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SchemaDiffArgs {
    /// Topic name
    pub topic: String,
    /// The older version
    pub a: u32,
    /// The newer version
    pub b: u32,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SchemaModeArgs {
    /// Topic name
    pub topic: String,
    /// NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL or
    /// FULL_TRANSITIVE; DEFAULT drops the topic's own mode, so it follows
    /// `schema default-mode`
    pub mode: Option<String>,
    /// Also set whether publishes must match the schema: required or optional
    #[arg(long, value_name = "POLICY")]
    pub schema: Option<String>,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule, or replace the one of that name
    Add(ScheduleAddArgs),
    /// List schedules and their next fire times
    List(ScheduleListArgs),
    /// Remove a schedule
    Remove(ScheduleRemoveArgs),
}

#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    /// Schedule name: lowercase letters, digits, '.', '-' and '_'
    pub name: String,
    /// Cron expression: 5 fields as in crontab ("0 9 * * 1-5"), or 6-7 with
    /// seconds first ("*/10 * * * * *")
    #[arg(long, value_name = "EXPR")]
    pub cron: String,
    /// Time zone the expression is read in (IANA, e.g. Europe/Berlin) [default: UTC]
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// Topic the messages go to
    #[arg(long, value_name = "T")]
    pub topic: String,
    /// Partition key of the messages
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// A header, as name=value (repeatable)
    #[arg(long = "header", value_name = "K=V")]
    pub headers: Vec<String>,
    /// The payload as JSON text, or - to read it from stdin
    #[arg(value_name = "DATA")]
    pub data: String,
}

#[derive(Debug, Args)]
pub struct ScheduleListArgs {
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ScheduleRemoveArgs {
    /// Schedule name
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn publish_needs_data_or_jsonl_but_not_both() {
        assert!(Cli::try_parse_from(["millrace", "publish", "t"]).is_err());
        assert!(Cli::try_parse_from(["millrace", "publish", "t", "{}", "--jsonl"]).is_err());
        assert!(
            Cli::try_parse_from(["millrace", "publish", "t", "--jsonl", "--key", "k"]).is_err()
        );
        assert!(Cli::try_parse_from(["millrace", "publish", "t", "--jsonl"]).is_ok());
        assert!(
            Cli::try_parse_from([
                "millrace", "publish", "t", "1", "--delay", "1s", "--at", "x"
            ])
            .is_err()
        );
    }

    #[test]
    fn replay_and_purge_need_ids_or_all_but_not_both() {
        for cmd in ["replay", "purge"] {
            let parse = |extra: &[&str]| {
                let mut args = vec!["millrace", "dlq", cmd, "t"];
                args.extend_from_slice(extra);
                Cli::try_parse_from(args)
            };
            assert!(parse(&[]).is_err());
            assert!(parse(&["--all", "--id", "1-0"]).is_err());
            assert!(parse(&["--all"]).is_ok());
            assert!(parse(&["--id", "0:1-0", "2-0", "--id", "3-0"]).is_ok());
        }
    }
}
