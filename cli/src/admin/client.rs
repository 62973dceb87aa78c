//! The client side of the admin API, for `wasmgate health` and `wasmgate reload`.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wasmgate::admin::{BACKEND_HEALTH_PATH, BackendHealth, RELOAD_PATH};

/// How long `wasmgate health` waits for the admin API.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not an admin URL; expected http://HOST:PORT")]
    BadUrl(String),
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
    #[error("the admin API at {url} answered something that is not the health view: {reason}")]
    BadBody { url: String, reason: String },
}

/// Fetches the backend health view from the admin listener at `admin` (`http://127.0.0.1:9190`).
pub async fn fetch(admin: &str, token: Option<&str>) -> Result<BackendHealth, ClientError> {
    let (url, body) = call(admin, Method::GET, BACKEND_HEALTH_PATH, token, Bytes::new()).await?;
    serde_json::from_slice(&body).map_err(|e| ClientError::BadBody {
        url,
        reason: e.to_string(),
    })
}

/// Asks the gateway to read its configuration file again and apply it; returns its report of
/// what changed (JSON), or the reason it refused (naming the field) as the error.
pub async fn reload(admin: &str, token: Option<&str>) -> Result<String, ClientError> {
    let (_, body) = call(admin, Method::POST, RELOAD_PATH, token, Bytes::new()).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One request to the admin API at `admin`; returns the URL and the body of a 2xx answer, and
/// any other answer as an error carrying the API's message.
pub async fn call(
    admin: &str,
    method: Method,
    path_and_query: &str,
    token: Option<&str>,
    body: Bytes,
) -> Result<(String, Bytes), ClientError> {
    call_within(TIMEOUT, admin, method, path_and_query, token, body).await
}

/// [`call`] with its own bound on the whole exchange (a plugin upload waits for the component
/// to compile, which takes seconds for Python or JavaScript).
pub async fn call_within(
    limit: Duration,
    admin: &str,
    method: Method,
    path_and_query: &str,
    token: Option<&str>,
    body: Bytes,
) -> Result<(String, Bytes), ClientError> {
    let base = admin.trim_end_matches('/');
    let uri: Uri = format!("{base}{path_and_query}")
        .parse()
        .map_err(|_| ClientError::BadUrl(admin.into()))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => a.clone(),
        _ => return Err(ClientError::BadUrl(admin.into())),
    };
    let url = uri.to_string();
    let unreachable = |reason: String| ClientError::Unreachable {
        url: url.clone(),
        reason,
    };
    let exchange = async {
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(conn);
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut req = Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, authority.as_str())
            .header(header::ACCEPT, "application/json");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|_| ClientError::BadUrl(admin.into()))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok::<_, ClientError>((status, body))
    };
    let (status, body) = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", limit.as_secs())))??;
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
