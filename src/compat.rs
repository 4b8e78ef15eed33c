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
mod tests;
