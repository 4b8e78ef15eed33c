//! Cron schedules: a message published to a topic at each fire time.
//!
//! A schedule's spec lives in the hash `mr:schedules` (name → JSON) and the
//! time of its last published fire in `mr:schedules:last` (name → ms). Any
//! number of [`Scheduler`](crate::Scheduler)s may run: each one reloads the specs every few
//! seconds, sleeps until the earliest fire, and publishes it through the
//! ordinary publish path with the dedup id `schedule:<name>:<fire ms>`, so a
//! fire publishes exactly once however many schedulers wake for it. It then
//! moves `last` forward with the `schedule_mark` script (never backward).
//! The time arithmetic is pure ([`Timetable`]) and tested without Redis.
//!
//! # Missed fires: once on return
//!
//! Fires that pass while no scheduler runs (or while Redis is unreachable)
//! are not replayed one by one. When a scheduler comes back it publishes
//! only the latest fire time in `(last, now]` — one message, whose
//! `millrace-fire-time` header says which fire it stands for — and then
//! continues with the next fire after now. The same holds for a scheduler
//! that falls behind (a slow publish, a paused process): fires never queue
//! up. A schedule that is added, or replaced with another cron expression or
//! zone, starts from the time of the add: fires before it are never
//! published. Replacing it with the same timing (other data, or the same
//! spec again from a deploy script) keeps `last`, so the catch-up survives.
//!
//! # Times
//!
//! Fire times are computed in the schedule's time zone (`tz`, an IANA name;
//! UTC when absent) and measured on Redis's clock (`TIME`), so schedulers on
//! hosts with skewed clocks agree. A local time that does not exist (the
//! hour skipped when daylight saving time starts) does not fire that day; a
//! local time that happens twice (when it ends) fires once, at its first
//! occurrence.
//!
//! # Cron expressions
//!
//! Standard 5-field expressions (`minute hour day-of-month month
//! day-of-week`) are read as in crontab: day of week `0`–`7` with `0` and
//! `7` for Sunday (or `sun`–`sat`). They may restrict day of month or day of
//! week but not both, since crontab fires when *either* matches and the
//! `cron` crate when *both* do. The crate's own 6- and 7-field form (seconds
//! first, optional year last; day of week `1`–`7` with `1` for Sunday) and
//! its `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` are accepted as
//! the crate reads them.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::envelope::{Headers, validate_key};
use crate::error::{Error, Result};
use crate::store::keys::{validate_name, validate_topic};
use crate::topic::Catalog;

/// Header naming the schedule that published a message.
pub const HEADER_SCHEDULE: &str = "millrace-schedule";
/// Header with the fire time a message stands for (RFC 3339, UTC).
pub const HEADER_FIRE_TIME: &str = "millrace-fire-time";
/// How long a fire's dedup id is remembered. Past it, a late scheduler is
/// still stopped by `last`; the dedup id covers schedulers racing for the
/// same fire.
pub const FIRE_DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often a [`Scheduler`](crate::Scheduler) reloads the schedules by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// A schedule: publish `data` to `topic` at each fire time of `cron` in `tz`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// The schedule's name (the group-name rules).
    pub name: String,
    /// The cron expression, as given.
    pub cron: String,
    /// IANA time zone the expression is read in; UTC when `None`.
    #[serde(default)]
    pub tz: Option<String>,
    /// Topic the messages go to.
    pub topic: String,
    /// Partition key of the messages, if any.
    #[serde(default)]
    pub key: Option<String>,
    /// The payload (encoded as MessagePack like any other JSON publish).
    pub data: serde_json::Value,
    /// Headers of every message; `millrace-schedule` and
    /// `millrace-fire-time` are added (and win over headers of those names).
    #[serde(default)]
    pub headers: Headers,
}

