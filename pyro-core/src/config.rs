//! The one configuration idiom every pyro stage follows.
//!
//! A stage's config is plain data: a struct with Alloy's argument names and defaults, which
//! derives `serde::Deserialize` with `#[serde(default, deny_unknown_fields)]`, holds typed enums
//! instead of strings, and keeps runtime objects (`forward_to` receivers, target streams, metric
//! registries) out — those go to the stage's builder. Durations are spelled as Alloy (Go's
//! `time.ParseDuration`) spells them, `"15s"`, `"1m30s"`, `"500ms"`, through [`duration`] and
//! [`opt_duration`]. A value that cannot take effect is an error at build time naming the field.
//!
//! ```
//! use std::time::Duration;
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct MyConfig {
//!     #[serde(with = "pyro_core::config::duration")]
//!     refresh_interval: Duration,
//! }
//! impl Default for MyConfig {
//!     fn default() -> Self { Self { refresh_interval: Duration::from_secs(60) } }
//! }
//!
//! let c: MyConfig = serde_json::from_str(r#"{"refresh_interval": "1m30s"}"#).unwrap();
//! assert_eq!(c.refresh_interval, Duration::from_secs(90));
//! let e = serde_json::from_str::<MyConfig>(r#"{"refresh_intervall": "1s"}"#).unwrap_err();
//! assert!(e.to_string().contains("refresh_intervall"));
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A secret string (password, token). Its `Debug` output is `Secret(****)`; it has no
/// `Display`, so it cannot end up in a log line by accident. [`Secret::expose`] is the one way to
/// read it.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself. Call only where it is put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// TLS settings of a client (Alloy's `tls_config` block), shared by the Pyroscope writer and
/// Kubernetes discovery. Without a `ca_file` the client's default roots are trusted; with one,
/// only the certificates in it (as Go's `RootCAs` does).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate chain (mutual TLS); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file with the client's private key.
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against, instead of the URL's host.
    pub server_name: Option<String>,
    /// Accept any server certificate. Dangerous: an explicit opt-in for test setups only.
    pub insecure_skip_verify: bool,
}

/// A duration string is not in Go's `time.ParseDuration` syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (expected Go syntax such as \"15s\", \"1m30s\", \"500ms\")"
)]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses a duration the way Go's `time.ParseDuration` (and so Alloy) does: a sequence of
/// decimal numbers, each with an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`,
/// `h`), such as `"300ms"`, `"1.5h"` or `"2h45m"`. `"0"` is zero; negative durations are refused
/// (no pyro setting takes one).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.strip_prefix('+').unwrap_or(input);
    if s.starts_with('-') {
        return Err(err("negative durations are not accepted"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number"));
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, next) = after.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err("number too large"))?
        };
        let mut frac_nanos: u128 = 0;
        let mut scale = nanos_per;
        for d in frac_part.bytes().take(30) {
            scale /= 10;
            frac_nanos += u128::from(d - b'0') * scale;
        }
        total = int
            .checked_mul(nanos_per)
            .and_then(|v| v.checked_add(frac_nanos))
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("too large"))?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err("too large"))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Formats a duration as Go's `time.Duration.String` does (`"1m30s"`, `"500ms"`, `"0s"`), so
/// what [`parse_duration`] reads round-trips.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}us", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let mut out = String::new();
    let total_secs = d.as_secs();
    let (h, m) = (total_secs / 3600, (total_secs / 60) % 60);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    let sec_nanos = nanos % 60_000_000_000;
    out.push_str(&format!("{}s", trim_fraction(sec_nanos, 1_000_000_000)));
    out
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let (int, frac) = (value / unit, value % unit);
    if frac == 0 {
        return int.to_string();
    }
    let width = (unit.ilog10()) as usize;
    let digits = format!("{frac:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

/// `#[serde(with = "pyro_core::config::duration")]` for a [`Duration`] field spelled as Alloy
/// spells it (`"15s"`). Integers are refused: a bare number has no unit.
pub mod duration {
    use super::*;

    /// Serializes as [`format_duration`] spells it.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Deserializes from a Go duration string.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(Visitor)
    }

    struct Visitor;

    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string such as \"15s\" or \"1m30s\"")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
}

/// `#[serde(default, with = "pyro_core::config::opt_duration")]` for an `Option<Duration>`
/// field: `null` or absent is `None`, otherwise as [`duration`].
pub mod opt_duration {
    use super::*;

    /// Serializes `None` as `null`, otherwise as [`format_duration`] spells it.
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes `null` as `None`, a Go duration string as `Some`.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(serde::Deserialize)]
        struct Wrap(#[serde(with = "super::duration")] Duration);
        let v: Option<Wrap> = serde::Deserialize::deserialize(d)?;
        Ok(v.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ok = [
            ("0", Duration::ZERO),
            ("15s", Duration::from_secs(15)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m", Duration::from_secs(9900)),
            ("1µs", Duration::from_micros(1)),
            ("1us", Duration::from_micros(1)),
            ("3ns", Duration::from_nanos(3)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("+5s", Duration::from_secs(5)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
        for bad in [
            "",
            "15",
            "s",
            "1x",
            "-1s",
            "1.5",
            ".s",
            "1h-1m",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_like_go_and_round_trips() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(15), "15s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_micros(2), "2us"),
            (Duration::from_nanos(7), "7ns"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want);
            assert_eq!(parse_duration(want), Ok(d));
        }
    }
}
