//! Decision stage: signals in (one consumer per IP), verdicts, reports, audit.
//!
//! Contract, per signal and in this order: the verdict is taken on the book; a
//! changed IP state is written into its changelog partition's open transaction;
//! before a report is sent, that transaction is committed, so the outbox entry is
//! durable; the batch commits (every 200 ms or 2,000 decisions); only then is the
//! decision audited (acknowledged or flushed) and the signal's offset stored. A
//! batch that fails to commit stops the reporter, which restarts from the
//! changelog. When partitions are assigned, their changelog is read to the end
//! (by a task, see `ownership.rs`) before their first signal is decided; when
//! they are revoked, their IPs and undecided batch are forgotten. A restore that
//! fails stops the reporter: deciding without the ledger could repeat reports.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::ownership::{DecideContext, Owned, Restored, Restorer};
use super::rules::{render_comment, CommentVars, Signal};
use super::state::{Book, Candidate, Clock, IpState, Verdict};
use super::submit::{
    stopped, AuditRecord, AuditSink, Outcome, Permits, ReportMetrics, Sent, Submitter,
};
use super::{fmt_duration, ReportError};
use crate::config::reporter::{AuditConfig, ReporterSettings};
use crate::lookup::providers::http::HttpSettings;
use crate::lookup::providers::ipinsights::{IpInsightsClient, ReportRequest};
use crate::secret::Secret;

/// How often IPs with nothing left to remember are dropped (and tombstoned).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Longest a decision waits for its changelog commit (and so for its audit and
/// offset): writes are committed in batches, one transaction per partition.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Decisions that make a batch commit at once.
const FLUSH_AT: usize = 2000;
/// How often the outbox is sent again.
const RESEND_EVERY: Duration = Duration::from_secs(5);
/// Most outbox reports sent again per round, so signals keep being decided.
const RESEND_PER_TICK: usize = 20;
/// A resend round starts no send after this long.
const RESEND_ROUND: Duration = Duration::from_secs(20);
/// ipinsights refuses a second report of an address within 15 minutes as a
/// duplicate (ipinsights-api.txt): the outbox is sent again only within it.
const DUPLICATE_WINDOW_MS: u64 = 15 * 60 * 1000;

/// Partition counts of a topic.
fn partitions(consumer: &StreamConsumer<DecideContext>, topic: &str) -> Result<usize, ReportError> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| ReportError::Kafka {
            what: "metadata",
            source,
        })?;
    let t = md
        .topics()
        .first()
        .ok_or_else(|| ReportError::Topology(format!("topic {topic} not found")))?;
    if let Some(e) = t.error() {
        return Err(ReportError::Topology(format!(
            "topic {topic}: {:?} (create it first; the changelog with cleanup.policy=compact)",
            e
        )));
    }
    Ok(t.partitions().len())
}

