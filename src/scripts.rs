//! The Lua registry: every script in `lua/`, embedded at compile time,
//! preloaded on connect and invoked by SHA.
//!
//! `SCRIPT LOAD` is not replicated and a restarted server forgets scripts, so
//! callers go through [`crate::conn::Conn::eval`] (single calls) or check
//! pipelined replies for `NOSCRIPT` and reload with [`Scripts::load_all`].

use redis::{Cmd, ToRedisArgs};

use crate::conn::Conn;
use crate::error::Result;

/// One script: its name (the file in `lua/`), source and SHA1.
#[derive(Debug)]
pub struct Script {
    /// File name without `.lua`.
    pub name: &'static str,
    source: &'static str,
    sha: String,
}

impl Script {
    fn new(name: &'static str, source: &'static str) -> Self {
        let sha = redis::Script::new(source).get_hash().to_string();
        Script { name, source, sha }
    }

    /// The script's SHA1, as `EVALSHA` wants it.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// The script's source.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// An `EVALSHA` command with these keys and arguments.
    pub fn cmd<K: ToRedisArgs, A: ToRedisArgs>(&self, keys: &[K], args: A) -> Cmd {
        let mut c = redis::cmd("EVALSHA");
        c.arg(&self.sha).arg(keys.len()).arg(keys).arg(args);
        c
    }
}

macro_rules! scripts {
    ($($field:ident => $file:literal),* $(,)?) => {
        /// All of millrace's scripts.
        #[derive(Debug)]
        pub struct Scripts {
            $(#[doc = concat!("`lua/", $file, ".lua`")] pub $field: Script,)*
        }

        impl Scripts {
            pub(crate) fn new() -> Self {
                Scripts {
                    $($field: Script::new($file, include_str!(concat!("../lua/", $file, ".lua"))),)*
                }
            }

            /// Every script, for preloading.
            pub fn all(&self) -> Vec<&Script> {
                vec![$(&self.$field),*]
            }
        }
    };
}

scripts! {
    topic_create => "topic_create",
    publish_dedup => "publish_dedup",
    delay => "delay",
    group_heartbeat => "group_heartbeat",
    group_assign => "group_assign",
    lease_acquire => "lease_acquire",
    lease_renew => "lease_renew",
    lease_release => "lease_release",
    ack => "ack",
    read_fenced => "read_fenced",
    trim => "trim",
    schedule_mark => "schedule_mark",
    fail => "fail",
    dead_letter => "dead_letter",
    retry_later => "retry_later",
    promote => "promote",
    promote_retry => "promote_retry",
    dlq_replay => "dlq_replay",
    rate_take => "rate_take",
}

/// Which of millrace's scripts, at which line, ran the command an ACL
/// refused: `script topic_create.lua, line 28, HSET`. `detail` is Redis's
/// error text, which ends `script: <sha>, on @user_script:<line>.`
pub(crate) fn denied_call(detail: &str) -> Option<String> {
    static ALL: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    let (_, tail) = detail.split_once("script: ")?;
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
        "script {}.lua, line {line}, {}",
        script.name,
        command.to_ascii_uppercase()
    ))
}

impl Scripts {
    /// Loads every script (on a cluster, into every primary).
    pub(crate) async fn load_all(&self, conn: &mut Conn) -> Result<()> {
        let mut pipe = redis::pipe();
        for s in self.all() {
            pipe.cmd("SCRIPT").arg("LOAD").arg(s.source());
        }
        match conn {
            // A cluster routes SCRIPT LOAD to every node, one command at a time.
            Conn::Cluster(_) => {
                for s in self.all() {
                    let _: String = redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(s.source())
                        .query_async(conn)
                        .await?;
                }
            }
            Conn::Single(_) => {
                let _: Vec<String> = pipe.query_async(conn).await?;
            }
        }
        Ok(())
    }
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
            let head: String = s
                .source()
                .lines()
                .take_while(|l| l.starts_with("--"))
                .collect();
            assert!(head.contains("KEYS[1]"), "{} lacks a KEYS header", s.name);
            assert!(head.contains("Returns"), "{} lacks a Returns line", s.name);
        }
    }
}
