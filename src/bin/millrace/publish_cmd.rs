//! `millrace publish`: one message from flags and a JSON argument, or many
//! from stdin with `--jsonl` (checked in full, then published in batches).

use millrace::check_record;
use millrace::duration::parse_duration;
use millrace::{Error, PublishOptions, Receipt, Record};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::cli::{Global, PublishArgs};
use crate::error::CliError;
use crate::jsonl::{DATA_HINT, parse_at, parse_data, parse_header, parse_line};
use crate::output::{Out, note};

/// Records handed to one `publish_batch` call. The producer pipelines within
/// a call; this only bounds how much one call holds at once.
const CHUNK: usize = 10_000;

pub async fn run(global: &Global, args: PublishArgs, out: &mut Out) -> Result<(), CliError> {
    millrace::keys::validate_topic(&args.topic)?;
    if args.jsonl {
        bulk(global, args, out).await
    } else {
        single(global, args, out).await
    }
}

async fn single(global: &Global, args: PublishArgs, out: &mut Out) -> Result<(), CliError> {
    let text = match args.data.as_deref() {
        Some("-") => {
            let bytes = read_stdin().await?;
            String::from_utf8(bytes).map_err(|_| CliError::usage("stdin is not valid UTF-8"))?
        }
        Some(text) => text.to_string(),
        None => {
            return Err(CliError::usage(
                "DATA is missing (JSON text, or - for stdin)",
            ));
        }
    };
    let data = parse_data(&text).map_err(|e| CliError::usage(e).hint(DATA_HINT))?;
    let options = options(&args)?;
    let record = Record::encode(&data)?.options(options);

    let acks = acks(&args)?;
    let client = crate::connect(global).await?;
    let receipt = producer(&client, acks)
        .publish(&args.topic, record)
        .await
        .map_err(refusal)?;
    if args.json {
        return out.json_line(&receipt);
    }
    if receipt.duplicate {
        note(&format!(
            "duplicate: dedup id {:?} was already published as {}; nothing new was published",
            args.dedup_id.as_deref().unwrap_or_default(),
            receipt.message_id
        ));
    }
    out.line(&receipt.message_id)
}

/// A producer of `client` that counts a publish done as `--acks` says.
fn producer(client: &millrace::Client, acks: millrace::Acks) -> millrace::Producer {
    client.producer_with(millrace::ProducerConfig::default().acks(acks))
}

/// `--acks`, checked before connecting.
fn acks(args: &PublishArgs) -> Result<millrace::Acks, CliError> {
    millrace::Acks::parse(&args.acks).map_err(|e| CliError::usage(e.to_string()))
}

/// The publish options the flags ask for.
fn options(args: &PublishArgs) -> Result<PublishOptions, CliError> {
    let mut o = PublishOptions::new();
    if let Some(k) = &args.key {
        millrace::envelope::validate_key(k).map_err(|e| CliError::from(e).context("--key"))?;
        o = o.key(k);
    }
    for h in &args.headers {
        let (name, value) = parse_header(h).map_err(CliError::usage)?;
        o = o.header(name, value);
    }
    if let Some(d) = &args.delay {
        o = o.delay(parse_duration(d).map_err(|e| CliError::from(e).context("--delay"))?);
    }
    if let Some(at) = &args.at {
        o = o.at(parse_at(at).map_err(CliError::usage)?);
    }
    if let Some(p) = args.priority {
        o = o.priority(p);
    }
    if let Some(id) = &args.dedup_id {
        millrace::keys::validate_dedup_id(id)
            .map_err(|e| CliError::from(e).context("--dedup-id"))?;
        o = o.dedup_id(id);
    }
    if let Some(n) = args.max_attempts {
        if n == 0 {
            return Err(CliError::usage("--max-attempts must be at least 1"));
        }
        o = o.max_attempts(n);
    }
    if let Some(v) = args.schema_version {
        o = o.schema_version(v);
    }
    Ok(o)
}

