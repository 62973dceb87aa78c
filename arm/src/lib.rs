//! Application Gateway ARM templates as wasmgate configurations.
//!
//! A template (`azuredeploy.json`, optionally with a parameters file and `--set` values) is
//! evaluated ([`template`]), its `Microsoft.Network/applicationGateways` resource is mapped to
//! wasmgate's configuration sections ([`map`]), written as commented TOML ([`emit`]) and then
//! loaded through [`Config::from_toml_in`] like any configuration file, so a template and the TOML
//! it becomes are validated by the same code. Certificates carried in the template are written
//! as PEM files ([`certs`]).

pub mod certs;
pub mod emit;
pub mod functions;
pub mod json;
pub mod map;
pub mod template;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use json::{Node, Pos, Value};
use wasmgate::config::{Config, ConfigError};

/// A file's name (as shown in errors) and text.
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Self, ImportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ImportError::Read {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Source {
            name: path.display().to_string(),
            text,
        })
    }
}

/// An error in a template or parameters file: the file, the line and column, the JSON path
/// (`resources[0].properties.httpListeners[1].properties.protocol`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmError {
    pub file: String,
    pub pos: Option<Pos>,
    pub path: String,
    pub message: String,
}

impl ArmError {
    pub fn at(file: &str, pos: Pos, path: &str, message: &str) -> Self {
        ArmError {
            file: file.to_string(),
            pos: (pos != Pos::default()).then_some(pos),
            path: path.to_string(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for ArmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(pos) = self.pos {
            write!(f, ":{pos}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ArmError {}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {file}: {reason}")]
    Read { file: String, reason: String },
    #[error(transparent)]
    Template(#[from] ArmError),
    /// The generated configuration was refused; `origin` is the template item it came from.
    #[error("{error}{}", origin.as_ref().map(|o| format!(" (from {o})")).unwrap_or_default())]
    Config {
        error: ConfigError,
        origin: Option<String>,
    },
}

/// A template part that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ignored {}: {}", self.path, self.reason)
    }
}

/// Which local address a template's frontend ports become: `address` for all of them, unless
/// `ports` maps a template port to another address and/or port.
#[derive(Debug, Clone)]
pub struct Binding {
    pub address: IpAddr,
    pub ports: Vec<(u16, PortBinding)>,
}

/// Where one template port binds; `None` parts keep the default address or the template's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortBinding {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

impl Default for Binding {
    fn default() -> Self {
        Binding {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ports: Vec::new(),
        }
    }
}

impl Binding {
    /// The local address and port for template port `port`.
    pub fn resolve(&self, port: u16) -> (IpAddr, u16) {
        match self.ports.iter().find(|(p, _)| *p == port) {
            Some((_, b)) => (b.ip.unwrap_or(self.address), b.port.unwrap_or(port)),
            None => (self.address, port),
        }
    }
}

/// Parses `--bind-port` values: `PORT=IP`, `PORT=IP:PORT`, `PORT=[IPv6]:PORT` or `PORT=PORT`.
pub fn parse_bind_port(text: &str) -> Result<(u16, PortBinding), String> {
    let (from, to) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected TEMPLATE_PORT=ADDRESS"))?;
    let from: u16 = from
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: {from:?} is not a port"))?;
    let to = to.trim();
    let binding = if let Ok(port) = to.parse::<u16>() {
        PortBinding {
            ip: None,
            port: Some(port),
        }
    } else if let Ok(ip) = to.parse::<IpAddr>() {
        PortBinding {
            ip: Some(ip),
            port: None,
        }
    } else if let Ok(sa) = to.parse::<std::net::SocketAddr>() {
        PortBinding {
            ip: Some(sa.ip()),
            port: Some(sa.port()),
        }
    } else {
        return Err(format!(
            "{text:?}: {to:?} is not an IP address, IP:PORT or PORT"
        ));
    };
    Ok((from, binding))
}

/// `ip:port`, with brackets for IPv6.
pub fn show_addr(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// What to import and where certificate files go.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub template: PathBuf,
    pub parameters: Option<PathBuf>,
    /// `name=value` parameter values (they win over the parameters file).
    pub sets: Vec<(String, String)>,
    pub binding: Binding,
    /// The folder relative paths in the configuration start in (the output file's folder).
    pub base: PathBuf,
    /// Where certificate files are written, relative to `base` unless absolute.
    pub cert_dir: PathBuf,
    /// A folder holding the pages `customErrorConfigurations` name, each as the file named by
    /// its URL's last path segment; without one those pages are reported as not imported.
    pub error_pages: Option<PathBuf>,
    /// Import what Azure Resource Manager refuses where its meaning is clear: calls such as
    /// `resourceId(<full id>, '/child/name')`, and parameters without a value that the gateway
    /// does not read.
    pub lenient: bool,
}

/// An imported template: the TOML text, the parts left out, and the validated configuration.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<Warning>,
    pub config: Config,
    /// The folder certificate files were written to, if any were.
    pub cert_dir: Option<PathBuf>,
}

/// Imports a template: evaluates it, maps its application gateway, writes certificate files,
/// renders TOML and validates it.
pub fn import(opts: &ImportOptions) -> Result<Imported, ImportError> {
    let template_src = Source::read(&opts.template)?;
    let template = template::parse_file(&template_src)?;
    let params_src = opts.parameters.as_deref().map(Source::read).transpose()?;
    let params = params_src
        .as_ref()
        .map(|s| template::parse_file(s).map(|n| (n, s.name.clone())))
        .transpose()?;
    let ev = template::Evaluator::new(
        &template,
        &template_src.name,
        params.as_ref().map(|(n, name)| (n, name.as_str())),
        &opts.sets,
    )?
    .lenient(opts.lenient);
    // Azure Resource Manager wants a value for every parameter before it evaluates anything;
    // so does the import, naming all that lack one (rather than failing at the first use).
    if !opts.lenient {
        ev.check_parameters()?;
    }
    let file = template_src.name.as_str();
    let mut warnings = Vec::new();
    let mut nic_pool_members = Vec::new();
    let (index, resource) =
        find_gateway(&template, &ev, file, &mut warnings, &mut nic_pool_members)?;
    let path = format!("resources[{index}]");
    if let Some(cond) = resource.get("condition") {
        let v = ev.eval(cond, &format!("{path}.condition"))?;
        if v.value != Value::Bool(true) {
            return Err(ArmError::at(
                file,
                cond.pos,
                &format!("{path}.condition"),
                "the gateway's condition is not true, so the template deploys no gateway",
            )
            .into());
        }
    }
    // `dependsOn` orders the deployment in Azure and is never read, so it is not evaluated.
    let without_deps = match &resource.value {
        Value::Object(members) => Node::new(
            Value::Object(
                members
                    .iter()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("dependsOn"))
                    .cloned()
                    .collect(),
            ),
            resource.pos,
        ),
        _ => resource.clone(),
    };
    // The gateway's name is in every reference, so it must evaluate.
    if let Some(name) = resource.get("name") {
        ev.eval(name, &format!("{path}.name"))?;
    }
    let mut failed = Vec::new();
    let mut evaluated = ev.eval_deferred(&without_deps, &path, &mut failed)?;
    if let Some(refused) = ev.refusal() {
        return Err(refused.into());
    }
    add_nic_members(&mut evaluated, &nic_pool_members, file, &path)?;
    let shown_dir = opts.cert_dir.clone();
    let real_dir = if opts.cert_dir.is_absolute() {
        opts.cert_dir.clone()
    } else {
        opts.base.join(&opts.cert_dir)
    };
    let mut certs = certs::CertWriter::new(real_dir, shown_dir);
    let mapped = settle_deferred(
        map::map_gateway(
            file,
            &evaluated,
            &path,
            &opts.binding,
            &mut certs,
            opts.error_pages.as_deref(),
        ),
        failed,
    )?;
    warnings.extend(mapped.warnings);

