//! The client side of the admin API, for `wasmgate health`, `wasmgate reload` and
//! `wasmgate plugin`: plain HTTP to a loopback admin listener, HTTPS to one with a certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmgate::admin::{BACKEND_HEALTH_PATH, BackendHealth, RELOAD_PATH};
use wasmgate::config::TrustedRoots;

/// How long `wasmgate health` waits for the admin API.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not an admin URL; expected http://HOST:PORT or https://HOST:PORT")]
    BadUrl(String),
    #[error("--cacert {file}: {reason}")]
    CaFile { file: String, reason: String },
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the admin API at {url} refused the token (401); pass the right one with --token")]
    Unauthorized { url: String },
    #[error("the admin API at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("the admin API at {url} answered something unexpected: {reason}")]
    BadBody { url: String, reason: String },
}

/// A running gateway's admin API: its URL, the token to present, and for `https://` the
/// certificates its certificate must chain to.
#[derive(Clone)]
pub struct AdminApi {
    url: String,
    token: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("AdminApi")
            .field("url", &self.url)
            .field("https", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl AdminApi {
    /// The admin API at `url` (`http://127.0.0.1:9190`, `https://gw.example:9190`). Over HTTPS
    /// the admin listener's certificate is verified, as curl does: against the CA certificates
    /// in the PEM file `cacert` when given (curl's `--cacert`), else against the system's.
    pub fn new(url: &str, token: Option<&str>, cacert: Option<&Path>) -> Result<Self, ClientError> {
        let base = url.trim_end_matches('/');
        let uri: Uri = base.parse().map_err(|_| ClientError::BadUrl(url.into()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(ClientError::BadUrl(url.into())),
        };
        if uri.authority().is_none() {
            return Err(ClientError::BadUrl(url.into()));
        }
        let tls = if https {
            let roots = cacert
                .map(|file| {
                    TrustedRoots::load(vec![file.to_path_buf()]).map_err(|e| ClientError::CaFile {
                        file: file.display().to_string(),
                        reason: e.to_string(),
                    })
                })
                .transpose()?;
            Some(wasmgate::tls::client::client_config(roots.as_ref()))
        } else {
            None
        };
        Ok(Self {
            url: base.to_string(),
            token: token.map(str::to_owned),
            tls,
        })
    }
}

/// Fetches the backend health view from the admin API.
pub async fn fetch(api: &AdminApi) -> Result<BackendHealth, ClientError> {
    let (url, body) = call(api, Method::GET, BACKEND_HEALTH_PATH, Bytes::new()).await?;
    serde_json::from_slice(&body).map_err(|e| ClientError::BadBody {
        url,
        reason: e.to_string(),
    })
}

/// Asks the gateway to read its configuration file again and apply it; returns its report of
/// what changed (JSON), or the reason it refused (naming the field) as the error.
pub async fn reload(api: &AdminApi) -> Result<String, ClientError> {
    let (_, body) = call(api, Method::POST, RELOAD_PATH, Bytes::new()).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One request to the admin API; returns the URL and the body of a 2xx answer, and any other
/// answer as an error carrying the API's message.
pub async fn call(
    api: &AdminApi,
    method: Method,
    path_and_query: &str,
    body: Bytes,
) -> Result<(String, Bytes), ClientError> {
    call_within(TIMEOUT, api, method, path_and_query, body).await
}

/// [`call`] with its own bound on the whole exchange (a plugin upload waits for the component
/// to compile, which takes seconds for Python or JavaScript).
pub async fn call_within(
    limit: Duration,
    api: &AdminApi,
    method: Method,
    path_and_query: &str,
    body: Bytes,
) -> Result<(String, Bytes), ClientError> {
    let uri: Uri = format!("{}{path_and_query}", api.url)
        .parse()
        .map_err(|_| ClientError::BadUrl(api.url.clone()))?;
    let Some(authority) = uri.authority().cloned() else {
        return Err(ClientError::BadUrl(api.url.clone()));
    };
    let url = uri.to_string();
    let unreachable = |reason: String| ClientError::Unreachable {
        url: url.clone(),
        reason,
    };
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut req = Request::builder()
        .method(method)
        .uri(target)
        .header(header::HOST, authority.as_str())
        .header(header::ACCEPT, "application/json");
    if let Some(t) = &api.token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(body))
        .map_err(|_| ClientError::BadUrl(api.url.clone()))?;
    let exchange = async {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority
            .port_u16()
            .unwrap_or(if api.tls.is_some() { 443 } else { 80 });
        let stream = TcpStream::connect((host, port)).await?;
        match &api.tls {
            None => send(stream, req).await,
            Some(config) => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| {
                        // Name the way out of the most likely failure.
                        if e.to_string().contains("certificate") {
                            std::io::Error::other(format!(
                                "{e}; trust the CA that signed the admin listener's certificate with --cacert FILE"
                            ))
                        } else {
                            e
                        }
                    })?;
                send(stream, req).await
            }
        }
    };
    let (status, body) = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", limit.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    match status {
        s if s.is_success() => Ok((url, body)),
        StatusCode::UNAUTHORIZED => Err(ClientError::Unauthorized { url }),
        status => {
            // The API's errors are `{"error": "..."}`; show the message itself.
            let text = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            Err(ClientError::Status {
                url,
                status,
                body: text,
            })
        }
    }
}

/// One HTTP/1.1 exchange over `io`: the status and the whole body.
async fn send(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    req: Request<Full<Bytes>>,
) -> std::io::Result<(StatusCode, Bytes)> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let res = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, body))
}
