//! `wasmgate config push|get|history`: the configuration a fleet follows, in etcd.
//!
//! A push validates the file locally first, then writes it in one transaction that compares the
//! key's mod revision with the one the operator expects (by default the one read just before),
//! so two operators never overwrite each other blindly: the second gets a conflict naming both
//! revisions. etcd keeps every revision of the key until it is compacted; `history` walks back
//! through them and stops at the compaction point.

use std::path::PathBuf;

use anyhow::Context;
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use wasmgate::Config;

use super::store::{self, StoreArgs, StoreUrl};

/// The `config` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file and write it to the store, unless someone else changed
    /// it since the revision expected (then nothing is written and the command fails).
    Push {
        /// The configuration (TOML).
        file: PathBuf,
        /// The store: etcd://HOST:PORT[,HOST:PORT…]/PREFIX.
        #[arg(long, value_name = "URL")]
        to: StoreUrl,
        /// The revision the stored configuration must still be at (as `config get` printed
        /// it; 0: there must be none yet). Default: the one read just before writing.
        #[arg(long, value_name = "REVISION")]
        expect_revision: Option<i64>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the stored configuration (its revision and hash go to standard error).
    Get {
        /// The store: etcd://HOST:PORT[,HOST:PORT…]/PREFIX.
        #[arg(long, value_name = "URL")]
        from: StoreUrl,
        /// An earlier revision (until etcd compacts it away).
        #[arg(long)]
        revision: Option<i64>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the stored configuration's earlier revisions, newest first, as far back as etcd
    /// still keeps them (it drops revisions older than its last compaction).
    History {
        /// The store: etcd://HOST:PORT[,HOST:PORT…]/PREFIX.
        #[arg(long, value_name = "URL")]
        from: StoreUrl,
        /// At most this many revisions.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        store: StoreArgs,
    },
}

impl ConfigCommand {
    /// Runs the command; returns what it prints on standard output.
    pub async fn run(self) -> anyhow::Result<String> {
        match self {
            Self::Push {
                file,
                to,
                expect_revision,
                store,
            } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let client = store::connect(&to, &store).await?;
                let pushed = push(&client, &to, &text, expect_revision).await?;
                Ok(format!(
                    "{}: pushed to {to} as revision {} (hash {})\n",
                    file.display(),
                    pushed.revision,
                    pushed.hash
                ))
            }
            Self::Get {
                from,
                revision,
                store,
            } => {
                let client = store::connect(&from, &store).await?;
                let stored = store::read_config(&client, &from, revision)
                    .await?
                    .with_context(|| {
                        format!("{from} holds no configuration at {}", from.config_key())
                    })?;
                eprintln!(
                    "{}: revision {}, hash {}",
                    from.config_key(),
                    stored.revision,
                    wasmgate::config::source_hash(&stored.text)
                );
                Ok(stored.text)
            }
            Self::History { from, limit, store } => {
                let client = store::connect(&from, &store).await?;
                let (entries, end) = history(&client, &from, limit).await?;
                let mut out = format!("{:<10} {:<8} {:<10} HASH\n", "REVISION", "VERSION", "BYTES");
                for e in &entries {
                    out.push_str(&format!(
                        "{:<10} {:<8} {:<10} {}\n",
                        e.revision, e.version, e.bytes, e.hash
                    ));
                }
                out.push_str(&match end {
                    HistoryEnd::Created => "(the key's first revision)\n".to_owned(),
                    HistoryEnd::Limit => String::new(),
                    HistoryEnd::Compacted(r) => {
                        format!("(revision {r} and earlier were compacted away by etcd)\n")
                    }
                });
                Ok(out)
            }
        }
    }
}

/// A configuration written to the store.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub revision: i64,
    pub hash: String,
}

/// Why a push wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("invalid configuration, nothing pushed: {0}")]
    Invalid(#[from] wasmgate::config::ConfigError),
    #[error(
        "conflict: {key} is at revision {current}, not {expected} as expected: someone else pushed meanwhile; nothing was written (review it with `wasmgate config get`, then push again)"
    )]
    Conflict {
        key: String,
        expected: i64,
        /// 0: the key does not exist.
        current: i64,
    },
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Validates `text` and writes it as `url`'s configuration if the key is still at `expected`
/// (default: the revision read just before). One transaction: compare, then put.
pub async fn push(
    client: &etcd_client::Client,
    url: &StoreUrl,
    text: &str,
    expected: Option<i64>,
) -> Result<Pushed, PushError> {
    let config = Config::from_toml(text)?;
    let expected = match expected {
        Some(r) => r,
        None => store::read_config(client, url, None)
            .await?
            .map_or(0, |s| s.revision),
    };
    let key = url.config_key();
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            expected,
        )])
        .and_then([TxnOp::put(key.clone(), text, None)])
        .or_else([TxnOp::get(key.clone(), None)]);
    let mut kv = client.kv_client();
    let response = tokio::time::timeout(store::REQUEST_TIMEOUT, kv.txn(txn))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {:?}", store::REQUEST_TIMEOUT))?
        .with_context(|| format!("cannot write {key} to {url}"))?;
    if !response.succeeded() {
        let current = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => {
                    Some(get.kvs().first().map_or(0, |kv| kv.mod_revision()))
                }
                _ => None,
            })
            .unwrap_or(0);
        return Err(PushError::Conflict {
            key,
            expected,
            current,
        });
    }
    Ok(Pushed {
        // The put's revision is the transaction's.
        revision: response.header().map_or(0, |h| h.revision()),
        hash: config.source_hash.as_deref().unwrap_or_default().to_owned(),
    })
}

/// One earlier revision of the configuration.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub revision: i64,
    pub version: i64,
    pub bytes: usize,
    pub hash: String,
}

/// Where a history walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryEnd {
    /// At the key's creation: nothing earlier exists.
    Created,
    Limit,
    /// etcd compacted this revision and the ones before it away.
    Compacted(i64),
}

/// The configuration's revisions, newest first, at most `limit`.
pub async fn history(
    client: &etcd_client::Client,
    url: &StoreUrl,
    limit: usize,
) -> anyhow::Result<(Vec<HistoryEntry>, HistoryEnd)> {
    let mut entries = Vec::new();
    let mut at = None;
    loop {
        if entries.len() == limit {
            return Ok((entries, HistoryEnd::Limit));
        }
        let stored = match store::read_config(client, url, at).await {
            Ok(Some(s)) => s,
            Ok(None) => return Ok((entries, HistoryEnd::Created)),
            Err(e) if format!("{e:#}").contains("compacted") => {
                return Ok((entries, HistoryEnd::Compacted(at.unwrap_or(0))));
            }
            Err(e) => return Err(e),
        };
        entries.push(HistoryEntry {
            revision: stored.revision,
            version: stored.version,
            bytes: stored.text.len(),
            hash: wasmgate::config::source_hash(&stored.text).to_string(),
        });
        if stored.version <= 1 {
            return Ok((entries, HistoryEnd::Created));
        }
        at = Some(stored.revision - 1);
    }
}
