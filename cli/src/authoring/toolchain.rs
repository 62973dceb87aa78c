//! `wasmgate plugin build`: each language's toolchain, and the command that installs it when it
//! is missing.
//!
//! | language | tools | output |
//! |---|---|---|
//! | Rust | cargo with the `wasm32-wasip2` target | a component directly |
//! | Python | componentize-py 0.25.1 (PyPI), in `.venv/` or on `PATH` | a component |
//! | JavaScript | componentize-js 0.23.0 (npm), in `node_modules/` | a component |
//! | C | `wit-bindgen c` 0.63, clang with wasi-libc (`wasm32-wasi`), and `wasm-component-ld` (shipped with Rust's `wasm32-wasip2` target) as the linker | a core module linked and turned into a component with the WASI reactor adapter |

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::project::{Language, Project};

pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
pub const WIT_BINDGEN_VERSION: &str = "0.63.0";

/// A built component.
#[derive(Debug)]
pub struct Built {
    pub path: PathBuf,
    pub bytes: u64,
    pub time: Duration,
}

/// Why a build could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "{tool} is needed to build {language} plugins and was not found; install it with:\n  {install}"
)]
pub struct MissingTool {
    pub tool: String,
    pub language: Language,
    pub install: String,
}

/// Builds the project in `dir` into `NAME.wasm` there.
pub fn build(dir: &Path) -> anyhow::Result<Built> {
    let project = Project::open(dir)?;
    let started = Instant::now();
    let output = project.output();
    match project.language {
        Language::Rust => rust(&project, &output)?,
        Language::Python => python(&project, &output)?,
        Language::Js => js(&project, &output)?,
        Language::C => c(&project, &output)?,
    }
    let bytes = std::fs::metadata(&output)
        .with_context(|| format!("the build wrote no {}", output.display()))?
        .len();
    Ok(Built {
        path: output,
        bytes,
        time: started.elapsed(),
    })
}

fn missing(tool: &str, language: Language, install: impl Into<String>) -> anyhow::Error {
    MissingTool {
        tool: tool.to_owned(),
        language,
        install: install.into(),
    }
    .into()
}

