//! `wasmgate fleet status`: the instances registered under the prefix, the revision each runs,
//! and which ones lag behind the stored configuration.

use super::follow::InstanceRecord;
use super::store::{self, StoreArgs, StoreUrl};

/// The `fleet` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// List the instances following the store, the revision each runs, and the laggards.
    Status {
        /// The store: etcd://HOST:PORT[,HOST:PORT…]/PREFIX.
        #[arg(long, value_name = "URL")]
        from: StoreUrl,
        #[command(flatten)]
        store: StoreArgs,
    },
}

impl FleetCommand {
    /// Runs the command; returns what it prints on standard output.
    pub async fn run(self) -> anyhow::Result<String> {
        match self {
            Self::Status { from, store } => {
                let client = store::connect(&from, &store).await?;
                Ok(fleet(&client, &from).await?.table())
            }
        }
    }
}

/// The fleet as the store shows it.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The stored configuration's revision (0: none stored).
    pub current: i64,
    /// Every registered instance, by name.
    pub instances: Vec<InstanceRecord>,
}

impl Fleet {
    /// Instances running an older revision than the stored one.
    pub fn laggards(&self) -> impl Iterator<Item = &InstanceRecord> {
        self.instances.iter().filter(|i| i.revision < self.current)
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<32} {:<22} {:<8} {:<9} {:<12} {:<8} STATE\n",
            "INSTANCE", "ADDRESS", "VERSION", "REVISION", "HASH", "HEALTHY"
        );
        for i in &self.instances {
            let mut state = if i.revision < self.current {
                format!("lagging (store at {})", self.current)
            } else {
                "current".to_owned()
            };
            if i.from_cache {
                state.push_str(", from cache");
            }
            if let Some(refused) = &i.refused {
                state.push_str(&format!(", refused {refused}"));
            }
            out.push_str(&format!(
                "{:<32} {:<22} {:<8} {:<9} {:<12} {:<8} {state}\n",
                i.id,
                i.address.as_deref().unwrap_or("-"),
                i.version,
                i.revision,
                i.hash.get(..12).unwrap_or(&i.hash),
                if i.healthy { "yes" } else { "no" },
            ));
        }
        let lagging = self.laggards().count();
        out.push_str(&format!(
            "{} instance(s), {lagging} lagging; stored configuration at revision {}\n",
            self.instances.len(),
            self.current
        ));
        out
    }
}

/// Reads the instances' records and the stored configuration's revision.
pub async fn fleet(client: &etcd_client::Client, url: &StoreUrl) -> anyhow::Result<Fleet> {
    let current = store::read_config(client, url, None)
        .await?
        .map_or(0, |s| s.revision);
    let mut kv = client.kv_client();
    let options = etcd_client::GetOptions::new().with_prefix();
    let response = tokio::time::timeout(
        store::REQUEST_TIMEOUT,
        kv.get(url.instances_prefix(), Some(options)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{url}: no answer within {:?}", store::REQUEST_TIMEOUT))??;
    let mut instances = Vec::new();
    for kv in response.kvs() {
        match serde_json::from_slice::<InstanceRecord>(kv.value()) {
            Ok(record) => instances.push(record),
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "unreadable instance record")
            }
        }
    }
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Fleet { current, instances })
}
