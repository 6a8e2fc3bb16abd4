//! Which signal partitions this decision replica owns, and its right to write their
//! changelog partitions.
//!
//! Contract:
//! - **Non-blocking.** The rebalance callbacks only pause the newly assigned
//!   partitions and announce the change. Each assigned partition is restored in a
//!   task of its own (a blocking thread), while the decision loop goes on deciding
//!   the signals of the partitions it has; when the restore is done the loop puts
//!   its state in the book and resumes the partition. No signal of a partition is
//!   decided before its restore, and a restore outlived by its partition (revoked
//!   meanwhile) is thrown away.
//! - **Fenced.** Changelog partition n is written only through a transactional
//!   producer whose `transactional.id` is the decision group's and n's. The restore
//!   task of a new owner first initialises that producer: the broker then aborts
//!   what the previous owner left open and refuses every later write of the
//!   previous owner's producer (its epoch is old), so a replica that was paused, lost
//!   its partitions and resumes cannot change the changelog another replica now
//!   owns (its writes fail as [`ReportError::Fenced`], and the reporter restarts).
//!   The changelog is read `read_committed` after that, so the restore sees exactly
//!   the writes that were acknowledged to their writer.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::kafka::Clients;
use super::state::{Book, IpState};
use super::ReportError;

/// A restore that has read nothing for this long says so (and goes on: a throttled
/// or unreachable broker is transient, and starting over would not be faster).
const RESTORE_STALL: Duration = Duration::from_secs(60);
/// Longest wait for a transactional call (init, commit) of a changelog writer.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// The changelog header naming the process that wrote a record (for audits of
/// who wrote what; the zombie test reads it).
pub const WRITER_HEADER: &str = "ipenrich.writer";

/// A change of the decision consumer's partitions, as the rebalance callbacks saw it.
#[derive(Debug)]
pub(crate) enum Membership {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Rebalance callbacks: pause what was assigned, tell the decision loop what came
/// and went. They never wait on a changelog read.
pub(crate) struct DecideContext {
    pub membership: mpsc::UnboundedSender<Membership>,
    pub signals_topic: String,
    pub reporter: String,
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

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(reporter = %self.reporter, partitions = tpl.count(), "decision partitions assigned, paused until restored");
                // Nothing of a new partition is fetched until its restore is done.
                if let Err(e) = consumer.pause(tpl) {
                    warn!(reporter = %self.reporter, error = %e, "pausing assigned partitions failed");
                }
                let _ = self
                    .membership
                    .send(Membership::Assigned(self.partitions(tpl)));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(reporter = %self.reporter, error = %e, "rebalance error"),
        }
    }
}

/// The transactional producer that alone may write one changelog partition.
pub(crate) type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// A changelog partition's writer and whether it has a transaction open. Writes go
/// into the open transaction; [`Writer::commit`] makes them visible, at once, to
/// the partition's next restore.
pub(crate) struct Writer {
    producer: TxnProducer,
    open: std::sync::atomic::AtomicBool,
}

/// A restored partition: its records, oldest first, and its writer.
type Restore = (Vec<(IpAddr, Option<IpState>)>, Writer);

/// What a restore task brings back.
pub(crate) struct Restored {
    partition: i32,
    epoch: u64,
    result: Result<Restore, ReportError>,
    took: Duration,
}

/// Reads changelog partitions back, after fencing their previous writer.
pub(crate) struct Restorer {
    pub brokers: String,
    pub options: BTreeMap<String, String>,
    pub topic: String,
    /// Group of the reading consumers (they never commit).
    pub group: String,
    /// Prefix of the writers' `transactional.id`s: the decision group.
    pub txn_prefix: String,
}

