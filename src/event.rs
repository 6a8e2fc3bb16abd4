//! Events as sources hand them over, and their decoding into JSON.
//!
//! A record keeps its raw bytes: the enriched output is spliced into them, so the
//! event's own fields are never reordered or re-rendered. Decoding is where bad
//! input is recognised; every [`BadEvent`] names its reason for the dead letter.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::Format;

/// Where a record came from, for offsets, ordering and the dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A Kafka record.
    Kafka { topic: Arc<str>, partition: i32, offset: i64 },
    /// A line of a file or of standard input (1-based).
    Line { source: Arc<str>, line: u64 },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Kafka { topic, partition, offset } => write!(f, "{topic}/{partition}@{offset}"),
            Position::Line { source, line } => write!(f, "{source}:{line}"),
        }
    }
}

/// One event as read from a source.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// The bytes exactly as read (without the line terminator).
    pub payload: Vec<u8>,
    /// Kafka message key, preserved on output.
    pub key: Option<Vec<u8>>,
    /// Kafka headers, preserved on output.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Where it came from.
    pub position: Position,
}

/// Why an event cannot be enriched. It goes to the dead letter with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadEvent {
    #[error("event is {size} bytes, larger than max_event_bytes ({limit})")]
    TooLarge { size: usize, limit: usize },
    #[error("event is not valid utf-8 (first bad byte at offset {at})")]
    InvalidUtf8 { at: usize },
    #[error("event is not valid json: {0}")]
    InvalidJson(String),
    #[error("event is json but not an object (found {0})")]
    NotAnObject(&'static str),
}

impl BadEvent {
    /// A short code for metrics labels and the `ipenrich.error.kind` header.
    pub fn kind(&self) -> &'static str {
        match self {
            BadEvent::TooLarge { .. } => "too_large",
            BadEvent::InvalidUtf8 { .. } => "invalid_utf8",
            BadEvent::InvalidJson(_) => "invalid_json",
            BadEvent::NotAnObject(_) => "not_an_object",
        }
    }
}

/// A decoded event.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A JSON object; `raw` is its text, for splicing.
    Json { raw: &'a str, object: Map<String, Value> },
    /// A line of text, enriched as `{"message": line}`.
    Text(&'a str),
}

/// Decodes raw bytes according to the source's format.
pub fn decode(payload: &[u8], format: Format, max_bytes: usize) -> Result<Decoded<'_>, BadEvent> {
    if payload.len() > max_bytes {
        return Err(BadEvent::TooLarge { size: payload.len(), limit: max_bytes });
    }
    let text = std::str::from_utf8(payload)
        .map_err(|e| BadEvent::InvalidUtf8 { at: e.valid_up_to() })?;
    let looks_like_object = text.trim_start().starts_with('{');
    match format {
        Format::Text => Ok(Decoded::Text(text)),
        Format::Auto if !looks_like_object => Ok(Decoded::Text(text)),
        Format::Auto => match parse_object(text) {
            Ok(decoded) => Ok(decoded),
            // A syslog line may start with `{` without being JSON: auto means "try".
            Err(_) => Ok(Decoded::Text(text)),
        },
        Format::Json => parse_object(text),
    }
}

fn parse_object(text: &str) -> Result<Decoded<'_>, BadEvent> {
    // serde_json stops at a nesting depth of 128, so hostile nesting is an error, not a stack overflow.
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(Decoded::Json { raw: text, object }),
        Ok(other) => Err(BadEvent::NotAnObject(json_kind(&other))),
        Err(e) => Err(BadEvent::InvalidJson(e.to_string())),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_objects_and_text() {
        assert!(matches!(decode(br#" {"a":1}"#, Format::Auto, 100), Ok(Decoded::Json { .. })));
        assert!(matches!(decode(b"sshd[1]: hi", Format::Auto, 100), Ok(Decoded::Text(_))));
        assert!(matches!(decode(b"{not json", Format::Auto, 100), Ok(Decoded::Text(_))));
    }

    #[test]
    fn json_rejects_with_reasons() {
        assert_eq!(decode(b"[1]", Format::Json, 100).unwrap_err().kind(), "not_an_object");
        assert_eq!(decode(b"{x", Format::Json, 100).unwrap_err().kind(), "invalid_json");
        assert_eq!(decode(b"{}\xff", Format::Json, 100).unwrap_err(), BadEvent::InvalidUtf8 { at: 2 });
        assert_eq!(
            decode(&[b' '; 101], Format::Json, 100).unwrap_err(),
            BadEvent::TooLarge { size: 101, limit: 100 }
        );
    }

    #[test]
    fn deep_nesting_is_a_bad_event_not_a_crash() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let doc = format!("{{\"a\":{deep}}}");
        let err = decode(doc.as_bytes(), Format::Json, usize::MAX).unwrap_err();
        assert_eq!(err.kind(), "invalid_json");
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }
}
