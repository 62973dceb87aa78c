//! Units the sections share: durations, sizes and bounded counts, each refused with the field's
//! path and what it accepts.

use std::time::Duration;

use super::Result;
use crate::config::ConfigError;
use crate::config::raw::{RawDuration, RawSize};

fn duration(path: &str, raw: &RawDuration) -> Result<Duration> {
    let bad = |why: String| ConfigError::new(path, why);
    match raw {
        RawDuration::Seconds(s) if *s >= 0 => Ok(Duration::from_secs(*s as u64)),
        RawDuration::Seconds(s) => Err(bad(format!("{s} is negative"))),
        RawDuration::Fractional(f) if f.is_finite() && *f >= 0.0 => Ok(Duration::from_secs_f64(*f)),
        RawDuration::Fractional(f) => Err(bad(format!("{f} is not a duration"))),
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
            Ok(Duration::from_secs_f64(value * scale))
        }
    }
}

/// `n` when it lies within `min..=max`, else an error naming `path`.
pub(super) fn in_range(path: &str, n: i64, min: i64, max: i64) -> Result<i64> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(ConfigError::new(
            path,
            format!("{n} is out of range; it must be from {min} to {max}"),
        ))
    }
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

pub(super) fn opt_duration(
    path: &str,
    raw: &Option<RawDuration>,
    default: Duration,
    max: Duration,
) -> Result<Duration> {
    let Some(raw) = raw else { return Ok(default) };
    let d = duration(path, raw)?;
    if d.is_zero() || d > max {
        return Err(ConfigError::new(
            path,
            format!(
                "{} is out of range; it must be more than 0 and at most {} s",
                fmt_duration(d),
                max.as_secs()
            ),
        ));
    }
    Ok(d)
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
