//! The TLS side of an HTTPS socket (the listeners sharing one port): one rustls configuration
//! whose certificate is chosen per handshake by SNI, from a table that a reload swaps whole.
//!
//! Application Gateway's rules: the listener whose host names match the SNI name gives its
//! certificate (a basic listener matches any name); no match, or no SNI at all, falls back to the
//! first HTTPS listener on the port by rule priority — unless `require_sni` is set, and then the
//! handshake fails. Reading the table is one `ArcSwap` load per handshake; nothing per request.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::UnixTime;
use rustls::server::{
    Acceptor, ClientHello, ResolvesServerCert, ServerConnection, ServerSessionMemoryCache,
};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, crypto::ring::Ticketer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

use super::client_auth::{ClientCertificate, ProfileVerifier};
use crate::config::{
    CertError, CertificateSource, ClientAuth, ClientAuthMode, ClientCas, HostPattern, TlsVersion,
};

/// Sessions remembered for resumption by session id (TLS 1.2); TLS 1.3 resumes with tickets.
const SESSION_CACHE: usize = 8192;

/// One listener's certificate on a socket, in SNI evaluation order.
#[derive(Debug, Clone)]
pub struct SiteCertificate {
    pub listener: String,
    /// Empty: a basic listener, which matches any SNI name.
    pub host_names: Vec<HostPattern>,
    pub source: CertificateSource,
    pub certificate: Arc<CertifiedKey>,
    /// The listener's SSL profile: its name and client authentication.
    pub client_auth: Option<(String, ClientAuth)>,
}

#[derive(Debug)]
struct Table {
    sites: Box<[Site]>,
}

#[derive(Debug)]
struct Site {
    /// Empty: matches any name.
    host_names: Box<[HostPattern]>,
    certificate: Arc<CertifiedKey>,
    /// Index into [`ServerTls::profiles`] of the site's SSL profile.
    profile: Option<usize>,
}

impl Table {
    /// The site whose certificate a handshake gets, by SNI name (see the module's rules).
    fn site(&self, name: Option<&str>, require_sni: bool) -> Option<&Site> {
        if let Some(name) = name {
            let matched = self
                .sites
                .iter()
                .find(|s| s.host_names.is_empty() || s.host_names.iter().any(|h| h.matches(name)));
            if matched.is_some() {
                return matched;
            }
        }
        if require_sni {
            return None;
        }
        self.sites.first()
    }
}

/// Where a site's certificate is read from on reload.
#[derive(Debug)]
struct SiteSource {
    listener: String,
    host_names: Box<[HostPattern]>,
    source: CertificateSource,
}

/// Each socket's TLS configuration, by socket index; `None` for HTTP sockets.
pub type SocketTls = Vec<Option<Arc<ServerTls>>>;

#[derive(Debug)]
struct SniResolver {
    table: ArcSwap<Table>,
    require_sni: bool,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // None (no match under `require_sni`): rustls answers with a handshake_failure alert.
        self.table
            .load()
            .site(hello.server_name(), self.require_sni)
            .map(|s| s.certificate.clone())
    }
}

/// A certificate that could not be reloaded: the listener keeps serving the one it had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("listener {listener:?}: {error}")]
pub struct ReloadError {
    pub listener: String,
    pub error: CertError,
}

/// The TLS configuration of one HTTPS socket.
pub struct ServerTls {
    acceptor: TlsAcceptor,
    resolver: Arc<SniResolver>,
    sites: Box<[SiteSource]>,
    /// The SSL profiles of the socket's listeners, each with a rustls configuration of its own
    /// (the client certificate verifier belongs to the configuration, so the handshake picks
    /// one by SNI before it goes on). Empty: no listener on the socket asks for client
    /// certificates, and handshakes take the plain path.
    profiles: Box<[ProfileTls]>,
    min_version: TlsVersion,
}

/// One SSL profile on a socket.
struct ProfileTls {
    name: Arc<str>,
    /// A listener using it, named when its files cannot be reloaded.
    listener: String,
    auth: ClientAuth,
    current: ArcSwap<ProfileConfig>,
}

