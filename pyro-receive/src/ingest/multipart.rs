//! `multipart/form-data` bodies: the `profile` part and the optional `sample_type_config`.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use futures_util::FutureExt as _;
use pyro_core::pprof::{self};

use crate::error::RequestError;
use crate::push::pprof_error;

use super::*;

/// The parts of a multipart `/ingest` body this receiver reads.
#[derive(Debug, Default)]
pub struct MultipartParts {
    /// The `profile` part (pprof, gzip or plain).
    pub profile: Option<Bytes>,
    /// Sample type → `display-name` from the `sample_type_config` part.
    pub display_names: HashMap<String, String>,
}

/// Reads a `multipart/form-data` body: `profile`, `sample_type_config`; `prev_profile` (the
/// cumulative protocol of very old clients) is refused; other parts are ignored.
pub fn parse_multipart(
    req: &IngestRequest<'_>,
    max_decoded_size: usize,
) -> Result<MultipartParts, RequestError> {
    let content_type = req.content_type.unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        RequestError::invalid(format!("multipart: bad Content-Type {content_type:?}: {e}"))
    })?;
    let stream = futures_util::stream::iter([Ok::<Bytes, Infallible>(req.body.clone())]);
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(req.body.len() as u64));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let read = async {
        let mut parts = MultipartParts::default();
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or("").to_owned();
            let data = field.bytes().await?;
            match name.as_str() {
                "profile" => parts.profile = Some(data),
                "prev_profile" => {
                    return Ok(Err(RequestError::invalid(
                        "multipart: `prev_profile` (cumulative profiles of old clients) is not supported",
                    )));
                }
                "sample_type_config" => match sample_type_config(&data, max_decoded_size) {
                    Ok(names) => parts.display_names = names,
                    Err(e) => return Ok(Err(e)),
                },
                _ => {}
            }
        }
        Ok::<_, multer::Error>(Ok(parts))
    };
    // The stream is in memory, so the future never waits.
    match read.now_or_never() {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(RequestError::invalid(format!("multipart: {e}"))),
        None => Err(RequestError::new(
            crate::error::Code::Internal,
            "multipart: parser waited on an in-memory body",
        )),
    }
}

pub(super) fn sample_type_config(
    data: &[u8],
    max_decoded_size: usize,
) -> Result<HashMap<String, String>, RequestError> {
    let plain;
    let data = if pprof::is_gzip(data) {
        plain = pprof::gunzip_capped(data, max_decoded_size)
            .map_err(|e| pprof_error("multipart: sample_type_config", &e))?;
        &plain[..]
    } else {
        data
    };
    let config: HashMap<String, serde_json::Value> = serde_json::from_slice(data).map_err(|e| {
        RequestError::invalid(format!(
            "multipart: sample_type_config is not a JSON object: {e}"
        ))
    })?;
    Ok(config
        .into_iter()
        .filter_map(|(k, v)| {
            let dn = v.get("display-name")?.as_str()?.to_owned();
            Some((k, dn))
        })
        .collect())
}
