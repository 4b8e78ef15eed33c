//! The JSON input of `publish` and `schedule add`, parsed without Redis:
//! the lines of `publish --jsonl`, the DATA argument, `--header` and `--at`.
//!
//! Each `--jsonl` line is one JSON object `{"data": ..., "key"?, "headers"?,
//! "delay"?, "priority"?, "dedup_id"?, "max_attempts"?}`. This module checks the JSON shape;
//! the caller then runs the library's `check_record` on every record before
//! publishing any, because a batch publish sends the good records of a batch
//! even when others fail, and the CLI promises all or nothing for a bad input.
//!
//! The module depends on nothing else in the binary, so the fuzz target
//! `fuzz/fuzz_targets/jsonl.rs` and `tests/bad_input.rs` compile this very
//! file (`#[path]`) and feed it arbitrary input.

use std::time::SystemTime;

use millrace::envelope::{self, Headers, validate_key};
use millrace::keys::validate_dedup_id;
use millrace::{PublishOptions, Record};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const FIELDS: &str = "data, key, headers, delay, priority, dedup_id, max_attempts";

/// Turns one line into a record ready to publish, or says what is wrong with
/// it (without the line number, which the caller adds).
pub fn parse_line(text: &str) -> Result<Record, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    parse_value(value)
}

/// One record from a parsed JSON value (an object, as a line of `--jsonl`).
pub fn parse_value(value: Value) -> Result<Record, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "expected a JSON object like {{\"data\": ...}}, found {}",
            kind(&value)
        ));
    };
    parse_object(map)
}

fn parse_object(map: Map<String, Value>) -> Result<Record, String> {
    let mut data = None;
    let mut options = PublishOptions::new();
    let mut headers = Headers::new();
    let mut max_attempts: Option<u32> = None;
    for (field, v) in map {
        if v.is_null() && field != "data" {
            // An explicit null is the same as leaving the field out.
            continue;
        }
        match field.as_str() {
            "data" => data = Some(v),
            "key" => {
                let key = string(&field, v)?;
                validate_key(&key).map_err(|e| e.to_string())?;
                options = options.key(key);
            }
            "headers" => {
                let Value::Object(h) = v else {
                    return Err(format!(
                        "\"headers\" must be an object of strings, found {}",
                        kind(&v)
                    ));
                };
                for (name, value) in h {
                    let value = match value {
                        Value::String(s) => s,
                        other => {
                            return Err(format!(
                                "header {name:?} must be a string, found {}",
                                kind(&other)
                            ));
                        }
                    };
                    headers.insert(name, value);
                }
            }
            "delay" => {
                let text = string(&field, v)?;
                let d = millrace::duration::parse_duration(&text).map_err(|e| e.to_string())?;
                options = options.delay(d);
            }
            "priority" => {
                let p = v
                    .as_i64()
                    .ok_or_else(|| format!("\"priority\" must be an integer, found {v}"))?;
                // The topic's lane count is checked with the whole record.
                let lane = u8::try_from(p)
                    .map_err(|_| format!("priority {p} is out of range: priorities are 0 to 15"))?;
                options = options.priority(lane);
            }
            "dedup_id" => {
                let id = string(&field, v)?;
                validate_dedup_id(&id).map_err(|e| e.to_string())?;
                options = options.dedup_id(id);
            }
            "max_attempts" => {
                let n = v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        format!("\"max_attempts\" must be a whole number, at least 1, found {v}")
                    })?;
                max_attempts = Some(n);
            }
            other => return Err(format!("unknown field {other:?} (fields are {FIELDS})")),
        }
    }
    if let Some(n) = max_attempts {
        headers.insert(millrace::HEADER_MAX_ATTEMPTS.to_string(), n.to_string());
    }
    let data = data.ok_or_else(|| "missing field \"data\"".to_string())?;
    let payload = envelope::encode(&data).map_err(|e| e.to_string())?;
    Ok(Record::raw(payload).options(options.headers(headers)))
}

fn string(field: &str, v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format!(
            "{field:?} must be a string, found {}",
            kind(&other)
        )),
    }
}

/// A JSON value's kind, with a short excerpt, for error messages.
fn kind(v: &Value) -> String {
    let name = match v {
        Value::Null => return "null".into(),
        Value::Bool(b) => return b.to_string(),
        Value::Number(n) => return format!("the number {n}"),
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    name.to_string()
}

/// Parses the DATA argument (JSON text), or says what is wrong with it.
pub fn parse_data(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("DATA: {}", json_error(&e)))
}

