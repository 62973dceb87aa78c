//! `redirectConfigurations`: `[[redirects]]`.

use crate::ArmError;
use crate::emit::{Section, Tv};
use crate::json::Node;
use crate::template::join;

use super::Mapper;

impl Mapper<'_> {
    pub(super) fn redirects(
        &mut self,
        props: &Node,
        listeners: &[String],
    ) -> Result<Vec<Section>, ArmError> {
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
}
