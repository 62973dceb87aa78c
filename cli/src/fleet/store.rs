//! The configuration store's address (`etcd://HOST:PORT[,HOST:PORT…]/PREFIX`), the options an
//! etcd client takes (TLS, user and password), connecting, and the layout of keys under the
//! prefix:
//!
//! - `PREFIX/config`: the whole configuration (TOML), one key, so a change is one atomic write
//!   and its mod revision names it;
//! - `PREFIX/instances/ID`: one record per running gateway (JSON), bound to a lease so that it
//!   disappears when the instance stops or loses the store.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// The etcd client port, when the address names none.
pub const DEFAULT_PORT: u16 = 2379;

/// How long one request to the store (a read, a write) may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// A configuration store's address: the etcd members to ask and the prefix the fleet's keys
/// live under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// `HOST:PORT`, in the order given.
    pub endpoints: Vec<String>,
    /// Starts with `/`, never ends with one.
    pub prefix: String,
}

/// Why an `etcd://` address was refused.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {reason} (expected etcd://HOST:PORT[,HOST:PORT…]/PREFIX)")]
pub struct StoreUrlError {
    url: String,
    reason: &'static str,
}

impl StoreUrl {
    /// Whether `text` names a configuration store rather than a file.
    pub fn is_store(text: &str) -> bool {
        text.starts_with("etcd://")
    }

    /// The key holding the configuration.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// The prefix of the instances' records.
    pub fn instances_prefix(&self) -> String {
        format!("{}/instances/", self.prefix)
    }
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let error = |reason| StoreUrlError {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| error("not an etcd:// address"))?;
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| error("no prefix after the members"))?;
        let prefix = format!("/{}", path.trim_end_matches('/'));
        if prefix == "/" {
            return Err(error("the prefix is empty"));
        }
        if prefix.contains("//") {
            return Err(error("the prefix has an empty segment"));
        }
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            if host.is_empty() {
                return Err(error("a member's address is empty"));
            }
            if host.contains('@') {
                return Err(error(
                    "credentials go in --etcd-user and --etcd-password, not in the address",
                ));
            }
            let with_port = match host.rsplit_once(':') {
                Some((_, port)) if !host.ends_with(']') => {
                    port.parse::<u16>()
                        .map_err(|_| error("a member's port is not a number"))?;
                    host.to_owned()
                }
                _ => format!("{host}:{DEFAULT_PORT}"),
            };
            endpoints.push(with_port);
        }
        Ok(Self { endpoints, prefix })
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd://{}{}", self.endpoints.join(","), self.prefix)
    }
}

/// How to reach etcd: TLS and authentication, as etcd's own clients (`etcdctl`) take them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    /// Connect to etcd over TLS, trusting the CA certificates in this PEM file (etcdctl's
    /// --cacert).
    #[arg(long = "etcd-cacert", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// A client certificate (PEM) for etcd's client certificate authentication (--cert).
    #[arg(long = "etcd-cert", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM) (--key).
    #[arg(long = "etcd-key", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// An etcd user, when etcd's authentication is on (--user).
    #[arg(long = "etcd-user", env = "WASMGATE_ETCD_USER", requires = "password")]
    pub user: Option<String>,
    /// The etcd user's password.
    #[arg(
        long = "etcd-password",
        env = "WASMGATE_ETCD_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
}

impl StoreArgs {
    fn tls(&self) -> anyhow::Result<Option<TlsOptions>> {
        if self.cacert.is_none() && self.cert.is_none() {
            return Ok(None);
        }
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).with_context(|| format!("{what} {}", path.display()))
        };
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.cacert {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--etcd-cacert")?));
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "--etcd-cert")?,
                read(key, "--etcd-key")?,
            ));
        }
        Ok(Some(tls))
    }
}

/// A client of the members `url` names. Requests go to any member that answers (the client
/// balances over them and moves on when one fails); a member without a leader refuses them, so
/// a minority side of a partition is never read from.
pub async fn connect(url: &StoreUrl, args: &StoreArgs) -> anyhow::Result<Client> {
    let tls = args.tls()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoints: Vec<String> = url
        .endpoints
        .iter()
        .map(|e| format!("{scheme}://{e}"))
        .collect();
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        // A member that stops answering is noticed within seconds even while nothing changes.
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let Some(tls) = tls {
        options = options.with_tls(tls);
    }
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        options = options.with_user(user, password);
    }
    tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(endpoints, Some(options)))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no member answered within {REQUEST_TIMEOUT:?}"))?
        .with_context(|| format!("cannot connect to {url}"))
}

/// gRPC's UNAVAILABLE status code: the member could not be reached (or is starting).
const GRPC_UNAVAILABLE: i32 = 14;

/// A configuration as the store holds it.
#[derive(Debug, Clone)]
pub struct StoredConfig {
    pub text: String,
    /// The key's mod revision: the store revision of the write that made this version.
    pub revision: i64,
    /// The key's version: how many times it was written since it was created.
    pub version: i64,
    /// The store's revision when this was read; changes after it are watched for.
    pub read_at: i64,
}

/// Reads `PREFIX/config` (at `revision`, or the newest); `None` when the key does not exist.
pub async fn read_config(
    client: &Client,
    url: &StoreUrl,
    revision: Option<i64>,
) -> anyhow::Result<Option<StoredConfig>> {
    let mut kv = client.kv_client();
    let options = revision.map(|r| etcd_client::GetOptions::new().with_revision(r));
    // A read is safe to repeat: a member that just went away (or is still starting) costs a
    // retry on another, not a failure.
    let mut attempt = 0;
    let response = loop {
        let result =
            tokio::time::timeout(REQUEST_TIMEOUT, kv.get(url.config_key(), options.clone()))
                .await
                .map_err(|_| anyhow::anyhow!("{url}: no answer within {REQUEST_TIMEOUT:?}"))?;
        match result {
            Ok(response) => break response,
            Err(etcd_client::Error::GRpcStatus(status))
                if i32::from(status.code()) == GRPC_UNAVAILABLE && attempt < 3 =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("cannot read {} from {url}", url.config_key())));
            }
        }
    };
    let read_at = response.header().map_or(0, |h| h.revision());
    let Some(kv) = response.kvs().first() else {
        return Ok(None);
    };
    let text = kv
        .value_str()
        .with_context(|| format!("{} is not UTF-8 text", url.config_key()))?
        .to_owned();
    Ok(Some(StoredConfig {
        text,
        revision: kv.mod_revision(),
        version: kv.version(),
        read_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_members_and_a_prefix() {
        let url: StoreUrl = "etcd://10.0.0.1:2379,etcd-b/wasmgate/prod/"
            .parse()
            .unwrap();
        assert_eq!(url.endpoints, ["10.0.0.1:2379", "etcd-b:2379"]);
        assert_eq!(url.prefix, "/wasmgate/prod");
        assert_eq!(url.config_key(), "/wasmgate/prod/config");
        assert_eq!(
            url.to_string(),
            "etcd://10.0.0.1:2379,etcd-b:2379/wasmgate/prod"
        );
        for (bad, reason) in [
            ("etcd://a:1", "no prefix after the members"),
            ("etcd://a:1/", "the prefix is empty"),
            ("etcd://a:x/p", "a member's port is not a number"),
            ("etcd://,a:1/p", "a member's address is empty"),
            ("etcd://u:p@a:1/p", "credentials go in --etcd-user"),
        ] {
            let e = bad.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(e.contains(reason), "{bad}: {e}");
        }
    }
}
