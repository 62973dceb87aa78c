//! `backendAddressPools`: `[[backend_pools]]`.

use std::net::IpAddr;

use crate::ArmError;
use crate::emit::{Section, Tv};
use crate::json::Node;
use crate::template::join;

use super::Mapper;
use super::access::is_set;

impl Mapper<'_> {
    pub(super) fn pools(&mut self, props: &Node) -> Result<Vec<Section>, ArmError> {
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
}