struct ProfileConfig {
    config: Arc<ServerConfig>,
    verifier: Arc<ProfileVerifier>,
}

/// What the handshake of a connection established about its client.
#[derive(Debug, Default)]
pub struct Handshake {
    /// The SSL profile the handshake was made under.
    pub ssl_profile: Option<Arc<str>>,
    /// The client's certificate, when it presented one.
    pub client_certificate: Option<ClientCertificate>,
}

fn server_config(
    min_version: TlsVersion,
    resolver: Arc<SniResolver>,
    verifier: Option<Arc<ProfileVerifier>>,
) -> Result<ServerConfig, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(min_version.versions())?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // A session cache and ticket keys of its own per configuration: a session made without a
    // client certificate (or under another profile) never resumes under a profile.
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = Ticketer::new()?;
    Ok(config)
}

impl ProfileConfig {
    fn new(
        min_version: TlsVersion,
        resolver: Arc<SniResolver>,
        cas: &ClientCas,
        auth: &ClientAuth,
    ) -> Result<Self, rustls::Error> {
        let verifier = Arc::new(ProfileVerifier::new(cas, auth));
        Ok(Self {
            config: Arc::new(server_config(
                min_version,
                resolver,
                Some(verifier.clone()),
            )?),
            verifier,
        })
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("sites", &self.sites)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// `sites` in SNI evaluation order (the first is the fallback). ALPN offers HTTP/2 and
    /// HTTP/1.1; session resumption uses both a session cache and stateless tickets.
    pub fn new(
        sites: Vec<SiteCertificate>,
        min_version: TlsVersion,
        require_sni: bool,
    ) -> Result<Self, rustls::Error> {
        let resolver = Arc::new(SniResolver {
            table: ArcSwap::from_pointee(Table {
                sites: sites
                    .iter()
                    .map(|s| Site {
                        host_names: s.host_names.clone().into(),
                        certificate: s.certificate.clone(),
                        profile: None,
                    })
                    .collect(),
            }),
            require_sni,
        });
        let config = server_config(min_version, resolver.clone(), None)?;
        let mut profiles: Vec<ProfileTls> = Vec::new();
        let mut profile_of = Vec::with_capacity(sites.len());
        for site in &sites {
            let Some((name, auth)) = &site.client_auth else {
                profile_of.push(None);
                continue;
            };
            if let Some(i) = profiles.iter().position(|p| &*p.name == name) {
                profile_of.push(Some(i));
                continue;
            }
            profile_of.push(Some(profiles.len()));
            profiles.push(ProfileTls {
                name: name.as_str().into(),
                listener: site.listener.clone(),
                current: ArcSwap::from_pointee(ProfileConfig::new(
                    min_version,
                    resolver.clone(),
                    &auth.cas,
                    auth,
                )?),
                auth: auth.clone(),
            });
        }
        resolver.table.store(Arc::new(Table {
            sites: sites
                .iter()
                .zip(&profile_of)
                .map(|(s, p)| Site {
                    host_names: s.host_names.clone().into(),
                    certificate: s.certificate.clone(),
                    profile: *p,
                })
                .collect(),
        }));
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            profiles: profiles.into(),
            min_version,
            sites: sites
                .into_iter()
                .map(|s| SiteSource {
                    listener: s.listener,
                    host_names: s.host_names.into(),
                    source: s.source,
                })
                .collect(),
        })
    }

    /// Completes a client's handshake. Without SSL profiles on the socket this is rustls's
    /// acceptor; with them, the ClientHello is read first and its SNI name picks the site, whose
    /// profile (or none) gives the configuration the handshake goes on with.
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<(TlsStream<TcpStream>, Handshake)> {
        if self.profiles.is_empty() {
            let stream = self.acceptor.accept(stream).await?;
            return Ok((stream, Handshake::default()));
        }
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let profile = self
            .resolver
            .table
            .load()
            .site(
                start.client_hello().server_name(),
                self.resolver.require_sni,
            )
            .and_then(|s| s.profile);
        let Some(index) = profile else {
            let stream = start.into_stream(self.acceptor.config().clone()).await?;
            return Ok((stream, Handshake::default()));
        };
        let profile = &self.profiles[index];
        let current = profile.current.load_full();
        let stream = start.into_stream(current.config.clone()).await?;
        let client_certificate = client_certificate(stream.get_ref().1, &current.verifier);
        Ok((
            stream,
            Handshake {
                ssl_profile: Some(profile.name.clone()),
                client_certificate,
            },
        ))
    }

    /// The certificate files of this socket, for change detection: the listeners'
    /// certificates, and their profiles' client CA chains and revocation lists.
    pub fn files(&self) -> impl Iterator<Item = &std::path::Path> {
        self.sites
            .iter()
            .flat_map(|s| s.source.files())
            .chain(self.profiles.iter().flat_map(|p| p.auth.cas.all_files()))
    }

    /// Reads every certificate again and swaps the table. Handshakes in progress and
    /// established connections keep what they have; new handshakes see the new certificates.
    /// A certificate that fails to load is reported and its listener keeps the previous one.
    pub fn reload(&self) -> Vec<ReloadError> {
        let current = self.resolver.table.load_full();
        let mut errors = Vec::new();
        let sites = self
            .sites
            .iter()
            .zip(current.sites.iter())
            .map(|(site, old)| Site {
                host_names: site.host_names.clone(),
                profile: old.profile,
                certificate: match site.source.load() {
                    Ok(cert) => Arc::new(cert),
                    Err(error) => {
                        errors.push(ReloadError {
                            listener: site.listener.clone(),
                            error,
                        });
                        old.certificate.clone()
                    }
                },
            })
            .collect();
        self.resolver.table.store(Arc::new(Table { sites }));
        // A profile's new chains or lists apply to new handshakes; sessions made under the old
        // ones are not resumed (the new configuration has new session keys).
        for profile in self.profiles.iter() {
            let files = &profile.auth.cas;
            let reloaded = ClientCas::load(&files.files, &files.revocation_lists).and_then(|cas| {
                ProfileConfig::new(self.min_version, self.resolver.clone(), &cas, &profile.auth)
                    .map_err(|e| CertError::Verifier {
                        files: profile.name.to_string(),
                        reason: e.to_string(),
                    })
            });
            match reloaded {
                Ok(config) => profile.current.store(Arc::new(config)),
                Err(error) => errors.push(ReloadError {
                    listener: profile.listener.clone(),
                    error,
                }),
            }
        }
        errors
    }
}

