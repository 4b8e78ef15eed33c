//! Checks of a Prometheus text exposition: millrace's naming rules
//! ([`naming_violations`]) and, where it is installed, `promtool check
//! metrics` ([`promtool_check_metrics`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

/// The only label names a series may have: bounded by the topics, groups
/// and partitions (and a histogram's buckets), never by messages, members
/// or errors.
pub const ALLOWED_LABELS: [&str; 4] = ["topic", "group", "partition", "le"];

/// How a gauge's name may end: a unit, or what it counts.
pub const GAUGE_SUFFIXES: [&str; 8] = [
    "_messages",
    "_partitions",
    "_members",
    "_seconds",
    "_bytes",
    "_ratio",
    "_up",
    "_info",
];

/// Words that say a family measures time: its name must end in `_seconds`.
const TIME_WORDS: [&str; 4] = ["duration", "latency", "time", "age"];

/// Abbreviated or non-base units, which the Prometheus rules rule out.
const BAD_UNITS: [&str; 9] = [
    "_ms",
    "_us",
    "_ns",
    "_millis",
    "_milliseconds",
    "_microseconds",
    "_minutes",
    "_hours",
    "_kb",
];

#[derive(Default)]
struct Fam {
    help: Option<String>,
    kind: Option<String>,
    /// Line number of the first sample.
    first_sample: Option<usize>,
}

fn valid_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    !n.starts_with("__")
        && c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// `a="x",b="y"` into pairs, with the text format's escapes (`\\`, `\"`,
