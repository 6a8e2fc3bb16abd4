//! The operator's endpoints: `/metrics` (Prometheus), `/health/live`, `/health/ready`.
//!
//! Live answers as long as the process serves; ready only while every pipeline is
//! healthy ([`crate::health`]): running, not failed, its brokers reachable and, for
//! a Kafka source, its partitions assigned; and every reporter is up.
//! `/health/ready/pipeline/<name>` and `/health/ready/reporter/<name>` answer for one
//! component, which its supervisor restarts on its own when it fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use prometheus::IntGauge;

use crate::health::PipelineHealth;
use crate::metrics::Metrics;

/// Shared readiness: how many pipelines must run, each one's health, and each
/// reporter's `ipenrich_reporter_up` gauge.
#[derive(Default)]
pub struct Readiness {
    expected: AtomicUsize,
    pipelines: Mutex<Vec<(String, Arc<PipelineHealth>)>>,
    reporters: Mutex<Vec<(String, IntGauge)>>,
}

impl Readiness {
    /// How many pipelines the process runs.
    pub fn expect(&self, pipelines: usize) {
        self.expected.store(pipelines, Ordering::Relaxed);
    }

    /// Watches one pipeline's health.
    pub fn watch(&self, name: &str, health: Arc<PipelineHealth>) {
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name.to_owned(), health));
    }

    /// Watches one reporter's up gauge.
    pub fn watch_reporter(&self, name: &str, up: IntGauge) {
        self.reporters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name.to_owned(), up));
    }

    /// True when every expected pipeline is ready (see [`PipelineHealth::is_ready`])
    /// and every reporter is up.
    pub fn is_ready(&self) -> bool {
        let expected = self.expected.load(Ordering::Relaxed);
        let pipelines = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let reporters = self
            .reporters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        expected > 0
            && pipelines.len() >= expected
            && pipelines.iter().all(|(_, p)| p.is_ready())
            && reporters.iter().all(|(_, up)| up.get() == 1)
    }

    /// One component's readiness: `pipeline` or `reporter` and its name; None when
    /// there is no such component.
    pub fn component(&self, kind: &str, name: &str) -> Option<bool> {
        match kind {
            "pipeline" => self
                .pipelines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, h)| h.is_ready()),
            "reporter" => self
                .reporters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, up)| up.get() == 1),
            _ => None,
        }
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
        .route("/health/ready/{kind}/{name}", get(component_handler))
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

async fn component_handler(
    State(s): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
) -> impl IntoResponse {
    match s.readiness.component(&kind, &name) {
        Some(true) => (StatusCode::OK, "ready\n"),
        Some(false) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        None => (StatusCode::NOT_FOUND, "no such component\n"),
    }
}
