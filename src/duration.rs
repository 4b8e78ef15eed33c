//! Durations as written in configs and on the command line: `250ms`, `30s`,
//! `5m`, `2h`, `7d` (a whole number and a unit), and back.

use std::time::Duration;

use crate::error::{Error, Result};

/// Parses `<n><unit>` with unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || {
        Error::invalid(
            "duration",
            format!("{s:?}: write a whole number and a unit: 250ms, 30s, 5m, 2h, 7d"),
        )
    };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// Formats a duration in the largest unit that divides it exactly.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms > 0 && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        for bad in [
            "",
            "5",
            "ms",
            "1.5s",
            "-1s",
            "5 parsecs",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(604_800)), "7d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}

/// A wait that doubles after each failure up to a cap, and starts over
/// after a success: the back-off of every retried Redis step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Doubling {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Doubling {
    /// Waits `first`, then twice as long each time, never more than `max`.
    pub(crate) const fn new(first: Duration, max: Duration) -> Self {
        Doubling {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next try; the one after it doubles.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// After a success: the next failure waits `first` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod doubling_tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over() {
        let ms = Duration::from_millis;
        let mut d = Doubling::new(ms(50), ms(300));
        let waits: Vec<Duration> = (0..5).map(|_| d.next_wait()).collect();
        assert_eq!(waits, [ms(50), ms(100), ms(200), ms(300), ms(300)]);
        d.reset();
        assert_eq!(d.next_wait(), ms(50));
        assert_eq!(d.next_wait(), ms(100));
    }
}
