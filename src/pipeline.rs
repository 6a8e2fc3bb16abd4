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

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, FutureExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{
    DeadLetterConfig, Format, OutputConfig, PipelineConfig, SinkConfig, SlowLookup, SourceConfig,
};
use crate::event::{decode, BadEvent, SourceRecord};
use crate::extract::{Extractor, IpClass};
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
    /// Set by the first event that met a rejected API key; see [`Stage::fatal`].
    fatal: std::sync::OnceLock<KeyRejected>,
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
            max_event_bytes: config.limits.max_event_bytes,
            extractor: Extractor::new(&config.extract, config.limits.max_ips_per_event),
            chain,
            output: config.output.clone(),
            max_enrichment_delay: config.limits.max_enrichment_delay,
            on_slow_lookup: config.limits.on_slow_lookup,
            metrics,
            fatal: std::sync::OnceLock::new(),
        })
    }

    /// Set once a lookup met a provider that rejected its API key (401/403), in
    /// either `on_slow_lookup` mode, before `process` returns that event (which
    /// carries the status `unauthorized`): a fatal condition, no retry helps. The
    /// caller must stop without writing or committing that event.
    pub fn fatal(&self) -> Option<&KeyRejected> {
        self.fatal.get()
    }

    /// Decodes, extracts, looks up and renders one event.
    pub async fn process(&self, payload: &[u8]) -> Result<Vec<u8>, BadEvent> {
        let decoded = decode(payload, self.format, self.max_event_bytes)?;
        let extraction = self.extractor.extract(&decoded);
        if extraction.capped {
            self.metrics.capped.inc();
        }
        // Public addresses are looked up concurrently, all under one deadline; an
        // address still waiting when it passes is marked `timeout` (its answer will
        // still fill the cache for the next event). With `backpressure` there is no
        // deadline: the event waits, the bounded in-flight queue fills, and reading
        // from the source pauses until the providers answer again.
        let deadline = crate::lookup::time::after(Instant::now(), self.max_enrichment_delay);
        let lookups: Vec<Option<Resolved>> =
            join_all(extraction.found.iter().map(|found| async move {
                self.metrics.ip(found.class);
                if found.class != IpClass::Public || self.chain.is_empty() {
                    return None;
                }
                let resolved = match self.on_slow_lookup {
                    SlowLookup::FailOpen => self.chain.lookup_until(found.ip, deadline).await,
                    SlowLookup::Backpressure => self.lookup_until_answered(found.ip).await,
                };
                self.metrics.lookup(resolved.status);
                Some(resolved)
            }))
            .await;
        if lookups.iter().flatten().any(|r| r.status.is_fatal()) {
            self.fatal.get_or_init(|| {
                self.chain.key_rejected().unwrap_or_else(|| KeyRejected {
                    providers: self.chain.names(),
                })
            });
        }
        Ok(render(
            &decoded,
            &Enrichment {
                extraction: &extraction,
                lookups: &lookups,
            },
            &self.output,
        ))
    }
}

impl Stage {
    /// Retries until a provider answers (`on_slow_lookup: backpressure`), backing off
    /// from 100 ms to 5 s between rounds; the engine's limiter and breaker pace it.
    /// A fatal status (a rejected API key) is returned at once: retrying cannot fix it.
    async fn lookup_until_answered(&self, ip: std::net::IpAddr) -> Resolved {
        let mut pause = Duration::from_millis(100);
        loop {
            let resolved = self.chain.lookup(ip).await;
            if matches!(resolved.status, Status::Ok | Status::NoData) || resolved.status.is_fatal()
            {
                return resolved;
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
pub async fn open_source(config: &PipelineConfig) -> Result<Source, PipelineError> {
    let err = |source| PipelineError::Source {
        pipeline: config.name.clone(),
        source,
    };
    let keep = keep_bytes(config.limits.max_event_bytes);
    Ok(match &config.source {
        SourceConfig::Kafka(k) => Source::Kafka(KafkaSource::new(&config.name, k).map_err(err)?),
        SourceConfig::File(f) => Source::Lines(LineSource::file(&f.path, keep).await.map_err(err)?),
        SourceConfig::Stdin(_) => Source::Lines(LineSource::stdin(keep)),
    })
}

fn source_brokers(config: &PipelineConfig) -> Option<&str> {
    match &config.source {
        SourceConfig::Kafka(k) => Some(&k.brokers),
        _ => None,
    }
}

/// Creates the sink and the dead letter of a pipeline.
pub async fn open_sinks(config: &PipelineConfig) -> Result<(Sink, DeadLetter), PipelineError> {
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
                KafkaSink::new(brokers, &k.topic, k.partitioning, &k.options)
                    .await
                    .map_err(err)?,
            )
        }
        SinkConfig::File(f) => Sink::File(LineSink::open(&f.path).map_err(err)?),
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
            let sink = KafkaSink::new(
                brokers,
                &d.topic,
                crate::config::Partitioning::Key,
                &options,
            )
            .await
            .map_err(err)?;
            // Leave room under Kafka's default 1 MiB message limit for headers and framing.
            DeadLetter::Kafka {
                sink,
                max_message_bytes: 1_000_000 - 16 * 1024,
            }
        }
        Some(DeadLetterConfig::File(f)) => DeadLetter::File(LineSink::open(&f.path).map_err(err)?),
        None => DeadLetter::File(LineSink::stderr()),
    };
    Ok((sink, dead_letter))
}

