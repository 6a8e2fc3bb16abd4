//! Kafka consumer-group source with at-least-once offsets.
//!
//! `enable.auto.offset.store=false`: an offset is stored only when it and every
//! earlier offset of its partition were delivered downstream (the [`Watermark`]);
//! librdkafka's auto-commit then commits stored offsets in the background and on
//! revocation. On revoke the partition's watermark is dropped, so in-flight events
//! of a revoked partition are abandoned (their output may still be produced, and
//! the new owner re-reads them: duplicates, never loss). See rust-rdkafka's
//! `examples/at_least_once.rs` for the pattern.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::watermark::{PartitionKey, Ticket, Watermark};
use super::{Ack, SourceError};
use crate::config::KafkaSourceConfig;
use crate::event::{Position, SourceRecord};
use crate::health::PipelineHealth;
use crate::metrics::{ConsumerLag, PipelineMetrics};

/// Consumer callbacks: forget revoked partitions, log commit failures, report
/// assignment and broker reachability to the pipeline's health.
pub struct SourceContext {
    watermark: Arc<Mutex<Watermark>>,
    pipeline: String,
    health: Arc<PipelineHealth>,
    lag: ConsumerLag,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.health
            .set_consumer_brokers_up(crate::health::brokers_up(&statistics));
        self.lag.set_all(partition_lags(&statistics));
    }
}

/// The lag of every partition this consumer fetches: from the end of the partition
/// to the committed offset (what a restart would read again). librdkafka reports -1
/// for partitions it does not fetch (not assigned, or no offset known yet) and lists
/// an internal partition -1; neither is a series.
fn partition_lags(statistics: &rdkafka::Statistics) -> Vec<(String, i32, i64)> {
    statistics
        .topics
        .iter()
        .flat_map(|(topic, t)| {
            t.partitions.values().filter_map(move |p| {
                let assigned = p.partition >= 0 && p.desired;
                (assigned && p.consumer_lag >= 0)
                    .then(|| (topic.clone(), p.partition, p.consumer_lag))
            })
        })
        .collect()
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let mut w = lock(&self.watermark);
                for e in tpl.elements() {
                    w.revoke(&(Arc::from(e.topic()), e.partition()));
                }
                info!(pipeline = %self.pipeline, partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                info!(pipeline = %self.pipeline, partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Error(e) => warn!(pipeline = %self.pipeline, error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        let held = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.health.set_assigned(held);
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                debug!(pipeline = %self.pipeline, partitions = offsets.count(), "offsets committed")
            }
            Err(e) => warn!(pipeline = %self.pipeline, error = %e, "offset commit failed"),
        }
    }
}

/// The consumer's librdkafka settings: ipenrich's defaults, the user's `options`, then
/// the at-least-once settings. Public so that the end-to-end benchmark's passthrough
/// baseline (benches/e2e.rs) runs with exactly these settings.
pub fn consumer_config(pipeline: &str, config: &KafkaSourceConfig) -> ClientConfig {
    let client_id = format!("ipenrich-{pipeline}");
    let defaults = [
        ("group.id", config.group_id.as_str()),
        ("client.id", client_id.as_str()),
        ("auto.offset.reset", "earliest"),
        ("auto.commit.interval.ms", "1000"),
        ("partition.assignment.strategy", "cooperative-sticky"),
        // librdkafka pauses a partition's fetching for this long once the prefetch
        // queue passes queued.min.messages / queued.max.messages.kbytes. Its 1 s
        // default stalls a pipeline that briefly falls behind (in-flight bound
        // reached): the queue drains in well under a second and the reader then
        // waits for the rest of it (the first pipeline
        // bench, against a passthrough with librdkafka's defaults: 0.57 -> 0.91).
        ("fetch.queue.backoff.ms", "10"),
        // Broker reachability for readiness (see `health`).
        ("statistics.interval.ms", "5000"),
        // A subscribed topic created after start (a fresh cluster) is seen at the
        // next metadata refresh: 30 s, not librdkafka's 5 minutes.
        ("topic.metadata.refresh.interval.ms", "30000"),
    ];
    crate::kafka::client_config(
        &config.brokers,
        &defaults,
        &config.options,
        &crate::kafka::AT_LEAST_ONCE_CONSUMER,
        "at-least-once",
    )
}

type Inner = StreamConsumer<SourceContext>;

/// A subscribed consumer.
pub struct KafkaSource {
    consumer: Arc<Inner>,
    watermark: Arc<Mutex<Watermark>>,
    topics: BTreeMap<String, Arc<str>>,
    health: Arc<PipelineHealth>,
}

