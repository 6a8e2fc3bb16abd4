//! Reciprocal attacker reporting to ipinsights `POST /api/v1/report`, fail2ban-style,
//! consistent across replicas.
//!
//! Contract: an address is reported only when it is public, not allow-listed, one
//! rule saw `maxretry` distinct signals of it within `findtime` of event time (the
//! event's `event_time_field` or its record's timestamp, carried from the pipeline's
//! input; a signal older than `findtime` + `allowed_lateness` is `stale` and never
//! counts) (and the threat score asked for), its last report is older than the cooldown (default 60 min, never
//! below the provider's 15 min), and the daily cap is not reached; it is reported at
//! most once per cooldown whatever the number of replicas, restarts and crashes; and
//! every decision is audited and counted. Dry-run (the default) decides and audits
//! but sends nothing.
//!
//! # Design
//!
//! A reporter runs in the `ipenrich run` process next to the pipelines (config:
//! top-level `reporters:`), as two Kafka consumer groups and a submitter:
//!
//! 1. **Signal stage** ([`signal`]): consumes a pipeline's *enriched* output topic,
//!    evaluates the rules ([`rules`]) on each event and produces a [`rules::Signal`]
//!    keyed by the attacker (IP, or IPv6 network) to the signals topic. Keying by IP puts every signal
//!    of one IP in one partition, whichever replica saw the event; this is what
//!    makes counting consistent (issue 5, point 3).
//! 2. **Decision stage** ([`decide`]): a consumer group on the signals topic, so each
//!    IP is counted and decided by exactly one consumer at a time. Its counters and
//!    report ledger ([`state::Book`]) live in memory and in a compacted changelog
//!    topic keyed by IP (partition n holds the state of signal partition n). When a
//!    partition is assigned (start, restart, rebalance) the callback only pauses it;
//!    a task of its own (`ownership.rs`) fences the partition's previous writer
//!    (changelog partition n is written only by a transactional producer whose
//!    `transactional.id` names the group and n, so initialising it makes the broker
//!    refuse every later write of a previous owner that was paused and lost the
//!    partition) and reads its changelog to the end, `read_committed`, while the
//!    loop goes on deciding the partitions it has; then the partition is resumed.
//!    No signal of a partition is decided before its restore, and a revoked
//!    partition's signals are left to its next owner. State changes are committed
//!    in batches (one transaction per partition, every 200 ms or 2,000 decisions),
//!    and a signal is audited and its offset stored only after its batch commits;
//!    a batch that does not commit never happened, and its signals are decided
//!    again from the changelog. A report's ledger entry is committed *before*
//!    the report is sent, with the report itself in the IP's outbox
//!    ([`state::Pending`]); the outbox is emptied when the provider accepts the
//!    report or says it has it already (400 duplicate). A report not confirmed (a
//!    timeout, a SIGKILL mid-send, a shutdown) stays in the outbox and is sent again
//!    (by this replica every few seconds, or by the partition's next owner after its
//!    restore) while the provider's 15-minute duplicate window is open, where a copy
//!    it already has is refused instead of reported twice; past the window it is
//!    given up and audited `lost`. So a SIGKILL at any point repeats no report and
//!    loses none silently, and an IP whose signals came from two replicas still adds
//!    up to its threshold. Signal ids make re-read signals count once. The Kafka Streams
//!    pattern (repartition topic + changelog-backed state store) without the JVM.
//! 3. **Submitter** ([`submit`]): draws a permit from the ipinsights budget shared
//!    with lookups ([`submit::Permits`]), retries 429 after the pause, treats a 400
//!    duplicate as done (ledger kept), never retries 422.
//!
//! Why not count in each pipeline replica? Each would see a share of an attacker's
//! events and none might reach the threshold, or each would report it. Why not a
//! shared database? Kafka is already the one dependency, and the changelog gives
//! restore-on-rebalance with ordering guarantees per partition.
//!
//! Guards: [`crate::extract::classify`] must say `Public` (IPv4-mapped IPv6 is
//! classified by its IPv4 address); `allow_list` CIDRs; cooldown; daily cap (each
//! signal partition may spend its share, `daily_cap` ÷ partitions, counted in the
//! ledger its one owner restores from the changelog: the shares add up to the cap for
//! the whole group, whatever the number of processes and rebalances; a cap below the
//! partition count is refused at start); IPv6 counted, cooled down and keyed (signals
//! and changelog) per `ipv6_prefix` network, so rotating through a /64 does not make
//! new attackers; the comment comes from a template, is at most 1,024
//! characters, and its sample has user names, host names, other addresses and the
//! configured patterns redacted at the signal stage already.
//!
//! Metrics: `ipenrich_report_decisions_total{reporter,outcome}` and
//! `ipenrich_report_signals_total{reporter}`; never an address.

