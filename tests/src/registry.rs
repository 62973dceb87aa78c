//! A real OCI registry for the tests: Debian's `docker-registry` (the CNCF distribution
//! registry) on 127.0.0.1, storing into a folder of its own, stopped and removed on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The registry binary `scripts/test` installs (`apt-get install docker-registry`).
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

pub const BASIC_USER: &str = "tester";
pub const BASIC_PASSWORD: &str = "registry-test-password";
/// [`BASIC_USER`]'s htpasswd line: bcrypt (the registry's only format) of [`BASIC_PASSWORD`],
/// 4 rounds, made once with libxcrypt (`crypt.crypt(password, crypt.mksalt(METHOD_BLOWFISH))`).
const BASIC_HTPASSWD: &str = "tester:$2b$04$H4kv358PBsSkCkaclE.tJOCCtdeoiI7cphQwE/YJUgfu1xe/u.Bu.";

/// A running registry.
pub struct Registry {
    pub addr: SocketAddr,
    /// Its storage root: blobs are under `docker/registry/v2/blobs/sha256/XX/HEX/data`.
    pub storage: PathBuf,
    dir: PathBuf,
    child: Child,
}

impl Registry {
    /// Starts a registry on a free port and waits (at most 30 s) until it answers `/v2/`.
    pub async fn start() -> Registry {
        Self::start_with(None).await
    }

    /// A registry that asks for HTTP Basic credentials: user [`BASIC_USER`], password
    /// [`BASIC_PASSWORD`].
    pub async fn start_with_basic_auth() -> Registry {
        Self::start_with(Some(BASIC_HTPASSWD)).await
    }

    async fn start_with(htpasswd: Option<&str>) -> Registry {
        assert!(
            Path::new(REGISTRY_BINARY).is_file(),
            "{REGISTRY_BINARY} is missing: install Debian's docker-registry package (scripts/test does)"
        );
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wasmgate-registry-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).expect("registry folder");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port()));
        let config = dir.join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some(line) = htpasswd {
            let file = dir.join("htpasswd");
            std::fs::write(&file, format!("{line}\n")).expect("htpasswd");
            yaml += &format!(
                "auth:\n  htpasswd:\n    realm: wasmgate-test\n    path: {}\n",
                file.display()
            );
        }
        std::fs::write(&config, yaml).expect("registry config");
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("registry.log")).expect("registry log"),
            ))
            .spawn()
            .expect("start docker-registry");
        let mut registry = Registry {
            addr,
            storage,
            dir,
            child,
        };
        registry.wait_until_ready().await;
        registry
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("registry status") {
                panic!(
                    "docker-registry exited with {status}: {}",
                    std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
                );
            }
            if let Ok(Ok(mut stream)) = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(self.addr),
            )
            .await
            {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let asked = stream
                    .write_all(b"GET /v2/ HTTP/1.0\r\nHost: registry\r\n\r\n")
                    .await;
                let mut head = [0u8; 12];
                let read =
                    tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut head))
                        .await;
                // 401 from a registry that wants credentials: it is up too.
                if asked.is_ok()
                    && matches!(read, Ok(Ok(_)))
                    && (head.ends_with(b"200") || head.ends_with(b"401"))
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {} within 30 s",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `oci://127.0.0.1:PORT/{rest}`.
    pub fn reference(&self, rest: &str) -> String {
        format!("oci://{}/{rest}", self.addr)
    }

    /// The file the registry serves blob `digest` (`sha256:…`) from.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops the registry now (it is also stopped on drop).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
