//! Writing to stdout: lines, JSON, small tables and times.
//!
//! Every write goes through [`Out`], which turns a closed stdout (`| head`)
//! into a quiet exit instead of a panic (`println!` would panic on EPIPE).

use std::fmt::Display;
use std::io::{self, BufWriter, Stdout, Write};

use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::error::CliError;

/// Buffered stdout. Call [`Out::flush`] before returning.
pub struct Out {
    w: BufWriter<Stdout>,
    /// Flush after every line (for `--follow`, where the next line may be
    /// minutes away).
    flush_each: bool,
}

impl Out {
    pub fn new() -> Self {
        Out {
            w: BufWriter::new(io::stdout()),
            flush_each: false,
        }
    }

    pub fn flush_each_line(&mut self, on: bool) {
        self.flush_each = on;
    }

    /// Writes `s` and a newline.
    pub fn line(&mut self, s: impl Display) -> Result<(), CliError> {
        writeln!(self.w, "{s}").map_err(write_error)?;
        if self.flush_each {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes `v` as compact JSON on one line.
    pub fn json_line<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CliError> {
        let text = serde_json::to_string(v)
            .map_err(|e| CliError::other(format!("cannot format JSON: {e}")))?;
        self.line(text)
    }

    /// Writes `v` as indented JSON.
    pub fn json_pretty<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(v)
            .map_err(|e| CliError::other(format!("cannot format JSON: {e}")))?;
        self.line(text)
    }

    pub fn flush(&mut self) -> Result<(), CliError> {
        self.w.flush().map_err(write_error)
    }
}

fn write_error(e: io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::stdout_closed()
    } else {
        CliError::other(format!("cannot write to stdout: {e}"))
    }
}

/// A note for the user on stderr (never fails: a closed stderr is ignored,
/// as `eprintln!` would panic).
pub fn note(msg: &str) {
    let _ = writeln!(io::stderr(), "{msg}");
}

/// Milliseconds since the epoch as RFC 3339 in UTC with milliseconds:
/// `2026-11-27T10:00:00.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    i128::from(ms)
        .checked_mul(1_000_000)
        .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| t.format(fmt).ok())
        // Only a time past year 9999 gets here; show the number rather than fail.
        .unwrap_or_else(|| ms.to_string())
}

/// Lays out rows in columns separated by two spaces; the last column is not
/// padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(cols) {
            if i + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_764_237_600_123), "2025-11-27T10:00:00.123Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "N", "LAST"],
            &[
                vec!["a.b".into(), "12".into(), "x".into()],
                vec!["long.name".into(), "1".into(), "".into()],
            ],
        );
        assert_eq!(t, "NAME       N   LAST\na.b        12  x\nlong.name  1");
    }
}
