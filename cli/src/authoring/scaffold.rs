//! `wasmgate plugin new`: a project from the templates in `cli/templates/`, compiled into the
//! command so that it works from an installed binary.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::project::{Kind, Language, PROJECT_FILE, Project, check_name};

/// The contract every non-Rust project carries a copy of (the Rust SDK embeds it).
const WIT: &str = include_str!("../../../wit/plugin.wit");

const RUST_MANIFEST: &str = include_str!("../../templates/rust/Cargo.toml");
const RUST_ROUTER: &str = include_str!("../../templates/rust/router.rs");
const RUST_PROBE: &str = include_str!("../../templates/rust/probe.rs");
const PYTHON_ROUTER: &str = include_str!("../../templates/python/router.py");
const PYTHON_PROBE: &str = include_str!("../../templates/python/probe.py");
const JS_ROUTER: &str = include_str!("../../templates/js/router.js");
const JS_PROBE: &str = include_str!("../../templates/js/probe.js");
const JS_PACKAGE: &str = include_str!("../../templates/js/package.json");
const C_ROUTER: &str = include_str!("../../templates/c/router.c");
const C_PROBE: &str = include_str!("../../templates/c/probe.c");
const ROUTER_GATEWAY: &str = include_str!("../../templates/common/router-gateway.toml");
const PROBE_GATEWAY: &str = include_str!("../../templates/common/probe-gateway.toml");

/// Where the SDK is when this command runs from a source tree (`cargo run`, `target/debug`).
const SOURCE_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");
/// Where it is otherwise.
const GIT_SDK: &str = "https://github.com/wasmgate/wasmgate";

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name (lower-case letters, digits and dashes): the folder, the package and
    /// the plugin's name in the gateway configuration.
    pub name: String,
    #[arg(long, value_enum)]
    pub lang: Language,
    #[arg(long, value_enum, default_value = "router")]
    pub kind: Kind,
    /// The folder to create (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rust: where the SDK comes from, a folder or a git URL (default: this source tree's
    /// sdk/ when there is one, else the project's repository).
    #[arg(long)]
    pub sdk: Option<String>,
}

/// Writes the project; returns its folder.
pub fn create(args: &NewArgs) -> anyhow::Result<PathBuf> {
    check_name(&args.name).map_err(|reason| anyhow::anyhow!("NAME: {reason}"))?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{}: exists and is not empty", dir.display());
    }
    let project = Project {
        dir: dir.clone(),
        name: args.name.clone(),
        language: args.lang,
        kind: args.kind,
    };
    for (path, text) in files(&project, args.sdk.as_deref())? {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(dir)
}

/// The project's files, relative to its folder.
pub fn files(project: &Project, sdk: Option<&str>) -> anyhow::Result<Vec<(&'static str, String)>> {
    let name = project.name.as_str();
    let wasm = format!("{name}.wasm");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{type}}", &type_name(name))
            .replace("{{world}}", project.kind.world())
            .replace("{{c_world}}", &project.kind.world().replace('-', "_"))
            .replace("{{wasm}}", &wasm)
    };
    let probe = project.kind == Kind::Probe;
    let pick = |r: &str, p: &str| fill(if probe { p } else { r });
    let mut files = vec![
        (PROJECT_FILE, project.file_text()),
        ("gateway.toml", pick(ROUTER_GATEWAY, PROBE_GATEWAY)),
    ];
    let ignore = match project.language {
        Language::Rust => {
            files.push((
                "Cargo.toml",
                fill(RUST_MANIFEST).replace("{{sdk}}", &sdk_dependency(sdk)?),
            ));
            files.push(("src/lib.rs", pick(RUST_ROUTER, RUST_PROBE)));
            "/target/\n/Cargo.lock\n"
        }
        Language::Python => {
            files.push(("app.py", pick(PYTHON_ROUTER, PYTHON_PROBE)));
            "/bindings/\n/.venv/\n__pycache__/\n"
        }
        Language::Js => {
            files.push(("app.js", pick(JS_ROUTER, JS_PROBE)));
            files.push(("package.json", fill(JS_PACKAGE)));
            "/node_modules/\n/types/\n"
        }
        Language::C => {
            files.push(("app.c", pick(C_ROUTER, C_PROBE)));
            "/gen/\n"
        }
    };
    if project.language != Language::Rust {
        files.push(("wit/plugin.wit", WIT.to_owned()));
    }
    files.push((".gitignore", format!("/{wasm}\n{ignore}")));
    Ok(files)
}

/// `beta-router` → `BetaRouter`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The `wasmgate-sdk = ...` value of a Rust project's manifest.
fn sdk_dependency(sdk: Option<&str>) -> anyhow::Result<String> {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    Ok(match sdk {
        Some(url) if url.contains("://") => format!("{{ git = {} }}", quote(url)),
        Some(dir) => {
            let dir = std::path::absolute(dir).with_context(|| format!("--sdk {dir}"))?;
            if !dir.join("Cargo.toml").exists() {
                bail!("--sdk {}: no Cargo.toml there", dir.display());
            }
            format!("{{ path = {} }}", quote(&dir.to_string_lossy()))
        }
        None => match Path::new(SOURCE_SDK).canonicalize() {
            Ok(dir) if dir.join("Cargo.toml").exists() => {
                format!("{{ path = {} }}", quote(&dir.to_string_lossy()))
            }
            _ => format!(
                "{{ git = {}, tag = \"v{}\" }}",
                quote(GIT_SDK),
                env!("CARGO_PKG_VERSION")
            ),
        },
    })
}

/// What to do next, printed after the project is written.
pub fn next_steps(args: &NewArgs, dir: &Path) -> String {
    let name = &args.name;
    let mut s = format!(
        "created {} ({} {})\n\nnext:\n  cd {}\n  wasmgate plugin build\n",
        dir.display(),
        args.lang,
        args.kind.as_str(),
        dir.display()
    );
    match args.kind {
        Kind::Router => {
            s += &format!("  wasmgate plugin test {name}.wasm --samples gateway.toml\n");
            s += &format!(
                "  wasmgate plugin test {name}.wasm --config beta --request 'GET http://shop.example/cart' -H 'x-beta: 1'\n"
            );
        }
        Kind::Probe => {
            s += &format!(
                "  wasmgate plugin test {name}.wasm --response 200 --body 'down for maintenance'\n"
            );
        }
    }
    s += "  wasmgate run -c gateway.toml\n";
    if args.lang == Language::Rust && args.kind == Kind::Router {
        s += "  cargo test                      # the router's unit tests, natively\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_placeholder() {
        for language in [Language::Rust, Language::Python, Language::Js, Language::C] {
            for kind in [Kind::Router, Kind::Probe] {
                let project = Project {
                    dir: PathBuf::from("p"),
                    name: "beta-router".into(),
                    language,
                    kind,
                };
                for (path, text) in files(&project, Some("https://example.com/sdk")).unwrap() {
                    assert!(!text.contains("{{"), "{language} {kind:?} {path}: {text}");
                }
            }
        }
        assert_eq!(type_name("beta-router-2"), "BetaRouter2");
    }
}
