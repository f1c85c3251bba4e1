//! The monitoring endpoint on `metrics_listen`: `GET /metrics` (Prometheus text format) and
//! `GET /healthz` (200 or 503 with a one-line JSON body). It only reads [`crate::metrics`].

use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;

use crate::metrics;

#[derive(Debug, thiserror::Error)]
#[error("metrics_listen {addr}: cannot listen there: {error} (choose another port, or stop what uses it)")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

/// The endpoint, serving until dropped.
#[derive(Debug)]
pub struct Server {
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (a port in use is an error naming it) and serves on a task of its own. Must be
/// called within the runtime.
pub fn start(addr: SocketAddr) -> Result<Server, ListenError> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|error| ListenError { addr, error })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics_listen {bound}: the endpoint stopped: {e}");
        }
    });
    tracing::info!("serving /metrics and /healthz on http://{bound}");
    Ok(Server { task })
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
    let (status, body) = match metrics::get().health.check() {
        Ok(detail) => (StatusCode::OK, serde_json::json!({"status": "ok", "detail": detail})),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "unhealthy", "reasons": reasons}),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
}
