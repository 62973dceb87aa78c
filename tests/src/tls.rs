//! TLS for the end-to-end tests: a certificate authority generated at test time (rcgen), files
//! written to a temporary folder, rustls clients (HTTP/1.1 and HTTP/2 by ALPN), and an HTTPS
//! backend that reports the SNI name and Host it received.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::client::Reply;
use crate::within;

/// The crypto provider of the test clients and backends (the gateway's own: ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority and a temporary folder for the files it issues. The folder is
/// removed when the value drops.
pub struct Pki {
    pub dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// An issued certificate and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

impl Pki {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "wasmgate-tls-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the test certificate folder");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        Pki { dir, ca }
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// Writes the CA certificate as PEM and returns its path.
    pub fn write_ca(&self, file: &str) -> PathBuf {
        self.write(file, &self.ca_pem())
    }

    /// A certificate for `names` (DNS names or IP addresses), valid now.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        self.issue_with(names, |_| {})
    }

    /// A certificate for `names` that expired in 2021.
    pub fn issue_expired(&self, names: &[&str]) -> Leaf {
        self.issue_with(names, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn issue_with(&self, names: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        adjust(&mut params);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Writes `contents` to `file` in the folder (replacing it) and returns the path.
    pub fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.path(file);
        crate::write_changed(&path, contents);
        path
    }

    /// Writes `leaf` as `<stem>.pem` (chain: leaf then CA) and `<stem>.key`.
    pub fn write_leaf(&self, stem: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        let chain = format!("{}{}", leaf.cert_pem, self.ca_pem());
        (
            self.write(&format!("{stem}.pem"), &chain),
            self.write(&format!("{stem}.key"), &leaf.key_pem),
        )
    }

    /// Writes `leaf`, its key and the CA as a PKCS#12 bundle `<stem>.pfx`.
    pub fn write_pfx(&self, stem: &str, leaf: &Leaf, password: &str) -> PathBuf {
        let key = p12_keystore::PrivateKey::from_der(&leaf.key_der).expect("PKCS#8 key");
        let certs = [leaf.der.as_ref(), self.ca.der().as_ref()]
            .into_iter()
            .map(|d| p12_keystore::Certificate::from_der(d).expect("certificate"));
        let chain = p12_keystore::PrivateKeyChain::new(
            p12_keystore::LocalKeyId(vec![1, 2, 3, 4]),
            key,
            certs,
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry(stem, p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let data = store.writer(password).write().expect("write PKCS#12");
        let path = self.path(&format!("{stem}.pfx"));
        std::fs::write(&path, data).expect("write the .pfx");
        path
    }

    /// A server configuration presenting `leaf` (for HTTPS backends).
    pub fn server_config(&self, leaf: &Leaf) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der.clone(), self.ca_der()], key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client trusting `roots`, offering `alpn` (e.g. `["h2", "http/1.1"]`).
pub fn client_config(roots: &[CertificateDer<'static>], alpn: &[&str]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("root certificate");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` with `sni` as the server name (an IP address sends no SNI).
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let tcp = within("connect", TcpStream::connect(addr)).await?;
    within(
        "TLS handshake",
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
}

/// The end-entity certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the server presented a certificate")
        .clone()
        .into_owned()
}

/// The ALPN protocol agreed on.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<String> {
    stream
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

/// Sends `req` over an established TLS connection with HTTP/2 or HTTP/1.1, as ALPN decided.
/// HTTP/2 takes the authority from the request's URI (`https://host/path`).
pub async fn send_over(stream: TlsStream<TcpStream>, req: Request<String>) -> Reply {
    let local_addr = stream.get_ref().0.local_addr().expect("local_addr");
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = req.map(|b| Full::new(Bytes::from(b)));
    let res = if h2 {
        let (mut sender, conn) = within(
            "HTTP/2 handshake",
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
        )
        .await
        .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        within("HTTP/2 request", sender.send_request(req))
            .await
            .expect("HTTP/2 response")
    } else {
        let (mut sender, conn) = within(
            "HTTP/1.1 handshake",
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        within("HTTP/1.1 request", sender.send_request(req))
            .await
            .expect("HTTP/1.1 response")
    };
    let (parts, body) = res.into_parts();
    let body = within("response body", body.collect())
        .await
        .expect("response body")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
        local_addr,
    }
}

/// GET `https://host/path` through a fresh TLS connection with SNI `sni`.
pub async fn https_get(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
    host: &str,
    path: &str,
) -> Reply {
    let stream = tls_connect(addr, sni, config)
        .await
        .expect("TLS handshake with the gateway");
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = if h2 {
        Request::get(format!("https://{host}{path}"))
    } else {
        Request::get(path).header("host", host)
    };
    send_over(stream, req.body(String::new()).expect("request")).await
}

/// What an [`HttpsBackend`] saw of one request.
#[derive(Debug, Clone)]
pub struct SeenTls {
    pub sni: Option<String>,
    pub host: Option<String>,
}

/// An HTTPS (HTTP/1.1) backend on 127.0.0.1 presenting a given certificate. It answers 200 with
/// `x-backend` (its name), `x-seen-sni` and `x-seen-host`.
pub struct HttpsBackend {
    pub name: String,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenTls>>>,
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpsBackend {
    pub async fn start(name: &str, config: Arc<ServerConfig>) -> HttpsBackend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind HTTPS backend");
        let addr = listener.local_addr().expect("local_addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let acceptor = TlsAcceptor::from(config);
        let task = {
            let seen = seen.clone();
            let handshakes = handshakes.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let seen = seen.clone();
                    let handshakes = handshakes.clone();
                    let name = name.clone();
                    tokio::spawn(async move {
                        // A failed handshake is what some tests provoke.
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        handshakes.fetch_add(1, Ordering::Relaxed);
                        let sni = tls.get_ref().1.server_name().map(str::to_string);
                        let service = service_fn(move |req: Request<Incoming>| {
                            let host = req
                                .headers()
                                .get("host")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            seen.lock().expect("seen").push(SeenTls {
                                sni: sni.clone(),
                                host: host.clone(),
                            });
                            let res = Response::builder()
                                .header("x-backend", name.as_str())
                                .header("x-seen-sni", sni.clone().unwrap_or_default())
                                .header("x-seen-host", host.unwrap_or_default())
                                .body(Full::new(Bytes::from_static(b"secure hello\n")))
                                .expect("response");
                            async move { Ok::<_, Infallible>(res) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            })
        };
        HttpsBackend {
            name: name.to_string(),
            addr,
            seen,
            handshakes,
            task,
        }
    }

    pub fn requests(&self) -> Vec<SeenTls> {
        self.seen.lock().expect("seen").clone()
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Relaxed)
    }
}

impl Drop for HttpsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `path` as a TOML string.
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}
