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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use crate::compat::{self, CompatMode, Incompatibility};

use crate::error::{Error, Result};
use crate::store::schemas::{Registered, StoredSubject};
use crate::topic::Catalog;

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
    let errors: Vec<String> = validator
        .iter_errors(payload)
        .map(|e| format!("{}: {e}", place(e.instance_path().as_str())))
        .collect();
    if errors.is_empty() {
        Ok(version)
    } else {
        Err(Error::SchemaViolation {
            topic: topic.to_string(),
            version,
            errors,
        })
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

fn mode_of(subject: &StoredSubject) -> CompatMode {
    subject
        .mode
        .as_deref()
        .and_then(CompatMode::parse)
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
    topic: &str,
    document: &Value,
) -> Result<SchemaVersion> {
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

/// Sets the compatibility mode of `topic`'s subject; later registrations
/// are checked with it (registered versions stay as they are).
pub(crate) async fn set_mode(cat: &Catalog, topic: &str, mode: CompatMode) -> Result<()> {
    cat.topic_cached(topic).await?;
    cat.store().set_schema_mode(topic, mode.as_str()).await
}
