//! Compatibility of JSON Schemas (draft 2020-12) between versions of a
//! subject, as Confluent Schema Registry judges it for JSON Schema.
//!
//! Pure: no I/O. One question is answered everywhere: can a reader holding
//! schema R accept every value valid under the writer's schema W? BACKWARD
//! asks it with R = new, W = old (consumers upgrade first), FORWARD with
//! R = old, W = new (producers upgrade first). Both schemas are walked
//! together and every finding is kept, each with a JSON pointer and a reason
//! that names the change old -> new, so a change reads the same in both
//! directions; only the verdict (and who breaks) differs.
//!
//! The check is conservative: where it cannot tell (a constraint it does not
//! reason about, a `$ref` outside the document), it reports.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};

/// Compatibility mode of a subject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CompatMode {
    /// No check: any schema may follow any other.
    None,
    /// The new schema reads data written with the latest earlier version.
    #[default]
    Backward,
    /// The new schema reads data written with every earlier version.
    BackwardTransitive,
    /// The latest earlier version reads data written with the new schema.
    Forward,
    /// Every earlier version reads data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest earlier version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
}

impl CompatMode {
    /// Every mode, in the order of the docs.
    pub const ALL: [CompatMode; 7] = [
        CompatMode::None,
        CompatMode::Backward,
        CompatMode::BackwardTransitive,
        CompatMode::Forward,
        CompatMode::ForwardTransitive,
        CompatMode::Full,
        CompatMode::FullTransitive,
    ];

    /// The mode's name as Confluent spells it: `NONE`, `BACKWARD`,
    /// `BACKWARD_TRANSITIVE`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            CompatMode::None => "NONE",
            CompatMode::Backward => "BACKWARD",
            CompatMode::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatMode::Forward => "FORWARD",
            CompatMode::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatMode::Full => "FULL",
            CompatMode::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Reads a mode's name, in any case, with `-` or `_` between words.
    pub fn parse(s: &str) -> Option<CompatMode> {
        let name = s.trim().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(&name))
    }

    /// What the mode checks: (backward, forward, against every version).
    fn plan(self) -> (bool, bool, bool) {
        match self {
            CompatMode::None => (false, false, false),
            CompatMode::Backward => (true, false, false),
            CompatMode::BackwardTransitive => (true, false, true),
            CompatMode::Forward => (false, true, false),
            CompatMode::ForwardTransitive => (false, true, true),
            CompatMode::Full => (true, true, false),
            CompatMode::FullTransitive => (true, true, true),
        }
    }
}

impl fmt::Display for CompatMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One place where a change breaks a reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incompatibility {
    /// Which earlier version it is checked against (None when not applicable).
    pub version: Option<u32>,
    /// JSON pointer into the NEW schema (or the old one when the place only
    /// exists there), e.g. "/properties/total/type".
    pub pointer: String,
    /// Why, in words naming old -> new, e.g. "integer -> string changes the
    /// type; new readers reject old data".
    pub reason: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v) = self.version {
            write!(f, "version {v}: ")?;
        }
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.reason)
    }
}

/// Whether readers on `new` can read data written with `old` (the BACKWARD
/// direction: consumers upgrade first). Empty when they can.
pub fn backward(old: &Value, new: &Value) -> Vec<Incompatibility> {
    run(Dir::Backward, new, old)
}

/// Whether readers on `old` can read data written with `new` (the FORWARD
/// direction: producers upgrade first). Empty when they can.
pub fn forward(old: &Value, new: &Value) -> Vec<Incompatibility> {
    run(Dir::Forward, old, new)
}

/// Checks `new` against the earlier versions `earlier` (oldest first,
/// (version number, schema)) as `mode` says: NONE nothing;
/// BACKWARD/FORWARD/FULL against the latest only; *_TRANSITIVE against every
/// one; FULL = both directions. Every finding, not just the first, each with
/// its version set; per version, backward findings come before forward ones.
pub fn check(mode: CompatMode, earlier: &[(u32, &Value)], new: &Value) -> Vec<Incompatibility> {
    let (back, fwd, transitive) = mode.plan();
    let against = if transitive {
        earlier
    } else {
        earlier.last().map_or(&[][..], std::slice::from_ref)
    };
    let mut out = Vec::new();
    for &(version, old) in against {
        let mut found = Vec::new();
        if back {
            found.extend(backward(old, new));
        }
        if fwd {
            found.extend(forward(old, new));
        }
        out.extend(found.into_iter().map(|f| Incompatibility {
            version: Some(version),
            ..f
        }));
    }
    out
}

/// Runs one direction: can `reader` accept everything `writer` allows?
fn run(dir: Dir, reader: &Value, writer: &Value) -> Vec<Incompatibility> {
    let mut walk = Walk::new(dir, reader, writer, Vec::new());
    walk.walk(&At::root(reader), &At::root(writer));
    dedup(walk.out)
}

/// Drops repeated findings (a writer's branches can meet the same reader
/// place more than once), keeping the first of each.
fn dedup(found: Vec<Incompatibility>) -> Vec<Incompatibility> {
    let mut seen = HashSet::new();
    found
        .into_iter()
        .filter(|f| seen.insert((f.pointer.clone(), f.reason.clone())))
        .collect()
}

/// Which way a walk goes, fixing which side is old and which is new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// Reader = new, writer = old.
    Backward,
    /// Reader = old, writer = new.
    Forward,
}

impl Dir {
    /// Who breaks when the reader refuses the writer's data.
    fn who(self) -> &'static str {
        match self {
            Dir::Backward => "new readers reject old data",
            Dir::Forward => "old readers reject new data",
        }
    }

    /// The verb for a reader stricter than the writer, said old -> new: the
    /// new schema is stricter going backward, looser going forward;
    /// `changed` when the writer is not stricter either (`reverse_ok` false).
    fn verb(
        self,
        reverse_ok: bool,
        stricter: &'static str,
        looser: &'static str,
        changed: &'static str,
    ) -> &'static str {
        match (reverse_ok, self) {
            (false, _) => changed,
            (true, Dir::Backward) => stricter,
            (true, Dir::Forward) => looser,
        }
    }

    /// Picks the words for the backward or the forward case.
    fn pick(self, backward: &'static str, forward: &'static str) -> &'static str {
        match self {
            Dir::Backward => backward,
            Dir::Forward => forward,
        }
    }
}

/// `true` as a schema: what a missing subschema means.
static TRUE: Value = Value::Bool(true);

/// Every JSON type a schema without `type` allows (`integer` is in `number`).
const ALL_TYPES: [&str; 6] = ["null", "boolean", "object", "array", "number", "string"];

/// Keywords that never constrain a value (annotations and containers).
const ANNOTATIONS: [&str; 17] = [
    "title",
    "description",
    "examples",
    "$comment",
    "default",
    "$schema",
    "$id",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
    "$anchor",
    "$dynamicAnchor",
    "$vocabulary",
    "contentMediaType",
    "contentEncoding",
];

/// A subschema and where it sits.
#[derive(Clone, Debug)]
struct At<'v> {
    /// The subschema (`true` where the place does not exist).
    v: Cow<'v, Value>,
    /// JSON pointer to it in its own document.
    ptr: String,
    /// Whether the place exists in the document.
    real: bool,
    /// Whether it is one branch of a writer's `oneOf`/`anyOf` (merged with
    /// the keywords around it).
    unit: bool,
}

impl<'v> At<'v> {
    /// A document's root.
    fn root(v: &'v Value) -> Self {
        At {
            v: Cow::Borrowed(v),
            ptr: String::new(),
            real: true,
            unit: false,
        }
    }

    /// The value of a keyword.
    fn get(&self, kw: &str) -> Option<&Value> {
        self.v.get(kw)
    }

    /// Whether the keyword is there.
    fn has(&self, kw: &str) -> bool {
        self.get(kw).is_some()
    }

