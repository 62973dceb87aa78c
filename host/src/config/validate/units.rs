//! Units the sections share: durations, sizes and bounded integers. Every number of the
//! configuration goes through one of these checked conversions, so no value — negative, not a
//! number, or past any integer or `Duration` — gets further than an error naming its field and
//! what it accepts.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::Result;
use crate::config::ConfigError;
use crate::config::raw::{RawDuration, RawSize};

/// A duration: more than 0 and at most `max`. The value is compared in seconds before it becomes
/// a `Duration`, whose conversions panic past about 584 billion years.
fn duration(path: &str, raw: &RawDuration, max: Duration) -> Result<Duration> {
    let bad = |why: String| ConfigError::new(path, why);
    let (seconds, written) = match raw {
        RawDuration::Seconds(s) => (*s as f64, format!("{s} s")),
        RawDuration::Fractional(f) if f.is_nan() => {
            return Err(bad("nan is not a number of seconds".into()));
        }
        RawDuration::Fractional(f) => (*f, format!("{} s", float(*f))),
        RawDuration::Text(t) => {
            let t = t.trim();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(t.len());
            let (number, unit) = t.split_at(split);
            let value: f64 = number.parse().map_err(|_| {
                bad(format!(
                    "{t:?} is not a duration; write seconds (20) or a number with a unit (\"500ms\", \"1.5s\", \"2m\", \"1h\")"
                ))
            })?;
            let scale = match unit.trim() {
                "ms" => 0.001,
                "" | "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                other => {
                    return Err(bad(format!(
                        "unknown unit {other:?} in {t:?}; use ms, s, m or h"
                    )));
                }
            };
            (value * scale, format!("{t:?}"))
        }
    };
    // Within range, the conversion is exact for whole seconds and cannot fail; out of range, the
    // value is shown as a duration when it is one, else as written.
    let within = seconds > 0.0 && seconds <= max.as_secs_f64();
    let converted = match raw {
        RawDuration::Seconds(s) => u64::try_from(*s).ok().map(Duration::from_secs),
        _ => Duration::try_from_secs_f64(seconds).ok(),
    };
    match converted {
        Some(d) if within && !d.is_zero() => Ok(d),
        _ => Err(bad(format!(
            "{} is out of range; it must be more than 0 and at most {} s",
            converted.map_or(written, fmt_duration),
            max.as_secs()
        ))),
    }
}

/// A float as a person would write it: `0.5`, `1e30`.
fn float(f: f64) -> String {
    if f.is_finite() && f != 0.0 && !(1e-4..1e16).contains(&f.abs()) {
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

/// `n` as a `T` when it lies within `range` (which `T` must hold), else an error naming `path`.
pub(super) fn in_range<T: TryFrom<i64>>(
    path: &str,
    n: i64,
    range: RangeInclusive<i64>,
) -> Result<T> {
    range
        .contains(&n)
        .then(|| T::try_from(n).ok())
        .flatten()
        .ok_or_else(|| {
            ConfigError::new(
                path,
                format!(
                    "{n} is out of range; it must be from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// [`in_range`] for an optional field: `None` stays `None`.
pub(super) fn opt_in_range<T: TryFrom<i64>>(
    path: &str,
    n: Option<i64>,
    range: RangeInclusive<i64>,
) -> Result<Option<T>> {
    n.map(|n| in_range(path, n, range)).transpose()
}

/// A TCP port a connection can be made to: 1 to 65535.
pub(super) fn port(path: &str, n: i64) -> Result<u16> {
    in_range(path, n, 1..=65_535)
}

/// A size: whole bytes, or a number with `KB`, `MB` or `GB` (powers of 1024, as nginx counts
/// `client_max_body_size`); at least 1 byte, at most 1 TB.
pub(super) fn size(path: &str, raw: &RawSize) -> Result<u64> {
    const MAX: u64 = 1 << 40;
    let bytes = match raw {
        RawSize::Bytes(n) => u64::try_from(*n).ok(),
        RawSize::Text(text) => {
            let t = text.trim();
            let upper = t.to_ascii_uppercase();
            let (number, unit) = [
                ("KB", 1u64 << 10),
                ("MB", 1 << 20),
                ("GB", 1 << 30),
                ("B", 1),
            ]
            .into_iter()
            .find_map(|(suffix, unit)| upper.strip_suffix(suffix).map(|n| (n.trim(), unit)))
            .unwrap_or((t, 1));
            number.parse::<u64>().ok().and_then(|n| n.checked_mul(unit))
        }
    };
    match bytes {
        Some(b) if (1..=MAX).contains(&b) => Ok(b),
        _ => Err(ConfigError::new(
            path,
            format!(
                "{} is not a size from 1 byte to 1 TB; write bytes (1048576) or a number with KB, MB or GB (\"10MB\")",
                match raw {
                    RawSize::Bytes(n) => n.to_string(),
                    RawSize::Text(t) => format!("{t:?}"),
                }
            ),
        )),
    }
}

/// An optional duration: `default` when absent, else more than 0 and at most `max`.
pub(super) fn opt_duration(
    path: &str,
    raw: &Option<RawDuration>,
    default: Duration,
    max: Duration,
) -> Result<Duration> {
    match raw {
        None => Ok(default),
        Some(raw) => duration(path, raw, max),
    }
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn check(raw: RawDuration) -> std::result::Result<Duration, String> {
        duration("d", &raw, DAY).map_err(|e| e.reason)
    }

    #[test]
    fn durations_past_any_duration_are_refused_not_converted() {
        let range = "is out of range; it must be more than 0 and at most 86400 s";
        for (raw, shown) in [
            (RawDuration::Fractional(1e30), "1e30 s"),
            (RawDuration::Fractional(f64::INFINITY), "inf s"),
            (RawDuration::Fractional(f64::NEG_INFINITY), "-inf s"),
            (RawDuration::Fractional(-0.5), "-0.5 s"),
            (RawDuration::Fractional(1e-12), "0 s"),
            (
                RawDuration::Fractional(f64::MAX),
                "1.7976931348623157e308 s",
            ),
            (RawDuration::Seconds(i64::MIN), "-9223372036854775808 s"),
            (RawDuration::Seconds(i64::MAX), "9223372036854775807 s"),
            (
                RawDuration::Text("99999999999999999999999h".into()),
                "\"99999999999999999999999h\"",
            ),
        ] {
            match check(raw.clone()) {
                Ok(d) => panic!("{raw:?} accepted as {d:?}"),
                Err(why) => assert_eq!(why, format!("{shown} {range}"), "{raw:?}"),
            }
        }
        assert_eq!(
            check(RawDuration::Fractional(f64::NAN)).unwrap_err(),
            "nan is not a number of seconds"
        );
        assert_eq!(
            check(RawDuration::Fractional(0.25)),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            check(RawDuration::Text("1h".into())),
            Ok(Duration::from_secs(3600))
        );
        assert_eq!(check(RawDuration::Seconds(86_400)), Ok(DAY));
    }

    #[test]
    fn integers_convert_only_within_their_range() {
        assert_eq!(in_range::<u32>("n", 7, 1..=20).unwrap(), 7);
        let e = in_range::<u32>("n", i64::MIN, 1..=20).unwrap_err();
        assert_eq!(
            e.to_string(),
            "n: -9223372036854775808 is out of range; it must be from 1 to 20"
        );
        assert!(in_range::<u16>("p", 65_536, 1..=65_535).is_err());
        assert!(port("p", 0).is_err());
        assert_eq!(port("p", 65_535).unwrap(), 65_535);
    }
}