/// `\n`) undone.
fn parse_labels(inner: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        let mut v = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => v.push('\\'),
                    Some((_, '"')) => v.push('"'),
                    Some((_, 'n')) => v.push('\n'),
                    _ => return Err("bad escape".into()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => v.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        out.push((k.to_string(), v));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(out)
}

/// Every way `text` breaks the rules millrace's series follow, as readable
/// sentences (empty when it follows them all):
///
/// * every family has one `# HELP` (not empty) and one `# TYPE` line
///   before its first sample, and its samples form one block;
/// * names and label names are valid, names start with `millrace_`;
/// * counters end in `_total` and nothing else does;
/// * a family measuring time ends in `_seconds`; no abbreviated or
///   non-base units (`_ms`, `_minutes`, ...);
/// * gauges end in one of [`GAUGE_SUFFIXES`];
/// * histograms have only `_bucket` (with `le`, cumulative, up to `+Inf`
///   equal to `_count`), `_sum` and `_count` series, for each label set;
/// * labels are only [`ALLOWED_LABELS`] (`le` only on buckets);
/// * no series appears twice.
pub fn naming_violations(text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut fams: BTreeMap<String, Fam> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut seen_series = BTreeSet::new();
    // Per histogram and label set (without le): buckets, sum, count.
    type Hist = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut hists: BTreeMap<(String, Vec<(String, String)>), Hist> = BTreeMap::new();
    let mut current_block: Option<String> = None;
    let mut closed: BTreeSet<String> = BTreeSet::new();

    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let f = fams.entry(name.to_string()).or_default();
            if f.help.is_some() {
                bad.push(format!("line {n}: a second # HELP for {name}"));
            }
            if help.trim().is_empty() {
                bad.push(format!("line {n}: empty # HELP for {name}"));
            }
            f.help = Some(help.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                bad.push(format!("line {n}: unknown type {kind:?} for {name}"));
            }
            let f = fams.entry(name.to_string()).or_default();
            if f.kind.is_some() {
                bad.push(format!("line {n}: a second # TYPE for {name}"));
            }
            if f.first_sample.is_some() {
                bad.push(format!("line {n}: # TYPE of {name} after its samples"));
            }
            f.kind = Some(kind.to_string());
            if !order.contains(&name.to_string()) {
                order.push(name.to_string());
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            bad.push(format!("line {n}: not `series value`: {line:?}"));
            continue;
        };
        let Ok(value) = value.parse::<f64>().or_else(|e| match value {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => Err(e),
        }) else {
            bad.push(format!("line {n}: value {value:?} is not a number"));
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => match rest.strip_suffix('}').map(parse_labels) {
                Some(Ok(l)) => (name, l),
                _ => {
                    bad.push(format!("line {n}: bad labels in {line:?}"));
                    continue;
                }
            },
            None => (series, Vec::new()),
        };
        if !valid_metric_name(name) {
            bad.push(format!("line {n}: invalid metric name {name:?}"));
        }
        if !seen_series.insert(series.to_string()) {
            bad.push(format!("line {n}: series {series} appears twice"));
        }
        // The family: the name itself, or a histogram's name without its
        // suffix.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| fams.get(*f).and_then(|x| x.kind.as_deref()) == Some("histogram"))
            })
            .unwrap_or(name)
            .to_string();
        let Some(f) = fams.get_mut(&family) else {
            bad.push(format!("line {n}: {name} has no # HELP or # TYPE"));
            continue;
        };
        if f.help.is_none() {
            bad.push(format!(
                "line {n}: {family} has no # HELP before its samples"
            ));
        }
        let Some(kind) = f.kind.clone() else {
            bad.push(format!(
                "line {n}: {family} has no # TYPE before its samples"
            ));
            continue;
        };
        f.first_sample.get_or_insert(n);
        if current_block.as_deref() != Some(family.as_str()) {
            if closed.contains(&family) {
                bad.push(format!("line {n}: {family}'s samples are not one block"));
            }
            if let Some(prev) = current_block.replace(family.clone()) {
                closed.insert(prev);
            }
        }
        for (k, _) in &labels {
            if !valid_label_name(k) {
                bad.push(format!("line {n}: invalid label name {k:?}"));
            }
            if !ALLOWED_LABELS.contains(&k.as_str()) {
                bad.push(format!(
                    "line {n}: label {k} of {name} is not one of {ALLOWED_LABELS:?} (unbounded?)"
                ));
            }
        }
        let is_bucket = kind == "histogram" && name.ends_with("_bucket");
        if labels.iter().any(|(k, _)| k == "le") != is_bucket {
            bad.push(format!(
                "line {n}: {name}: `le` belongs on a histogram's buckets, and only there"
            ));
        }
        if kind == "histogram" {
            let key_labels: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            let h = hists.entry((family.clone(), key_labels)).or_default();
            if is_bucket {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| v.as_str());
                match le.map(|le| {
                    if le == "+Inf" {
                        Ok(f64::INFINITY)
                    } else {
                        le.parse()
                    }
                }) {
                    Some(Ok(le)) => h.0.push((le, value)),
                    _ => bad.push(format!("line {n}: bad le in {line:?}")),
                }
            } else if name.ends_with("_sum") {
                h.1 = Some(value);
            } else if name.ends_with("_count") {
                h.2 = Some(value);
            } else {
                bad.push(format!(
                    "line {n}: {name} is not a _bucket, _sum or _count of {family}"
                ));
            }
        } else if name != family {
            bad.push(format!(
                "line {n}: {name} is not named as its family {family}"
            ));
        }
    }

    for name in &order {
        let f = &fams[name];
        let kind = f.kind.as_deref().unwrap_or("");
        if f.help.is_none() {
            bad.push(format!("{name} has no # HELP"));
        }
        if !name.starts_with("millrace_") {
            bad.push(format!("{name} does not start with millrace_"));
        }
        if !valid_metric_name(name) {
            bad.push(format!("invalid metric name {name:?}"));
        }
        match kind {
            "counter" if !name.ends_with("_total") => {
                bad.push(format!("counter {name} does not end in _total"));
            }
            "counter" => {}
            _ if name.ends_with("_total") => {
                bad.push(format!(
                    "{kind} {name} ends in _total, which is for counters"
                ));
            }
            _ => {}
        }
        let base = name.strip_suffix("_total").unwrap_or(name);
        if TIME_WORDS.iter().any(|w| base.split('_').any(|p| p == *w))
            && !base.ends_with("_seconds")
        {
            bad.push(format!("{name} measures time but does not end in _seconds"));
        }
        for u in BAD_UNITS {
            if base.ends_with(u) || base.contains(&format!("{u}_")) {
                bad.push(format!("{name} has the non-base or abbreviated unit {u}"));
            }
        }
        if kind == "gauge" && !GAUGE_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            bad.push(format!(
                "gauge {name} does not end in a unit or what it counts ({GAUGE_SUFFIXES:?})"
            ));
        }
        if kind == "histogram" && !base.ends_with("_seconds") && !base.ends_with("_bytes") {
            bad.push(format!("histogram {name} does not end in a base unit"));
        }
    }
    for ((family, labels), (buckets, sum, count)) in &hists {
        let at = format!("{family}{labels:?}");
        if sum.is_none() {
            bad.push(format!("{at} has no _sum"));
        }
        let Some(count) = count else {
            bad.push(format!("{at} has no _count"));
            continue;
        };
        match buckets.last() {
            Some((le, n)) if le.is_infinite() => {
                if n != count {
                    bad.push(format!("{at}: the +Inf bucket {n} is not _count {count}"));
                }
            }
            _ => bad.push(format!("{at} has no le=\"+Inf\" bucket (last)")),
        }
        if !buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        {
            bad.push(format!("{at}: buckets not increasing and cumulative"));
        }
    }
    bad
}

/// Runs `promtool check metrics` on `text` and fails on any complaint.
/// Without `promtool` on `PATH` the check is skipped with a note, except in
/// CI (`CI` set), where `.ci/run` installs it: there a missing `promtool`
/// fails the test. Returns whether it ran.
pub fn promtool_check_metrics(text: &str) -> bool {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is not installed, and CI is set: .ci/run installs it (Debian's \
                 `prometheus` package)"
            );
            eprintln!(
                "skipped: `promtool check metrics` (promtool not on PATH; `apt-get install \
                 prometheus` has it)"
            );
            return false;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}):\n{said}\non:\n{text}",
        out.status
    );
    true
}