/// Runs the decision stage until `stop`; returns (decisions, reports accepted).
pub async fn run(
    settings: &ReporterSettings,
    metrics: ReportMetrics,
    permits: Arc<dyn Permits>,
    mut stop: watch::Receiver<bool>,
) -> Result<(u64, u64), ReportError> {
    let reporter = settings.name.as_str();
    let client_id = format!("ipenrich-report-{reporter}-decide");
    let (mut decider, consumer, mut restored) =
        open(settings, metrics, permits, &client_id).await?;
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resend = tokio::time::interval(RESEND_EVERY);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Membership is looked at every 200 ms even while no signal comes, so a new
    // assignment's restore starts at once.
    let mut membership = tokio::time::interval(Duration::from_millis(200));
    membership.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(reporter, topic = %settings.signals_topic, dry_run = settings.dry_run, "decision stage running");
    loop {
        let msg = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            _ = flush.tick(), if !decider.pending.is_empty() => {
                decider.flush(&consumer).await?;
                continue;
            }
            done = restored.recv() => {
                let Some(done) = done else { continue };
                let held = decider.owned.restored(done, &decider.book, &consumer, &settings.signals_topic, reporter)?;
                for m in held {
                    if !decider.process(&m, &mut stop).await? {
                        break;
                    }
                }
                continue;
            }
            _ = membership.tick() => {
                decider.update();
                continue;
            }
            _ = sweep.tick() => {
                decider.sweep(&consumer).await?;
                continue;
            }
            _ = resend.tick() => {
                decider.resend(&consumer, &mut stop).await?;
                continue;
            }
            msg = consumer.recv() => msg,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                warn!(reporter, error = %e, "decision consumer error");
                continue;
            }
        };
        decider.update();
        let (partition, offset) = (msg.partition(), msg.offset());
        if !decider.owned.admit(partition, &msg) {
            debug!(
                reporter,
                partition,
                offset,
                "signal of a partition not ready (held) or revoked (left to its next owner)"
            );
            continue;
        }
        if !decider.process(&msg, &mut stop).await? {
            break;
        }
        if decider.pending.len() >= FLUSH_AT {
            decider.flush(&consumer).await?;
        }
    }
    decider.flush(&consumer).await?;
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        debug!(reporter, error = %e, "final decision commit");
    }
    let (decisions, sent) = (decider.decisions(), decider.sent);
    info!(reporter, decisions, sent, "decision stage stopped");
    Ok((decisions, sent))
}

/// The decision stage's consumer (subscribed), its decider, and where restores
/// report back.
async fn open<'a>(
    settings: &'a ReporterSettings,
    metrics: ReportMetrics,
    permits: Arc<dyn Permits>,
    client_id: &str,
) -> Result<
    (
        Decider<'a>,
        StreamConsumer<DecideContext>,
        tokio::sync::mpsc::UnboundedReceiver<Restored>,
    ),
    ReportError,
> {
    let submitter = submitter(settings, permits)?;
    let audit = audit_sink(settings, client_id).await?;
    let (consumer, owned, restored, signal_partitions) = subscribe(settings, client_id)?;
    let mut book = Book::new(settings);
    book.set_partitions(signal_partitions);
    let restorer = Arc::new(Restorer {
        brokers: settings.brokers.clone(),
        options: settings.options.clone(),
        topic: settings.changelog_topic.clone(),
        group: format!("{}-restore", settings.decision_group_id),
        txn_prefix: settings.decision_group_id.clone(),
    });
    let decider = Decider {
        settings,
        book: Arc::new(Mutex::new(book)),
        owned,
        restorer,
        submitter,
        clock: Clock::system(),
        sent: 0,
        audit,
        metrics,
        pending: Vec::new(),
        decided: 0,
    };
    Ok((decider, consumer, restored))
}

/// A decided (or skipped) signal whose changelog writes are not committed yet:
/// its audit record and offset wait for the commit.
struct Decided {
    partition: i32,
    offset: i64,
    /// None for a record that was not a signal of this reporter.
    record: Option<AuditRecord>,
}

/// The ipinsights submitter, or none in dry-run.
fn submitter(
    settings: &ReporterSettings,
    permits: Arc<dyn Permits>,
) -> Result<Option<Submitter>, ReportError> {
    match (&settings.ipinsights, settings.dry_run) {
        (_, true) => Ok(None),
        (None, false) => Err(ReportError::Config(
            "ipinsights is required unless dry_run".into(),
        )),
        (Some(i), false) => {
            let Some(source) = &i.api_key else {
                return Err(ReportError::Config(
                    "ipinsights.api_key is required unless dry_run".into(),
                ));
            };
            let key = Secret::from_source(source)?;
            let client = IpInsightsClient::new(&HttpSettings::new(&i.base_url, key)?)?;
            Ok(Some(Submitter::new(client, permits, settings.max_attempts)))
        }
    }
}

