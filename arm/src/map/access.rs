//! Reading the resource: member checks, item collections, references between items, and typed
//! property accessors that name the property's path in every error.

use crate::json::{Node, Value};
use crate::template::join;
use crate::{ArmError, Warning};

use super::{Item, Mapper};

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

impl Mapper<'_> {
    pub(super) fn err(&self, node: &Node, path: &str, message: &str) -> ArmError {
        ArmError::at(self.file, node.pos, path, message)
    }

    pub(super) fn ignore(&mut self, path: &str, reason: &str) {
        self.warnings.push(Warning {
            path: path.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Checks an object's members: `known` are handled by the caller, `ignored` are reported
    /// with their reason when set, read-only ones are skipped, anything else is an error.
    pub(super) fn keys(
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

    pub(super) fn resource_keys(&mut self, resource: &Node, path: &str) -> Result<(), ArmError> {
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
    pub(super) fn items<'n>(&self, props: &'n Node, key: &str) -> Result<Vec<Item<'n>>, ArmError> {
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
    pub(super) fn reference(
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

    pub(super) fn opt_ref(
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
    pub(super) fn typed<T>(
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

    pub(super) fn string(
        &self,
        props: &Node,
        key: &str,
        path: &str,
    ) -> Result<Option<String>, ArmError> {
        self.typed(props, key, path, "a string", |v| match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
    }

    pub(super) fn int(&self, props: &Node, key: &str, path: &str) -> Result<Option<i64>, ArmError> {
        self.typed(props, key, path, "an integer", |v| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        })
    }

    pub(super) fn bool(
        &self,
        props: &Node,
        key: &str,
        path: &str,
    ) -> Result<Option<bool>, ArmError> {
        self.typed(props, key, path, "true or false", |v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })
    }

    pub(super) fn strings(
        &self,
        props: &Node,
        key: &str,
        path: &str,
    ) -> Result<Vec<String>, ArmError> {
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
    pub(super) fn choice(
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

    pub(super) fn names(&self, props: &Node, key: &str) -> Result<Vec<String>, ArmError> {
        Ok(self
            .items(props, key)?
            .into_iter()
            .map(|i| i.name)
            .collect())
    }
}

/// An item's `properties`, or an empty object at the item's position.
pub(super) fn props_of(item: &Node) -> std::borrow::Cow<'_, Node> {
    match item.get("properties") {
        Some(p) => std::borrow::Cow::Borrowed(p),
        None => std::borrow::Cow::Owned(Node::new(Value::Object(Vec::new()), item.pos)),
    }
}

/// Whether a value configures anything (null, `[]`, `{}`, `""` and `false` do not).
pub(super) fn is_set(n: &Node) -> bool {
    match &n.value {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        _ => true,
    }
}