    let mut header = vec![
        format!(
            "wasmgate configuration imported from the Application Gateway template {}",
            opts.template.display()
        ),
        format!(
            "by `wasmgate import`{}. Each item names the template path it came from.",
            match &opts.parameters {
                Some(p) => format!(" with parameters {}", p.display()),
                None => String::new(),
            }
        ),
    ];
    if !opts.sets.is_empty() {
        let names: Vec<&str> = opts.sets.iter().map(|(n, _)| n.as_str()).collect();
        // Values stay out: a --set may carry a certificate password.
        header.push(format!(
            "Parameters set on the command line: {}.",
            names.join(", ")
        ));
    }
    if !warnings.is_empty() {
        header.push(String::new());
        header.push("Not imported:".into());
        for w in &warnings {
            header.push(format!("- {}: {}", w.path, w.reason));
        }
    }
    let doc = emit::Doc {
        header,
        sections: mapped.sections,
    };
    let toml = doc.render();
    let config = Config::from_toml_in(&toml, &opts.base).map_err(|error| {
        let origin = origin_of(&doc.sections, &error.path);
        ImportError::Config { error, origin }
    })?;
    Ok(Imported {
        toml,
        warnings,
        config,
        cert_dir: certs.wrote_any().then(|| certs.dir().to_path_buf()),
    })
}

