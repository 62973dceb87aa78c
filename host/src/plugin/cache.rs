//! Compiled components, kept in memory and (optionally) on disk.
//!
//! Compiling takes 20 ms for a small Rust component and about 4 s for a Python or JavaScript
//! one; loading a precompiled artifact takes 0.1–15 ms. A gateway that restarts or reloads with
//! interpreted plugins would otherwise spend seconds of CPU per plugin each time, so artifacts are
//! written to a directory and read back, keyed by the component's SHA-256 and the engine's
//! compatibility hash (wasmtime version, target, and every setting that changes generated code).
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
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

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

pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_key: String,
    memory: Mutex<Memory>,
}

impl ArtifactCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> io::Result<Self> {
        if let Some(dir) = &dir {
            prepare_dir(dir)?;
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

    /// Components held in memory: (in use or recent, recent).
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let memory = self.lock();
        let live = memory.live.values().filter(|c| c.strong_count() > 0).count();
        (live, memory.recent.len())
    }

    /// Reads a cached artifact; `Ok(None)` when there is none.
    #[allow(unsafe_code)]
    fn read(&self, engine: &Engine, path: &Path) -> wasmtime::Result<Option<Component>> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(artifact) = verified(&bytes) else {
            wasmtime::bail!("checksum mismatch (torn write or corruption)");
        };
        // SAFETY: `Component::deserialize` runs the bytes as native code, so they must have been
        // produced by `Component::serialize` of a compatible engine and not altered since. They
        // come from this cache's own directory, which `prepare_dir` created or checked to be
        // writable only by its owner; the file name carries this engine's compatibility hash, so
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
        let mode = fs::metadata(dir)?.permissions().mode();
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
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir)?;
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
        let mut file = fs::File::create(&tmp)?;
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
