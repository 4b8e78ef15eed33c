//! Small coordination steps: creating a topic's settings
//! (`lua/topic_create.lua`), a group's rate-limit window
//! (`lua/rate_take.lua`) and a schedule's last fire (`lua/schedule_mark.lua`).

use std::time::Duration;

use redis::Value;

use super::{Store, int};
use crate::error::{Error, Result};

/// What creating a topic's settings found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TopicCreate {
    /// Created now.
    New,
    /// It existed with the same settings.
    Existing,
    /// It exists with other settings: `(field, existing, requested)`.
    Conflict(Vec<(String, String, String)>),
}

/// A request for permits of a group's rate limit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RateAsk {
    /// Permits per window.
    pub permits: u32,
    /// The window.
    pub per: Duration,
    /// How many this member asks for.
    pub want: u32,
}

/// What the rate limit granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateGrant {
    pub granted: u32,
    /// Until the window ends (ms, Redis clock).
    pub left_ms: u64,
    /// The window's number.
    pub window: u64,
}

impl Store<'_> {
    /// Creates `topic`'s settings hash from `fields` and `once` (written
    /// only on creation, never compared: `created_ms`, the placement), or
    /// compares `fields` with an existing one; never changes an existing
    /// topic.
    pub(crate) async fn create_topic(
        &self,
        topic: &str,
        fields: &[(&str, String)],
        once: &[(&str, String)],
    ) -> Result<TopicCreate> {
        let mut args: Vec<Vec<u8>> = Vec::new();
        for (k, v) in fields {
            args.push(k.as_bytes().to_vec());
            args.push(v.as_bytes().to_vec());
        }
        args.push(b"--".to_vec());
        for (k, v) in once {
            args.push(k.as_bytes().to_vec());
            args.push(v.as_bytes().to_vec());
        }
        let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let reply = self
            .eval(&self.scripts.topic_create, &[&self.keys.meta(topic)], &argv)
            .await?;
        parse_topic_create(reply)
    }

    /// Takes up to `ask.want` permits of the group's current window.
    pub(crate) async fn rate_take(
        &self,
        topic: &str,
        group: &str,
        ask: RateAsk,
    ) -> Result<RateGrant> {
        let args = [
            ask.permits.to_string(),
            (ask.per.as_millis() as u64).max(1).to_string(),
            ask.want.to_string(),
        ];
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let v = self
            .eval(
                &self.scripts.rate_take,
                &[&self.keys.rate(topic, group)],
                &argv,
            )
            .await?;
        let (granted, left_ms, window): (u32, u64, u64) =
            redis::from_redis_value(v).map_err(|e| Error::Decode(e.to_string()))?;
        Ok(RateGrant {
            granted,
            left_ms,
            window,
        })
    }

    /// Records that schedule `name` fired for `fire_ms` (never moves back).
    pub(crate) async fn mark_fired(&self, name: &str, fire_ms: u64) -> Result<()> {
        let fire = fire_ms.to_string();
        match self
            .eval(
                &self.scripts.schedule_mark,
                &[&self.keys.schedules_last()],
                &[name.as_bytes(), fire.as_bytes()],
            )
            .await?
        {
            Value::Int(_) => Ok(()),
            other => Err(Error::Decode(format!("schedule_mark replied {other:?}"))),
        }
    }
}

fn parse_topic_create(reply: Value) -> Result<TopicCreate> {
    let parts: Vec<Value> = match reply {
        Value::Array(p) => p,
        other => return Err(Error::Decode(format!("topic_create replied {other:?}"))),
    };
    let code = int(parts.first().unwrap_or(&Value::Nil))?;
    Ok(match code {
        1 => TopicCreate::New,
        0 => TopicCreate::Existing,
        _ => {
            let strs: Vec<String> = parts[1..]
                .iter()
                .map(|v| redis::from_redis_value_ref::<String>(v).unwrap_or_default())
                .collect();
            TopicCreate::Conflict(
                strs.chunks(3)
                    .filter_map(|c| match c {
                        [f, have, want] => Some((f.clone(), have.clone(), want.clone())),
                        _ => None,
                    })
                    .collect(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_create_replies_read_as_new_existing_or_conflict() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(
            parse_topic_create(Value::Array(vec![Value::Int(1)])).unwrap(),
            TopicCreate::New
        );
        assert_eq!(
            parse_topic_create(Value::Array(vec![Value::Int(0)])).unwrap(),
            TopicCreate::Existing
        );
        let conflict = Value::Array(vec![
            Value::Int(-1),
            bulk("partitions"),
            bulk("8"),
            bulk("4"),
        ]);
        assert_eq!(
            parse_topic_create(conflict).unwrap(),
            TopicCreate::Conflict(vec![("partitions".into(), "8".into(), "4".into())])
        );
        assert!(parse_topic_create(Value::Int(1)).is_err());
        assert!(parse_topic_create(Value::Array(vec![])).is_err());
    }
}
