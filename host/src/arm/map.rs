//! From an evaluated `Microsoft.Network/applicationGateways` resource to wasmgate's
//! configuration sections.
//!
//! Every property of the resource is either mapped, listed as ignored with the reason (it
//! describes Azure infrastructure a process does not have), skipped as read-only output of
//! Azure, or refused with an error naming its path: a property that could change routing is
//! never dropped silently. Names of items and the ids that refer to them are compared without
//! regard to case, as ARM does.

use std::collections::HashMap;
use std::net::IpAddr;

use super::certs::CertWriter;
use super::emit::{Section, Tv};
use super::json::{Node, Value};
use super::template::join;
use super::{ArmError, Binding, Warning};

/// Properties Azure reports back on resources and items; a template exported from a running
/// gateway carries them, and they configure nothing.
const READ_ONLY: &[&str] = &[
    "provisioningState",
    "resourceGuid",
    "operationalState",
    "etag",
    // Back-references (which rules use a redirect, which settings use a probe, ...).
    "requestRoutingRules",
    "urlPathMaps",
    "pathRules",
    "httpListeners",
    "backendHttpSettings",
];

/// The mapped configuration.
pub struct Mapped {
    pub sections: Vec<Section>,
    pub warnings: Vec<Warning>,
}

/// Maps the gateway resource at `path` (already evaluated).
pub fn map_gateway(
    file: &str,
    resource: &Node,
    path: &str,
    binding: &Binding,
    certs: &mut CertWriter,
) -> Result<Mapped, ArmError> {
    let gw_name = resource
        .get("name")
        .and_then(Node::as_str)
        .ok_or_else(|| ArmError::at(file, resource.pos, path, "the gateway resource has no name"))?
        .to_string();
    let mut m = Mapper {
        file,
        gw_name,
        warnings: Vec::new(),
        binding,
        certs,
        props_path: join(path, "properties"),
    };
    m.resource_keys(resource, path)?;
    let props = props_of(resource).into_owned();
    let sections = m.gateway(&props)?;
    Ok(Mapped {
        sections,
        warnings: m.warnings,
    })
}

struct Mapper<'a> {
    file: &'a str,
    gw_name: String,
    warnings: Vec<Warning>,
    binding: &'a Binding,
    certs: &'a mut CertWriter,
    props_path: String,
}

/// One item of a collection (`httpListeners[2]`).
struct Item<'n> {
    name: String,
    /// The item's properties; an empty object where the item has none, positioned at the item.
    props: std::borrow::Cow<'n, Node>,
    path: String,
}

impl<'a> Mapper<'a> {
    fn err(&self, node: &Node, path: &str, message: &str) -> ArmError {
        ArmError::at(self.file, node.pos, path, message)
    }

