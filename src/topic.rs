//! Topics: their settings, and create / describe / list / delete.
//!
//! A topic's settings live in the hash `mr:{T}:meta`; its name is added to the
//! set `mr:topics`. Creating is idempotent for the same settings and refuses
//! other settings, saying what differs (the check and the write are one
//! script, so two creators cannot race). Partitions and lanes are created
//! lazily: a stream exists from its first message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::placement::{Placement, Tags};
use crate::store::backend::Backend;
use crate::store::coordination::TopicCreate;
use crate::store::keys::validate_topic;
use crate::store::topics::Layout;

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Most lanes (priority levels) a topic may have.
pub const MAX_LANES: u8 = 16;
/// Default time retention: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether a topic's publishes must match its schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaPolicy {
    /// Publishes are not checked, except those that pin a schema version
    /// (the default).
    #[default]
    Optional,
    /// Every publish must match the latest schema version (or the version
    /// it pins); a topic with no version registered takes no publish.
    Required,
}

impl SchemaPolicy {
    /// `optional` or `required`.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaPolicy::Optional => "optional",
            SchemaPolicy::Required => "required",
        }
    }

    /// Parses `optional` or `required` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "optional" => Some(SchemaPolicy::Optional),
            "required" => Some(SchemaPolicy::Required),
            _ => None,
        }
    }

    /// As stored in the topic's meta hash: `required`, or empty (a topic
    /// created before schemas has no field, which reads the same).
    pub(crate) fn stored(self) -> &'static str {
        match self {
            SchemaPolicy::Optional => "",
            SchemaPolicy::Required => "required",
        }
    }

    /// From the meta hash's field (missing or empty: optional).
    pub(crate) fn from_stored(s: Option<&str>) -> Self {
        match s {
            Some("required") => SchemaPolicy::Required,
            _ => SchemaPolicy::Optional,
        }
    }
}

