//! Decision stage: signals in (one consumer per IP), verdicts, reports, audit.
//!
//! Contract, per signal and in this order: the verdict is taken on the book;
//! a changed IP state is written to the changelog and acknowledged; a report is
//! sent (or, in dry-run, not); the decision is audited (acknowledged or flushed);
//! only then is the signal's offset stored. When partitions are assigned, their
//! changelog is read to the end before their first signal is decided; when they
//! are revoked, their IPs are forgotten. A restore that fails stops the reporter:
//! deciding without the ledger could repeat reports.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::kafka::Clients;
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

/// How long reading one changelog partition back may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often IPs with nothing left to remember are dropped (and tombstoned).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often the outbox is sent again (and owned partitions not yet restored are).
const RESEND_EVERY: Duration = Duration::from_secs(5);
/// Most outbox reports sent again per round, so signals keep being decided.
const RESEND_PER_TICK: usize = 20;
/// A resend round starts no send after this long.
const RESEND_ROUND: Duration = Duration::from_secs(20);
/// ipinsights refuses a second report of an address within 15 minutes as a
/// duplicate (ipinsights-api.txt): the outbox is sent again only within it.
const DUPLICATE_WINDOW_MS: u64 = 15 * 60 * 1000;

/// Reads changelog partitions back.
struct Restorer {
    brokers: String,
    options: BTreeMap<String, String>,
    topic: String,
    group: String,
}

impl Restorer {
    /// Every record of one changelog partition, oldest first (blocking).
    fn read(&self, partition: i32) -> Result<Vec<(IpAddr, Option<IpState>)>, ReportError> {
        let fail = |reason: String| ReportError::Restore {
            topic: self.topic.clone(),
            partition,
            reason,
        };
        let clients = Clients {
            brokers: &self.brokers,
            options: &self.options,
        };
        let consumer = clients
            .reading_consumer(&self.group, &self.group)
            .map_err(|e| fail(e.to_string()))?;
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, partition, Duration::from_secs(10))
            .map_err(|e| fail(e.to_string()))?;
        let mut out = Vec::new();
        if high <= low {
            return Ok(out);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(low))
            .map_err(|e| fail(e.to_string()))?;
        consumer.assign(&tpl).map_err(|e| fail(e.to_string()))?;
        // Blocking: the decision loop runs this on a blocking thread and decides no
        // signal of the partition until it returns.
        let deadline = tokio::time::Instant::now() + RESTORE_TIMEOUT;
        loop {
            if tokio::time::Instant::now() > deadline {
                return Err(fail(format!(
                    "not at offset {high} after {RESTORE_TIMEOUT:?}"
                )));
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let ip = m
                        .key()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .and_then(|k| k.parse::<IpAddr>().ok());
                    match ip {
                        Some(ip) => {
                            let state = match m.payload() {
                                None => None,
                                Some(p) => match serde_json::from_slice::<IpState>(p) {
                                    Ok(s) => Some(s),
                                    Err(e) => {
                                        warn!(topic = %self.topic, partition, offset = m.offset(), error = %e, "changelog record skipped");
                                        continue;
                                    }
                                },
                            };
                            out.push((ip, state));
                        }
                        None => {
                            warn!(topic = %self.topic, partition, offset = m.offset(), "changelog record without an ip key")
                        }
                    }
                    if m.offset() >= high - 1 {
                        return Ok(out);
                    }
                }
                Some(Err(e)) => return Err(fail(e.to_string())),
                None => {
                    // Compaction may leave gaps at the end: ask where we are.
                    let at = consumer.position().ok().and_then(|p| {
                        p.find_partition(&self.topic, partition)
                            .and_then(|e| e.offset().to_raw())
                    });
                    if at.is_some_and(|o| o >= high) {
                        return Ok(out);
                    }
                }
            }
        }
    }
}

/// A change of the decision consumer's partitions, as the rebalance callbacks saw
/// it. The callbacks only send these; the decision loop does the work (restore,
/// forget) before it decides the next signal, so librdkafka's poll never waits
/// on a changelog read.
#[derive(Debug)]
enum Membership {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Rebalance callbacks: tell the decision loop which signal partitions came and went.
struct DecideContext {
    membership: std::sync::mpsc::Sender<Membership>,
    signals_topic: String,
    reporter: String,
}

impl DecideContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.signals_topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }
}

impl ClientContext for DecideContext {}

impl ConsumerContext for DecideContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            info!(reporter = %self.reporter, partitions = tpl.count(), "decision partitions revoked");
            // The receiver lives as long as the consumer; a send cannot fail.
            let _ = self
                .membership
                .send(Membership::Revoked(self.partitions(tpl)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let _ = self
                    .membership
                    .send(Membership::Assigned(self.partitions(tpl)));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(reporter = %self.reporter, error = %e, "rebalance error"),
        }
    }
}

