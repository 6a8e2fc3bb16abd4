//! Kafka sink: an idempotent producer (`acks=all`) that keeps keys and headers.
//!
//! With `partitioning: preserve` an event goes to the output partition with the
//! number of its input partition (modulo the output's partition count), so that a
//! partition's order survives the trip; `key` uses librdkafka's key partitioner.
//! The idempotent producer keeps order within a partition across retries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientContext;

use super::{Delivery, SinkError};
use crate::config::Partitioning;
use crate::event::{Position, SourceRecord};
use crate::health::PipelineHealth;

/// Producer callbacks: broker reachability for the pipeline's readiness, and when
/// the idempotent producer got its producer id.
pub struct SinkContext {
    health: Arc<PipelineHealth>,
    producer_id: tokio::sync::watch::Sender<bool>,
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.health
            .set_producer_brokers_up(crate::health::brokers_up(&statistics));
        if statistics
            .eos
            .as_ref()
            .is_some_and(|eos| eos.idemp_state == "Assigned")
        {
            self.producer_id
                .send_if_modified(|got| !std::mem::replace(got, true));
        }
    }
}

/// A producer bound to one topic.
pub struct KafkaSink {
    producer: FutureProducer<SinkContext>,
    topic: String,
    partitioning: Partitioning,
    partitions: i32,
    /// The producer's `message.max.bytes`: larger records are refused before sending.
    max_message_bytes: usize,
    producer_id: tokio::sync::watch::Receiver<bool>,
}

/// What librdkafka counts beyond key, value and header bytes: the record's own
/// framing (varints, attributes, timestamps) and each header's; generous on purpose.
const RECORD_OVERHEAD: usize = 128;
const HEADER_OVERHEAD: usize = 16;

/// The size librdkafka checks against `message.max.bytes`, rounded up.
pub fn record_size(
    source: &SourceRecord,
    payload_len: usize,
    extra_headers: &[(&str, &[u8])],
) -> usize {
    let key = source.key.as_ref().map_or(0, Vec::len);
    let headers: usize = source
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + HEADER_OVERHEAD)
        .chain(
            extra_headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + HEADER_OVERHEAD),
        )
        .sum();
    payload_len + key + headers + RECORD_OVERHEAD
}

/// The producer's librdkafka settings: ipenrich's defaults, the user's `options`, then
/// idempotence with `acks=all`. Public so that the end-to-end benchmark's passthrough
/// baseline (benches/e2e.rs) runs with exactly these settings.
pub fn producer_config(brokers: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    crate::kafka::client_config(
        brokers,
        &[
            // Readiness and the producer id come from the statistics (the id within
            // 100 ms of its assignment: see `producer_id_assigned`).
            ("statistics.interval.ms", "100"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("queue.buffering.max.messages", "200000"),
        ],
        options,
        &crate::kafka::IDEMPOTENT_PRODUCER,
        "at-least-once",
    )
}

impl KafkaSink {
    /// Creates the producer and learns the topic's partition count.
    pub async fn new(
        brokers: &str,
        topic: &str,
        partitioning: Partitioning,
        options: &BTreeMap<String, String>,
        health: Arc<PipelineHealth>,
    ) -> Result<Self, SinkError> {
        let cc = producer_config(brokers, options);
        let max_message_bytes = cc
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(crate::config::LIBRDKAFKA_MESSAGE_MAX_BYTES);
        health.expect_producer();
        let (producer_id, has_producer_id) = tokio::sync::watch::channel(false);
        let producer: FutureProducer<SinkContext> = cc.create_with_context(SinkContext {
            health,
            producer_id,
        })?;
        let partitions = if partitioning == Partitioning::Preserve {
            partition_count(&producer, topic).await?
        } else {
            0
        };
        Ok(KafkaSink {
            producer,
            topic: topic.to_string(),
            partitioning,
            partitions,
            max_message_bytes,
            producer_id: has_producer_id,
        })
    }

    /// Waits, at most `bound`, until the idempotent producer has its producer id.
    /// Until then librdkafka holds every send, and a fresh producer asks for its id
    /// only once a broker connection is up, retrying every 500 ms: a pipeline that
    /// consumed first would hold its first events that long (issue 13). False when
    /// the bound passed first (sends then wait inside librdkafka, nothing is lost).
    pub fn producer_id_assigned(
        &self,
        bound: Duration,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let mut rx = self.producer_id.clone();
        async move {
            tokio::time::timeout(bound, rx.wait_for(|got| *got))
                .await
                .is_ok_and(|r| r.is_ok())
        }
    }

    /// The largest record this producer sends (`message.max.bytes`).
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Enqueues one message; waits while librdkafka's queue is full. A record over
    /// `message.max.bytes` is refused here ([`SinkError::TooLarge`], per record).
    pub async fn send(
        &self,
        source: &SourceRecord,
        payload: &[u8],
        extra_headers: &[(&str, &[u8])],
    ) -> Result<Delivery, SinkError> {
        let size = record_size(source, payload.len(), extra_headers);
        if size > self.max_message_bytes {
            return Err(SinkError::TooLarge {
                size,
                limit: self.max_message_bytes,
            });
        }
        let headers = if source.headers.is_empty() && extra_headers.is_empty() {
            None
        } else {
            let mut h = OwnedHeaders::new_with_capacity(source.headers.len() + extra_headers.len());
            for (k, v) in &source.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            for (k, v) in extra_headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(*v),
                });
            }
            Some(h)
        };
        let partition = match (&source.position, self.partitioning) {
            (Position::Kafka { partition, .. }, Partitioning::Preserve) if self.partitions > 0 => {
                Some(partition % self.partitions)
            }
            _ => None,
        };
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        if let Some(key) = &source.key {
            record = record.key(key.as_slice());
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(t) = source.timestamp_ms {
            record = record.timestamp(t);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(future) => return Ok(Delivery::Pending(future)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    return Err(SinkError::TooLarge {
                        size,
                        limit: self.max_message_bytes,
                    })
                }
                Err((e, _)) => return Err(SinkError::Kafka(e)),
            }
        }
    }

    /// Waits until every queued message is delivered (bounded by 30 s).
    pub async fn flush(&self) -> Result<(), SinkError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30)))
            .await
            .map_err(|e| SinkError::Topic {
                topic: String::new(),
                reason: e.to_string(),
            })??;
        Ok(())
    }
}

/// Asks the cluster how many partitions `topic` has, retrying while it is being created.
async fn partition_count(
    producer: &FutureProducer<SinkContext>,
    topic: &str,
) -> Result<i32, SinkError> {
    let mut last = String::from("no metadata");
    for _ in 0..20 {
        let p = producer.clone();
        let t = topic.to_string();
        let md = tokio::task::spawn_blocking(move || {
            p.client()
                .fetch_metadata(Some(&t), Duration::from_secs(5))
                .map(|md| {
                    md.topics()
                        .first()
                        .map(|t| (t.partitions().len() as i32, t.error()))
                })
        })
        .await
        .map_err(|e| SinkError::Topic {
            topic: topic.to_string(),
            reason: e.to_string(),
        })?;
        match md {
            Ok(Some((n, None))) if n > 0 => return Ok(n),
            Ok(other) => last = format!("{other:?}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(SinkError::Topic {
        topic: topic.to_string(),
        reason: format!("no partitions found ({last})"),
    })
}