impl std::fmt::Display for SchemaPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A topic's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TopicSpec {
    /// The topic name.
    pub name: String,
    /// Number of partitions (streams per lane).
    pub partitions: u32,
    /// Number of priority lanes; lane 0 is read first.
    pub lanes: u8,
    /// How long messages are kept.
    #[serde(rename = "retention_ms", serialize_with = "ser_ms")]
    pub retention: Duration,
    /// Approximate cap on each partition lane's length, if any.
    pub max_len: Option<u64>,
    /// Whether publishes must match the topic's schema, as the topic was
    /// read (it can be changed later with
    /// [`Client::set_schema_policy`](crate::Client::set_schema_policy);
    /// producers follow within a second).
    pub schema: SchemaPolicy,
    /// How the partitions are placed on a Redis Cluster: asked for at
    /// creation (default [`Placement::Balanced`]); as read, the scheme the
    /// topic was created with. Chosen once, by the first creator: creating
    /// an existing topic again never compares it.
    pub placement: Placement,
    /// The partitions' hash tags, as read from the metadata (the hash
    /// scheme until read).
    #[serde(skip)]
    pub(crate) tags: Tags,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl TopicSpec {
    /// Whether this is a dead-letter view `T.dlq` (the dead letters of `T`,
    /// read like a topic; nothing is published or dead-lettered into it).
    pub(crate) fn is_dead_letter_view(&self) -> bool {
        self.name.ends_with(".dlq")
    }

    /// A topic with `partitions` partitions, one lane, 7 days retention and
    /// no length cap. Checks the name and the partition count.
    pub fn new(name: impl Into<String>, partitions: u32) -> Result<Self> {
        let spec = TopicSpec {
            name: name.into(),
            partitions,
            lanes: 1,
            retention: DEFAULT_RETENTION,
            max_len: None,
            schema: SchemaPolicy::Optional,
            placement: Placement::Balanced,
            tags: Tags::Hash,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// How the partitions are placed on a Redis Cluster when this creates
    /// the topic: [`Placement::Balanced`] (the default) spreads them evenly
    /// over the primaries, [`Placement::Hash`] tags partition `p` `T:p` as
    /// before. No effect on a single server, nor on a topic that exists.
    #[must_use]
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Sets the number of lanes (1 to 16).
    #[must_use]
    pub fn lanes(mut self, lanes: u8) -> Self {
        self.lanes = lanes;
        self
    }

    /// Sets the time retention.
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Sets an approximate length cap per partition lane (`MAXLEN ~`).
    #[must_use]
    pub fn max_len(mut self, max_len: u64) -> Self {
        self.max_len = Some(max_len);
        self
    }

    /// Whether publishes must match the topic's schema (default
    /// [`SchemaPolicy::Optional`]).
    #[must_use]
    pub fn schema(mut self, policy: SchemaPolicy) -> Self {
        self.schema = policy;
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<()> {
        validate_topic(&self.name)?;
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(Error::invalid(
                "partitions",
                format!("{} is not between 1 and {MAX_PARTITIONS}", self.partitions),
            ));
        }
        if self.lanes == 0 || self.lanes > MAX_LANES {
            return Err(Error::invalid(
                "lanes",
                format!("{} is not between 1 and {MAX_LANES}", self.lanes),
            ));
        }
        if self.retention < Duration::from_millis(1) {
            return Err(Error::invalid("retention", "must be at least 1ms"));
        }
        if self.max_len == Some(0) {
            return Err(Error::invalid("max_len", "must be at least 1"));
        }
        Ok(())
    }

    /// Where the store finds the topic's keys.
    pub(crate) fn layout(&self) -> Layout<'_> {
        Layout {
            topic: &self.name,
            partitions: self.partitions,
            lanes: self.lanes,
        }
    }

    /// The settings that define a topic, as stored in its meta hash.
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("partitions", self.partitions.to_string()),
            ("lanes", self.lanes.to_string()),
            ("retention_ms", self.retention.as_millis().to_string()),
            (
                "max_len",
                self.max_len.map(|n| n.to_string()).unwrap_or_default(),
            ),
            ("schema", self.schema.stored().to_string()),
        ]
    }

    /// The settings as read from a topic's meta hash.
    pub(crate) fn from_fields(name: &str, fields: &[(String, String)]) -> Result<Self> {
        let field = |f: &str| fields.iter().find(|(k, _)| k == f).map(|(_, v)| v.as_str());
        let get = |f: &str| {
            field(f).ok_or_else(|| Error::Decode(format!("topic {name}: meta lacks {f}")))
        };
        let num = |f: &str| -> Result<u64> {
            get(f)?
                .parse()
                .map_err(|_| Error::Decode(format!("topic {name}: bad {f}")))
        };
        let max_len = match get("max_len")? {
            "" => None,
            v => Some(
                v.parse()
                    .map_err(|_| Error::Decode(format!("topic {name}: bad max_len")))?,
            ),
        };
        let partitions = num("partitions")? as u32;
        let tags = Tags::from_stored(field("placement"), field("tags"), partitions)
            .map_err(|e| Error::Decode(format!("topic {name}: {e}")))?;
        Ok(TopicSpec {
            name: name.to_string(),
            partitions,
            lanes: num("lanes")? as u8,
            retention: Duration::from_millis(num("retention_ms")?),
            max_len,
            schema: SchemaPolicy::from_stored(field("schema")),
            placement: tags.scheme(),
            tags,
        })
    }
}

/// What `describe` reports about a topic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TopicInfo {
    /// The topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Number of lanes.
    pub lanes: u8,
    /// Time retention in milliseconds.
    pub retention_ms: u64,
    /// Length cap per partition lane.
    pub max_len: Option<u64>,
    /// Whether publishes must match the topic's schema.
    pub schema: SchemaPolicy,
    /// Messages across all partitions and lanes.
    pub length: u64,
    /// Messages per partition (all lanes).
    pub partition_lengths: Vec<u64>,
    /// Delayed messages waiting across partitions.
    pub delayed: u64,
    /// Consumer groups of the topic.
    pub groups: Vec<String>,
    /// Dead letters across partitions.
    pub dlq_length: u64,
}

/// The outcome of [`Client::create_topic`](crate::Client::create_topic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// The topic is new.
    New,
    /// It existed with the same settings.
    Existing,
}

/// The topics of one backend, with their settings cached after first use
/// (a topic's settings never change once created). The handle every domain
/// step takes: it derefs to the [`Backend`] for the store and connections.
/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub(crate) struct Catalog {
    backend: Backend,
    specs: Arc<Mutex<HashMap<String, Arc<TopicSpec>>>>,
}

