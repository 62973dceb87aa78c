//! Compiled components, kept in memory and on disk.
//!
//! Compiling takes 20 ms for a small Rust component and about 4 s for a Python or JavaScript
//! one; loading a precompiled artifact takes 0.1–15 ms. A gateway that restarts or reloads with
//! interpreted plugins would otherwise spend seconds of CPU per plugin each time, so artifacts are
//! written to a directory and read back, keyed by the component's SHA-256 and the engine's
//! compatibility hash (wasmtime version, target, and every setting that changes generated code).
//! The directory is the per-user cache directory unless the configuration names another or turns
//! it off, or [`CACHE_DIR_ENV`] overrides both ([`cache_dir`]).
//!
//! # How much stays in memory
//!
//! A compiled component is a few hundred KiB of machine code for a small Rust plugin and tens of
//! MiB for a Python one. The memory cache holds, by the component's SHA-256, every component a
//! loaded plugin still uses (a slot's active version, a shadow candidate, a version a running
//! request still holds — through a `Weak`, so it holds none of them alive) plus the [`RECENT`] most
//! recently loaded ones (a version replaced and then restored, a reload that brings one back).
//! Anything else is freed as soon as its last plugin is, so loading one version after another
//! through the admin API leaves the process's memory flat. A component loaded again after it
//! was dropped comes from the disk cache in milliseconds (or is compiled again without one).
//!
//! Reading an artifact back is `unsafe` in wasmtime: the bytes are native code that will run.
//! [`ArtifactCache::read`] is the one place that does it, and only for bytes it can trust (see
//! its SAFETY note).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::config::PluginCache;

const MAGIC: &[u8; 8] = b"WGCWASM1";

/// Compiled components kept in memory although no plugin uses them any more.
pub(crate) const RECENT: usize = 4;

/// A compiled component, shared by every plugin loaded from the same bytes; it is freed with the
/// last of them (and once it has left the [`RECENT`] ones).
pub(crate) struct Compiled {
    component: Component,
}

impl Compiled {
    pub(crate) fn component(&self) -> &Component {
        &self.component
    }
}

type Digest32 = [u8; 32];

#[derive(Default)]
struct Memory {
    /// Every component handed out that may still be in use, by digest; entries whose plugins are
    /// all gone are removed at the next insert.
    live: HashMap<Digest32, Weak<Compiled>>,
    /// The most recently loaded components, the newest last: at most [`RECENT`].
    recent: VecDeque<(Digest32, Arc<Compiled>)>,
}

impl Memory {
    fn get(&mut self, digest: &Digest32) -> Option<Arc<Compiled>> {
        let compiled = self.live.get(digest)?.upgrade()?;
        self.touch(*digest, &compiled);
        Some(compiled)
    }

    fn insert(&mut self, digest: Digest32, compiled: &Arc<Compiled>) {
        self.live.insert(digest, Arc::downgrade(compiled));
        self.touch(digest, compiled);
        self.live.retain(|_, c| c.strong_count() > 0);
    }

    /// Makes `compiled` the most recent one, dropping the oldest beyond [`RECENT`].
    fn touch(&mut self, digest: Digest32, compiled: &Arc<Compiled>) {
        if let Some(i) = self.recent.iter().position(|(d, _)| *d == digest) {
            self.recent.remove(i);
        }
        self.recent.push_back((digest, compiled.clone()));
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }
}

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactSource {
    /// Already compiled by this engine in this process.
    Memory,
    /// Read from the on-disk cache.
    Disk,
    /// Compiled now (and written to the disk cache if there is one).
    Compiled,
}

/// Overrides `[plugin_engine] cache_dir` (and the default): a directory, or `off`.
pub const CACHE_DIR_ENV: &str = "WASMGATE_PLUGIN_CACHE_DIR";

/// The directory artifacts go to, and whether failing to use it fails the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheDir {
    pub(crate) dir: Option<PathBuf>,
    /// Named by the operator (configuration or environment), as opposed to the default.
    pub(crate) required: bool,
}

/// Where compiled artifacts go, for the configuration's `setting` and the environment (`env`
/// reads a variable): [`CACHE_DIR_ENV`] first (`off` turns the cache off), then the setting,
/// then for [`PluginCache::Default`] `$XDG_CACHE_HOME/wasmgate` (when absolute, as the XDG base
/// directory specification requires) or `$HOME/.cache/wasmgate`.
pub(crate) fn cache_dir(setting: &PluginCache, env: impl Fn(&str) -> Option<OsString>) -> CacheDir {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let required = |dir: Option<PathBuf>| CacheDir {
        dir,
        required: true,
    };
    if let Some(v) = set(CACHE_DIR_ENV) {
        return required((v != "off").then(|| PathBuf::from(v)));
    }
    match setting {
        PluginCache::Off => required(None),
        PluginCache::Dir(dir) => required(Some(dir.clone())),
        PluginCache::Default => CacheDir {
            dir: set("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .filter(|d| d.is_absolute())
                .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(".cache")))
                .map(|d| d.join("wasmgate")),
            required: false,
        },
    }
}

pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_key: String,
    memory: Mutex<Memory>,
}

impl ArtifactCache {
    /// A cache writing to `dir`, which is created (owner-only) or checked; when it cannot be
    /// used, an `optional` one is dropped with a warning and an other one is the error.
    pub(crate) fn new(
        engine: &Engine,
        mut dir: Option<PathBuf>,
        optional: bool,
    ) -> io::Result<Self> {
        if let Some(d) = &dir
            && let Err(e) = prepare_dir(d)
        {
            if !optional {
                return Err(e);
            }
            tracing::warn!(
                target: "wasmgate::plugin",
                "compiled plugins are kept in memory only (each start compiles them again): {e}"
            );
            dir = None;
        }
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ArtifactCache {
            dir,
            engine_key: hex(&hasher.0.finalize()[..8]),
            memory: Mutex::default(),
        })
    }

    /// The compiled component for `wasm`: from memory, from disk, or compiled now. Blocking
    /// (compilation takes up to seconds): call it from a blocking thread.
    pub(crate) fn get_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> wasmtime::Result<(Arc<Compiled>, ArtifactSource)> {
        let digest: Digest32 = Sha256::digest(wasm).into();
        if let Some(compiled) = self.lock().get(&digest) {
            return Ok((compiled, ArtifactSource::Memory));
        }
        let path = self
            .dir
            .as_ref()
            .map(|dir| dir.join(format!("{}-{}.cwasm", hex(&digest), self.engine_key)));
        let mut source = ArtifactSource::Compiled;
        let mut component = None;
        if let Some(path) = &path {
            match self.read(engine, path) {
                Ok(Some(c)) => {
                    component = Some(c);
                    source = ArtifactSource::Disk;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring cached plugin artifact: {e:#}")
                }
            }
        }
        let component = match component {
            Some(c) => c,
            None => {
                let c = Component::new(engine, wasm)?;
                if let Some(path) = &path
                    && let Err(e) = c
                        .serialize()
                        .map_err(io::Error::other)
                        .and_then(|bytes| write(path, &bytes))
                {
                    tracing::warn!(path = %path.display(), "cannot cache plugin artifact: {e}");
                }
                c
            }
        };
        let compiled = Arc::new(Compiled { component });
        self.lock().insert(digest, &compiled);
        Ok((compiled, source))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries of the memory cache: (indexed, recent).
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let memory = self.lock();
        (memory.live.len(), memory.recent.len())
    }

    /// Reads a cached artifact; `Ok(None)` when there is none.
    #[allow(unsafe_code)]
    fn read(&self, engine: &Engine, path: &Path) -> wasmtime::Result<Option<Component>> {
        let mut file = match fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        owned_by_us(&file.metadata()?)?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes)?;
        let Some(artifact) = verified(&bytes) else {
            wasmtime::bail!("checksum mismatch (torn write or corruption)");
        };
        // SAFETY: `Component::deserialize` runs the bytes as native code, so they must have been
        // produced by `Component::serialize` of a compatible engine and not altered since. They
        // come from this cache's own directory, which `prepare_dir` created or checked to be
        // owned by this user and writable only by them; the file itself (checked on the open
        // descriptor, so after any symbolic link) is a regular file of this user that no one
        // else may write; the file name carries this engine's compatibility hash, so
        // only this engine configuration wrote it; the SHA-256 written with the artifact matches,
        // so the write completed and the bytes are the ones serialized; and wasmtime itself
        // re-checks its version and the engine settings recorded in the artifact header.
        let component = unsafe { Component::deserialize(engine, artifact)? };
        Ok(Some(component))
    }
}

/// Creates the cache directory (owner-only) or checks that an existing one is not writable by
/// group or others: whoever can write there chooses the native code the gateway runs.
fn prepare_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let meta = fs::metadata(dir)?;
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "plugin cache directory {} is writable by group or others (mode {:o})",
                    dir.display(),
                    mode & 0o777
                ),
            ));
        }
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "plugin cache directory {} is not a directory",
                    dir.display()
                ),
            ));
        }
        owned_by_us(&meta).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("plugin cache directory {}: {e}", dir.display()),
            )
        })?;
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir)?;
    Ok(())
}

/// Refuses a file or directory that another user owns or that group or others may write:
/// whoever can write it chooses the native code the gateway runs.
fn owned_by_us(meta: &fs::Metadata) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        #[allow(unsafe_code)]
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != euid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("owned by user {}, not by this user ({euid})", meta.uid()),
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "writable by group or others (mode {:o})",
                    meta.mode() & 0o777
                ),
            ));
        }
    }
    if !(meta.is_file() || meta.is_dir()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither a regular file nor a directory",
        ));
    }
    Ok(())
}

/// `MAGIC ‖ SHA-256(artifact) ‖ artifact` → the artifact, if the digest matches.
fn verified(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (digest, artifact) = rest.split_at_checked(32)?;
    (Sha256::digest(artifact).as_slice() == digest).then_some(artifact)
}