impl Restorer {
    fn clients(&self) -> Clients<'_> {
        Clients {
            brokers: &self.brokers,
            options: &self.options,
        }
    }

    /// Fences the partition's previous writer, then reads the partition (blocking).
    fn restore(&self, partition: i32, cancel: &AtomicBool) -> Result<Restore, ReportError> {
        let writer = self.writer(partition)?;
        let records = self.read(partition, cancel)?;
        Ok((records, writer))
    }

    /// The partition's transactional producer, initialised: from now on the
    /// previous owner's writes to it are refused.
    fn writer(&self, partition: i32) -> Result<Writer, ReportError> {
        let txn_id = format!("{}-{}-{partition}", self.txn_prefix, self.topic);
        let producer: TxnProducer = self.clients().transactional_producer(&txn_id)?;
        producer
            .init_transactions(TXN_TIMEOUT)
            .map_err(|source| ReportError::Kafka {
                what: "changelog writer init (fencing the previous owner)",
                source,
            })?;
        Ok(Writer {
            producer,
            open: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Every committed record of one changelog partition, oldest first (blocking).
    fn read(
        &self,
        partition: i32,
        cancel: &AtomicBool,
    ) -> Result<Vec<(IpAddr, Option<IpState>)>, ReportError> {
        let fail = |reason: String| ReportError::Restore {
            topic: self.topic.clone(),
            partition,
            reason,
        };
        let consumer = self
            .clients()
            .reading_consumer(&self.group, &self.group)
            .map_err(|e| fail(e.to_string()))?;
        // read_committed: the end is the last stable offset, which the fencing
        // above has moved past anything the previous owner left open.
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
        let mut progress = Instant::now();
        loop {
            if cancel.load(Ordering::Relaxed) {
                // Revoked meanwhile, or the stage stopped: the result would be dropped.
                return Ok(out);
            }
            if progress.elapsed() > RESTORE_STALL {
                warn!(topic = %self.topic, partition, read = out.len(), end = high, "changelog restore made no progress for {RESTORE_STALL:?}; still reading");
                progress = Instant::now();
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    progress = Instant::now();
                    if let Some(record) = self.record(partition, &m) {
                        out.push(record);
                    }
                    if m.offset() >= high - 1 {
                        return Ok(out);
                    }
                }
                Some(Err(e)) => return Err(fail(e.to_string())),
                None => {
                    // Compaction and transaction markers leave gaps: ask where we are.
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

    /// One changelog record as (key, state or tombstone); None (logged) when it
    /// cannot be read.
    fn record(&self, partition: i32, m: &impl Message) -> Option<(IpAddr, Option<IpState>)> {
        let ip = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.parse::<IpAddr>().ok());
        let Some(ip) = ip else {
            warn!(topic = %self.topic, partition, offset = m.offset(), "changelog record without an ip key");
            return None;
        };
        match m.payload() {
            None => Some((ip, None)),
            Some(p) => match serde_json::from_slice::<IpState>(p) {
                Ok(s) => Some((ip, Some(s))),
                Err(e) => {
                    warn!(topic = %self.topic, partition, offset = m.offset(), error = %e, "changelog record skipped");
                    None
                }
            },
        }
    }
}

/// Where an assigned partition stands.
enum Phase {
    /// Its restore task (this epoch) is running, cancelled by the flag; its
    /// signals are held.
    Restoring(u64, Arc<AtomicBool>),
    /// Restored; its changelog writer is ours.
    Ready(Arc<Writer>),
}

/// The signal partitions this stage owns, their restores and their writers.
///
/// Callbacks run inside the consumer's poll, before the poll hands out any signal
/// of a new assignment and before a revoked partition's next owner can start, so
/// applying the announced changes before each signal sees every change that signal
/// depends on.
pub(crate) struct Owned {
    membership: mpsc::UnboundedReceiver<Membership>,
    partitions: BTreeMap<i32, Phase>,
    epoch: u64,
    restored_tx: mpsc::UnboundedSender<Restored>,
    /// Signals of a partition still restoring (fetched before its pause took hold).
    held: BTreeMap<i32, Vec<OwnedMessage>>,
}

impl Owned {
    pub fn new(
        membership: mpsc::UnboundedReceiver<Membership>,
    ) -> (Self, mpsc::UnboundedReceiver<Restored>) {
        let (restored_tx, restored_rx) = mpsc::unbounded_channel();
        let owned = Owned {
            membership,
            partitions: BTreeMap::new(),
            epoch: 0,
            restored_tx,
            held: BTreeMap::new(),
        };
        (owned, restored_rx)
    }

    /// Applies the changes the callbacks announced: revoked partitions are forgotten
    /// (their IPs leave the book, their writer is closed), assigned ones start
    /// their restore task.
    /// Returns the partitions revoked.
    pub fn update(&mut self, book: &std::sync::Mutex<Book>, restorer: &Arc<Restorer>) -> Vec<i32> {
        let mut revoked = Vec::new();
        while let Ok(change) = self.membership.try_recv() {
            match change {
                Membership::Assigned(ps) => {
                    for p in ps {
                        self.epoch += 1;
                        let cancel = Arc::new(AtomicBool::new(false));
                        self.partitions
                            .insert(p, Phase::Restoring(self.epoch, cancel.clone()));
                        self.held.remove(&p);
                        self.spawn_restore(p, restorer, cancel);
                    }
                }
                Membership::Revoked(ps) => {
                    let mut book = book.lock().expect("book lock");
                    for p in ps {
                        match self.partitions.remove(&p) {
                            Some(Phase::Ready(writer)) => {
                                // Closing a producer may wait on the brokers: not here.
                                // Its open transaction, if any, is aborted by the
                                // next owner: those signals are decided again there.
                                drop(tokio::task::spawn_blocking(move || drop(writer)));
                            }
                            Some(Phase::Restoring(_, cancel)) => {
                                cancel.store(true, Ordering::Relaxed)
                            }
                            None => {}
                        }
                        self.held.remove(&p);
                        book.drop_partition(p);
                        revoked.push(p);
                    }
                }
            }
        }
        revoked
    }

    fn spawn_restore(&self, partition: i32, restorer: &Arc<Restorer>, cancel: Arc<AtomicBool>) {
        let (r, tx, epoch) = (restorer.clone(), self.restored_tx.clone(), self.epoch);
        drop(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = r.restore(partition, &cancel);
            let _ = tx.send(Restored {
                partition,
                epoch,
                result,
                took: started.elapsed(),
            });
        }));
    }

    /// Takes a finished restore: its state goes into the book, the partition is
    /// resumed, and the signals held meanwhile are returned to be decided first.
    /// A restore of a partition revoked (or reassigned) since is dropped. A failed
    /// restore of an owned partition stops the stage: deciding without the ledger
    /// could repeat reports.
    pub fn restored(
        &mut self,
        done: Restored,
        book: &std::sync::Mutex<Book>,
        consumer: &StreamConsumer<DecideContext>,
        signals_topic: &str,
        reporter: &str,
    ) -> Result<Vec<OwnedMessage>, ReportError> {
        let p = done.partition;
        if !matches!(self.partitions.get(&p), Some(Phase::Restoring(e, _)) if *e == done.epoch) {
            return Ok(Vec::new());
        }
        let (records, writer) = done.result?;
        let n = records.len();
        {
            let mut book = book.lock().expect("book lock");
            book.drop_partition(p);
            for (ip, state) in records {
                book.restore(p, ip, state);
            }
            info!(reporter, partition = p, records = n, ips = book.len(), took = ?done.took, "decision partition restored");
        }
        self.partitions.insert(p, Phase::Ready(Arc::new(writer)));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(signals_topic, p);
        if let Err(e) = consumer.resume(&tpl) {
            warn!(reporter, partition = p, error = %e, "resuming a restored partition failed");
        }
        Ok(self.held.remove(&p).unwrap_or_default())
    }

    /// Whether a signal of `partition` may be decided now: owned and restored.
    /// A signal of a partition still restoring is kept (`held`) and handed back by
    /// [`Owned::restored`]; false then too.
    pub fn admit(&mut self, partition: i32, msg: &rdkafka::message::BorrowedMessage<'_>) -> bool {
        match self.partitions.get(&partition) {
            Some(Phase::Ready(_)) => true,
            Some(Phase::Restoring(..)) => {
                self.held.entry(partition).or_default().push(msg.detach());
                false
            }
            None => false,
        }
    }

    /// The writer of an owned, restored partition.
    pub fn writer(&self, partition: i32) -> Option<Arc<Writer>> {
        match self.partitions.get(&partition) {
            Some(Phase::Ready(w)) => Some(w.clone()),
            _ => None,
        }
    }

    /// Every writer of a restored partition, with its partition.
    pub fn writers(&self) -> Vec<(i32, Arc<Writer>)> {
        self.partitions
            .iter()
            .filter_map(|(p, phase)| match phase {
                Phase::Ready(w) => Some((*p, w.clone())),
                Phase::Restoring(..) => None,
            })
            .collect()
    }

    /// The IPs of owned partitions with nothing left to remember at `now_ms`, taken
    /// out of `book`. Revoked partitions are forgotten first: a sweep must not
    /// tombstone an IP in a changelog partition that another replica owns now.
    pub fn sweep(
        &mut self,
        book: &std::sync::Mutex<Book>,
        restorer: &Arc<Restorer>,
        now_ms: u64,
    ) -> (Vec<i32>, Vec<(i32, IpAddr)>) {
        let revoked = self.update(book, restorer);
        (revoked, book.lock().expect("book lock").sweep(now_ms))
    }
}

impl Writer {
    /// Puts one IP's state (or a tombstone) into the open transaction (opening one
    /// if none is): visible once [`Writer::commit`] returns. A writer fenced by a
    /// newer owner fails with [`ReportError::Fenced`].
    pub fn write(
        &self,
        topic: &str,
        partition: i32,
        ip: IpAddr,
        state: Option<&IpState>,
    ) -> Result<(), ReportError> {
        let fenced = |source: KafkaError| classify(source, topic, partition);
        if !self.open.load(Ordering::Relaxed) {
            self.producer.begin_transaction().map_err(fenced)?;
            self.open.store(true, Ordering::Relaxed);
        }
        let key = ip.to_string();
        let value = state.map(|s| serde_json::to_vec(s).expect("state serialises"));
        let writer_id = writer_id();
        let headers = OwnedHeaders::new().insert(Header {
            key: WRITER_HEADER,
            value: Some(writer_id.as_str()),
        });
        let mut record = BaseRecord::<String, Vec<u8>>::to(topic)
            .key(&key)
            .partition(partition)
            .headers(headers);
        if let Some(v) = &value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // The local queue is full: it drains on its own thread.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((source, _)) => return Err(fenced(source)),
            }
        }
    }

    /// Commits the open transaction, if any (on a blocking thread), and waits
    /// for the brokers. On failure the transaction is aborted and the error
    /// returned: the writes it held never happened, and the reporter restarts
    /// from the changelog.
    pub async fn commit(self: Arc<Self>, topic: &str, partition: i32) -> Result<(), ReportError> {
        if !self.open.load(Ordering::Relaxed) {
            return Ok(());
        }
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            self.open.store(false, Ordering::Relaxed);
            match self.producer.commit_transaction(TXN_TIMEOUT) {
                Ok(()) => Ok(()),
                Err(source) => {
                    let _ = self.producer.abort_transaction(TXN_TIMEOUT);
                    Err(classify(source, &topic, partition))
                }
            }
        })
        .await
        .map_err(|e| ReportError::Topology(format!("changelog commit task: {e}")))?
    }
}