/// The signal partitions this stage owns, and whether each one's state is back.
///
/// Callbacks run inside the consumer's poll, before the poll hands out any signal
/// of a new assignment and before a revoked partition's next owner can start, so
/// draining the channel before each signal sees every change that signal depends on.
struct Owned {
    membership: std::sync::mpsc::Receiver<Membership>,
    /// Assigned partitions, `true` once restored.
    partitions: BTreeMap<i32, bool>,
}

impl Owned {
    /// Applies the changes the callbacks announced: revoked partitions are forgotten
    /// (their IPs leave the book), assigned ones wait for their restore.
    fn update(&mut self, book: &Mutex<Book>) {
        while let Ok(change) = self.membership.try_recv() {
            match change {
                Membership::Assigned(ps) => {
                    for p in ps {
                        self.partitions.insert(p, false);
                    }
                }
                Membership::Revoked(ps) => {
                    let mut book = book.lock().expect("book lock");
                    for p in ps {
                        self.partitions.remove(&p);
                        book.drop_partition(p);
                    }
                }
            }
        }
    }

    /// The IPs of owned partitions with nothing left to remember at `now_ms`, taken
    /// out of `book`. Revoked partitions are forgotten first: a sweep must not
    /// tombstone an IP in a changelog partition that another replica owns now.
    fn sweep(&mut self, book: &Mutex<Book>, now_ms: u64) -> Vec<(i32, IpAddr)> {
        self.update(book);
        book.lock().expect("book lock").sweep(now_ms)
    }

    /// Whether a signal of `partition` may be decided: the partition is owned and
    /// its changelog is read back into `book` (now, on a blocking thread, if this is
    /// its first signal). `Ok(false)`: no longer owned, leave the signal to the next
    /// owner. A failed restore stops the stage: deciding without the ledger could
    /// repeat reports.
    /// Restores every assigned partition not restored yet, so a new owner finds
    /// (and sends again) its partitions' outbox without waiting for a signal.
    async fn restore_all(
        &mut self,
        restorer: &Arc<Restorer>,
        book: &Mutex<Book>,
        reporter: &str,
    ) -> Result<(), ReportError> {
        self.update(book);
        let waiting: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, restored)| !**restored)
            .map(|(p, _)| *p)
            .collect();
        for p in waiting {
            self.ready(p, restorer, book, reporter).await?;
        }
        Ok(())
    }

    async fn ready(
        &mut self,
        partition: i32,
        restorer: &Arc<Restorer>,
        book: &Mutex<Book>,
        reporter: &str,
    ) -> Result<bool, ReportError> {
        self.update(book);
        match self.partitions.get(&partition) {
            None => return Ok(false),
            Some(true) => return Ok(true),
            Some(false) => {}
        }
        let r = restorer.clone();
        let records = tokio::task::spawn_blocking(move || r.read(partition))
            .await
            .map_err(|e| ReportError::Restore {
                topic: restorer.topic.clone(),
                partition,
                reason: e.to_string(),
            })??;
        let n = records.len();
        let mut book = book.lock().expect("book lock");
        book.drop_partition(partition);
        for (ip, state) in records {
            book.restore(partition, ip, state);
        }
        info!(
            reporter,
            partition,
            records = n,
            ips = book.len(),
            "decision partition restored"
        );
        self.partitions.insert(partition, true);
        Ok(true)
    }
}

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