impl ScheduleSpec {
    /// A schedule in UTC, without key or headers. Checks the name, the cron
    /// expression and the topic name.
    pub fn new(
        name: impl Into<String>,
        cron: impl Into<String>,
        topic: impl Into<String>,
        data: serde_json::Value,
    ) -> Result<Self> {
        let spec = ScheduleSpec {
            name: name.into(),
            cron: cron.into(),
            tz: None,
            topic: topic.into(),
            key: None,
            data,
            headers: Headers::new(),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Reads the expression in an IANA time zone (`Europe/Berlin`).
    #[must_use]
    pub fn tz(mut self, tz: impl Into<String>) -> Self {
        self.tz = Some(tz.into());
        self
    }

    /// Sets the partition key.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Checks every field: name, cron expression, time zone, topic, key.
    pub fn validate(&self) -> Result<()> {
        validate_name("schedule", &self.name)?;
        self.timetable()?;
        validate_topic(&self.topic)?;
        if let Some(k) = &self.key {
            validate_key(k)?;
        }
        Ok(())
    }

    /// The parsed expression and zone.
    pub fn timetable(&self) -> Result<Timetable> {
        Timetable::parse(&self.cron, self.tz.as_deref())
    }

    /// The first fire time strictly after `after_ms` (ms since the epoch),
    /// or `None` if the schedule never fires again.
    pub fn next_fire_after(&self, after_ms: u64) -> Result<Option<u64>> {
        Ok(self.timetable()?.next_after(after_ms))
    }
}

/// A cron expression read in a time zone: the pure time arithmetic of a
/// schedule. Instants are milliseconds since the Unix epoch.
#[derive(Clone, Debug)]
pub struct Timetable {
    schedule: cron::Schedule,
    tz: Tz,
}

impl Timetable {
    /// Parses a cron expression (see the module docs for the accepted forms)
    /// and an optional IANA zone (UTC when `None`).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Timetable> {
        let tz = match tz {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                Error::invalid(
                    "time zone",
                    format!("{name:?} is not an IANA time zone (e.g. Europe/Berlin, UTC)"),
                )
            })?,
        };
        let schedule = parse_cron(expr)?;
        Ok(Timetable { schedule, tz })
    }

    /// The time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `after_ms`.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = self.at(after_ms)?;
        self.schedule.after(&after).next().and_then(to_ms)
    }

    /// The fire to publish when a scheduler (re)starts or wakes: the LATEST
    /// fire time in `(last_ms, now_ms]`, or `None` when nothing fired in
    /// between. Earlier fires in that interval are skipped on purpose (the
    /// missed-fire policy: once on return, not once per missed tick).
    pub fn latest_in(&self, last_ms: u64, now_ms: u64) -> Option<u64> {
        if now_ms <= last_ms {
            return None;
        }
        // `next_back` gives the last fire strictly before its start; fires
        // are whole seconds, so starting 1 ms after now includes now.
        let start = self.at(now_ms.checked_add(1)?)?;
        let mut fire = self.schedule.after(&start).next_back()?;
        // A local time that happens twice fires once, at its first
        // occurrence (as going forward with `next_after` does).
        if let LocalResult::Ambiguous(first, _) = self.tz.from_local_datetime(&fire.naive_local()) {
            fire = first;
        }
        to_ms(fire).filter(|&f| f > last_ms && f <= now_ms)
    }

    /// When a schedule whose last fire was `last_ms` should publish next,
    /// seen at `now_ms`: the latest missed fire if one is due (at or before
    /// now), else the next one after `last_ms`; `None` if it never fires.
    pub fn due(&self, last_ms: u64, now_ms: u64) -> Option<u64> {
        self.latest_in(last_ms, now_ms)
            .or_else(|| self.next_after(last_ms.max(now_ms)))
    }

    fn at(&self, ms: u64) -> Option<DateTime<Tz>> {
        let ms = i64::try_from(ms).ok()?;
        self.tz.timestamp_millis_opt(ms).single()
    }
}

fn to_ms(t: DateTime<Tz>) -> Option<u64> {
    u64::try_from(t.timestamp_millis()).ok()
}

