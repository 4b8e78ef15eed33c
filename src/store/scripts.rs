//! The Lua registry: every script in `lua/`, embedded at compile time,
//! preloaded on connect and invoked by SHA.
//!
//! `SCRIPT LOAD` is not replicated and a restarted server forgets scripts, so
//! callers go through [`crate::store::conn::Conn::eval`] (single calls) or check
//! pipelined replies for `NOSCRIPT` and reload with `conn::load_scripts`.
//! The registry itself is pure: sources, SHAs, commands.

use redis::{Cmd, ToRedisArgs};

/// One script: its name (the file in `lua/`), source and SHA1.
#[derive(Debug)]
pub struct Script {
    /// File name without `.lua`.
    pub name: &'static str,
    /// What is sent to Redis: the shared pieces it uses, then its own file.
    source: &'static str,
    /// Its own file in `lua/` (read by the tests of the guard and pieces).
    #[cfg_attr(not(test), allow(dead_code))]
    own: &'static str,
    /// The shared pieces (`lua/lib/<piece>.lua`) put before it.
    pieces: &'static [&'static str],
    sha: String,
}

impl Script {
    fn new(
        name: &'static str,
        source: &'static str,
        own: &'static str,
        pieces: &'static [&'static str],
    ) -> Self {
        let sha = redis::Script::new(source).get_hash().to_string();
        Script {
            name,
            source,
            own,
            pieces,
            sha,
        }
    }

    /// The script's SHA1, as `EVALSHA` wants it.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// The script's source as sent to Redis (shared pieces included).
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Where line `line` of the assembled source comes from: `ack.lua,
    /// line 5`, or `lib/lease.lua, line 9` for a shared piece.
    fn file_line(&self, line: usize) -> String {
        let mut first = 1;
        for piece in self.pieces {
            let len = piece_source(piece).lines().count();
            if line < first + len {
                return format!("lib/{piece}.lua, line {}", line + 1 - first);
            }
            first += len;
        }
        format!("{}.lua, line {}", self.name, line + 1 - first)
    }

    /// An `EVALSHA` command with these keys and arguments.
    pub fn cmd<K: ToRedisArgs, A: ToRedisArgs>(&self, keys: &[K], args: A) -> Cmd {
        let mut c = redis::cmd("EVALSHA");
        c.arg(&self.sha).arg(keys.len()).arg(keys).arg(args);
        c
    }
}

/// The source of a shared piece (`lua/lib/<piece>.lua`).
fn piece_source(piece: &str) -> &'static str {
    match piece {
        "clock" => include_str!("../../lua/lib/clock.lua"),
        "lease" => include_str!("../../lua/lib/lease.lua"),
        _ => "",
    }
}

/// A script's source at compile time: the shared pieces it names, in order,
/// then its own file. A change to a piece changes every script using it.
macro_rules! assembled {
    ($file:literal [$($piece:literal),*]) => {
        concat!(
            $(include_str!(concat!("../../lua/lib/", $piece, ".lua")),)*
            include_str!(concat!("../../lua/", $file, ".lua"))
        )
    };
}