/// What `publish --jsonl --json` prints.
#[derive(Debug, Serialize)]
struct BulkSummary {
    /// Messages written.
    published: usize,
    /// Lines whose dedup id had been published before: nothing written.
    duplicates: usize,
    /// Lines that Redis did not take.
    failed: usize,
}

async fn bulk(global: &Global, args: PublishArgs, out: &mut Out) -> Result<(), CliError> {
    let acks = acks(&args)?;
    let client = crate::connect(global).await?;
    let producer = producer(&client, acks);
    let spec = client.topic(&args.topic).await?;
    let input = read_stdin().await?;
    let limit = client.config().message_limit();
    let (mut records, lines) = parse_all(&input, |r| check_record(&spec, r, limit))?;
    if let Some(v) = args.schema_version {
        records = records.into_iter().map(|r| r.schema_version(v)).collect();
    }
    // Against the topic's schema too, every line before any is sent.
    for (record, n) in records.iter().zip(&lines) {
        client
            .check_record(&args.topic, record)
            .await
            .map_err(|e| {
                refusal(e)
                    .context(format!("line {n}"))
                    .hint("nothing was published; fix the line and run again")
            })?;
    }

    let mut summary = BulkSummary {
        published: 0,
        duplicates: 0,
        failed: 0,
    };
    // (line number, error) of each record Redis did not take.
    let mut failures: Vec<(usize, Error)> = Vec::new();
    let mut records = records.into_iter();
    let mut lines = lines.into_iter();
    loop {
        let chunk: Vec<Record> = records.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        let chunk_lines: Vec<usize> = lines.by_ref().take(chunk.len()).collect();
        match producer.publish_batch(&args.topic, chunk).await {
            Ok(results) => {
                for (line, r) in chunk_lines.into_iter().zip(results) {
                    match r {
                        Ok(Receipt {
                            duplicate: true, ..
                        }) => summary.duplicates += 1,
                        Ok(_) => summary.published += 1,
                        Err(e) => failures.push((line, e)),
                    }
                }
            }
            Err(e) => {
                // The whole call failed: this chunk and the rest stay unsent.
                let mut rest: Vec<usize> = chunk_lines;
                rest.extend(lines.by_ref());
                let first = rest.first().copied().unwrap_or_default();
                summary.failed = failures.len() + rest.len();
                let total = summary.published + summary.duplicates + summary.failed;
                print_summary(out, &summary, args.json)?;
                return Err(CliError::from(e).context(format!(
                    "{} of {total} messages were not published (from line {first} on)",
                    summary.failed
                )));
            }
        }
    }
    summary.failed = failures.len();
    print_summary(out, &summary, args.json)?;
    if let Some((_, first)) = failures.first() {
        let total = summary.published + summary.duplicates + summary.failed;
        let numbers = line_list(failures.iter().map(|(n, _)| *n));
        let reason = first.to_string();
        return Err(CliError::from(failures.swap_remove(0).1)
            .context(format!(
                "{} of {total} messages were not published (lines {numbers})",
                summary.failed
            ))
            .hint(format!(
                "the other lines were published; send the failed lines again (first error: {reason})"
            )));
    }
    Ok(())
}

/// Checks every line; the first bad one fails the whole input.
/// Returns the records and the line number each came from.
fn parse_all(
    input: &[u8],
    check: impl Fn(&Record) -> millrace::Result<()>,
) -> Result<(Vec<Record>, Vec<usize>), CliError> {
    let mut records = Vec::new();
    let mut lines = Vec::new();
    for (i, raw) in input.split(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        let bad = |msg: String| bad_line(n, msg);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| bad("not valid UTF-8".into()))?;
        if text.trim().is_empty() {
            continue;
        }
        let record = parse_line(text).map_err(&bad)?;
        check(&record).map_err(|e| bad(e.to_string()))?;
        records.push(record);
        lines.push(n);
    }
    Ok((records, lines))
}

