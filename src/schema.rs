//! The schema registry: one subject per topic (the topic's name), holding
//! versions 1, 2, 3 ... of a JSON Schema document (draft 2020-12), each
//! immutable once registered, and the subject's compatibility mode.
//!
//! A document is checked as a JSON Schema before anything else (every
//! error, with the JSON pointer of its place), then against the earlier
//! versions as the mode says ([`crate::compat`], pure), then stored by
//! `lua/schema_register.lua` only if no other version was registered in
//! between (else read and check again): so versions are consecutive, never
//! doubled, and each was checked against its real predecessors.
//!
//! Enforcement: a producer checks a publish against the topic's latest
//! version when the topic's [`SchemaPolicy`] is required, or against the
//! version the publish pins, and stamps the version it matched as the
//! header [`HEADER_SCHEMA_VERSION`]. What it checks against comes from a
//! [`Gate`]: the topic's policy and a version's compiled validator, read in
//! one script call and trusted for [`GATE_REFRESH`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::compat::{self, CompatMode, Incompatibility};

use crate::envelope::{self, Headers};
use crate::error::{Error, Result};
use crate::store::schemas::{Registered, StoredSubject};
use crate::topic::{Catalog, SchemaPolicy};

/// The header a producer puts on a message it checked against a schema
/// version: the version's number. Set only by the producer: one a caller
/// passes in is dropped.
pub const HEADER_SCHEMA_VERSION: &str = "schema-version";

/// How long a producer trusts what it read of a topic's schema policy and
/// latest version before reading them again: a newly registered version,
/// or a policy changed by another process, applies to its publishes within
/// this time.
pub const GATE_REFRESH: Duration = Duration::from_secs(1);

/// Most rounds a registration takes when other registrations keep coming
/// in between its check and its write (each round, one of them succeeds).
const MAX_ROUNDS: usize = 1000;

/// One registered version of a topic's schema.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SchemaVersion {
    /// The topic (the subject).
    pub topic: String,
    /// The version: 1, 2, 3 ...
    pub version: u32,
    /// The JSON Schema document.
    pub schema: Value,
}

/// Checks that `document` is a JSON Schema (draft 2020-12) millrace can
/// use: valid against the meta-schema, and compiling (a `$ref` must point
/// into the same document). Every problem is reported, each with the JSON
/// pointer of its place in the document.
pub(crate) fn check_document(document: &Value) -> Result<()> {
    let meta = jsonschema::draft202012::meta::validator();
    let mut errors: Vec<String> = meta
        .iter_errors(document)
        .map(|e| format!("{}: {e}", place(e.instance_path().as_str())))
        .collect();
    if errors.is_empty()
        && let Err(e) = jsonschema::draft202012::options().build(document)
    {
        errors.push(format!("{}: {e}", place(e.instance_path().as_str())));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::SchemaInvalid { errors })
    }
}

/// What changed from `old` to `new` that breaks readers, as `mode` checks
/// it: every reason, with the JSON pointer of its place. Pure: no Redis, so
/// a build can check a schema change before it ships.
///
/// ```
/// use millrace::{CompatMode, schema_changes};
/// use serde_json::json;
///
/// let old = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
/// let new = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
/// assert!(schema_changes(CompatMode::Full, &old, &new).is_empty());
/// ```
pub fn schema_changes(mode: CompatMode, old: &Value, new: &Value) -> Vec<Incompatibility> {
    compat::check(mode, &[(0, old)], new)
        .into_iter()
        .map(|mut r| {
            r.version = None;
            r
        })
        .collect()
}

/// The JSON Schema of a Rust type, as `schemars` derives it (feature
/// `schemars`): what [`Client::register_schema_for`](crate::Client::register_schema_for)
/// registers. serde's attributes shape it: `Option<T>` and
/// `#[serde(default)]` fields are not required, `#[serde(rename)]` renames
/// the property, and only `#[serde(deny_unknown_fields)]` closes the
/// content model (`"additionalProperties": false`), which is what lets a
/// new optional field stay backward compatible (see docs/schemas.md).
#[cfg(feature = "schemars")]
pub fn schema_of<T: schemars::JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}