    fn ignore(&mut self, path: &str, reason: &str) {
        self.warnings.push(Warning {
            path: path.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Checks an object's members: `known` are handled by the caller, `ignored` are reported
    /// with their reason when set, read-only ones are skipped, anything else is an error.
    fn keys(
        &mut self,
        node: &Node,
        path: &str,
        known: &[&str],
        ignored: &[(&str, &str)],
    ) -> Result<(), ArmError> {
        if !matches!(node.value, Value::Object(_)) {
            return Err(self.err(
                node,
                path,
                &format!("expected an object, found {}", node.kind()),
            ));
        }
        for (key, value) in node.members() {
            let p = join(path, key);
            if known.iter().any(|k| k.eq_ignore_ascii_case(key))
                || READ_ONLY.iter().any(|k| k.eq_ignore_ascii_case(key))
            {
                continue;
            }
            if let Some((_, reason)) = ignored.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
                if is_set(value) {
                    self.ignore(&p, reason);
                }
                continue;
            }
            return Err(self.err(
                value,
                &p,
                "not supported by wasmgate; refusing rather than running the gateway without it",
            ));
        }
        Ok(())
    }

    fn resource_keys(&mut self, resource: &Node, path: &str) -> Result<(), ArmError> {
        if let Some(copy) = resource.get("copy") {
            return Err(self.err(
                copy,
                &join(path, "copy"),
                "resource copy loops are not supported",
            ));
        }
        const NOT_HERE: &str = "describes the Azure resource, not how it routes";
        self.keys(
            resource,
            path,
            &["type", "name", "apiVersion", "properties", "dependsOn", "condition", "id"],
            &[
                ("location", NOT_HERE),
                ("tags", NOT_HERE),
                ("zones", "availability zones: run several wasmgate processes for redundancy"),
                ("identity", "the managed identity fetches Key Vault certificates in Azure; give certificates in the template instead"),
                ("comments", "a comment"),
                ("metadata", "a comment"),
            ],
        )?;
        Ok(())
    }

    /// The items of collection `key` in `props`.
    fn items<'n>(&self, props: &'n Node, key: &str) -> Result<Vec<Item<'n>>, ArmError> {
        let path = join(&self.props_path, key);
        let Some(list) = props.get(key) else {
            return Ok(Vec::new());
        };
        if matches!(list.value, Value::Null) {
            return Ok(Vec::new());
        }
        let Some(items) = list.as_array() else {
            return Err(self.err(
                list,
                &path,
                &format!("expected an array, found {}", list.kind()),
            ));
        };
        let mut out: Vec<Item<'n>> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ipath = format!("{path}[{i}]");
            let name = item
                .get("name")
                .and_then(Node::as_str)
                .ok_or_else(|| self.err(item, &ipath, "every item needs a \"name\" string"))?;
            if let Some(other) = out.iter().find(|o| o.name.eq_ignore_ascii_case(name)) {
                return Err(self.err(
                    item,
                    &join(&ipath, "name"),
                    &format!(
                        "the name '{name}' is already used by {} (names are case-insensitive)",
                        other.path
                    ),
                ));
            }
            for (k, v) in item.members() {
                if !["name", "properties", "id", "type", "etag"]
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(k))
                {
                    return Err(self.err(v, &join(&ipath, k), "not supported by wasmgate"));
                }
            }
            let props = props_of(item);
            out.push(Item {
                name: name.to_string(),
                props,
                path: join(&ipath, "properties"),
            });
        }
        Ok(out)
    }

    /// Resolves `{ "id": ".../applicationGateways/<gw>/<collection>/<name>" }` to the item's name
    /// as written in `collection`.
    fn reference(
        &self,
        node: &Node,
        path: &str,
        collection: &str,
        names: &[String],
    ) -> Result<String, ArmError> {
        let id_path = join(path, "id");
        let id = node
            .get("id")
            .and_then(Node::as_str)
            .ok_or_else(|| self.err(node, path, "expected a reference { \"id\": \"...\" }"))?;
        let after = id
            .find("/providers/")
            .map(|i| &id[i + "/providers/".len()..])
            .unwrap_or(id.trim_start_matches('/'));
        let parts: Vec<&str> = after.split('/').collect();
        let bad = || {
            self.err(
                node,
                &id_path,
                &format!(
                    "'{id}' does not name a {collection} item of this application gateway (expected .../Microsoft.Network/applicationGateways/{}/{collection}/<name>)",
                    self.gw_name
                ),
            )
        };
        let [ns, gw_type, gw, kind, name] = parts[..] else {
            return Err(bad());
        };
        if !ns.eq_ignore_ascii_case("Microsoft.Network")
            || !gw_type.eq_ignore_ascii_case("applicationGateways")
            || !kind.eq_ignore_ascii_case(collection)
        {
            return Err(bad());
        }
        if !gw.eq_ignore_ascii_case(&self.gw_name) {
            return Err(self.err(
                node,
                &id_path,
                &format!(
                    "refers to application gateway '{gw}', not this template's '{}'",
                    self.gw_name
                ),
            ));
        }
        names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(name))
            .cloned()
            .ok_or_else(|| {
                self.err(
                    node,
                    &id_path,
                    &format!("there is no {collection} item named '{name}'"),
                )
            })
    }

    fn opt_ref(
        &self,
        props: &Node,
        key: &str,
        path: &str,
        collection: &str,
        names: &[String],
    ) -> Result<Option<String>, ArmError> {
        match props.get(key) {
            None => Ok(None),
            Some(n) if matches!(n.value, Value::Null) => Ok(None),
            Some(n) => self
                .reference(n, &join(path, key), collection, names)
                .map(Some),
        }
    }

    /// An optional property of one JSON type: absent or null is `None`; another type is an
    /// error naming the property and what was `expected`.
    fn typed<T>(
        &self,
        props: &Node,
        key: &str,
        path: &str,
        expected: &str,
        take: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<Option<T>, ArmError> {
        let Some(n) = props.get(key) else {
            return Ok(None);
        };
        if matches!(n.value, Value::Null) {
            return Ok(None);
        }
        match take(&n.value) {
            Some(v) => Ok(Some(v)),
            None => Err(self.err(
                n,
                &join(path, key),
                &format!("expected {expected}, found {}", n.kind()),
            )),
        }
    }

    fn string(&self, props: &Node, key: &str, path: &str) -> Result<Option<String>, ArmError> {
        self.typed(props, key, path, "a string", |v| match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
    }

    fn int(&self, props: &Node, key: &str, path: &str) -> Result<Option<i64>, ArmError> {
        self.typed(props, key, path, "an integer", |v| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        })
    }

    fn bool(&self, props: &Node, key: &str, path: &str) -> Result<Option<bool>, ArmError> {
        self.typed(props, key, path, "true or false", |v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })
    }

    fn strings(&self, props: &Node, key: &str, path: &str) -> Result<Vec<String>, ArmError> {
        let Some(n) = props.get(key) else {
            return Ok(Vec::new());
        };
        if matches!(n.value, Value::Null) {
            return Ok(Vec::new());
        }
        let p = join(path, key);
        let items = n.as_array().ok_or_else(|| {
            self.err(
                n,
                &p,
                &format!("expected an array of strings, found {}", n.kind()),
            )
        })?;
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.err(s, &format!("{p}[{i}]"), "expected a string"))
            })
            .collect()
    }

    /// One of `choices` (compared without case), returned as written in `choices`.
    fn choice(
        &self,
        props: &Node,
        key: &str,
        path: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, ArmError> {
        let Some(s) = self.string(props, key, path)? else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(&s))
            .copied()
            .map(Some)
            .ok_or_else(|| {
                self.err(
                    props.get(key).unwrap_or(props),
                    &join(path, key),
                    &format!("'{s}' is not one of {}", choices.join(", ")),
                )
            })
    }

    fn gateway(&mut self, props: &Node) -> Result<Vec<Section>, ArmError> {
        let pp = self.props_path.clone();
        const INFRA: &str = "Azure infrastructure; a wasmgate process has no instances, subnets or public addresses to configure";
        const WAF: &str = "Web Application Firewall is not part of wasmgate; put a WAF in front of it or filter in a router plugin";
        self.keys(
            props,
            &pp,
            &[
                "frontendIPConfigurations",
                "frontendPorts",
                "httpListeners",
                "backendAddressPools",
                "backendHttpSettingsCollection",
                "probes",
                "urlPathMaps",
                "requestRoutingRules",
                "redirectConfigurations",
                "rewriteRuleSets",
                "sslCertificates",
                "trustedRootCertificates",
                "sslPolicy",
                "authenticationCertificates",
                // Layer-4 (TCP/TLS proxy) collections: refused below when they hold items.
                "listeners",
                "routingRules",
                "backendSettingsCollection",
                "sslProfiles",
                "trustedClientCertificates",
                "loadDistributionPolicies",
            ],
            &[
                ("sku", "instance size, tier and capacity: a wasmgate process is one instance; run more processes to scale"),
                ("autoscaleConfiguration", "instance count: a wasmgate process is one instance; run more processes to scale"),
                ("gatewayIPConfigurations", "the subnet the gateway joins in Azure; listeners bind local addresses (--bind)"),
                ("webApplicationFirewallConfiguration", WAF),
                ("firewallPolicy", WAF),
                ("forceFirewallPolicyAssociation", WAF),
                ("enableHttp2", "HTTPS listeners always offer HTTP/2 through ALPN; plain-HTTP listeners serve HTTP/1.1"),
                ("enableFips", INFRA),
                ("privateLinkConfigurations", INFRA),
                ("privateEndpointConnections", INFRA),
                ("customErrorConfigurations", "custom error pages are not supported; wasmgate answers errors with its own short bodies"),
                ("globalConfiguration", INFRA),
                ("defaultPredefinedSslPolicy", "wasmgate's TLS settings are rustls defaults with TLS 1.2 at least"),
            ],
        )?;
        for key in [
            "listeners",
            "routingRules",
            "backendSettingsCollection",
            "sslProfiles",
            "trustedClientCertificates",
            "loadDistributionPolicies",
        ] {
            if let Some(n) = props.get(key).filter(|n| is_set(n)) {
                let why = match key {
                    "sslProfiles" | "trustedClientCertificates" => {
                        "client certificate authentication (mutual TLS) is not supported"
                    }
                    "loadDistributionPolicies" => {
                        "load distribution policies are not supported (pools are round robin)"
                    }
                    _ => {
                        "TCP/TLS (layer 4) proxying is not supported; wasmgate serves HTTP listeners"
                    }
                };
                return Err(self.err(n, &join(&pp, key), why));
            }
        }

        // v1 templates often carry the backend's certificate while every setting is HTTP; a
        // setting that uses one is refused in `settings`.
        if props.get("authenticationCertificates").is_some_and(is_set) {
            self.ignore(
                &join(&pp, "authenticationCertificates"),
                "no backend settings use these v1 backend authentication certificates",
            );
        }

        // Frontend IP configurations only have to exist: --bind decides the address.
        let frontend_ips: Vec<String> = self
            .items(props, "frontendIPConfigurations")?
            .into_iter()
            .map(|i| i.name)
            .collect();
        if props.get("frontendIPConfigurations").is_some_and(is_set) {
            let how = match self.binding.ports.is_empty() {
                true => format!("listeners bind {} (--bind)", self.binding.address),
                false => format!(
                    "listeners bind {} (--bind) or the --bind-port addresses",
                    self.binding.address
                ),
            };
            self.ignore(
                &join(&pp, "frontendIPConfigurations"),
                &format!("public and private frontend addresses belong to Azure; {how}"),
            );
        }

        let ports = self.frontend_ports(props)?;
        let port_names: Vec<String> = ports.iter().map(|p| p.0.clone()).collect();
        let ssl_names = self.names(props, "sslCertificates")?;
        let root_names = self.names(props, "trustedRootCertificates")?;
        let min_tls = self.ssl_policy(props)?;

        let mut sections = Vec::new();
        let listeners = self.listeners(
            props,
            &ports,
            &port_names,
            &frontend_ips,
            &ssl_names,
            min_tls,
        )?;
        let listener_names: Vec<String> = listeners.iter().map(|(n, _)| n.clone()).collect();
        let probe_names = self.names(props, "probes")?;
        let pool_names = self.names(props, "backendAddressPools")?;
        let settings_names = self.names(props, "backendHttpSettingsCollection")?;
        let redirect_names = self.names(props, "redirectConfigurations")?;
        let rewrite_names = self.names(props, "rewriteRuleSets")?;
        let map_names = self.names(props, "urlPathMaps")?;

        sections.extend(listeners.into_iter().map(|(_, s)| s));
        sections.extend(self.pools(props)?);
        sections.extend(self.settings(props, &probe_names, &root_names)?);
        sections.extend(self.probes(props)?);
        let refs = Refs {
            pools: &pool_names,
            settings: &settings_names,
            redirects: &redirect_names,
            rewrites: &rewrite_names,
        };
        sections.extend(self.path_maps(props, &refs)?);
        sections.extend(self.rules(props, &listener_names, &map_names, &refs)?);
        sections.extend(self.redirects(props, &listener_names)?);
        sections.extend(self.rewrites(props)?);
        Ok(sections)
    }

    fn names(&self, props: &Node, key: &str) -> Result<Vec<String>, ArmError> {
        Ok(self
            .items(props, key)?
            .into_iter()
            .map(|i| i.name)
            .collect())
    }

    fn frontend_ports(&mut self, props: &Node) -> Result<Vec<(String, u16)>, ArmError> {
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
    fn ssl_policy(&mut self, props: &Node) -> Result<Option<&'static str>, ArmError> {
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

    fn listeners(
        &mut self,
        props: &Node,
        ports: &[(String, u16)],
        port_names: &[String],
        frontend_ips: &[String],
        ssl_names: &[String],
        min_tls: Option<&'static str>,
    ) -> Result<Vec<(String, Section)>, ArmError> {
        let items = self.items(props, "httpListeners")?;
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
                ],
                &[
                    ("firewallPolicy", "Web Application Firewall is not part of wasmgate"),
                    ("customErrorConfigurations", "custom error pages are not supported; wasmgate answers errors with its own short bodies"),
                ],
            )?;
            if let Some(n) = p.get("sslProfile").filter(|n| is_set(n)) {
                return Err(self.err(n, &join(path, "sslProfile"), "SSL profiles (per-listener TLS policy, client certificate authentication) are not supported"));
            }
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
                super::show_addr(ip, port)
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

    fn pools(&mut self, props: &Node) -> Result<Vec<Section>, ArmError> {
        let mut out = Vec::new();
        for item in self.items(props, "backendAddressPools")? {
            let (p, path) = (&*item.props, item.path.as_str());
            self.keys(
                p,
                path,
                &[
                    "backendAddresses",
                    "backendIPConfigurations",
                    "loadBalancerBackendAddresses",
                ],
                &[],
            )?;
            if let Some(n) = p.get("backendIPConfigurations").filter(|n| is_set(n)) {
                return Err(self.err(n, &join(path, "backendIPConfigurations"), "pool membership through network interfaces is not supported; list the servers in backendAddresses"));
            }
            if let Some(n) = p.get("loadBalancerBackendAddresses").filter(|n| is_set(n)) {
                return Err(self.err(
                    n,
                    &join(path, "loadBalancerBackendAddresses"),
                    "not supported; list the servers in backendAddresses",
                ));
            }
            let mut addrs = Vec::new();
            if let Some(list) = p.get("backendAddresses").filter(|n| is_set(n)) {
                let lp = join(path, "backendAddresses");
                let items = list
                    .as_array()
                    .ok_or_else(|| self.err(list, &lp, "expected an array"))?;
                for (i, a) in items.iter().enumerate() {
                    let ap = format!("{lp}[{i}]");
                    self.keys(a, &ap, &["ipAddress", "fqdn"], &[])?;
                    let ip = self.string(a, "ipAddress", &ap)?.filter(|s| !s.is_empty());
                    let fqdn = self.string(a, "fqdn", &ap)?.filter(|s| !s.is_empty());
                    let addr = match (ip, fqdn) {
                        (Some(ip), None) => {
                            // An IPv6 address takes brackets before wasmgate's optional :port.
                            match ip.parse::<IpAddr>() {
                                Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
                                _ => ip,
                            }
                        }
                        (None, Some(f)) => f,
                        _ => {
                            return Err(self.err(
                                a,
                                &ap,
                                "a backend address needs one of ipAddress or fqdn",
                            ));
                        }
                    };
                    addrs.push(Tv::Str(addr));
                }
            }
            let mut s = Section::new(
                "backend_pools",
                path.trim_end_matches(".properties").to_string(),
            );
            s.set("name", Tv::str(&item.name));
            s.set("addresses", Tv::Array(addrs));
            out.push(s);
        }
        Ok(out)
    }

    fn settings(
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

    fn probes(&mut self, props: &Node) -> Result<Vec<Section>, ArmError> {
        let mut out = Vec::new();
        for item in self.items(props, "probes")? {
            let (p, path) = (&*item.props, item.path.as_str());
            self.keys(
                p,
                path,
                &[
                    "protocol",
                    "host",
                    "path",
                    "interval",
                    "timeout",
                    "unhealthyThreshold",
                    "pickHostNameFromBackendHttpSettings",
                    "minServers",
                    "match",
                    "port",
                ],
                &[(
                    "pickHostNameFromBackendSettings",
                    "layer-4 backend settings are not supported",
                )],
            )?;
            let mut s = Section::new("probes", path.trim_end_matches(".properties").to_string());
            s.set("name", Tv::str(&item.name));
            if let Some(proto) =
                self.choice(p, "protocol", path, &["Http", "Https", "Tcp", "Tls"])?
            {
                if matches!(proto, "Tcp" | "Tls") {
                    return Err(self.err(
                        p,
                        &join(path, "protocol"),
                        "TCP and TLS probes belong to layer-4 proxying, which is not supported",
                    ));
                }
                s.set("protocol", Tv::str(proto.to_ascii_lowercase()));
            }
            if let Some(h) = self.string(p, "host", path)?.filter(|h| !h.is_empty()) {
                s.set("host", Tv::Str(h));
            }
            if self.bool(p, "pickHostNameFromBackendHttpSettings", path)? == Some(true) {
                s.set("pick_host_name_from_backend_settings", Tv::Bool(true));
            }
            if let Some(v) = self.string(p, "path", path)? {
                s.set("path", Tv::Str(v));
            }
            if let Some(v) = self.int(p, "port", path)? {
                s.set("port", Tv::Int(v));
            }
            for (arm, toml) in [
                ("interval", "interval"),
                ("timeout", "timeout"),
                ("unhealthyThreshold", "unhealthy_threshold"),
                ("minServers", "min_servers"),
            ] {
                if let Some(v) = self.int(p, arm, path)? {
                    s.set(toml, Tv::Int(v));
                }
            }
            if let Some(mt) = p.get("match").filter(|n| is_set(n)) {
                let mp = join(path, "match");
                self.keys(mt, &mp, &["statusCodes", "body"], &[])?;
                let mut members = Vec::new();
                let codes = self.strings(mt, "statusCodes", &mp)?;
                if !codes.is_empty() {
                    members.push((
                        "status_codes".to_string(),
                        Tv::Array(codes.into_iter().map(Tv::Str).collect()),
                    ));
                }
                if let Some(b) = self.string(mt, "body", &mp)?.filter(|b| !b.is_empty()) {
                    members.push(("body".to_string(), Tv::Str(b)));
                }
                if !members.is_empty() {
                    s.set("match", Tv::Inline(members));
                }
            }
            out.push(s);
        }
        Ok(out)
    }

    /// A forward / redirect / rewrite target from the properties named by `keys`, as TOML fields
    /// named by `fields`.
    fn target(
        &self,
        p: &Node,
        path: &str,
        keys: [&str; 4],
        fields: [&str; 4],
        refs: &Refs,
        s: &mut Section,
    ) -> Result<(), ArmError> {
        let collections = [
            ("backendAddressPools", refs.pools),
            ("backendHttpSettingsCollection", refs.settings),
            ("redirectConfigurations", refs.redirects),
            ("rewriteRuleSets", refs.rewrites),
        ];
        for ((key, field), (collection, names)) in keys.iter().zip(fields).zip(collections) {
            if let Some(name) = self.opt_ref(p, key, path, collection, names)? {
                s.set(field, Tv::Str(name));
            }
        }
        Ok(())
    }

    fn path_maps(&mut self, props: &Node, refs: &Refs) -> Result<Vec<Section>, ArmError> {
        let mut out = Vec::new();
        for item in self.items(props, "urlPathMaps")? {
            let (p, path) = (&*item.props, item.path.as_str());
            self.keys(
                p,
                path,
                &[
                    "defaultBackendAddressPool",
                    "defaultBackendHttpSettings",
                    "defaultRedirectConfiguration",
                    "defaultRewriteRuleSet",
                    "pathRules",
                    "defaultLoadDistributionPolicy",
                ],
                &[],
            )?;
            if let Some(n) = p.get("defaultLoadDistributionPolicy").filter(|n| is_set(n)) {
                return Err(self.err(
                    n,
                    &join(path, "defaultLoadDistributionPolicy"),
                    "load distribution policies are not supported (pools are round robin)",
                ));
            }
            let mut s = Section::new(
                "url_path_maps",
                path.trim_end_matches(".properties").to_string(),
            );
            s.set("name", Tv::str(&item.name));
            self.target(
                p,
                path,
                [
                    "defaultBackendAddressPool",
                    "defaultBackendHttpSettings",
                    "defaultRedirectConfiguration",
                    "defaultRewriteRuleSet",
                ],
                [
                    "default_backend_pool",
                    "default_backend_settings",
                    "default_redirect",
                    "default_rewrite_set",
                ],
                refs,
                &mut s,
            )?;
            let rules_path = join(path, "pathRules");
            if let Some(list) = p.get("pathRules").filter(|n| is_set(n)) {
                let rules = list
                    .as_array()
                    .ok_or_else(|| self.err(list, &rules_path, "expected an array"))?;
                for (i, r) in rules.iter().enumerate() {
                    let rp = format!("{rules_path}[{i}]");
                    let name = r
                        .get("name")
                        .and_then(Node::as_str)
                        .ok_or_else(|| self.err(r, &rp, "every path rule needs a \"name\""))?;
                    self.keys(r, &rp, &["name", "properties", "id", "type", "etag"], &[])?;
                    let rprops = props_of(r);
                    let rprops = &*rprops;
                    let pp = join(&rp, "properties");
                    self.keys(
                        rprops,
                        &pp,
                        &[
                            "paths",
                            "backendAddressPool",
                            "backendHttpSettings",
                            "redirectConfiguration",
                            "rewriteRuleSet",
                            "loadDistributionPolicy",
                        ],
                        &[(
                            "firewallPolicy",
                            "Web Application Firewall is not part of wasmgate",
                        )],
                    )?;
                    if let Some(n) = rprops.get("loadDistributionPolicy").filter(|n| is_set(n)) {
                        return Err(self.err(
                            n,
                            &join(&pp, "loadDistributionPolicy"),
                            "load distribution policies are not supported (pools are round robin)",
                        ));
                    }
                    let mut rs = Section::new("path_rules", rp.clone());
                    rs.set("name", Tv::str(name));
                    let paths = self.strings(rprops, "paths", &pp)?;
                    rs.set("paths", Tv::Array(paths.into_iter().map(Tv::Str).collect()));
                    self.target(
                        rprops,
                        &pp,
                        [
                            "backendAddressPool",
                            "backendHttpSettings",
                            "redirectConfiguration",
                            "rewriteRuleSet",
                        ],
                        [
                            "backend_pool",
                            "backend_settings",
                            "redirect",
                            "rewrite_set",
                        ],
                        refs,
                        &mut rs,
                    )?;
                    s.children.push(("path_rules", rs));
                }
            }
            out.push(s);
        }
        Ok(out)
    }

    fn rules(
        &mut self,
        props: &Node,
        listeners: &[String],
        maps: &[String],
        refs: &Refs,
    ) -> Result<Vec<Section>, ArmError> {
        let mut out = Vec::new();
        let items = self.items(props, "requestRoutingRules")?;
        let without_priority = items
            .iter()
            .filter(|i| i.props.get("priority").is_none())
            .count();
        for item in &items {
            let (p, path) = (&*item.props, item.path.as_str());
            self.keys(
                p,
                path,
                &[
                    "ruleType",
                    "priority",
                    "httpListener",
                    "backendAddressPool",
                    "backendHttpSettings",
                    "redirectConfiguration",
                    "rewriteRuleSet",
                    "urlPathMap",
                    "loadDistributionPolicy",
                ],
                &[],
            )?;
            if let Some(n) = p.get("loadDistributionPolicy").filter(|n| is_set(n)) {
                return Err(self.err(
                    n,
                    &join(path, "loadDistributionPolicy"),
                    "load distribution policies are not supported (pools are round robin)",
                ));
            }
            let mut s = Section::new("rules", path.trim_end_matches(".properties").to_string());
            s.set("name", Tv::str(&item.name));
            if let Some(prio) = self.int(p, "priority", path)? {
                s.set("priority", Tv::Int(prio));
            } else if without_priority == items.len() {
                s.notes
                    .push("no priority (v1): rules are taken in template order".into());
            }
            match self.choice(p, "ruleType", path, &["Basic", "PathBasedRouting"])? {
                Some("PathBasedRouting") => s.set("kind", Tv::str("path_based")),
                Some(_) => s.set("kind", Tv::str("basic")),
                None => {}
            }
            let listener = self
                .opt_ref(p, "httpListener", path, "httpListeners", listeners)?
                .ok_or_else(|| {
                    self.err(
                        p,
                        &join(path, "httpListener"),
                        "a rule needs \"httpListener\"",
                    )
                })?;
            s.set("listener", Tv::Str(listener));
            self.target(
                p,
                path,
                [
                    "backendAddressPool",
                    "backendHttpSettings",
                    "redirectConfiguration",
                    "rewriteRuleSet",
                ],
                [
                    "backend_pool",
                    "backend_settings",
                    "redirect",
                    "rewrite_set",
                ],
                refs,
                &mut s,
            )?;
            if let Some(m) = self.opt_ref(p, "urlPathMap", path, "urlPathMaps", maps)? {
                s.set("url_path_map", Tv::Str(m));
            }
            out.push(s);
        }
        Ok(out)
    }

    fn redirects(&mut self, props: &Node, listeners: &[String]) -> Result<Vec<Section>, ArmError> {
        let mut out = Vec::new();
        for item in self.items(props, "redirectConfigurations")? {
            let (p, path) = (&*item.props, item.path.as_str());
            self.keys(
                p,
                path,
                &[
                    "redirectType",
                    "targetListener",
                    "targetUrl",
                    "includePath",
                    "includeQueryString",
                ],
                &[],
            )?;
            // Back-references Azure reports (which rules use this redirect) configure nothing.
            let mut s = Section::new(
                "redirects",
                path.trim_end_matches(".properties").to_string(),
            );
            s.set("name", Tv::str(&item.name));
            let kind = self
                .choice(
                    p,
                    "redirectType",
                    path,
                    &["Permanent", "Found", "SeeOther", "Temporary"],
                )?
                .ok_or_else(|| {
                    self.err(
                        p,
                        &join(path, "redirectType"),
                        "a redirect needs \"redirectType\"",
                    )
                })?;
            let kind = match kind {
                "Permanent" => "permanent",
                "Found" => "found",
                "SeeOther" => "see_other",
                _ => "temporary",
            };
            s.set("redirect_type", Tv::str(kind));
            if let Some(l) = self.opt_ref(p, "targetListener", path, "httpListeners", listeners)? {
                s.set("target_listener", Tv::Str(l));
            }
            if let Some(u) = self.string(p, "targetUrl", path)?.filter(|u| !u.is_empty()) {
                s.set("target_url", Tv::Str(u));
            }
            // Absent flags are false in Application Gateway (wasmgate's default is true).
            s.set(
                "include_path",
                Tv::Bool(self.bool(p, "includePath", path)?.unwrap_or(false)),
            );
            s.set(
                "include_query_string",
                Tv::Bool(self.bool(p, "includeQueryString", path)?.unwrap_or(false)),
            );
            out.push(s);
        }
        Ok(out)
    }

    fn rewrites(&mut self, props: &Node) -> Result<Vec<Section>, ArmError> {
        let mut out = Vec::new();
        for item in self.items(props, "rewriteRuleSets")? {
            let (p, path) = (&*item.props, item.path.as_str());
            self.keys(p, path, &["rewriteRules"], &[])?;
            let mut s = Section::new(
                "rewrite_sets",
                path.trim_end_matches(".properties").to_string(),
            );
            s.set("name", Tv::str(&item.name));
            let rules_path = join(path, "rewriteRules");
            let mut rules: Vec<(i64, usize, &Node)> = Vec::new();
            if let Some(list) = p.get("rewriteRules").filter(|n| is_set(n)) {
                let items = list
                    .as_array()
                    .ok_or_else(|| self.err(list, &rules_path, "expected an array"))?;
                for (i, r) in items.iter().enumerate() {
                    let rp = format!("{rules_path}[{i}]");
                    // Application Gateway applies rules in ascending ruleSequence (default 100).
                    let seq = self.int(r, "ruleSequence", &rp)?.unwrap_or(100);
                    rules.push((seq, i, r));
                }
            }
            rules.sort_by_key(|(seq, i, _)| (*seq, *i));
            let mut request = Vec::new();
            let mut response = Vec::new();
            for (_, i, r) in rules {
                let rp = format!("{rules_path}[{i}]");
                self.keys(
                    r,
                    &rp,
                    &["name", "ruleSequence", "conditions", "actionSet"],
                    &[],
                )?;
                // A rule's conditions (all must hold) go with each of its header rewrites.
                let mut conditions = Vec::new();
                if let Some(list) = r.get("conditions").filter(|n| is_set(n)) {
                    let cp = join(&rp, "conditions");
                    let items = list
                        .as_array()
                        .ok_or_else(|| self.err(list, &cp, "expected an array"))?;
                    for (k, c) in items.iter().enumerate() {
                        let p = format!("{cp}[{k}]");
                        self.keys(c, &p, &["variable", "pattern", "ignoreCase", "negate"], &[])?;
                        let variable = self.string(c, "variable", &p)?.ok_or_else(|| {
                            self.err(c, &join(&p, "variable"), "a condition needs \"variable\"")
                        })?;
                        let pattern = self.string(c, "pattern", &p)?.ok_or_else(|| {
                            self.err(c, &join(&p, "pattern"), "a condition needs \"pattern\"")
                        })?;
                        let mut members = vec![
                            ("variable".to_string(), Tv::Str(variable)),
                            ("pattern".to_string(), Tv::Str(pattern)),
                        ];
                        // Application Gateway's default is a case-insensitive match.
                        let ignore_case = self.bool(c, "ignoreCase", &p)?.unwrap_or(true);
                        members.push(("ignore_case".to_string(), Tv::Bool(ignore_case)));
                        if self.bool(c, "negate", &p)? == Some(true) {
                            members.push(("negate".to_string(), Tv::Bool(true)));
                        }
                        conditions.push(Tv::Inline(members));
                    }
                }
                let Some(actions) = r.get("actionSet").filter(|n| is_set(n)) else {
                    continue;
                };
                let ap = join(&rp, "actionSet");
                self.keys(
                    actions,
                    &ap,
                    &[
                        "requestHeaderConfigurations",
                        "responseHeaderConfigurations",
                        "urlConfiguration",
                    ],
                    &[],
                )?;
                if let Some(u) = actions.get("urlConfiguration").filter(|n| is_set(n)) {
                    return Err(self.err(u, &join(&ap, "urlConfiguration"), "URL rewrites are not supported (path overrides are: backend settings \"path\")"));
                }
                for (key, into) in [
                    ("requestHeaderConfigurations", &mut request),
                    ("responseHeaderConfigurations", &mut response),
                ] {
                    let Some(list) = actions.get(key).filter(|n| is_set(n)) else {
                        continue;
                    };
                    let lp = join(&ap, key);
                    let headers = list
                        .as_array()
                        .ok_or_else(|| self.err(list, &lp, "expected an array"))?;
                    for (j, h) in headers.iter().enumerate() {
                        let hp = format!("{lp}[{j}]");
                        self.keys(
                            h,
                            &hp,
                            &["headerName", "headerValue", "headerValueMatcher"],
                            &[],
                        )?;
                        if let Some(n) = h.get("headerValueMatcher").filter(|n| is_set(n)) {
                            return Err(self.err(
                                n,
                                &join(&hp, "headerValueMatcher"),
                                "rewriting part of a header value by pattern is not supported",
                            ));
                        }
                        let name = self.string(h, "headerName", &hp)?.ok_or_else(|| {
                            self.err(
                                h,
                                &join(&hp, "headerName"),
                                "a header configuration needs \"headerName\"",
                            )
                        })?;
                        let value = self.string(h, "headerValue", &hp)?.unwrap_or_default();
                        if let Some(var) = server_variable(&value) {
                            return Err(self.err(
                                h,
                                &join(&hp, "headerValue"),
                                &format!("the value uses server variable '{{{var}}}', which cannot be expressed: wasmgate's rewrite sets set fixed values (conditions may test variables)"),
                            ));
                        }
                        let mut members = vec![("name".to_string(), Tv::Str(name))];
                        if !value.is_empty() {
                            members.push(("value".to_string(), Tv::Str(value)));
                        }
                        if !conditions.is_empty() {
                            members.push(("conditions".to_string(), Tv::Array(conditions.clone())));
                        }
                        into.push(Tv::Inline(members));
                    }
                }
            }
            if !request.is_empty() {
                s.set("request_headers", Tv::Array(request));
            }
            if !response.is_empty() {
                s.set("response_headers", Tv::Array(response));
            }
            s.notes.push(
                "rewrite rules flattened in ruleSequence order; an empty value deletes the header"
                    .into(),
            );
            out.push(s);
        }
        Ok(out)
    }
}