/// Where decisions are audited.
async fn audit_sink(
    settings: &ReporterSettings,
    client_id: &str,
) -> Result<AuditSink, ReportError> {
    Ok(match &settings.audit {
        AuditConfig::File(f) => AuditSink::file(f.path.clone()).await?,
        AuditConfig::Kafka(k) => AuditSink::Kafka {
            producer: settings.clients().producer(client_id)?,
            topic: k.topic.clone(),
        },
    })
}

/// The decision consumer, subscribed once the topics are known to fit together,
/// the partitions it owns as its rebalances announce them, and the signals topic's
/// partition count (the daily cap is shared over them).
fn subscribe(
    settings: &ReporterSettings,
    client_id: &str,
) -> Result<
    (
        StreamConsumer<DecideContext>,
        Owned,
        tokio::sync::mpsc::UnboundedReceiver<Restored>,
        u32,
    ),
    ReportError,
> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let context = DecideContext {
        membership: tx,
        signals_topic: settings.signals_topic.clone(),
        reporter: settings.name.clone(),
    };
    let consumer = settings.clients().stage_consumer(
        client_id,
        &settings.decision_group_id,
        context,
        "decision consumer create",
    )?;
    let signal_partitions = partitions(&consumer, &settings.signals_topic)?;
    let changelog_partitions = partitions(&consumer, &settings.changelog_topic)?;
    if changelog_partitions < signal_partitions {
        return Err(ReportError::Topology(format!(
            "changelog topic {} has {changelog_partitions} partitions, the signals topic {} has {signal_partitions}: it needs at least as many",
            settings.changelog_topic, settings.signals_topic
        )));
    }
    if (settings.daily_cap as usize) < signal_partitions {
        return Err(ReportError::Topology(format!(
            "daily_cap {} is below the {signal_partitions} partitions of signals topic {}: each partition reports at most its share of the cap, so some attackers could never be reported (raise daily_cap or use fewer partitions)",
            settings.daily_cap, settings.signals_topic
        )));
    }
    consumer
        .subscribe(&[&settings.signals_topic])
        .map_err(|source| ReportError::Kafka {
            what: "decision subscribe",
            source,
        })?;
    let (owned, restored) = Owned::new(rx);
    Ok((consumer, owned, restored, signal_partitions as u32))
}

/// Takes verdicts on the book, keeps the changelog in step, sends reports.
struct Decider<'a> {
    settings: &'a ReporterSettings,
    book: Arc<Mutex<Book>>,
    /// The partitions owned, their restores and their fenced changelog writers.
    owned: Owned,
    restorer: Arc<Restorer>,
    /// None in dry-run.
    submitter: Option<Submitter>,
    clock: Clock,
    /// Reports accepted by the provider.
    sent: u64,
    audit: AuditSink,
    metrics: ReportMetrics,
    /// Decisions waiting for their changelog commit, in order.
    pending: Vec<Decided>,
    /// Signals decided and audited.
    decided: u64,
}