    /// Whether this is the schema `false`.
    fn is_false(&self) -> bool {
        matches!(*self.v, Value::Bool(false))
    }

    /// The subschema under a path of keywords and names (`true` when absent).
    fn at(&self, path: &[&str]) -> At<'_> {
        let mut v = Some(&*self.v);
        let mut ptr = self.ptr.clone();
        for token in path {
            v = v.and_then(|v| v.get(*token));
            ptr = pointer_push(&ptr, token);
        }
        At {
            real: self.real && v.is_some(),
            v: Cow::Borrowed(v.unwrap_or(&TRUE)),
            ptr,
            unit: false,
        }
    }

    /// Branch `i` of `oneOf`/`anyOf` alone.
    fn branch(&self, kw: &str, i: usize) -> At<'_> {
        let v = self.get(kw).and_then(|b| b.get(i));
        At {
            real: self.real && v.is_some(),
            v: Cow::Borrowed(v.unwrap_or(&TRUE)),
            ptr: pointer_push(&pointer_push(&self.ptr, kw), &i.to_string()),
            unit: false,
        }
    }

    /// Branch `i` of the writer's `oneOf`/`anyOf` with the keywords around
    /// it added where the branch lacks them: a writer's value satisfies both.
    fn unit(&self, kw: &str, i: usize) -> At<'_> {
        let branch = self.branch(kw, i);
        let base: Map<String, Value> = self
            .v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != kw && !ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let v = match (&*branch.v, base.is_empty()) {
            (_, true) | (Value::Bool(false), _) => branch.v,
            (Value::Bool(true), false) => Cow::Owned(Value::Object(base)),
            (Value::Object(m), false) => {
                let mut m = m.clone();
                for (k, v) in base {
                    m.entry(k).or_insert(v);
                }
                Cow::Owned(Value::Object(m))
            }
            (_, false) => branch.v,
        };
        At {
            v,
            unit: true,
            ..branch
        }
    }
}

/// Appends one token to a JSON pointer, escaping `~` and `/`.
fn pointer_push(ptr: &str, token: &str) -> String {
    format!("{ptr}/{}", token.replace('~', "~0").replace('/', "~1"))
}

/// The target of a `$ref` into the same document (`#`, `#/$defs/x`,
/// `#/definitions/x`, any local JSON pointer), if it has one.
fn resolve<'a>(root: &'a Value, at: &At<'_>) -> Option<At<'a>> {
    let frag = at.get("$ref")?.as_str()?.strip_prefix('#')?;
    let target = root.pointer(frag)?;
    Some(At {
        v: Cow::Borrowed(target),
        ptr: frag.to_string(),
        real: true,
        unit: false,
    })
}

/// Whether a schema value accepts everything: `true`, or an object with
/// nothing but annotations.
fn accepts_all(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(m) => m.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// What a value's JSON type is, for keywords that apply to one type only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Objects.
    Object,
    /// Arrays.
    Array,
    /// Numbers (integers included).
    Number,
    /// Strings.
    String,
}

impl Kind {
    /// The `type` name that allows this kind (`integer` also allows numbers).
    fn type_name(self) -> &'static str {
        match self {
            Kind::Object => "object",
            Kind::Array => "array",
            Kind::Number => "number",
            Kind::String => "string",
        }
    }

    /// The kind a keyword applies to, if it applies to one only.
    fn of_keyword(kw: &str) -> Option<Kind> {
        match kw {
            "pattern" | "format" => Some(Kind::String),
            "multipleOf" | "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                Some(Kind::Number)
            }
            "patternProperties"
            | "propertyNames"
            | "dependentRequired"
            | "dependentSchemas"
            | "dependencies"
            | "unevaluatedProperties"
            | "minProperties"
            | "maxProperties" => Some(Kind::Object),
            "items" | "prefixItems" | "additionalItems" | "uniqueItems" | "contains"
            | "minContains" | "maxContains" | "unevaluatedItems" | "minItems" | "maxItems" => {
                Some(Kind::Array)
            }
            "minLength" | "maxLength" => Some(Kind::String),
            _ => None,
        }
    }
}

/// The kinds both the writer may produce and the reader accepts: only
/// there do the type-specific keywords matter.
#[derive(Clone, Copy, Debug)]
struct Shared {
    /// Per kind, in the order of [`Kind`]: whether both sides allow it.
    kinds: [bool; 4],
}

impl Shared {
    /// Whether both sides allow values of this kind.
    fn has(&self, kind: Kind) -> bool {
        self.kinds[kind as usize]
    }
}

/// The `type` of a schema as a list (None: any type).
fn type_list<'s>(at: &'s At<'_>) -> Option<Vec<&'s str>> {
    match at.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// Whether a reader's type list accepts type `t` (`number` takes integers).
fn accepts_type(reader: &[&str], t: &str) -> bool {
    reader.contains(&t) || (t == "integer" && reader.contains(&"number"))
}

/// Whether a reader's types accept every type of a writer's.
fn covers(reader: Option<&[&str]>, writer: Option<&[&str]>) -> bool {
    let Some(reader) = reader else {
        return true;
    };
    writer
        .unwrap_or(&ALL_TYPES)
        .iter()
        .all(|t| accepts_type(reader, t))
}

/// Whether a type list allows some values of a kind.
fn allows_kind(types: Option<&[&str]>, kind: Kind) -> bool {
    types.is_none_or(|ts| {
        ts.contains(&kind.type_name()) || (kind == Kind::Number && ts.contains(&"integer"))
    })
}

/// Words for a type list: "any type", "integer", "string or null".
fn describe_types(types: Option<&[&str]>) -> String {
    types.map_or_else(|| "any type".to_string(), |ts| ts.join(" or "))
}

/// The values a keyword allows: `const` (one) or `enum` (its list).
fn keyword_values<'s>(at: &'s At<'_>, kw: &str) -> Option<Vec<&'s Value>> {
    match (kw, at.get(kw)?) {
        ("const", v) => Some(vec![v]),
        ("enum", Value::Array(vs)) => Some(vs.iter().collect()),
        _ => None,
    }
}

/// The values a schema allows by `const` or else `enum` (None: any).
fn allowed<'s>(at: &'s At<'_>) -> Option<Vec<&'s Value>> {
    keyword_values(at, "const").or_else(|| keyword_values(at, "enum"))
}

/// Whether a list of values holds `v`.
fn holds(values: &[&Value], v: &Value) -> bool {
    values.iter().any(|x| json_eq(x, v))
}

/// Words for a set of allowed values: `["a","b"]` or "(any value)".
fn describe_values(values: Option<&[&Value]>) -> String {
    values.map_or_else(
        || "(any value)".to_string(),
        |vs| {
            let items: Vec<String> = vs.iter().map(|v| v.to_string()).collect();
            format!("[{}]", items.join(","))
        },
    )
}

/// Words for a keyword's value: its JSON, "a schema" for an object, or
/// "(none)" when absent.
fn describe_keyword(at: &At<'_>, kw: &str) -> String {
    match at.get(kw) {
        None => "(none)".to_string(),
        Some(Value::Object(_)) => "a schema".to_string(),
        Some(v) => v.to_string(),
    }
}

/// One side of a range: the keywords that bound it and which side.
struct Bound {
    /// The kind of value bounded.
    kind: Kind,
    /// A lower bound (else an upper one).
    lower: bool,
    /// The keywords, each with whether it is exclusive.
    keywords: &'static [(&'static str, bool)],
}

