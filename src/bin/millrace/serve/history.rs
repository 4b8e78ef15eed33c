//! The charts' data: the server samples the overview every few seconds and
//! keeps the last hour per topic (totals published, per group totals
//! handled and the lag), so the page draws rates and lag without
//! Prometheus. Rates are the differences between consecutive samples.
//! Memory is bounded: at most an hour of samples per topic, and topics
//! that disappear are dropped at the next sample.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// How far back the charts go.
pub const SPAN: Duration = Duration::from_secs(3600);

/// The sampled history of every topic.
pub struct History {
    interval: Duration,
    topics: Mutex<HashMap<String, VecDeque<Sample>>>,
}

/// One topic at one moment.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    at_ms: u64,
    /// Total ever published, if the overview said.
    published: Option<u64>,
    /// Per group: total handled (if known) and lag.
    groups: Vec<(Arc<str>, Option<u64>, u64)>,
}

impl History {
    /// An empty history sampled every `interval`.
    pub fn new(interval: Duration) -> Self {
        History {
            interval,
            topics: Mutex::default(),
        }
    }

    /// How often the server samples.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Most samples kept per topic.
    fn capacity(&self) -> usize {
        (SPAN.as_millis() / self.interval.as_millis().max(1)) as usize + 1
    }

    /// Records the overview's topics (`GET /api/v1/topics`'s `topics`) as
    /// seen at `at_ms`; topics no longer there are forgotten.
    pub fn record(&self, at_ms: u64, topics: &[Value]) {
        let cap = self.capacity();
        let mut all = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::HashSet::new();
        for t in topics {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                continue;
            };
            seen.insert(name.to_string());
            let series = all.entry(name.to_string()).or_default();
            let groups = t
                .get("groups")
                .and_then(Value::as_array)
                .map(|gs| {
                    gs.iter()
                        .filter_map(|g| {
                            let name = g.get("group")?.as_str()?;
                            // Share the name with the sample before.
                            let name = series
                                .back()
                                .and_then(|s| s.groups.iter().find(|(n, ..)| &**n == name))
                                .map_or_else(|| Arc::from(name), |(n, ..)| n.clone());
                            Some((
                                name,
                                g.get("handled").and_then(Value::as_u64),
                                g.get("lag").and_then(Value::as_u64).unwrap_or(0),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            series.push_back(Sample {
                at_ms,
                published: t.get("published").and_then(Value::as_u64),
                groups,
            });
            while series.len() > cap {
                series.pop_front();
            }
        }
        all.retain(|name, _| seen.contains(name));
    }

    /// The rates per second over the last two samples: the topic's
    /// published, and each group's handled.
    pub fn latest_rates(&self, topic: &str) -> (Option<f64>, HashMap<String, f64>) {
        let all = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let Some(series) = all.get(topic) else {
            return (None, HashMap::new());
        };
        let n = series.len();
        if n < 2 {
            return (None, HashMap::new());
        }
        let (a, b) = (&series[n - 2], &series[n - 1]);
        let published = rate(a.at_ms, a.published, b.at_ms, b.published);
        let groups = b
            .groups
            .iter()
            .filter_map(|(g, handled, _)| {
                let before = a.groups.iter().find(|(n, ..)| n == g)?.1;
                Some((g.to_string(), rate(a.at_ms, before, b.at_ms, *handled)?))
            })
            .collect();
        (published, groups)
    }

    /// The charts of `topic` as JSON: `[ms, value]` points of the
    /// published rate, and per group of the handled rate and the lag.
    pub fn chart(&self, topic: &str) -> Value {
        let all = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let empty = VecDeque::new();
        let series = all.get(topic).unwrap_or(&empty);
        let pairs = || series.iter().zip(series.iter().skip(1));
        let published: Vec<Value> = pairs()
            .filter_map(|(a, b)| {
                rate(a.at_ms, a.published, b.at_ms, b.published).map(|r| json!([b.at_ms, r]))
            })
            .collect();
        let mut names: Vec<Arc<str>> = Vec::new();
        for s in series {
            for (g, ..) in &s.groups {
                if !names.contains(g) {
                    names.push(g.clone());
                }
            }
        }
        names.sort();
        let groups: Vec<Value> = names
            .iter()
            .map(|g| {
                let of = |s: &Sample| s.groups.iter().find(|(n, ..)| n == g).cloned();
                let handled: Vec<Value> = pairs()
                    .filter_map(|(a, b)| {
                        let (x, y) = (of(a)?, of(b)?);
                        rate(a.at_ms, x.1, b.at_ms, y.1).map(|r| json!([b.at_ms, r]))
                    })
                    .collect();
                let lag: Vec<Value> = series
                    .iter()
                    .filter_map(|s| of(s).map(|(_, _, lag)| json!([s.at_ms, lag])))
                    .collect();
                json!({"group": &**g, "handled_per_s": handled, "lag": lag})
            })
            .collect();
        json!({
            "topic": topic,
            "interval_s": self.interval.as_secs_f64(),
            "published_per_s": published,
            "groups": groups,
        })
    }
}

/// Per second from `x` at `t0` to `y` at `t1`; none when either is
/// unknown, time did not pass, or the total went down (a topic deleted and
/// made again).
fn rate(t0: u64, x: Option<u64>, t1: u64, y: Option<u64>) -> Option<f64> {
    let (x, y) = (x?, y?);
    if t1 <= t0 || y < x {
        return None;
    }
    Some((y - x) as f64 * 1000.0 / (t1 - t0) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(published: u64, handled: u64, lag: u64) -> Value {
        json!({"name": "t", "published": published,
               "groups": [{"group": "g", "handled": handled, "lag": lag}]})
    }

    #[test]
    fn rates_are_differences_over_time() {
        let h = History::new(Duration::from_secs(10));
        h.record(1_000, &[topic(100, 50, 50)]);
        assert_eq!(h.latest_rates("t").0, None, "one sample has no rate");
        h.record(11_000, &[topic(300, 150, 150)]);
        let (published, groups) = h.latest_rates("t");
        assert_eq!(published, Some(20.0));
        assert_eq!(groups.get("g"), Some(&10.0));
        let c = h.chart("t");
        assert_eq!(c["published_per_s"], json!([[11_000, 20.0]]));
        assert_eq!(c["groups"][0]["handled_per_s"], json!([[11_000, 10.0]]));
        assert_eq!(c["groups"][0]["lag"], json!([[1_000, 50], [11_000, 150]]));
    }

    #[test]
    fn an_hour_is_kept_and_gone_topics_are_forgotten() {
        let h = History::new(Duration::from_secs(600));
        for i in 0..20 {
            h.record(i * 600_000, &[topic(i, i, 0)]);
        }
        assert_eq!(
            h.chart("t")["groups"][0]["lag"].as_array().unwrap().len(),
            7
        );
        h.record(20 * 600_000, &[]);
        assert_eq!(h.chart("t")["groups"], json!([]));
    }

    #[test]
    fn a_counter_that_went_down_or_is_missing_has_no_rate() {
        assert_eq!(rate(0, Some(10), 1000, Some(5)), None);
        assert_eq!(rate(0, None, 1000, Some(5)), None);
        assert_eq!(rate(1000, Some(1), 1000, Some(5)), None);
        assert_eq!(rate(0, Some(1), 500, Some(6)), Some(10.0));
    }
}
