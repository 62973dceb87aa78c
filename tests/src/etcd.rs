//! A real etcd cluster on loopback: Debian's `etcd` (etcd-server) members started as processes
//! with their own data folders, killed and restarted by the tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{eventually, free_ports, within};

/// Where the etcd server is (Debian's etcd-server package).
pub const ETCD: &str = "/usr/bin/etcd";

/// One member: its ports, its data folder, its process while it runs.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A cluster of etcd members on 127.0.0.1; every member is killed and its data removed on drop.
pub struct EtcdCluster {
    dir: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers writes.
    pub async fn start(n: usize) -> Self {
        assert!(
            std::path::Path::new(ETCD).exists(),
            "{ETCD} is missing: install Debian's etcd-server (scripts/test does)"
        );
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wasmgate-etcd-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("etcd temp dir");
        let ports = free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            dir,
            members,
            initial_cluster,
        };
        for i in 0..n {
            cluster.spawn(i, "new");
        }
        cluster.wait_for_quorum().await;
        cluster
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .expect("etcd log file");
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(ETCD)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", "wasmgate-test"])
            .args(["--initial-cluster-state", state])
            // Fast elections: a killed leader is replaced within about a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {ETCD}: {e}"));
        self.members[i].child = Some(child);
    }

    /// `etcd://` with every member, and `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoints().join(","))
    }

    /// `127.0.0.1:PORT` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// A raw etcd client of every member (bypassing the gateway's own code).
    pub async fn client(&self) -> etcd_client::Client {
        within(
            "connect to etcd",
            etcd_client::Client::connect(self.endpoints(), None),
        )
        .await
        .expect("etcd client")
    }

    /// Waits until a write goes through.
    pub async fn wait_for_quorum(&self) {
        let client = self.client().await;
        let mut attempts = 0;
        loop {
            let mut kv = client.kv_client();
            let put = tokio::time::timeout(
                Duration::from_secs(2),
                kv.put("/wasmgate-test/quorum", "", None),
            )
            .await;
            if matches!(put, Ok(Ok(_))) {
                return;
            }
            attempts += 1;
            assert!(
                attempts < 30,
                "the etcd cluster has no quorum after {attempts} attempts (logs in {})",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the current leader.
    pub async fn leader(&self) -> usize {
        eventually("an etcd leader", || async {
            for (i, m) in self.members.iter().enumerate() {
                if m.child.is_none() {
                    continue;
                }
                let endpoint = format!("127.0.0.1:{}", m.client_port);
                let Ok(mut client) = etcd_client::Client::connect([endpoint], None).await else {
                    continue;
                };
                if let Ok(status) = client.status().await
                    && status.leader() != 0
                    && status.header().map(|h| h.member_id()) == Some(status.leader())
                {
                    return Some(i);
                }
            }
            None
        })
        .await
    }

    /// Kills member `i` (SIGKILL) and waits for the process to end.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data folder.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} runs");
        self.spawn(i, "existing");
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
