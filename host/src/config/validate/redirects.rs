//! `[[redirects]]`: the status and where to, another listener or a URL.

use std::collections::HashMap;

use http::StatusCode;

use super::{Result, lookup};
use crate::config::raw::RawRedirect;
use crate::config::*;

pub(super) fn redirect(
    path: &str,
    raw: &RawRedirect,
    listeners: &HashMap<&str, usize>,
) -> Result<Redirect> {
    let status = match raw
        .redirect_type
        .as_deref()
        .map(|t| t.to_ascii_lowercase().replace('_', ""))
        .as_deref()
    {
        None | Some("permanent") | Some("301") => StatusCode::MOVED_PERMANENTLY,
        Some("found") | Some("302") => StatusCode::FOUND,
        Some("seeother") | Some("303") => StatusCode::SEE_OTHER,
        Some("temporary") | Some("307") => StatusCode::TEMPORARY_REDIRECT,
        Some(_) => {
            return Err(ConfigError::new(
                format!("{path}.redirect_type"),
                format!(
                    "unknown type {:?}; expected \"permanent\" (301), \"found\" (302), \"see_other\" (303) or \"temporary\" (307)",
                    raw.redirect_type.as_deref().unwrap_or_default()
                ),
            ));
        }
    };
    let target = match (&raw.target_listener, &raw.target_url) {
        (Some(l), None) => RedirectTarget::Listener(ListenerId(lookup(
            &format!("{path}.target_listener"),
            listeners,
            "listener",
            l,
        )?)),
        (None, Some(url)) => {
            let uri: http::Uri = url.parse().map_err(|_| {
                ConfigError::new(
                    format!("{path}.target_url"),
                    format!("{url:?} is not a URL"),
                )
            })?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(ConfigError::new(
                    format!("{path}.target_url"),
                    format!("{url:?} must be an absolute http:// or https:// URL"),
                ));
            }
            RedirectTarget::Url(url.clone())
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                format!("{path}.target_url"),
                "set either target_listener or target_url, not both",
            ));
        }
        (None, None) => {
            return Err(ConfigError::new(
                path,
                "needs target_listener or target_url",
            ));
        }
    };
    Ok(Redirect {
        name: raw.name.clone(),
        status,
        target,
        include_path: raw.include_path.unwrap_or(true),
        include_query_string: raw.include_query_string.unwrap_or(true),
    })
}
