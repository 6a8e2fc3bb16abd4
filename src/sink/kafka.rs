//! Kafka sink: an idempotent producer (`acks=all`) that keeps keys and headers.
//!
//! With `partitioning: preserve` an event goes to the output partition with the
//! number of its input partition (modulo the output's partition count), so that a
//! partition's order survives the trip; `key` uses librdkafka's key partitioner.
//! The idempotent producer keeps order within a partition across retries.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::warn;

use super::{Delivery, SinkError};
use crate::config::Partitioning;
use crate::event::{Position, SourceRecord};

/// A producer bound to one topic.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    partitioning: Partitioning,
    partitions: i32,
}

/// Settings ipenrich needs for at-least-once, ordered output.
const FORCED: [(&str, &str); 2] = [("enable.idempotence", "true"), ("acks", "all")];

impl KafkaSink {
    /// Creates the producer and learns the topic's partition count.
    pub async fn new(
        brokers: &str,
        topic: &str,
        partitioning: Partitioning,
        options: &BTreeMap<String, String>,
    ) -> Result<Self, SinkError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "200000");
        for (k, v) in options {
            cc.set(k, v);
        }
        for (k, v) in FORCED {
            if options.get(k).is_some_and(|user| user != v) {
                warn!(
                    topic,
                    key = k,
                    "option overridden: at-least-once needs {k}={v}"
                );
            }
            cc.set(k, v);
        }
        let producer: FutureProducer = cc.create()?;
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
        })
    }

    /// Enqueues one message; waits while librdkafka's queue is full.
    pub async fn send(
        &self,
        source: &SourceRecord,
        payload: &[u8],
        extra_headers: &[(&str, &[u8])],
    ) -> Result<Delivery, SinkError> {
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
        loop {
            match self.producer.send_result(record) {
                Ok(future) => return Ok(Delivery::Pending(future)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
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
async fn partition_count(producer: &FutureProducer, topic: &str) -> Result<i32, SinkError> {
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
