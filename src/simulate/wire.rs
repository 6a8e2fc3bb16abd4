//! Small HTTP helpers shared by the provider modules.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A JSON answer with this status.
pub fn json(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A header as a string, if present and valid UTF-8.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Adds a header whose value is a number.
pub fn set_num(resp: &mut Response, name: &'static str, value: u64) {
    resp.headers_mut()
        .insert(HeaderName::from_static(name), HeaderValue::from(value));
}

/// Parses an address, tolerating surrounding whitespace.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

/// Parses a JSON request body; `None` for anything but a JSON object.
pub fn parse_object(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// `"AS15169"`, `"as15169"` or `"15169"` -> 15169.
pub fn parse_asn(text: &str) -> Option<u32> {
    let t = text.trim();
    let digits = t
        .strip_prefix("AS")
        .or_else(|| t.strip_prefix("as"))
        .unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn asn_forms() {
        assert_eq!(super::parse_asn("AS15169"), Some(15169));
        assert_eq!(super::parse_asn("15169"), Some(15169));
        assert_eq!(super::parse_asn("AS"), None);
        assert_eq!(super::parse_asn("-1"), None);
    }
}
