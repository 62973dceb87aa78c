//! From an evaluated `Microsoft.Network/applicationGateways` resource to wasmgate's
//! configuration sections.
//!
//! Every property of the resource is either mapped, listed as ignored with the reason (it
//! describes Azure infrastructure a process does not have), skipped as read-only output of
//! Azure, or refused with an error naming its path: a property that could change routing is
//! never dropped silently. Names of items and the ids that refer to them are compared without
//! regard to case, as ARM does.

mod access;
mod client_auth;
mod listeners;
mod pools;
mod probes;
mod redirects;
mod rewrites;
mod rules;
mod settings;
#[cfg(test)]
mod tests;

use crate::certs::CertWriter;
use crate::emit::Section;
use crate::json::Node;
use crate::template::join;
use crate::{ArmError, Binding, Warning};

use access::{is_set, props_of};

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
    error_pages: Option<&std::path::Path>,
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
        error_pages,
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
    /// Where the pages `customErrorConfigurations` name are read from (`--error-pages`).
    error_pages: Option<&'a std::path::Path>,
    props_path: String,
}

/// One item of a collection (`httpListeners[2]`).
struct Item<'n> {
    name: String,
    /// The item's properties; an empty object where the item has none, positioned at the item.
    props: std::borrow::Cow<'n, Node>,
    path: String,
}

impl Mapper<'_> {
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
                "customErrorConfigurations",
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
                ("globalConfiguration", INFRA),
                ("defaultPredefinedSslPolicy", "wasmgate's TLS settings are rustls defaults with TLS 1.2 at least"),
            ],
        )?;
        for key in [
            "listeners",
            "routingRules",
            "backendSettingsCollection",
            "loadDistributionPolicies",
        ] {
            if let Some(n) = props.get(key).filter(|n| is_set(n)) {
                let why = match key {
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
        let ssl_profiles = self.ssl_profiles(props)?;

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
        sections.extend(ssl_profiles);
        sections.extend(self.error_pages(props, &pp)?);
        Ok(sections)
    }
}

struct Refs<'r> {
    pools: &'r [String],
    settings: &'r [String],
    redirects: &'r [String],
    rewrites: &'r [String],
}
