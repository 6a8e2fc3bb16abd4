//! The operator's endpoints: `/metrics` (Prometheus), `/health/live`, `/health/ready`.
//!
//! Live answers as long as the process serves; ready only while every pipeline is
//! healthy ([`crate::health`]): running, not failed, its brokers reachable and, for
//! a Kafka source, its partitions assigned.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::health::PipelineHealth;
use crate::metrics::Metrics;

/// Shared readiness: how many pipelines must run, and each one's health.
#[derive(Default)]
pub struct Readiness {
    expected: AtomicUsize,
    pipelines: Mutex<Vec<Arc<PipelineHealth>>>,
}

impl Readiness {
    /// How many pipelines the process runs.
    pub fn expect(&self, pipelines: usize) {
        self.expected.store(pipelines, Ordering::Relaxed);
    }

    /// Watches one pipeline's health.
    pub fn watch(&self, health: Arc<PipelineHealth>) {
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(health);
    }

    /// True when every expected pipeline is ready (see [`PipelineHealth::is_ready`]).
    pub fn is_ready(&self) -> bool {
        let expected = self.expected.load(Ordering::Relaxed);
        let pipelines = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        expected > 0 && pipelines.len() >= expected && pipelines.iter().all(|p| p.is_ready())
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// Binds and serves until the task is dropped; returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready_handler))
        .with_state(AppState { metrics, readiness });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "http server stopped");
        }
    });
    Ok((addr, task))
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn ready_handler(State(s): State<AppState>) -> impl IntoResponse {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
