//! Sending reports, auditing decisions, counting outcomes.
//!
//! Contract: [`Submitter::send`] takes a permit from the shared ipinsights budget
//! before every attempt, retries 429 after the provider's pause (and transient
//! failures after a short backoff) up to `max_attempts`, maps a 400 "duplicate" to
//! [`Outcome::Deduplicated`] (the ledger keeps the entry) and never retries a 422 or
//! any other refusal. Every decision becomes one audit record (Kafka topic keyed by
//! IP, or a JSON-lines file) and one count of `ipenrich_report_decisions_total`
//! labelled by reporter and outcome only.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Mutex};
use tracing::{debug, warn};

use super::ReportError;
use crate::lookup::providers::ipinsights::{IpInsightsClient, ReportRequest};
use crate::lookup::providers::ProviderError;

/// Metric names.
pub mod names {
    /// Decisions by reporter and outcome.
    pub const DECISIONS: &str = "ipenrich_report_decisions_total";
    /// Signals produced by the signal stage, by reporter.
    pub const SIGNALS: &str = "ipenrich_report_signals_total";
    /// Input events the signal stage could not evaluate (no JSON object), by reporter.
    pub const SKIPPED: &str = "ipenrich_report_events_skipped_total";
    /// 1 while a reporter runs (its topics in place, both stages started), by reporter.
    pub const UP: &str = "ipenrich_reporter_up";
}

/// What became of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Sent,
    Deduplicated,
    AllowListed,
    NotPublic,
    BelowThreshold,
    Stale,
    Cooldown,
    Capped,
    DryRun,
    Failed,
    /// In the outbox past the provider's duplicate window, never confirmed.
    Lost,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 11] = [
        Outcome::Sent,
        Outcome::Deduplicated,
        Outcome::AllowListed,
        Outcome::NotPublic,
        Outcome::BelowThreshold,
        Outcome::Stale,
        Outcome::Cooldown,
        Outcome::Capped,
        Outcome::DryRun,
        Outcome::Failed,
        Outcome::Lost,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Deduplicated => "deduplicated",
            Outcome::AllowListed => "allow_listed",
            Outcome::NotPublic => "not_public",
            Outcome::BelowThreshold => "below_threshold",
            Outcome::Stale => "stale",
            Outcome::Cooldown => "cooldown",
            Outcome::Capped => "capped",
            Outcome::DryRun => "dry_run",
            Outcome::Failed => "failed",
            Outcome::Lost => "lost",
        }
    }
}

/// The reporter metrics, registered once per process and shared by every reporter.
#[derive(Clone)]
pub struct ReportMetrics {
    decisions: IntCounterVec,
    signals: IntCounterVec,
    skipped: IntCounterVec,
    up: prometheus::IntGaugeVec,
}

impl ReportMetrics {
    /// Registers the metrics on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, ReportError> {
        let decisions = IntCounterVec::new(
            Opts::new(names::DECISIONS, "Reporter decisions by outcome"),
            &["reporter", "outcome"],
        )?;
        let signals = IntCounterVec::new(
            Opts::new(
                names::SIGNALS,
                "Attack signals produced by the signal stage",
            ),
            &["reporter"],
        )?;
        let skipped = IntCounterVec::new(
            Opts::new(
                names::SKIPPED,
                "Input events the signal stage could not evaluate (no JSON object)",
            ),
            &["reporter"],
        )?;
        let up = prometheus::IntGaugeVec::new(
            Opts::new(
                names::UP,
                "1 while the reporter runs: its topics in place and both stages started",
            ),
            &["reporter"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(signals.clone()))?;
        registry.register(Box::new(skipped.clone()))?;
        registry.register(Box::new(up.clone()))?;
        Ok(Self {
            decisions,
            signals,
            skipped,
            up,
        })
    }

    /// The readiness gauge of one reporter (also what `/health/ready` reads). Its
    /// counters start at zero here, so their rates exist before the first event.
    pub fn up(&self, reporter: &str) -> prometheus::IntGauge {
        self.signals.with_label_values(&[reporter]);
        self.skipped.with_label_values(&[reporter]);
        self.up.with_label_values(&[reporter])
    }

