//! A pipeline: source -> extract -> lookup -> merge -> sink, wired with bounded queues.
//!
//! The reader takes records from the source and spawns their processing (decode,
//! extract, lookup, render) as tasks, one per batch of records that were ready
//! together, which run in parallel; the handles travel in read order through a queue bounded by `max_in_flight`, so the writer sends
//! results in exactly the input order while enrichment finishes in any order, and
//! a slow lookup pauses reading instead of growing memory. Each send's delivery is
//! awaited concurrently; when it is acknowledged, the record's offset is
//! acknowledged to the source's watermark. A delivery failure stops the pipeline
//! without committing (at-least-once: the event is read again after a restart).
//!
//! Shutdown: stop reading, finish and deliver what was read, commit, all within
//! `shutdown_timeout`; past it the rest is abandoned uncommitted.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, FutureExt};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{
    DeadLetterConfig, Format, OutputConfig, PipelineConfig, SinkConfig, SlowLookup, SourceConfig,
};
use crate::event::{decode, BadEvent, Position, SourceRecord};
use crate::extract::{Extractor, IpClass};
use crate::failure::{classify_kafka, Class};
use crate::health::PipelineHealth;
use crate::lookup::build::SharedProviders;
use crate::lookup::{Chain, KeyRejected, Resolved, Status};
use crate::merge::{render, Enrichment};
use crate::metrics::PipelineMetrics;
use crate::sink::dead_letter::DeadLetter;
use crate::sink::file::LineSink;
use crate::sink::kafka::KafkaSink;
use crate::sink::{Delivery, Sink, SinkError};
use crate::source::kafka::KafkaSource;
use crate::source::lines::LineSource;
use crate::source::{Ack, Acker, Source, SourceError};

/// Why a pipeline could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("pipeline {pipeline}: source: {source}")]
    Source {
        pipeline: String,
        #[source]
        source: SourceError,
    },
    #[error("pipeline {pipeline}: sink: {source}")]
    Sink {
        pipeline: String,
        #[source]
        source: SinkError,
    },
    #[error("pipeline {pipeline}: provider {provider}: {reason}")]
    Provider {
        pipeline: String,
        provider: String,
        reason: String,
    },
    #[error("pipeline {pipeline}: processing task failed: {reason}")]
    Task { pipeline: String, reason: String },
    #[error("pipeline {pipeline}: {reason}")]
    Fatal { pipeline: String, reason: String },
    /// A file or stdin run could not write everything it read within the bound.
    #[error("pipeline {pipeline}: {undelivered} of {read} events read were not written within shutdown_timeout ({timeout:?})")]
    Undelivered {
        pipeline: String,
        read: u64,
        undelivered: u64,
        timeout: Duration,
    },
}

/// What a finished pipeline did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub events_in: u64,
    pub events_out: u64,
    pub dead_letters: u64,
    /// True when shutdown hit its bound and undelivered work was abandoned.
    pub timed_out: bool,
}

/// Why one event could not be processed.
#[derive(Debug)]
pub enum StageError {
    /// This event only: to the dead letter with the reason.
    Bad(BadEvent),
    /// The pipeline cannot go on (e.g. a provider rejects its key under `backpressure`).
    Fatal(String),
}

impl From<BadEvent> for StageError {
    fn from(bad: BadEvent) -> Self {
        StageError::Bad(bad)
    }
}

/// The per-event work: everything between source and sink. Shared by the tasks.
pub struct Stage {
    format: Format,
    max_event_bytes: usize,
    extractor: Extractor,
    chain: Chain,
    output: OutputConfig,
    max_enrichment_delay: Duration,
    on_slow_lookup: SlowLookup,
    metrics: PipelineMetrics,
}

