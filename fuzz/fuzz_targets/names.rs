//! Fuzzes the small parsers of names and settings a user types: topic,
//! group and schedule names, key prefixes, keys, dedup ids, durations, rate
//! limits, stream ids, dead-letter ids, cron expressions with time zones
//! and stored schedule specs.
//!
//! Each must accept or refuse with a typed error, never panic; what it
//! accepts must print back to something it accepts again, unchanged.

#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use millrace::StreamId;
use millrace::duration::{format_duration, parse_duration};
use millrace::envelope::validate_key;
use millrace::fuzz_api;
use millrace::keys::{validate_dedup_id, validate_name, validate_prefix, validate_topic};
use millrace::RateLimit;
use millrace::{Timetable, fire_time_rfc3339};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s = text.as_ref();

    for what in ["topic", "group"] {
        if check(validate_name(what, s)).is_some() {
            assert!(!s.is_empty() && s.len() <= 200 && s.is_ascii());
        }
    }
    check(validate_topic(s));
    check(validate_prefix(s));
    check(validate_key(s));
    check(validate_dedup_id(s));

    if let Some(d) = check(parse_duration(s)) {
        assert_eq!(parse_duration(&format_duration(d)).ok(), Some(d));
    }
    if let Some(r) = check(RateLimit::from_str(s)) {
        assert!(r.permits > 0 && !r.per.is_zero());
    }
    if let Some(id) = check(StreamId::parse(s)) {
        assert_eq!(StreamId::parse(&id.to_string()).ok(), Some(id));
        let before = id.predecessor();
        assert!(before <= id);
    }
    check(fuzz_api::parse_dead_letter_id(s));

    // A cron expression, optionally followed by `|zone`.
    let (expr, tz) = match s.split_once('|') {
        Some((e, z)) => (e, Some(z)),
        None => (s, None),
    };
    if let Some(t) = check(Timetable::parse(expr, tz)) {
        let ms = data
            .iter()
            .fold(0u64, |a, b| a.rotate_left(8) ^ u64::from(*b));
        for at in [0, ms, ms % 4_102_444_800_000, i64::MAX as u64, u64::MAX] {
            if let Some(next) = t.next_after(at) {
                assert!(next > at);
                let _ = fire_time_rfc3339(next);
            }
            let _ = t.latest_in(at / 2, at);
            let _ = t.due(at / 2, at);
        }
    }

    // A stored schedule spec (JSON from the schedules hash).
    if let Some(spec) = check(fuzz_api::decode_schedule_spec("s", s))
        && check(spec.validate()).is_some()
    {
        let _ = check(spec.next_fire_after(0));
    }
});

/// Panics unless `r` is `Ok` or a typed input error.
fn check<T>(r: millrace::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(fuzz_api::is_input_error(&e), "untyped error: {e:?}");
            let _ = e.to_string();
            None
        }
    }
}