/// A fire time as RFC 3339 in UTC, whole seconds: `2026-11-27T10:00:00Z`.
pub fn fire_time_rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Reads a cron expression in one of the accepted forms into the crate's.
fn parse_cron(expr: &str) -> Result<cron::Schedule> {
    let bad = |reason: String| Error::invalid("cron expression", format!("{expr:?}: {reason}"));
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let crate_form = match fields.len() {
        1 if fields[0].starts_with('@') => fields[0].to_string(),
        5 => {
            let [minute, hour, dom, month, dow] = fields[..] else {
                unreachable!("five fields")
            };
            let restricted = |f: &str| f != "*" && f != "?";
            if restricted(dom) && restricted(dow) {
                return Err(bad(
                    "restrict day of month or day of week, not both (crontab fires when either \
                     matches; write two schedules)"
                        .into(),
                ));
            }
            let dow = crontab_days_of_week(dow).map_err(|r| bad(format!("day of week: {r}")))?;
            // The crate wants `?` in one of the two day fields when the
            // other is given; `*` works for both.
            format!("0 {minute} {hour} {dom} {month} {dow}")
        }
        6 | 7 => fields.join(" "),
        n => {
            return Err(bad(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), 6 or 7 with \
                 seconds first and an optional year last, or @hourly/@daily/@weekly/@monthly/\
                 @yearly; got {n}"
            )));
        }
    };
    cron::Schedule::from_str(&crate_form).map_err(|e| bad(crate_error(&e.to_string())))
}

/// The cron crate's parse errors can run over several lines (a winnow
/// report with a caret); keep one line. Its range message says "less than"
/// where it means "at most" (`Minutes must be less than 59` for 61).
fn crate_error(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
        .unwrap_or("not a cron expression");
    line.replace(" must be less than ", " must be at most ")
}

/// Translates a crontab day-of-week field (`0`–`7`, `0`/`7` Sunday, names,
/// lists, ranges and steps) into the cron crate's numbering (`1`–`7`, `1`
/// Sunday), as an explicit list.
fn crontab_days_of_week(field: &str) -> std::result::Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    const NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let day = |s: &str| -> std::result::Result<usize, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(d) = NAMES.iter().position(|n| *n == lower) {
            return Ok(d);
        }
        match s.parse::<usize>() {
            Ok(d) if d <= 7 => Ok(d),
            _ => Err(format!("{s:?} is not a day (0-7 or sun-sat)")),
        }
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => match s.parse::<usize>() {
                Ok(n) if n > 0 => (r, Some(n)),
                _ => return Err(format!("{s:?} is not a step")),
            },
            None => (item, None),
        };
        let (lo, hi) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            Some((a, b)) => (day(a)?, day(b)?),
            // `N/S` is `N-7/S`, as crontab reads it.
            None if step.is_some() => (day(range)?, 7),
            None => {
                let d = day(range)?;
                (d, d)
            }
        };
        if lo > hi {
            return Err(format!("{item:?}: the range runs backwards"));
        }
        for d in (lo..=hi).step_by(step.unwrap_or(1)) {
            days[d % 7] = true;
        }
    }
    let list: Vec<String> = (0..7)
        .filter(|&d| days[d])
        .map(|d| (d + 1).to_string())
        .collect();
    Ok(list.join(","))
}

/// Adds a schedule, or replaces the one of that name. The topic must
/// exist ([`Error::TopicNotFound`]).
///
/// A new schedule starts from now: fires before this call are never
/// published. So does a replacement with another cron expression or
/// zone. A replacement with the same timing (other data, key or
/// headers, or the same spec again, as a deploy script might add it)
/// keeps its last fire, so a missed fire is still published on return.
pub(crate) async fn add_schedule(cat: &Catalog, spec: &ScheduleSpec) -> Result<()> {
    spec.validate()?;
    cat.topic(&spec.topic).await?;
    let json = serde_json::to_string(spec).map_err(|e| Error::Encode(format!("schedule: {e}")))?;
    let store = cat.store();
    let existing = store.schedule_json(&spec.name).await?;
    let same_timing = existing
        .and_then(|old| serde_json::from_str::<ScheduleSpec>(&old).ok())
        .is_some_and(|old| old.cron == spec.cron && old.tz == spec.tz);
    if !same_timing {
        // `last` first: a scheduler that sees the new spec must not
        // catch up on fires of the old timing.
        let now = cat.redis_time_ms().await?;
        store.set_schedule_last(&spec.name, now).await?;
    }
    store.put_schedule(&spec.name, &json).await
}

