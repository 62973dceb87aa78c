//! `frontendPorts`, `sslPolicy`, `httpListeners` and the `sslCertificates` they use:
//! `[[listeners]]`.

use std::collections::HashMap;

use crate::ArmError;
use crate::emit::{Section, Tv};
use crate::json::Node;
use crate::template::join;

use super::Mapper;
use super::access::is_set;

impl Mapper<'_> {
    pub(super) fn frontend_ports(&mut self, props: &Node) -> Result<Vec<(String, u16)>, ArmError> {
        let mut out = Vec::new();
        for item in self.items(props, "frontendPorts")? {
            self.keys(&item.props, &item.path, &["port"], &[])?;
            let port = self.int(&item.props, "port", &item.path)?.ok_or_else(|| {
                self.err(
                    &item.props,
                    &join(&item.path, "port"),
                    "a frontend port needs \"port\"",
                )
            })?;
            let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
                self.err(
                    &item.props,
                    &join(&item.path, "port"),
                    &format!("{port} is not a port (1-65535)"),
                )
            })?;
            out.push((item.name, port));
        }
        Ok(out)
    }

    /// The gateway's minimum TLS version from `sslPolicy`.
    pub(super) fn ssl_policy(&mut self, props: &Node) -> Result<Option<&'static str>, ArmError> {
        let Some(policy) = props.get("sslPolicy").filter(|n| is_set(n)) else {
            return Ok(None);
        };
        let path = join(&self.props_path, "sslPolicy");
        const SUITES: &str =
            "cipher suites are rustls's defaults; only the minimum TLS version is configurable";
        self.keys(
            policy,
            &path,
            &["minProtocolVersion"],
            &[
                ("policyType", SUITES),
                ("policyName", SUITES),
                ("cipherSuites", SUITES),
                ("disabledSslProtocols", "TLS 1.0 and 1.1 are never offered; the minimum is TLS 1.2 unless minProtocolVersion asks for 1.3"),
            ],
        )?;
        let Some(min) = self.choice(
            policy,
            "minProtocolVersion",
            &path,
            &["TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"],
        )?
        else {
            return Ok(None);
        };
        Ok(match min {
            "TLSv1_3" => Some("1.3"),
            "TLSv1_2" => Some("1.2"),
            _ => {
                self.ignore(
                    &join(&path, "minProtocolVersion"),
                    "TLS 1.0 and 1.1 are not offered by wasmgate; the minimum is TLS 1.2",
                );
                Some("1.2")
            }
        })
    }

    pub(super) fn listeners(
        &mut self,
        props: &Node,
        ports: &[(String, u16)],
        port_names: &[String],
        frontend_ips: &[String],
        ssl_names: &[String],
        min_tls: Option<&'static str>,
    ) -> Result<Vec<(String, Section)>, ArmError> {
        let items = self.items(props, "httpListeners")?;
        let profile_names = self.names(props, "sslProfiles")?;
        // Application Gateway sets "require SNI" per listener; wasmgate per port, so a port
        // requires SNI only when all its HTTPS listeners do.
        let mut sni: HashMap<String, Vec<bool>> = HashMap::new();
        let mut out = Vec::new();
        for item in &items {
            let (p, path) = (&*item.props, item.path.as_str());
            self.keys(
                p,
                path,
                &[
                    "frontendIPConfiguration",
                    "frontendPort",
                    "protocol",
                    "hostName",
                    "hostNames",
                    "sslCertificate",
                    "requireServerNameIndication",
                    "sslProfile",
                    "customErrorConfigurations",
                ],
                &[(
                    "firewallPolicy",
                    "Web Application Firewall is not part of wasmgate",
                )],
            )?;
            let profile = self.opt_ref(p, "sslProfile", path, "sslProfiles", &profile_names)?;
            if p.get("frontendIPConfiguration").is_some() {
                self.opt_ref(
                    p,
                    "frontendIPConfiguration",
                    path,
                    "frontendIPConfigurations",
                    frontend_ips,
                )?;
            }
            let port_name = self
                .opt_ref(p, "frontendPort", path, "frontendPorts", port_names)?
                .ok_or_else(|| {
                    self.err(
                        p,
                        &join(path, "frontendPort"),
                        "a listener needs \"frontendPort\"",
                    )
                })?;
            let template_port = ports
                .iter()
                .find(|(n, _)| *n == port_name)
                .map(|(_, port)| *port)
                .unwrap_or_default();
            let protocol = self
                .choice(p, "protocol", path, &["Http", "Https"])?
                .ok_or_else(|| {
                    self.err(
                        p,
                        &join(path, "protocol"),
                        "a listener needs \"protocol\" (Http or Https)",
                    )
                })?;
            let (ip, port) = self.binding.resolve(template_port);
            let mut s = Section::new(
                "listeners",
                path.trim_end_matches(".properties").to_string(),
            );
            s.notes.push(format!(
                "frontend port '{port_name}' ({template_port}) -> {}",
                crate::show_addr(ip, port)
            ));
            s.set("name", Tv::str(&item.name));
            s.set("protocol", Tv::str(protocol.to_ascii_lowercase()));
            s.set("port", Tv::Int(port.into()));
            s.set("bind_address", Tv::str(ip.to_string()));
            let mut hosts = self.strings(p, "hostNames", path)?;
            if let Some(h) = self.string(p, "hostName", path)?.filter(|h| !h.is_empty()) {
                if !hosts.is_empty() {
                    return Err(self.err(
                        p,
                        &join(path, "hostName"),
                        "give hostName or hostNames, not both",
                    ));
                }
                hosts.push(h);
            }
            if !hosts.is_empty() {
                s.set(
                    "host_names",
                    Tv::Array(hosts.into_iter().map(Tv::Str).collect()),
                );
            }
            let cert = self.opt_ref(p, "sslCertificate", path, "sslCertificates", ssl_names)?;
            if protocol == "Https" {
                let cert = cert.ok_or_else(|| {
                    self.err(
                        p,
                        &join(path, "sslCertificate"),
                        "an Https listener needs \"sslCertificate\"",
                    )
                })?;
                let (chain, key) = self.listener_certificate(props, &cert)?;
                s.notes.push(format!(
                    "certificate '{cert}' from sslCertificates, written as PEM"
                ));
                s.set("certificate", Tv::Str(chain));
                s.set("certificate_key", Tv::Str(key));
                if let Some(v) = min_tls {
                    s.set("min_tls_version", Tv::str(v));
                }
                if let Some(profile) = profile {
                    s.set("ssl_profile", Tv::Str(profile));
                }
                let require = self
                    .bool(p, "requireServerNameIndication", path)?
                    .unwrap_or(false);
                sni.entry(port_name.clone()).or_default().push(require);
            } else if cert.is_some() {
                return Err(self.err(
                    p,
                    &join(path, "sslCertificate"),
                    "an Http listener takes no certificate",
                ));
            } else if profile.is_some() {
                return Err(self.err(
                    p,
                    &join(path, "sslProfile"),
                    "an Http listener takes no SSL profile",
                ));
            }
            for page in self.error_pages(p, path)? {
                s.children.push(("custom_error_pages", page));
            }
            out.push((item.name.clone(), s, port_name, protocol));
        }
        let mut sections = Vec::new();
        for (name, mut s, port_name, protocol) in out {
            if protocol == "Https" {
                let all = sni.get(&port_name).is_some_and(|v| v.iter().all(|b| *b));
                let any = sni.get(&port_name).is_some_and(|v| v.iter().any(|b| *b));
                if all {
                    s.set("require_sni", Tv::Bool(true));
                } else if any {
                    let origin = s.origin.clone();
                    self.ignore(
                        &format!("{origin}.properties.requireServerNameIndication"),
                        &format!("wasmgate requires SNI per port, and not every HTTPS listener on frontend port '{port_name}' asks for it, so none is required"),
                    );
                }
            }
            sections.push((name, s));
        }
        Ok(sections)
    }

    /// Writes the PEM files of sslCertificates item `name`; returns their paths as the TOML
    /// refers to them.
    fn listener_certificate(
        &mut self,
        props: &Node,
        name: &str,
    ) -> Result<(String, String), ArmError> {
        let items = self.items(props, "sslCertificates")?;
        let item = items
            .iter()
            .find(|i| i.name == name)
            .expect("resolved reference");
        let (p, path) = (&*item.props, item.path.clone());
        self.keys(
            p,
            &path,
            &["data", "password", "keyVaultSecretId", "publicCertData"],
            &[],
        )?;
        if let Some(n) = p.get("keyVaultSecretId").filter(|n| is_set(n)) {
            return Err(self.err(n, &join(&path, "keyVaultSecretId"), "Key Vault certificates cannot be fetched outside Azure; put the PFX in \"data\" (base64) with \"password\""));
        }
        let data_node = p.get("data").ok_or_else(|| {
            // A template exported from a running gateway has only the public half.
            let why = if p.get("publicCertData").is_some_and(is_set) {
                "the certificate has only \"publicCertData\" (as templates exported from Azure do), and serving TLS needs the private key: give the PFX in \"data\" (base64 PKCS#12) with \"password\""
            } else {
                "the certificate needs \"data\": a base64 PFX (PKCS#12)"
            };
            self.err(p, &join(&path, "data"), why)
        })?;
        let data = self.string(p, "data", &path)?.unwrap_or_default();
        let password = self.string(p, "password", &path)?.unwrap_or_default();
        self.certs
            .listener(&item.name, &data, &password)
            .map_err(|m| self.err(data_node, &join(&path, "data"), &m))
    }
}