    /// Counts a decision.
    pub fn decision(&self, reporter: &str, outcome: Outcome) {
        self.decisions
            .with_label_values(&[reporter, outcome.as_str()])
            .inc();
    }

    /// Counts an input event that could not be evaluated.
    pub fn skipped(&self, reporter: &str) {
        self.skipped.with_label_values(&[reporter]).inc();
    }

    /// Counts produced signals.
    pub fn signals(&self, reporter: &str, n: u64) {
        self.signals.with_label_values(&[reporter]).inc_by(n);
    }
}

/// A boxed future, so that permits can live behind `dyn`.
pub type PermitFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// The ipinsights budget a report draws from (one request, one unit, as documented:
/// "each report consumes one unit of your hourly /api/v1/lookup quota"). The lookup
/// engine's shared limiter implements it, so reports and lookups share one bucket.
pub trait Permits: Send + Sync {
    /// Waits for a permit at most `within`; an error means none came in time (or
    /// the budget is gone for the period).
    fn acquire(&self, within: Duration) -> PermitFuture<'_>;
    /// Tells the budget the provider answered 429 (pauses lookups too).
    fn rate_limited(&self, retry_after: Option<Duration>);
}

/// The lookup engine's shared limiter of the ipinsights key: a report is one request
/// and one unit, and a 429 on a report pauses the lookups of the key too.
impl Permits for crate::lookup::rate_limit::RateLimiter {
    fn acquire(&self, within: Duration) -> PermitFuture<'_> {
        Box::pin(async move {
            self.acquire_within(1, 1, within)
                .await
                .map(drop)
                .map_err(|d| format!("{:?} for another {:?}", d.reason, d.wait))
        })
    }

    fn rate_limited(&self, retry_after: Option<Duration>) {
        crate::lookup::rate_limit::RateLimiter::rate_limited(self, retry_after);
    }
}

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// Wall-clock time of the decision, ms since the epoch.
    pub at_ms: u64,
    pub reporter: String,
    pub ip: IpAddr,
    pub outcome: Outcome,
    pub rule: String,
    /// Signals counted within findtime, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<crate::lookup::providers::ipinsights::ReportCategory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::lookup::providers::ipinsights::ReportSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub dry_run: bool,
}

/// Where audit records go.
pub enum AuditSink {
    /// A topic, keyed by IP.
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    /// A JSON-lines file, flushed after every record.
    File {
        path: PathBuf,
        file: Mutex<tokio::fs::File>,
    },
}

