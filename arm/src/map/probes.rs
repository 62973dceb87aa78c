//! `probes`: `[[probes]]`.

use crate::ArmError;
use crate::emit::{Section, Tv};
use crate::json::Node;
use crate::template::join;

use super::Mapper;
use super::access::is_set;

impl Mapper<'_> {
    pub(super) fn probes(&mut self, props: &Node) -> Result<Vec<Section>, ArmError> {
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
}
