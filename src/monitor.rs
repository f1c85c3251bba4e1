//! The monitoring endpoint on `metrics_listen`: `GET /metrics` (Prometheus text format) and
//! `GET /healthz` (200 or 503 with a one-line JSON body). It only reads [`crate::metrics`].
//!
//! Bounded, since anyone who can reach the port can open connections: at most
//! [`MAX_CONNECTIONS`] at once (more wait in the kernel's backlog, costing the daemon no file
//! descriptor), a request's headers within [`HEADER_TIMEOUT`] (an idle keep-alive connection is
//! closed after as long), and no connection kept past [`CONNECTION_TIMEOUT`]. A connection that
//! sends half a request and waits cannot hold a descriptor the daemon needs to read the site.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::metrics;

/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// How long a request's headers may take to arrive, from the connection's start or the end of
/// the request before it.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection is kept, whatever it does.
pub(crate) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("metrics_listen {addr}: cannot listen there: {error} (choose another port, or stop what uses it)")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

/// The endpoint, serving until dropped.
#[derive(Debug)]
pub(crate) struct Server {
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (a port in use is an error naming it) and serves on a task of its own. Must be
/// called within the runtime.
pub(crate) fn start(addr: SocketAddr) -> Result<Server, ListenError> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|error| ListenError { addr, error })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz));
    let task = tokio::spawn(serve(listener, app, bound));
    tracing::info!("serving /metrics and /healthz on http://{bound}");
    Ok(Server { task })
}

/// Accepts connections while fewer than [`MAX_CONNECTIONS`] are open, each served on a task of
/// its own within its timeouts.
async fn serve(listener: tokio::net::TcpListener, app: Router, bound: SocketAddr) {
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors (EMFILE, ENFILE) or a connection reset before it was taken:
            // try again a little later rather than spin.
            Err(e) => {
                tracing::debug!("metrics_listen {bound}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(permit);
        });
    }
}

async fn scrape() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        metrics::get().encode(),
    )
}

async fn healthz() -> impl IntoResponse {
    let health = &metrics::get().health;
    let (status, mut body) = match health.check() {
        Ok(detail) => (StatusCode::OK, serde_json::json!({"status": "ok", "detail": detail})),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "unhealthy", "reasons": reasons}),
        ),
    };
    let warnings = health.warnings();
    if !warnings.is_empty() {
        body["warnings"] = warnings.into();
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
}