/// Decides about the expressions that could not be evaluated: harmless where they lie in parts
/// the import lists as ignored; otherwise the import fails with the evaluation error (joined
/// to the mapping error when that is where the mapping failed).
fn settle_deferred(
    mapped: Result<map::Mapped, ArmError>,
    failed: Vec<ArmError>,
) -> Result<map::Mapped, ArmError> {
    let under = |inner: &str, outer: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    };
    match mapped {
        Ok(m) => {
            match failed
                .into_iter()
                .find(|f| !m.warnings.iter().any(|w| under(&f.path, &w.path)))
            {
                Some(f) => Err(f),
                None => Ok(m),
            }
        }
        Err(e) => match failed
            .into_iter()
            .find(|f| under(&e.path, &f.path) || under(&f.path, &e.path))
        {
            Some(f) => Err(ArmError {
                message: format!(
                    "{}; and the value cannot be evaluated: {}",
                    e.message, f.message
                ),
                ..e
            }),
            None => Err(e),
        },
    }
}

/// Finds the one application gateway among the template's resources; every other resource is
/// reported as ignored.
fn find_gateway<'t>(
    template: &'t Node,
    ev: &template::Evaluator<'_>,
    file: &str,
    warnings: &mut Vec<Warning>,
    members: &mut Vec<NicMember>,
) -> Result<(usize, &'t Node), ArmError> {
    const TOP: &[&str] = &[
        "$schema",
        "contentVersion",
        "parameters",
        "variables",
        "resources",
        "outputs",
        "metadata",
        "apiProfile",
        "functions",
        "definitions",
        "languageVersion",
    ];
    for (key, value) in template.members() {
        if !TOP.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return Err(ArmError::at(file, value.pos, key, "not a template section"));
        }
    }
    if let Some(f) = template
        .get("functions")
        .filter(|f| f.as_array().is_some_and(|a| !a.is_empty()))
    {
        return Err(ArmError::at(
            file,
            f.pos,
            "functions",
            "user-defined functions are not supported",
        ));
    }
    if template
        .get("outputs")
        .is_some_and(|o| !o.members().is_empty())
    {
        warnings.push(Warning {
            path: "outputs".into(),
            reason: "deployment outputs describe the Azure deployment".into(),
        });
    }
    let resources = template.get("resources").ok_or_else(|| {
        ArmError::at(
            file,
            template.pos,
            "resources",
            "the template has no resources",
        )
    })?;
    let list = resources.as_array().ok_or_else(|| {
        ArmError::at(
            file,
            resources.pos,
            "resources",
            "expected an array of resources (symbolic-name templates, languageVersion 2.0, are not supported)",
        )
    })?;
    let mut found: Option<(usize, &Node)> = None;
    for (i, r) in list.iter().enumerate() {
        let path = format!("resources[{i}]");
        let ty = match r.get("type") {
            Some(t) => ev.eval(t, &format!("{path}.type"))?,
            None => {
                return Err(ArmError::at(
                    file,
                    r.pos,
                    &path,
                    "a resource needs \"type\"",
                ));
            }
        };
        let ty = ty.as_str().unwrap_or_default().to_string();
        if ty.eq_ignore_ascii_case("Microsoft.Network/applicationGateways") {
            if let Some((first, _)) = found {
                return Err(ArmError::at(
                    file,
                    r.pos,
                    &path,
                    &format!(
                        "a second application gateway (the first is resources[{first}]); import one gateway per configuration"
                    ),
                ));
            }
            found = Some((i, r));
            continue;
        }
        if let Some(p) = find_key(r, "applicationGatewayBackendAddressPools", &path) {
            // A network interface with a static private address joins a pool as that address
            // (templates exported from Azure carry the address); anything else has no address
            // until Azure assigns one.
            let nic = ty.eq_ignore_ascii_case("Microsoft.Network/networkInterfaces");
            if !nic {
                return Err(ArmError::at(
                    file,
                    p.1.pos,
                    &p.0,
                    "adds servers to the gateway's backend pools through a network interface or scale set whose addresses Azure assigns, which cannot be known here; list the servers' addresses in the pool's backendAddresses",
                ));
            }
            let before = members.len();
            let mut empty_loop = false;
            match r.get("copy") {
                // Interfaces made by a resource copy loop: one membership per iteration.
                Some(copy) => {
                    let cpath = format!("{path}.copy");
                    let count = copy
                        .get("count")
                        .map(|c| ev.eval(c, &format!("{cpath}.count")))
                        .transpose()?
                        .and_then(|c| match c.value {
                            Value::Int(n) if (0..=800).contains(&n) => Some(n),
                            _ => None,
                        })
                        .ok_or_else(|| {
                            ArmError::at(
                                file,
                                copy.pos,
                                &format!("{cpath}.count"),
                                "a resource copy loop needs a count from 0 to 800",
                            )
                        })?;
                    let name = copy
                        .get("name")
                        .map(|n| ev.eval(n, &format!("{cpath}.name")))
                        .transpose()?
                        .and_then(|n| n.as_str().map(str::to_string))
                        .unwrap_or_default();
                    for i in 0..count {
                        ev.in_loop(&name, i, || {
                            nic_members(r, ev, file, &format!("{path}[copy {i}]"), members)
                        })?;
                    }
                    empty_loop = count == 0;
                }
                None => nic_members(r, ev, file, &path, members)?,
            }
            if members.len() == before && !empty_loop {
                return Err(ArmError::at(
                    file,
                    p.1.pos,
                    &p.0,
                    "a backend pool membership outside properties.ipConfigurations[].properties, which is not supported; list the servers' addresses in the pool's backendAddresses",
                ));
            }
        }
        // Other resources may use functions this importer does not know; their raw name will do.
        let name = r
            .get("name")
            .map(|n| match ev.eval(n, "") {
                Ok(v) => v,
                Err(_) => n.clone(),
            })
            .and_then(|n| n.as_str().map(|n| format!(" '{n}'")))
            .unwrap_or_default();
        warnings.push(Warning {
            path: format!("{path} ({ty}{name})"),
            reason: "only the application gateway is imported; other resources belong to Azure"
                .into(),
        });
    }
    found.ok_or_else(|| {
        ArmError::at(
            file,
            resources.pos,
            "resources",
            "no Microsoft.Network/applicationGateways resource among the template's resources (nested and linked deployments are not searched)",
        )
    })
}

