//! Sources: a Kafka consumer group, files and standard input.
//!
//! A source hands out [`SourceRecord`]s in read order, each with an [`Ack`]. The sink
//! stage returns the ack once the event (or its dead letter) is durably delivered;
//! for Kafka that is what moves the committed offset (see [`watermark`]).

pub mod kafka;
pub mod lines;
pub mod watermark;

use crate::event::SourceRecord;

/// Proof of reading that the sink hands back after delivery.
#[derive(Debug, Clone)]
pub enum Ack {
    /// Nothing to commit (files, stdin).
    None,
    /// A Kafka offset.
    Kafka(watermark::Ticket),
}

/// Why a source stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running source.
pub enum Source {
    Kafka(kafka::KafkaSource),
    Lines(lines::LineSource),
}

impl Source {
    /// The next record; `None` at the end of a file or stdin (never for Kafka).
    pub async fn next(&mut self) -> Option<Result<(SourceRecord, Ack), SourceError>> {
        match self {
            Source::Kafka(k) => Some(k.next().await),
            Source::Lines(l) => l.next().await.transpose(),
        }
    }

    /// The handle the sink stage uses to acknowledge deliveries.
    pub fn acker(&self) -> Acker {
        match self {
            Source::Kafka(k) => Acker::Kafka(k.acker()),
            Source::Lines(_) => Acker::None,
        }
    }

    /// True for a Kafka consumer.
    pub fn is_kafka(&self) -> bool {
        matches!(self, Source::Kafka(_))
    }

    /// Stops fetching (Kafka) while the pipeline is full; reading goes on.
    pub fn pause(&self) -> Result<(), SourceError> {
        match self {
            Source::Kafka(k) => k.pause(),
            Source::Lines(_) => Ok(()),
        }
    }

    /// Fetches again after [`Source::pause`].
    pub fn resume(&self) -> Result<(), SourceError> {
        match self {
            Source::Kafka(k) => k.resume(),
            Source::Lines(_) => Ok(()),
        }
    }
}

/// Acknowledges delivered records back to their source.
#[derive(Clone)]
pub enum Acker {
    None,
    Kafka(kafka::KafkaAcker),
}

impl Acker {
    /// Marks records delivered (in delivery order).
    pub fn ack_all(&self, acks: &[Ack]) {
        if let Acker::Kafka(k) = self {
            k.ack_all(acks.iter().filter_map(|a| match a {
                Ack::Kafka(t) => Some(t),
                Ack::None => None,
            }));
        }
    }

    /// Commits what is stored (shutdown), waiting at most `within`.
    pub async fn commit(&self, within: std::time::Duration) {
        if let Acker::Kafka(k) = self {
            k.commit(within).await;
        }
    }
}
