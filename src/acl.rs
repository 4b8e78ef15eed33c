//! The Redis ACL a millrace user needs: its keys (everything under
//! `<prefix>:`) and the commands millrace sends, directly or from its Lua
//! scripts (Redis checks a script's `redis.call`s against the caller's ACL).
//!
//! Nothing here talks to Redis; [`rule`] is the text to put after
//! `ACL SETUSER <name> on ><password>`, documented in `docs/security.md` and
//! tested as written in `tests/security.rs`.

/// Every command millrace sends to a single server, as ACL names (a
/// subcommand as `command|sub`). `INFO` is not among them: a user who may
/// not run it is recognised through `HELLO`, which Redis allows everyone.
pub const COMMANDS: &[&str] = &[
    // Connection upkeep: health checks, and deadpool's check before reuse.
    "ping",
    "unwatch",
    // Ordered reads on a single server: MULTI / XREADGROUP / EXEC under a
    // WATCH of the partition leases (fencing without a script).
    "watch",
    "multi",
    "exec",
    // Scripts: loaded on connect and after a restart, run by SHA.
    "script|load",
    "evalsha",
    // Redis's clock (delays, schedules, leases).
    "time",
    // Replica acknowledgements (`Acks::replicas`). `Acks::fsynced` needs
    // `+waitaof` too, which Redis 7.0 does not know (and would refuse in a
    // rule): add it on 7.2 and later.
    "wait",
    // Streams: publish, read, consume, acknowledge, claim, trim, describe.
    "xadd",
    "xack",
    "xautoclaim",
    "xdel",
    "xgroup|create",
    "xgroup|createconsumer",
    "xgroup|setid",
    "xinfo|stream",
    "xinfo|groups",
    "xinfo|consumers",
    "xlen",
    "xpending",
    "xrange",
    "xrevrange",
    "xread",
    "xreadgroup",
    "xtrim",
    // Hashes: topic settings, leases, assignments, attempts, schedules.
    "hget",
    "hmget",
    "hgetall",
    "hset",
    "hdel",
    // Sets: the topic registry and each topic's groups.
    "sadd",
    "srem",
    "smembers",
    "sismember",
    // Sorted sets: delayed messages, retries, group members.
    "zadd",
    "zcard",
    "zrange",
    "zrangebyscore",
    "zrem",
    "zcount",
    // Strings and keys: dedup markers, pause flags, topic deletion.
    "get",
    "set",
    "pexpire",
    "exists",
    "del",
    // Lists: the promoters' wake-up tokens.
    "lpush",
    "ltrim",
    "blpop",
    // Request-reply: workers publish replies (from their scripts), a
    // requester subscribes to its own channel.
    "publish",
    "subscribe",
    "unsubscribe",
];

/// What a cluster needs in addition: redis-rs asks for the slot map.
pub const CLUSTER_COMMANDS: &[&str] = &["cluster|slots"];

/// The ACL rule for a millrace user under `prefix`: its keys only
/// (`~<prefix>:*`, since every key millrace writes starts with the prefix
/// and a colon, and a prefix cannot contain one, so `mr` does not reach
/// `mr2:*`), the reply channels `<prefix>:reply:*` only, and exactly
/// [`COMMANDS`]. With `cluster`,
/// [`CLUSTER_COMMANDS`] too. A URL with a database number other than 0 also
/// needs `+select`.
///
/// ```
/// let rule = millrace::acl::rule("mr", false);
/// assert!(rule.starts_with("resetkeys ~mr:* resetchannels &mr:reply:* -@all +ping "));
/// ```
pub fn rule(prefix: &str, cluster: bool) -> String {
    let mut parts = vec![
        "resetkeys".to_string(),
        format!("~{prefix}:*"),
        "resetchannels".to_string(),
        format!("&{prefix}:reply:*"),
        "-@all".to_string(),
    ];
    let extra: &[&str] = if cluster { CLUSTER_COMMANDS } else { &[] };
    parts.extend(COMMANDS.iter().chain(extra).map(|c| format!("+{c}")));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_names_the_prefix_keys_and_every_command_once() {
        let r = rule("tenant-a", false);
        assert!(r.starts_with(
            "resetkeys ~tenant-a:* resetchannels &tenant-a:reply:* -@all +ping +unwatch"
        ));
        let mut seen = std::collections::HashSet::new();
        for c in COMMANDS {
            assert!(seen.insert(c), "{c} twice");
            assert_eq!(c.to_ascii_lowercase(), **c);
        }
        assert!(!r.contains("+info"));
        assert!(rule("mr", true).ends_with("+unsubscribe +cluster|slots"));
    }
}
