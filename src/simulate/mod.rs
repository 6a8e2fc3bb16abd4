//! The provider simulator behind `ipenrich simulate`, the sandbox of tests and benchmarks.
//!
//! Contract: one axum server on one address serves the five provider APIs exactly as
//! their documents in `/work/shared/providers/` describe them (paths, methods, auth,
//! status codes, error bodies, rate-limit headers), each under its own prefix:
//! `/ipinsights`, `/openipapi`, `/iptrust`, `/ipgeolocation`, `/cloudflare`, plus the
//! control endpoints under `/_sim` (see [`admin`]). Answers are deterministic: the
//! documented example responses verbatim for the documented example IPs and ASNs, and
//! otherwise data derived from the address (see [`data`]). Every request is counted in
//! [`Accounting`]; faults are injected per provider by sequence number, never at random.
//! No quota is spent anywhere: this is the sandbox every client test and benchmark uses.

pub mod accounting;
pub mod admin;
pub mod cloudflare;
pub mod config;
pub mod data;
pub mod database;

pub mod faults;
pub mod ipgeolocation;
pub mod ipinsights;
pub mod iptrust;
pub mod openipapi;
pub mod server;
pub mod state;
mod tables;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use accounting::{Accounting, ProviderAccounting, RateLimitEvent, ReportRecord};
pub use config::{FaultConfig, Provider, ProviderConfig, RateLimitConfig, SimConfig};

use data::Dataset;
use server::{ConnCtx, KillListener};
use state::SimState;

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid; lists every problem.
    #[error("invalid simulator config: {0}")]
    Config(String),
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A CSV line could not be parsed.
    #[error("asn csv line {line}: {reason}")]
    Csv {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The listening socket could not be bound.
    #[error("cannot bind simulator to {addr}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SimHandle {
    /// The bound address (useful after binding port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of a provider, e.g. `http://127.0.0.1:4000/ipinsights`; the names
    /// are those of [`Provider::as_str`] (an unknown name still gets its prefix).
    pub fn base_url(&self, provider: &str) -> String {
        format!("http://{}/{}", self.addr, provider)
    }

    /// A snapshot of the accounting.
    pub fn accounting(&self) -> Accounting {
        self.state.accounting()
    }

    /// Clears accounting, rate windows, quotas and report memory.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Replaces the live configuration (validated; the dataset is not reloaded).
    pub fn set_config(&self, config: SimConfig) -> Result<(), SimError> {
        config.validate()?;
        self.state.set_config(config, None);
        Ok(())
    }

    /// Stops accepting, lets open requests finish for up to 5 s, then aborts.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// The full router (exposed for in-process tests with `tower::ServiceExt::oneshot`;
/// connection resets need [`start`]).
pub fn router(state: Arc<SimState>) -> Router {
    let guarded = |p: Provider, routes: Router<Arc<SimState>>| {
        routes
            .layer(axum::middleware::from_fn_with_state(
                (state.clone(), p),
                faults::inject,
            ))
            .with_state(state.clone())
    };
    Router::new()
        .nest(
            "/ipinsights",
            guarded(Provider::Ipinsights, ipinsights::routes()),
        )
        .nest(
            "/openipapi",
            guarded(Provider::Openipapi, openipapi::routes()),
        )
        .nest("/iptrust", guarded(Provider::Iptrust, iptrust::routes()))
        .nest(
            "/ipgeolocation",
            guarded(Provider::Ipgeolocation, ipgeolocation::routes()),
        )
        .nest(
            "/cloudflare",
            guarded(Provider::Cloudflare, cloudflare::routes()),
        )
        .nest("/_sim", admin::routes().with_state(state.clone()))
}

/// Validates `config`, loads the dataset and serves on `bind` until
/// [`SimHandle::shutdown`].
pub async fn start(config: SimConfig, bind: SocketAddr) -> Result<SimHandle, SimError> {
    config.validate()?;
    let data = match &config.data_csv {
        Some(path) => Dataset::with_csv(path)?,
        None => Dataset::builtin(),
    };
    let state = Arc::new(SimState::new(config, data));
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|source| SimError::Bind { addr: bind, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SimError::Bind { addr: bind, source })?;
    let app = router(state.clone()).into_make_service_with_connect_info::<ConnCtx>();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(KillListener(listener), app).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(error) = serve.await {
            tracing::warn!(%error, "simulator server stopped");
        }
    });
    tracing::info!(%addr, "provider simulator listening");
    Ok(SimHandle {
        addr,
        state,
        stop: Some(stop),
        task,
    })
}
