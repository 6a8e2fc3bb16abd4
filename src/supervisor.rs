//! The supervisor: starts every pipeline and reporter of a config, owns readiness
//! and shutdown, and turns their outcomes into one verdict.
//!
//! Shutdown is bounded: once stop is asked (a signal, or a one-shot pipeline
//! failing), every pipeline has its `shutdown_timeout` to drain and commit, and the
//! supervisor gives up on any that is still running [`SHUTDOWN_SLACK`] after the
//! longest one.
//!
//! Isolation: each Kafka-sourced pipeline and each reporter runs under its own
//! restart loop ([`restarting`]): when it fails, the error is logged, counted in
//! `ipenrich_restarts_total`, its readiness turns false (so `/health/ready` says
//! so, and `/health/ready/<kind>/<name>` says which), and it starts again after a
//! back-off of 1 s doubling to [`MAX_BACKOFF`], while the others go on. A
//! consumer group re-reads whatever the failed run left uncommitted, so a restart
//! loses nothing. A file or stdin pipeline is a one-shot job: its failure stops
//! the run with a non-zero exit, since its input cannot be read again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::http::Readiness;
use crate::lookup::build::SharedProviders;
use crate::metrics::Metrics;
use crate::pipeline;
use crate::telemetry::error_chain;

/// First wait before a failed component starts again.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Longest wait between two starts of a failing component.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A run this long counts as recovered: the next failure waits [`FIRST_BACKOFF`] again.
const RECOVERED_AFTER: Duration = Duration::from_secs(300);