/// The client certificate of a completed handshake, with its verdict: in strict mode the
/// handshake only completes with a valid certificate; in passthrough mode it is checked now.
fn client_certificate(
    conn: &ServerConnection,
    verifier: &ProfileVerifier,
) -> Option<ClientCertificate> {
    let (end_entity, intermediates) = conn.peer_certificates()?.split_first()?;
    let verdict = match verifier.mode() {
        ClientAuthMode::Strict => Ok(()),
        ClientAuthMode::Passthrough => verifier.check(end_entity, intermediates, UnixTime::now()),
    };
    Some(ClientCertificate::new(end_entity, verdict))
}

/// Modification stamps of a set of files, to notice when certificates change on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamps(Vec<Option<FileStamp>>);

/// What identifies a version of a file: the file itself (device and inode, after following
/// symbolic links), its modification time and its length. The identity catches a file replaced
/// by another one, as a Kubernetes volume (ConfigMap, Secret) swaps its `..data` link to a new
/// directory, even when time and length are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    modified: SystemTime,
    len: u64,
}

impl FileStamps {
    pub fn read<'a>(files: impl IntoIterator<Item = &'a std::path::Path>) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self(
            files
                .into_iter()
                .map(|f| {
                    let m = std::fs::metadata(f).ok()?;
                    Some(FileStamp {
                        device: m.dev(),
                        inode: m.ino(),
                        modified: m.modified().ok()?,
                        len: m.len(),
                    })
                })
                .collect(),
        )
    }
}

