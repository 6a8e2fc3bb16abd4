//! Events as sources hand them over, and their decoding into JSON.
//!
//! A record keeps its raw bytes: the enriched output is spliced into them, so the
//! event's own fields are never reordered or re-rendered. Decoding is where bad
//! input is recognised; every [`BadEvent`] names its reason for the dead letter.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::Format;

/// Where a record came from, for offsets, ordering and the dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A Kafka record.
    Kafka {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    /// A line of a file or of standard input (1-based).
    Line { source: Arc<str>, line: u64 },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}@{offset}"),
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
    /// The input record's timestamp (Kafka `CreateTime`/`LogAppendTime`), ms since
    /// the epoch; carried to the output record, so event time survives enrichment
    /// (the reporter's `findtime` counts in it). None for lines.
    pub timestamp_ms: Option<i64>,
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
    /// The enriched event (with its key and headers) is larger than the output accepts.
    #[error("enriched event is {size} bytes with key and headers, larger than the output's message.max.bytes ({limit})")]
    TooLargeForOutput { size: usize, limit: usize },
    /// The output refused this one record (e.g. the broker's RECORD_TOO_LARGE).
    #[error("output refused the record: {0}")]
    Refused(String),
    /// Processing failed on a bug; the event is kept, not the process brought down.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BadEvent {
    /// A short code for metrics labels and the `ipenrich.error.kind` header.
    pub fn kind(&self) -> &'static str {
        match self {
            BadEvent::TooLarge { .. } => "too_large",
            BadEvent::InvalidUtf8 { .. } => "invalid_utf8",
            BadEvent::InvalidJson(_) => "invalid_json",
            BadEvent::NotAnObject(_) => "not_an_object",
            BadEvent::TooLargeForOutput { .. } => "too_large_for_output",
            BadEvent::Refused(_) => "refused",
            BadEvent::Internal(_) => "internal",
        }
    }
}

/// Deepest nesting accepted. serde_json refuses a document once its 128th level
/// opens (its recursion budget of 128 reaches zero there), so 127 levels is the most
/// that every later full parse (ECS merge, the reporter) is guaranteed to accept.
pub const MAX_DEPTH: usize = 127;

/// A decoded event.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A JSON object, parsed one level deep: nested values stay raw text until a
    /// configured path needs them, so the hot path allocates one small vector.
    Json(JsonObject<'a>),
    /// A line of text, enriched as `{"message": line}`.
    Text(&'a str),
}

/// A JSON object's raw text and its top-level members.
#[derive(Debug)]
pub struct JsonObject<'a> {
    /// The whole object as read, for splicing.
    pub raw: &'a str,
    /// Top-level members in document order; values are raw JSON.
    pub members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> JsonObject<'a> {
    /// The raw value of a top-level key.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// One level of a raw JSON value.
pub enum Node<'a> {
    Object(Vec<(Cow<'a, str>, &'a RawValue)>),
    Array(Vec<&'a RawValue>),
    String(Cow<'a, str>),
    /// Numbers, booleans, null.
    Scalar,
}

/// Opens one level of a raw value that was validated at decode.
pub fn node(raw: &RawValue) -> Node<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => Node::Object(parse_members(text).unwrap_or_default()),
        Some(b'[') => Node::Array(serde_json::from_str(text).unwrap_or_default()),
        Some(b'"') => match serde_json::from_str::<CowStr<'_>>(text) {
            Ok(s) => Node::String(s.0),
            // A lone surrogate escape (`"\ud800 1.1.1.1"`) is valid JSON text that
            // serde_json will not decode; decode it lossily so no address can hide.
            Err(_) => Node::String(Cow::Owned(unescape_lossy(text))),
        },
        _ => Node::Scalar,
    }
}