impl std::ops::Deref for Catalog {
    type Target = Backend;
    fn deref(&self) -> &Backend {
        &self.backend
    }
}

impl Catalog {
    /// A catalog of `backend`'s topics, nothing cached yet.
    pub(crate) fn new(backend: Backend) -> Self {
        Catalog {
            backend,
            specs: Arc::default(),
        }
    }

    /// Creates a topic, or succeeds if it exists with the same settings.
    /// Fails with [`Error::TopicConflict`] if it exists with other settings.
    pub(crate) async fn create_topic(&self, spec: &TopicSpec) -> Result<Created> {
        spec.validate()?;
        let created_ms = self.redis_time_ms().await?;
        // Written only when this call creates the topic, never compared:
        // a second creator's own choice of tags is dropped, and all read
        // the first one's.
        let mut once = vec![("created_ms", created_ms.to_string())];
        // An existing topic keeps its tags: plan only for a new one (the
        // script still decides, should another creator come first).
        if spec.placement == Placement::Balanced
            && self.is_cluster()
            && self.store().topic_meta(&spec.name).await?.is_none()
        {
            let tags =
                crate::topic_placement::balanced_tags(self, &spec.name, spec.partitions).await?;
            once.push(("placement", Placement::Balanced.as_str().to_string()));
            once.push(("tags", tags.stored()));
        }
        let created = match self
            .store()
            .create_topic(&spec.name, &spec.fields(), &once)
            .await?
        {
            TopicCreate::New => Created::New,
            TopicCreate::Existing => Created::Existing,
            TopicCreate::Conflict(diffs) => {
                let differences = diffs
                    .iter()
                    .map(|(f, have, want)| {
                        if f == "schema" {
                            format!(
                                "schema: existing {}, requested {}",
                                SchemaPolicy::from_stored(Some(have)),
                                SchemaPolicy::from_stored(Some(want))
                            )
                        } else if f == "retention_ms" {
                            format!(
                                "retention: existing {}, requested {}",
                                show_ms(have),
                                show_ms(want)
                            )
                        } else {
                            format!("{f}: existing {}, requested {}", show(have), show(want))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(Error::TopicConflict {
                    name: spec.name.clone(),
                    differences,
                });
            }
        };
        self.store().register_topic(&spec.name).await?;
        // Read back: the tags are the first creator's, maybe not ours.
        self.forget(&spec.name);
        self.topic_cached(&spec.name).await?;
        Ok(created)
    }

    fn cache_topic(&self, spec: TopicSpec) -> Arc<TopicSpec> {
        self.keys().remember(&spec.name, spec.tags.clone());
        let spec = Arc::new(spec);
        if let Ok(mut cache) = self.specs.lock() {
            cache.insert(spec.name.clone(), spec.clone());
        }
        spec
    }

    /// Drops a topic's cached settings: the next use reads them again.
    pub(crate) fn forget(&self, name: &str) {
        if let Ok(mut cache) = self.specs.lock() {
            cache.remove(name);
        }
    }

    /// A topic's settings, or [`Error::TopicNotFound`].
    pub(crate) async fn topic(&self, name: &str) -> Result<TopicSpec> {
        Ok((*self.topic_cached(name).await?).clone())
    }

    /// Settings from the cache, fetched on first use.
    pub(crate) async fn topic_cached(&self, name: &str) -> Result<Arc<TopicSpec>> {
        if let Some(spec) = self.specs.lock().ok().and_then(|c| c.get(name).cloned()) {
            return Ok(spec);
        }
        // The dead-letter view `T.dlq`: T's partitions, one lane.
        if let Some(base) = name.strip_suffix(".dlq") {
            if base.ends_with(".dlq") {
                return Err(Error::InvalidName {
                    what: "topic",
                    name: name.to_string(),
                    reason: "a dead-letter view has no dead-letter view of its own",
                });
            }
            let base = Box::pin(self.topic_cached(base)).await?;
            let view = TopicSpec {
                name: name.to_string(),
                partitions: base.partitions,
                lanes: 1,
                retention: base.retention,
                max_len: None,
                schema: SchemaPolicy::Optional,
                placement: base.placement,
                tags: base.tags.clone(),
            };
            return Ok(Arc::new(view));
        }
        validate_topic(name)?;
        let Some(fields) = self.store().topic_meta(name).await? else {
            return Err(Error::TopicNotFound(name.to_string()));
        };
        Ok(self.cache_topic(TopicSpec::from_fields(name, &fields)?))
    }

    /// Names of all topics, sorted.
    pub(crate) async fn list_topics(&self) -> Result<Vec<String>> {
        let mut names = self.store().topic_names().await?;
        names.sort();
        Ok(names)
    }

    /// Settings and lengths of a topic.
    pub(crate) async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        // Always read fresh settings: describe is how an operator checks them.
        self.forget(name);
        let spec = self.topic_cached(name).await?;
        let store = self.store();
        let mut partition_lengths = Vec::with_capacity(spec.partitions as usize);
        let (mut delayed, mut dlq_length) = (0, 0);
        for part in store.topic_lengths(spec.layout()).await? {
            partition_lengths.push(part.lanes.iter().sum());
            delayed += part.delayed;
            dlq_length += part.dead_letters;
        }
        let mut groups = store.group_names(name).await?;
        groups.sort();
        Ok(TopicInfo {
            name: spec.name.clone(),
            partitions: spec.partitions,
            lanes: spec.lanes,
            retention_ms: spec.retention.as_millis() as u64,
            max_len: spec.max_len,
            schema: spec.schema,
            length: partition_lengths.iter().sum(),
            partition_lengths,
            delayed,
            groups,
            dlq_length,
        })
    }

    /// Where a topic's partitions live, each primary's share, and the slot
    /// moves that would even the topic again (see
    /// [`TopicPlacement`](crate::TopicPlacement)). Reads fresh settings.
    pub(crate) async fn topic_placement(
        &self,
        name: &str,
    ) -> Result<crate::topic_placement::TopicPlacement> {
        self.forget(name);
        let spec = self.topic_cached(name).await?;
        crate::topic_placement::report(self, spec.layout(), &spec.tags).await
    }

    /// Deletes a topic and every key of it: streams, delayed, dead letters,
    /// group state. Dedup markers are left to expire with their TTL.
    /// Returns false if there was no such topic; refuses a name that is not
    /// a topic's (a dead-letter view `T.dlq` included) before touching Redis.
    pub(crate) async fn delete_topic(&self, name: &str) -> Result<bool> {
        // Not through the dead-letter view: `T.dlq` would resolve to T's
        // dead-letter streams and delete them (that is purge_dead_letters).
        validate_topic(name)?;
        self.forget(name);
        let spec = match self.topic_cached(name).await {
            Ok(s) => s,
            Err(Error::TopicNotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let store = self.store();
        let groups = store.group_names(name).await?;
        store.delete_topic_keys(spec.layout(), &groups).await?;
        self.forget(name);
        Ok(true)
    }
}

fn show_ms(v: &str) -> String {
    match v.parse::<u64>() {
        Ok(ms) => crate::duration::format_duration(Duration::from_millis(ms)),
        Err(_) => show(v).to_string(),
    }
}

fn show(v: &str) -> &str {
    if v.is_empty() { "none" } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_validation() {
        assert!(TopicSpec::new("ok.topic", 0).is_err());
        assert!(TopicSpec::new("ok.topic", 1025).is_err());
        assert!(TopicSpec::new("Bad", 1).is_err());
        let s = TopicSpec::new("ok.topic", 4).unwrap().lanes(0);
        assert!(s.validate().is_err());
        let s = TopicSpec::new("ok.topic", 4).unwrap().lanes(17);
        assert!(s.validate().is_err());
    }

    #[test]
    fn settings_round_trip_through_meta_fields() {
        let s = TopicSpec::new("a.b", 12)
            .unwrap()
            .lanes(3)
            .retention(Duration::from_secs(60))
            .max_len(1000)
            .schema(SchemaPolicy::Required)
            .placement(Placement::Hash);
        let fields: Vec<(String, String)> = s
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(TopicSpec::from_fields("a.b", &fields).unwrap(), s);
    }
}
