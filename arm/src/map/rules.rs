//! `urlPathMaps` and `requestRoutingRules`: `[[url_path_maps]]` and `[[rules]]`, with the forward,
//! redirect and rewrite targets they share.

use crate::ArmError;
use crate::emit::{Section, Tv};
use crate::json::Node;
use crate::template::join;

use super::access::{is_set, props_of};
use super::{Mapper, Refs};

impl Mapper<'_> {
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

    pub(super) fn path_maps(
        &mut self,
        props: &Node,
        refs: &Refs,
    ) -> Result<Vec<Section>, ArmError> {
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

    pub(super) fn rules(
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
}