/// A publish the library refused. A payload that does not match the
/// topic's schema gets every failing place on a line of its own (stderr),
/// then one error line; exit 2 like other invalid input.
fn refusal(e: Error) -> CliError {
    match e {
        Error::SchemaViolation {
            topic,
            version,
            errors,
        } => {
            for place in &errors {
                note(&format!("  {place}"));
            }
            let n = errors.len();
            CliError::usage(format!(
                "the payload does not match schema version {version} of topic {topic}: \
                 {n} failing place{} above; nothing was published",
                if n == 1 { "" } else { "s" }
            ))
        }
        e => CliError::from(e),
    }
}

/// A line that fails a check: nothing is published.
fn bad_line(n: usize, msg: String) -> CliError {
    CliError::usage(format!("line {n}: {msg}"))
        .hint("nothing was published; fix the line and run again")
}

fn print_summary(out: &mut Out, s: &BulkSummary, json: bool) -> Result<(), CliError> {
    if json {
        return out.json_line(s);
    }
    let plural = if s.published == 1 { "" } else { "s" };
    if s.duplicates > 0 {
        out.line(format_args!(
            "published {} message{plural} ({} duplicate{} skipped)",
            s.published,
            s.duplicates,
            if s.duplicates == 1 { "" } else { "s" }
        ))
    } else {
        out.line(format_args!("published {} message{plural}", s.published))
    }
}

/// `3, 7, 9` or `3, 7, 9, ... and 12 more`.
fn line_list(numbers: impl Iterator<Item = usize>) -> String {
    const SHOWN: usize = 10;
    let all: Vec<usize> = numbers.collect();
    let shown: Vec<String> = all.iter().take(SHOWN).map(usize::to_string).collect();
    let mut s = shown.join(", ");
    if all.len() > SHOWN {
        s.push_str(&format!(" and {} more", all.len() - SHOWN));
    }
    s
}

pub async fn read_stdin() -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    tokio::io::stdin()
        .read_to_end(&mut buf)
        .await
        .map_err(|e| CliError::other(format!("cannot read stdin: {e}")))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> millrace::TopicSpec {
        millrace::TopicSpec::new("t", 1).unwrap()
    }

    fn check(r: &Record) -> millrace::Result<()> {
        check_record(&spec(), r, 1 << 10)
    }

    #[test]
    fn empty_lines_are_skipped_and_numbers_kept() {
        let input = b"{\"data\": 1}\n\n  \r\n{\"data\": 2}\r\n{\"data\": 3}";
        let (records, lines) = parse_all(input, check).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(lines, vec![1, 4, 5]);
    }

    #[test]
    fn the_first_bad_line_fails_everything() {
        let input = b"{\"data\": 1}\n{\"data\": 2}\n{\"data\": \n{\"data\": 4}\nnope\n";
        let e = parse_all(input, check).unwrap_err();
        assert_eq!(e.code, crate::error::EXIT_USAGE);
        assert!(
            e.message.starts_with("line 3: invalid JSON"),
            "{}",
            e.message
        );
        let e = parse_all(b"{\"data\": 1}\n\xff\n", check).unwrap_err();
        assert_eq!(e.message, "line 2: not valid UTF-8");
        let e = parse_all(b"{\"data\": 1, \"priority\": 1}\n", check).unwrap_err();
        assert_eq!(
            e.message,
            "line 1: topic t has 1 lane(s); priority 1 is out of range"
        );
        let big = format!("{{\"data\": \"{}\"}}\n", "x".repeat(2000));
        let e = parse_all(big.as_bytes(), check).unwrap_err();
        assert!(
            e.message.contains("exceeds the limit of 1024 bytes"),
            "{}",
            e.message
        );
    }

    #[test]
    fn failed_lines_are_listed_briefly() {
        assert_eq!(line_list([3, 7].into_iter()), "3, 7");
        assert_eq!(
            line_list(1..=12),
            "1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more"
        );
    }
}
