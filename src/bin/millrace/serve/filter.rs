//! The payload filter of the dashboard's search: conditions on a message's
//! JSON fields, evaluated by the server over a bounded window of messages.
//!
//! A filter is conditions joined by `and`; each is `PATH OP VALUE` or a bare
//! `PATH` (the field exists and is not null). `PATH` is field names joined by
//! dots (`customer.id`, `lines.0.sku`: a number picks an array element).
//! `OP` is one of `=`, `!=`, `>`, `>=`, `<`, `<=` or `~` (contains: a
//! substring of a string, an element of an array). `VALUE` is JSON (`42`,
//! `true`, `"a b"`, `null`) or else bare text, taken as a string. Numbers
//! compare as numbers, strings as strings (RFC 3339 times in order); a
//! field of another type, or missing, does not match.

use serde_json::Value;

/// Most conditions one filter may have.
pub const MAX_CONDITIONS: usize = 16;
/// The longest filter text accepted.
pub const MAX_FILTER_LEN: usize = 1000;

/// A parsed filter: every condition must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    path: Vec<String>,
    op: Op,
    value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Exists,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Contains,
}

/// Operators in the order they are looked for (two-character ones first,
/// so `>=` is not read as `>` followed by `=1`).
const OPS: [(&str, Op); 7] = [
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("!=", Op::Ne),
    ("=", Op::Eq),
    (">", Op::Gt),
    ("<", Op::Lt),
    ("~", Op::Contains),
];

impl Filter {
    /// Parses `text`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Filter, String> {
        if text.len() > MAX_FILTER_LEN {
            return Err(format!("the filter is over {MAX_FILTER_LEN} characters"));
        }
        let parts: Vec<&str> = split_and(text);
        if parts.len() > MAX_CONDITIONS {
            return Err(format!("a filter has at most {MAX_CONDITIONS} conditions"));
        }
        let conditions = parts
            .into_iter()
            .map(parse_condition)
            .collect::<Result<Vec<_>, _>>()?;
        if conditions.is_empty() {
            return Err("the filter is empty".to_string());
        }
        Ok(Filter { conditions })
    }

    /// Whether `payload` (a message's payload as JSON) passes every
    /// condition.
    pub fn matches(&self, payload: &Value) -> bool {
        self.conditions.iter().all(|c| c.holds(payload))
    }
}

/// The conditions of `text`, split at the word `and` (outside quotes).
fn split_and(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => quoted = !quoted,
            b' ' if !quoted
                && text[i..].len() >= 5
                && text[i..i + 5].eq_ignore_ascii_case(" and ") =>
            {
                parts.push(&text[start..i]);
                start = i + 5;
                i += 5;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_condition(text: &str) -> Result<Condition, String> {
    let found = OPS
        .iter()
        .filter_map(|(sym, op)| text.find(sym).map(|at| (at, *sym, *op)))
        // The leftmost operator; at the same place the longer one.
        .min_by_key(|(at, sym, _)| (*at, std::cmp::Reverse(sym.len())));
    let (path, op, value) = match found {
        None => (text, Op::Exists, Value::Null),
        Some((at, sym, op)) => {
            let raw = text[at + sym.len()..].trim();
            if raw.is_empty() {
                return Err(format!("{text:?}: a value is missing after {sym}"));
            }
            let value =
                serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
            (&text[..at], op, value)
        }
    };
    let path = path.trim();
    if path.is_empty() {
        return Err(format!("{text:?}: a field name is missing"));
    }
    if path.contains(char::is_whitespace) {
        return Err(format!(
            "{text:?}: {path:?} is not a field path (names joined by dots, no spaces)"
        ));
    }
    let path: Vec<String> = path.split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("{text:?}: empty field name in the path"));
    }
    Ok(Condition { path, op, value })
}

