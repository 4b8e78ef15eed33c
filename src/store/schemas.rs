//! A topic's schema subject: one hash beside the topic's settings (same
//! hash tag, so one slot), holding every version's document, the latest
//! version number, the subject's compatibility mode and a digest index.
//! Registering is `lua/schema_register.lua`; reads are one `HGETALL`.
//! What a producer checks publishes against (the topic's schema policy and
//! one version's document) is one `lua/schema_gate.lua` call, and the policy
//! is set by `lua/schema_policy.lua`.

use std::collections::BTreeMap;

use redis::AsyncCommands;

use super::{Store, int, text};
use crate::error::{Error, Result};

/// A subject as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StoredSubject {
    /// The latest version (0 when none is registered).
    pub latest: u32,
    /// The subject's compatibility mode, when one was set.
    pub mode: Option<String>,
    /// The default mode of subjects with none of their own, when one was set.
    pub default_mode: Option<String>,
    /// Every version's document (canonical JSON text), by version.
    pub versions: BTreeMap<u32, String>,
}

/// What registering a document did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Registered {
    /// Stored as this new version.
    New(u32),
    /// The same document was registered before as this version.
    Existing(u32),
    /// Another version was registered since the caller read the subject:
    /// nothing was written; this is the latest now.
    Moved(u32),
}

/// What `lua/schema_gate.lua` read: the topic's schema policy and one
/// version's document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GateRead {
    /// The meta hash's `schema` field (`required`, or empty).
    pub policy: String,
    /// The version and its document (canonical JSON text), if there is one.
    pub document: Option<(u32, String)>,
}

impl Store<'_> {
    /// The schema policy of `topic` and the document of `version` (the
    /// latest when `None`); `None` when there is no such topic.
    pub(crate) async fn schema_gate(
        &self,
        topic: &str,
        version: Option<u32>,
    ) -> Result<Option<GateRead>> {
        let wanted = version.map(|v| v.to_string()).unwrap_or_default();
        let reply = self
            .eval(
                &self.scripts.schema_gate,
                &[&self.keys.meta(topic), &self.keys.schemas(topic)],
                &[wanted.as_bytes()],
            )
            .await?;
        let parts = match reply {
            redis::Value::Array(p) => p,
            other => return Err(Error::Decode(format!("schema_gate replied {other:?}"))),
        };
        match parts.as_slice() {
            [found] if int(found)? == 0 => Ok(None),
            [_, policy, version, document] => {
                let version = int(version)?;
                let document = if version > 0 {
                    let v = u32::try_from(version)
                        .map_err(|_| Error::Decode(format!("schema version {version}")))?;
                    Some((v, text(document)?))
                } else {
                    None
                };
                Ok(Some(GateRead {
                    policy: text(policy)?,
                    document,
                }))
            }
            other => Err(Error::Decode(format!("schema_gate replied {other:?}"))),
        }
    }

    /// Sets the topic's schema policy (`required`, or empty for optional);
    /// false when there is no such topic.
    pub(crate) async fn set_schema_policy(&self, topic: &str, policy: &str) -> Result<bool> {
        let reply = self
            .eval(
                &self.scripts.schema_policy,
                &[&self.keys.meta(topic)],
                &[policy.as_bytes()],
            )
            .await?;
        Ok(int(&reply)? == 1)
    }

    /// The subject of `topic`.
    pub(crate) async fn schema_subject(&self, topic: &str) -> Result<StoredSubject> {
        let fields: BTreeMap<String, String> =
            self.conn.clone().hgetall(self.keys.schemas(topic)).await?;
        let mut subject = StoredSubject::default();
        for (field, value) in fields {
            if field == "latest" {
                subject.latest = value
                    .parse()
                    .map_err(|_| Error::Decode(format!("schema subject latest {value:?}")))?;
            } else if field == "mode" {
                subject.mode = Some(value);
            } else if let Some(v) = field.strip_prefix("v:") {
                let v = v
                    .parse()
                    .map_err(|_| Error::Decode(format!("schema subject field {field:?}")))?;
                subject.versions.insert(v, value);
            }
        }
        subject.default_mode = self.default_schema_mode().await?;
        Ok(subject)
    }

    /// The default compatibility mode, when one was set.
    pub(crate) async fn default_schema_mode(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .clone()
            .get(self.keys.schema_default_mode())
            .await?)
    }

    /// Sets the default compatibility mode.
    pub(crate) async fn set_default_schema_mode(&self, mode: &str) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .set(self.keys.schema_default_mode(), mode)
            .await?;
        Ok(())
    }

    /// One version's document (the latest when `version` is `None`):
    /// `(version, canonical JSON text)`, or `None` when there is none.
    /// Two `HGET`s at most: versions never change once written.
    pub(crate) async fn schema_document(
        &self,
        topic: &str,
        version: Option<u32>,
    ) -> Result<Option<(u32, String)>> {
        let key = self.keys.schemas(topic);
        let mut conn = self.conn.clone();
        let version = match version {
            Some(v) => v,
            None => {
                let latest: Option<u32> = conn.hget(&key, "latest").await?;
                match latest {
                    Some(v) => v,
                    None => return Ok(None),
                }
            }
        };
        let text: Option<String> = conn.hget(&key, format!("v:{version}")).await?;
        Ok(text.map(|t| (version, t)))
    }

    /// Registers `document` (canonical JSON text) as the version after
    /// `checked_latest`, unless it is registered already.
    pub(crate) async fn register_schema(
        &self,
        topic: &str,
        checked_latest: u32,
        document: &str,
    ) -> Result<Registered> {
        let latest = checked_latest.to_string();
        let reply = self
            .eval(
                &self.scripts.schema_register,
                &[&self.keys.schemas(topic)],
                &[latest.as_bytes(), document.as_bytes()],
            )
            .await?;
        let parts = match reply {
            redis::Value::Array(p) if p.len() == 2 => p,
            other => {
                return Err(Error::Decode(format!("schema_register replied {other:?}")));
            }
        };
        let (a, b) = (int(&parts[0])?, int(&parts[1])?);
        let version =
            |n: i64| u32::try_from(n).map_err(|_| Error::Decode(format!("schema version {n}")));
        Ok(match (a, b) {
            (-1, latest) => Registered::Moved(version(latest)?),
            (v, 1) => Registered::New(version(v)?),
            (v, _) => Registered::Existing(version(v)?),
        })
    }

    /// Drops the subject's own compatibility mode.
    pub(crate) async fn clear_schema_mode(&self, topic: &str) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .hdel(self.keys.schemas(topic), "mode")
            .await?;
        Ok(())
    }

    /// Sets the subject's compatibility mode.
    pub(crate) async fn set_schema_mode(&self, topic: &str, mode: &str) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .hset(self.keys.schemas(topic), "mode", mode)
            .await?;
        Ok(())
    }
}
