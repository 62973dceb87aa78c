//! Certificates and keys from disk: a PEM chain with its PEM key, or a PKCS#12 (.pfx) bundle as
//! Application Gateway configurations carry them, and the PEM roots backend settings trust.
//! Validation reads them, so a bad file is a configuration error naming the field; loading checks
//! what would otherwise fail at the first handshake: the key must match the certificate, and the
//! certificate must not have expired. Every error names the file.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use rustls::sign::CertifiedKey;
use x509_cert::der::Decode;

/// The one crypto provider every TLS configuration of the gateway uses (ring; `crate::tls` says
/// why). Keys are loaded with it here, so a key it cannot use is refused at validation.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Where an HTTPS listener's certificate comes from. Paths are absolute (resolved against the
/// configuration file's folder), so a reload reads the same files whatever the working directory.
#[derive(Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// A PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or SEC1).
    Pem { chain: PathBuf, key: PathBuf },
    /// A PKCS#12 bundle holding the key and its chain.
    Pkcs12 { path: PathBuf, password: String },
}

impl fmt::Debug for CertificateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateSource::Pem { chain, key } => f
                .debug_struct("Pem")
                .field("chain", chain)
                .field("key", key)
                .finish(),
            // The password stays out of logs.
            CertificateSource::Pkcs12 { path, .. } => {
                f.debug_struct("Pkcs12").field("path", path).finish()
            }
        }
    }
}

impl CertificateSource {
    /// The files this source reads.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            CertificateSource::Pem { chain, key } => vec![chain, key],
            CertificateSource::Pkcs12 { path, .. } => vec![path],
        }
    }

    /// Reads and checks the certificate chain and key.
    pub fn load(&self) -> Result<CertifiedKey, CertError> {
        let (chain, private, cert_file, key_file) = match self {
            CertificateSource::Pem { chain, key } => {
                let chain_pem = read(chain)?;
                let certs = CertificateDer::pem_slice_iter(&chain_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| CertError::Pem {
                        file: shown(chain),
                        reason: e.to_string(),
                    })?;
                if certs.is_empty() {
                    return Err(CertError::NoCertificate { file: shown(chain) });
                }
                let key_pem = read(key)?;
                let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
                    rustls::pki_types::pem::Error::NoItemsFound => {
                        CertError::NoKey { file: shown(key) }
                    }
                    e => CertError::Pem {
                        file: shown(key),
                        reason: e.to_string(),
                    },
                })?;
                (certs, private, chain.as_path(), key.as_path())
            }
            CertificateSource::Pkcs12 { path, password } => {
                let data = read(path)?;
                let store = p12_keystore::KeyStore::from_pkcs12(
                    &data,
                    password,
                    p12_keystore::Pkcs12ImportPolicy::Strict,
                )
                .map_err(|e| CertError::Pkcs12 {
                    file: shown(path),
                    reason: e.to_string(),
                })?;
                let Some((_, entry)) = store.private_key_chain() else {
                    return Err(CertError::NoKey { file: shown(path) });
                };
                let certs: Vec<CertificateDer<'static>> = entry
                    .certs()
                    .iter()
                    .map(|c| CertificateDer::from(c.as_der().to_vec()))
                    .collect();
                if certs.is_empty() {
                    return Err(CertError::NoCertificate { file: shown(path) });
                }
                let private =
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(entry.key().as_der().to_vec()));
                (certs, private, path.as_path(), path.as_path())
            }
        };
        check_not_expired(&chain[0], cert_file)?;
        let provider = provider();
        let signing_key = provider
            .key_provider
            .load_private_key(private)
            .map_err(|e| CertError::BadKey {
                file: shown(key_file),
                reason: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(CertError::KeyMismatch {
                    key: shown(key_file),
                    cert: shown(cert_file),
                })
            }
            Err(e) => Err(CertError::BadCertificate {
                file: shown(cert_file),
                reason: e.to_string(),
            }),
        }
    }
}

/// The settings' `trusted_root_certificates`: the files and the certificates read from them.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedRoots {
    pub files: Vec<PathBuf>,
    pub certificates: Vec<CertificateDer<'static>>,
    fingerprint: u64,
}

