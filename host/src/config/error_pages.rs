//! Custom error pages: Application Gateway's `customErrorConfigurations`, with the page read from
//! a file when the configuration is loaded (Application Gateway fetches it from a URL instead).

use std::path::PathBuf;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// Largest custom error page, as Application Gateway limits them (1 MB).
pub const MAX_ERROR_PAGE_BYTES: u64 = 1024 * 1024;

/// The statuses the gateway answers by itself, and so the ones a custom page can replace:
/// Application Gateway's 403 and 502, and every other status this gateway generates (a
/// backend's own responses always pass unchanged).
pub(crate) const GENERATED_STATUSES: [u16; 12] =
    [400, 403, 404, 408, 413, 414, 421, 431, 500, 502, 503, 504];

/// One custom error page, read at validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    pub status: StatusCode,
    pub file: PathBuf,
    pub content_type: HeaderValue,
    pub body: Bytes,
}

/// The custom error pages of a listener or of the gateway; few, so searched in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPages(pub Vec<ErrorPage>);

impl ErrorPages {
    pub fn get(&self, status: StatusCode) -> Option<&ErrorPage> {
        self.0.iter().find(|p| p.status == status)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The content type a page's extension implies; `None` for other extensions.
pub(crate) fn content_type_of(file: &std::path::Path) -> Option<&'static str> {
    let ext = file.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "json" => "application/json",
        _ => return None,
    })
}