impl Decider<'_> {
    /// Forgets IPs with nothing left to remember, tombstoning them.
    async fn sweep(&mut self, consumer: &StreamConsumer<DecideContext>) -> Result<(), ReportError> {
        let (revoked, gone) = self
            .owned
            .sweep(&self.book, &self.restorer, self.clock.now_ms());
        self.forget(&revoked);
        for (p, ip) in gone {
            self.write(p, ip, None).await?;
        }
        self.flush(consumer).await
    }

    /// Applies membership changes; decisions of revoked partitions are dropped
    /// with their uncommitted writes (the next owner decides those signals).
    fn update(&mut self) {
        let revoked = self.owned.update(&self.book, &self.restorer);
        self.forget(&revoked);
    }

    fn forget(&mut self, revoked: &[i32]) {
        if !revoked.is_empty() {
            self.pending.retain(|d| !revoked.contains(&d.partition));
        }
    }

    /// Signals decided and audited so far.
    fn decisions(&self) -> u64 {
        self.decided
    }

    /// Commits every open changelog transaction.
    async fn commit_all(&self) -> Result<(), ReportError> {
        let topic = &self.settings.changelog_topic;
        // One transaction per partition, committed side by side.
        futures::future::try_join_all(
            self.owned
                .writers()
                .into_iter()
                .map(|(partition, writer)| writer.commit(topic, partition)),
        )
        .await?;
        Ok(())
    }

    /// Commits the changelog writes, then audits the decisions they belong to and
    /// stores their offsets, in order.
    async fn flush(&mut self, consumer: &StreamConsumer<DecideContext>) -> Result<(), ReportError> {
        self.commit_all().await?;
        let reporter = self.settings.name.as_str();
        let topic = self.settings.signals_topic.as_str();
        let pending = std::mem::take(&mut self.pending);
        let records: Vec<&AuditRecord> = pending.iter().filter_map(|d| d.record.as_ref()).collect();
        self.audit.write_batch(&records).await?;
        for d in &pending {
            if let Some(record) = &d.record {
                self.metrics.decision(reporter, record.outcome);
                self.decided += 1;
            }
            if let Err(e) = consumer.store_offset(topic, d.partition, d.offset) {
                debug!(reporter, error = %e, partition = d.partition, "offset not stored");
            }
        }
        Ok(())
    }

    /// Decides one signal record of an owned, restored partition; its audit and
    /// offset wait for the commit of its writes. False when stopping interrupted it.
    async fn process(
        &mut self,
        msg: &impl Message,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, ReportError> {
        let reporter = self.settings.name.as_str();
        let (partition, offset) = (msg.partition(), msg.offset());
        let signal = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<Signal>(p).ok())
            .filter(|s| s.reporter == reporter);
        let record = match signal {
            None => {
                debug!(
                    reporter,
                    partition, offset, "signal skipped (undecodable or another reporter's)"
                );
                None
            }
            Some(signal) => match self.decide(partition, &signal, stop).await? {
                Some(record) => Some(record),
                None => return Ok(false),
            },
        };
        self.pending.push(Decided {
            partition,
            offset,
            record,
        });
        Ok(true)
    }

    /// Decides one signal: the verdict, its changelog write, the report. Returns the
    /// audit record, or None when stopping interrupted the report (undone, so the
    /// next owner decides the signal again).
    async fn decide(
        &mut self,
        partition: i32,
        signal: &Signal,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<AuditRecord>, ReportError> {
        let now = self.clock.now_ms();
        let (verdict, dirty, snapshot, key) = {
            let mut b = self.book.lock().expect("book lock");
            let (verdict, dirty) = b.on_signal(partition, signal, now);
            let snapshot = dirty.then(|| b.state(&signal.ip).cloned()).flatten();
            (verdict, dirty, snapshot, b.key(signal.ip))
        };
        if dirty {
            self.write(partition, key, snapshot.as_ref()).await?;
        }
        let mut record = self.audit_record(now, signal.ip, &signal.rule);
        record.outcome = match verdict {
            Verdict::NotPublic => Outcome::NotPublic,
            Verdict::AllowListed => Outcome::AllowListed,
            Verdict::BelowThreshold { count } => {
                record.count = Some(count);
                Outcome::BelowThreshold
            }
            Verdict::Stale => Outcome::Stale,
            Verdict::Cooldown => Outcome::Cooldown,
            Verdict::Capped => Outcome::Capped,
            Verdict::Report(c) => match self.report(partition, &c, &mut record, stop).await? {
                Some(outcome) => outcome,
                None => return Ok(None),
            },
        };
        Ok(Some(record))
    }

    /// Sends the report of a candidate (or, in dry-run, does not) and fills `record`
    /// in. A report that failed retryably, or was interrupted by stopping, is undone
    /// in the book and the changelog; None means stopping interrupted it.
    async fn report(
        &mut self,
        partition: i32,
        c: &Candidate,
        record: &mut AuditRecord,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Outcome>, ReportError> {
        let reporter = self.settings.name.as_str();
        let request = request(self.settings, c);
        record.count = Some(c.count);
        record.categories = request.categories.clone();
        record.source = request.source;
        record.comment = request.comment.clone();
        let Some(s) = &self.submitter else {
            info!(reporter, rule = %c.rule, count = c.count, "dry run: would report");
            return Ok(Some(Outcome::DryRun));
        };
        let key = self.book.lock().expect("book lock").key(c.ip);
        // The outbox entry is in the changelog before the report leaves.
        self.commit_all().await?;
        let sent = s.send(&request, stop).await;
        if let Some(outcome) = self.confirm(key, &sent, record).await? {
            self.sent += u64::from(outcome == Outcome::Sent);
            return Ok(Some(outcome));
        }
        Ok(Some(match sent {
            Sent::Accepted(_) | Sent::Duplicate => Outcome::Sent,
            Sent::Failed {
                error,
                retryable: true,
            } => {
                // Maybe accepted (a timeout), maybe not: the outbox keeps it, and
                // it is sent again within the provider's duplicate window.
                warn!(reporter, rule = %c.rule, %error, "report not confirmed; kept in the outbox");
                record.error = Some(format!(
                    "{error}; kept in the outbox, sent again within 15 minutes"
                ));
                Outcome::Failed
            }
            Sent::Failed {
                error,
                retryable: false,
            } => {
                warn!(reporter, rule = %c.rule, %error, "report refused");
                self.revert(c, partition).await?;
                record.error = Some(error);
                Outcome::Failed
            }
            // Not confirmed: the outbox keeps it for whoever owns the partition
            // next, and the offset stays unstored.
            Sent::Stopped => return Ok(None),
        }))
    }

    /// An audit record of a decision on `ip` by `rule` at `now`, outcome to fill in.
    fn audit_record(&self, now: u64, ip: IpAddr, rule: &str) -> AuditRecord {
        AuditRecord {
            at_ms: now,
            reporter: self.settings.name.clone(),
            ip,
            outcome: Outcome::BelowThreshold,
            rule: rule.to_owned(),
            count: None,
            categories: Vec::new(),
            source: None,
            comment: None,
            report_id: None,
            error: None,
            dry_run: self.settings.dry_run,
        }
    }

    /// The provider has the report (accepted, or a duplicate): its outbox is emptied
    /// and the outcome known. None for any other answer.
    async fn confirm(
        &self,
        key: IpAddr,
        sent: &Sent,
        record: &mut AuditRecord,
    ) -> Result<Option<Outcome>, ReportError> {
        Ok(match sent {
            Sent::Accepted(id) => {
                self.settle(key, Some(*id)).await?;
                record.report_id = Some(*id);
                Some(Outcome::Sent)
            }
            Sent::Duplicate => {
                self.settle(key, None).await?;
                Some(Outcome::Deduplicated)
            }
            _ => None,
        })
    }

    /// Empties `key`'s outbox in the book and the changelog.
    async fn settle(&self, key: IpAddr, report_id: Option<u64>) -> Result<(), ReportError> {
        let settled = self.book.lock().expect("book lock").settle(key, report_id);
        match settled {
            Some((partition, state)) => self.write(partition, key, Some(&state)).await,
            None => Ok(()),
        }
    }

    /// Sends the reports of the outbox again (after a crash, a timeout or a new
    /// owner's restore) while the provider's duplicate window is open, so a copy it
    /// already has is refused as a duplicate, never reported twice; a report past
    /// the window is given up and audited `lost`. At most [`RESEND_PER_TICK`] sends.
    async fn resend(
        &mut self,
        consumer: &StreamConsumer<DecideContext>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ReportError> {
        self.update();
        let records = self.resend_round(stop).await?;
        // Settled outboxes are committed before their decisions are audited.
        self.flush(consumer).await?;
        for record in records {
            self.audit.write(&record).await?;
            self.metrics.decision(&self.settings.name, record.outcome);
        }
        Ok(())
    }

    /// One round of [`Decider::resend`]: the audit records of what it decided.
    async fn resend_round(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Vec<AuditRecord>, ReportError> {
        let mut out = Vec::new();
        let Some(submitter) = &self.submitter else {
            return Ok(out);
        };
        self.commit_all().await?;
        let pending = self.book.lock().expect("book lock").pending();
        let started = tokio::time::Instant::now();
        for (_, key, p) in pending.into_iter().take(RESEND_PER_TICK) {
            // Signals wait meanwhile: a round ends after RESEND_ROUND (each send is
            // bounded by MAX_SEND_TIME), and at the first send still failing.
            if started.elapsed() > RESEND_ROUND {
                break;
            }
            let now = self.clock.now_ms();
            let c = p.candidate();
            let mut record = self.audit_record(now, c.ip, &c.rule);
            let request = request(self.settings, &c);
            record.count = Some(c.count);
            record.categories = request.categories.clone();
            record.source = request.source;
            record.comment = request.comment.clone();
            if now.saturating_sub(p.since_ms) >= DUPLICATE_WINDOW_MS {
                self.settle(key, None).await?;
                record.outcome = Outcome::Lost;
                record.error = Some("not confirmed within the provider's 15-minute duplicate window: not sent again".into());
                out.push(record);
                continue;
            }
            let sent = submitter.send(&request, stop).await;
            if let Some(outcome) = self.confirm(key, &sent, &mut record).await? {
                self.sent += u64::from(outcome == Outcome::Sent);
                record.outcome = outcome;
                out.push(record);
                continue;
            }
            record.outcome = match sent {
                Sent::Accepted(_) | Sent::Duplicate => Outcome::Sent,
                Sent::Failed { error, retryable } => {
                    if retryable {
                        debug!(reporter = %self.settings.name, ip = %c.ip, %error, "outbox report still not confirmed");
                        break;
                    }
                    self.settle(key, None).await?;
                    record.error = Some(error);
                    Outcome::Failed
                }
                Sent::Stopped => break,
            };
            out.push(record);
        }
        Ok(out)
    }

    /// Undoes a report's ledger entry, in the book and the changelog.
    async fn revert(&self, c: &Candidate, partition: i32) -> Result<(), ReportError> {
        let (snapshot, key) = {
            let mut b = self.book.lock().expect("book lock");
            b.revert(c);
            (b.state(&c.ip).cloned(), b.key(c.ip))
        };
        self.write(partition, key, snapshot.as_ref()).await
    }

    /// Writes one attacker's state (or a tombstone) under its book key to the
    /// changelog, through the partition's fenced writer, and waits for the commit.
    async fn write(
        &self,
        partition: i32,
        ip: IpAddr,
        state: Option<&IpState>,
    ) -> Result<(), ReportError> {
        let topic = &self.settings.changelog_topic;
        let Some(writer) = self.owned.writer(partition) else {
            // Only restored partitions have IPs in the book: not ours any more.
            return Err(ReportError::Fenced {
                topic: topic.clone(),
                partition,
            });
        };
        writer.write(topic, partition, ip, state)
    }
}

/// The report for a candidate, comment from the template.
pub fn request(settings: &ReporterSettings, c: &Candidate) -> ReportRequest {
    let categories: Vec<String> = c
        .categories
        .iter()
        .map(|x| {
            serde_json::to_value(x)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    let source = serde_json::to_value(c.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let comment = render_comment(
        &settings.template,
        &CommentVars {
            ip: c.ip,
            rule: &c.rule,
            count: c.count,
            findtime: &fmt_duration(c.findtime),
            categories: &categories.join(", "),
            source: &source,
            sample: c.sample.as_deref().unwrap_or("-"),
            reporter: &settings.name,
            threat_score: c.threat_score,
        },
    );
    ReportRequest {
        ip: c.ip,
        categories: c.categories.clone(),
        comment: (!comment.is_empty()).then_some(comment),
        source: Some(c.source),
    }
}
