//! `custom_error_pages`, gateway-wide and per listener: a status the gateway generates and the
//! file answered for it, read now.

use std::path::Path;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::Result;
use crate::config::error_pages::{GENERATED_STATUSES, content_type_of};
use crate::config::raw::RawErrorPage;
use crate::config::*;

pub(super) fn error_pages(path: &str, raw: &[RawErrorPage], base: &Path) -> Result<ErrorPages> {
    let mut pages: Vec<ErrorPage> = Vec::with_capacity(raw.len());
    for (i, p) in raw.iter().enumerate() {
        let field = format!("{path}[{i}]");
        let status = u16::try_from(p.status)
            .ok()
            .filter(|s| GENERATED_STATUSES.contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| {
                ConfigError::new(
                    format!("{field}.status"),
                    format!(
                        "{} is not a status the gateway generates; use one of {}",
                        p.status,
                        GENERATED_STATUSES.map(|s| s.to_string()).join(", ")
                    ),
                )
            })?;
        if let Some(j) = pages.iter().position(|q| q.status == status) {
            return Err(ConfigError::new(
                format!("{field}.status"),
                format!(
                    "{status_code} already has a page ({path}[{j}])",
                    status_code = p.status
                ),
            ));
        }
        let file = base.join(&p.file);
        let shown = format!("{:?}", p.file);
        let size = std::fs::metadata(&file)
            .map_err(|e| {
                ConfigError::new(format!("{field}.file"), format!("cannot read {shown}: {e}"))
            })?
            .len();
        if size > MAX_ERROR_PAGE_BYTES {
            return Err(ConfigError::new(
                format!("{field}.file"),
                format!(
                    "{shown} is {size} bytes; a custom error page holds at most {MAX_ERROR_PAGE_BYTES}"
                ),
            ));
        }
        let body = std::fs::read(&file).map_err(|e| {
            ConfigError::new(format!("{field}.file"), format!("cannot read {shown}: {e}"))
        })?;
        let content_type = match (&p.content_type, content_type_of(&file)) {
            (Some(t), _) => HeaderValue::from_str(t).map_err(|_| {
                ConfigError::new(
                    format!("{field}.content_type"),
                    format!("{t:?} is not a valid header value"),
                )
            })?,
            (None, Some(t)) => HeaderValue::from_static(t),
            (None, None) => {
                return Err(ConfigError::new(
                    format!("{field}.content_type"),
                    format!(
                        "the content type of {shown} is not known from its extension (.html, .htm, .txt, .json); set content_type"
                    ),
                ));
            }
        };
        pages.push(ErrorPage {
            status,
            file,
            content_type,
            body: Bytes::from(body),
        });
    }
    Ok(ErrorPages(pages))
}
