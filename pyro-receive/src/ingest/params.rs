//! The query parameters of `/ingest`: name, time range, sample rate, format.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::RequestError;
use crate::labels::{AppName, parse_app_name};

/// The query parameters of `/ingest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestParams {
    /// `name`: the application name and its labels.
    pub name: AppName,
    /// `from`, in nanoseconds since the epoch (now when absent).
    pub from_nanos: i64,
    /// `until`, in nanoseconds since the epoch (now when absent).
    pub until_nanos: i64,
    /// `sampleRate` in Hz (100 when absent or invalid, like Pyroscope).
    pub sample_rate: u32,
    /// `spyName` (`unknown` when absent).
    pub spy_name: String,
    /// `format`, lower-cased, if given.
    pub format: Option<String>,
}

/// Parses the query string of an `/ingest` request.
pub fn parse_params(query: &str, now_nanos: i64) -> Result<IngestParams, RequestError> {
    let mut name = None;
    let (mut from, mut until, mut rate, mut spy, mut format) = (None, None, None, None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "name" => name = Some(v.into_owned()),
            "from" => from = Some(v.into_owned()),
            "until" => until = Some(v.into_owned()),
            "sampleRate" => rate = Some(v.into_owned()),
            "spyName" => spy = Some(v.into_owned()),
            "format" => format = Some(v.trim().to_ascii_lowercase()),
            _ => {}
        }
    }
    let name = name.ok_or_else(|| RequestError::invalid("name: parameter is required"))?;
    let name = parse_app_name(&name).map_err(|e| RequestError::invalid(format!("name: {e}")))?;
    let time = |param: &str, v: Option<String>| match v {
        None => Ok(now_nanos),
        Some(v) => parse_time(&v, now_nanos)
            .ok_or_else(|| RequestError::invalid(format!("{param}: cannot parse time {v:?}"))),
    };
    let from_nanos = time("from", from)?;
    let until_nanos = time("until", until)?;
    let sample_rate = rate.and_then(|r| r.trim().parse().ok()).unwrap_or(100);
    Ok(IngestParams {
        name,
        from_nanos,
        until_nanos,
        sample_rate,
        spy_name: spy
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into()),
        format: format.filter(|f| !f.is_empty()),
    })
}

pub(super) const NANOS: i64 = 1_000_000_000;

/// Parses a time as Pyroscope's `attime.Parse` does: all digits are `YYYYMMDD` (8 digits that
/// form a date), Unix milliseconds (13 digits), microseconds (16), nanoseconds (19) or seconds
/// (any other count); `now`, `now-1h`, `now+30s` (units `s`, `m`/`min`, `h`, `d`, `w`) are
/// relative to `now_nanos`. Returns nanoseconds since the epoch.
pub fn parse_time(s: &str, now_nanos: i64) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        if s.len() == 8 {
            let (y, m, d) = (
                s[..4].parse().ok()?,
                s[4..6].parse().ok()?,
                s[6..].parse().ok()?,
            );
            if let Some(days) = days_from_civil(y, m, d) {
                return days.checked_mul(86_400 * NANOS);
            }
        }
        let n: i64 = s.parse().ok()?;
        return match s.len() {
            13 => n.checked_mul(1_000_000),
            16 => n.checked_mul(1_000),
            19 => Some(n),
            _ => n.checked_mul(NANOS),
        };
    }
    let rest = s.strip_prefix("now")?;
    if rest.is_empty() {
        return Some(now_nanos);
    }
    let (sign, rest) = match rest.as_bytes()[0] {
        b'-' => (-1, &rest[1..]),
        b'+' => (1, &rest[1..]),
        _ => return None,
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let n: i64 = rest[..digits].parse().ok()?;
    let unit = match &rest[digits..] {
        "s" | "sec" | "secs" | "second" | "seconds" => NANOS,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * NANOS,
        "h" | "hour" | "hours" => 3_600 * NANOS,
        "d" | "day" | "days" => 86_400 * NANOS,
        "w" | "week" | "weeks" => 7 * 86_400 * NANOS,
        _ => return None,
    };
    now_nanos.checked_add(sign * n.checked_mul(unit)?)
}

/// Days since 1970-01-01 of a valid proleptic Gregorian date.
pub(super) fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d == 0 || d > month_days[m as usize - 1] {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

pub(super) fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