/// Time beyond the longest `shutdown_timeout` for final commits and clean-up.
pub const SHUTDOWN_SLACK: Duration = Duration::from_secs(8);

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding http listener {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Providers(String),
    #[error(transparent)]
    IntelTable(#[from] crate::lookup::table::TableError),
    #[error("reporter {reporter}: {reason}")]
    Reporter { reporter: String, reason: String },
    #[error("registering reporter metrics: {0}")]
    Metrics(#[from] crate::report::ReportError),
}

/// How a supervised run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every pipeline and reporter finished cleanly.
    Clean,
    /// One failed (its error was logged and printed), or shutdown ran out of time.
    Failed,
}

/// Runs every pipeline and reporter until they end, or until `stop` completes,
/// counting into `metrics` (the caller may watch them: `enrich`'s progress bar).
/// With `closed_output_is_clean` (one-shot `enrich`), a pipeline whose stdout reader
/// went away (`| head -1`) ends cleanly instead of failing.
pub async fn run(
    config: Config,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
    closed_output_is_clean: bool,
) -> Result<Verdict, StartError> {
    let readiness = Arc::new(Readiness::default());
    readiness.expect(config.pipelines.len());
    serve_http(&config, &metrics, &readiness).await?;
    let bound = shutdown_bound(&config);
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = open_providers(&config, &metrics)?;
    tokio::pin!(stop);
    // The table's start waits for its brokers, so it yields to a stop request.
    let _table = tokio::select! {
        table = open_table(&config, &metrics, &shared) => table?,
        _ = &mut stop => return Ok(stopped_while_starting()),
    };
    let mut reporters = start_reporters(&config, &metrics, &readiness, &shared, &stop_rx)?;
    let mut pipelines = spawn_pipelines(config.pipelines, &metrics, &readiness, &shared, &stop_rx);
    let mut failed = false;
    let mut pipelines_done = false;
    let mut give_up_at: Option<tokio::time::Instant> = None;
    loop {
        let past_bound = async {
            match give_up_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop, if !*stop_tx.borrow() => {
                info!("shutdown requested");
                let _ = stop_tx.send(true);
            }
            _ = past_bound => {
                error!(bound = ?bound, "shutdown did not finish in time; exiting anyway");
                pipelines.abort_all();
                reporters.abort_all();
                return Ok(Verdict::Failed);
            }
            joined = pipelines.join_next(), if !pipelines_done => {
                let Some(joined) = joined else {
                    pipelines_done = true;
                    if reporters.is_empty() {
                        break;
                    }
                    // Reporters only watch pipelines: stop them with the last one.
                    let _ = stop_tx.send(true);
                    continue;
                };
                match pipeline_ended(joined, closed_output_is_clean) {
                    Ended::Clean => {}
                    Ended::OutputClosed => {
                        let _ = stop_tx.send(true);
                    }
                    Ended::Failed => {
                        failed = true;
                        let _ = stop_tx.send(true);
                    }
                }
            }
            joined = reporters.join_next(), if !reporters.is_empty() => {
                if let Some(joined) = joined {
                    if !reporter_ended(joined) {
                        failed = true;
                        let _ = stop_tx.send(true);
                    }
                }
                if pipelines_done && reporters.is_empty() {
                    break;
                }
            }
        }
        if *stop_tx.borrow() && give_up_at.is_none() {
            give_up_at = Some(tokio::time::Instant::now() + bound);
        }
    }
    if failed {
        warn!("finished with failures");
    }
    Ok(if failed {
        Verdict::Failed
    } else {
        Verdict::Clean
    })
}

/// The longest `shutdown_timeout` of the config's pipelines, plus the slack.
fn shutdown_bound(config: &Config) -> Duration {
    let longest = config.pipelines.iter().map(|p| p.shutdown_timeout).max();
    longest.unwrap_or_default() + SHUTDOWN_SLACK
}

/// A stop request before anything ran: a clean end.
fn stopped_while_starting() -> Verdict {
    info!("shutdown requested while the intel table was starting");
    Verdict::Clean
}

/// Serves `/metrics` and `/health` when the config asks for it.
async fn serve_http(
    config: &Config,
    metrics: &Arc<Metrics>,
    readiness: &Arc<Readiness>,
) -> Result<(), StartError> {
    if let Some(http) = &config.http {
        let (addr, _task) = crate::http::serve(http.listen, metrics.clone(), readiness.clone())
            .await
            .map_err(|source| StartError::Http {
                addr: http.listen,
                source,
            })?;
        info!(%addr, "serving /metrics and /health");
    }
    Ok(())
}

/// Providers first: a missing key or database stops start-up, and the reporters
/// find the lookups' ipinsights limiter to share.
fn open_providers(config: &Config, metrics: &Metrics) -> Result<Arc<SharedProviders>, StartError> {
    let shared = Arc::new(SharedProviders::with_quota_sync(metrics.registry().clone()));
    for p in &config.pipelines {
        crate::lookup::build::chain(&p.providers, &shared).map_err(|errors| {
            let lines: Vec<String> = errors
                .iter()
                .map(|e| format!("pipeline {}: {e}", p.name))
                .collect();
            StartError::Providers(lines.join("\n"))
        })?;
    }
    Ok(shared)
}

/// Without an intel table, every replica of a consumer group spends each API key's
/// quota on its own (README "Scaling out"): said once at start, per pipeline.
fn warn_unshared_quota(config: &Config) {
    use crate::config::{ProviderConfig, SourceConfig};
    for p in &config.pipelines {
        let grouped = matches!(p.source, SourceConfig::Kafka(_));
        let apis = p
            .providers
            .iter()
            .filter(|c| !matches!(c, ProviderConfig::Mmdb(_)))
            .count();
        if grouped && apis > 0 {
            warn!(
                pipeline = %p.name,
                "no intel_table: each replica of this consumer group keeps its own cache and spends each API key's quota on its own; add intel_table: to share them"
            );
        }
    }
}

/// Starts the shared intel table and loads it into the engines' caches before
/// any pipeline runs, so a restarted replica starts warm (readiness waits too).
async fn open_table(
    config: &Config,
    metrics: &Metrics,
    shared: &Arc<SharedProviders>,
) -> Result<Option<crate::lookup::table::Table>, StartError> {
    let Some(table_config) = config.intel_table.clone() else {
        warn_unshared_quota(config);
        return Ok(None);
    };
    let engines = shared.engines_by_source();
    let limiters = shared.limiters_by_id();
    let registry = metrics.registry().clone();
    let warm_timeout = table_config.warm_timeout;
    // Brokers away at start are transient: wait for them (a stop request ends the
    // wait, see `run`); what fails once they answer is fatal.
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        let probe = table_config.clone();
        let reached = tokio::task::spawn_blocking(move || crate::lookup::table::reachable(&probe))
            .await
            .map_err(|e| StartError::Providers(format!("intel table start: {e}")))?;
        match reached {
            Ok(()) => break,
            Err(e) => {
                warn!(error = %e, retry_in = ?delay, "intel table brokers not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
    let table = tokio::task::spawn_blocking(move || {
        crate::lookup::table::Table::start(&table_config, engines, limiters, &registry)
    })
    .await
    .map_err(|e| StartError::Providers(format!("intel table start: {e}")))??;
    if !table.warmed(warm_timeout).await {
        warn!(timeout = ?warm_timeout, "intel table not fully loaded in time; starting with what was loaded");
    }
    if let Some(routing) = table.routing() {
        if !routing.router().assigned(warm_timeout).await {
            warn!(timeout = ?warm_timeout, "no address partitions assigned yet; misses are routed until they are");
        }
    }
    Ok(Some(table))
}

/// How a pipeline ended.
enum Ended {
    Clean,
    /// A one-shot run's stdout reader went away: done, not failed.
    OutputClosed,
    Failed,
}

type PipelineResult = (String, Result<pipeline::Summary, pipeline::PipelineError>);

/// Logs how a pipeline ended.
fn pipeline_ended(
    joined: Result<PipelineResult, tokio::task::JoinError>,
    closed_output_is_clean: bool,
) -> Ended {
    match joined {
        Ok((name, Ok(summary))) => {
            info!(pipeline = %name, events_in = summary.events_in, events_out = summary.events_out, dead_letters = summary.dead_letters, timed_out = summary.timed_out, "pipeline finished");
            Ended::Clean
        }
        Ok((name, Err(e))) if closed_output_is_clean && is_broken_pipe(&e) => {
            info!(pipeline = %name, "output closed by its reader");
            Ended::OutputClosed
        }
        Ok((name, Err(e))) => {
            let chain = error_chain(&e);
            error!(pipeline = %name, error = %chain, "pipeline failed");
            crate::telemetry::print_line(&format!("ipenrich: {chain}"));
            Ended::Failed
        }
        Err(e) => {
            error!(error = %e, "pipeline task panicked");
            Ended::Failed
        }
    }
}

/// Logs how a reporter ended; false when it failed.
fn reporter_ended(joined: Result<ReporterResult, tokio::task::JoinError>) -> bool {
    match joined {
        Ok((name, Ok(summary))) => {
            info!(reporter = %name, signals = summary.signals, decisions = summary.decisions, sent = summary.sent, "reporter finished");
            true
        }
        Ok((name, Err(e))) => {
            let chain = error_chain(&e);
            error!(reporter = %name, error = %chain, "reporter failed");
            crate::telemetry::print_line(&format!("ipenrich: reporter {name}: {chain}"));
            false
        }
        Err(e) => {
            error!(error = %e, "reporter task panicked");
            false
        }
    }
}

type ReporterResult = (
    String,
    Result<crate::report::ReportSummary, crate::report::ReportError>,
);

/// Starts every pipeline: a Kafka-sourced one under its own restart loop, a file or
/// stdin one once.
fn spawn_pipelines(
    pipelines: Vec<crate::config::PipelineConfig>,
    metrics: &Metrics,
    readiness: &Readiness,
    shared: &Arc<SharedProviders>,
    stop: &watch::Receiver<bool>,
) -> JoinSet<PipelineResult> {
    let mut set = JoinSet::new();
    for p in pipelines {
        let m = metrics.pipeline(&p.name);
        readiness.watch(&p.name, m.health.clone());
        let rx = stop.clone();
        let shared = shared.clone();
        let restarts = metrics.restarts("pipeline", &p.name);
        let grouped = matches!(p.source, crate::config::SourceConfig::Kafka(_));
        set.spawn(async move {
            let run = || pipeline::run(&p, m.clone(), &shared, rx.clone());
            let result = if grouped {
                restarting("pipeline", &p.name, &restarts, rx.clone(), run).await
            } else {
                run().await
            };
            (p.name, result)
        });
    }
    set
}

/// Runs `attempt` until it ends cleanly or stop is asked, starting it again after
/// each failure: 1 s, doubling to [`MAX_BACKOFF`], back to 1 s after a run of
/// [`RECOVERED_AFTER`]. A failure while stopping, or one that stop interrupts in
/// its back-off, is the result.
pub async fn restarting<T, E, F, Fut>(
    component: &str,
    name: &str,
    restarts: &prometheus::IntCounter,
    mut stop: watch::Receiver<bool>,
    mut attempt: F,
) -> Result<T, E>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        let error = match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) if *stop.borrow() => return Err(e),
            Err(e) => e,
        };
        if started.elapsed() >= RECOVERED_AFTER {
            backoff = FIRST_BACKOFF;
        }
        let chain = error_chain(&error);
        error!(component, name, error = %chain, retry_in = ?backoff, "failed; restarting after a back-off, the others go on");
        crate::telemetry::print_line(&format!(
            "ipenrich: {component} {name}: {chain} (restarting in {backoff:?})"
        ));
        restarts.inc();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return Err(error),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn start_reporters(
    config: &Config,
    metrics: &Metrics,
    readiness: &Readiness,
    shared: &Arc<SharedProviders>,
    stop: &watch::Receiver<bool>,
) -> Result<JoinSet<ReporterResult>, StartError> {
    let mut reporters = JoinSet::new();
    if config.reporters.is_empty() {
        return Ok(reporters);
    }
    let report_metrics = crate::report::ReportMetrics::register(metrics.registry())?;
    for r in config.reporters.iter().cloned() {
        let m = report_metrics.clone();
        let rx = stop.clone();
        let fail = |reason: String| StartError::Reporter {
            reporter: r.name.clone(),
            reason,
        };
        // Reports spend the same ipinsights budget as lookups with the same key; a
        // dry run sends nothing and needs no key.
        let sending = r.ipinsights.as_ref().filter(|_| !r.dry_run);
        let permits: Arc<dyn crate::report::Permits> =
            match sending.and_then(|i| i.api_key.as_ref().map(|k| (i, k))) {
                Some((i, key)) => {
                    let key = crate::lookup::build::secret(key).map_err(fail)?;
                    shared
                        .ipinsights_limiter(&i.base_url, &key)
                        .map_err(|e| fail(e.to_string()))?
                }
                None => Arc::new(crate::report::NoLimit),
            };
        readiness.watch_reporter(&r.name, m.up(&r.name));
        let restarts = metrics.restarts("reporter", &r.name);
        reporters.spawn(async move {
            let run = || crate::report::run(&r, m.clone(), permits.clone(), rx.clone());
            let result = restarting("reporter", &r.name, &restarts, rx.clone(), run).await;
            (r.name, result)
        });
    }
    Ok(reporters)
}

/// Whether an error was caused by writing to a pipe whose reader has gone away.
fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