/// Every numeric, length, item-count and property-count bound.
const BOUNDS: [Bound; 8] = [
    Bound {
        kind: Kind::Number,
        lower: true,
        keywords: &[("minimum", false), ("exclusiveMinimum", true)],
    },
    Bound {
        kind: Kind::Number,
        lower: false,
        keywords: &[("maximum", false), ("exclusiveMaximum", true)],
    },
    Bound {
        kind: Kind::String,
        lower: true,
        keywords: &[("minLength", false)],
    },
    Bound {
        kind: Kind::String,
        lower: false,
        keywords: &[("maxLength", false)],
    },
    Bound {
        kind: Kind::Array,
        lower: true,
        keywords: &[("minItems", false)],
    },
    Bound {
        kind: Kind::Array,
        lower: false,
        keywords: &[("maxItems", false)],
    },
    Bound {
        kind: Kind::Object,
        lower: true,
        keywords: &[("minProperties", false)],
    },
    Bound {
        kind: Kind::Object,
        lower: false,
        keywords: &[("maxProperties", false)],
    },
];

/// Whether a keyword is one of [`BOUNDS`].
fn is_bound(kw: &str) -> bool {
    BOUNDS
        .iter()
        .any(|b| b.keywords.iter().any(|(k, _)| *k == kw))
}

impl Bound {
    /// Whether limit `a` (value, exclusive) is tighter than `b`.
    fn tighter(&self, a: (f64, bool), b: (f64, bool)) -> bool {
        let beyond = if self.lower { a.0 > b.0 } else { a.0 < b.0 };
        beyond || (a.0 == b.0 && a.1 && !b.1)
    }

    /// The tightest limit a schema sets on this side, if any.
    fn tightest(&self, at: &At<'_>) -> Option<(f64, bool)> {
        self.keywords
            .iter()
            .filter_map(|&(kw, excl)| Some((at.get(kw)?.as_f64()?, excl)))
            .reduce(|a, b| if self.tighter(b, a) { b } else { a })
    }

    /// Whether every value within the writer's limit is within the reader's.
    fn within(&self, writer: (f64, bool), reader: (f64, bool)) -> bool {
        !self.tighter(reader, writer)
    }
}

/// The content model of an object schema, from `additionalProperties`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Model {
    /// Absent or true: undeclared properties may carry anything.
    Open,
    /// False: no undeclared properties.
    Closed,
    /// A schema: undeclared properties follow it.
    Partial,
}

impl Model {
    /// The content model of a schema.
    fn of(at: &At<'_>) -> Model {
        match at.get("additionalProperties") {
            Some(Value::Bool(false)) => Model::Closed,
            Some(v) if !accepts_all(v) => Model::Partial,
            _ => Model::Open,
        }
    }
}

