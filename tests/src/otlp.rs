//! An OpenTelemetry collector's OTLP/HTTP trace receiver on 127.0.0.1: decodes each request's
//! protobuf body as an `ExportTraceServiceRequest` and hands it to the test, answering with the
//! statuses the test scripts (200 by default), and can hold requests until released.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::within;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Export {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub request: ExportTraceServiceRequest,
}

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    received: tokio::sync::Mutex<mpsc::UnboundedReceiver<Export>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let (tx, rx) = mpsc::unbounded_channel();
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let (open, gate) = watch::channel(true);
        let task = {
            let answers = answers.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let tx = tx.clone();
                    let answers = answers.clone();
                    let gate = gate.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req: Request<Incoming>| {
                            let tx = tx.clone();
                            let answers = answers.clone();
                            let mut gate = gate.clone();
                            async move {
                                let method = req.method().to_string();
                                let path = req.uri().path().to_owned();
                                let content_type = req
                                    .headers()
                                    .get(http::header::CONTENT_TYPE)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                                let Ok(body) = body else {
                                    return Ok::<_, Infallible>(status(400, Bytes::new()));
                                };
                                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                                    return Ok(status(400, Bytes::from_static(b"not OTLP")));
                                };
                                let _ = tx.send(Export {
                                    method,
                                    path,
                                    content_type,
                                    request,
                                });
                                let _ = gate.wait_for(|open| *open).await;
                                let code =
                                    answers.lock().expect("answers").pop_front().unwrap_or(200);
                                let body = ExportTraceServiceResponse::default().encode_to_vec();
                                Ok(status(code, Bytes::from(body)))
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        OtlpReceiver {
            addr,
            received: tokio::sync::Mutex::new(rx),
            answers,
            open,
            task,
        }
    }

    /// The `otlp_endpoint` value for this receiver.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next requests are answered with these statuses, in order (then 200).
    pub fn answer(&self, statuses: &[u16]) {
        self.answers.lock().expect("answers").extend(statuses);
    }

    /// Requests received from now on wait for [`OtlpReceiver::release`] before their answer.
    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// The next request received, waiting for it (bounded).
    pub async fn next(&self) -> Export {
        within("an OTLP export request", async {
            self.received
                .lock()
                .await
                .recv()
                .await
                .expect("receiver running")
        })
        .await
    }

    /// A request already received, if any, without waiting.
    pub async fn try_next(&self) -> Option<Export> {
        self.received.lock().await.try_recv().ok()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = StatusCode::from_u16(code).expect("status");
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    res
}