impl AuditSink {
    /// Opens (appends to) an audit file.
    pub async fn file(path: PathBuf) -> Result<Self, ReportError> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|source| ReportError::Audit {
                path: path.clone(),
                source,
            })?;
        Ok(Self::File {
            path,
            file: Mutex::new(file),
        })
    }

    /// Writes records in order and waits until all are durable (acked or
    /// flushed): one round trip for the batch, not one per record.
    pub async fn write_batch(&self, records: &[&AuditRecord]) -> Result<(), ReportError> {
        match self {
            AuditSink::Kafka { producer, topic } => {
                let mut lines = Vec::with_capacity(records.len());
                for r in records {
                    let line = serde_json::to_vec(r).map_err(ReportError::AuditRecord)?;
                    lines.push((r.ip.to_string(), line));
                }
                // Polled in order: enqueued in order, acknowledged together.
                futures::future::try_join_all(lines.iter().map(|(key, line)| {
                    producer.send(
                        FutureRecord::to(topic).key(key).payload(line),
                        Duration::from_secs(30),
                    )
                }))
                .await
                .map_err(|(e, _)| ReportError::Kafka {
                    what: "audit produce",
                    source: e,
                })?;
            }
            AuditSink::File { path, file } => {
                let mut text = Vec::new();
                for r in records {
                    serde_json::to_writer(&mut text, r).map_err(ReportError::AuditRecord)?;
                    text.push(b'\n');
                }
                let mut f = file.lock().await;
                let io = async {
                    f.write_all(&text).await?;
                    f.flush().await
                };
                io.await.map_err(|source| ReportError::Audit {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Writes one record and waits until it is durable (acked or flushed).
    pub async fn write(&self, record: &AuditRecord) -> Result<(), ReportError> {
        self.write_batch(&[record]).await
    }
}

/// The result of sending one report.
#[derive(Debug)]
pub enum Sent {
    /// 201, with the provider's report id.
    Accepted(u64),
    /// 400 "already reported within 15 minutes".
    Duplicate,
    /// Failed; `retryable` when a later try could work (the ledger entry is undone).
    Failed { error: String, retryable: bool },
    /// Shutdown came while waiting.
    Stopped,
}

/// Sends reports with the retry policy of the module docs.
pub struct Submitter {
    client: IpInsightsClient,
    permits: Arc<dyn Permits>,
    max_attempts: u32,
}

/// Pause after a 429 without `Retry-After`: the provider's window is an hour, a
/// minute is a polite first guess.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Longest single wait; a longer pause is sat out in pieces so shutdown stays prompt.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest one report may hold the decision loop, waits for permits and retries
/// included: well under the consumer's `max.poll.interval.ms` (300 s), so a long
/// quota pause never costs the group its partitions. A report that cannot go out
/// in time fails retryably (its ledger entry undone; the IP's next signal decides
/// again).
pub const MAX_SEND_TIME: Duration = Duration::from_secs(60);

impl Submitter {
    /// A submitter on `client`, drawing from `permits`.
    pub fn new(client: IpInsightsClient, permits: Arc<dyn Permits>, max_attempts: u32) -> Self {
        Self {
            client,
            permits,
            max_attempts: max_attempts.max(1),
        }
    }

    /// Sends one report; `stop` interrupts waits.
    pub async fn send(&self, request: &ReportRequest, stop: &mut watch::Receiver<bool>) -> Sent {
        let deadline = tokio::time::Instant::now() + MAX_SEND_TIME;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut attempt = 0;
        loop {
            attempt += 1;
            tokio::select! {
                permit = self.permits.acquire(left()) => {
                    if let Err(error) = permit {
                        return Sent::Failed { error: format!("no ipinsights permit within {MAX_SEND_TIME:?}: {error}"), retryable: true };
                    }
                }
                _ = stopped(stop) => return Sent::Stopped,
            }
            let error = match self.client.report(request).await {
                Ok(receipt) => return Sent::Accepted(receipt.report_id),
                Err(ProviderError::Duplicate { .. }) => return Sent::Duplicate,
                Err(e) => e,
            };
            let wait = match &error {
                ProviderError::RateLimited { retry_after } => {
                    self.permits.rate_limited(*retry_after);
                    retry_after.unwrap_or(DEFAULT_RETRY_AFTER)
                }
                e if e.is_retryable() => Duration::from_secs(1 << attempt.min(5)),
                _ => {
                    return Sent::Failed {
                        error: error.to_string(),
                        retryable: false,
                    }
                }
            };
            if attempt >= self.max_attempts || wait > left() {
                return Sent::Failed {
                    error: error.to_string(),
                    retryable: true,
                };
            }
            debug!(provider = "ipinsights", %error, attempt, wait_ms = wait.as_millis() as u64, "report retry");
            let mut left = wait;
            while !left.is_zero() {
                let step = left.min(MAX_BACKOFF);
                tokio::select! {
                    _ = tokio::time::sleep(step) => {}
                    _ = stopped(stop) => return Sent::Stopped,
                }
                left -= step;
            }
        }
    }
}

/// Resolves when `stop` is (or becomes) true; never when the sender is gone.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            warn!("shutdown channel closed");
            std::future::pending::<()>().await;
        }
    }
}

/// A budget with no limit, for a reporter without an ipinsights lookup provider
/// (nothing else draws from the key) and for dry runs.
pub struct NoLimit;

impl Permits for NoLimit {
    fn acquire(&self, _within: Duration) -> PermitFuture<'_> {
        Box::pin(async { Ok(()) })
    }

    fn rate_limited(&self, _retry_after: Option<Duration>) {}
}