impl KafkaSource {
    /// Creates the consumer and subscribes.
    pub fn new(
        pipeline: &str,
        config: &KafkaSourceConfig,
        metrics: &PipelineMetrics,
    ) -> Result<Self, SourceError> {
        let health = metrics.health.clone();
        let watermark = Arc::new(Mutex::new(Watermark::default()));
        let cc = consumer_config(pipeline, config);
        let ctx = SourceContext {
            watermark: watermark.clone(),
            pipeline: pipeline.to_string(),
            health: health.clone(),
            lag: metrics.consumer_lag.clone(),
        };
        let consumer: Inner = cc.create_with_context(ctx)?;
        let names: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        let topics = config
            .topics
            .iter()
            .map(|t| (t.clone(), Arc::from(t.as_str())))
            .collect();
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            watermark,
            topics,
            health,
        })
    }

    /// Waits for the next record. A subscribed topic that does not exist yet is
    /// waited for (on a fresh cluster the input appears with its first event): the
    /// consumer group picks it up at its next metadata refresh.
    pub async fn next(&mut self) -> Result<(SourceRecord, Ack), SourceError> {
        let msg = loop {
            match self.consumer.recv().await {
                Ok(m) => break m,
                Err(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
                )) => {
                    self.health.set_topic_missing();
                    warn!(topics = ?self.topics.keys().collect::<Vec<_>>(), "a subscribed topic does not exist yet; waiting for it (not ready meanwhile)");
                }
                Err(e) => return Err(e.into()),
            }
        };
        let topic = match self.topics.get(msg.topic()) {
            Some(t) => t.clone(),
            None => Arc::from(msg.topic()),
        };
        let partition = msg.partition();
        let offset = msg.offset();
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        let record = SourceRecord {
            payload: msg.payload().unwrap_or_default().to_vec(),
            key: msg.key().map(<[u8]>::to_vec),
            headers,
            position: Position::Kafka {
                topic: topic.clone(),
                partition,
                offset,
            },
            timestamp_ms: msg.timestamp().to_millis().filter(|t| *t > 0),
        };
        let key: PartitionKey = (topic, partition);
        let ticket = lock(&self.watermark).register(key, offset);
        Ok((record, Ack::Kafka(ticket)))
    }

    /// Pauses fetching for every assigned partition. The reader keeps polling while
    /// paused, so the consumer stays in its group however long the pause lasts
    /// (`max.poll.interval.ms`).
    pub fn pause(&self) -> Result<(), SourceError> {
        let assigned = self.consumer.assignment()?;
        self.consumer.pause(&assigned)?;
        Ok(())
    }

    /// Resumes fetching for every assigned partition (also ones assigned while paused).
    pub fn resume(&self) -> Result<(), SourceError> {
        let assigned = self.consumer.assignment()?;
        self.consumer.resume(&assigned)?;
        Ok(())
    }

    /// A handle for acknowledging deliveries.
    pub fn acker(&self) -> KafkaAcker {
        KafkaAcker {
            consumer: self.consumer.clone(),
            watermark: self.watermark.clone(),
        }
    }
}

/// Stores offsets as deliveries complete.
#[derive(Clone)]
pub struct KafkaAcker {
    consumer: Arc<Inner>,
    watermark: Arc<Mutex<Watermark>>,
}

impl KafkaAcker {
    /// Marks records delivered and stores the advanced watermarks: one lock and one
    /// offset store for the whole batch.
    pub fn ack_all<'a>(&self, tickets: impl IntoIterator<Item = &'a Ticket>) {
        let mut advanced: Vec<(&'a Ticket, i64)> = Vec::new();
        {
            let mut w = lock(&self.watermark);
            for ticket in tickets {
                if let Some(offset) = w.ack(ticket) {
                    match advanced.iter_mut().find(|(t, _)| t.key == ticket.key) {
                        Some(entry) => entry.1 = offset,
                        None => advanced.push((ticket, offset)),
                    }
                }
            }
        }
        if advanced.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(advanced.len());
        for (ticket, offset) in advanced {
            // Committed offsets name the next record to read.
            let _ =
                tpl.add_partition_offset(&ticket.key.0, ticket.key.1, Offset::Offset(offset + 1));
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // A partition was revoked meanwhile: its new owner re-reads from the last commit.
            debug!(error = %e, "offsets not stored");
        }
    }

    /// Commits stored offsets now (shutdown), waiting for the broker at most
    /// `within`: with the broker unreachable the commit is left to the next owner
    /// (it re-reads from the last commit: duplicates, never loss).
    pub async fn commit(&self, within: std::time::Duration) {
        let consumer = self.consumer.clone();
        let commit =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync));
        match tokio::time::timeout(within, commit).await {
            Ok(Ok(Ok(()))) => info!("final offsets committed"),
            // "No offset stored" is not a failure: nothing new was delivered.
            Ok(Ok(Err(e))) => debug!(error = %e, "final commit"),
            Ok(Err(e)) => warn!(error = %e, "final commit task failed"),
            Err(_) => warn!(timeout = ?within, "final commit not confirmed in time"),
        }
    }

    /// Pending (read, not yet committed-able) records.
    pub fn in_flight(&self) -> usize {
        lock(&self.watermark).in_flight()
    }

    /// Unsubscribes, so the group rebalances promptly on shutdown.
    pub fn close(&self) {
        self.consumer.unsubscribe();
    }
}

/// The watermark is only changed under this lock by short, non-panicking code;
/// a poisoned lock still holds consistent state.
fn lock(w: &Mutex<Watermark>) -> std::sync::MutexGuard<'_, Watermark> {
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