impl fmt::Debug for TrustedRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedRoots")
            .field("files", &self.files)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

impl TrustedRoots {
    pub fn load(files: Vec<PathBuf>) -> Result<Self, CertError> {
        let certificates = load_roots(&files)?;
        let mut h = std::hash::DefaultHasher::new();
        certificates.hash(&mut h);
        Ok(Self {
            files,
            certificates,
            fingerprint: h.finish(),
        })
    }

    /// Identifies the set of roots: upstream connections verified against different roots
    /// must not share a pool.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// An SSL profile's trusted client CA chains and revocation lists, read from their files, with
/// rustls's verifier built from them (so a bad file or list is refused at validation).
#[derive(Clone)]
pub struct ClientCas {
    pub files: Vec<PathBuf>,
    pub revocation_lists: Vec<PathBuf>,
    /// Every certificate of every chain: the trust anchors.
    pub certificates: Vec<CertificateDer<'static>>,
    /// Per chain file, the DER subject of its issuing CA (the certificate deepest in the
    /// chain), for `verify_client_cert_issuer_dn`.
    pub issuers: Vec<Vec<u8>>,
    /// Chain and revocation checks of client certificates against the roots above.
    pub verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl fmt::Debug for ClientCas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCas")
            .field("files", &self.files)
            .field("revocation_lists", &self.revocation_lists)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

/// Largest trusted client CA file, as Application Gateway limits them (25 KB).
pub const MAX_CLIENT_CA_FILE_BYTES: u64 = 25 * 1024;

impl ClientCas {
    /// Reads the chains and the lists. The revocation status is checked for the client's own
    /// certificate; a certificate whose issuer has no list given is not refused for it.
    pub fn load(files: &[PathBuf], revocation_lists: &[PathBuf]) -> Result<Self, CertError> {
        let mut certificates = Vec::new();
        let mut issuers = Vec::with_capacity(files.len());
        let mut roots = rustls::RootCertStore::empty();
        for file in files {
            let pem = read(file)?;
            if pem.len() as u64 > MAX_CLIENT_CA_FILE_BYTES {
                return Err(CertError::TooLarge {
                    file: shown(file),
                    limit: MAX_CLIENT_CA_FILE_BYTES,
                });
            }
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CertError::Pem {
                    file: shown(file),
                    reason: e.to_string(),
                })?;
            if chain.is_empty() {
                return Err(CertError::NoCertificate { file: shown(file) });
            }
            issuers.push(issuing_subject(&chain, file)?);
            for cert in &chain {
                roots
                    .add(cert.clone())
                    .map_err(|e| CertError::BadCertificate {
                        file: shown(file),
                        reason: e.to_string(),
                    })?;
            }
            certificates.extend(chain);
        }
        let mut crls = Vec::with_capacity(revocation_lists.len());
        for file in revocation_lists {
            let data = read(file)?;
            let parsed: Vec<CertificateRevocationListDer<'static>> =
                if data.starts_with(b"-----BEGIN") {
                    CertificateRevocationListDer::pem_slice_iter(&data)
                        .collect::<Result<_, _>>()
                        .map_err(|e| CertError::Pem {
                            file: shown(file),
                            reason: e.to_string(),
                        })?
                } else {
                    vec![CertificateRevocationListDer::from(data)]
                };
            // Built alone first, so that a list rustls cannot read is named by its file.
            verifier(&roots, parsed.clone())
                .map_err(|_| CertError::BadRevocationList { file: shown(file) })?;
            crls.extend(parsed);
        }
        let verifier = verifier(&roots, crls).map_err(|e| CertError::Verifier {
            files: files
                .iter()
                .map(|f| shown(f))
                .collect::<Vec<_>>()
                .join(", "),
            reason: e.to_string(),
        })?;
        Ok(Self {
            files: files.to_vec(),
            revocation_lists: revocation_lists.to_vec(),
            certificates,
            issuers,
            verifier,
        })
    }