impl Stage {
    /// Builds the stage of a pipeline; opens local databases.
    pub fn new(
        config: &PipelineConfig,
        metrics: PipelineMetrics,
        shared: &SharedProviders,
    ) -> Result<Self, PipelineError> {
        let chain = crate::lookup::build::chain(&config.providers, shared).map_err(|errors| {
            PipelineError::Provider {
                pipeline: config.name.clone(),
                provider: errors
                    .iter()
                    .map(|e| e.key.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: errors
                    .iter()
                    .map(|e| e.reason.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        })?;
        Ok(Stage {
            format: config.source.format(),
            max_event_bytes: config.max_event_bytes(),
            extractor: Extractor::new(&config.extract, config.limits.max_ips_per_event),
            chain,
            output: config.output.clone(),
            max_enrichment_delay: config.limits.max_enrichment_delay,
            on_slow_lookup: config.limits.on_slow_lookup,
            metrics,
        })
    }

    /// Decodes, extracts, looks up and renders one event. Once `give_up` turns
    /// true (shutdown or the end of the input, past its bound), lookups still
    /// waiting are answered `timeout` at once so the event can still be written.
    pub async fn process(
        &self,
        payload: &[u8],
        give_up: &watch::Receiver<bool>,
    ) -> Result<Vec<u8>, StageError> {
        let decoded = decode(payload, self.format, self.max_event_bytes)?;
        let extraction = self.extractor.extract(&decoded);
        if extraction.capped {
            self.metrics.capped.inc();
        }
        // Public addresses are looked up concurrently, all under one deadline; an
        // address still waiting when it passes is marked `timeout` (its answer will
        // still fill the cache for the next event). With `backpressure` there is no
        // deadline: the event waits, the in-flight budget fills, and reading from
        // the source pauses until the providers answer again.
        let deadline = crate::lookup::time::after(Instant::now(), self.max_enrichment_delay);
        let lookups: Vec<Result<Option<Resolved>, String>> =
            join_all(extraction.found.iter().map(|found| async move {
                self.metrics.ip(found.class);
                if found.class != IpClass::Public || self.chain.is_empty() {
                    return Ok(None);
                }
                let mut give_up = give_up.clone();
                let lookup = async {
                    match self.on_slow_lookup {
                        SlowLookup::FailOpen => {
                            Ok(self.chain.lookup_until(found.ip, deadline).await)
                        }
                        SlowLookup::Backpressure => self.lookup_until_answered(found.ip).await,
                    }
                };
                let resolved = tokio::select! {
                    biased;
                    resolved = lookup => resolved?,
                    _ = give_up.wait_for(|g| *g) => timeout(),
                };
                self.metrics.lookup(resolved.status);
                Ok(Some(resolved))
            }))
            .await;
        let lookups = lookups
            .into_iter()
            .collect::<Result<Vec<_>, String>>()
            .map_err(StageError::Fatal)?;
        let rendered = render(
            &decoded,
            &Enrichment {
                extraction: &extraction,
                lookups: &lookups,
            },
            &self.output,
        );
        for path in &rendered.unplaced {
            self.metrics.unplaced(path);
        }
        Ok(rendered.line)
    }
}

fn timeout() -> Resolved {
    Resolved {
        status: Status::Timeout,
        record: Default::default(),
        sources: Vec::new(),
    }
}

impl Stage {
    /// Retries until a provider answers (`on_slow_lookup: backpressure`), backing off
    /// from 100 ms to 5 s between rounds; the engine's limiter and breaker pace it.
    /// A rejected API key is fatal: no retry can fix it, and waiting for ever would
    /// only hide it (under `fail_open` the event carries `unauthorized` instead).
    async fn lookup_until_answered(&self, ip: std::net::IpAddr) -> Result<Resolved, String> {
        let mut pause = Duration::from_millis(100);
        loop {
            let resolved = self.chain.lookup(ip).await;
            if matches!(resolved.status, Status::Ok | Status::NoData) {
                return Ok(resolved);
            }
            if resolved.status.is_fatal() {
                let rejected = self.chain.key_rejected().unwrap_or_else(|| KeyRejected {
                    providers: self.chain.names(),
                });
                return Err(rejected.to_string());
            }
            self.metrics.lookup(resolved.status);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// Line sources keep at most this much of an over-long line for the dead letter.
fn keep_bytes(max_event_bytes: usize) -> usize {
    max_event_bytes.saturating_mul(16).max(64 << 20)
}

/// Creates the source of a pipeline.
pub async fn open_source(
    config: &PipelineConfig,
    metrics: &PipelineMetrics,
) -> Result<Source, PipelineError> {
    let err = |source| PipelineError::Source {
        pipeline: config.name.clone(),
        source,
    };
    let keep = keep_bytes(config.max_event_bytes());
    let bytes_read = metrics.source_bytes.clone();
    Ok(match &config.source {
        SourceConfig::Kafka(k) => {
            Source::Kafka(KafkaSource::new(&config.name, k, metrics).map_err(err)?)
        }
        SourceConfig::File(f) => Source::Lines(
            LineSource::file(&f.path, keep)
                .await
                .map_err(err)?
                .counting(bytes_read),
        ),
        SourceConfig::Stdin(_) => Source::Lines(LineSource::stdin(keep).counting(bytes_read)),
    })
}

fn source_brokers(config: &PipelineConfig) -> Option<&str> {
    match &config.source {
        SourceConfig::Kafka(k) => Some(&k.brokers),
        _ => None,
    }
}

/// Creates the sink and the dead letter of a pipeline.
pub async fn open_sinks(
    config: &PipelineConfig,
    health: Arc<PipelineHealth>,
) -> Result<(Sink, DeadLetter), PipelineError> {
    let err = |source| PipelineError::Sink {
        pipeline: config.name.clone(),
        source,
    };
    let no_brokers = || {
        err(SinkError::Topic {
            topic: String::new(),
            reason: "no brokers configured".into(),
        })
    };
    let sink = match &config.sink {
        SinkConfig::Kafka(k) => {
            let brokers = k
                .brokers
                .as_deref()
                .or(source_brokers(config))
                .ok_or_else(no_brokers)?;
            Sink::Kafka(
                KafkaSink::new(
                    brokers,
                    &k.topic,
                    k.partitioning,
                    &k.options,
                    health.clone(),
                )
                .await
                .map_err(err)?,
            )
        }
        SinkConfig::File(f) => Sink::File(LineSink::open(&f.path, f.append).map_err(err)?),
        SinkConfig::Stdout(_) => Sink::File(LineSink::stdout()),
    };
    let dead_letter = match &config.dead_letter {
        Some(DeadLetterConfig::Kafka(d)) => {
            let sink_brokers = match &config.sink {
                SinkConfig::Kafka(k) => k.brokers.as_deref(),
                _ => None,
            };
            let brokers = d
                .brokers
                .as_deref()
                .or(sink_brokers)
                .or(source_brokers(config))
                .ok_or_else(no_brokers)?;
            let options = match &config.sink {
                SinkConfig::Kafka(k) => k.options.clone(),
                _ => Default::default(),
            };
            // A dead letter cuts what it cannot hold to the producer's own
            // message.max.bytes, with room for the key and every header.
            DeadLetter::Kafka(
                KafkaSink::new(
                    brokers,
                    &d.topic,
                    crate::config::Partitioning::Key,
                    &options,
                    health,
                )
                .await
                .map_err(err)?,
            )
        }
        Some(DeadLetterConfig::File(f)) => {
            DeadLetter::file(LineSink::open(&f.path, f.append).map_err(err)?)
        }
        None => DeadLetter::file(LineSink::stderr()),
    };
    Ok((sink, dead_letter))
}

/// A batch of processed records and the in-flight budget they hold until acked.
struct Batch {
    items: Vec<(SourceRecord, Ack, Result<Vec<u8>, StageError>)>,
    permit: Permit,
    /// When the batch was read, for the end-to-end latency.
    read_at: Instant,
}

/// Most records taken into one processing task. Large enough to amortise a task and
/// a queue hop, small enough that one task stays well under a millisecond.
const BATCH: usize = 128;

/// How long the reader waits for in-flight room before it pauses the source's
/// partitions and keeps polling, well under `max.poll.interval.ms`.
const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// The longest a pipeline waits for its producer's id before it reads anyway.
const PRODUCER_ID_WAIT: Duration = Duration::from_secs(10);

/// How often a paused Kafka source is polled (keeps the group membership alive).
const POLL_WHILE_PAUSED: Duration = Duration::from_secs(1);

/// The in-flight budget: events and bytes read but not yet acknowledged. Both
/// bounds hold at once; a single event larger than the byte bound passes alone.
struct Budget {
    events: Arc<Semaphore>,
    kib: Arc<Semaphore>,
    max_events: u32,
    max_kib: u32,
}

/// What one batch holds of the budget; released when its last record is acked.
struct Permit {
    _events: OwnedSemaphorePermit,
    _kib: OwnedSemaphorePermit,
}

impl Budget {
    fn new(max_events: usize, max_bytes: usize) -> Self {
        let max_events = u32::try_from(max_events.max(1)).unwrap_or(u32::MAX >> 3);
        let max_kib = u32::try_from((max_bytes / 1024).max(1)).unwrap_or(u32::MAX >> 3);
        Budget {
            events: Arc::new(Semaphore::new(max_events as usize)),
            kib: Arc::new(Semaphore::new(max_kib as usize)),
            max_events,
            max_kib,
        }
    }

    /// What a batch of records costs, each bound clamped to the whole budget.
    fn cost(&self, records: &[(SourceRecord, Ack)]) -> (u32, u32) {
        let events = u32::try_from(records.len()).unwrap_or(u32::MAX);
        let kib: usize = records
            .iter()
            .map(|(r, _)| r.payload.len() / 1024 + 1)
            .sum();
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        (events.min(self.max_events), kib.min(self.max_kib))
    }

    fn try_acquire(&self, (events, kib): (u32, u32)) -> Option<Permit> {
        let e = self.events.clone().try_acquire_many_owned(events).ok()?;
        let k = self.kib.clone().try_acquire_many_owned(kib).ok()?;
        Some(Permit {
            _events: e,
            _kib: k,
        })
    }

    async fn acquire(&self, (events, kib): (u32, u32)) -> Permit {
        // Only the reader acquires, so taking one bound after the other cannot deadlock.
        let e = self.events.clone().acquire_many_owned(events).await;
        let k = self.kib.clone().acquire_many_owned(kib).await;
        match (e, k) {
            (Ok(e), Ok(k)) => Permit {
                _events: e,
                _kib: k,
            },
            // The semaphores are never closed.
            _ => unreachable!("in-flight budget closed"),
        }
    }
}

/// Takes records from the source in batches, keeping what arrives while paused.
struct Reader {
    source: Source,
    /// Records read while the source was paused, handed out first.
    stash: VecDeque<(SourceRecord, Ack)>,
    name: String,
}

/// Why the reader stopped.
enum Stop {
    EndOfInput,
    Shutdown,
    /// The writer or the acknowledgements failed; their error is reported.
    Halted,
    Failed(SourceError),
}

impl Reader {
    /// The next batch: what is stashed, else what is ready after the next record.
    /// `Ok(None)` at the end of a file or stdin. Cancel-safe: the one await comes
    /// before anything is taken.
    async fn next_batch(&mut self) -> Result<Option<Vec<(SourceRecord, Ack)>>, SourceError> {
        if !self.stash.is_empty() {
            let n = self.stash.len().min(BATCH);
            return Ok(Some(self.stash.drain(..n).collect()));
        }
        let first = self.source.next().await;
        let mut batch = Vec::with_capacity(BATCH);
        let mut item = Some(first);
        while let Some(next) = item.take() {
            match next {
                None if batch.is_empty() => return Ok(None),
                None => break, // the end comes again on the next call
                Some(Ok(record)) => batch.push(record),
                Some(Err(e)) => self.on_error(e)?,
            }
            if batch.len() < BATCH {
                item = self.source.next().now_or_never();
            }
        }
        Ok(Some(batch))
    }

    /// Transient consumer errors are logged (librdkafka recovers by itself);
    /// fatal ones (authorisation, fencing, unknown topic) stop the pipeline.
    fn on_error(&self, e: SourceError) -> Result<(), SourceError> {
        match &e {
            SourceError::Kafka(k) if classify_kafka(k) != Class::Fatal => {
                warn!(pipeline = %self.name, error = %e, "consumer error, retrying");
                Ok(())
            }
            _ => Err(e),
        }
    }

    /// Waits for budget. Past [`PAUSE_AFTER`] the source's partitions are paused
    /// and polled on (records that still arrive are stashed), so a long stall never
    /// costs the group membership and its re-reads.
    async fn acquire(&mut self, budget: &Budget, cost: (u32, u32)) -> Result<Permit, SourceError> {
        if let Some(p) = budget.try_acquire(cost) {
            return Ok(p);
        }
        let wait = budget.acquire(cost);
        tokio::pin!(wait);
        if let Ok(p) = tokio::time::timeout(PAUSE_AFTER, &mut wait).await {
            return Ok(p);
        }
        if !self.source.is_kafka() {
            return Ok(wait.await);
        }
        self.source.pause()?;
        info!(pipeline = %self.name, "in-flight budget full: partitions paused");
        let permit = loop {
            tokio::select! {
                biased;
                p = &mut wait => break p,
                next = self.source.next() => match next {
                    Some(Ok(record)) => {
                        self.stash.push_back(record);
                        // Partitions assigned meanwhile are paused too.
                        self.source.pause()?;
                    }
                    Some(Err(e)) => self.on_error(e)?,
                    None => {}
                },
                _ = tokio::time::sleep(POLL_WHILE_PAUSED) => {}
            }
        };
        self.source.resume()?;
        info!(pipeline = %self.name, "partitions resumed");
        Ok(permit)
    }
}

/// Runs a pipeline until its input ends, `shutdown` turns true, or it fails.
///
/// Shutdown is bounded in every state: lookups still waiting get `timeout` after
/// half of `shutdown_timeout` so their events can be written, and past the whole
/// bound what is undelivered is abandoned (a Kafka source re-reads it; a file run
/// fails with the count). At the end of a file or stdin, lookups get the whole
/// `shutdown_timeout` and writing another one.
pub async fn run(
    config: &PipelineConfig,
    metrics: PipelineMetrics,
    shared: &SharedProviders,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Summary, PipelineError> {
    let health = metrics.health.clone();
    let stage = Arc::new(Stage::new(config, metrics.clone(), shared)?);
    // Opening may wait for brokers (the output's partition count): SIGTERM ends it.
    let opened = tokio::select! {
        biased;
        _ = shutdown.wait_for(|stop| *stop) => return Ok(Summary::default()),
        opened = async {
            // The sink first, and its producer id before the first read: otherwise
            // the first events wait for it (up to 500 ms) after the assignment.
            let sinks = open_sinks(config, health.clone()).await?;
            if !sinks.0.ready(PRODUCER_ID_WAIT).await {
                warn!(pipeline = %config.name, "the producer has no producer id after {PRODUCER_ID_WAIT:?}; reading anyway (sends wait for it)");
            }
            let source = open_source(config, &metrics).await?;
            Ok::<_, PipelineError>((source, sinks))
        } => opened,
    };
    let (source, (sink, dead_letter)) = opened?;
    let kafka_source = source.is_kafka();
    let acker = source.acker();
    let (tx, rx) = mpsc::unbounded_channel::<JoinHandle<Batch>>();
    let (halt_tx, halt) = watch::channel(false);
    let (give_up_tx, give_up) = watch::channel(false);
    let tasks = Tasks::spawn(config, sink, dead_letter, &acker, &metrics, rx, halt_tx);
    health.set_running(true, kafka_source);
    info!(pipeline = %config.name, providers = ?stage.chain.names(), "pipeline started");

    let mut reader = Reader {
        source,
        stash: VecDeque::new(),
        name: config.name.clone(),
    };
    let budget = Budget::new(
        config.limits.max_in_flight,
        config.limits.max_in_flight_bytes,
    );
    let (stop, events_in) = reader
        .run(&stage, &budget, &metrics, tx, shutdown, halt, give_up)
        .await;
    info!(pipeline = %config.name, events_in, "input closed, draining");
    let outcome = tasks
        .drain(config, &stop, events_in, kafka_source, &metrics, give_up_tx)
        .await;
    // Commit what was delivered, bounded: an unreachable broker cannot hold the exit.
    acker
        .commit(Duration::from_secs(5).min(config.shutdown_timeout.max(Duration::from_secs(1))))
        .await;
    if let Acker::Kafka(k) = &acker {
        k.close();
    }
    // Closing a consumer waits for its group coordinator, which may be unreachable:
    // let a blocking thread do it, never an async worker (the exit stays bounded).
    drop(tokio::task::spawn_blocking(move || drop((reader, acker))));
    metrics.in_flight.set(0);
    let result = match stop {
        Stop::Failed(e) => Err(PipelineError::Source {
            pipeline: config.name.clone(),
            source: e,
        }),
        _ => outcome,
    };
    if result.is_err() {
        health.set_failed();
    }
    health.set_running(false, kafka_source);
    result
}

impl Reader {
    /// Reads batches and spawns their processing until the input ends, shutdown is
    /// asked, or the writer or acknowledgements fail (`halt`). Returns why it
    /// stopped and how many events it handed on.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &mut self,
        stage: &Arc<Stage>,
        budget: &Budget,
        metrics: &PipelineMetrics,
        tx: mpsc::UnboundedSender<JoinHandle<Batch>>,
        mut shutdown: watch::Receiver<bool>,
        mut halt: watch::Receiver<bool>,
        give_up: watch::Receiver<bool>,
    ) -> (Stop, u64) {
        let mut events_in = 0u64;
        let stop = loop {
            let batch = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break Stop::Shutdown,
                _ = halt.wait_for(|h| *h) => break Stop::Halted,
                next = self.next_batch() => match next {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break Stop::EndOfInput,
                    Err(e) => break Stop::Failed(e),
                },
            };
            if batch.is_empty() {
                continue;
            }
            let read_at = Instant::now();
            let cost = budget.cost(&batch);
            let permit = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break Stop::Shutdown,
                _ = halt.wait_for(|h| *h) => break Stop::Halted,
                permit = self.acquire(budget, cost) => match permit {
                    Ok(p) => p,
                    Err(e) => break Stop::Failed(e),
                },
            };
            events_in += batch.len() as u64;
            metrics.events_in.inc_by(batch.len() as u64);
            metrics.in_flight.add(batch.len() as i64);
            let work = process_batch(stage.clone(), batch, permit, read_at, give_up.clone());
            let task = tokio::spawn(work);
            if tx.send(task).is_err() {
                break Stop::Halted; // the writer is gone; its error is reported
            }
        };
        (stop, events_in)
    }
}

/// Processes a batch concurrently, keeping its records in read order.
async fn process_batch(
    stage: Arc<Stage>,
    batch: Vec<(SourceRecord, Ack)>,
    permit: Permit,
    read_at: Instant,
    give_up: watch::Receiver<bool>,
) -> Batch {
    let outs = join_all(
        batch
            .iter()
            .map(|(record, _)| guarded(&stage, &record.payload, &give_up)),
    )
    .await;
    Batch {
        items: batch
            .into_iter()
            .zip(outs)
            .map(|((record, ack), out)| (record, ack, out))
            .collect(),
        permit,
        read_at,
    }
}

/// The writer and the acknowledgement loop of a running pipeline.
struct Tasks {
    name: String,
    writer: JoinHandle<Result<(), PipelineError>>,
    acks: JoinHandle<Result<Summary, PipelineError>>,
}

impl Tasks {
    fn spawn(
        config: &PipelineConfig,
        sink: Sink,
        dead_letter: DeadLetter,
        acker: &Acker,
        metrics: &PipelineMetrics,
        rx: mpsc::UnboundedReceiver<JoinHandle<Batch>>,
        halt: watch::Sender<bool>,
    ) -> Self {
        let name = config.name.clone();
        let dead_letter = Arc::new(dead_letter);
        let (sent_tx, sent_rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(
            Writer {
                name: name.clone(),
                sink,
                dead_letter: dead_letter.clone(),
                metrics: metrics.clone(),
                // A Kafka offset may be committed only once its output is durable:
                // a file is synced before the acknowledgement, not merely buffered.
                sync_before_ack: matches!(config.source, SourceConfig::Kafka(_)),
            }
            .run(rx, sent_tx, halt.clone()),
        );
        let acks = tokio::spawn(ack_loop(
            name.clone(),
            sent_rx,
            acker.clone(),
            dead_letter,
            metrics.clone(),
            halt,
        ));
        Tasks { name, writer, acks }
    }

    /// Waits for the writer and the acknowledgements within the shutdown bound,
    /// giving up on waiting lookups first; past the bound, abandons the rest.
    async fn drain(
        mut self,
        config: &PipelineConfig,
        stop: &Stop,
        events_in: u64,
        kafka_source: bool,
        metrics: &PipelineMetrics,
        give_up: watch::Sender<bool>,
    ) -> Result<Summary, PipelineError> {
        let now = Instant::now();
        let bound = config.shutdown_timeout;
        let (give_up_at, hard) = match stop {
            Stop::EndOfInput => (now + bound, now + bound + bound),
            Stop::Shutdown => (now + bound / 2, now + bound),
            Stop::Halted | Stop::Failed(_) => (now, now + bound),
        };
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(give_up_at).await;
            let _ = give_up.send(true);
        });
        let drained = tokio::time::timeout_at(hard, async {
            tokio::join!(&mut self.writer, &mut self.acks)
        })
        .await;
        timer.abort();
        let task_err = |e: tokio::task::JoinError| PipelineError::Task {
            pipeline: self.name.clone(),
            reason: e.to_string(),
        };
        match drained {
            Ok((written, acked)) => {
                // The ack loop's error (a failed delivery) explains a writer that stopped early.
                let acked = acked.map_err(task_err).and_then(|r| r);
                let written = written.map_err(task_err).and_then(|r| r);
                let mut summary = acked?;
                written?;
                summary.events_in = events_in;
                Ok(summary)
            }
            Err(_) => {
                self.writer.abort();
                self.acks.abort();
                if kafka_source {
                    warn!(pipeline = %self.name, timeout = ?bound, "drain timed out; undelivered events stay uncommitted and will be re-read");
                    Ok(Summary {
                        events_in,
                        timed_out: true,
                        ..Summary::default()
                    })
                } else {
                    Err(PipelineError::Undelivered {
                        pipeline: self.name.clone(),
                        read: events_in,
                        undelivered: events_in.saturating_sub(metrics.events_out.get()),
                        timeout: bound,
                    })
                }
            }
        }
    }
}

/// Processes one event. A panic is a bug, never a policy: it costs this one event
/// (to the dead letter with the reason), not the process.
async fn guarded(
    stage: &Stage,
    payload: &[u8],
    give_up: &watch::Receiver<bool>,
) -> Result<Vec<u8>, StageError> {
    match std::panic::AssertUnwindSafe(stage.process(payload, give_up))
        .catch_unwind()
        .await
    {
        Ok(out) => out,
        Err(panic) => Err(StageError::Bad(BadEvent::Internal(panic_message(&*panic)))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into());
    format!("processing panicked: {what}")
}

/// One sent record, waiting for its delivery.
struct Sent {
    delivery: Delivery,
    ack: Ack,
    dead: bool,
    /// For the dead letter, should the broker refuse the record.
    position: Position,
}

/// Records sent together, and the budget they hold.
struct SentBatch {
    items: Vec<Sent>,
    _permit: Permit,
    read_at: Instant,
}

/// Sends processed events in read order; hands their deliveries to the ack loop.
struct Writer {
    name: String,
    sink: Sink,
    dead_letter: Arc<DeadLetter>,
    metrics: PipelineMetrics,
    sync_before_ack: bool,
}

impl Writer {
    /// Runs until the queue closes; a failure turns `halt` true so that the reader
    /// stops at once, even while the input is idle.
    async fn run(
        mut self,
        rx: mpsc::UnboundedReceiver<JoinHandle<Batch>>,
        sent_tx: mpsc::UnboundedSender<SentBatch>,
        halt: watch::Sender<bool>,
    ) -> Result<(), PipelineError> {
        let result = self.write_all(rx, sent_tx).await;
        if let Err(e) = &result {
            warn!(pipeline = %self.name, error = %e, "writer failed");
            let _ = halt.send(true);
        }
        result
    }

    async fn write_all(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<JoinHandle<Batch>>,
        sent_tx: mpsc::UnboundedSender<SentBatch>,
    ) -> Result<(), PipelineError> {
        let name = self.name.clone();
        let sink_err = |source| PipelineError::Sink {
            pipeline: name.clone(),
            source,
        };
        while let Some(task) = rx.recv().await {
            let batch = task.await.map_err(|e| PipelineError::Task {
                pipeline: name.clone(),
                reason: e.to_string(),
            })?;
            let mut sent = Vec::with_capacity(batch.items.len());
            for (record, ack, out) in batch.items {
                let (delivery, dead) = match out {
                    Ok(bytes) => match self.sink.send(&record, &bytes).await {
                        Ok(d) => (d, false),
                        Err(SinkError::TooLarge { size, limit }) => {
                            let bad = BadEvent::TooLargeForOutput { size, limit };
                            (self.dead(&record, &bad).await.map_err(sink_err)?, true)
                        }
                        Err(e) => return Err(sink_err(e)),
                    },
                    Err(StageError::Bad(bad)) => {
                        (self.dead(&record, &bad).await.map_err(sink_err)?, true)
                    }
                    Err(StageError::Fatal(reason)) => {
                        return Err(PipelineError::Fatal {
                            pipeline: name.clone(),
                            reason,
                        })
                    }
                };
                sent.push(Sent {
                    delivery,
                    ack,
                    dead,
                    position: record.position,
                });
            }
            if self.sync_before_ack {
                self.sink.sync().map_err(sink_err)?;
                self.dead_letter.sync().map_err(sink_err)?;
            } else if rx.is_empty() {
                // Idle: make line output visible now rather than at the next buffer fill.
                if let Sink::File(f) = &mut self.sink {
                    f.flush().map_err(sink_err)?;
                }
                if let DeadLetter::File(_) = &*self.dead_letter {
                    self.dead_letter.flush().await.map_err(sink_err)?;
                }
            }
            let batch = SentBatch {
                items: sent,
                _permit: batch.permit,
                read_at: batch.read_at,
            };
            if sent_tx.send(batch).is_err() {
                break; // the ack loop failed; its error is reported by the caller
            }
        }
        self.sink.flush().await.map_err(sink_err)?;
        self.dead_letter.flush().await.map_err(sink_err)?;
        Ok(())
    }

    /// Sends a bad event to the dead letter (borrows only what is `Sync`).
    fn dead<'a>(
        &'a self,
        record: &'a SourceRecord,
        bad: &'a BadEvent,
    ) -> impl std::future::Future<Output = Result<Delivery, SinkError>> + Send + 'a {
        self.metrics.dead_letter(bad.kind());
        tracing::debug!(pipeline = %self.name, source = %record.position, reason = %bad, "dead letter");
        let (dead_letter, name) = (&self.dead_letter, &self.name);
        async move { dead_letter.send(name, record, bad).await }
    }
}

/// Awaits deliveries in send order and acknowledges them to the source, a batch at a
/// time (one watermark lock and one offset store per batch). Runs beside the writer so
/// that sending and acknowledging use both cores. A record the broker refuses goes to
/// the dead letter before it is acknowledged; any other delivery failure is fatal.
async fn ack_loop(
    name: String,
    mut rx: mpsc::UnboundedReceiver<SentBatch>,
    acker: Acker,
    dead_letter: Arc<DeadLetter>,
    metrics: PipelineMetrics,
    halt: watch::Sender<bool>,
) -> Result<Summary, PipelineError> {
    let mut summary = Summary::default();
    let mut acks = Vec::new();
    let sink_err = |source| PipelineError::Sink {
        pipeline: name.clone(),
        source,
    };
    let result = async {
        while let Some(batch) = rx.recv().await {
            let (mut out, mut dead) = (0u64, 0u64);
            for s in batch.items {
                match s.delivery.wait().await {
                    Ok(()) if s.dead => dead += 1,
                    Ok(()) => out += 1,
                    Err(SinkError::Refused { reason, message }) if !s.dead => {
                        let record = refused_record(&message, s.position);
                        let bad = BadEvent::Refused(reason);
                        metrics.dead_letter(bad.kind());
                        dead_letter
                            .send(&name, &record, &bad)
                            .await
                            .map_err(sink_err)?
                            .wait()
                            .await
                            .map_err(sink_err)?;
                        dead += 1;
                    }
                    Err(e) => return Err(sink_err(e)),
                }
                acks.push(s.ack);
            }
            acker.ack_all(&acks);
            let latency = batch.read_at.elapsed().as_secs_f64();
            for _ in 0..acks.len() {
                metrics.latency.observe(latency);
            }
            acks.clear();
            summary.events_out += out;
            summary.dead_letters += dead;
            metrics.events_out.inc_by(out);
            metrics.in_flight.sub((out + dead) as i64);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(summary),
        Err(e) => {
            warn!(pipeline = %name, error = %e, "delivery failed");
            let _ = halt.send(true);
            Err(e)
        }
    }
}

/// Rebuilds the record a broker refused (its enriched payload, key and headers).
fn refused_record(message: &rdkafka::message::OwnedMessage, position: Position) -> SourceRecord {
    use rdkafka::message::{Headers, Message};
    SourceRecord {
        payload: message.payload().unwrap_or_default().to_vec(),
        key: message.key().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
        position,
        timestamp_ms: message.timestamp().to_millis().filter(|t| *t > 0),
    }
}

/// The built-in pipeline of `ipenrich enrich` without a config: scan every string.
pub fn default_config(input: Option<&Path>, output: Option<&Path>) -> PipelineConfig {
    use crate::config::*;
    PipelineConfig {
        name: "enrich".into(),
        source: match input {
            Some(p) if p != Path::new("-") => SourceConfig::File(FileSourceConfig {
                path: p.into(),
                format: Format::Auto,
            }),
            _ => SourceConfig::Stdin(StdinSourceConfig {
                format: Format::Auto,
            }),
        },
        extract: ExtractConfig {
            fields: vec![],
            text: vec![],
            scan_all_strings: true,
        },
        providers: vec![],
        output: OutputConfig::default(),
        sink: match output {
            // A one-shot run writes its output afresh (`enrich --append` appends).
            Some(p) if p != Path::new("-") => SinkConfig::File(FileSinkConfig {
                path: p.into(),
                append: false,
            }),
            _ => SinkConfig::Stdout(StdoutSinkConfig {}),
        },
        dead_letter: None,
        limits: LimitsConfig::default(),
        shutdown_timeout: Duration::from_secs(25),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(sizes: &[usize]) -> Vec<(SourceRecord, Ack)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                (
                    SourceRecord {
                        payload: vec![b'x'; n],
                        key: None,
                        headers: Vec::new(),
                        position: Position::Line {
                            source: Arc::from("t"),
                            line: i as u64 + 1,
                        },
                        timestamp_ms: None,
                    },
                    Ack::None,
                )
            })
            .collect()
    }

    /// Regression (issue 8.10): two queues each sized to `max_in_flight` let twice the
    /// bound in, and events of any size counted alike. One budget now bounds both.
    #[test]
    fn budget_bounds_events_and_bytes_at_once() {
        let budget = Budget::new(4, 8 * 1024);
        let small = records(&[10, 10, 10]);
        let held = budget.try_acquire(budget.cost(&small)).expect("room for 3");
        assert!(
            budget
                .try_acquire(budget.cost(&records(&[10, 10])))
                .is_none(),
            "a fifth event is over the count"
        );
        drop(held);
        let big = records(&[6 * 1024]);
        let held = budget
            .try_acquire(budget.cost(&big))
            .expect("room for 6 KiB");
        assert!(
            budget
                .try_acquire(budget.cost(&records(&[4 * 1024])))
                .is_none(),
            "bytes bound the budget although the count has room"
        );
        drop(held);
        // One event larger than the whole byte budget still passes, alone.
        let huge = records(&[1 << 20]);
        assert!(budget.try_acquire(budget.cost(&huge)).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn budget_waits_until_acknowledged() {
        let budget = Arc::new(Budget::new(1, 1 << 20));
        let first = budget.try_acquire((1, 1)).unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.acquire((1, 1)).await })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished(), "no room until the first is acked");
        drop(first);
        assert!(waiter.await.is_ok());
    }
}