/// Compiled validators by document text: a version never changes, so a
/// document compiles once per process, whatever topic or client asks.
type Validators = Mutex<HashMap<String, Arc<jsonschema::Validator>>>;

fn validators() -> &'static Validators {
    static CACHE: OnceLock<Validators> = OnceLock::new();
    CACHE.get_or_init(Validators::default)
}

/// The compiled validator of a stored document.
fn validator_for(topic: &str, version: u32, text: &str) -> Result<Arc<jsonschema::Validator>> {
    let mut cache = validators().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = cache.get(text) {
        return Ok(v.clone());
    }
    let document = stored_version(topic, version, text)?.schema;
    let compiled = jsonschema::draft202012::options()
        .build(&document)
        .map_err(|e| Error::Decode(format!("schema {topic} version {version}: {e}")))?;
    let compiled = Arc::new(compiled);
    cache.insert(text.to_string(), compiled.clone());
    Ok(compiled)
}

/// Checks `payload` against version `version` of `topic`'s schema (the
/// latest when `None`); returns the version it matches.
pub(crate) async fn validate(
    cat: &Catalog,
    topic: &str,
    payload: &Value,
    version: Option<u32>,
) -> Result<u32> {
    cat.topic_cached(topic).await?;
    let Some((version, text)) = cat.store().schema_document(topic, version).await? else {
        return Err(Error::SchemaNotFound {
            topic: topic.to_string(),
            version,
        });
    };
    let validator = validator_for(topic, version, &text)?;
    check_value(topic, version, &validator, payload)?;
    Ok(version)
}

/// Checks a decoded payload against a compiled version: every failing
/// place when it does not match.
fn check_value(
    topic: &str,
    version: u32,
    validator: &jsonschema::Validator,
    payload: &Value,
) -> Result<()> {
    if validator.is_valid(payload) {
        return Ok(());
    }
    let errors: Vec<String> = validator
        .iter_errors(payload)
        .map(|e| format!("{}: {e}", place(e.instance_path().as_str())))
        .collect();
    Err(Error::SchemaViolation {
        topic: topic.to_string(),
        version,
        errors,
    })
}

/// Checks payload bytes (one MessagePack value, as typed events and the
/// CLI write them) against a compiled version.
fn check_payload(
    topic: &str,
    version: u32,
    validator: &jsonschema::Validator,
    payload: &[u8],
) -> Result<()> {
    let value: Value = envelope::decode(payload).map_err(|e| Error::SchemaViolation {
        topic: topic.to_string(),
        version,
        errors: vec![format!(
            "/: the payload is not one MessagePack value a schema can check ({e})"
        )],
    })?;
    check_value(topic, version, validator, &value)
}

/// Drops a `schema-version` header the caller set: only the producer
/// stamps it, after checking.
pub(crate) fn drop_stamp(headers: &mut Headers) {
    if !headers.is_empty() {
        headers.remove(HEADER_SCHEMA_VERSION);
    }
}

/// What was read of a topic's schema at one time: its policy and one
/// version's compiled validator (the latest, or a pinned one).
pub(crate) struct Seen {
    at: Instant,
    policy: SchemaPolicy,
    schema: Option<(u32, Arc<jsonschema::Validator>)>,
}

impl Seen {
    /// The version read, if there is one.
    pub(crate) fn latest(&self) -> Option<u32> {
        self.schema.as_ref().map(|(v, _)| *v)
    }

