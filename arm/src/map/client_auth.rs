//! `trustedClientCertificates`, `sslProfiles` (client authentication, mutual TLS) and
//! `customErrorConfigurations`: `[[ssl_profiles]]`, a listener's `ssl_profile`, and
//! `[[custom_error_pages]]`.

use crate::ArmError;
use crate::emit::{Section, Tv};
use crate::json::Node;
use crate::template::join;

use super::Mapper;
use super::access::is_set;

/// The statuses wasmgate generates itself and so can answer with a custom page.
const PAGE_STATUSES: [u16; 12] = [400, 403, 404, 408, 413, 414, 421, 431, 500, 502, 503, 504];

impl Mapper<'_> {
    /// `[[ssl_profiles]]` from `sslProfiles`, with their `trustedClientCertificates` written
    /// as PEM files.
    pub(super) fn ssl_profiles(&mut self, props: &Node) -> Result<Vec<Section>, ArmError> {
        let trusted = self.items(props, "trustedClientCertificates")?;
        let trusted_names: Vec<String> = trusted.iter().map(|i| i.name.clone()).collect();
        let mut sections = Vec::new();
        for item in self.items(props, "sslProfiles")? {
            let (p, path) = (&*item.props, item.path.as_str());
            self.keys(
                p,
                path,
                &["clientAuthConfiguration", "trustedClientCertificates"],
                &[(
                    "sslPolicy",
                    "a listener's TLS policy comes from the port (min_tls_version); cipher suites are rustls's defaults",
                )],
            )?;
            let mut s = Section::new("ssl_profiles", path.trim_end_matches(".properties").into());
            s.set("name", Tv::str(&item.name));
            let refs_path = join(path, "trustedClientCertificates");
            let refs = match p.get("trustedClientCertificates") {
                Some(n) if is_set(n) => n
                    .as_array()
                    .ok_or_else(|| self.err(n, &refs_path, "expected an array of references"))?,
                _ => {
                    return Err(self.err(
                        p,
                        &refs_path,
                        "an SSL profile with client authentication needs \"trustedClientCertificates\"",
                    ));
                }
            };
            let mut files = Vec::new();
            for (i, r) in refs.iter().enumerate() {
                let name = self.reference(
                    r,
                    &format!("{refs_path}[{i}]"),
                    "trustedClientCertificates",
                    &trusted_names,
                )?;
                let ca = trusted
                    .iter()
                    .find(|t| t.name == name)
                    .expect("resolved reference");
                self.keys(&ca.props, &ca.path, &["data"], &[])?;
                let data = self
                    .string(&ca.props, "data", &ca.path)?
                    .unwrap_or_default();
                let node = ca.props.get("data").unwrap_or(&ca.props);
                let file = self
                    .certs
                    .trusted_client_ca(&ca.name, &data)
                    .map_err(|m| self.err(node, &join(&ca.path, "data"), &m))?;
                files.push(Tv::Str(file));
                s.notes.push(format!(
                    "trusted client CA '{name}' from trustedClientCertificates, written as PEM"
                ));
            }
            s.set("trusted_client_certificates", Tv::Array(files));
            if let Some(auth) = p.get("clientAuthConfiguration").filter(|n| is_set(n)) {
                let auth_path = join(path, "clientAuthConfiguration");
                self.keys(
                    auth,
                    &auth_path,
                    &[
                        "verifyClientCertIssuerDN",
                        "verifyClientRevocation",
                        "verifyClientAuthMode",
                    ],
                    &[],
                )?;
                if self.bool(auth, "verifyClientCertIssuerDN", &auth_path)? == Some(true) {
                    s.set("verify_client_cert_issuer_dn", Tv::Bool(true));
                }
                if self.choice(
                    auth,
                    "verifyClientRevocation",
                    &auth_path,
                    &["None", "OCSP"],
                )? == Some("OCSP")
                {
                    self.ignore(
                        &join(&auth_path, "verifyClientRevocation"),
                        "OCSP is not queried; give the profile revocation_lists (CRL files) to check revocation",
                    );
                }
                if self.choice(
                    auth,
                    "verifyClientAuthMode",
                    &auth_path,
                    &["Strict", "Passthrough"],
                )? == Some("Passthrough")
                {
                    s.set("verify_client_auth_mode", Tv::str("passthrough"));
                }
            }
            sections.push(s);
        }
        for ca in &trusted {
            if !sections.iter().any(|s| {
                s.notes
                    .iter()
                    .any(|n| n.contains(&format!("'{}'", ca.name)))
            }) {
                self.ignore(&ca.path, "no SSL profile uses this trusted client CA");
            }
        }
        Ok(sections)
    }

    /// `customErrorConfigurations` of the gateway (`section` "custom_error_pages") or of a
    /// listener (its child entries). Application Gateway fetches each page from its
    /// `customErrorPageUrl`; the importer fetches nothing: with an error page folder (`wasmgate
    /// import --error-pages DIR`) each page is read from the file in it named as the URL's last
    /// path segment, and without one the pages are reported as not imported.
    pub(super) fn error_pages(
        &mut self,
        props: &Node,
        path: &str,
    ) -> Result<Vec<Section>, ArmError> {
        let key = "customErrorConfigurations";
        let list_path = join(path, key);
        let Some(list) = props.get(key).filter(|n| is_set(n)) else {
            return Ok(Vec::new());
        };
        let items = list
            .as_array()
            .ok_or_else(|| self.err(list, &list_path, "expected an array"))?;
        let mut sections = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ipath = format!("{list_path}[{i}]");
            self.keys(item, &ipath, &["statusCode", "customErrorPageUrl"], &[])?;
            let code = self.string(item, "statusCode", &ipath)?.unwrap_or_default();
            let status = code
                .strip_prefix("HttpStatus")
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| {
                    self.err(
                        item,
                        &join(&ipath, "statusCode"),
                        &format!("'{code}' is not a status (HttpStatus403, HttpStatus502, ...)"),
                    )
                })?;
            let url = self
                .string(item, "customErrorPageUrl", &ipath)?
                .unwrap_or_default();
            if !PAGE_STATUSES.contains(&status) {
                self.ignore(
                    &ipath,
                    &format!("wasmgate never answers {status} itself, so no page replaces it"),
                );
                continue;
            }
            let file_name = page_file_name(&url).ok_or_else(|| {
                self.err(
                    item,
                    &join(&ipath, "customErrorPageUrl"),
                    &format!("'{url}' is not a URL naming a file"),
                )
            })?;
            let Some(dir) = self.error_pages else {
                self.ignore(
                    &ipath,
                    &format!(
                        "the {status} page at {url} is not fetched; save it and import with --error-pages DIR (read as DIR/{file_name})"
                    ),
                );
                continue;
            };
            let mut s = Section::new("custom_error_pages", ipath.clone());
            s.notes
                .push(format!("page {url}, read from the error page folder"));
            s.set("status", Tv::Int(status.into()));
            s.set("file", Tv::Str(dir.join(&file_name).display().to_string()));
            sections.push(s);
        }
        Ok(sections)
    }
}

/// The last path segment of a page URL (`https://host/errors/502.html` → `502.html`), without
/// a query; `None` when there is none or it could climb out of the folder.
fn page_file_name(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next()?;
    let (_, path) = path.split_once('/')?;
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && name != "." && name != "..").then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_file_names_come_from_the_url_path() {
        assert_eq!(
            page_file_name("https://contoso.blob.core.windows.net/errors/502.html?sv=1"),
            Some("502.html".into())
        );
        assert_eq!(page_file_name("https://contoso.example/"), None);
        assert_eq!(page_file_name("https://contoso.example"), None);
        assert_eq!(page_file_name("https://contoso.example/a/.."), None);
    }
}