macro_rules! scripts {
    ($($field:ident => $file:literal [$($piece:literal),*]),* $(,)?) => {
        /// All of millrace's scripts.
        #[derive(Debug)]
        pub struct Scripts {
            $(#[doc = concat!("`lua/", $file, ".lua`")] pub $field: Script,)*
        }

        impl Scripts {
            pub(crate) fn new() -> Self {
                Scripts {
                    $($field: Script::new(
                        $file,
                        assembled!($file [$($piece),*]),
                        include_str!(concat!("../../lua/", $file, ".lua")),
                        &[$($piece),*],
                    ),)*
                }
            }

            /// Every script, for preloading.
            pub fn all(&self) -> Vec<&Script> {
                vec![$(&self.$field),*]
            }
        }
    };
}

// Each script with the shared pieces (`lua/lib/`) it uses: `clock` gives
// `clock_ms()`, `lease` the lease guard `lease_held(...)` (needs `clock`).
scripts! {
    topic_create => "topic_create" [],
    publish_dedup => "publish_dedup" [],
    delay => "delay" ["clock"],
    group_heartbeat => "group_heartbeat" ["clock"],
    group_assign => "group_assign" [],
    lease_acquire => "lease_acquire" ["clock"],
    lease_renew => "lease_renew" ["clock", "lease"],
    lease_release => "lease_release" [],
    ack => "ack" ["clock", "lease"],
    read_fenced => "read_fenced" ["clock", "lease"],
    trim => "trim" ["clock"],
    schedule_mark => "schedule_mark" [],
    fail => "fail" ["clock", "lease"],
    dead_letter => "dead_letter" ["clock", "lease"],
    retry_later => "retry_later" ["clock"],
    promote => "promote" ["clock"],
    promote_retry => "promote_retry" ["clock"],
    dlq_replay => "dlq_replay" [],
    rate_take => "rate_take" ["clock"],
    schema_register => "schema_register" [],
    schema_gate => "schema_gate" [],
    schema_policy => "schema_policy" [],
    responders => "responders" ["clock"],
    cancel_request => "cancel_request" ["clock"],
    progress => "progress" ["clock", "lease"],
}

/// Which of millrace's scripts, at which line, ran the command an ACL
/// refused: `script topic_create.lua, line 28, HSET`. `detail` is Redis's
/// error text, which ends `script: <sha>, on @user_script:<line>.`
pub(crate) fn denied_call(detail: &str) -> Option<String> {
    static ALL: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    // The last "script: " is the one before the SHA (Redis 7.2+ begins
    // with "ACL failure in script: ").
    let (_, tail) = detail.rsplit_once("script: ")?;
    let (sha, tail) = tail.split_once(',')?;
    let line: usize = tail
        .split_once("@user_script:")?
        .1
        .trim_end_matches(['.', ' '])
        .parse()
        .ok()?;
    let script = ALL
        .get_or_init(Scripts::new)
        .all()
        .into_iter()
        .find(|s| s.sha() == sha.trim())?;
    let text = script.source().lines().nth(line.checked_sub(1)?)?;
    let command = text
        .split_once("redis.call(")?
        .1
        .trim_start_matches(['\'', '"'])
        .split(['\'', '"'])
        .next()?;
    Some(format!(
        "script {}, {}",
        script.file_line(line),
        command.to_ascii_uppercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_call_is_found_in_its_script() {
        let s = Scripts::new();
        let detail = format!(
            "The user executing the script can't run this command or subcommand script: {}, on @user_script:28.",
            s.topic_create.sha()
        );
        assert_eq!(
            denied_call(&detail).as_deref(),
            Some("script topic_create.lua, line 28, HSET")
        );
        // Redis 7.2+ and Valkey word it otherwise.
        let detail = format!(
            "ACL failure in script: User app has no permissions to run the 'hset' command script: {}, on @user_script:28.",
            s.topic_create.sha()
        );
        assert_eq!(
            denied_call(&detail).as_deref(),
            Some("script topic_create.lua, line 28, HSET")
        );
        // A line of a script with shared pieces is named in its own file,
        // or in the piece it comes from.
        let pieces = s.ack.source().len() - s.ack.own.len();
        let before = s.ack.source()[..pieces].lines().count();
        let xack = s
            .ack
            .own
            .lines()
            .position(|l| l.contains("'XACK'"))
            .unwrap()
            + 1;
        let detail = format!(
            "... script: {}, on @user_script:{}.",
            s.ack.sha(),
            before + xack
        );
        assert_eq!(
            denied_call(&detail).as_deref(),
            Some(format!("script ack.lua, line {xack}, XACK").as_str())
        );
        let hmget = include_str!("../../lua/lib/clock.lua").lines().count()
            + include_str!("../../lua/lib/lease.lua")
                .lines()
                .position(|l| l.contains("'HMGET'"))
                .unwrap()
            + 1;
        let detail = format!("... script: {}, on @user_script:{hmget}.", s.ack.sha());
        assert!(
            denied_call(&detail)
                .unwrap()
                .starts_with("script lib/lease.lua, line "),
            "{:?}",
            denied_call(&detail)
        );
        assert_eq!(denied_call("no script here"), None);
        assert_eq!(
            denied_call("x script: 0000, on @user_script:1."),
            None,
            "unknown sha"
        );
    }

    #[test]
    fn every_script_documents_its_keys_and_args() {
        for s in Scripts::new().all() {
            let head: String = s.own.lines().take_while(|l| l.starts_with("--")).collect();
            assert!(head.contains("KEYS[1]"), "{} lacks a KEYS header", s.name);
            assert!(head.contains("Returns"), "{} lacks a Returns line", s.name);
        }
    }

    /// The steps that take a partition lease as KEYS[1] and may only run
    /// while the caller holds it. `lease_acquire` and `lease_release`
    /// manage the lease rather than run under it.
    fn lease_checked(s: &Script) -> bool {
        let head: String = s.own.lines().take_while(|l| l.starts_with("--")).collect();
        head.contains("KEYS[1] lease") && s.name != "lease_acquire" && s.name != "lease_release"
    }

    /// Every lease-checked step runs the one shared guard, and none keeps a
    /// copy of its own: a step that reads the lease's owner by hand, or
    /// forgets the guard, fails here.
    #[test]
    fn every_lease_checked_step_uses_the_shared_guard() {
        let all = Scripts::new();
        let checked: Vec<&str> = all
            .all()
            .into_iter()
            .filter(|s| lease_checked(s))
            .map(|s| s.name)
            .collect();
        assert_eq!(
            checked,
            [
                "lease_renew",
                "ack",
                "read_fenced",
                "fail",
                "dead_letter",
                "progress"
            ],
            "the lease-checked steps changed: review this list"
        );
        for s in all.all() {
            let reads_owner = s.own.contains("'owner'");
            if lease_checked(s) {
                assert!(
                    s.pieces.contains(&"lease") && s.own.contains("lease_held(KEYS[1]"),
                    "{} is lease-checked but does not call the shared guard",
                    s.name
                );
                assert!(!reads_owner, "{} checks the lease by hand", s.name);
            } else {
                assert!(
                    !s.own.contains("lease_held("),
                    "{} calls the guard without declaring a lease key",
                    s.name
                );
            }
        }
    }

    /// Each script includes exactly the pieces it uses, and only the clock
    /// piece asks Redis for the time.
    #[test]
    fn scripts_include_the_pieces_they_use() {
        for s in Scripts::new().all() {
            let uses_clock = s.own.contains("clock_ms(");
            let uses_lease = s.own.contains("lease_held(");
            let mut want: Vec<&str> = Vec::new();
            if uses_clock || uses_lease {
                want.push("clock");
            }
            if uses_lease {
                want.push("lease");
            }
            assert_eq!(s.pieces, want.as_slice(), "{}", s.name);
            assert!(
                !s.own.contains("'TIME'"),
                "{} reads the clock itself",
                s.name
            );
            assert!(s.source.ends_with(s.own), "{}", s.name);
        }
    }
}