    /// Checks a publish to `topic` as this reading says, and stamps the
    /// version it matched: against the version read when the publish pins
    /// it (`pinned`) or the topic requires schemas; not at all otherwise.
    /// A [`HEADER_SCHEMA_VERSION`] the caller set is dropped either way.
    pub(crate) fn stamp(
        &self,
        topic: &str,
        pinned: Option<u32>,
        payload: &[u8],
        headers: &mut Headers,
    ) -> Result<()> {
        drop_stamp(headers);
        if pinned.is_none() && self.policy == SchemaPolicy::Optional {
            return Ok(());
        }
        let Some((version, validator)) = &self.schema else {
            return Err(Error::SchemaNotFound {
                topic: topic.to_string(),
                version: pinned,
            });
        };
        check_payload(topic, *version, validator, payload)?;
        headers.insert(HEADER_SCHEMA_VERSION.to_string(), version.to_string());
        Ok(())
    }
}

/// One (topic, version) of a [`Gate`]: the last reading, and a lock so one
/// task reads again when it is stale while the others wait for it.
#[derive(Default)]
struct Slot {
    seen: Mutex<Option<Arc<Seen>>>,
    /// Until when ([`mono_ms`]) the topic is known not to require schemas,
    /// so a publish that pins no version needs nothing more from the gate
    /// (the hot path of every topic without schemas); 0 when not known.
    optional_until: AtomicU64,
    refresh: tokio::sync::Mutex<()>,
}

/// Milliseconds on a monotonic clock (since its first use in the process).
fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Slot {
    fn fresh(&self) -> Option<Arc<Seen>> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.as_ref()
            .filter(|s| s.at.elapsed() < GATE_REFRESH)
            .cloned()
    }
}

/// A topic's slots, by version asked for (`None`: the latest).
type TopicSlots = HashMap<Option<u32>, Arc<Slot>, foldhash::fast::RandomState>;

/// What publishes are checked against, per topic and version asked for
/// (`None`: the latest), each read at most once per [`GATE_REFRESH`].
/// Shared by a client's producers and validating workers.
#[derive(Default)]
pub(crate) struct Gate {
    slots: RwLock<HashMap<String, TopicSlots, foldhash::fast::RandomState>>,
}

impl Gate {
    /// Whether `topic` was read lately as not requiring schemas: then a
    /// publish that pins no version is not checked, and the gate is not
    /// asked for more. Takes no lock but a shared one, clones nothing.
    pub(crate) fn lets_through(&self, topic: &str) -> bool {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .get(topic)
            .and_then(|t| t.get(&None))
            .is_some_and(|s| mono_ms() < s.optional_until.load(Ordering::Relaxed))
    }

    /// The reading for `topic` and `version`, fresh within [`GATE_REFRESH`].
    pub(crate) async fn seen(
        &self,
        cat: &Catalog,
        topic: &str,
        version: Option<u32>,
    ) -> Result<Arc<Seen>> {
        let known = {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            slots.get(topic).and_then(|t| t.get(&version)).cloned()
        };
        let slot = match known {
            Some(slot) => slot,
            None => {
                let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
                let versions = match slots.get_mut(topic) {
                    Some(v) => v,
                    None => slots.entry(topic.to_string()).or_default(),
                };
                versions.entry(version).or_default().clone()
            }
        };
        if let Some(seen) = slot.fresh() {
            return Ok(seen);
        }
        let _reading = slot.refresh.lock().await;
        if let Some(seen) = slot.fresh() {
            return Ok(seen);
        }
        let Some(read) = cat.store().schema_gate(topic, version).await? else {
            return Err(Error::TopicNotFound(topic.to_string()));
        };
        let schema = match read.document {
            Some((v, text)) => Some((v, validator_for(topic, v, &text)?)),
            None => None,
        };
        let policy = SchemaPolicy::from_stored(Some(&read.policy));
        let seen = Arc::new(Seen {
            at: Instant::now(),
            policy,
            schema,
        });
        *slot.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen.clone());
        let optional_until = match policy {
            SchemaPolicy::Optional => mono_ms() + GATE_REFRESH.as_millis() as u64,
            SchemaPolicy::Required => 0,
        };
        slot.optional_until.store(optional_until, Ordering::Relaxed);
        Ok(seen)
    }

    /// Forgets what was read of `topic`: the next publish reads again (this
    /// process's own registrations and policy changes apply at once).
    pub(crate) fn forget(&self, topic: &str) {
        self.slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic);
    }
}

