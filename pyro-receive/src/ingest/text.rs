//! The text formats `folded` and `lines`, converted to pprof.

use std::collections::HashMap;

use pyro_core::Profile;
use pyro_core::pprof::{self, ProfileBuilder};

use crate::error::RequestError;

use super::*;

/// What a text format's profile-type suffix (`app.cpu`) maps to.
pub(super) struct TextType {
    pub(super) metric: &'static str,
    pub(super) sample_type: &'static str,
    pub(super) unit: &'static str,
    /// With a sample rate, values are scaled to nanoseconds of this type.
    pub(super) timed: Option<&'static str>,
}

pub(super) fn text_type(suffix: &str) -> Option<TextType> {
    let t = |metric, sample_type, unit| TextType {
        metric,
        sample_type,
        unit,
        timed: None,
    };
    Some(match suffix {
        "cpu" | "itimer" => TextType {
            timed: Some("cpu"),
            ..t("process_cpu", "samples", "count")
        },
        "wall" | "seconds" | "nanoseconds" | "microseconds" | "milliseconds" => TextType {
            timed: Some("wall"),
            ..t("wall", "samples", "count")
        },
        "inuse_objects" => t("memory", "inuse_objects", "count"),
        "alloc_objects" => t("memory", "alloc_objects", "count"),
        "inuse_space" => t("memory", "inuse_space", "bytes"),
        "alloc_space" => t("memory", "alloc_space", "bytes"),
        "alloc_in_new_tlab_objects" => t("memory", "alloc_in_new_tlab_objects", "count"),
        "alloc_in_new_tlab_bytes" => t("memory", "alloc_in_new_tlab_bytes", "bytes"),
        "alloc_outside_tlab_objects" => t("memory", "alloc_outside_tlab_objects", "count"),
        "alloc_outside_tlab_bytes" => t("memory", "alloc_outside_tlab_bytes", "bytes"),
        "live" => t("memory", "live", "count"),
        "bytes" => t("memory", "samples", "bytes"),
        "goroutines" => t("goroutine", "goroutines", "count"),
        "mutex_count" => t("mutex", "contentions", "count"),
        "mutex_duration" => t("mutex", "delay", "nanoseconds"),
        "block_count" | "lock_count" => t("block", "contentions", "count"),
        "block_duration" | "lock_duration" => t("block", "delay", "nanoseconds"),
        "exceptions" => t("exceptions", "samples", "count"),
        _ => return None,
    })
}

pub(super) fn parse_text(
    req: &IngestRequest<'_>,
    params: &IngestParams,
) -> Result<Vec<Profile>, RequestError> {
    let app = params.name.app.as_str();
    let (service, suffix) = app.rsplit_once('.').unwrap_or((app, "cpu"));
    let ty = text_type(suffix).ok_or_else(|| {
        RequestError::invalid(format!(
            "name: unknown profile type {suffix:?} (the last dot-suffix of {app:?} selects it, e.g. {service}.cpu)"
        ))
    })?;
    let text = std::str::from_utf8(&req.body)
        .map_err(|e| RequestError::invalid(format!("body is not UTF-8 text: {e}")))?;
    let mut builder = match ty.timed {
        Some(timed) if params.sample_rate != 0 => {
            let mut b = ProfileBuilder::new(&[(timed, "nanoseconds")]);
            b.set_period(timed, "nanoseconds", NANOS / i64::from(params.sample_rate));
            b
        }
        _ => {
            let mut b = ProfileBuilder::new(&[(ty.sample_type, ty.unit)]);
            b.set_period(ty.sample_type, ty.unit, 1);
            b
        }
    };
    let scale = builder.period().max(1);
    let lines_format = params.format.as_deref() == Some("lines");
    let mut lines_counts: HashMap<&str, i64> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if lines_format {
            *lines_counts.entry(line).or_insert(0) += 1;
            continue;
        }
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let count: u64 = count.trim().parse().map_err(|_| {
            RequestError::invalid(format!(
                "folded line {}: count {count:?} is not a non-negative integer",
                n + 1
            ))
        })?;
        let value = i64::try_from(count)
            .unwrap_or(i64::MAX)
            .saturating_mul(scale);
        let frames: Vec<&str> = stack.split(';').collect();
        builder.add_folded(&frames, &[value]);
    }
    let mut stacks: Vec<_> = lines_counts.into_iter().collect();
    stacks.sort_unstable();
    for (stack, count) in stacks {
        let frames: Vec<&str> = stack.split(';').collect();
        builder.add_folded(&frames, &[count.saturating_mul(scale)]);
    }
    if builder.sample_count() == 0 {
        return Ok(Vec::new());
    }
    builder.set_time(
        params.from_nanos,
        params.until_nanos.saturating_sub(params.from_nanos).max(0),
    );
    let labels = ingest_labels(params, ty.metric, service)?;
    Ok(vec![Profile::new(labels, pprof::encode(&builder.build()))])
}
