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
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::config::ReporterSettings;
use super::rules::RuleSet;
use super::state::Clock;
use super::submit::{stopped, ReportMetrics};
use super::ReportError;

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
    let mut cc = super::client_config(&settings.brokers, &settings.options, &client_id);
    cc.set("group.id", &settings.signal_group_id)
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000");
    let consumer: StreamConsumer = cc.create().map_err(|source| ReportError::Kafka {
        what: "signal consumer create",
        source,
    })?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| ReportError::Kafka {
            what: "signal subscribe",
            source,
        })?;
    let producer = super::producer(&settings.brokers, &settings.options, &client_id)?;
    let rules = RuleSet::new(settings);
    let clock = Clock::system();
    let reporter = settings.name.as_str();
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut produced = 0u64;
    let store = |(topic, partition, offset): &Position| {
        if let Err(e) = consumer.store_offset(topic, *partition, *offset) {
            // Revoked meanwhile: the new owner re-reads from the last commit.
            debug!(reporter, error = %e, partition, "offset not stored");
        }
    };
    info!(reporter, topics = ?settings.topics, "signal stage running");
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            Some(done) = pending.next(), if !pending.is_empty() => {
                let (position, n) = done?;
                store(&position);
                produced += n;
                metrics.signals(reporter, n);
            }
            msg = consumer.recv(), if pending.len() < MAX_PENDING => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(reporter, error = %e, "signal consumer error");
                        continue;
                    }
                };
                let topic: Arc<str> = Arc::from(msg.topic());
                let position = (topic.clone(), msg.partition(), msg.offset());
                let at_ms = msg
                    .timestamp()
                    .to_millis()
                    .filter(|t| *t > 0)
                    .map_or_else(|| clock.now_ms(), |t| t as u64);
                let event: Option<serde_json::Value> = msg
                    .payload()
                    .and_then(|p| serde_json::from_slice(p).ok())
                    .filter(serde_json::Value::is_object);
                let signals = match &event {
                    Some(ev) => rules.evaluate(
                        ev,
                        &format!("{}/{}/{}", position.0, position.1, position.2),
                        at_ms,
                    ),
                    None => {
                        debug!(reporter, partition = position.1, offset = position.2, "not a json object, skipped");
                        Vec::new()
                    }
                };
                let sends: Vec<_> = signals
                    .into_iter()
                    .map(|s| {
                        let producer = producer.clone();
                        let topic = settings.signals_topic.clone();
                        let key = s.ip.to_string();
                        let value = serde_json::to_vec(&s).expect("signals serialise");
                        async move {
                            producer
                                .send(
                                    FutureRecord::to(&topic).key(&key).payload(&value),
                                    Duration::from_secs(30),
                                )
                                .await
                                .map_err(|(source, _)| ReportError::Kafka {
                                    what: "signal produce",
                                    source,
                                })
                        }
                    })
                    .collect();
                pending.push_back(Box::pin(async move {
                    let n = sends.len() as u64;
                    for send in sends {
                        send.await?;
                    }
                    Ok((position, n))
                }));
            }
        }
    }
    let drained = tokio::time::timeout(DRAIN, async {
        while let Some(done) = pending.next().await {
            match done {
                Ok((position, n)) => {
                    store(&position);
                    produced += n;
                    metrics.signals(reporter, n);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
