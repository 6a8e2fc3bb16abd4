//! `ipenrich run`: every pipeline and reporter of a config until SIGTERM or SIGINT.
//!
//! Contract: the verdict is the supervisor's: [`Exit::Failure`] when a pipeline
//! failed or shutdown ran out of time. A config that cannot be loaded, or a pipeline
//! that cannot start, is a [`CliError`].

use std::path::Path;
use std::sync::Arc;

use super::{CliError, Exit};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::supervisor::{self, Verdict};

/// Loads the config at `path` and runs it until a termination signal.
pub async fn run(path: &Path) -> Result<Exit, CliError> {
    let config = config::load_file(path)?;
    run_pipelines(config, Arc::new(Metrics::new()), true).await
}

/// Runs `config` until a termination signal (`until_signal`) or until its inputs end,
/// counting into `metrics`.
pub async fn run_pipelines(
    config: Config,
    metrics: Arc<Metrics>,
    until_signal: bool,
) -> Result<Exit, CliError> {
    let stop = async {
        if until_signal {
            termination().await
        } else {
            std::future::pending().await
        }
    };
    // `ipenrich enrich ... | head -1`: a reader that has all it wanted is no failure.
    let closed_output_is_clean = !until_signal;
    Ok(
        match supervisor::run(config, metrics, stop, closed_output_is_clean).await? {
            Verdict::Clean => Exit::Success,
            Verdict::Failed => Exit::Failure,
        },
    )
}

/// Resolves when SIGTERM or SIGINT arrives, counting signals from this call on, not
/// only from the first poll (as [`termination`] does): a signal that arrives before
/// the future is awaited still ends it instead of killing the process.
pub fn termination_now() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        tokio::signal::ctrl_c().await.unwrap_or(());
    })
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
