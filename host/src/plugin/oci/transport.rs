//! The HTTP side of the registry client: one HTTP/1.1 exchange per connection (a pull is two or
//! three requests), TLS with the gateway's rustls client configuration (ring, the system's
//! roots), redirects followed for blobs, and Docker's authentication flow: on a 401, a `Basic`
//! challenge is answered with the configured credentials and a `Bearer` challenge with a token
//! from the challenge's realm (anonymous when no credentials are configured).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::OciError;
use crate::config::OciReference;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one exchange may take, body included (a Python component is 18 MB).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(300);
/// Redirects followed for one request (registries send blobs from storage elsewhere).
const MAX_REDIRECTS: usize = 5;

/// Where `WASMGATE_REGISTRY_USERNAME` / `_PASSWORD` are read from for every registry.
pub const USERNAME_ENV: &str = "WASMGATE_REGISTRY_USERNAME";
pub const PASSWORD_ENV: &str = "WASMGATE_REGISTRY_PASSWORD";

/// A user name and password for a registry's `Basic` challenge or its token service.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// [`USERNAME_ENV`] and [`PASSWORD_ENV`], when both are set.
    pub fn from_env() -> Option<Credentials> {
        Some(Credentials {
            username: std::env::var(USERNAME_ENV).ok()?,
            password: std::env::var(PASSWORD_ENV).ok()?,
        })
    }

    fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// An answer, its body read whole.
pub(super) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A session with one registry for one repository.
pub(super) struct Session {
    base: String,
    registry: String,
    repository: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value that worked (a bearer token, or basic credentials).
    authorization: Mutex<Option<HeaderValue>>,
}

impl Session {
    pub(super) fn new(reference: &OciReference, credentials: Option<Credentials>) -> Arc<Self> {
        let scheme = if reference.plain_http() {
            "http"
        } else {
            "https"
        };
        Arc::new(Session {
            base: format!("{scheme}://{}", reference.registry),
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            credentials,
            authorization: Mutex::new(None),
        })
    }

    /// `/v2/{repository}/{rest}` on the registry, as a URL.
    pub(super) fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.repository)
    }

    /// A URL the registry gave (`Location`), made absolute against the registry.
    pub(super) fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }

    /// Sends a request, answering one authentication challenge and following redirects;
    /// reads at most `limit` bytes of the answer's body.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
        limit: usize,
    ) -> Result<Answer, OciError> {
        let mut url = url.to_owned();
        let mut challenged = false;
        for _ in 0..=MAX_REDIRECTS {
            let uri: Uri = url
                .parse()
                .map_err(|_| OciError::Protocol(format!("the registry sent a bad URL {url:?}")))?;
            // Credentials go to the registry only, never to where it redirects.
            let own = uri.authority().map(|a| a.as_str()) == Some(self.registry.as_str());
            let authorization = if own {
                self.authorization
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            } else {
                None
            };
            let mut request = Request::builder().method(method.clone()).uri(uri.clone());
            for (name, value) in headers {
                request = request.header(name, *value);
            }
            if let Some(a) = authorization {
                request = request.header(header::AUTHORIZATION, a);
            }
            let request = request
                .body(Full::new(body.clone()))
                .map_err(|e| OciError::Protocol(e.to_string()))?;
            let answer = exchange(&self.registry, &uri, request, limit).await?;
            if own && answer.status == StatusCode::UNAUTHORIZED && challenged {
                return Err(OciError::Denied {
                    registry: self.registry.clone(),
                    reason: match &self.credentials {
                        Some(c) => format!("it refused the credentials of user {:?}", c.username),
                        None => {
                            format!("it wants credentials: set {USERNAME_ENV} and {PASSWORD_ENV}")
                        }
                    },
                });
            }
            if own && answer.status == StatusCode::FORBIDDEN {
                return Err(OciError::Denied {
                    registry: self.registry.clone(),
                    reason: "403 Forbidden".into(),
                });
            }
            if answer.status == StatusCode::UNAUTHORIZED && own && !challenged {
                challenged = true;
                self.authenticate(&answer.headers).await?;
                continue;
            }
            if answer.status.is_redirection()
                && let Some(location) = answer
                    .headers
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
            {
                url = self.resolve(location);
                continue;
            }
            return Ok(answer);
        }
        Err(OciError::Protocol(format!(
            "more than {MAX_REDIRECTS} redirects from {}",
            self.registry
        )))
    }

    /// Answers a `WWW-Authenticate` challenge: remembers the `Authorization` to send.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<(), OciError> {
        let challenge = headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let value = if scheme.eq_ignore_ascii_case("basic") {
            let credentials = self.credentials.as_ref().ok_or_else(|| OciError::Denied {
                registry: self.registry.clone(),
                reason: format!(
                    "it asks for a user name and password: set {USERNAME_ENV} and {PASSWORD_ENV}"
                ),
            })?;
            credentials.basic()
        } else if scheme.eq_ignore_ascii_case("bearer") {
            format!("Bearer {}", self.token(params).await?)
        } else {
            return Err(OciError::Denied {
                registry: self.registry.clone(),
                reason: format!("unsupported authentication challenge {challenge:?}"),
            });
        };
        let value = HeaderValue::from_str(&value)
            .map_err(|_| OciError::Protocol("the token is not a valid header value".into()))?;
        *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        Ok(())
    }

    /// Docker's token flow: `GET {realm}?service=…&scope=…`, with basic credentials when
    /// configured, answers `{"token": …}` (or `access_token`).
    async fn token(&self, params: &str) -> Result<String, OciError> {
        let params = challenge_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let realm = get("realm").ok_or_else(|| {
            OciError::Protocol(format!(
                "{}: a Bearer challenge without a realm",
                self.registry
            ))
        })?;
        let mut url = realm.to_owned();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for key in ["service", "scope"] {
            if let Some(v) = get(key) {
                url.push(sep);
                url.push_str(key);
                url.push('=');
                url.push_str(&percent_encode(v));
                sep = '&';
            }
        }
        let uri: Uri = url.parse().map_err(|_| {
            OciError::Protocol(format!("{}: a bad token realm {realm:?}", self.registry))
        })?;
        let mut request = Request::builder().uri(uri.clone());
        if let Some(c) = &self.credentials {
            request = request.header(header::AUTHORIZATION, c.basic());
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| OciError::Protocol(e.to_string()))?;
        let answer = exchange(&self.registry, &uri, request, 1 << 20).await?;
        if !answer.status.is_success() {
            return Err(OciError::Denied {
                registry: self.registry.clone(),
                reason: format!("its token service answered {}", answer.status),
            });
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&answer.body).map_err(|e| {
            OciError::Protocol(format!(
                "{}: the token service's answer: {e}",
                self.registry
            ))
        })?;
        token.token.or(token.access_token).ok_or_else(|| {
            OciError::Protocol(format!(
                "{}: the token service gave no token",
                self.registry
            ))
        })
    }
}