/// A JSON object's text as a [`Value`], never failing on what the raw scan accepts:
/// where serde_json refuses a value (`1e400`, a lone surrogate escape) the number
/// is kept as its text and the string decoded lossily, so no field (and no
/// address in it) can hide from a consumer of the pipeline's output (the
/// reporter). None when the text is no JSON object or nests deeper than
/// [`MAX_DEPTH`].
pub fn object_lossy(text: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v.is_object() => return Some(v),
        Ok(_) => return None,
        Err(_) => {}
    }
    let Ok(Decoded::Json(object)) = parse_object(text) else {
        return None;
    };
    let map = object
        .members
        .iter()
        .map(|(k, v)| (k.to_string(), value_lossy(v)))
        .collect();
    Some(Value::Object(map))
}

fn value_lossy(raw: &RawValue) -> Value {
    match node(raw) {
        Node::Object(members) => Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.to_string(), value_lossy(v)))
                .collect(),
        ),
        Node::Array(items) => Value::Array(items.iter().map(|v| value_lossy(v)).collect()),
        Node::String(s) => Value::String(s.into_owned()),
        Node::Scalar => {
            serde_json::from_str(raw.get()).unwrap_or_else(|_| Value::String(raw.get().to_owned()))
        }
    }
}

/// Decodes a JSON string literal (with its quotes), replacing escapes that name no
/// Unicode scalar value (lone surrogates) with U+FFFD.
pub fn unescape_lossy(literal: &str) -> String {
    let inner = literal
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(literal);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let Ok(unit) = u16::from_str_radix(&hex, 16) else {
                    out.push(char::REPLACEMENT_CHARACTER);
                    continue;
                };
                if (0xD800..0xDC00).contains(&unit) {
                    // A high surrogate: a pair only if `\uDC00..DFFF` follows.
                    let rest = chars.as_str();
                    let low = rest
                        .strip_prefix("\\u")
                        .and_then(|r| r.get(..4))
                        .and_then(|h| u16::from_str_radix(h, 16).ok())
                        .filter(|l| (0xDC00..0xE000).contains(l));
                    match low {
                        Some(low) => {
                            chars = rest[6..].chars();
                            let code = 0x10000
                                + ((u32::from(unit) - 0xD800) << 10)
                                + (u32::from(low) - 0xDC00);
                            out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                        }
                        None => out.push(char::REPLACEMENT_CHARACTER),
                    }
                } else {
                    out.push(
                        char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER),
                    );
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Decodes raw bytes according to the source's format.
pub fn decode(payload: &[u8], format: Format, max_bytes: usize) -> Result<Decoded<'_>, BadEvent> {
    if payload.len() > max_bytes {
        return Err(BadEvent::TooLarge {
            size: payload.len(),
            limit: max_bytes,
        });
    }
    let text = std::str::from_utf8(payload).map_err(|e| BadEvent::InvalidUtf8 {
        at: e.valid_up_to(),
    })?;
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
    // serde_json skips raw values without a depth limit, so bound nesting first:
    // hostile nesting is a bad event, and later walks can never overflow the stack.
    if nesting_exceeds(text.as_bytes(), MAX_DEPTH) {
        return Err(BadEvent::InvalidJson(format!(
            "nesting deeper than {MAX_DEPTH} levels (recursion limit)"
        )));
    }
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return match serde_json::from_str::<&RawValue>(text) {
            Ok(v) => Err(BadEvent::NotAnObject(json_kind(v.get()))),
            Err(e) => Err(BadEvent::InvalidJson(e.to_string())),
        };
    }
    match parse_members(text) {
        Ok(members) => Ok(Decoded::Json(JsonObject { raw: text, members })),
        Err(e) => Err(BadEvent::InvalidJson(e.to_string())),
    }
}

