//! Free-text scanner (placeholder, being written).
use std::net::IpAddr;

/// Calls `found` for every address in `text`, in order of appearance.
pub fn scan(text: &str, mut found: impl FnMut(IpAddr)) {
    for tok in text.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')) {
        if let Ok(ip) = tok.parse::<IpAddr>() {
            found(ip.to_canonical());
        }
    }
}