/// A server that joins a backend pool through its network interface.
#[derive(Debug)]
struct NicMember {
    /// The pool's id as the interface gives it.
    pool_id: String,
    address: String,
    /// Where the membership is written, for errors.
    path: String,
    pos: Pos,
}

/// The pool memberships of network interface `r`: each IP configuration listing
/// `applicationGatewayBackendAddressPools` must have a `privateIPAddress`.
fn nic_members(
    r: &Node,
    ev: &template::Evaluator<'_>,
    file: &str,
    path: &str,
    out: &mut Vec<NicMember>,
) -> Result<(), ArmError> {
    let configs_path = format!("{path}.properties.ipConfigurations");
    let Some(configs) = r
        .get("properties")
        .and_then(|p| p.get("ipConfigurations"))
        .map(|c| ev.eval(c, &configs_path))
        .transpose()?
    else {
        return Ok(());
    };
    for (i, config) in configs.as_array().unwrap_or_default().iter().enumerate() {
        let cpath = format!("{configs_path}[{i}].properties");
        let Some(props) = config.get("properties") else {
            continue;
        };
        let Some(pools) = props
            .get("applicationGatewayBackendAddressPools")
            .and_then(Node::as_array)
            .filter(|p| !p.is_empty())
        else {
            continue;
        };
        let address = props
            .get("privateIPAddress")
            .and_then(Node::as_str)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                ArmError::at(
                    file,
                    props.pos,
                    &format!("{cpath}.privateIPAddress"),
                    "this network interface joins a backend pool, but its address is assigned by Azure (no privateIPAddress); give it a static privateIPAddress or list the server's address in the pool's backendAddresses",
                )
            })?;
        for (j, pool) in pools.iter().enumerate() {
            let ppath = format!("{cpath}.applicationGatewayBackendAddressPools[{j}]");
            let pool_id = pool.get("id").and_then(Node::as_str).ok_or_else(|| {
                ArmError::at(
                    file,
                    pool.pos,
                    &ppath,
                    "expected a reference { \"id\": \"...\" }",
                )
            })?;
            out.push(NicMember {
                pool_id: pool_id.to_string(),
                address: address.to_string(),
                path: format!("{ppath}.id"),
                pos: pool.pos,
            });
        }
    }
    Ok(())
}