/// Checks a received message against the schema version its producer
/// stamped (the latest when it carries none), for a worker that validates
/// on receipt; returns the version. The dead-letter view `T.dlq` is checked
/// against `T`'s schema.
pub(crate) async fn check_received(
    cat: &Catalog,
    gate: &Gate,
    topic: &str,
    payload: &[u8],
    headers: &Headers,
) -> Result<u32> {
    let topic = topic.strip_suffix(".dlq").unwrap_or(topic);
    let version = match headers.get(HEADER_SCHEMA_VERSION) {
        None => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| Error::SchemaViolation {
            topic: topic.to_string(),
            version: 0,
            errors: vec![format!(
                "/: the {HEADER_SCHEMA_VERSION} header {v:?} is not a version"
            )],
        })?),
    };
    let seen = gate.seen(cat, topic, version).await?;
    let Some((version, validator)) = &seen.schema else {
        return Err(Error::SchemaNotFound {
            topic: topic.to_string(),
            version,
        });
    };
    check_payload(topic, *version, validator, payload)?;
    Ok(*version)
}

/// Sets whether `topic`'s publishes must match its schema.
pub(crate) async fn set_policy(
    cat: &Catalog,
    gate: &Gate,
    topic: &str,
    policy: SchemaPolicy,
) -> Result<()> {
    crate::store::keys::validate_topic(topic)?;
    let found = cat
        .store()
        .set_schema_policy(topic, policy.stored())
        .await?;
    cat.forget(topic);
    gate.forget(topic);
    if found {
        Ok(())
    } else {
        Err(Error::TopicNotFound(topic.to_string()))
    }
}

/// A JSON pointer as shown: the root is `/`.
fn place(pointer: &str) -> &str {
    if pointer.is_empty() { "/" } else { pointer }
}

/// The text a document is stored and compared as: keys sorted, no spaces.
fn canonical(document: &Value) -> Result<String> {
    serde_json::to_string(document).map_err(|e| Error::Encode(e.to_string()))
}

/// The versions of a stored subject, parsed, oldest first.
fn parsed(topic: &str, subject: &StoredSubject) -> Result<Vec<SchemaVersion>> {
    subject
        .versions
        .iter()
        .map(|(v, text)| stored_version(topic, *v, text))
        .collect()
}

/// A version as stored (canonical JSON text), parsed.
fn stored_version(topic: &str, version: u32, text: &str) -> Result<SchemaVersion> {
    let schema = serde_json::from_str(text)
        .map_err(|e| Error::Decode(format!("schema {topic} version {version}: {e}")))?;
    Ok(SchemaVersion {
        topic: topic.to_string(),
        version,
        schema,
    })
}

/// The subject's own mode, else the default mode, else BACKWARD.
fn mode_of(subject: &StoredSubject) -> CompatMode {
    subject
        .mode
        .as_deref()
        .and_then(CompatMode::parse)
        .or_else(|| subject.default_mode.as_deref().and_then(CompatMode::parse))
        .unwrap_or_default()
}

/// What registering or checking `document` against the subject as read
/// finds: the version it already is, or the reasons it is not compatible.
fn judge(
    topic: &str,
    subject: &StoredSubject,
    text: &str,
    document: &Value,
) -> Result<Result<Option<u32>, Vec<Incompatibility>>> {
    if let Some((v, _)) = subject.versions.iter().find(|(_, t)| *t == text) {
        return Ok(Ok(Some(*v)));
    }
    let earlier = parsed(topic, subject)?;
    let pairs: Vec<(u32, &Value)> = earlier.iter().map(|s| (s.version, &s.schema)).collect();
    let reasons = compat::check(mode_of(subject), &pairs, document);
    Ok(if reasons.is_empty() {
        Ok(None)
    } else {
        Err(reasons)
    })
}

