//! Sinks: where enriched events go (Kafka, a file, stdout) and the dead letter.
//!
//! A send either completes at once (files) or returns a pending delivery (Kafka)
//! that resolves when the broker acknowledged it; only then is the event's source
//! offset acknowledged. Output order equals the order of sends.

pub mod dead_letter;
pub mod file;
pub mod kafka;

use rdkafka::producer::DeliveryFuture;

use crate::failure::Class;

/// Why a sink failed. Each error has a class ([`SinkError::is_per_record`]): a
/// per-record refusal sends that one event to the dead letter and moves on; any
/// other failure is fatal to the pipeline: the offset was not committed, so a
/// restart re-reads the event (at-least-once). Transient broker trouble never
/// surfaces here: librdkafka retries it until `message.timeout.ms`.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The message with its key and headers is larger than the output accepts.
    #[error("message is {size} bytes with key and headers, over message.max.bytes ({limit})")]
    TooLarge { size: usize, limit: usize },
    /// The broker refused this one record; `message` is what was produced.
    #[error("broker refused the record: {reason}")]
    Refused {
        reason: String,
        message: Box<rdkafka::message::OwnedMessage>,
    },
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("output topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
}

impl SinkError {
    /// True when the error concerns one record only: it goes to the dead letter.
    pub fn is_per_record(&self) -> bool {
        matches!(self, SinkError::TooLarge { .. } | SinkError::Refused { .. })
    }
}

/// The result of a send.
pub enum Delivery {
    /// Written (files, stdout).
    Done,
    /// Enqueued in librdkafka; resolves when the broker acknowledged it.
    Pending(DeliveryFuture),
}

impl Delivery {
    /// Waits for the acknowledgement.
    pub async fn wait(self) -> Result<(), SinkError> {
        match self {
            Delivery::Done => Ok(()),
            Delivery::Pending(f) => match f.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, message))) => match crate::failure::classify_kafka(&e) {
                    Class::PerRecord => Err(SinkError::Refused {
                        reason: e.to_string(),
                        message: Box::new(message),
                    }),
                    _ => Err(SinkError::Kafka(e)),
                },
                Err(_canceled) => Err(SinkError::Kafka(rdkafka::error::KafkaError::Canceled)),
            },
        }
    }
}

/// An output for enriched events.
pub enum Sink {
    Kafka(kafka::KafkaSink),
    File(file::LineSink),
}

impl Sink {
    /// Waits, at most `bound`, until a send can leave at once: a Kafka producer has
    /// its producer id ([`kafka::KafkaSink::producer_id_assigned`]); files are ready.
    pub fn ready(
        &self,
        bound: std::time::Duration,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let kafka = match self {
            Sink::Kafka(k) => Some(k.producer_id_assigned(bound)),
            Sink::File(_) => None,
        };
        async move {
            match kafka {
                Some(assigned) => assigned.await,
                None => true,
            }
        }
    }

    /// Sends one enriched event, keeping the source record's key and headers.
    pub async fn send(
        &mut self,
        record: &crate::event::SourceRecord,
        payload: &[u8],
    ) -> Result<Delivery, SinkError> {
        match self {
            Sink::Kafka(k) => k.send(record, payload, &[]).await,
            Sink::File(f) => f.write_line(payload).map(|()| Delivery::Done),
        }
    }

    /// Makes sent events durable before their offsets may be committed: a file is
    /// flushed and synced, stdout flushed; Kafka deliveries carry their own acks.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Kafka(_) => Ok(()),
            Sink::File(f) => f.sync(),
        }
    }

    /// Flushes buffered output (files) or waits for queued messages (Kafka).
    pub async fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Kafka(k) => k.flush().await,
            Sink::File(f) => f.flush(),
        }
    }
}
