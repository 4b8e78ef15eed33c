//! `exec` handlers: one process per message, no shell.
//!
//! The payload goes to the program's stdin as JSON; metadata in `MILLRACE_*`
//! environment variables. A stderr line `millrace-progress: <JSON>` reports
//! progress (`Context::progress`). Exit 0 acks, and what the program printed on
//! stdout is its result (JSON; other text is kept as a JSON string; nothing
//! printed is no result). Exit 65 (EX_DATAERR) is a permanent
//! failure; any other exit, a signal or the timeout is retryable. The last
//! lines of stderr become the recorded error. The program runs in its own
//! process group, and the whole group is killed at the timeout (the
//! handler's, or the message's `millrace-timeout` header); a cancelled
//! message's group gets SIGTERM, then SIGKILL 3 s later. It is also killed
//! if the worker process dies.

use std::process::Stdio;
use std::time::Duration;

use millrace::{Context, HandlerError, Message};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Exit code meaning "bad data, do not retry" (sysexits.h).
pub const EX_DATAERR: i32 = 65;
/// How much of stderr is kept for the error.
const STDERR_TAIL: usize = 2048;
/// How long a cancelled handler's process group has between SIGTERM and
/// SIGKILL (within the worker's own grace, `millrace::CANCEL_GRACE`).
const TERM_GRACE: Duration = Duration::from_secs(3);
/// The most of stdout read as a result (1 MiB); more is a failure.
const STDOUT_MAX: usize = 1 << 20;

/// The prefix of a progress line on an exec handler's stderr.
pub const PROGRESS_PREFIX: &str = "millrace-progress:";

/// The progress a stderr line reports (`millrace-progress: <JSON>`; other
/// text after the prefix as a JSON string), or `None` for another line.
pub fn progress_line(line: &[u8]) -> Option<serde_json::Value> {
    let text = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let rest = text.strip_prefix(PROGRESS_PREFIX)?.trim();
    Some(serde_json::from_str(rest).unwrap_or_else(|_| serde_json::Value::String(rest.to_string())))
}

/// A program's stdout as its result: JSON as written, other text as a
/// JSON string, nothing (or only whitespace) as no result.
pub fn stdout_result(stdout: &[u8]) -> Option<serde_json::Value> {
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string())))
}

/// The payload as JSON text, or a permanent error if it is not MessagePack.
pub fn payload_json(msg: &Message) -> Result<String, HandlerError> {
    let value: serde_json::Value = msg.decode().map_err(HandlerError::permanent)?;
    serde_json::to_string(&value).map_err(HandlerError::permanent)
}

/// `MILLRACE_HEADER_<NAME>`: the header name upper-cased, other characters
/// than letters and digits as `_`.
pub fn header_env_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("MILLRACE_HEADER_{n}")
}