/// Adds the network interfaces' addresses to the pools they join in the evaluated gateway.
fn add_nic_members(
    gateway: &mut Node,
    members: &[NicMember],
    file: &str,
    gw_path: &str,
) -> Result<(), ArmError> {
    let gw_name = gateway
        .get("name")
        .and_then(Node::as_str)
        .unwrap_or_default()
        .to_string();
    for m in members {
        let err = |message: &str| ArmError::at(file, m.pos, &m.path, message);
        // .../applicationGateways/<gw>/backendAddressPools/<pool>
        let parts: Vec<&str> = m.pool_id.trim_end_matches('/').split('/').collect();
        let n = parts.len();
        if n < 4
            || !parts[n - 4].eq_ignore_ascii_case("applicationGateways")
            || !parts[n - 2].eq_ignore_ascii_case("backendAddressPools")
        {
            return Err(err(&format!(
                "'{}' does not name a backend pool of an application gateway",
                m.pool_id
            )));
        }
        if !parts[n - 3].eq_ignore_ascii_case(&gw_name) {
            return Err(err(&format!(
                "refers to application gateway '{}', not this template's '{gw_name}'",
                parts[n - 3]
            )));
        }
        let pool_name = parts[n - 1];
        let pool = object_member(gateway, "properties")
            .and_then(|p| object_member(p, "backendAddressPools"))
            .and_then(|pools| match &mut pools.value {
                Value::Array(items) => items.iter_mut().find(|i| {
                    i.get("name")
                        .and_then(Node::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(pool_name))
                }),
                _ => None,
            })
            .ok_or_else(|| {
                err(&format!(
                    "there is no backendAddressPools item named '{pool_name}' in {gw_path}"
                ))
            })?;
        let pos = pool.pos;
        let props = object_member_or_insert(pool, "properties", pos);
        let list = object_member_or_insert(props, "backendAddresses", pos);
        if !matches!(list.value, Value::Array(_)) {
            list.value = Value::Array(Vec::new());
        }
        if let Value::Array(items) = &mut list.value {
            items.push(Node::new(
                Value::Object(vec![(
                    "ipAddress".into(),
                    Node::new(Value::String(m.address.clone()), m.pos),
                )]),
                m.pos,
            ));
        }
    }
    Ok(())
}

