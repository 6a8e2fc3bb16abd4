//! Signal stage: enriched events in, attack signals keyed by IP out.
//!
//! Contract: at-least-once. An event's offset is stored only when it and every
//! earlier event read by this stage had their signals acknowledged by the broker
//! (deliveries complete in order: a `FuturesOrdered`), with
//! `enable.auto.offset.store=false`; a crash re-reads, and the decision stage counts
//! a re-read signal once (its id is the event position plus the rule). Events that
//! are not JSON objects are skipped: they cannot come out of a pipeline.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, DefaultConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::rules::{RuleSet, Signal};
use super::state::Clock;
use super::submit::{stopped, ReportMetrics};
use super::ReportError;
use crate::config::reporter::ReporterSettings;
use crate::lookup::engine::key_of;

/// Events whose signals may be in flight at once; reading pauses beyond.
const MAX_PENDING: usize = 10_000;
/// How long shutdown waits for in-flight signals.
const DRAIN: Duration = Duration::from_secs(10);

type Position = (Arc<str>, i32, i64);
type Pending = futures::future::BoxFuture<'static, Result<(Position, u64), ReportError>>;

/// Runs the signal stage until `stop`; returns the number of signals produced.
pub async fn run(
    settings: &ReporterSettings,
    metrics: ReportMetrics,
    mut stop: watch::Receiver<bool>,
) -> Result<u64, ReportError> {
    let client_id = format!("ipenrich-report-{}-signals", settings.name);
    let clients = settings.clients();
    let consumer: StreamConsumer = clients.stage_consumer(
        &client_id,
        &settings.signal_group_id,
        DefaultConsumerContext,
        "signal consumer create",
    )?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| ReportError::Kafka {
            what: "signal subscribe",
            source,
        })?;
    let stage = Signals {
        rules: RuleSet::new(settings),
        clock: Clock::system(),
        producer: clients.producer(&client_id)?,
        topic: settings.signals_topic.clone(),
        ipv6_prefix: settings.ipv6_prefix,
        event_time_field: settings.event_time_field.clone(),
        metrics: metrics.clone(),
        reporter: &settings.name,
    };
    let reporter = settings.name.as_str();
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut produced = 0u64;
    // A delivered event: its offset may be stored, its signals counted.
    let settle = |((topic, partition, offset), n): (Position, u64)| {
        if let Err(e) = consumer.store_offset(&topic, partition, offset) {
            // Revoked meanwhile: the new owner re-reads from the last commit.
            debug!(reporter, error = %e, partition, "offset not stored");
        }
        metrics.signals(reporter, n);
        n
    };
    info!(reporter, topics = ?settings.topics, "signal stage running");
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            Some(done) = pending.next(), if !pending.is_empty() => produced += settle(done?),
            msg = consumer.recv(), if pending.len() < MAX_PENDING => match msg {
                Ok(msg) => pending.push_back(stage.on_event(&msg)),
                Err(e) => warn!(reporter, error = %e, "signal consumer error"),
            },
        }
    }
    let drained = tokio::time::timeout(DRAIN, async {
        while let Some(done) = pending.next().await {
            produced += settle(done?);
        }
        Ok::<(), ReportError>(())
    })
    .await;
    match drained {
        Ok(r) => r?,
        Err(_) => warn!(
            reporter,
            "signals still in flight at shutdown; they will be re-read"
        ),
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        debug!(reporter, error = %e, "final signal commit");
    }
    info!(reporter, signals = produced, "signal stage stopped");
    Ok(produced)
}

/// Turns events into signals and sends them.
struct Signals<'a> {
    rules: RuleSet,
    clock: Clock,
    producer: FutureProducer,
    /// The signals topic.
    topic: String,
    /// The decision book's key ([`crate::report::state::Book::key`]): one IPv6
    /// network's signals reach one owner.
    ipv6_prefix: u8,
    metrics: ReportMetrics,
    /// Path of the event-time field, if configured.
    event_time_field: Option<Vec<String>>,
    reporter: &'a str,
}

impl Signals<'_> {
    /// The time the event's `event_time_field` names, if configured and parsed.
    fn event_time(&self, event: &serde_json::Value, now_ms: u64) -> Option<u64> {
        let path = self.event_time_field.as_ref()?;
        let mut values = Vec::new();
        super::rules::collect(event, path, &mut values);
        values
            .into_iter()
            .find_map(|v| super::event_time::parse(v, now_ms))
    }

    /// The signals of one event, sent in order; resolves to the event's position
    /// once every one is acknowledged.
    fn on_event(&self, msg: &BorrowedMessage<'_>) -> Pending {
        let topic: Arc<str> = Arc::from(msg.topic());
        let position = (topic, msg.partition(), msg.offset());
        // As tolerant as the pipeline that wrote the event: a value serde_json
        // refuses (`1e400`, a lone surrogate) must not hide the event's attacker.
        let event = msg
            .payload()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(crate::event::object_lossy);
        let now = self.clock.now_ms();
        let at_ms = event
            .as_ref()
            .and_then(|ev| self.event_time(ev, now))
            .or_else(|| {
                msg.timestamp()
                    .to_millis()
                    .and_then(|t| u64::try_from(t).ok())
            })
            .filter(|t| *t > 0)
            .map_or(now, |t| t.min(now));
        let signals = match &event {
            Some(ev) => self.rules.evaluate(
                ev,
                &format!("{}/{}/{}", position.0, position.1, position.2),
                at_ms,
            ),
            None => {
                warn!(
                    reporter = self.reporter,
                    partition = position.1,
                    offset = position.2,
                    "not a json object, skipped"
                );
                self.metrics.skipped(self.reporter);
                Vec::new()
            }
        };
        let sends: Vec<_> = signals.into_iter().map(|s| self.send(&s)).collect();
        Box::pin(async move {
            let n = sends.len() as u64;
            for send in sends {
                send.await?;
            }
            Ok((position, n))
        })
    }

    /// Produces one signal keyed by its attacker (the IP, an IPv6 address's
    /// network); resolves when the broker acknowledged it.
    fn send(
        &self,
        s: &Signal,
    ) -> impl std::future::Future<Output = Result<(), ReportError>> + Send + 'static {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let key = key_of(crate::extract::class::canonical(s.ip), self.ipv6_prefix).to_string();
        let value = serde_json::to_vec(s).expect("signals serialise");
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(source, _)| ReportError::Kafka {
                    what: "signal produce",
                    source,
                })
        }
    }
}