/// Encodes everything but RFC 3986 §2.3's unreserved characters, for a query value.
fn percent_encode(s: &str) -> String {
    use std::fmt::Write as _;
    s.bytes()
        .fold(String::with_capacity(s.len()), |mut out, b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
            out
        })
}

/// `realm="https://auth",service="registry",scope="repository:a:pull"` → pairs.
fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, a)) => (v, a),
                None => (quoted, ""),
            }
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        out.push((key, value.to_owned()));
        rest = after.trim_start_matches(',').trim();
    }
    out
}

/// One exchange on a new connection to `uri`'s authority.
async fn exchange(
    registry: &str,
    uri: &Uri,
    request: Request<Full<Bytes>>,
    limit: usize,
) -> Result<Answer, OciError> {
    let unreachable = |reason: String| OciError::Unreachable {
        registry: registry.to_owned(),
        reason,
    };
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let tls = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let work = async {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if tls {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| unreachable(format!("{host:?} is not a TLS server name")))?;
            let connector =
                tokio_rustls::TlsConnector::from(crate::tls::client::client_config(None));
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| unreachable(format!("TLS: {e}")))?;
            http1(stream, request, limit, &unreachable).await
        } else {
            http1(tcp, request, limit, &unreachable).await
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, work)
        .await
        .map_err(|_| unreachable(format!("no complete answer within {EXCHANGE_TIMEOUT:?}")))?
}

async fn http1<S>(
    io: S,
    mut request: Request<Full<Bytes>>,
    limit: usize,
    unreachable: &(dyn Fn(String) -> OciError + Sync),
) -> Result<Answer, OciError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A HEAD answer's Content-Length is the resource's, not a body's.
    let head = request.method() == Method::HEAD;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // HTTP/1.1 wants Host; the URI's path goes on the request line.
    if let Some(authority) = request.uri().authority().cloned() {
        let value = HeaderValue::from_str(authority.as_str())
            .map_err(|_| OciError::Protocol(format!("bad authority {authority}")))?;
        request.headers_mut().insert(header::HOST, value);
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<Uri>()
        .map_err(|e| OciError::Protocol(e.to_string()))?;
    *request.uri_mut() = path;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (parts, body) = response.into_parts();
    if !head
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > limit as u64)
    {
        return Err(OciError::TooLarge { limit });
    }
    let body = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                OciError::TooLarge { limit }
            } else {
                unreachable(format!("reading the answer: {e}"))
            }
        })?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_bearer_challenge() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
    }
}