fn object_member<'n>(node: &'n mut Node, key: &str) -> Option<&'n mut Node> {
    match &mut node.value {
        Value::Object(members) => members
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Member `key` of `node`, added (empty) when missing or null; `node` must be an object.
fn object_member_or_insert<'n>(node: &'n mut Node, key: &str, pos: Pos) -> &'n mut Node {
    if !matches!(node.value, Value::Object(_)) {
        node.value = Value::Object(Vec::new());
    }
    let Value::Object(members) = &mut node.value else {
        unreachable!("made an object above")
    };
    let at = match members
        .iter()
        .position(|(k, _)| k.eq_ignore_ascii_case(key))
    {
        Some(i) => i,
        None => {
            members.push((key.to_string(), Node::new(Value::Null, pos)));
            members.len() - 1
        }
    };
    let slot = &mut members[at].1;
    if matches!(slot.value, Value::Null) {
        slot.value = Value::Object(Vec::new());
    }
    slot
}

/// The first member named `key` (any case) with a non-empty value anywhere under `node`.
fn find_key<'n>(node: &'n Node, key: &str, path: &str) -> Option<(String, &'n Node)> {
    match &node.value {
        Value::Object(members) => members.iter().find_map(|(k, v)| {
            let p = template::join(path, k);
            let set = !matches!(&v.value, Value::Null)
                && !matches!(&v.value, Value::Array(a) if a.is_empty());
            if k.eq_ignore_ascii_case(key) && set {
                Some((p, v))
            } else {
                find_key(v, key, &p)
            }
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_key(v, key, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// The template path behind a configuration error's path (`listeners[1].port`,
/// `url_path_maps[0].path_rules[2].paths`).
fn origin_of(sections: &[emit::Section], path: &str) -> Option<String> {
    let (table, rest) = path.split_once('[')?;
    let (index, rest) = rest.split_once(']')?;
    let index: usize = index.parse().ok()?;
    let section = sections.iter().filter(|s| s.table == table).nth(index)?;
    if let Some(child) = rest.strip_prefix(".path_rules[") {
        let (j, _) = child.split_once(']')?;
        let j: usize = j.parse().ok()?;
        return section.children.get(j).map(|(_, c)| c.origin.clone());
    }
    Some(section.origin.clone())
}

/// Whether a configuration path names an ARM template (by extension) rather than TOML.
pub fn is_template(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_port_forms() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            parse_bind_port("80=127.0.0.1:8080").unwrap(),
            (
                80,
                PortBinding {
                    ip: ip("127.0.0.1"),
                    port: Some(8080)
                }
            )
        );
        assert_eq!(
            parse_bind_port("443=8443").unwrap(),
            (
                443,
                PortBinding {
                    ip: None,
                    port: Some(8443)
                }
            )
        );
        assert_eq!(
            parse_bind_port("80=::1").unwrap(),
            (
                80,
                PortBinding {
                    ip: ip("::1"),
                    port: None
                }
            )
        );
        assert_eq!(
            parse_bind_port("80=[::1]:0").unwrap(),
            (
                80,
                PortBinding {
                    ip: ip("::1"),
                    port: Some(0)
                }
            )
        );
        for bad in ["80", "x=1", "80=host:1", "70000=1"] {
            assert!(parse_bind_port(bad).is_err(), "{bad}");
        }
        let b = Binding {
            address: "127.0.0.1".parse().unwrap(),
            ports: vec![parse_bind_port("443=8443").unwrap()],
        };
        assert_eq!(b.resolve(443), ("127.0.0.1".parse().unwrap(), 8443));
        assert_eq!(b.resolve(80), ("127.0.0.1".parse().unwrap(), 80));
    }

    fn find(text: &str) -> Result<(usize, Vec<Warning>), ArmError> {
        let t = json::parse(text).unwrap();
        let ev = template::Evaluator::new(&t, "t.json", None, &[])?;
        let mut warnings = Vec::new();
        find_gateway(&t, &ev, "t.json", &mut warnings, &mut Vec::new()).map(|(i, _)| (i, warnings))
    }

    #[test]
    fn the_gateway_among_the_resources() {
        let gw = r#"{ "type": "Microsoft.Network/applicationGateways", "name": "gw" }"#;
        let vnet = r#"{ "type": "[concat('Microsoft.Network/', 'virtualNetworks')]", "name": "[concat('v', 'net')]" }"#;
        let (i, w) = find(&format!(
            r#"{{ "resources": [{vnet}, {gw}], "outputs": {{ "x": {{}} }} }}"#
        ))
        .unwrap();
        assert_eq!(i, 1);
        let paths: Vec<&str> = w.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "outputs",
                "resources[0] (Microsoft.Network/virtualNetworks 'vnet')"
            ]
        );

        let e = find(&format!(r#"{{ "resources": [{vnet}] }}"#)).unwrap_err();
        assert!(
            e.to_string()
                .contains("no Microsoft.Network/applicationGateways resource"),
            "{e}"
        );
        let e = find(&format!(r#"{{ "resources": [{gw}, {gw}] }}"#)).unwrap_err();
        assert!(
            e.to_string()
                .contains("resources[1]: a second application gateway (the first is resources[0])"),
            "{e}"
        );
        let e = find(r#"{ "resources": { "gw": {} } }"#).unwrap_err();
        assert!(e.to_string().contains("languageVersion 2.0"), "{e}");
        let e = find(&format!(
            r#"{{ "functions": [ {{ "namespace": "x" }} ], "resources": [{gw}] }}"#
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("functions: user-defined functions are not supported"),
            "{e}"
        );
        let e = find(&format!(r#"{{ "resourcez": [], "resources": [{gw}] }}"#)).unwrap_err();
        assert!(
            e.to_string().contains("resourcez: not a template section"),
            "{e}"
        );
        let e = find(r#"{ "resources": [ { "name": "x" } ] }"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("resources[0]: a resource needs \"type\""),
            "{e}"
        );
    }

    #[test]
    fn error_display() {
        let e = ArmError::at(
            "t.json",
            Pos { line: 3, col: 9 },
            "resources[0].name",
            "bad",
        );
        assert_eq!(e.to_string(), "t.json:3:9: resources[0].name: bad");
        let e = ArmError::at("command line", Pos::default(), "", "bad");
        assert_eq!(e.to_string(), "command line: bad");
    }

    #[test]
    fn origins_of_config_paths() {
        let mut map = emit::Section::new("url_path_maps", "m0".into());
        map.children.push((
            "path_rules",
            emit::Section::new("path_rules", "m0.r0".into()),
        ));
        map.children.push((
            "path_rules",
            emit::Section::new("path_rules", "m0.r1".into()),
        ));
        let sections = vec![
            emit::Section::new("listeners", "l0".into()),
            map,
            emit::Section::new("listeners", "l1".into()),
        ];
        assert_eq!(
            origin_of(&sections, "listeners[1].port").as_deref(),
            Some("l1")
        );
        assert_eq!(
            origin_of(&sections, "url_path_maps[0].path_rules[1].paths").as_deref(),
            Some("m0.r1")
        );
        assert_eq!(
            origin_of(&sections, "url_path_maps[0].name").as_deref(),
            Some("m0")
        );
        assert_eq!(origin_of(&sections, "rules[0]"), None);
        assert_eq!(origin_of(&sections, "limits"), None);
    }
}