    /// The files to watch for changes.
    pub fn all_files(&self) -> impl Iterator<Item = &Path> {
        self.files
            .iter()
            .chain(&self.revocation_lists)
            .map(PathBuf::as_path)
    }
}

/// rustls's WebPKI client verifier for `roots` and `crls`. Revocation is checked for the
/// client's own certificate; one whose issuer has no list given is not refused for it.
fn verifier(
    roots: &rustls::RootCertStore,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, rustls::server::VerifierBuilderError>
{
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
}

/// The DER subject of a chain's issuing CA: the certificate furthest from a root by the
/// issuer links within the file, the first of equals (Application Gateway's rule for
/// "verify client certificate issuer's DN", scenarios 1 to 5).
fn issuing_subject(chain: &[CertificateDer<'_>], file: &Path) -> Result<Vec<u8>, CertError> {
    use x509_cert::der::Encode;
    let names = chain
        .iter()
        .map(|der| {
            let cert =
                x509_cert::Certificate::from_der(der).map_err(|e| CertError::BadCertificate {
                    file: shown(file),
                    reason: e.to_string(),
                })?;
            let tbs = cert.tbs_certificate();
            let der = |n: &x509_cert::name::Name| n.to_der().unwrap_or_default();
            Ok((der(tbs.subject()), der(tbs.issuer())))
        })
        .collect::<Result<Vec<_>, CertError>>()?;
    let depth = |start: usize| {
        let mut depth = 0;
        let mut at = start;
        // Bounded by the chain's length, so a loop of issuers ends too.
        while depth < names.len() {
            let (subject, issuer) = &names[at];
            if subject == issuer {
                break;
            }
            match names.iter().position(|(s, _)| s == issuer) {
                Some(parent) => {
                    at = parent;
                    depth += 1;
                }
                None => break,
            }
        }
        depth
    };
    let mut best = 0;
    for i in 1..names.len() {
        if depth(i) > depth(best) {
            best = i;
        }
    }
    Ok(names[best].0.clone())
}

/// Reads PEM root certificates (every certificate in every file) for backend verification.
fn load_roots(files: &[PathBuf]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut roots = Vec::new();
    for file in files {
        let pem = read(file)?;
        let before = roots.len();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.push(cert.map_err(|e| CertError::Pem {
                file: shown(file),
                reason: e.to_string(),
            })?);
        }
        if roots.len() == before {
            return Err(CertError::NoCertificate { file: shown(file) });
        }
    }
    Ok(roots)
}

/// Why a certificate could not be loaded. Files are shown as given to the loader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {file}: {reason}")]
    Read { file: String, reason: String },
    #[error("{file} is not valid PEM: {reason}")]
    Pem { file: String, reason: String },
    #[error("{file} holds no certificate")]
    NoCertificate { file: String },
    #[error("{file} holds no private key")]
    NoKey { file: String },
    #[error("the private key in {file} cannot be used: {reason}")]
    BadKey { file: String, reason: String },
    #[error("{file} cannot be opened as PKCS#12 (wrong password or not a .pfx file): {reason}")]
    Pkcs12 { file: String, reason: String },
    #[error("the certificate in {file} is not valid X.509: {reason}")]
    BadCertificate { file: String, reason: String },
    #[error("the key in {key} does not match the certificate in {cert}")]
    KeyMismatch { key: String, cert: String },
    #[error("the certificate in {file} expired on {expired}")]
    Expired { file: String, expired: String },
    #[error("{file} is larger than {limit} bytes")]
    TooLarge { file: String, limit: u64 },
    #[error("{file} is not a certificate revocation list rustls can read")]
    BadRevocationList { file: String },
    #[error("cannot verify client certificates with {files}: {reason}")]
    Verifier { files: String, reason: String },
}

fn shown(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| CertError::Read {
        file: shown(path),
        reason: e.to_string(),
    })
}

/// A certificate past its notAfter would fail every handshake; refuse it up front.
fn check_not_expired(leaf: &CertificateDer<'_>, file: &Path) -> Result<(), CertError> {
    let cert = x509_cert::Certificate::from_der(leaf).map_err(|e| CertError::BadCertificate {
        file: shown(file),
        reason: e.to_string(),
    })?;
    let not_after = cert.tbs_certificate().validity().not_after;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    if not_after.to_unix_duration() < now {
        return Err(CertError::Expired {
            file: shown(file),
            expired: not_after.to_date_time().to_string(),
        });
    }
    Ok(())
}
