//! `millrace request`: publish a request and print the named group's reply
//! (what its handler returned, as JSON). Exit 4 when no reply came within
//! the timeout, 1 when the handler failed for good or nobody can answer.

use millrace::duration::parse_duration;
use millrace::{Record, Reply};
use serde::Serialize;

use crate::cli::{Global, RequestArgs};
use crate::error::CliError;
use crate::jsonl::{DATA_HINT, parse_data, parse_header};
use crate::output::Out;

/// The `--json` output.
#[derive(Serialize)]
struct Answered<'a> {
    topic: &'a str,
    group: &'a str,
    message_id: String,
    result: serde_json::Value,
}

pub async fn run(global: &Global, args: RequestArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    millrace::keys::validate_name("group", &args.group)?;
    let timeout =
        parse_duration(&args.timeout).map_err(|e| CliError::from(e).context("--timeout"))?;
    let text = if args.data == "-" {
        let bytes = crate::publish_cmd::read_stdin().await?;
        String::from_utf8(bytes).map_err(|_| CliError::usage("stdin is not valid UTF-8"))?
    } else {
        args.data.clone()
    };
    let data = parse_data(&text).map_err(|e| CliError::usage(e).hint(DATA_HINT))?;
    let mut record = Record::encode(&data)?;
    if let Some(k) = &args.key {
        millrace::envelope::validate_key(k).map_err(|e| CliError::from(e).context("--key"))?;
        record = record.key(k);
    }
    for h in &args.headers {
        let (name, value) = parse_header(h).map_err(CliError::usage)?;
        record = record.header(name, value);
    }
    if let Some(p) = args.priority {
        record = record.priority(p);
    }
    let client = crate::connect(global).await?;
    let reply: Reply<serde_json::Value> = client
        .request_record(&args.topic, record)
        .group(&args.group)
        .timeout(timeout)
        .await?;
    if args.json {
        return out.json_line(&Answered {
            topic: &args.topic,
            group: &args.group,
            message_id: reply.message_id.to_string(),
            result: reply.value,
        });
    }
    out.line(&reply.value)
}