/// Every schedule, sorted by name.
pub(crate) async fn list_schedules(cat: &Catalog) -> Result<Vec<ScheduleSpec>> {
    let raw = cat.store().schedules_json().await?;
    let mut specs = raw
        .into_iter()
        .map(|(name, json)| decode_spec(&name, &json))
        .collect::<Result<Vec<_>>>()?;
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(specs)
}

/// Removes a schedule; false if there was none of that name.
pub(crate) async fn remove_schedule(cat: &Catalog, name: &str) -> Result<bool> {
    validate_name("schedule", name)?;
    cat.store().remove_schedule(name).await
}

/// When each schedule last fired (ms since the epoch, Redis clock).
pub(crate) async fn schedule_last_fires(cat: &Catalog) -> Result<HashMap<String, u64>> {
    cat.store().schedule_last_fires().await
}

/// Decodes a schedule spec as stored in the schedules hash (JSON).
pub(crate) fn decode_spec(name: &str, json: &str) -> Result<ScheduleSpec> {
    serde_json::from_str(json).map_err(|e| Error::Decode(format!("schedule {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ms of a UTC time.
    fn utc(s: &str) -> u64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis() as u64
    }

    fn show(ms: Option<u64>) -> Option<String> {
        ms.map(fire_time_rfc3339)
    }

    #[test]
    fn five_fields_read_as_crontab_with_seconds_zero() {
        let t = Timetable::parse("*/15 * * * *", None).unwrap();
        assert_eq!(
            show(t.next_after(utc("2026-01-05T10:07:30Z"))).as_deref(),
            Some("2026-01-05T10:15:00Z")
        );
        // Strictly after: a fire time itself is not next.
        assert_eq!(
            show(t.next_after(utc("2026-01-05T10:15:00Z"))).as_deref(),
            Some("2026-01-05T10:30:00Z")
        );
        let every_second = Timetable::parse("* * * * * *", None).unwrap();
        assert_eq!(
            every_second.next_after(utc("2026-01-05T10:00:00Z") + 500),
            Some(utc("2026-01-05T10:00:01Z"))
        );
    }

    #[test]
    fn crontab_days_of_week_count_from_sunday_zero() {
        // 2026-01-05 is a Monday.
        let weekdays = Timetable::parse("0 9 * * 1-5", None).unwrap();
        assert_eq!(
            show(weekdays.next_after(utc("2026-01-03T12:00:00Z"))).as_deref(),
            Some("2026-01-05T09:00:00Z")
        );
        let sunday = Timetable::parse("0 9 * * 7", None).unwrap();
        let sunday0 = Timetable::parse("0 9 * * 0", None).unwrap();
        let sun = Timetable::parse("0 9 * * SUN", None).unwrap();
        for t in [&sunday, &sunday0, &sun] {
            assert_eq!(
                show(t.next_after(utc("2026-01-05T00:00:00Z"))).as_deref(),
                Some("2026-01-11T09:00:00Z")
            );
        }
        assert_eq!(crontab_days_of_week("5-7").unwrap(), "1,6,7");
        assert_eq!(crontab_days_of_week("*/2").unwrap(), "1,3,5,7");
        assert_eq!(crontab_days_of_week("mon,wed/7").unwrap(), "2,4");
        assert_eq!(crontab_days_of_week("1/3").unwrap(), "1,2,5");
        assert!(crontab_days_of_week("8").is_err());
        assert!(crontab_days_of_week("5-1").is_err());
        // The crate's own form keeps its numbering: 2 is Monday.
        let crate_monday = Timetable::parse("0 0 9 * * 2", None).unwrap();
        assert_eq!(
            show(crate_monday.next_after(utc("2026-01-03T12:00:00Z"))).as_deref(),
            Some("2026-01-05T09:00:00Z")
        );
    }

    #[test]
    fn fire_times_follow_the_zone() {
        let t = Timetable::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
        // Winter: UTC+1.
        assert_eq!(
            show(t.next_after(utc("2026-01-05T00:00:00Z"))).as_deref(),
            Some("2026-01-05T08:00:00Z")
        );
        // Summer: UTC+2.
        assert_eq!(
            show(t.next_after(utc("2026-07-01T00:00:00Z"))).as_deref(),
            Some("2026-07-01T07:00:00Z")
        );
        // 02:30 does not exist on 2026-03-29 in Berlin: that day is skipped.
        let gap = Timetable::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            show(gap.next_after(utc("2026-03-28T12:00:00Z"))).as_deref(),
            Some("2026-03-30T00:30:00Z")
        );
        // 02:30 happens twice on 2026-10-25: it fires once, the first time.
        let twice = Timetable::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let first = twice.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(fire_time_rfc3339(first), "2026-10-25T00:30:00Z");
        assert_eq!(
            show(twice.next_after(first)).as_deref(),
            Some("2026-10-26T01:30:00Z")
        );
        // ...also when looking back from after the second occurrence.
        assert_eq!(twice.latest_in(first, utc("2026-10-25T01:45:00Z")), None);
        assert_eq!(
            twice.latest_in(first - 1, utc("2026-10-25T01:45:00Z")),
            Some(first)
        );
    }

    #[test]
    fn on_return_only_the_latest_missed_fire_is_published() {
        let t = Timetable::parse("* * * * *", None).unwrap();
        let last = utc("2026-01-05T10:00:00Z");
        let now = utc("2026-01-05T10:10:30Z");
        assert_eq!(
            show(t.latest_in(last, now)).as_deref(),
            Some("2026-01-05T10:10:00Z")
        );
        assert_eq!(t.due(last, now), Some(utc("2026-01-05T10:10:00Z")));
        // A fire exactly at now counts; the last fire itself does not.
        assert_eq!(
            t.latest_in(last, utc("2026-01-05T10:01:00Z")),
            Some(utc("2026-01-05T10:01:00Z"))
        );
        assert_eq!(t.latest_in(last, last), None);
        assert_eq!(t.latest_in(last, last + 59_999), None);
        assert_eq!(t.latest_in(now, last), None);
        // Nothing missed: due is the next fire after last.
        assert_eq!(
            t.due(last, last + 30_000),
            Some(utc("2026-01-05T10:01:00Z"))
        );
        // After publishing the catch-up, the next one is the next minute.
        assert_eq!(
            t.due(utc("2026-01-05T10:10:00Z"), now),
            Some(utc("2026-01-05T10:11:00Z"))
        );
        // A schedule that never fires again.
        let past = Timetable::parse("0 0 0 1 1 * 2020", None).unwrap();
        assert_eq!(past.due(last, now), None);
        assert_eq!(
            show(past.latest_in(0, now)).as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_invalid_arguments() {
        for (cron, tz) in [
            ("", None),
            ("* * *", None),
            ("61 * * * *", None),
            ("0 9 1 * MON", None),
            ("0 9 * * 8", None),
            ("@sometimes", None),
            ("* * * * *", Some("Mars/Olympus_Mons")),
        ] {
            let e = Timetable::parse(cron, tz).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{cron:?}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        Timetable::parse("@daily", Some("UTC")).unwrap();
        Timetable::parse("0 30 9 * * Mon-Fri 2030", Some("America/New_York")).unwrap();
    }

    #[test]
    fn specs_check_every_field_and_round_trip_as_json() {
        let spec = ScheduleSpec::new(
            "nightly-report",
            "0 2 * * *",
            "erp.v1.report.due",
            serde_json::json!({"report": "sales"}),
        )
        .unwrap()
        .tz("Europe/Berlin")
        .key("tenant-1")
        .header("source", "schedule");
        spec.validate().unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(decode_spec("nightly-report", &json).unwrap(), spec);
        let e =
            ScheduleSpec::new("Nightly", "* * * * *", "t", serde_json::Value::Null).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidName {
                    what: "schedule",
                    ..
                }
            ),
            "{e}"
        );
        assert!(spec.clone().tz("Nowhere").validate().is_err());
        assert!(spec.clone().key("").validate().is_err());
        let bad_topic =
            ScheduleSpec::new("a", "* * * * *", "t.dlq", serde_json::Value::Null).unwrap_err();
        assert!(matches!(
            bad_topic,
            Error::InvalidName { what: "topic", .. }
        ));
    }
}