/// A failed transactional call: fenced when a newer owner holds the partition.
fn classify(source: KafkaError, topic: &str, partition: i32) -> ReportError {
    let code = match &source {
        KafkaError::Transaction(e) => Some(e.code()),
        other => other.rdkafka_error_code(),
    };
    let fenced = matches!(
        code,
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    );
    if fenced {
        ReportError::Fenced {
            topic: topic.to_owned(),
            partition,
        }
    } else {
        ReportError::Kafka {
            what: "changelog write",
            source,
        }
    }
}

/// This process, as the changelog's writer header names it.
pub fn writer_id() -> String {
    format!("pid-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReporterConfig;

    fn book() -> std::sync::Mutex<Book> {
        let yaml = "name: t\nbrokers: b\ntopics: [in]\nsignals_topic: s\nchangelog_topic: c\naudit: {file: {path: /tmp/x}}\nrules:\n - name: sshd\n   when: [{field: message, exists: true}]\n   attacker: {role: source}\n   categories: [ssh_bruteforce]\n   source: fail2ban\n";
        let cfg: ReporterConfig = serde_yaml_ng::with::singleton_map_recursive::deserialize(
            serde_yaml_ng::Deserializer::from_str(yaml),
        )
        .unwrap();
        std::sync::Mutex::new(Book::new(&cfg.validate().unwrap()))
    }

    /// A revoke announced by the callback reaches the book before the next sweep,
    /// so a sweep never tombstones an IP in a changelog partition another replica
    /// owns now; the partition's signals are left to that owner.
    #[test]
    fn revoked_partitions_leave_the_book_before_a_sweep() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (mut owned, _restored) = Owned::new(rx);
        let restorer = Arc::new(Restorer {
            brokers: "127.0.0.1:1".into(),
            options: BTreeMap::new(),
            topic: "c".into(),
            group: "g".into(),
            txn_prefix: "g".into(),
        });
        let book = book();
        // As if both restores were under way.
        let no = || Arc::new(AtomicBool::new(false));
        owned.partitions.insert(0, Phase::Restoring(1, no()));
        owned.partitions.insert(1, Phase::Restoring(2, no()));
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
        let (revoked, gone) = owned.sweep(&book, &restorer, u64::MAX / 2);
        assert_eq!((revoked, gone), (vec![1], vec![(0, kept)]));
        assert!(owned.partitions.contains_key(&0));
        assert!(!owned.partitions.contains_key(&1));
    }
}
