//! `millrace schema register|check|list|show|diff|mode`: thin calls to the
//! library's schema registry. Incompatibilities are listed one per line on
//! stderr (or as `reasons` in `--json`), each with its JSON pointer.

use millrace::{CompatMode, Incompatibility, SchemaPolicy, SchemaVersion};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::{
    Global, SchemaCommand, SchemaDefaultModeArgs, SchemaDiffArgs, SchemaFileArgs, SchemaListArgs,
    SchemaModeArgs, SchemaShowArgs,
};
use crate::error::CliError;
use crate::output::{Out, note, table};

/// Characters of a schema shown in a `list` row.
const SCHEMA_WIDTH: usize = 70;

pub async fn run(global: &Global, cmd: SchemaCommand, out: &mut Out) -> Result<(), CliError> {
    match cmd {
        SchemaCommand::Register(args) => register(global, args, out).await,
        SchemaCommand::Check(args) => check(global, args, out).await,
        SchemaCommand::List(args) => list(global, args, out).await,
        SchemaCommand::Show(args) => show(global, args, out).await,
        SchemaCommand::Diff(args) => diff(global, args, out).await,
        SchemaCommand::Mode(args) => mode(global, args, out).await,
        SchemaCommand::DefaultMode(args) => default_mode(global, args, out).await,
    }
}

/// One reason as `--json` prints it.
#[derive(Debug, Serialize)]
struct Reason<'a> {
    /// The earlier version it breaks, if any.
    version: Option<u32>,
    /// The JSON pointer of the place.
    path: &'a str,
    message: &'a str,
}

fn reasons_json(reasons: &[Incompatibility]) -> Vec<Reason<'_>> {
    reasons
        .iter()
        .map(|r| Reason {
            version: r.version,
            path: if r.pointer.is_empty() {
                "/"
            } else {
                &r.pointer
            },
            message: &r.reason,
        })
        .collect()
}

/// The document in `file` (`-`: stdin), which must be JSON.
async fn read_document(file: &str) -> Result<Value, CliError> {
    let bytes = if file == "-" {
        crate::publish_cmd::read_stdin().await?
    } else {
        tokio::fs::read(file)
            .await
            .map_err(|e| CliError::usage(format!("cannot read {file}: {e}")))?
    };
    serde_json::from_slice(&bytes).map_err(|e| CliError::usage(format!("{file} is not JSON: {e}")))
}

/// An incompatible schema: every reason on stderr (or the JSON object on
/// stdout), then exit 1.
fn refuse(
    topic: &str,
    mode: CompatMode,
    reasons: &[Incompatibility],
    json: bool,
    out: &mut Out,
) -> Result<(), CliError> {
    if json {
        out.json_line(&json!({
            "topic": topic,
            "mode": mode.as_str(),
            "compatible": false,
            "reasons": reasons_json(reasons),
        }))?;
        return Err(CliError {
            silent: true,
            ..CliError::other("")
        });
    }
    for r in reasons {
        note(&format!("  {r}"));
    }
    Err(CliError::other(format!(
        "the schema is not {mode} compatible with topic {topic}'s: {} reason{} above",
        reasons.len(),
        if reasons.len() == 1 { "" } else { "s" }
    )))
}

async fn register(global: &Global, args: SchemaFileArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    let doc = read_document(&args.file).await?;
    let client = crate::connect(global).await?;
    let registered = match client.register_schema(&args.topic, &doc).await {
        Ok(v) => v,
        Err(millrace::Error::SchemaIncompatible {
            topic,
            mode,
            reasons,
        }) => return refuse(&topic, mode, &reasons, args.json, out),
        Err(e) => return Err(e.into()),
    };
    if args.json {
        return out.json_line(&json!({"topic": registered.topic, "version": registered.version}));
    }
    out.line(registered.version)
}

async fn check(global: &Global, args: SchemaFileArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    let doc = read_document(&args.file).await?;
    let client = crate::connect(global).await?;
    let reasons = client.check_schema(&args.topic, &doc).await?;
    let mode = client.schema_mode(&args.topic).await?;
    if !reasons.is_empty() {
        return refuse(&args.topic, mode, &reasons, args.json, out);
    }
    if args.json {
        return out.json_line(&json!({
            "topic": args.topic,
            "mode": mode.as_str(),
            "compatible": true,
            "reasons": [],
        }));
    }
    out.line(format_args!("compatible ({mode})"))
}

fn version_json(v: &SchemaVersion) -> Value {
    json!({"topic": v.topic, "version": v.version, "schema": v.schema})
}