/// The first of `candidates` that is an executable file, or a program found on `PATH`.
fn find_tool(candidates: &[PathBuf], program: &str) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .or_else(|| on_path(program))
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Runs `command` in `dir`, its output passed through; fails with the command's name.
fn run(dir: &Path, program: &Path, args: &[&OsStr]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !status.success() {
        bail!(
            "{} {} failed ({status})",
            program.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn rust(project: &Project, output: &Path) -> anyhow::Result<()> {
    let cargo = on_path("cargo").ok_or_else(|| {
        missing(
            "cargo",
            Language::Rust,
            "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh",
        )
    })?;
    if let Some(rustup) = on_path("rustup") {
        let installed = Command::new(&rustup)
            .args(["target", "list", "--installed"])
            .current_dir(&project.dir)
            .output()
            .context("cannot run rustup")?;
        if !String::from_utf8_lossy(&installed.stdout)
            .lines()
            .any(|l| l.trim() == "wasm32-wasip2")
        {
            return Err(missing(
                "the wasm32-wasip2 target",
                Language::Rust,
                "rustup target add wasm32-wasip2",
            ));
        }
    }
    // The artifact's path comes from cargo's own report, so CARGO_TARGET_DIR and workspaces
    // are followed.
    let out = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&project.dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("cargo build failed ({})", out.status);
    }
    let artifact = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .rfind(|f| f.extension() == Some(os("wasm")))
        .context("cargo built no .wasm file: is the crate a `cdylib`?")?;
    std::fs::copy(&artifact, output)
        .with_context(|| format!("cannot copy {} to {}", artifact.display(), output.display()))?;
    Ok(())
}

fn python(project: &Project, output: &Path) -> anyhow::Result<()> {
    let tool = find_tool(
        &[project.dir.join(".venv/bin/componentize-py")],
        "componentize-py",
    )
    .ok_or_else(|| {
        missing(
            "componentize-py",
            Language::Python,
            format!(
                "python3 -m venv .venv && .venv/bin/pip install componentize-py=={COMPONENTIZE_PY_VERSION}"
            ),
        )
    })?;
    let world = project.kind.world();
    // The `wit_world` package for editors and type checkers (componentize-py makes its own
    // copy while componentizing).
    run(
        &project.dir,
        &tool,
        &[
            os("-d"),
            os("wit"),
            os("-w"),
            os(world),
            os("bindings"),
            os("bindings"),
        ],
    )?;
    run(
        &project.dir,
        &tool,
        &[
            os("-d"),
            os("wit"),
            os("-w"),
            os(world),
            os("componentize"),
            os("app"),
            os("-o"),
            output.as_os_str(),
        ],
    )
}

fn js(project: &Project, output: &Path) -> anyhow::Result<()> {
    let bin = project.dir.join("node_modules/.bin");
    let componentize = bin.join("componentize-js");
    if !componentize.is_file() {
        let install = if on_path("npm").is_some() {
            "npm install".to_owned()
        } else {
            "apt-get install -y nodejs npm && npm install".to_owned()
        };
        return Err(missing(
            "componentize-js (node_modules)",
            Language::Js,
            install,
        ));
    }
    let world = project.kind.world();
    // TypeScript declarations of the world's interfaces, for editors: a convenience, so a
    // failure is reported and the build goes on.
    let jco = project.dir.join("node_modules/jco-types/src/jco.js");
    if let (true, Some(node)) = (jco.is_file(), on_path("node")) {
        let types = [
            jco.as_os_str(),
            os("types"),
            os("wit"),
            os("--world-name"),
            os(world),
            os("-o"),
            os("types"),
            os("--quiet"),
        ];
        if let Err(e) = run(&project.dir, &node, &types) {
            eprintln!("warning: no TypeScript types in types/: {e:#}");
        }
    }
    // -d: none of the WASI features, so that the component imports only the plugin world.
    let mut args = vec![
        os("app.js"),
        os("--wit"),
        os("wit"),
        os("--world-name"),
        os(world),
        os("-d"),
    ];
    args.extend(["stdio", "random", "clocks", "http", "fetch-event"].map(os));
    args.extend([os("-o"), output.as_os_str()]);
    run(&project.dir, &componentize, &args)
}

fn c(project: &Project, output: &Path) -> anyhow::Result<()> {
    let wit_bindgen = on_path("wit-bindgen").ok_or_else(|| {
        missing(
            "wit-bindgen",
            Language::C,
            format!("cargo install --locked wit-bindgen-cli@{WIT_BINDGEN_VERSION}"),
        )
    })?;
    let clang = on_path("clang").ok_or_else(|| {
        missing(
            "clang",
            Language::C,
            "apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32",
        )
    })?;
    let sysroot = wasi_sysroot().ok_or_else(|| {
        missing(
            "wasi-libc",
            Language::C,
            "apt-get install -y wasi-libc (or set WASI_SYSROOT to a wasi-sdk's share/wasi-sysroot)",
        )
    })?;
    let builtins = Command::new(&clang)
        .args(["--target=wasm32-wasi", "-print-libgcc-file-name"])
        .output()
        .context("cannot run clang")?;
    let builtins = PathBuf::from(String::from_utf8_lossy(&builtins.stdout).trim());
    if !builtins.is_file() {
        return Err(missing(
            &format!("clang's WebAssembly builtins ({})", builtins.display()),
            Language::C,
            format!(
                "apt-get install -y libclang-rt-{}-dev-wasm32",
                clang_major(&clang).unwrap_or_else(|| "NN".to_owned())
            ),
        ));
    }
    let linker = component_linker().ok_or_else(|| {
        missing(
            "wasm-component-ld",
            Language::C,
            "rustup target add wasm32-wasip2   # ships wasm-component-ld",
        )
    })?;
    let world = project.kind.world();
    let c_world = world.replace('-', "_");
    run(
        &project.dir,
        &wit_bindgen,
        &[
            os("c"),
            os("--world"),
            os(world),
            os("--out-dir"),
            os("gen"),
            os("wit"),
        ],
    )?;
    // wasi-libc's reactor start (no `main`; `_initialize` runs the constructors), linked by
    // wasm-component-ld, which runs wasm-ld and then wraps the module into a component with the
    // WASI preview 1 reactor adapter and the world's type information from wit-bindgen's object.
    let generated = |ext: &str| format!("gen/{c_world}{ext}");
    let sysroot_arg = format!("--sysroot={}", sysroot.display());
    let linker_arg = format!("-fuse-ld={}", linker.display());
    let args = [
        "--target=wasm32-wasi",
        &sysroot_arg,
        "-mexec-model=reactor",
        "-O2",
        "-Wall",
        "-Igen",
        &linker_arg,
        "-Wl,--wasi-adapter=reactor",
        "-o",
        &output.to_string_lossy(),
        "app.c",
        &generated(".c"),
        &generated("_component_type.o"),
    ];
    run(&project.dir, &clang, &args.map(os))
}

/// wasi-libc's headers and libraries: `$WASI_SYSROOT`, else Debian's `wasi-libc` package
/// (`/usr/include/wasm32-wasi`, `/usr/lib/wasm32-wasi`).
fn wasi_sysroot() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WASI_SYSROOT") {
        return Some(PathBuf::from(dir));
    }
    Path::new("/usr/lib/wasm32-wasi/libc.a")
        .is_file()
        .then(|| PathBuf::from("/usr"))
}

fn clang_major(clang: &Path) -> Option<String> {
    let out = Command::new(clang).arg("-dumpversion").output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    Some(version.trim().split('.').next()?.to_owned())
}

/// `wasm-component-ld`: on `PATH`, or the one Rust's toolchain ships for its `wasm32-wasip2`
/// target (`$(rustc --print sysroot)/lib/rustlib/HOST/bin/`).
fn component_linker() -> Option<PathBuf> {
    if let Some(p) = on_path("wasm-component-ld") {
        return Some(p);
    }
    let rustc = on_path("rustc")?;
    let out = Command::new(rustc).args(["-vV"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let host = text.lines().find_map(|l| l.strip_prefix("host: "))?.trim();
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let path = sysroot
        .join("lib/rustlib")
        .join(host)
        .join("bin/wasm-component-ld");
    path.is_file().then_some(path)
}