/// Writes through a temporary file and a rename, so readers never see a partial artifact.
fn write(path: &Path, artifact: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}.{}", std::process::id(), fastrand::u64(..)));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        // A new file only (never through a link planted under the temporary name), readable
        // and writable by this user alone.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(artifact))?;
        file.write_all(artifact)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Feeds `Hash` output into SHA-256, for a stable digest of wasmtime's compatibility hash
/// (`DefaultHasher` is not stable across Rust versions).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 state is used")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("wasmgate-cache-test-{}", fastrand::u64(..)));
        prepare_dir(&dir).unwrap();
        let path = dir.join("x.cwasm");
        write(&path, b"artifact bytes").unwrap();
        let mut bytes = fs::read(&path).unwrap();
        assert_eq!(verified(&bytes), Some(&b"artifact bytes"[..]));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(verified(&bytes), None);
        assert_eq!(verified(b"short"), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// An empty component, made distinct by a custom section holding `n`.
    fn tiny_component(n: u32) -> Vec<u8> {
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        c.extend([0, 1 + 1 + 4, 1, b'n']);
        c.extend(n.to_le_bytes());
        c
    }

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("wasmgate-cache-test-{}", fastrand::u64(..)))
    }

    #[test]
    fn memory_holds_the_components_in_use_and_the_recent_ones() {
        let engine = Engine::default();
        let cache = ArtifactCache::new(&engine, None, false).unwrap();
        let (in_use, source) = cache.get_or_compile(&engine, &tiny_component(0)).unwrap();
        assert_eq!(source, ArtifactSource::Compiled);
        for n in 1..50 {
            let (_, source) = cache.get_or_compile(&engine, &tiny_component(n)).unwrap();
            assert_eq!(source, ArtifactSource::Compiled);
            let (indexed, recent) = cache.held();
            assert!(
                recent <= RECENT && indexed <= RECENT + 1,
                "{n}: {indexed} {recent}"
            );
        }
        assert_eq!(cache.held(), (RECENT + 1, RECENT));
        let source = |n| cache.get_or_compile(&engine, &tiny_component(n)).unwrap().1;
        // Still used by a plugin, though 49 others were loaded since.
        assert_eq!(source(0), ArtifactSource::Memory);
        // Among the recent ones.
        assert_eq!(source(49), ArtifactSource::Memory);
        // Dropped: nothing used it and it was not recent.
        assert_eq!(source(1), ArtifactSource::Compiled);
        drop(in_use);
    }

    #[test]
    fn default_directory_follows_xdg_and_can_be_overridden_or_turned_off() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let dir = |s: &str| Some(PathBuf::from(s));
        let default = PluginCache::Default;
        let xdg = env(&[("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/home/u")]);
        assert_eq!(cache_dir(&default, xdg).dir, dir("/x/cache/wasmgate"));
        assert!(!cache_dir(&default, xdg).required);
        let home = env(&[("XDG_CACHE_HOME", "relative"), ("HOME", "/home/u")]);
        assert_eq!(
            cache_dir(&default, home).dir,
            dir("/home/u/.cache/wasmgate")
        );
        assert_eq!(cache_dir(&default, env(&[])).dir, None);
        assert_eq!(cache_dir(&PluginCache::Off, xdg).dir, None);
        let named = PluginCache::Dir("/srv/cache".into());
        assert_eq!(
            cache_dir(&named, xdg),
            CacheDir {
                dir: dir("/srv/cache"),
                required: true
            }
        );
        let over = env(&[(CACHE_DIR_ENV, "/env/cache"), ("HOME", "/home/u")]);
        assert_eq!(cache_dir(&named, over).dir, dir("/env/cache"));
        assert_eq!(cache_dir(&default, over).dir, dir("/env/cache"));
        let off = env(&[(CACHE_DIR_ENV, "off"), ("HOME", "/home/u")]);
        assert_eq!(cache_dir(&default, off).dir, None);
        assert_eq!(cache_dir(&named, off).dir, None);
    }

    #[cfg(unix)]
    #[test]
    fn a_corrupt_or_foreign_artifact_is_compiled_again() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir();
        let engine = Engine::default();
        let load = || {
            let cache = ArtifactCache::new(&engine, Some(dir.clone()), false).unwrap();
            cache.get_or_compile(&engine, &tiny_component(7)).unwrap().1
        };
        assert_eq!(load(), ArtifactSource::Compiled);
        let file = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let mode = |f: &Path| fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(load(), ArtifactSource::Disk);
        // Writable by others: anyone could have put code there.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(load(), ArtifactSource::Compiled);
        assert_eq!(mode(&file), 0o600, "rewritten");
        assert_eq!(load(), ArtifactSource::Disk);
        // Corrupt.
        let mut bytes = fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&file, bytes).unwrap();
        assert_eq!(load(), ArtifactSource::Compiled);
        assert_eq!(load(), ArtifactSource::Disk);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_directory_others_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("wasmgate-cache-test-{}", fastrand::u64(..)));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare_dir(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        fs::remove_dir_all(&dir).unwrap();
    }
}