impl Condition {
    fn holds(&self, payload: &Value) -> bool {
        let Some(field) = lookup(payload, &self.path) else {
            return false;
        };
        match self.op {
            Op::Exists => !field.is_null(),
            Op::Eq => same(field, &self.value),
            Op::Ne => !same(field, &self.value),
            Op::Gt => order(field, &self.value).is_some_and(|o| o.is_gt()),
            Op::Ge => order(field, &self.value).is_some_and(|o| o.is_ge()),
            Op::Lt => order(field, &self.value).is_some_and(|o| o.is_lt()),
            Op::Le => order(field, &self.value).is_some_and(|o| o.is_le()),
            Op::Contains => match (field, &self.value) {
                (Value::String(s), Value::String(part)) => s.contains(part.as_str()),
                (Value::String(s), other) => s.contains(&other.to_string()),
                (Value::Array(items), v) => items.iter().any(|i| same(i, v)),
                _ => false,
            },
        }
    }
}

/// The field at `path` in `v`.
fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, name| match v {
        Value::Object(map) => map.get(name),
        Value::Array(items) => name.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Equal as JSON, numbers by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

/// Numbers by value, strings by text; other pairs do not compare.
fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn invoice() -> Value {
        json!({
            "id": "inv-7",
            "cents": 1250,
            "customer": {"id": 42, "name": "Ada Lovelace", "vip": true},
            "tags": ["urgent", "eu"],
            "lines": [{"sku": "A-1"}, {"sku": "B-2"}],
            "due": "2026-12-01T00:00:00Z",
            "note": null
        })
    }

    fn passes(filter: &str) -> bool {
        Filter::parse(filter).unwrap().matches(&invoice())
    }

    #[test]
    fn each_operator_both_ways() {
        for (yes, no) in [
            ("cents = 1250", "cents = 1251"),
            ("cents = 1250.0", "cents = \"1250\""),
            ("customer.id != 41", "customer.id != 42"),
            ("cents > 1000", "cents > 1250"),
            ("cents >= 1250", "cents >= 1251"),
            ("cents < 2000", "cents < 1250"),
            ("cents <= 1250", "cents <= 1249"),
            ("customer.name ~ Love", "customer.name ~ love"),
            ("tags ~ urgent", "tags ~ late"),
            ("lines.1.sku = B-2", "lines.2.sku = B-2"),
            ("customer.vip = true", "customer.vip = false"),
            ("due >= 2026-11-30T00:00:00Z", "due > 2026-12-01T00:00:00Z"),
            ("customer.vip", "note"),
            ("id = inv-7", "missing = inv-7"),
            ("customer.name = \"Ada Lovelace\"", "customer.name = Ada"),
        ] {
            assert!(passes(yes), "{yes} should match");
            assert!(!passes(no), "{no} should not match");
        }
    }

    #[test]
    fn every_condition_must_hold() {
        assert!(passes("cents > 1000 and customer.id = 42"));
        assert!(passes("cents > 1000 AND customer.id = 42"));
        assert!(!passes("cents > 1000 and customer.id = 43"));
        // `and` inside a quoted value is not a separator.
        let f = Filter::parse("note2 = \"salt and pepper\"").unwrap();
        assert!(f.matches(&json!({"note2": "salt and pepper"})));
    }

    #[test]
    fn types_that_do_not_compare_do_not_match() {
        assert!(!passes("customer > 3"));
        assert!(!passes("id > 3"));
        assert!(
            !Filter::parse("x = 1")
                .unwrap()
                .matches(&json!("not an object"))
        );
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        for (text, says) in [
            ("", "empty"),
            ("= 3", "field name is missing"),
            ("cents >", "value is missing"),
            ("a b = 3", "not a field path"),
            ("a..b = 3", "empty field name"),
        ] {
            let e = Filter::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        let long = "a = 1 and ".repeat(17) + "a = 1";
        assert!(Filter::parse(&long).unwrap_err().contains("at most"));
        assert!(
            Filter::parse(&"x".repeat(1001))
                .unwrap_err()
                .contains("over")
        );
    }
}
