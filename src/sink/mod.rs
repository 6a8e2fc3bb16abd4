//! Sinks: where enriched events go (Kafka, a file, stdout) and the dead letter.
//!
//! A send either completes at once (files) or returns a pending delivery (Kafka)
//! that resolves when the broker acknowledged it; only then is the event's source
//! offset acknowledged. Output order equals the order of sends.

pub mod dead_letter;
pub mod file;
pub mod kafka;

use rdkafka::producer::DeliveryFuture;

/// Why a sink failed. Delivery failures are fatal to the pipeline: the offset was
/// not committed, so a restart re-reads the event (at-least-once).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("output topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
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
                Ok(Err((e, _msg))) => Err(SinkError::Kafka(e)),
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

    /// Flushes buffered output (files) or waits for queued messages (Kafka).
    pub async fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Kafka(k) => k.flush().await,
            Sink::File(f) => f.flush(),
        }
    }
}