type Processed = (SourceRecord, Ack, Result<Vec<u8>, BadEvent>);

/// Most records taken into one processing task. Large enough to amortise a task and
/// a queue hop, small enough that one task stays well under a millisecond.
const BATCH: usize = 128;

/// Runs a pipeline until its input ends or `shutdown` turns true.
pub async fn run(
    config: &PipelineConfig,
    metrics: PipelineMetrics,
    shared: &SharedProviders,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Summary, PipelineError> {
    let stage = Arc::new(Stage::new(config, metrics.clone(), shared)?);
    let mut source = open_source(config).await?;
    let (sink, dead_letter) = open_sinks(config).await?;
    let acker = source.acker();
    let name = config.name.clone();
    let (tx, rx) =
        mpsc::channel::<JoinHandle<Vec<Processed>>>((config.limits.max_in_flight / BATCH).max(1));
    metrics.up.set(1);
    info!(pipeline = %name, providers = ?stage.chain.names(), "pipeline started");

    let (sent_tx, sent_rx) = mpsc::channel((config.limits.max_in_flight / BATCH).max(1));
    let writer = tokio::spawn(write_loop(
        name.clone(),
        rx,
        sink,
        dead_letter,
        sent_tx,
        metrics.clone(),
    ));
    let acks = tokio::spawn(ack_loop(
        name.clone(),
        sent_rx,
        acker.clone(),
        metrics.clone(),
    ));

    // Reader: until the input ends, shutdown is asked, or the writer is gone.
    // Records that are already waiting are taken as one batch and processed by one
    // task (concurrently within it), which keeps task and queue overhead per batch.
    let mut read_error = None;
    let mut events_in = 0u64;
    let mut ended = false;
    while !ended {
        let first = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            next = source.next() => next,
        };
        let mut batch = Vec::with_capacity(BATCH);
        let mut item = Some(first);
        while let Some(next) = item.take() {
            match next {
                None => ended = true,
                Some(Ok(record)) => batch.push(record),
                Some(Err(e)) if source.is_kafka() => {
                    // Broker hiccups surface here; librdkafka recovers by itself.
                    warn!(pipeline = %name, error = %e, "consumer error");
                }
                Some(Err(e)) => {
                    read_error = Some(e);
                    ended = true;
                }
            }
            if !ended && batch.len() < BATCH {
                item = source.next().now_or_never();
            }
        }
        if batch.is_empty() {
            continue;
        }
        events_in += batch.len() as u64;
        metrics.events_in.inc_by(batch.len() as u64);
        metrics.in_flight.add(batch.len() as i64);
        let stage = stage.clone();
        let task = tokio::spawn(async move {
            let outs = join_all(
                batch
                    .iter()
                    .map(|(record, _)| stage.process(&record.payload)),
            )
            .await;
            batch
                .into_iter()
                .zip(outs)
                .map(|((record, ack), out)| (record, ack, out))
                .collect()
        });
        if tx.send(task).await.is_err() {
            break; // the writer failed; its error is reported below
        }
    }
    drop(tx);
    info!(pipeline = %name, events_in, "input closed, draining");

    let task_err = |e: tokio::task::JoinError| PipelineError::Task {
        pipeline: name.clone(),
        reason: e.to_string(),
    };
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        let (written, acked) = tokio::join!(writer, acks);
        // The ack loop's error (a failed delivery) explains a writer that stopped early.
        let summary = acked.map_err(task_err)??;
        written.map_err(task_err)??;
        Ok::<_, PipelineError>(summary)
    })
    .await;
    let outcome = match drained {
        Ok(result) => result.map(|mut s| {
            s.events_in = events_in;
            s
        }),
        Err(_) => {
            warn!(pipeline = %name, timeout = ?config.shutdown_timeout, "drain timed out; undelivered events will be re-read");
            Ok(Summary {
                events_in,
                timed_out: true,
                ..Summary::default()
            })
        }
    };
    if let Acker::Kafka(k) = &acker {
        acker.commit();
        k.close();
    }
    metrics.up.set(0);
    if let Some(e) = read_error {
        return Err(PipelineError::Source {
            pipeline: name,
            source: e,
        });
    }
    outcome
}