use std::path::PathBuf;
use std::sync::Arc;

use rdkafka::error::KafkaError;
use tokio::sync::watch;
use tracing::info;

pub mod decide;
pub mod event_time;
mod kafka;
mod ownership;
pub mod rules;
pub mod signal;
pub mod state;
pub mod submit;
pub mod topics;

pub use crate::config::reporter::{fmt_duration, ReporterSettings};
use crate::config::ReporterConfig;
pub use submit::{NoLimit, Outcome, Permits, ReportMetrics};

use crate::lookup::providers::ProviderError;
use crate::secret::SecretError;

/// Why a reporter could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The config did not validate (normally caught at load).
    #[error("invalid reporter config: {0}")]
    Config(String),
    /// A Kafka client failed.
    #[error("kafka {what} failed")]
    Kafka {
        what: &'static str,
        #[source]
        source: KafkaError,
    },
    /// Metrics could not be registered.
    #[error("registering reporter metrics failed")]
    Metrics(#[from] prometheus::Error),
    /// The audit file could not be written.
    #[error("audit file {} failed", path.display())]
    Audit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An audit record could not be serialised.
    #[error("audit record does not serialise")]
    AuditRecord(#[source] serde_json::Error),
    /// The API key could not be read.
    #[error("ipinsights api key")]
    Secret(#[from] SecretError),
    /// The ipinsights client could not be built.
    #[error("ipinsights client")]
    Client(#[from] ProviderError),
    /// A changelog partition could not be read back; the reporter stops rather than
    /// decide without its ledger.
    #[error("restoring changelog {topic} partition {partition} failed: {reason}")]
    Restore {
        topic: String,
        partition: i32,
        reason: String,
    },
    /// Topics that do not fit together.
    #[error("{0}")]
    Topology(String),
    /// A newer owner of a changelog partition fenced this replica's writer: this
    /// replica lost the partition (paused past its session, say) and must not
    /// write it. The reporter restarts and rejoins its group.
    #[error(
        "changelog {topic} partition {partition}: fenced by its new owner; this replica lost it"
    )]
    Fenced { topic: String, partition: i32 },
}

/// How long start waits for the brokers to answer about the reporter's topics.
const TOPIC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a reporter did, at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportSummary {
    /// Signals produced by the signal stage.
    pub signals: u64,
    /// Decisions made by the decision stage.
    pub decisions: u64,
    /// Reports accepted by the provider.
    pub sent: u64,
}

/// Runs one reporter (both stages) until `stop` turns true or a stage fails.
/// `permits` is the ipinsights budget shared with the lookups of the same key.
pub async fn run(
    config: &ReporterConfig,
    metrics: ReportMetrics,
    permits: Arc<dyn Permits>,
    mut stop: watch::Receiver<bool>,
) -> Result<ReportSummary, ReportError> {
    let settings = config.validate().map_err(|problems| {
        ReportError::Config(
            problems
                .into_iter()
                .map(|(k, p)| format!("{k}: {p}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    info!(reporter = %settings.name, dry_run = settings.dry_run, rules = settings.rules.len(), "reporter starting");
    for (topic, status) in topics::ensure(&settings, TOPIC_TIMEOUT).await? {
        if let topics::Status::Created(partitions) = status {
            info!(reporter = %settings.name, topic, partitions, "topic created");
        }
    }
    let up = metrics.up(&settings.name);
    up.set(1);
    let (tx, rx) = watch::channel(false);
    let stages = async {
        let fail_fast = |failed: bool| {
            if failed {
                let _ = tx.send(true);
            }
        };
        tokio::join!(
            async {
                let r = signal::run(&settings, metrics.clone(), rx.clone()).await;
                fail_fast(r.is_err());
                r
            },
            async {
                let r = decide::run(&settings, metrics.clone(), permits, rx.clone()).await;
                fail_fast(r.is_err());
                r
            }
        )
    };
    tokio::pin!(stages);
    let (signals, decisions) = tokio::select! {
        r = &mut stages => r,
        _ = submit::stopped(&mut stop) => {
            let _ = tx.send(true);
            stages.await
        }
    };
    up.set(0);
    let signals = signals?;
    let (decisions, sent) = decisions?;
    Ok(ReportSummary {
        signals,
        decisions,
        sent,
    })
}