/// Registers `document` as the next version of `topic`'s subject (or
/// returns the version it already is).
pub(crate) async fn register(
    cat: &Catalog,
    gate: &Gate,
    topic: &str,
    document: &Value,
) -> Result<SchemaVersion> {
    let registered = register_version(cat, topic, document).await;
    gate.forget(topic);
    registered
}

async fn register_version(cat: &Catalog, topic: &str, document: &Value) -> Result<SchemaVersion> {
    cat.topic_cached(topic).await?;
    check_document(document)?;
    let text = canonical(document)?;
    let store = cat.store();
    for _ in 0..MAX_ROUNDS {
        let subject = store.schema_subject(topic).await?;
        let version = match judge(topic, &subject, &text, document)? {
            Ok(Some(v)) => v,
            Ok(None) => match store.register_schema(topic, subject.latest, &text).await? {
                Registered::New(v) | Registered::Existing(v) => v,
                Registered::Moved(_) => continue,
            },
            Err(reasons) => {
                return Err(Error::SchemaIncompatible {
                    topic: topic.to_string(),
                    mode: mode_of(&subject),
                    reasons,
                });
            }
        };
        return Ok(SchemaVersion {
            topic: topic.to_string(),
            version,
            schema: document.clone(),
        });
    }
    Err(Error::SchemaBusy(topic.to_string()))
}

/// The reasons `document` could not be registered now (none when it could,
/// or is registered already); writes nothing.
pub(crate) async fn check(
    cat: &Catalog,
    topic: &str,
    document: &Value,
) -> Result<Vec<Incompatibility>> {
    cat.topic_cached(topic).await?;
    check_document(document)?;
    let text = canonical(document)?;
    let subject = cat.store().schema_subject(topic).await?;
    Ok(judge(topic, &subject, &text, document)?
        .err()
        .unwrap_or_default())
}

/// Every version of `topic`'s subject, oldest first.
pub(crate) async fn versions(cat: &Catalog, topic: &str) -> Result<Vec<SchemaVersion>> {
    cat.topic_cached(topic).await?;
    let subject = cat.store().schema_subject(topic).await?;
    parsed(topic, &subject)
}

/// One version of `topic`'s subject (the latest when `version` is `None`);
/// `None` when there is no such version.
pub(crate) async fn version(
    cat: &Catalog,
    topic: &str,
    version: Option<u32>,
) -> Result<Option<SchemaVersion>> {
    cat.topic_cached(topic).await?;
    let Some((version, text)) = cat.store().schema_document(topic, version).await? else {
        return Ok(None);
    };
    stored_version(topic, version, &text).map(Some)
}

/// The compatibility mode of `topic`'s subject (BACKWARD unless set).
pub(crate) async fn mode(cat: &Catalog, topic: &str) -> Result<CompatMode> {
    cat.topic_cached(topic).await?;
    Ok(mode_of(&cat.store().schema_subject(topic).await?))
}

/// The compatibility mode of subjects that have none of their own
/// (BACKWARD unless set).
pub(crate) async fn default_mode(cat: &Catalog) -> Result<CompatMode> {
    Ok(cat
        .store()
        .default_schema_mode()
        .await?
        .as_deref()
        .and_then(CompatMode::parse)
        .unwrap_or_default())
}

/// Sets the compatibility mode of subjects that have none of their own.
pub(crate) async fn set_default_mode(cat: &Catalog, mode: CompatMode) -> Result<()> {
    cat.store().set_default_schema_mode(mode.as_str()).await
}

/// Sets the compatibility mode of `topic`'s subject; later registrations
/// are checked with it (registered versions stay as they are).
pub(crate) async fn set_mode(cat: &Catalog, topic: &str, mode: CompatMode) -> Result<()> {
    cat.topic_cached(topic).await?;
    cat.store().set_schema_mode(topic, mode.as_str()).await
}

/// Drops the compatibility mode of `topic`'s own subject: it follows the
/// default mode again.
pub(crate) async fn clear_mode(cat: &Catalog, topic: &str) -> Result<()> {
    cat.topic_cached(topic).await?;
    cat.store().clear_schema_mode(topic).await
}
