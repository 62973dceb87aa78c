//! A plugin project: its name, language and kind, kept in `wasmgate-plugin.toml` beside the
//! sources (a Rust crate without that file is recognised by its `Cargo.toml`).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The file `wasmgate plugin new` writes and `build` reads.
pub const PROJECT_FILE: &str = "wasmgate-plugin.toml";

/// A language a plugin can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust with the wasmgate SDK (cargo, target wasm32-wasip2).
    Rust,
    /// Python (componentize-py).
    Python,
    /// JavaScript (componentize-js).
    Js,
    /// C (clang, wasi-libc and wit-bindgen).
    C,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Js => "js",
            Language::C => "c",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Language::Rust, Language::Python, Language::Js, Language::C]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a plugin is for (the configuration's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Decides where requests go.
    Router,
    /// Judges probe responses.
    Probe,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Router => "router",
            Kind::Probe => "probe",
        }
    }

    /// The WIT world a component of this kind implements (Rust routers use the packed form
    /// through the SDK instead).
    pub fn world(self) -> &'static str {
        match self {
            Kind::Router => "router-plugin",
            Kind::Probe => "probe-plugin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Kind::Router, Kind::Probe]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A plugin project on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub dir: PathBuf,
    pub name: String,
    pub language: Language,
    pub kind: Kind,
}

impl Project {
    /// Where `build` writes the component.
    pub fn output(&self) -> PathBuf {
        self.dir.join(format!("{}.wasm", self.name))
    }

    /// The project file's text.
    pub fn file_text(&self) -> String {
        format!(
            "# What `wasmgate plugin build` builds.\nname = \"{}\"\nlanguage = \"{}\"\nkind = \"{}\"\n",
            self.name,
            self.language,
            self.kind.as_str()
        )
    }

    /// Reads the project in `dir`: its project file, or else a Rust crate's `Cargo.toml`.
    pub fn open(dir: &Path) -> anyhow::Result<Project> {
        let file = dir.join(PROJECT_FILE);
        if file.exists() {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            return Self::parse(dir, &text).with_context(|| format!("{}", file.display()));
        }
        let cargo = dir.join("Cargo.toml");
        if cargo.exists() {
            let text = std::fs::read_to_string(&cargo)
                .with_context(|| format!("cannot read {}", cargo.display()))?;
            let manifest: toml::Table =
                toml::from_str(&text).with_context(|| format!("{}", cargo.display()))?;
            let name = manifest
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .with_context(|| format!("{}: no package.name", cargo.display()))?;
            return Ok(Project {
                dir: dir.to_owned(),
                name: name.to_owned(),
                language: Language::Rust,
                kind: Kind::Router,
            });
        }
        bail!(
            "{}: not a plugin project (no {PROJECT_FILE} or Cargo.toml); `wasmgate plugin new` makes one",
            dir.display()
        )
    }

    fn parse(dir: &Path, text: &str) -> anyhow::Result<Project> {
        let table: toml::Table = toml::from_str(text)?;
        let field = |name: &str| -> anyhow::Result<&str> {
            table
                .get(name)
                .and_then(|v| v.as_str())
                .with_context(|| format!("{name}: a string is required"))
        };
        let name = field("name")?;
        check_name(name).map_err(|reason| anyhow::anyhow!("name: {reason}"))?;
        let language = field("language")?;
        let language = Language::parse(language).with_context(|| {
            format!("language: {language:?} is not \"rust\", \"python\", \"js\" or \"c\"")
        })?;
        let kind = match table.get("kind") {
            None => Kind::Router,
            Some(_) => {
                let kind = field("kind")?;
                Kind::parse(kind)
                    .with_context(|| format!("kind: {kind:?} is not \"router\" or \"probe\""))?
            }
        };
        Ok(Project {
            dir: dir.to_owned(),
            name: name.to_owned(),
            language,
            kind,
        })
    }
}

/// A plugin name fit for every language's package: lower-case ASCII letters, digits and dashes,
/// starting with a letter.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use lower-case letters, digits and dashes, starting with a letter (at most 64)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        let project = Project {
            dir: PathBuf::from("/p"),
            name: "beta-router".into(),
            language: Language::C,
            kind: Kind::Probe,
        };
        assert_eq!(
            Project::parse(Path::new("/p"), &project.file_text()).unwrap(),
            project
        );
    }

    #[test]
    fn names_the_bad_field() {
        let e = Project::parse(Path::new("/p"), "name = \"x\"\nlanguage = \"go\"\n").unwrap_err();
        assert!(e.to_string().starts_with("language: \"go\""), "{e}");
        let e = Project::parse(Path::new("/p"), "name = \"Beta\"\nlanguage = \"c\"\n").unwrap_err();
        assert!(e.to_string().starts_with("name: \"Beta\""), "{e}");
    }
}