/// The names a schema declares under `properties`, in order.
fn property_names<'s>(at: &'s At<'_>) -> Vec<&'s str> {
    at.get("properties")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// The strings of an array keyword such as `required`.
fn strings<'s>(at: &'s At<'_>, kw: &str) -> Vec<&'s str> {
    at.get(kw)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// One walk over a reader's and a writer's schema, collecting findings.
struct Walk<'a> {
    /// Which side is old.
    dir: Dir,
    /// The reader's whole document, for its `$ref`s.
    reader_root: &'a Value,
    /// The writer's whole document, for its `$ref`s.
    writer_root: &'a Value,
    /// (reader pointer, writer pointer) pairs already walked: each is
    /// compared once, which also ends recursion through `$ref`.
    visited: HashSet<(String, String)>,
    /// Pairs being tried as branches further up (a trial of one of them
    /// again is assumed to succeed, so recursive branches end).
    trials: Vec<(String, String)>,
    /// Findings so far.
    out: Vec<Incompatibility>,
}

impl<'a> Walk<'a> {
    /// A walk with nothing found yet.
    fn new(
        dir: Dir,
        reader_root: &'a Value,
        writer_root: &'a Value,
        trials: Vec<(String, String)>,
    ) -> Self {
        Walk {
            dir,
            reader_root,
            writer_root,
            visited: HashSet::new(),
            trials,
            out: Vec::new(),
        }
    }

    /// (old, new) of a (reader, writer) pair.
    fn old_new<'x, 'y>(&self, r: &'x At<'y>, w: &'x At<'y>) -> (&'x At<'y>, &'x At<'y>) {
        match self.dir {
            Dir::Backward => (w, r),
            Dir::Forward => (r, w),
        }
    }

    /// Records a finding at an explicit pointer.
    fn push(&mut self, pointer: String, change: &str) {
        let reason = format!("{change}; {}", self.dir.who());
        self.out.push(Incompatibility {
            version: None,
            pointer,
            reason,
        });
    }

    /// Records a finding about a keyword (or, with None, the node): the
    /// pointer goes into the new schema where the place exists there, else
    /// into the old one.
    fn report(&mut self, r: &At<'_>, w: &At<'_>, kw: Option<&str>, change: &str) {
        let (old, new) = self.old_new(r, w);
        let pointer = match kw {
            Some(kw) => {
                let side = if new.real && new.has(kw) {
                    new
                } else if (old.real && old.has(kw)) || !new.real {
                    old
                } else {
                    new
                };
                pointer_push(&side.ptr, kw)
            }
            None if new.real || !old.real => new.ptr.clone(),
            None => old.ptr.clone(),
        };
        self.push(pointer, change);
    }

    /// Can reader `r` accept every value of writer `w`? Findings go to `out`.
    fn walk(&mut self, r: &At<'_>, w: &At<'_>) {
        if !self.visited.insert((r.ptr.clone(), w.ptr.clone())) {
            return;
        }
        // A writer's $ref siblings are left out: that only widens the
        // writer, so nothing incompatible is missed.
        if let Some(target) = resolve(self.writer_root, w) {
            self.walk(r, &target);
            return;
        }
        if let Some(target) = resolve(self.reader_root, r) {
            self.walk(&target, w);
            // The reader's siblings of $ref apply too (2020-12).
            let siblings =
                r.v.as_object()
                    .into_iter()
                    .flatten()
                    .any(|(k, _)| k.as_str() != "$ref" && !ANNOTATIONS.contains(&k.as_str()));
            if siblings {
                self.compare(r, w);
            }
            return;
        }
        self.compare(r, w);
    }

    /// Compares two resolved schemas keyword by keyword.
    fn compare(&mut self, r: &At<'_>, w: &At<'_>) {
        if w.is_false() {
            return;
        }
        if r.is_false() {
            let change = self.dir.pick(
                "schema became false",
                "schema was false and now accepts values",
            );
            self.report(r, w, None, change);
            return;
        }
        if let Some((kw, n)) = combinator(w) {
            for i in 0..n {
                self.walk(r, &w.unit(kw, i));
            }
            return;
        }
        let shared = self.types(r, w);
        self.values(r, w);
        for bound in &BOUNDS {
            if shared.has(bound.kind) {
                self.bound(r, w, bound);
            }
        }
        if shared.has(Kind::Array) {
            self.items(r, w);
        }
        if shared.has(Kind::Object) {
            self.object(r, w);
        }
        self.reader_branches(r, w);
        self.others(r, w, &shared);
    }

    /// `type`: every type the writer may produce must be one the reader
    /// accepts. Returns the kinds both allow.
    fn types(&mut self, r: &At<'_>, w: &At<'_>) -> Shared {
        let (rt, wt) = (type_list(r), type_list(w));
        if !covers(rt.as_deref(), wt.as_deref()) {
            let reverse_ok = covers(wt.as_deref(), rt.as_deref());
            let verb = self.dir.verb(reverse_ok, "narrows", "widens", "changes");
            let (old, new) = self.old_new(r, w);
            let change = format!(
                "{} -> {} {verb} the type",
                describe_types(type_list(old).as_deref()),
                describe_types(type_list(new).as_deref())
            );
            self.report(r, w, Some("type"), &change);
        }
        let kinds = [Kind::Object, Kind::Array, Kind::Number, Kind::String]
            .map(|k| allows_kind(rt.as_deref(), k) && allows_kind(wt.as_deref(), k));
        Shared { kinds }
    }

    /// `const` and `enum`: the reader must allow every value the writer may
    /// produce (a writer without either may produce any).
    fn values(&mut self, r: &At<'_>, w: &At<'_>) {
        let writer = allowed(w);
        for kw in ["const", "enum"] {
            let Some(reader) = keyword_values(r, kw) else {
                continue;
            };
            let ok = writer
                .as_ref()
                .is_some_and(|ws| ws.iter().all(|v| holds(&reader, v)));
            if ok {
                continue;
            }
            let reverse_ok = writer
                .as_ref()
                .is_none_or(|ws| reader.iter().all(|v| holds(ws, v)));
            let verb = self.dir.verb(reverse_ok, "narrows", "widens", "changes");
            let (old, new) = self.old_new(r, w);
            let change = format!(
                "{kw} {} -> {} {verb} the allowed values",
                describe_values(allowed(old).as_deref()),
                describe_values(allowed(new).as_deref())
            );
            self.report(r, w, Some(kw), &change);
        }
    }

    /// One side of a range: each reader limit must let through everything
    /// within the writer's tightest limit (a writer without one is
    /// unbounded).
    fn bound(&mut self, r: &At<'_>, w: &At<'_>, bound: &Bound) {
        let writer = bound.tightest(w);
        for &(kw, exclusive) in bound.keywords {
            let Some(limit) = r.get(kw).and_then(Value::as_f64) else {
                continue;
            };
            if writer.is_some_and(|wl| bound.within(wl, (limit, exclusive))) {
                continue;
            }
            let verb = self.dir.verb(true, "tightens", "loosens", "changes");
            let (old, new) = self.old_new(r, w);
            let change = format!(
                "{kw} {} -> {} {verb} the bound",
                describe_keyword(old, kw),
                describe_keyword(new, kw)
            );
            self.report(r, w, Some(kw), &change);
        }
    }

    /// `items` as one schema for every item (the array form is left to
    /// [`Walk::others`]).
    fn items(&mut self, r: &At<'_>, w: &At<'_>) {
        let is_schema = |at: &At<'_>| at.get("items").is_some_and(|v| !v.is_array());
        if is_schema(r) && !w.get("items").is_some_and(Value::is_array) {
            self.walk(&r.at(&["items"]), &w.at(&["items"]));
        }
    }

    /// Properties, content models and `required`, Confluent's way.
    fn object(&mut self, r: &At<'_>, w: &At<'_>) {
        let (rm, wm) = (Model::of(r), Model::of(w));
        let (rp, wp) = (property_names(r), property_names(w));
        for name in &rp {
            if wp.contains(name) {
                self.walk(&r.at(&["properties", name]), &w.at(&["properties", name]));
            } else {
                self.reader_only(r, w, name, wm);
            }
        }
        for name in wp.iter().filter(|n| !rp.contains(n)) {
            self.writer_only(r, w, name, rm);
        }
        self.additional(r, w, rm, wm);
        self.required(r, w);
    }

    /// A property the reader declares and the writer does not.
    fn reader_only(&mut self, r: &At<'_>, w: &At<'_>, name: &str, wm: Model) {
        let rp = r.at(&["properties", name]);
        match wm {
            // The writer never carries it; `required` is checked apart.
            Model::Closed => {}
            Model::Open if !accepts_all(&rp.v) => {
                let change = self.dir.pick(
                    "property added to an open content model (old data may already carry it, with any type)",
                    "property removed from an open content model (new data may still carry it, with any type)",
                );
                self.report(&rp, &w.at(&["properties", name]), None, change);
            }
            Model::Open => {}
            Model::Partial => self.walk(&rp, &w.at(&["additionalProperties"])),
        }
    }

    /// A property the writer declares and the reader does not.
    fn writer_only(&mut self, r: &At<'_>, w: &At<'_>, name: &str, rm: Model) {
        let wp = w.at(&["properties", name]);
        if wp.is_false() {
            return;
        }
        match rm {
            Model::Open => {}
            Model::Closed => {
                let change = self.dir.pick(
                    "property removed from a closed content model",
                    "property added to a closed content model",
                );
                self.report(&r.at(&["properties", name]), &wp, None, change);
            }
            Model::Partial => self.walk(&r.at(&["additionalProperties"]), &wp),
        }
    }

    /// Properties neither side declares: allowed by an open or partial
    /// writer, so the reader must take them too.
    fn additional(&mut self, r: &At<'_>, w: &At<'_>, rm: Model, wm: Model) {
        match (rm, wm) {
            (Model::Open, _) | (_, Model::Closed) => {}
            (Model::Closed, _) => {
                let (old, new) = self.old_new(r, w);
                let kw = "additionalProperties";
                let verb = self
                    .dir
                    .pick("closes the content model", "opens the content model");
                let change = format!(
                    "{kw} {} -> {} {verb}",
                    describe_keyword(old, kw),
                    describe_keyword(new, kw)
                );
                self.report(r, w, Some(kw), &change);
            }
            (Model::Partial, _) => self.walk(
                &r.at(&["additionalProperties"]),
                &w.at(&["additionalProperties"]),
            ),
        }
    }

    /// `required`: a name the reader requires and the writer does not is
    /// fine only if the reader's schema for it has a `default`.
    fn required(&mut self, r: &At<'_>, w: &At<'_>) {
        let writer = strings(w, "required");
        for name in strings(r, "required") {
            if writer.contains(&name) || r.at(&["properties", name]).has("default") {
                continue;
            }
            let change = match self.dir {
                Dir::Backward => format!("{name} became required without a default"),
                Dir::Forward => format!(
                    "{name} is no longer required, and the old schema has no default for it"
                ),
            };
            self.report(r, w, Some("required"), &change);
        }
    }

    /// The reader's `oneOf`/`anyOf`: the writer (or each of its branches,
    /// see [`Walk::compare`]) must fit some reader branch.
    fn reader_branches(&mut self, r: &At<'_>, w: &At<'_>) {
        for kw in ["oneOf", "anyOf"] {
            let Some(n) = r.get(kw).and_then(Value::as_array).map(Vec::len) else {
                continue;
            };
            if (0..n).any(|i| self.accepts(&r.branch(kw, i), w)) {
                continue;
            }
            if w.unit {
                let change = self.dir.pick(
                    "branch removed or narrowed: no new branch accepts it",
                    "branch added or widened: no old branch accepts it",
                );
                self.push(w.ptr.clone(), change);
            } else {
                let change = match self.dir {
                    Dir::Backward => format!("{kw} added: no new branch accepts the old schema"),
                    Dir::Forward => format!("{kw} removed: no old branch accepts the new schema"),
                };
                self.report(r, w, Some(kw), &change);
            }
        }
    }

    /// Whether `r` accepts `w` with no finding, tried on the side.
    fn accepts(&self, r: &At<'_>, w: &At<'_>) -> bool {
        let key = (r.ptr.clone(), w.ptr.clone());
        if self.trials.contains(&key) {
            return true;
        }
        let mut trials = self.trials.clone();
        trials.push(key);
        let mut trial = Walk::new(self.dir, self.reader_root, self.writer_root, trials);
        trial.walk(r, w);
        trial.out.is_empty()
    }

    /// Any other constraining keyword of the reader's: fine only if the
    /// writer has it with the same value.
    fn others(&mut self, r: &At<'_>, w: &At<'_>, shared: &Shared) {
        let Some(map) = r.v.as_object() else {
            return;
        };
        for (kw, rv) in map {
            let kw = kw.as_str();
            if !self.constraining(kw, rv)
                || Kind::of_keyword(kw).is_some_and(|k| !shared.has(k))
                || w.get(kw).is_some_and(|wv| json_eq(rv, wv))
            {
                continue;
            }
            let (old, new) = self.old_new(r, w);
            let what = match (old.has(kw), new.has(kw)) {
                (false, _) => "added",
                (_, false) => "removed",
                _ => "changed",
            };
            self.report(r, w, Some(kw), &format!("constraint {kw} {what}"));
        }
    }

    /// Whether a reader keyword constrains values and is not handled by a
    /// rule of its own.
    fn constraining(&self, kw: &str, v: &Value) -> bool {
        match kw {
            _ if ANNOTATIONS.contains(&kw) => false,
            "type"
            | "properties"
            | "required"
            | "additionalProperties"
            | "enum"
            | "const"
            | "oneOf"
            | "anyOf" => false,
            "items" => v.is_array(),
            "uniqueItems" => v != &Value::Bool(false),
            "$ref" => v
                .as_str()
                .and_then(|s| s.strip_prefix('#'))
                .and_then(|frag| self.reader_root.pointer(frag))
                .is_none(),
            _ if is_bound(kw) => !v.is_number(),
            _ => true,
        }
    }
}

/// The first `oneOf`/`anyOf` of a schema, with its number of branches.
fn combinator<'k>(at: &At<'_>) -> Option<(&'k str, usize)> {
    ["oneOf", "anyOf"]
        .into_iter()
        .find_map(|kw| Some((kw, at.get(kw)?.as_array()?.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use CompatMode::{
        Backward as B, BackwardTransitive as BT, Forward as F, ForwardTransitive as FT, Full as FU,
        FullTransitive as FUT,
    };

    /// What a case expects.
    enum Want {
        /// No finding.
        Compatible,
        /// Exactly these findings, as displayed, in order.
        Findings(&'static [&'static str]),
    }
    use Want::{Compatible as OK, Findings};

    /// One row: name, mode, earlier versions (numbered from 1), new schema,
    /// expectation.
    type Case = (
        &'static str,
        CompatMode,
        &'static [&'static str],
        &'static str,
        Want,
    );

    const WHO_B: &str = "new readers reject old data";

    /// Parses a schema of a test row.
    fn json(s: &str) -> Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON {s}: {e}"))
    }

    /// Runs a row and returns the findings as displayed.
    fn run_case(mode: CompatMode, earlier: &[&str], new: &str) -> Vec<String> {
        let earlier: Vec<Value> = earlier.iter().map(|s| json(s)).collect();
        let numbered: Vec<(u32, &Value)> = earlier.iter().zip(1..).map(|(v, n)| (n, v)).collect();
        check(mode, &numbered, &json(new))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const CASES: &[Case] = &[
        // ---- modes
        (
            "none_accepts_anything",
            CompatMode::None,
            &[r#"{"type":"integer"}"#],
            r#"{"type":"string","additionalProperties":false}"#,
            OK,
        ),
        (
            "identical_schemas_are_compatible",
            FUT,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string","maxLength":8}},"required":["id"]}"#,
                r#"{"type":"object","properties":{"id":{"type":"string","maxLength":8}},"required":["id"]}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string","maxLength":8}},"required":["id"]}"#,
            OK,
        ),
        ("no_earlier_versions", BT, &[], r#"{"type":"string"}"#, OK),
        // ---- open content model
        (
            "open_add_typed_property_backward",
            B,
            &[r#"{"type":"object","properties":{"id":{"type":"string"}}}"#],
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}}}"#,
            Findings(&[
                "version 1: /properties/note: property added to an open content model (old data may already carry it, with any type); new readers reject old data",
            ]),
        ),
        (
            "open_add_typed_property_forward",
            F,
            &[r#"{"type":"object","properties":{"id":{"type":"string"}}}"#],
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}}}"#,
            OK,
        ),
        (
            "open_add_untyped_property_backward",
            B,
            &[r#"{"type":"object","properties":{"id":{"type":"string"}}}"#],
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"description":"anything"}}}"#,
            OK,
        ),
        (
            "open_remove_property_backward",
            B,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}}}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"}}}"#,
            OK,
        ),
        (
            "open_remove_property_forward",
            F,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}}}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"}}}"#,
            Findings(&[
                "version 1: /properties/note: property removed from an open content model (new data may still carry it, with any type); old readers reject new data",
            ]),
        ),
        (
            "partial_add_property_covered",
            B,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":{"type":"string"}}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"additionalProperties":{"type":"string"}}"#,
            OK,
        ),
        (
            "partial_add_property_not_covered",
            B,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":{"type":"string"}}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"},"n":{"type":"integer"}},"additionalProperties":{"type":"string"}}"#,
            Findings(&[
                "version 1: /properties/n/type: string -> integer changes the type; new readers reject old data",
            ]),
        ),
        (
            "partial_reader_additional_schema_added",
            B,
            &[r#"{"type":"object","properties":{"id":{"type":"string"}}}"#],
            r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":{"type":"string"}}"#,
            Findings(&[
                "version 1: /additionalProperties/type: any type -> string narrows the type; new readers reject old data",
            ]),
        ),
        // ---- closed content model
        (
            "closed_add_optional_backward",
            B,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"additionalProperties":false}"#,
            OK,
        ),
        (
            "closed_add_optional_forward",
            F,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"additionalProperties":false}"#,
            Findings(&[
                "version 1: /properties/note: property added to a closed content model; old readers reject new data",
            ]),
        ),
        (
            "closed_add_required_without_default",
            B,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"}},"required":["id"],"additionalProperties":false}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id","note"],"additionalProperties":false}"#,
            Findings(&[
                "version 1: /required: note became required without a default; new readers reject old data",
            ]),
        ),
        (
            "closed_add_required_with_default",
            B,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"}},"required":["id"],"additionalProperties":false}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string","default":""}},"required":["id","note"],"additionalProperties":false}"#,
            OK,
        ),
        (
            "required_dropped_backward",
            B,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id","note"],"additionalProperties":false}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id"],"additionalProperties":false}"#,
            OK,
        ),
        (
            "required_dropped_forward",
            F,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id","note"],"additionalProperties":false}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id"],"additionalProperties":false}"#,
            Findings(&[
                "version 1: /required: note is no longer required, and the old schema has no default for it; old readers reject new data",
            ]),
        ),
        (
            "required_dropped_forward_old_default",
            F,
            &[
                r#"{"type":"object","properties":{"note":{"type":"string","default":"-"}},"required":["note"],"additionalProperties":false}"#,
            ],
            r#"{"type":"object","properties":{"note":{"type":"string"}},"additionalProperties":false}"#,
            OK,
        ),
        (
            "closed_remove_property_backward",
            B,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"additionalProperties":false}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
            Findings(&[
                "version 1: /properties/note: property removed from a closed content model; new readers reject old data",
            ]),
        ),
        (
            "closed_remove_property_forward",
            F,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"additionalProperties":false}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
            OK,
        ),
        (
            "close_open_model_full",
            FU,
            &[r#"{"type":"object","properties":{"id":{"type":"string"}}}"#],
            r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
            Findings(&[
                "version 1: /additionalProperties: additionalProperties (none) -> false closes the content model; new readers reject old data",
            ]),
        ),
        (
            "open_closed_model_full",
            FU,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string"}}}"#,
            Findings(&[
                "version 1: /additionalProperties: additionalProperties false -> (none) opens the content model; old readers reject new data",
            ]),
        ),
        // ---- type
        (
            "integer_to_number_backward",
            B,
            &[r#"{"properties":{"total":{"type":"integer"}}}"#],
            r#"{"properties":{"total":{"type":"number"}}}"#,
            OK,
        ),
        (
            "integer_to_number_forward",
            F,
            &[r#"{"properties":{"total":{"type":"integer"}}}"#],
            r#"{"properties":{"total":{"type":"number"}}}"#,
            Findings(&[
                "version 1: /properties/total/type: integer -> number widens the type; old readers reject new data",
            ]),
        ),
        (
            "number_to_integer_backward",
            B,
            &[r#"{"properties":{"total":{"type":"number"}}}"#],
            r#"{"properties":{"total":{"type":"integer"}}}"#,
            Findings(&[
                "version 1: /properties/total/type: number -> integer narrows the type; new readers reject old data",
            ]),
        ),
        (
            "number_to_integer_forward",
            F,
            &[r#"{"properties":{"total":{"type":"number"}}}"#],
            r#"{"properties":{"total":{"type":"integer"}}}"#,
            OK,
        ),
        (
            "type_changed_full",
            FU,
            &[r#"{"properties":{"total":{"type":"integer"}}}"#],
            r#"{"properties":{"total":{"type":"string"}}}"#,
            Findings(&[
                "version 1: /properties/total/type: integer -> string changes the type; new readers reject old data",
                "version 1: /properties/total/type: integer -> string changes the type; old readers reject new data",
            ]),
        ),
        (
            "type_added_to_array_backward",
            B,
            &[r#"{"type":"string"}"#],
            r#"{"type":["string","null"]}"#,
            OK,
        ),
        (
            "type_added_to_array_forward",
            F,
            &[r#"{"type":"string"}"#],
            r#"{"type":["string","null"]}"#,
            Findings(&[
                "version 1: /type: string -> string or null widens the type; old readers reject new data",
            ]),
        ),
        (
            "type_removed_from_array_backward",
            B,
            &[r#"{"type":["string","null"]}"#],
            r#"{"type":"string"}"#,
            Findings(&[
                "version 1: /type: string or null -> string narrows the type; new readers reject old data",
            ]),
        ),
        (
            "type_gates_keywords",
            B,
            &[r#"{"type":"integer"}"#],
            r#"{"type":"string","maxLength":3,"pattern":"^a"}"#,
            Findings(&[
                "version 1: /type: integer -> string changes the type; new readers reject old data",
            ]),
        ),
        // ---- enum / const
        (
            "enum_value_added_backward",
            B,
            &[r#"{"properties":{"status":{"enum":["a","b"]}}}"#],
            r#"{"properties":{"status":{"enum":["a","b","c"]}}}"#,
            OK,
        ),
        (
            "enum_value_added_forward",
            F,
            &[r#"{"properties":{"status":{"enum":["a","b"]}}}"#],
            r#"{"properties":{"status":{"enum":["a","b","c"]}}}"#,
            Findings(&[
                r#"version 1: /properties/status/enum: enum ["a","b"] -> ["a","b","c"] widens the allowed values; old readers reject new data"#,
            ]),
        ),
        (
            "enum_value_removed_backward",
            B,
            &[r#"{"properties":{"status":{"enum":["a","b","c"]}}}"#],
            r#"{"properties":{"status":{"enum":["a","b"]}}}"#,
            Findings(&[
                r#"version 1: /properties/status/enum: enum ["a","b","c"] -> ["a","b"] narrows the allowed values; new readers reject old data"#,
            ]),
        ),
        (
            "enum_value_removed_forward",
            F,
            &[r#"{"properties":{"status":{"enum":["a","b","c"]}}}"#],
            r#"{"properties":{"status":{"enum":["a","b"]}}}"#,
            OK,
        ),
        (
            "enum_added_backward",
            B,
            &[r#"{"type":"string"}"#],
            r#"{"type":"string","enum":["a"]}"#,
            Findings(&[
                r#"version 1: /enum: enum (any value) -> ["a"] narrows the allowed values; new readers reject old data"#,
            ]),
        ),
        (
            "const_to_enum_backward",
            B,
            &[r#"{"const":"a"}"#],
            r#"{"enum":["a","b"]}"#,
            OK,
        ),
        (
            "const_changed_full",
            FU,
            &[r#"{"const":1}"#],
            r#"{"const":2}"#,
            Findings(&[
                "version 1: /const: const [1] -> [2] changes the allowed values; new readers reject old data",
                "version 1: /const: const [1] -> [2] changes the allowed values; old readers reject new data",
            ]),
        ),
        (
            "enum_numbers_compare_by_value",
            FU,
            &[r#"{"enum":[1,2]}"#],
            r#"{"enum":[1.0,2.0]}"#,
            OK,
        ),
        // ---- bounds
        (
            "minimum_tightened_backward",
            B,
            &[r#"{"type":"number","minimum":0}"#],
            r#"{"type":"number","minimum":5}"#,
            Findings(&[
                "version 1: /minimum: minimum 0 -> 5 tightens the bound; new readers reject old data",
            ]),
        ),
        (
            "minimum_loosened_backward",
            B,
            &[r#"{"type":"number","minimum":5}"#],
            r#"{"type":"number","minimum":0}"#,
            OK,
        ),
        (
            "minimum_loosened_forward",
            F,
            &[r#"{"type":"number","minimum":5}"#],
            r#"{"type":"number","minimum":0}"#,
            Findings(&[
                "version 1: /minimum: minimum 5 -> 0 loosens the bound; old readers reject new data",
            ]),
        ),
        (
            "maximum_added_backward",
            B,
            &[r#"{"type":"integer"}"#],
            r#"{"type":"integer","maximum":100}"#,
            Findings(&[
                "version 1: /maximum: maximum (none) -> 100 tightens the bound; new readers reject old data",
            ]),
        ),
        (
            "maximum_removed_forward",
            F,
            &[r#"{"type":"integer","maximum":100}"#],
            r#"{"type":"integer"}"#,
            Findings(&[
                "version 1: /maximum: maximum 100 -> (none) loosens the bound; old readers reject new data",
            ]),
        ),
        (
            "minimum_made_exclusive_backward",
            FU,
            &[r#"{"type":"number","minimum":0}"#],
            r#"{"type":"number","exclusiveMinimum":0}"#,
            Findings(&[
                "version 1: /exclusiveMinimum: exclusiveMinimum (none) -> 0 tightens the bound; new readers reject old data",
            ]),
        ),
        (
            "max_length_tightened_backward",
            B,
            &[r#"{"type":"string","maxLength":10}"#],
            r#"{"type":"string","maxLength":5}"#,
            Findings(&[
                "version 1: /maxLength: maxLength 10 -> 5 tightens the bound; new readers reject old data",
            ]),
        ),
        (
            "max_length_loosened_full",
            FU,
            &[r#"{"type":"string","maxLength":5}"#],
            r#"{"type":"string","maxLength":10}"#,
            Findings(&[
                "version 1: /maxLength: maxLength 5 -> 10 loosens the bound; old readers reject new data",
            ]),
        ),
        (
            "min_length_added_backward",
            B,
            &[r#"{"type":"string"}"#],
            r#"{"type":"string","minLength":1}"#,
            Findings(&[
                "version 1: /minLength: minLength (none) -> 1 tightens the bound; new readers reject old data",
            ]),
        ),
        (
            "min_length_removed_backward",
            B,
            &[r#"{"type":"string","minLength":1}"#],
            r#"{"type":"string"}"#,
            OK,
        ),
        (
            "min_items_tightened_backward",
            B,
            &[r#"{"type":"array","minItems":0}"#],
            r#"{"type":"array","minItems":1}"#,
            Findings(&[
                "version 1: /minItems: minItems 0 -> 1 tightens the bound; new readers reject old data",
            ]),
        ),
        (
            "max_items_loosened_forward",
            F,
            &[r#"{"type":"array","maxItems":3}"#],
            r#"{"type":"array","maxItems":4}"#,
            Findings(&[
                "version 1: /maxItems: maxItems 3 -> 4 loosens the bound; old readers reject new data",
            ]),
        ),
        // ---- items
        (
            "items_type_changed_full",
            FU,
            &[r#"{"type":"array","items":{"type":"integer"}}"#],
            r#"{"type":"array","items":{"type":"string"}}"#,
            Findings(&[
                "version 1: /items/type: integer -> string changes the type; new readers reject old data",
                "version 1: /items/type: integer -> string changes the type; old readers reject new data",
            ]),
        ),
        (
            "items_widened_backward",
            B,
            &[r#"{"type":"array","items":{"type":"integer"}}"#],
            r#"{"type":"array","items":{"type":"number"}}"#,
            OK,
        ),
        (
            "items_added_backward",
            B,
            &[r#"{"type":"array"}"#],
            r#"{"type":"array","items":{"type":"string"}}"#,
            Findings(&[
                "version 1: /items/type: any type -> string narrows the type; new readers reject old data",
            ]),
        ),
        // ---- oneOf / anyOf
        (
            "one_of_branch_added_backward",
            B,
            &[r#"{"oneOf":[{"type":"string"},{"type":"integer"}]}"#],
            r#"{"oneOf":[{"type":"string"},{"type":"integer"},{"type":"null"}]}"#,
            OK,
        ),
        (
            "one_of_branch_added_forward",
            F,
            &[r#"{"oneOf":[{"type":"string"},{"type":"integer"}]}"#],
            r#"{"oneOf":[{"type":"string"},{"type":"integer"},{"type":"null"}]}"#,
            Findings(&[
                "version 1: /oneOf/2: branch added or widened: no old branch accepts it; old readers reject new data",
            ]),
        ),
        (
            "one_of_branch_removed_backward",
            B,
            &[r#"{"oneOf":[{"type":"string"},{"type":"integer"},{"type":"null"}]}"#],
            r#"{"oneOf":[{"type":"string"},{"type":"integer"}]}"#,
            Findings(&[
                "version 1: /oneOf/2: branch removed or narrowed: no new branch accepts it; new readers reject old data",
            ]),
        ),
        (
            "one_of_branch_narrowed_backward",
            B,
            &[r#"{"oneOf":[{"type":"string","maxLength":10},{"type":"integer"}]}"#],
            r#"{"oneOf":[{"type":"string","maxLength":5},{"type":"integer"}]}"#,
            Findings(&[
                "version 1: /oneOf/0: branch removed or narrowed: no new branch accepts it; new readers reject old data",
            ]),
        ),
        (
            "one_of_base_keywords_merged",
            FU,
            &[
                r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"oneOf":[{"required":["a"]},{"required":["b"]}]}"#,
            ],
            r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"oneOf":[{"required":["a"]},{"required":["b"]}]}"#,
            OK,
        ),
        (
            "any_of_added_backward",
            B,
            &[r#"{"type":"string"}"#],
            r#"{"anyOf":[{"type":"string"},{"type":"null"}]}"#,
            OK,
        ),
        (
            "one_of_added_backward",
            B,
            &[r#"{"type":"string"}"#],
            r#"{"oneOf":[{"type":"integer"},{"type":"null"}]}"#,
            Findings(&[
                "version 1: /oneOf: oneOf added: no new branch accepts the old schema; new readers reject old data",
            ]),
        ),
        (
            "one_of_removed_forward",
            F,
            &[r#"{"oneOf":[{"type":"string"}]}"#],
            r#"{"type":["string","integer"]}"#,
            Findings(&[
                "version 1: /oneOf: oneOf removed: no old branch accepts the new schema; old readers reject new data",
            ]),
        ),
        // ---- $ref
        (
            "ref_def_changed_backward",
            B,
            &[
                r##"{"$defs":{"money":{"type":"number"}},"properties":{"total":{"$ref":"#/$defs/money"}}}"##,
            ],
            r##"{"$defs":{"money":{"type":"integer"}},"properties":{"total":{"$ref":"#/$defs/money"}}}"##,
            Findings(&[
                "version 1: /$defs/money/type: number -> integer narrows the type; new readers reject old data",
            ]),
        ),
        (
            "ref_def_changed_forward",
            F,
            &[
                r##"{"$defs":{"money":{"type":"number"}},"properties":{"total":{"$ref":"#/$defs/money"}}}"##,
            ],
            r##"{"$defs":{"money":{"type":"integer"}},"properties":{"total":{"$ref":"#/$defs/money"}}}"##,
            OK,
        ),
        (
            "ref_replaces_inline_schema",
            FU,
            &[r#"{"properties":{"total":{"type":"integer","minimum":0}}}"#],
            r##"{"definitions":{"count":{"type":"integer","minimum":0}},"properties":{"total":{"$ref":"#/definitions/count"}}}"##,
            OK,
        ),
        (
            "ref_sibling_keyword_applies",
            B,
            &[r##"{"$defs":{"s":{"type":"string"}},"properties":{"id":{"$ref":"#/$defs/s"}}}"##],
            r##"{"$defs":{"s":{"type":"string"}},"properties":{"id":{"$ref":"#/$defs/s","maxLength":4}}}"##,
            Findings(&[
                "version 1: /properties/id/maxLength: maxLength (none) -> 4 tightens the bound; new readers reject old data",
            ]),
        ),
        (
            "recursive_ref_terminates",
            FU,
            &[
                r##"{"$ref":"#/$defs/node","$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},"next":{"$ref":"#/$defs/node"},"kids":{"type":"array","items":{"$ref":"#"}}}}}}"##,
            ],
            r##"{"$ref":"#/$defs/node","$defs":{"node":{"type":"object","properties":{"value":{"type":"number"},"next":{"$ref":"#/$defs/node"},"kids":{"type":"array","items":{"$ref":"#"}}}}}}"##,
            Findings(&[
                "version 1: /$defs/node/properties/value/type: integer -> number widens the type; old readers reject new data",
            ]),
        ),
        (
            "recursive_ref_in_one_of_terminates",
            FUT,
            &[
                r##"{"$defs":{"t":{"oneOf":[{"type":"null"},{"type":"object","properties":{"l":{"$ref":"#/$defs/t"}}}]}},"$ref":"#/$defs/t"}"##,
            ],
            r##"{"$defs":{"t":{"oneOf":[{"type":"null"},{"type":"object","properties":{"l":{"$ref":"#/$defs/t"}}}]}},"$ref":"#/$defs/t"}"##,
            OK,
        ),
        // ---- boolean schemas
        (
            "true_to_object_backward",
            B,
            &["true"],
            r#"{"type":"object"}"#,
            Findings(&[
                "version 1: /type: any type -> object narrows the type; new readers reject old data",
            ]),
        ),
        (
            "false_writer_backward",
            B,
            &["false"],
            r#"{"type":"string"}"#,
            OK,
        ),
        (
            "schema_became_false_backward",
            B,
            &[r#"{"type":"string"}"#],
            "false",
            Findings(&["version 1: /: schema became false; new readers reject old data"]),
        ),
        (
            "property_schema_false_to_true_forward",
            F,
            &[r#"{"properties":{"x":false}}"#],
            r#"{"properties":{"x":true}}"#,
            Findings(&[
                "version 1: /properties/x: schema was false and now accepts values; old readers reject new data",
            ]),
        ),
        // ---- other keywords
        (
            "unknown_constraint_added_backward",
            B,
            &[r#"{"properties":{"code":{"type":"string"}}}"#],
            r#"{"properties":{"code":{"type":"string","pattern":"^[A-Z]+$"}}}"#,
            Findings(&[
                "version 1: /properties/code/pattern: constraint pattern added; new readers reject old data",
            ]),
        ),
        (
            "unknown_constraint_removed_forward",
            F,
            &[r#"{"properties":{"code":{"type":"string","pattern":"^[A-Z]+$"}}}"#],
            r#"{"properties":{"code":{"type":"string"}}}"#,
            Findings(&[
                "version 1: /properties/code/pattern: constraint pattern removed; old readers reject new data",
            ]),
        ),
        (
            "unknown_constraint_changed_full",
            FU,
            &[r#"{"type":"number","multipleOf":2}"#],
            r#"{"type":"number","multipleOf":4}"#,
            Findings(&[
                "version 1: /multipleOf: constraint multipleOf changed; new readers reject old data",
                "version 1: /multipleOf: constraint multipleOf changed; old readers reject new data",
            ]),
        ),
        (
            "annotations_ignored",
            FU,
            &[
                r#"{"title":"A","description":"x","type":"string","examples":["a"],"default":"a","$comment":"c"}"#,
            ],
            r#"{"title":"B","description":"y","type":"string","examples":["b"],"default":"b","deprecated":true,"$schema":"https://json-schema.org/draft/2020-12/schema"}"#,
            OK,
        ),
        // ---- several findings at once
        (
            "multiple_findings_reported_together",
            B,
            &[
                r#"{"type":"object","properties":{"id":{"type":"string"},"total":{"type":"number"},"tags":{"type":"array","items":{"type":"string"}}},"required":["id"]}"#,
            ],
            r#"{"type":"object","properties":{"id":{"type":"string","maxLength":8},"total":{"type":"integer"},"tags":{"type":"array","items":{"type":"integer"}},"note":{"type":"string"}},"required":["id","total"]}"#,
            Findings(&[
                "version 1: /properties/id/maxLength: maxLength (none) -> 8 tightens the bound; new readers reject old data",
                "version 1: /properties/note: property added to an open content model (old data may already carry it, with any type); new readers reject old data",
                "version 1: /properties/tags/items/type: string -> integer changes the type; new readers reject old data",
                "version 1: /properties/total/type: number -> integer narrows the type; new readers reject old data",
                "version 1: /required: total became required without a default; new readers reject old data",
            ]),
        ),
        // ---- transitive modes: v3 matches v2 but not v1
        (
            "backward_checks_latest_only",
            B,
            &[
                r#"{"type":"string"}"#,
                r#"{"type":"string","maxLength":10}"#,
            ],
            r#"{"type":"string","maxLength":10}"#,
            OK,
        ),
        (
            "backward_transitive_checks_all",
            BT,
            &[
                r#"{"type":"string"}"#,
                r#"{"type":"string","maxLength":10}"#,
            ],
            r#"{"type":"string","maxLength":10}"#,
            Findings(&[
                "version 1: /maxLength: maxLength (none) -> 10 tightens the bound; new readers reject old data",
            ]),
        ),
        (
            "forward_checks_latest_only",
            F,
            &[r#"{"type":"integer"}"#, r#"{"type":"number"}"#],
            r#"{"type":"number"}"#,
            OK,
        ),
        (
            "forward_transitive_checks_all",
            FT,
            &[r#"{"type":"integer"}"#, r#"{"type":"number"}"#],
            r#"{"type":"number"}"#,
            Findings(&[
                "version 1: /type: integer -> number widens the type; old readers reject new data",
            ]),
        ),
        (
            "full_checks_latest_only",
            FU,
            &[r#"{"enum":["a","b","c"]}"#, r#"{"enum":["a","b"]}"#],
            r#"{"enum":["a","b"]}"#,
            OK,
        ),
        (
            "full_transitive_checks_all",
            FUT,
            &[r#"{"enum":["a","b","c"]}"#, r#"{"enum":["a","b"]}"#],
            r#"{"enum":["a","b"]}"#,
            Findings(&[
                r#"version 1: /enum: enum ["a","b","c"] -> ["a","b"] narrows the allowed values; new readers reject old data"#,
            ]),
        ),
        (
            "transitive_reports_every_version",
            BT,
            &[r#"{"type":["string","null"]}"#, r#"{"type":"number"}"#],
            r#"{"type":"string"}"#,
            Findings(&[
                "version 1: /type: string or null -> string narrows the type; new readers reject old data",
                "version 2: /type: number -> string changes the type; new readers reject old data",
            ]),
        ),
        (
            "full_refuses_backward_break",
            FU,
            &[r#"{"type":"number"}"#],
            r#"{"type":"integer"}"#,
            Findings(&[
                "version 1: /type: number -> integer narrows the type; new readers reject old data",
            ]),
        ),
        (
            "full_refuses_forward_break",
            FU,
            &[r#"{"type":"integer"}"#],
            r#"{"type":"number"}"#,
            Findings(&[
                "version 1: /type: integer -> number widens the type; old readers reject new data",
            ]),
        ),
    ];

    #[test]
    fn table() {
        let mut failures = Vec::new();
        let mut names = HashSet::new();
        for (name, mode, earlier, new, want) in CASES {
            assert!(names.insert(*name), "duplicate case name {name}");
            let got = run_case(*mode, earlier, new);
            let expected: Vec<String> = match want {
                Want::Compatible => Vec::new(),
                Want::Findings(f) => f.iter().map(ToString::to_string).collect(),
            };
            if got != expected {
                failures.push(format!(
                    "{name} ({mode}):\n  expected {expected:#?}\n  got      {got:#?}"
                ));
            }
        }
        assert!(CASES.len() >= 45, "only {} cases", CASES.len());
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn the_reason_suffix_names_who_breaks() {
        // Every backward finding in the table ends the same way; a guard
        // that the table's strings and the code agree on the wording.
        let old = json(r#"{"type":"number"}"#);
        let new = json(r#"{"type":"integer"}"#);
        let found = backward(&old, &new);
        assert_eq!(found.len(), 1);
        assert!(found[0].reason.ends_with(WHO_B), "{}", found[0].reason);
        assert_eq!(found[0].version, None);
        assert!(forward(&old, &new).is_empty());
    }

    #[test]
    fn display_of_a_finding_list() {
        let v1 = json(
            r#"{"type":"object","additionalProperties":false,
                "properties":{"id":{"type":"string"},"total":{"type":"number"},"note":{"type":"string"}},
                "required":["id"]}"#,
        );
        let v2 = json(
            r#"{"type":"object","additionalProperties":false,
                "properties":{"id":{"type":"string"},"total":{"type":"integer"},"status":{"enum":["new","paid"]}},
                "required":["id","status"]}"#,
        );
        let text: Vec<String> = check(CompatMode::Full, &[(1, &v1)], &v2)
            .iter()
            .map(ToString::to_string)
            .collect();
        insta::assert_snapshot!(text.join("\n"), @r"
        version 1: /properties/total/type: number -> integer narrows the type; new readers reject old data
        version 1: /properties/note: property removed from a closed content model; new readers reject old data
        version 1: /required: status became required without a default; new readers reject old data
        version 1: /properties/status: property added to a closed content model; old readers reject new data
        ");
    }

    #[test]
    fn root_pointer_displays_as_slash() {
        let f = Incompatibility {
            version: None,
            pointer: String::new(),
            reason: "r".into(),
        };
        assert_eq!(f.to_string(), "/: r");
        let f = Incompatibility {
            version: Some(3),
            pointer: "/a~1b".into(),
            reason: "r".into(),
        };
        assert_eq!(f.to_string(), "version 3: /a~1b: r");
    }

    #[test]
    fn property_names_are_escaped_in_pointers() {
        let old = json(r#"{"properties":{"a/b~c":{"type":"number"}}}"#);
        let new = json(r#"{"properties":{"a/b~c":{"type":"integer"}}}"#);
        let found = backward(&old, &new);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pointer, "/properties/a~1b~0c/type");
    }

    #[test]
    fn mode_names_round_trip() {
        let names = [
            "NONE",
            "BACKWARD",
            "BACKWARD_TRANSITIVE",
            "FORWARD",
            "FORWARD_TRANSITIVE",
            "FULL",
            "FULL_TRANSITIVE",
        ];
        for (mode, name) in CompatMode::ALL.into_iter().zip(names) {
            assert_eq!(mode.as_str(), name);
            assert_eq!(mode.to_string(), name);
            assert_eq!(CompatMode::parse(name), Some(mode));
            let lower = name.to_lowercase().replace('_', "-");
            assert_eq!(CompatMode::parse(&lower), Some(mode), "{lower}");
        }
        let distinct: HashSet<CompatMode> = CompatMode::ALL.into_iter().collect();
        assert_eq!(distinct.len(), 7);
        assert_eq!(CompatMode::default(), CompatMode::Backward);
        assert_eq!(CompatMode::parse("backwards"), None);
        assert_eq!(CompatMode::parse(""), None);
    }
}