/// What to suggest when DATA is not JSON.
pub const DATA_HINT: &str = r#"DATA is JSON: a string needs quotes, e.g. '"hello"'"#;

/// Splits a `--header` argument `name=value` (the value may be empty and
/// may contain `=`; the name may not be empty).
pub fn parse_header(arg: &str) -> Result<(&str, &str), String> {
    arg.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("--header {arg:?}: write it as name=value"))
}

/// Parses `--at`: an RFC 3339 time.
pub fn parse_at(text: &str) -> Result<SystemTime, String> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        format!("--at {text:?} is not an RFC 3339 time (e.g. 2026-11-27T10:00:00Z): {e}")
    })?;
    Ok(SystemTime::from(t))
}

/// serde_json's message with the column but without "line 1", which would
/// be confused with the input's line number.
pub fn json_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(msg) if e.line() <= 1 => format!("invalid JSON at column {}: {msg}", e.column()),
        _ => format!("invalid JSON: {full}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_line(line).unwrap_err()
    }

    #[test]
    fn good_lines_parse() {
        for line in [
            r#"{"data": {"invoice": "inv-1"}}"#,
            r#"{"data": null}"#,
            r#"{"data": [1, 2], "key": "tenant-1", "headers": {"a": "b"}}"#,
            r#"{"data": "x", "delay": "5m", "priority": 1, "dedup_id": "inv-1"}"#,
            r#"{"data": 1, "key": null, "priority": null}"#,
            r#"{"data": 1, "max_attempts": 2}"#,
        ] {
            assert!(parse_line(line).is_ok(), "{line}");
        }
    }

    #[test]
    fn max_attempts_becomes_the_cap_header() {
        let record = parse_line(r#"{"data": 1, "max_attempts": 2, "headers": {"a": "b"}}"#);
        let dbg = format!("{:?}", record.unwrap());
        assert!(dbg.contains(r#""millrace-max-attempts": "2""#), "{dbg}");
        assert!(dbg.contains(r#""a": "b""#), "{dbg}");
        for bad in ["0", "-1", "\"3\"", "1.5", "4294967296"] {
            let e = err(&format!(r#"{{"data": 1, "max_attempts": {bad}}}"#));
            assert!(
                e.starts_with("\"max_attempts\" must be a whole number, at least 1"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert_eq!(
            err(r#"{"data": "#),
            "invalid JSON at column 9: EOF while parsing a value"
        );
        assert_eq!(
            err("[1]"),
            r#"expected a JSON object like {"data": ...}, found an array"#
        );
        assert_eq!(err(r#"{"key": "k"}"#), r#"missing field "data""#);
        assert_eq!(
            err(r#"{"data": 1, "tenant": "x"}"#),
            r#"unknown field "tenant" (fields are data, key, headers, delay, priority, dedup_id, max_attempts)"#
        );
        assert_eq!(
            err(r#"{"data": 1, "key": 5}"#),
            r#""key" must be a string, found the number 5"#
        );
        assert!(err(r#"{"data": 1, "key": ""}"#).contains("keys must be 1 to 1024 bytes"));
        assert_eq!(
            err(r#"{"data": 1, "headers": {"a": 1}}"#),
            r#"header "a" must be a string, found the number 1"#
        );
        assert!(err(r#"{"data": 1, "delay": "soon"}"#).starts_with("invalid duration"));
        assert_eq!(
            err(r#"{"data": 1, "priority": 300}"#),
            "priority 300 is out of range: priorities are 0 to 15"
        );
        assert_eq!(
            err(r#"{"data": 1, "priority": 1.5}"#),
            r#""priority" must be an integer, found 1.5"#
        );
        assert!(err(r#"{"data": 1, "dedup_id": ""}"#).contains("dedup"));
    }

    #[test]
    fn arguments_parse_or_say_what_is_wrong() {
        assert_eq!(parse_header("a=b=c"), Ok(("a", "b=c")));
        assert_eq!(parse_header("a="), Ok(("a", "")));
        assert_eq!(
            parse_header("=b"),
            Err(r#"--header "=b": write it as name=value"#.to_string())
        );
        assert!(parse_header("ab").is_err());
        assert_eq!(parse_data("[1]"), Ok(serde_json::json!([1])));
        assert_eq!(
            parse_data("hello").unwrap_err(),
            "DATA: invalid JSON at column 1: expected value"
        );
        assert!(parse_at("2026-11-27T10:00:00Z").is_ok());
        assert!(
            parse_at("tomorrow")
                .unwrap_err()
                .starts_with("--at \"tomorrow\" is not an RFC 3339 time")
        );
    }
}