/// The last lines of `stderr` (at most 2 KiB), trimmed, as one string.
pub fn stderr_tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    let text = String::from_utf8_lossy(&stderr[start..]);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Runs `argv` for one message.
pub async fn run(
    argv: &[String],
    timeout: Duration,
    msg: Message,
    ctx: Context,
) -> Result<Option<serde_json::Value>, HandlerError> {
    let input = payload_json(&msg)?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("MILLRACE_TOPIC", &*ctx.topic)
        .env("MILLRACE_GROUP", &*ctx.group)
        .env("MILLRACE_PARTITION", ctx.partition.to_string())
        .env("MILLRACE_ID", ctx.message_id.to_string())
        .env("MILLRACE_STREAM_ID", ctx.id.to_string())
        .env("MILLRACE_ATTEMPT", ctx.attempt.to_string())
        .env("MILLRACE_EPOCH", ctx.epoch.to_string())
        .env_remove("MILLRACE_KEY")
        // The worker's own Redis URL may hold its password: a handler gets
        // the message, not the worker's credentials.
        .env_remove("MILLRACE_REDIS_URL")
        .env_remove("REDIS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills its children too.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl in the forked child before exec only sets a signal for
    // it. A handler must not outlive a worker that died (it would go on
    // working on a message the new owner handles too). Linux only: other
    // systems have no parent-death signal, and there a handler outlives a
    // worker killed with SIGKILL.
    #[cfg(target_os = "linux")]
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if let Some(k) = &ctx.key {
        cmd.env("MILLRACE_KEY", k);
    }
    for (name, value) in &ctx.headers {
        cmd.env(header_env_name(name), value);
    }
    // The attempt's process span, for the program's own spans to join
    // (with [otel]); else the trace context the message came with.
    if let Some(tp) = millrace::current_traceparent()
        .or_else(|| ctx.headers.get(millrace::HEADER_TRACEPARENT).cloned())
    {
        cmd.env("TRACEPARENT", tp);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| HandlerError::retry(format!("cannot start {}: {e}", argv[0])))?;
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let mut stdout = child.stdout.take();
    let io = async {
        let feed = async {
            if let Some(mut s) = stdin.take() {
                // A program that does not read stdin closes it: not an error.
                let _ = s.write_all(input.as_bytes()).await;
                drop(s);
            }
        };
        let ctx = &ctx;
        let read_err = async move {
            // Progress lines are reported; the others are the error's tail.
            let mut err = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let mut lines = tokio::io::BufReader::new(s).split(b'\n');
                while let Ok(Some(line)) = lines.next_segment().await {
                    match progress_line(&line) {
                        Some(p) => {
                            if let Err(e) = ctx.progress(&p).await {
                                tracing::warn!(error = %e, "reporting progress failed");
                            }
                        }
                        None => {
                            err.extend_from_slice(&line);
                            err.push(b'\n');
                            let keep = err.len().saturating_sub(4 * STDERR_TAIL);
                            err.drain(..keep);
                        }
                    }
                }
            }
            err
        };
        let read_out = async {
            let mut out = Vec::new();
            if let Some(s) = stdout.take() {
                let _ = s.take(STDOUT_MAX as u64 + 1).read_to_end(&mut out).await;
            }
            out
        };
        let ((), err, out) = tokio::join!(feed, read_err, read_out);
        let status = child.wait().await;
        (status, err, out)
    };
    // SAFETY: killpg only sends a signal; the group is the child's own
    // (process_group(0) made it its leader).
    let signal_group = |sig: libc::c_int| {
        if let Some(pid) = pid {
            unsafe {
                libc::killpg(pid as libc::pid_t, sig);
            }
        }
    };
    let timeout = ctx.timeout.unwrap_or(timeout);
    tokio::pin!(io);
    let (status, err, out) = tokio::select! {
        done = &mut io => done,
        _ = tokio::time::sleep(timeout) => {
            signal_group(libc::SIGKILL);
            return Err(HandlerError::retry(format!(
                "{} timed out after {:?} and was killed",
                argv[0], timeout
            )));
        }
        _ = ctx.cancel.cancelled() => {
            // Cancelled: SIGTERM to the whole group, SIGKILL if it is
            // still there after the grace period.
            signal_group(libc::SIGTERM);
            if tokio::time::timeout(TERM_GRACE, &mut io).await.is_err() {
                signal_group(libc::SIGKILL);
            }
            return Err(HandlerError::retry(format!("{} was stopped (cancelled)", argv[0])));
        }
    };
    let status =
        status.map_err(|e| HandlerError::retry(format!("waiting for {}: {e}", argv[0])))?;
    let tail = stderr_tail(&err);
    let describe = |what: String| {
        if tail.is_empty() {
            what
        } else {
            format!("{what}: {tail}")
        }
    };
    match status.code() {
        Some(0) if out.len() > STDOUT_MAX => Err(HandlerError::permanent(format!(
            "{} printed more than {STDOUT_MAX} bytes on stdout (its result)",
            argv[0]
        ))),
        Some(0) => Ok(stdout_result(&out)),
        Some(EX_DATAERR) => Err(HandlerError::permanent(describe(format!(
            "{} exited with 65",
            argv[0]
        )))),
        Some(code) => Err(HandlerError::retry(describe(format!(
            "{} exited with {code}",
            argv[0]
        )))),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let sig = status.signal().unwrap_or(0);
            Err(HandlerError::retry(describe(format!(
                "{} was killed by signal {sig}",
                argv[0]
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_become_environment_names() {
        assert_eq!(
            header_env_name("traceparent"),
            "MILLRACE_HEADER_TRACEPARENT"
        );
        assert_eq!(
            header_env_name("x-tenant.id"),
            "MILLRACE_HEADER_X_TENANT_ID"
        );
    }

    #[test]
    fn progress_lines_are_told_apart() {
        assert_eq!(
            progress_line(b"millrace-progress: {\"pages\": 3}"),
            Some(serde_json::json!({"pages": 3}))
        );
        assert_eq!(
            progress_line(b"millrace-progress: half way\r"),
            Some(serde_json::json!("half way"))
        );
        assert_eq!(progress_line(b"warning: millrace-progress: 3"), None);
        assert_eq!(progress_line(b"rendering"), None);
    }

    #[test]
    fn stdout_is_the_result() {
        assert_eq!(stdout_result(b""), None);
        assert_eq!(stdout_result(b"  \n"), None);
        assert_eq!(
            stdout_result(b"{\"cents\": 1200}\n"),
            Some(serde_json::json!({"cents": 1200}))
        );
        assert_eq!(
            stdout_result(b"rendered\n"),
            Some(serde_json::json!("rendered"))
        );
    }

    #[test]
    fn stderr_keeps_the_last_lines() {
        let text = b"one\ntwo\n\nthree\nfour\nfive\nsix\n";
        assert_eq!(stderr_tail(text), "two | three | four | five | six");
        assert_eq!(stderr_tail(b""), "");
    }
}