/// One sent record, waiting for its delivery.
struct Sent {
    delivery: Delivery,
    ack: Ack,
    dead: bool,
}

/// Sends processed events in read order; hands their deliveries to the ack loop.
async fn write_loop(
    name: String,
    mut rx: mpsc::Receiver<JoinHandle<Vec<Processed>>>,
    mut sink: Sink,
    mut dead_letter: DeadLetter,
    sent_tx: mpsc::Sender<Vec<Sent>>,
    metrics: PipelineMetrics,
) -> Result<(), PipelineError> {
    let sink_err = |source| PipelineError::Sink {
        pipeline: name.clone(),
        source,
    };
    while let Some(task) = rx.recv().await {
        let batch = task.await.map_err(|e| PipelineError::Task {
            pipeline: name.clone(),
            reason: e.to_string(),
        })?;
        let mut sent = Vec::with_capacity(batch.len());
        for (record, ack, out) in batch {
            let (delivery, dead) = match out {
                Ok(bytes) => (sink.send(&record, &bytes).await.map_err(sink_err)?, false),
                Err(bad) => {
                    metrics.dead_letter(bad.kind());
                    tracing::debug!(pipeline = %name, source = %record.position, reason = %bad, "dead letter");
                    (
                        dead_letter
                            .send(&name, &record, &bad)
                            .await
                            .map_err(sink_err)?,
                        true,
                    )
                }
            };
            sent.push(Sent {
                delivery,
                ack,
                dead,
            });
        }
        if rx.is_empty() {
            // Idle: make line output visible now rather than at the next buffer fill.
            if let Sink::File(f) = &mut sink {
                f.flush().map_err(sink_err)?;
            }
            if let DeadLetter::File(f) = &mut dead_letter {
                f.flush().map_err(sink_err)?;
            }
        }
        if sent_tx.send(sent).await.is_err() {
            break; // the ack loop failed; its error is reported by the caller
        }
    }
    sink.flush().await.map_err(sink_err)?;
    dead_letter.flush().await.map_err(sink_err)?;
    Ok(())
}

/// Awaits deliveries in send order and acknowledges them to the source, a batch at a
/// time (one watermark lock and one offset store per batch). Runs beside the writer so
/// that sending and acknowledging use both cores.
async fn ack_loop(
    name: String,
    mut rx: mpsc::Receiver<Vec<Sent>>,
    acker: Acker,
    metrics: PipelineMetrics,
) -> Result<Summary, PipelineError> {
    let mut summary = Summary::default();
    let mut acks = Vec::new();
    while let Some(batch) = rx.recv().await {
        let (mut out, mut dead) = (0u64, 0u64);
        for s in batch {
            s.delivery
                .wait()
                .await
                .map_err(|source| PipelineError::Sink {
                    pipeline: name.clone(),
                    source,
                })?;
            acks.push(s.ack);
            if s.dead {
                dead += 1;
            } else {
                out += 1;
            }
        }
        acker.ack_all(&acks);
        acks.clear();
        summary.events_out += out;
        summary.dead_letters += dead;
        metrics.events_out.inc_by(out);
        metrics.in_flight.sub((out + dead) as i64);
    }
    Ok(summary)
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
            Some(p) if p != Path::new("-") => SinkConfig::File(FileSinkConfig { path: p.into() }),
            _ => SinkConfig::Stdout(StdoutSinkConfig {}),
        },
        dead_letter: None,
        limits: LimitsConfig::default(),
        shutdown_timeout: Duration::from_secs(25),
    }
}
