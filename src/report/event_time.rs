//! When an event happened, as the event itself says: the reporter counts `findtime`
//! in event time, so a backlog delivered at once after an outage, or a replay of
//! last week, is not mistaken for a burst happening now.
//!
//! Contract: [`parse`] reads the value of the configured event-time field and gives
//! milliseconds since the epoch, or None when it is no time it knows:
//! - RFC 3339 / ISO 8601 (`2024-11-23T04:05:06.789Z`, `+00:00`, Wazuh's and
//!   Suricata's `+0000`, a space for the `T`);
//! - a number of seconds (fractions allowed) or, above 10^11, of milliseconds, as a
//!   JSON number or a string;
//! - a syslog (RFC 3164) time at the start of a string (`Nov 23 04:05:06 host ...`),
//!   which has no year: the latest one not more than a day ahead of `now_ms`.
//!
//! Without a field, or when it does not parse, the signal stage uses the record's
//! Kafka timestamp, which the pipeline carries over from its input record.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

const DAY_MS: i128 = 86_400_000;

/// The time `value` names, in ms since the epoch (see the module contract).
pub fn parse(value: &Value, now_ms: u64) -> Option<u64> {
    match value {
        Value::Number(n) => epoch(n.as_f64()?),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<f64>() {
                return epoch(n);
            }
            rfc3339(s).or_else(|| syslog(s, now_ms))
        }
        _ => None,
    }
}

/// Seconds, or milliseconds above 10^11 (year 5138 in seconds, 1973 in ms).
fn epoch(n: f64) -> Option<u64> {
    if !n.is_finite() || n <= 0.0 {
        return None;
    }
    let ms = if n > 1e11 { n } else { n * 1000.0 };
    (ms < 1e15).then_some(ms as u64)
}

fn rfc3339(s: &str) -> Option<u64> {
    if s.len() < 20 || !s.is_char_boundary(10) {
        return None;
    }
    let mut text = String::with_capacity(s.len() + 1);
    text.push_str(&s[..10]);
    text.push(if s.as_bytes()[10] == b' ' {
        'T'
    } else {
        s.as_bytes()[10] as char
    });
    text.push_str(&s[11..]);
    // `+0000` -> `+00:00`.
    let b = text.as_bytes();
    let n = b.len();
    if n > 5 && matches!(b[n - 5], b'+' | b'-') && b[n - 4..].iter().all(u8::is_ascii_digit) {
        text.insert(n - 2, ':');
    }
    let t = OffsetDateTime::parse(&text, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `Mmm dd hh:mm:ss` at the start of `s`, in UTC, in the latest year that puts it
/// no more than a day after `now_ms`.
fn syslog(s: &str, now_ms: u64) -> Option<u64> {
    let mut words = s.split_ascii_whitespace();
    let month = match words.next()? {
        "Jan" => Month::January,
        "Feb" => Month::February,
        "Mar" => Month::March,
        "Apr" => Month::April,
        "May" => Month::May,
        "Jun" => Month::June,
        "Jul" => Month::July,
        "Aug" => Month::August,
        "Sep" => Month::September,
        "Oct" => Month::October,
        "Nov" => Month::November,
        "Dec" => Month::December,
        _ => return None,
    };
    let day: u8 = words.next()?.parse().ok()?;
    let mut hms = words.next()?.split(':').map(|p| p.parse::<u8>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    let time = Time::from_hms(h, m, sec).ok()?;
    let now = i128::from(now_ms);
    let year = OffsetDateTime::from_unix_timestamp_nanos(now * 1_000_000)
        .ok()?
        .year();
    [year, year - 1]
        .into_iter()
        .filter_map(|y| {
            let date = Date::from_calendar_date(y, month, day).ok()?;
            let ms = PrimitiveDateTime::new(date, time)
                .assume_utc()
                .unix_timestamp_nanos()
                / 1_000_000;
            (ms <= now + DAY_MS).then_some(ms)
        })
        .next()
        .and_then(|ms| u64::try_from(ms).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // 2025-11-23T00:00:00Z
    const NOW: u64 = 1_763_856_000_000;

    fn at(v: Value) -> Option<u64> {
        parse(&v, NOW)
    }

    #[test]
    fn the_formats_of_wazuh_suricata_and_syslog() {
        let t = 1_763_856_306_789; // 2025-11-23T00:05:06.789Z
        assert_eq!(at(json!("2025-11-23T00:05:06.789Z")), Some(t));
        assert_eq!(at(json!("2025-11-23T00:05:06.789+0000")), Some(t));
        assert_eq!(at(json!("2025-11-23T02:05:06.789+02:00")), Some(t));
        assert_eq!(at(json!("2025-11-23 00:05:06.789Z")), Some(t));
        assert_eq!(at(json!("2025-11-23T00:05:06.789012+0000")), Some(t));
        assert_eq!(at(json!(1_763_856_306.789)), Some(t));
        assert_eq!(at(json!(1_763_856_306_789u64)), Some(t));
        assert_eq!(at(json!("1763856306.789")), Some(t));
        assert_eq!(
            at(json!("Nov 23 00:05:06 bastion sshd[4001]: Failed password")),
            Some(t - 789)
        );
        assert_eq!(
            at(json!("Nov  3 00:05:06 bastion")),
            Some(t - 789 - 20 * 86_400_000)
        );
        // A December line read on Nov 23 is last year's.
        assert_eq!(at(json!("Dec 24 00:00:00 host")), Some(1_734_998_400_000));
    }

    #[test]
    fn anything_else_is_no_time() {
        for v in [
            json!(null),
            json!(true),
            json!(-5),
            json!(0),
            json!(1e300),
            json!("yesterday"),
            json!("2025-13-45T00:00:00Z"),
            json!("Foo 23 00:05:06"),
            json!("Nov 31 00:05:06"),
            json!("Nov 23 25:00:00"),
            json!("2025-11-23T00:05:06ééé"),
            json!({"a": 1}),
            json!([1]),
        ] {
            assert_eq!(at(v.clone()), None, "{v}");
        }
    }
}