fn json_kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// True when brackets nest deeper than `max` outside of strings. One pass, no allocation.
pub fn nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() {
                    match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                        Some(j) if bytes[i + j] == b'\\' => i += j + 2,
                        Some(j) => {
                            i += j;
                            break;
                        }
                        None => return false,
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Parses an object's members, borrowing keys unless they hold escapes.
fn parse_members(text: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, serde_json::Error> {
    serde_json::from_str::<Members<'_>>(text).map(|m| m.0)
}

struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a json object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, v)) = map.next_entry::<CowStr<'de>, &'de RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A string that borrows from the input when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_objects_and_text() {
        assert!(matches!(
            decode(br#" {"a":1}"#, Format::Auto, 100),
            Ok(Decoded::Json(_))
        ));
        assert!(matches!(
            decode(b"sshd[1]: hi", Format::Auto, 100),
            Ok(Decoded::Text(_))
        ));
        assert!(matches!(
            decode(b"{not json", Format::Auto, 100),
            Ok(Decoded::Text(_))
        ));
    }

    #[test]
    fn json_rejects_with_reasons() {
        assert_eq!(
            decode(b"[1]", Format::Json, 100).unwrap_err().kind(),
            "not_an_object"
        );
        assert_eq!(
            decode(b"{x", Format::Json, 100).unwrap_err().kind(),
            "invalid_json"
        );
        assert_eq!(
            decode(b"{}\xff", Format::Json, 100).unwrap_err(),
            BadEvent::InvalidUtf8 { at: 2 }
        );
        assert_eq!(
            decode(&[b' '; 101], Format::Json, 100).unwrap_err(),
            BadEvent::TooLarge {
                size: 101,
                limit: 100
            }
        );
    }

    #[test]
    fn nesting_ignores_brackets_in_strings() {
        assert!(!nesting_exceeds(br#"{"a":"[[[[[[\"[[[["}"#, 2));
        assert!(nesting_exceeds(br#"{"a":[[1]]}"#, 2));
        assert!(!nesting_exceeds(br#"{"a":[[1]]}"#, 3));
        assert!(!nesting_exceeds(br#"{"unterminated":"[[[["#, 1));
    }

    #[test]
    fn members_borrow_unless_escaped() {
        let Decoded::Json(o) =
            decode(br#"{"a":1,"b\u0041":{"c":[2]}}"#, Format::Json, 100).unwrap()
        else {
            panic!()
        };
        assert!(matches!(o.members[0].0, Cow::Borrowed("a")));
        assert_eq!(o.members[1].0, "bA");
        assert_eq!(o.get("bA").unwrap().get(), r#"{"c":[2]}"#);
    }

    #[test]
    fn deep_nesting_is_a_bad_event_not_a_crash() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let doc = format!("{{\"a\":{deep}}}");
        let err = decode(doc.as_bytes(), Format::Json, usize::MAX).unwrap_err();
        assert_eq!(err.kind(), "invalid_json");
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }

    /// Regression (issue 8.1): a lone surrogate escape made the string undecodable,
    /// so `1.1.1.1` beside it was hidden from extraction (`ips: []`, no marker).
    #[test]
    fn lone_surrogates_decode_lossily() {
        let raw = RawValue::from_string(r#""\ud800 from 1.1.1.1 \ud83d\ude00 \n""#.into()).unwrap();
        let Node::String(s) = node(&raw) else {
            panic!("not a string")
        };
        assert_eq!(s, "\u{fffd} from 1.1.1.1 \u{1f600} \n");
        assert_eq!(
            unescape_lossy(r#""\udc00\ud800\u12zz""#),
            "\u{fffd}\u{fffd}\u{fffd}"
        );
    }

    #[test]
    fn an_object_serde_json_refuses_still_becomes_a_value() {
        let text =
            r#"{"a":1e400,"msg":"\ud800 from 45.9.9.9","n":{"deep":[1,-1e999,"x"]},"ok":true}"#;
        assert!(serde_json::from_str::<Value>(text).is_err());
        let v = object_lossy(text).unwrap();
        assert_eq!(v["a"], Value::String("1e400".into()));
        assert_eq!(v["msg"], Value::String("\u{fffd} from 45.9.9.9".into()));
        assert_eq!(v["n"]["deep"][1], Value::String("-1e999".into()));
        assert_eq!(v["n"]["deep"][2], Value::String("x".into()));
        assert_eq!(v["ok"], Value::Bool(true));
        assert_eq!(object_lossy(r#"{"plain":[1,2]}"#).unwrap()["plain"][1], 2);
        assert_eq!(object_lossy("[1]"), None);
        assert_eq!(object_lossy("not json"), None);
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(object_lossy(&deep), None);
    }
}