async fn list(global: &Global, args: SchemaListArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    let client = crate::connect(global).await?;
    let versions = client.schemas(&args.topic).await?;
    if args.json {
        for v in &versions {
            out.json_line(&version_json(v))?;
        }
        return Ok(());
    }
    if versions.is_empty() {
        return out.line(format_args!("no schema versions for topic {}", args.topic));
    }
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                cut(&v.schema.to_string(), SCHEMA_WIDTH),
            ]
        })
        .collect();
    out.line(table(&["VERSION", "SCHEMA"], &rows))
}

/// At most `max` characters of `s`, the last one `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut short: String = s.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// One version, or exit 1 naming what exists.
async fn one(
    client: &millrace::Client,
    topic: &str,
    version: Option<u32>,
) -> Result<SchemaVersion, CliError> {
    client.schema(topic, version).await?.ok_or_else(|| {
        let what = match version {
            Some(v) => format!("topic {topic} has no schema version {v}"),
            None => format!("topic {topic} has no schema"),
        };
        CliError::other(what).hint(format!("`millrace schema list {topic}` shows its versions"))
    })
}

async fn show(global: &Global, args: SchemaShowArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    let client = crate::connect(global).await?;
    let v = one(&client, &args.topic, args.version).await?;
    if args.json {
        return out.json_line(&version_json(&v));
    }
    out.json_pretty(&v.schema)
}

async fn diff(global: &Global, args: SchemaDiffArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    let client = crate::connect(global).await?;
    let a = one(&client, &args.topic, Some(args.a)).await?;
    let b = one(&client, &args.topic, Some(args.b)).await?;
    let backward = millrace::schema_changes(CompatMode::Backward, &a.schema, &b.schema);
    let forward = millrace::schema_changes(CompatMode::Forward, &a.schema, &b.schema);
    if args.json {
        return out.json_line(&json!({
            "topic": args.topic,
            "from": args.a,
            "to": args.b,
            "backward": reasons_json(&backward),
            "forward": reasons_json(&forward),
        }));
    }
    let (from, to) = (args.a, args.b);
    let mut text = format!("version {from} -> {to}\n");
    for (name, who, found) in [
        (
            "backward",
            format!("readers on {to} reading data written with {from}"),
            &backward,
        ),
        (
            "forward",
            format!("readers on {from} reading data written with {to}"),
            &forward,
        ),
    ] {
        if found.is_empty() {
            text.push_str(&format!("{name} ({who}): compatible\n"));
        } else {
            text.push_str(&format!("{name} ({who}): {} problem(s)\n", found.len()));
            for r in found {
                text.push_str(&format!("  {r}\n"));
            }
        }
    }
    out.line(text.trim_end())
}

async fn mode(global: &Global, args: SchemaModeArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    let to_default = args
        .mode
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("default"));
    let wanted = match &args.mode {
        Some(_) if to_default => None,
        m => m.as_deref().map(mode_arg).transpose()?,
    };
    let policy = args.schema.as_deref().map(policy_arg).transpose()?;
    let client = crate::connect(global).await?;
    if to_default {
        client.clear_schema_mode(&args.topic).await?;
    }
    if let Some(m) = wanted {
        client.set_schema_mode(&args.topic, m).await?;
    }
    if let Some(p) = policy {
        client.set_schema_policy(&args.topic, p).await?;
    }
    let mode = client.schema_mode(&args.topic).await?;
    let policy = client.topic(&args.topic).await?.schema;
    if args.json {
        return out.json_line(&json!({
            "topic": args.topic,
            "mode": mode.as_str(),
            "schema": policy.as_str(),
        }));
    }
    out.line(format_args!("{mode} (schema {policy})"))
}

/// A compatibility mode as typed.
fn mode_arg(m: &str) -> Result<CompatMode, CliError> {
    CompatMode::parse(m).ok_or_else(|| {
        CliError::usage(format!("unknown compatibility mode {m:?}")).hint(
            "one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE",
        )
    })
}

async fn default_mode(
    global: &Global,
    args: SchemaDefaultModeArgs,
    out: &mut Out,
) -> Result<(), CliError> {
    let wanted = args.mode.as_deref().map(mode_arg).transpose()?;
    let client = crate::connect(global).await?;
    if let Some(m) = wanted {
        client.set_default_schema_mode(m).await?;
    }
    let mode = client.default_schema_mode().await?;
    if args.json {
        return out.json_line(&json!({"mode": mode.as_str()}));
    }
    out.line(mode)
}

/// `--schema required|optional`.
pub fn policy_arg(text: &str) -> Result<SchemaPolicy, CliError> {
    SchemaPolicy::parse(text).ok_or_else(|| {
        CliError::usage(format!("--schema: unknown policy {text:?}")).hint("required or optional")
    })
}
