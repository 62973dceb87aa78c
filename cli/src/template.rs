//! The command-line side of template import: the options `import`, `run` and `check` share, and
//! turning a template into a configuration file on disk.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use wasmgate_arm::{Binding, ImportError, ImportOptions, Imported, PortBinding};

/// Options for reading an ARM template.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TemplateArgs {
    /// A parameters file (deploymentParameters.json format) for a template.
    #[arg(long)]
    pub parameters: Option<PathBuf>,
    /// A template parameter value, NAME=VALUE (repeatable; wins over --parameters). Arrays and
    /// objects are written as JSON.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
    /// The local address every frontend port of a template binds (default 0.0.0.0).
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// Bind one template frontend port elsewhere: PORT=IP, PORT=IP:PORT or PORT=PORT
    /// (repeatable; port 0 picks a free port).
    #[arg(long = "bind-port", value_name = "PORT=ADDRESS", value_parser = wasmgate_arm::parse_bind_port)]
    pub bind_port: Vec<(u16, PortBinding)>,
    /// A folder holding the custom error pages a template's customErrorPageUrl values name
    /// (each read as the file named by the URL's last path segment); the importer fetches no
    /// URL, and without this folder those pages are left out with a warning.
    #[arg(long = "error-pages", value_name = "DIR")]
    pub error_pages: Option<PathBuf>,
    /// Import what Azure Resource Manager would refuse where its meaning is clear:
    /// `resourceId(<full id>, '/child/name')` (the names are appended to the id), and
    /// parameters without a value that the gateway does not read.
    #[arg(long)]
    pub lenient: bool,
}

fn parse_set(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=VALUE"))?;
    if name.trim().is_empty() {
        return Err(format!("{text:?}: the parameter name is empty"));
    }
    Ok((name.trim().to_string(), value.to_string()))
}

impl TemplateArgs {
    fn options(&self, template: &Path, base: PathBuf, cert_dir: PathBuf) -> ImportOptions {
        ImportOptions {
            template: template.to_path_buf(),
            parameters: self.parameters.clone(),
            sets: self.set.clone(),
            binding: Binding {
                address: self.bind.unwrap_or(Binding::default().address),
                ports: self.bind_port.clone(),
            },
            base,
            cert_dir,
            // Absolute, so the configuration finds the pages wherever it is written.
            error_pages: self
                .error_pages
                .as_ref()
                .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone())),
            lenient: self.lenient,
        }
    }
}

/// `wasmgate import`: writes the configuration to `output` (certificates into
/// `<output stem>.certs/` beside it) or prints it (certificates into `<template stem>.certs/` in
/// the working directory). Ignored template parts go to stderr as warnings.
pub fn import(
    template: &Path,
    args: &TemplateArgs,
    output: Option<&Path>,
) -> Result<Imported, ImportError> {
    let (base, stem) = match output {
        Some(out) => (
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            stem_of(out),
        ),
        None => (PathBuf::from("."), stem_of(template)),
    };
    let imported = wasmgate_arm::import(&args.options(
        template,
        base,
        PathBuf::from(format!("{stem}.certs")),
    ))?;
    warn(&imported);
    match output {
        Some(out) => std::fs::write(out, &imported.toml).map_err(|e| ImportError::Read {
            file: out.display().to_string(),
            reason: format!("cannot write: {e}"),
        })?,
        None => print!("{}", imported.toml),
    }
    Ok(imported)
}

fn warn(imported: &Imported) {
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(dir) = &imported.cert_dir {
        eprintln!("certificates written to {}", dir.display());
    }
}

fn stem_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "template".into())
}

/// A template imported into a private temporary folder for `run` and `check`: the generated
/// configuration file and its certificates. While it lives, a change of the template or its
/// parameters file imports them again into the same file (which the gateway's own file watch
/// and SIGHUP then apply); an import that fails is logged and the previous file stays. The
/// folder is removed when this is dropped.
#[derive(Debug)]
pub struct Materialized {
    pub config_path: PathBuf,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Materialized {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How often the template and parameters files are checked for changes (as the gateway checks
/// its configuration file).
const TEMPLATE_WATCH: Duration = Duration::from_secs(2);

/// What identifies a version of each watched file: modification time and length.
fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Writes `text` to `path` through a temporary file and a rename, so a reader sees the old
/// file or the new one, never half of one.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// When `path` is a template (`.json`), imports it into a fresh temporary folder and returns
/// the generated configuration file; a TOML path gives `None`.
pub fn materialize(path: &Path, args: &TemplateArgs) -> Result<Option<Materialized>, ImportError> {
    if !wasmgate_arm::is_template(path) {
        return Ok(None);
    }
    use std::os::unix::fs::DirBuilderExt;
    let dir =
        std::env::temp_dir().join(format!("wasmgate-{}-{}", stem_of(path), std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Private: the folder holds private keys.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| ImportError::Read {
            file: dir.display().to_string(),
            reason: format!("cannot create: {e}"),
        })?;
    let mut guard = Materialized {
        config_path: dir.join("config.toml"),
        dir: dir.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        watcher: None,
    };
    let options = args.options(path, dir.clone(), PathBuf::from("certs"));
    let mut watched = vec![path.to_path_buf()];
    watched.extend(args.parameters.clone());
    let mut seen = stamps(&watched);
    let imported = wasmgate_arm::import(&options)?;
    warn(&imported);
    replace_file(&guard.config_path, &imported.toml).map_err(|e| ImportError::Read {
        file: guard.config_path.display().to_string(),
        reason: format!("cannot write: {e}"),
    })?;
    let (stop, config_path) = (guard.stop.clone(), guard.config_path.clone());
    guard.watcher = Some(std::thread::spawn(move || {
        const STEP: Duration = Duration::from_millis(100);
        let mut waited = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(STEP);
            waited += STEP;
            if waited < TEMPLATE_WATCH {
                continue;
            }
            waited = Duration::ZERO;
            let now = stamps(&watched);
            if now == seen {
                continue;
            }
            seen = now;
            match wasmgate_arm::import(&options) {
                Ok(imported) => match replace_file(&config_path, &imported.toml) {
                    Ok(()) => tracing::info!(
                        template = %options.template.display(),
                        "the template changed: imported again"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot write the imported configuration")
                    }
                },
                Err(e) => tracing::error!(
                    error = %e,
                    "the changed template was not imported; the previous configuration stays"
                ),
            }
        }
    }));
    Ok(Some(guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values() {
        assert_eq!(parse_set("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_set("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_set("a").is_err());
        assert!(parse_set("=x").is_err());
    }
}