struct Refs<'r> {
    pools: &'r [String],
    settings: &'r [String],
    redirects: &'r [String],
    rewrites: &'r [String],
}

/// An item's `properties`, or an empty object at the item's position.
fn props_of(item: &Node) -> std::borrow::Cow<'_, Node> {
    match item.get("properties") {
        Some(p) => std::borrow::Cow::Borrowed(p),
        None => std::borrow::Cow::Owned(Node::new(Value::Object(Vec::new()), item.pos)),
    }
}

/// Whether a value configures anything (null, `[]`, `{}`, `""` and `false` do not).
fn is_set(n: &Node) -> bool {
    match &n.value {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        _ => true,
    }
}

/// The first server variable in a rewrite value (`{var_client_ip}`, `{http_req_Host}`, ...).
fn server_variable(value: &str) -> Option<&str> {
    let start = value.find('{')?;
    let rest = &value[start + 1..];
    let end = rest.find('}')?;
    let name = &rest[..end];
    let lower = name.to_ascii_lowercase();
    (lower.starts_with("var_") || lower.starts_with("http_req_") || lower.starts_with("http_resp_"))
        .then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_variables_are_found() {
        assert_eq!(
            server_variable("x {var_client_ip} y"),
            Some("var_client_ip")
        );
        assert_eq!(server_variable("{http_req_Host}"), Some("http_req_Host"));
        assert_eq!(
            server_variable("{http_resp_Location}"),
            Some("http_resp_Location")
        );
        assert_eq!(server_variable("{\"json\": 1}"), None);
        assert_eq!(server_variable("plain"), None);
    }

    const GW: &str =
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/applicationGateways/gw";

    /// A minimal gateway; `patch` replaces text in it to make each case.
    fn base() -> String {
        format!(
            r#"{{
  "type": "Microsoft.Network/applicationGateways",
  "name": "gw",
  "properties": {{
    "frontendPorts": [ {{ "name": "p80", "properties": {{ "port": 80 }} }} ],
    "httpListeners": [ {{ "name": "l1", "properties": {{ "frontendPort": {{ "id": "{GW}/frontendPorts/p80" }}, "protocol": "Http" }} }} ],
    "backendAddressPools": [ {{ "name": "pool", "properties": {{ "backendAddresses": [ {{ "ipAddress": "10.0.0.1" }}, {{ "fqdn": "app.internal" }}, {{ "ipAddress": "2001:db8::1" }} ] }} }} ],
    "backendHttpSettingsCollection": [ {{ "name": "s1", "properties": {{ "port": 8080, "protocol": "Http" }} }} ],
    "requestRoutingRules": [ {{ "name": "r1", "properties": {{ "ruleType": "Basic", "httpListener": {{ "id": "{GW}/httpListeners/L1" }}, "backendAddressPool": {{ "id": "{GW}/backendAddressPools/pool" }}, "backendHttpSettings": {{ "id": "{GW}/backendHttpSettingsCollection/s1" }} }} }} ]
  }}
}}"#
        )
    }

    fn run(text: &str) -> Result<(String, Vec<Warning>), ArmError> {
        let node = super::super::json::parse(text).expect("test JSON");
        let dir = std::env::temp_dir().join(format!(
            "wasmgate-arm-map-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut certs = CertWriter::new(dir.clone(), dir.clone());
        let m = map_gateway(
            "t.json",
            &node,
            "resources[0]",
            &Binding::default(),
            &mut certs,
        );
        let _ = std::fs::remove_dir_all(&dir);
        let m = m?;
        let doc = super::super::emit::Doc {
            header: vec![],
            sections: m.sections,
        };
        Ok((doc.render(), m.warnings))
    }

    fn patched(from: &str, to: &str) -> Result<(String, Vec<Warning>), ArmError> {
        let text = base();
        assert!(text.contains(from), "base has no {from:?}");
        run(&text.replacen(from, to, 1))
    }

    fn refused(from: &str, to: &str, expected: &str) {
        let e = patched(from, to).expect_err(expected);
        assert!(
            e.to_string().contains(expected),
            "expected {expected:?} in {e}"
        );
        assert!(e.pos.is_some(), "{e} has no position");
    }

    #[test]
    fn a_basic_gateway() {
        let (toml, warnings) = run(&base()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        for line in [
            "addresses = [\"10.0.0.1\", \"app.internal\", \"[2001:db8::1]\"]",
            "# no priority (v1): rules are taken in template order",
            "listener = \"l1\"",
            "bind_address = \"0.0.0.0\"",
            "# from resources[0].properties.requestRoutingRules[0]",
        ] {
            assert!(toml.contains(line), "{line:?} missing in\n{toml}");
        }
        let parsed: toml::Table = toml::from_str(&toml).unwrap();
        assert_eq!(parsed["rules"][0]["kind"].as_str(), Some("basic"));
    }

    #[test]
    fn v1_authentication_certificates_only_matter_where_a_setting_uses_them() {
        // Carried along while every setting is HTTP: listed, not refused.
        let (_, warnings) = patched(
            "\"frontendPorts\"",
            "\"authenticationCertificates\": [ { \"name\": \"ase\", \"properties\": { \"data\": \"TUlJ\" } } ], \"frontendPorts\"",
        )
        .unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.path == "resources[0].properties.authenticationCertificates"),
            "{warnings:?}"
        );
        refused(
            "\"port\": 8080, \"protocol\": \"Http\"",
            &format!(
                "\"port\": 443, \"protocol\": \"Https\", \"authenticationCertificates\": [ {{ \"id\": \"{GW}/authenticationCertificates/ase\" }} ]"
            ),
            "backendHttpSettingsCollection[0].properties.authenticationCertificates: v1 backend authentication certificates (trusting exactly the backend's own certificate) are not supported",
        );
    }

    #[test]
    fn exported_certificates_without_their_key_are_refused_with_the_reason() {
        refused(
            "\"protocol\": \"Http\" }",
            &format!(
                "\"protocol\": \"Https\", \"sslCertificate\": {{ \"id\": \"{GW}/sslCertificates/c\" }} }} }} ], \"sslCertificates\": [ {{ \"name\": \"c\", \"properties\": {{ \"publicCertData\": \"TUlJQw==\" }}"
            ),
            "sslCertificates[0].properties.data: the certificate has only \"publicCertData\"",
        );
    }

    #[test]
    fn settings_and_probes() {
        let text = base()
            .replacen(
                "\"port\": 8080, \"protocol\": \"Http\"",
                &format!(
                    "\"port\": 8080, \"protocol\": \"Http\", \"cookieBasedAffinity\": \"enabled\", \"connectionDraining\": {{ \"enabled\": true, \"drainTimeoutInSec\": 90 }}, \"probe\": {{ \"id\": \"{GW}/probes/hp\" }}, \"probeEnabled\": false }} }}, {{ \"name\": \"s2\", \"properties\": {{ \"port\": 80, \"probe\": {{ \"id\": \"{GW}/probes/HP\" }}, \"pickHostNameFromBackendAddress\": true"
                ),
                1,
            )
            .replacen(
                "\"frontendPorts\"",
                "\"probes\": [ { \"name\": \"hp\", \"properties\": { \"protocol\": \"Http\", \"path\": \"/health\", \"interval\": 5, \"unhealthyThreshold\": 2, \"match\": { \"statusCodes\": [\"200-299\", \"401\"], \"body\": \"ok\" } } } ], \"frontendPorts\"",
                1,
            );
        let (toml, warnings) = run(&text).unwrap();
        for line in [
            "cookie_based_affinity = true",
            "connection_draining = { enabled = true, timeout = 90 }",
            "probe = \"hp\"",
            "pick_host_name_from_backend_address = true",
            "match = { status_codes = [\"200-299\", \"401\"], body = \"ok\" }",
            "unhealthy_threshold = 2",
        ] {
            assert!(toml.contains(line), "{line:?} missing in\n{toml}");
        }
        // probeEnabled false on s1: its probe is listed as ignored, s2 keeps it.
        assert_eq!(toml.matches("probe = \"hp\"").count(), 1, "{toml}");
        assert!(
            warnings.iter().any(|w| w
                .path
                .ends_with("backendHttpSettingsCollection[0].properties.probe")),
            "{warnings:?}"
        );
    }

    #[test]
    fn references_must_name_an_item_of_this_gateway() {
        refused(
            "applicationGateways/gw/httpListeners/L1",
            "applicationGateways/other/httpListeners/L1",
            "refers to application gateway 'other'",
        );
        refused(
            "httpListeners/L1",
            "frontendPorts/p80",
            "does not name a httpListeners item",
        );
        refused(
            "httpListeners/L1",
            "httpListeners/nope",
            "httpListener.id: there is no httpListeners item named 'nope'",
        );
        refused(
            "\"httpListener\": { \"id\"",
            "\"httpListener\": { \"ref\"",
            "httpListener: expected a reference",
        );
        refused(
            ", \"httpListener\": { \"id\": \"/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/applicationGateways/gw/httpListeners/L1\" }",
            "",
            "a rule needs \"httpListener\"",
        );
    }

    #[test]
    fn invalid_items_are_refused_with_their_path() {
        refused(
            "{ \"name\": \"s1\"",
            "{ \"name\": \"POOL\" }, { \"name\": \"s1\"",
            "backendHttpSettingsCollection[0].properties.port: backend settings need \"port\"",
        );
        refused(
            "\"name\": \"l1\", \"properties\": {",
            "\"name\": \"l1\", \"properties\": { \"hostName\": \"a.com\", \"hostNames\": [\"b.com\"],",
            "give hostName or hostNames, not both",
        );
        refused(
            "\"protocol\": \"Http\" } } ],\n    \"backendAddressPools\"",
            "\"protocol\": \"Https\" } } ],\n    \"backendAddressPools\"",
            "an Https listener needs \"sslCertificate\"",
        );
        refused(
            "\"protocol\": \"Http\" } } ],\n    \"backendAddressPools\"",
            "\"protocol\": \"Ftp\" } } ],\n    \"backendAddressPools\"",
            "'Ftp' is not one of Http, Https",
        );
        refused(
            "{ \"port\": 80 }",
            "{ \"port\": 70000 }",
            "70000 is not a port",
        );
        refused(
            "{ \"port\": 80 }",
            "{ \"port\": \"80\" }",
            "frontendPorts[0].properties.port: expected an integer",
        );
        refused(
            "{ \"name\": \"pool\"",
            "{ \"name\": \"Pool\" }, { \"name\": \"pool\"",
            "the name 'pool' is already used by resources[0].properties.backendAddressPools[0]",
        );
        refused(
            "{ \"fqdn\": \"app.internal\" }",
            "{ }",
            "backendAddresses[1]: a backend address needs one of ipAddress or fqdn",
        );
        refused(
            "\"name\": \"gw\",",
            "\"name\": \"gw\", \"copy\": { \"count\": 2 },",
            "resources[0].copy: resource copy loops are not supported",
        );
        refused(
            "\"frontendPorts\"",
            "\"listeners\": [ { \"name\": \"tcp\" } ], \"frontendPorts\"",
            "properties.listeners: TCP/TLS (layer 4) proxying is not supported",
        );
        refused(
            "\"frontendPorts\"",
            "\"trafficMagic\": 1, \"frontendPorts\"",
            "properties.trafficMagic: not supported by wasmgate",
        );
        refused(
            "\"protocol\": \"Http\" } } ],\n    \"backendAddressPools\"",
            &format!(
                "\"protocol\": \"Https\", \"sslCertificate\": {{ \"id\": \"{GW}/sslCertificates/kv\" }} }} }} ], \"sslCertificates\": [ {{ \"name\": \"kv\", \"properties\": {{ \"keyVaultSecretId\": \"https://v/s\" }} }} ],\n    \"backendAddressPools\""
            ),
            "sslCertificates[0].properties.keyVaultSecretId: Key Vault certificates cannot be fetched outside Azure",
        );
        refused(
            "\"backendAddresses\": [",
            "\"backendIPConfigurations\": [ { \"id\": \"nic\" } ], \"backendAddresses\": [",
            "pool membership through network interfaces is not supported",
        );
    }

    #[test]
    fn ignored_parts_are_listed_with_the_reason() {
        let (_, warnings) = patched(
            "\"frontendPorts\"",
            "\"sku\": { \"name\": \"WAF_v2\" }, \"webApplicationFirewallConfiguration\": { \"enabled\": true }, \"enableHttp2\": false, \"sslPolicy\": { \"minProtocolVersion\": \"TLSv1_0\" }, \"provisioningState\": \"Succeeded\", \"frontendPorts\"",
        )
        .unwrap();
        let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
        assert!(paths.contains(&"resources[0].properties.sku"), "{paths:?}");
        assert!(
            paths.contains(&"resources[0].properties.webApplicationFirewallConfiguration"),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"resources[0].properties.sslPolicy.minProtocolVersion"),
            "{paths:?}"
        );
        // false and read-only values configure nothing: not worth a warning.
        assert!(
            !paths
                .iter()
                .any(|p| p.contains("enableHttp2") || p.contains("provisioningState")),
            "{paths:?}"
        );
    }

    #[test]
    fn redirects_and_rewrites() {
        let text = base()
            .replacen(
                &format!("\"backendAddressPool\": {{ \"id\": \"{GW}/backendAddressPools/pool\" }}, \"backendHttpSettings\": {{ \"id\": \"{GW}/backendHttpSettingsCollection/s1\" }}"),
                &format!("\"redirectConfiguration\": {{ \"id\": \"{GW}/redirectConfigurations/toSite\" }}"),
                1,
            )
            .replacen(
                "\"frontendPorts\"",
                "\"redirectConfigurations\": [ { \"name\": \"toSite\", \"properties\": { \"redirectType\": \"SeeOther\", \"targetUrl\": \"https://site\", \"includePath\": true, \"requestRoutingRules\": [ { \"id\": \"x\" } ] } } ],
    \"rewriteRuleSets\": [ { \"name\": \"rw\", \"properties\": { \"rewriteRules\": [
      { \"name\": \"cond\", \"ruleSequence\": 300, \"conditions\": [ { \"variable\": \"http_req_Accept\", \"pattern\": \"json\", \"ignoreCase\": false, \"negate\": true } ], \"actionSet\": { \"requestHeaderConfigurations\": [ { \"headerName\": \"X-C\", \"headerValue\": \"3\" } ] } },
      { \"name\": \"second\", \"ruleSequence\": 200, \"actionSet\": { \"requestHeaderConfigurations\": [ { \"headerName\": \"X-B\", \"headerValue\": \"2\" } ] } },
      { \"name\": \"first\", \"actionSet\": { \"requestHeaderConfigurations\": [ { \"headerName\": \"X-A\", \"headerValue\": \"1\" } ], \"responseHeaderConfigurations\": [ { \"headerName\": \"Server\" } ] } } ] } } ], \"frontendPorts\"",
                1,
            );
        assert!(text.contains("redirectConfigurations/toSite"));
        let (toml, _) = run(&text).unwrap();
        assert!(toml.contains("redirect_type = \"see_other\""), "{toml}");
        assert!(
            toml.contains("include_path = true\ninclude_query_string = false"),
            "{toml}"
        );
        // ruleSequence 100 (the default) before 200.
        let parsed: toml::Table = toml::from_str(&toml).unwrap();
        let request = parsed["rewrite_sets"][0]["request_headers"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = request
            .iter()
            .map(|h| h["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["X-A", "X-B", "X-C"], "{toml}");
        // The rule's conditions go with its header rewrite.
        let c = &request[2]["conditions"][0];
        assert_eq!(c["variable"].as_str(), Some("http_req_Accept"));
        assert_eq!(c["ignore_case"].as_bool(), Some(false));
        assert_eq!(c["negate"].as_bool(), Some(true));
        assert!(request[0].get("conditions").is_none());
        assert!(
            toml.contains("response_headers = [{ name = \"Server\" }]"),
            "{toml}"
        );
    }

    #[test]
    fn unexpressible_rewrites_are_refused() {
        let with_rules = |rules: &str| {
            base().replacen(
                "\"frontendPorts\"",
                &format!("\"rewriteRuleSets\": [ {{ \"name\": \"rw\", \"properties\": {{ \"rewriteRules\": [ {rules} ] }} }} ], \"frontendPorts\""),
                1,
            )
        };
        for (rules, expected) in [
            (
                "{ \"name\": \"u\", \"actionSet\": { \"urlConfiguration\": { \"modifiedPath\": \"/x\" } } }",
                "actionSet.urlConfiguration: URL rewrites are not supported",
            ),
            (
                "{ \"name\": \"m\", \"actionSet\": { \"responseHeaderConfigurations\": [ { \"headerName\": \"Location\", \"headerValueMatcher\": { \"pattern\": \"x\" } } ] } }",
                "headerValueMatcher: rewriting part of a header value",
            ),
            (
                "{ \"name\": \"c\", \"conditions\": [ { \"variable\": \"var_uri_path\" } ], \"actionSet\": {} }",
                "conditions[0].pattern: a condition needs \"pattern\"",
            ),
            (
                "{ \"name\": \"c\", \"conditions\": [ { \"variable\": \"var_uri_path\", \"pattern\": \"a\", \"matchAll\": true } ], \"actionSet\": {} }",
                "conditions[0].matchAll: not supported",
            ),
            (
                "{ \"name\": \"v\", \"actionSet\": { \"responseHeaderConfigurations\": [ { \"headerName\": \"X\", \"headerValue\": \"{http_resp_Location}\" } ] } }",
                "server variable '{http_resp_Location}'",
            ),
        ] {
            let e = run(&with_rules(rules)).expect_err(expected);
            assert!(
                e.to_string().contains(expected),
                "expected {expected:?} in {e}"
            );
        }
    }

    #[test]
    fn https_listeners_share_certificates_and_agree_on_sni() {
        let pfx = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/arm/certs/contoso.pfx.b64"
        ))
        .unwrap();
        let listener = |name: &str, sni: bool| {
            format!(
                "{{ \"name\": \"{name}\", \"properties\": {{ \"frontendPort\": {{ \"id\": \"{GW}/frontendPorts/p443\" }}, \"protocol\": \"Https\", \"hostName\": \"{name}.contoso.com\", \"requireServerNameIndication\": {sni}, \"sslCertificate\": {{ \"id\": \"{GW}/sslCertificates/site\" }} }} }}"
            )
        };
        let text = base().replacen(
            "\"frontendPorts\": [",
            &format!(
                "\"sslCertificates\": [ {{ \"name\": \"site\", \"properties\": {{ \"data\": \"{}\", \"password\": \"fixture-password\" }} }} ], \"sslPolicy\": {{ \"minProtocolVersion\": \"TLSv1_3\" }}, \"frontendPorts\": [ {{ \"name\": \"p443\", \"properties\": {{ \"port\": 443 }} }},",
                pfx.trim()
            ),
            1,
        ).replacen(
            "\"httpListeners\": [",
            &format!("\"httpListeners\": [ {}, {},", listener("www", true), listener("api", false)),
            1,
        );
        let (toml, warnings) = run(&text).unwrap();
        assert_eq!(toml.matches("certificate = ").count(), 2, "{toml}");
        assert_eq!(
            toml.matches("site.crt.pem").count(),
            2,
            "one file for both listeners: {toml}"
        );
        assert_eq!(
            toml.matches("min_tls_version = \"1.3\"").count(),
            2,
            "{toml}"
        );
        assert!(!toml.contains("require_sni"), "{toml}");
        assert!(
            warnings.iter().any(|w| w
                .path
                .ends_with("httpListeners[0].properties.requireServerNameIndication")),
            "{warnings:?}"
        );

        let wrong = text.replacen("fixture-password", "wrong", 1);
        let e = run(&wrong).unwrap_err();
        assert!(
            e.to_string().contains(
                "sslCertificates[0].properties.data: not a PKCS#12 (PFX) bundle this password opens"
            ),
            "{e}"
        );
    }

    #[test]
    fn unset_values() {
        let p = Default::default;
        assert!(!is_set(&Node::new(Value::Null, p())));
        assert!(!is_set(&Node::new(Value::Array(vec![]), p())));
        assert!(!is_set(&Node::new(Value::Bool(false), p())));
        assert!(is_set(&Node::new(Value::Int(0), p())));
        assert!(is_set(&Node::new(Value::String("x".into()), p())));
    }
}