/// How often certificate files are checked for changes on disk.
pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The certificates of every HTTPS socket of a running gateway: reloaded on demand (SIGHUP,
/// [`crate::Gateway::reload_certificates`]) and when their files change on disk.
#[derive(Debug, Default)]
pub struct Certificates {
    sockets: Vec<Arc<ServerTls>>,
}

impl Certificates {
    /// The TLS configuration of each socket (`None` for HTTP sockets), given as the
    /// listeners of `config` that share its socket.
    pub fn build<'a>(
        config: &crate::config::Config,
        sockets: impl ExactSizeIterator<Item = &'a [crate::config::ListenerId]>,
    ) -> Result<(Self, SocketTls), crate::Error> {
        let mut all = Vec::new();
        let mut per_socket = Vec::with_capacity(sockets.len());
        for listeners in sockets {
            let mut listeners: Vec<_> = listeners
                .iter()
                .filter_map(|id| Some((*id, config.listener(*id).tls.as_ref()?)))
                .collect();
            let Some(&(first, first_tls)) = listeners.first() else {
                per_socket.push(None);
                continue;
            };
            // The order in which Application Gateway evaluates the port's listeners: multi-site
            // before basic, then by rule priority, then as written. The first is the fallback.
            listeners.sort_by_key(|(id, _)| {
                let rule = config
                    .rules
                    .iter()
                    .enumerate()
                    .find(|(_, r)| r.listener == *id);
                (
                    !config.listener(*id).is_multi_site(),
                    rule.and_then(|(_, r)| r.priority).unwrap_or(u32::MAX),
                    rule.map_or(usize::MAX, |(i, _)| i),
                    id.0,
                )
            });
            let sites = listeners
                .iter()
                .map(|(id, tls)| SiteCertificate {
                    listener: config.listener(*id).name.clone(),
                    host_names: config.listener(*id).host_names.clone(),
                    source: tls.source.clone(),
                    certificate: tls.certificate.clone(),
                    client_auth: tls.ssl_profile.map(|p| {
                        let profile = config.ssl_profile(p);
                        (profile.name.clone(), profile.client_auth.clone())
                    }),
                })
                .collect();
            let tls = ServerTls::new(sites, first_tls.min_version, first_tls.require_sni).map_err(
                |source| crate::Error::Tls {
                    listener: config.listener(first).name.clone(),
                    source,
                },
            )?;
            let tls = Arc::new(tls);
            all.push(tls.clone());
            per_socket.push(Some(tls));
        }
        Ok((Self { sockets: all }, per_socket))
    }

    /// Reads every certificate again; see [`ServerTls::reload`].
    pub fn reload(&self) -> Vec<ReloadError> {
        let errors: Vec<ReloadError> = self.sockets.iter().flat_map(|f| f.reload()).collect();
        for e in &errors {
            tracing::error!(error = %e, "certificate not reloaded; the listener keeps its previous one");
        }
        tracing::info!(
            sockets = self.sockets.len(),
            failed = errors.len(),
            "certificates reloaded"
        );
        errors
    }

    fn stamps(&self) -> FileStamps {
        FileStamps::read(self.sockets.iter().flat_map(|f| f.files()))
    }

    /// Reloads whenever a certificate file changes, until `stop` completes.
    pub fn watch(
        self: Arc<Self>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.sockets.is_empty() {
            return None;
        }
        Some(tokio::spawn(async move {
            tokio::pin!(stop);
            let mut seen = self.stamps();
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tick.tick() => {}
                }
                let now = self.stamps();
                if now != seen {
                    seen = now;
                    tracing::info!("certificate files changed on disk");
                    self.reload();
                }
            }
        }))
    }
}

/// The admin listener's TLS: its one certificate, HTTP/1.1 only (the admin API speaks nothing
/// else, so a client offering h2 must not be told otherwise), TLS 1.2 and 1.3.
pub fn admin_acceptor(certificate: Arc<CertifiedKey>) -> Result<TlsAcceptor, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(TlsVersion::Tls12.versions())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certificate)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
