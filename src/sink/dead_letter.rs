//! The dead letter: events that cannot be enriched, with the reason, never dropped.
//!
//! On Kafka the original bytes, key and headers are produced unchanged, plus headers
//! `ipenrich.error` (the reason), `ipenrich.error.kind`, `ipenrich.pipeline` and
//! `ipenrich.source` (topic/partition@offset). A record larger than
//! `max_message_bytes` is cut to fit and says so in `ipenrich.truncated_from`,
//! since the broker would refuse it whole. In a file each bad event is one JSON line
//! `{"error", "kind", "pipeline", "source", "event"}`; `event` holds the text, or
//! `event_base64` the bytes when they are not UTF-8.

use std::sync::{Mutex, MutexGuard, PoisonError};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use super::file::LineSink;
use super::kafka::{record_size, KafkaSink};
use super::{Delivery, SinkError};
use crate::event::{BadEvent, SourceRecord};

/// Where bad events go. Shared by the writer (bad input) and the acknowledgement
/// loop (records the broker refused), so it takes `&self`.
pub enum DeadLetter {
    Kafka(KafkaSink),
    File(Mutex<LineSink>),
}

impl DeadLetter {
    /// A dead letter writing JSON lines.
    pub fn file(sink: LineSink) -> Self {
        DeadLetter::File(Mutex::new(sink))
    }

    /// Sends a bad event with its reason.
    pub async fn send(
        &self,
        pipeline: &str,
        record: &SourceRecord,
        why: &BadEvent,
    ) -> Result<Delivery, SinkError> {
        let reason = why.to_string();
        let source = record.position.to_string();
        match self {
            DeadLetter::Kafka(sink) => {
                let full_len = record.payload.len().to_string();
                let mut headers: Vec<(&str, &[u8])> = vec![
                    ("ipenrich.error", reason.as_bytes()),
                    ("ipenrich.error.kind", why.kind().as_bytes()),
                    ("ipenrich.pipeline", pipeline.as_bytes()),
                    ("ipenrich.source", source.as_bytes()),
                    ("ipenrich.truncated_from", full_len.as_bytes()),
                ];
                // Cut the payload so that it fits with its key and every header; say
                // so (and the original size) only when it was cut.
                let room = sink
                    .max_message_bytes()
                    .saturating_sub(record_size(record, 0, &headers));
                if record.payload.len() <= room {
                    headers.pop();
                }
                let payload = &record.payload[..record.payload.len().min(room)];
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
                // A Value of strings and numbers always serialises.
                let bytes = serde_json::to_vec(&line).unwrap_or_default();
                lock(f).write_line(&bytes)?;
                Ok(Delivery::Done)
            }
        }
    }

    /// Flushes buffered records.
    pub async fn flush(&self) -> Result<(), SinkError> {
        match self {
            DeadLetter::Kafka(sink) => sink.flush().await,
            DeadLetter::File(f) => lock(f).flush(),
        }
    }

    /// Makes written records durable before their offsets may be committed:
    /// flushed, and for a file also `sync_data`.
    pub fn sync(&self) -> Result<(), SinkError> {
        match self {
            DeadLetter::Kafka(_) => Ok(()),
            DeadLetter::File(f) => lock(f).sync(),
        }
    }
}

/// The file is only written under this lock, and a write that panicked half way
/// leaves at worst a partial line: go on with it rather than poison every later one.
fn lock(f: &Mutex<LineSink>) -> MutexGuard<'_, LineSink> {
    f.lock().unwrap_or_else(PoisonError::into_inner)
}
