//! `backendHttpSettingsCollection` and the `trustedRootCertificates` they use:
//! `[[backend_settings]]`.

use crate::ArmError;
use crate::emit::{Section, Tv};
use crate::json::Node;
use crate::template::join;

use super::Mapper;
use super::access::is_set;

impl Mapper<'_> {
    pub(super) fn settings(
        &mut self,
        props: &Node,
        probes: &[String],
        roots: &[String],
    ) -> Result<Vec<Section>, ArmError> {
        let mut out = Vec::new();
        for item in self.items(props, "backendHttpSettingsCollection")? {
            let (p, path) = (&*item.props, item.path.as_str());
            self.keys(
                p,
                path,
                &[
                    "port",
                    "protocol",
                    "cookieBasedAffinity",
                    "affinityCookieName",
                    "requestTimeout",
                    "hostName",
                    "pickHostNameFromBackendAddress",
                    "path",
                    "probe",
                    "probeEnabled",
                    "connectionDraining",
                    "trustedRootCertificates",
                    "authenticationCertificates",
                ],
                &[],
            )?;
            if let Some(n) = p.get("authenticationCertificates").filter(|n| is_set(n)) {
                return Err(self.err(n, &join(path, "authenticationCertificates"), "v1 backend authentication certificates (trusting exactly the backend's own certificate) are not supported; give the certificate authority of the backend's certificate in trustedRootCertificates"));
            }
            let mut s = Section::new(
                "backend_settings",
                path.trim_end_matches(".properties").to_string(),
            );
            s.set("name", Tv::str(&item.name));
            let port = self.int(p, "port", path)?.ok_or_else(|| {
                self.err(p, &join(path, "port"), "backend settings need \"port\"")
            })?;
            s.set("port", Tv::Int(port));
            if let Some(proto) = self.choice(p, "protocol", path, &["Http", "Https"])? {
                s.set("protocol", Tv::str(proto.to_ascii_lowercase()));
            }
            if let Some(t) = self.int(p, "requestTimeout", path)? {
                s.set("request_timeout", Tv::Int(t));
            }
            if let Some(h) = self.string(p, "hostName", path)?.filter(|h| !h.is_empty()) {
                s.set("host_name", Tv::Str(h));
            }
            if self.bool(p, "pickHostNameFromBackendAddress", path)? == Some(true) {
                s.set("pick_host_name_from_backend_address", Tv::Bool(true));
            }
            if let Some(path_override) = self.string(p, "path", path)?.filter(|h| !h.is_empty()) {
                s.set("path", Tv::Str(path_override));
            }
            if self.choice(p, "cookieBasedAffinity", path, &["Enabled", "Disabled"])?
                == Some("Enabled")
            {
                s.set("cookie_based_affinity", Tv::Bool(true));
            }
            if let Some(c) = self
                .string(p, "affinityCookieName", path)?
                .filter(|h| !h.is_empty())
            {
                s.set("affinity_cookie_name", Tv::Str(c));
            }
            if let Some(d) = p.get("connectionDraining").filter(|n| is_set(n)) {
                let dp = join(path, "connectionDraining");
                self.keys(d, &dp, &["enabled", "drainTimeoutInSec"], &[])?;
                let mut members = vec![(
                    "enabled".to_string(),
                    Tv::Bool(self.bool(d, "enabled", &dp)?.unwrap_or(false)),
                )];
                if let Some(t) = self.int(d, "drainTimeoutInSec", &dp)? {
                    members.push(("timeout".to_string(), Tv::Int(t)));
                }
                s.set("connection_draining", Tv::Inline(members));
            }
            let probe = self.opt_ref(p, "probe", path, "probes", probes)?;
            match (probe, self.bool(p, "probeEnabled", path)?) {
                (Some(_), Some(false)) => self.ignore(
                    &join(path, "probe"),
                    "probeEnabled is false, so the default probe applies",
                ),
                (Some(name), _) => s.set("probe", Tv::Str(name)),
                (None, _) => {}
            }
            if let Some(list) = p.get("trustedRootCertificates").filter(|n| is_set(n)) {
                let lp = join(path, "trustedRootCertificates");
                let refs = list
                    .as_array()
                    .ok_or_else(|| self.err(list, &lp, "expected an array"))?;
                let mut files = Vec::new();
                for (i, r) in refs.iter().enumerate() {
                    let name =
                        self.reference(r, &format!("{lp}[{i}]"), "trustedRootCertificates", roots)?;
                    files.push(Tv::Str(self.trusted_root(props, &name)?));
                }
                s.notes
                    .push("trusted root certificates written as PEM".into());
                s.set("trusted_root_certificates", Tv::Array(files));
            }
            out.push(s);
        }
        Ok(out)
    }

    fn trusted_root(&mut self, props: &Node, name: &str) -> Result<String, ArmError> {
        let items = self.items(props, "trustedRootCertificates")?;
        let item = items
            .iter()
            .find(|i| i.name == name)
            .expect("resolved reference");
        let (p, path) = (&*item.props, item.path.clone());
        self.keys(p, &path, &["data", "keyVaultSecretId"], &[])?;
        if let Some(n) = p.get("keyVaultSecretId").filter(|n| is_set(n)) {
            return Err(self.err(n, &join(&path, "keyVaultSecretId"), "Key Vault certificates cannot be fetched outside Azure; put the certificate in \"data\" (base64)"));
        }
        let node = p.get("data").ok_or_else(|| {
            self.err(
                p,
                &join(&path, "data"),
                "the certificate needs \"data\" (base64 .cer)",
            )
        })?;
        let data = self.string(p, "data", &path)?.unwrap_or_default();
        self.certs
            .trusted_root(&item.name, &data)
            .map_err(|m| self.err(node, &join(&path, "data"), &m))
    }
}