/// Writes one IP's state (or a tombstone) to its changelog partition and waits for the ack.
async fn write_state(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    ip: IpAddr,
    state: Option<&IpState>,
) -> Result<(), ReportError> {
    let key = ip.to_string();
    let value = state.map(|s| serde_json::to_vec(s).expect("state serialises"));
    let mut record = FutureRecord::<String, Vec<u8>>::to(topic)
        .key(&key)
        .partition(partition);
    if let Some(v) = &value {
        record = record.payload(v);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(source, _)| ReportError::Kafka {
            what: "changelog produce",
            source,
        })?;
    Ok(())
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
    let submitter = submitter(settings, permits)?;
    let audit = audit_sink(settings, &client_id).await?;
    let changelog = settings.clients().producer(&client_id)?;
    let (consumer, mut owned, signal_partitions) = subscribe(settings, &client_id)?;
    let mut book = Book::new(settings);
    book.set_partitions(signal_partitions);
    let book = Arc::new(Mutex::new(book));
    let restorer = Arc::new(Restorer {
        brokers: settings.brokers.clone(),
        options: settings.options.clone(),
        topic: settings.changelog_topic.clone(),
        group: format!("{}-restore", settings.decision_group_id),
    });
    let mut decider = Decider {
        settings,
        book,
        changelog,
        submitter,
        clock: Clock::system(),
        sent: 0,
    };
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resend = tokio::time::interval(RESEND_EVERY);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut decisions = 0u64;
    info!(reporter, topic = %settings.signals_topic, dry_run = settings.dry_run, "decision stage running");
    loop {
        let msg = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            _ = sweep.tick() => {
                decider.sweep(&mut owned).await?;
                continue;
            }
            _ = resend.tick() => {
                owned.restore_all(&restorer, &decider.book, reporter).await?;
                for record in decider.resend(&mut stop).await? {
                    audit.write(&record).await?;
                    metrics.decision(reporter, record.outcome);
                }
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
        let (partition, offset) = (msg.partition(), msg.offset());
        if !owned
            .ready(partition, &restorer, &decider.book, reporter)
            .await?
        {
            debug!(
                reporter,
                partition, offset, "signal of a revoked partition left to its next owner"
            );
            continue;
        }
        let signal = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<Signal>(p).ok())
            .filter(|s| s.reporter == reporter);
        let Some(signal) = signal else {
            debug!(
                reporter,
                partition, offset, "signal skipped (undecodable or another reporter's)"
            );
            let _ = consumer.store_offset(&settings.signals_topic, partition, offset);
            continue;
        };
        let Some(record) = decider.decide(partition, &signal, &mut stop).await? else {
            break;
        };
        audit.write(&record).await?;
        metrics.decision(reporter, record.outcome);
        decisions += 1;
        if let Err(e) = consumer.store_offset(&settings.signals_topic, partition, offset) {
            debug!(reporter, error = %e, partition, "offset not stored");
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        debug!(reporter, error = %e, "final decision commit");
    }
    let sent = decider.sent;
    info!(reporter, decisions, sent, "decision stage stopped");
    Ok((decisions, sent))
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
) -> Result<(StreamConsumer<DecideContext>, Owned, u32), ReportError> {
    let (tx, rx) = std::sync::mpsc::channel();
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
    let owned = Owned {
        membership: rx,
        partitions: BTreeMap::new(),
    };
    Ok((consumer, owned, signal_partitions as u32))
}

/// Takes verdicts on the book, keeps the changelog in step, sends reports.
struct Decider<'a> {
    settings: &'a ReporterSettings,
    book: Arc<Mutex<Book>>,
    /// Producer of the changelog topic.
    changelog: FutureProducer,
    /// None in dry-run.
    submitter: Option<Submitter>,
    clock: Clock,
    /// Reports accepted by the provider.
    sent: u64,
}

impl Decider<'_> {
    /// Forgets IPs with nothing left to remember, tombstoning them.
    async fn sweep(&self, owned: &mut Owned) -> Result<(), ReportError> {
        let gone = owned.sweep(&self.book, self.clock.now_ms());
        for (p, ip) in gone {
            self.write(p, ip, None).await?;
        }
        Ok(())
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
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Vec<AuditRecord>, ReportError> {
        let mut out = Vec::new();
        let Some(submitter) = &self.submitter else {
            return Ok(out);
        };
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
    /// changelog and waits for the ack.
    async fn write(
        &self,
        partition: i32,
        ip: IpAddr,
        state: Option<&IpState>,
    ) -> Result<(), ReportError> {
        write_state(
            &self.changelog,
            &self.settings.changelog_topic,
            partition,
            ip,
            state,
        )
        .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReporterConfig;

    fn book() -> Mutex<Book> {
        let yaml = "name: t\nbrokers: b\ntopics: [in]\nsignals_topic: s\nchangelog_topic: c\naudit: {file: {path: /tmp/x}}\nrules:\n - name: sshd\n   when: [{field: message, exists: true}]\n   attacker: {role: source}\n   categories: [ssh_bruteforce]\n   source: fail2ban\n";
        let cfg: ReporterConfig = serde_yaml_ng::with::singleton_map_recursive::deserialize(
            serde_yaml_ng::Deserializer::from_str(yaml),
        )
        .unwrap();
        Mutex::new(Book::new(&cfg.validate().unwrap()))
    }

    /// A revoke announced by the callback reaches the book before the next sweep,
    /// so a sweep never tombstones an IP in a changelog partition another replica
    /// owns now; the partition's signals are left to that owner.
    #[test]
    fn revoked_partitions_leave_the_book_before_a_sweep() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut owned = Owned {
            membership: rx,
            partitions: BTreeMap::new(),
        };
        let book = book();
        tx.send(Membership::Assigned(vec![0, 1])).unwrap();
        owned.update(&book);
        let (kept, revoked): (IpAddr, IpAddr) = (
            "203.0.113.7".parse().unwrap(),
            "198.51.100.9".parse().unwrap(),
        );
        book.lock()
            .unwrap()
            .restore(0, kept, Some(IpState::default()));
        book.lock()
            .unwrap()
            .restore(1, revoked, Some(IpState::default()));

        tx.send(Membership::Revoked(vec![1])).unwrap();
        assert_eq!(owned.sweep(&book, u64::MAX / 2), vec![(0, kept)]);
        assert!(owned.partitions.contains_key(&0));
        assert!(!owned.partitions.contains_key(&1));
    }
}
