//! `[logging]`: the access log's format and destination, and the trace id answered to clients.

use std::path::Path;

use super::Result;
use crate::config::raw::RawLogging;
use crate::config::*;

pub(super) fn logging(raw: Option<&RawLogging>, base: &Path) -> Result<Logging> {
    let d = Logging::default();
    let Some(raw) = raw else { return Ok(d) };
    let format = match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::new(
                "logging.format",
                format!("{other:?} is not \"text\" or \"json\""),
            ));
        }
    };
    let access_log = match raw.access_log.as_deref() {
        None | Some("stderr") => AccessLogTarget::Stderr,
        Some("off") => AccessLogTarget::Off,
        Some("") => {
            return Err(ConfigError::new(
                "logging.access_log",
                "must be \"stderr\", \"off\" or a file path",
            ));
        }
        Some(path) => AccessLogTarget::File(base.join(path)),
    };
    Ok(Logging {
        format,
        access_log,
        trace_id_response_header: raw
            .trace_id_response_header
            .unwrap_or(d.trace_id_response_header),
    })
}
