//! The dead letter: events that cannot be enriched, with the reason, never dropped.
//!
//! On Kafka the original bytes, key and headers are produced unchanged, plus headers
//! `ipenrich.error` (the reason), `ipenrich.error.kind`, `ipenrich.pipeline` and
//! `ipenrich.source` (topic/partition@offset). A record larger than
//! `max_message_bytes` is cut to fit and says so in `ipenrich.truncated_from`,
//! since the broker would refuse it whole. In a file each bad event is one JSON line
//! `{"error", "kind", "pipeline", "source", "event"}`; `event` holds the text, or
//! `event_base64` the bytes when they are not UTF-8.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use super::file::LineSink;
use super::kafka::KafkaSink;
use super::{Delivery, SinkError};
use crate::event::{BadEvent, SourceRecord};

/// Where bad events go.
pub enum DeadLetter {
    Kafka {
        sink: KafkaSink,
        max_message_bytes: usize,
    },
    File(LineSink),
}

impl DeadLetter {
    /// Sends a bad event with its reason.
    pub async fn send(
        &mut self,
        pipeline: &str,
        record: &SourceRecord,
        why: &BadEvent,
    ) -> Result<Delivery, SinkError> {
        let reason = why.to_string();
        let source = record.position.to_string();
        match self {
            DeadLetter::Kafka {
                sink,
                max_message_bytes,
            } => {
                let cut = record.payload.len() > *max_message_bytes;
                let payload = &record.payload[..record.payload.len().min(*max_message_bytes)];
                let full_len = record.payload.len().to_string();
                let mut headers: Vec<(&str, &[u8])> = vec![
                    ("ipenrich.error", reason.as_bytes()),
                    ("ipenrich.error.kind", why.kind().as_bytes()),
                    ("ipenrich.pipeline", pipeline.as_bytes()),
                    ("ipenrich.source", source.as_bytes()),
                ];
                if cut {
                    headers.push(("ipenrich.truncated_from", full_len.as_bytes()));
                }
                sink.send(record, payload, &headers).await
            }
            DeadLetter::File(f) => {
                let mut line = json!({
                    "error": reason,
                    "kind": why.kind(),
                    "pipeline": pipeline,
                    "source": source,
                });
                match std::str::from_utf8(&record.payload) {
                    Ok(text) => line["event"] = text.into(),
                    Err(_) => line["event_base64"] = STANDARD.encode(&record.payload).into(),
                }
                for (k, v) in &record.headers {
                    if k == "ipenrich.original_length" {
                        line["original_length"] = String::from_utf8_lossy(v)
                            .parse::<u64>()
                            .unwrap_or(0)
                            .into();
                    }
                }
                let bytes = serde_json::to_vec(&line).expect("json value serialises");
                f.write_line(&bytes)?;
                Ok(Delivery::Done)
            }
        }
    }

    /// Flushes buffered records.
    pub async fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            DeadLetter::Kafka { sink, .. } => sink.flush().await,
            DeadLetter::File(f) => f.flush(),
        }
    }
}
