//! Every Kafka client is configured here, one way: ipenrich's defaults first, then
//! the user's `options` (security, tuning), then the settings a delivery guarantee
//! rests on, which the user cannot change. An option that tried to is overridden,
//! and a warning names it, so a weakened guarantee never goes unnoticed.
//!
//! Pipeline consumers and producers (`source::kafka`, `sink::kafka`) and the
//! reporter's clients (`report::kafka`) are built with [`client_config`].

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use tracing::warn;

/// At-least-once consumption: offsets are stored by ipenrich once the event's
/// output is delivered, and librdkafka commits what was stored.
pub const AT_LEAST_ONCE_CONSUMER: [(&str, &str); 2] = [
    ("enable.auto.offset.store", "false"),
    ("enable.auto.commit", "true"),
];

/// No duplicates and no loss on the producer side: idempotence with `acks=all`.
pub const IDEMPOTENT_PRODUCER: [(&str, &str); 2] =
    [("enable.idempotence", "true"), ("acks", "all")];

/// The configuration of one client: `bootstrap.servers`, then `defaults`, then the
/// user's `options`, then `forced`. `needs` says in the override warning what the
/// forced settings are for ("at-least-once", "the reporter").
pub fn client_config(
    brokers: &str,
    defaults: &[(&str, &str)],
    options: &BTreeMap<String, String>,
    forced: &[(&str, &str)],
    needs: &str,
) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers);
    for (k, v) in defaults {
        cc.set(*k, *v);
    }
    for (k, v) in options {
        cc.set(k, v);
    }
    for (k, v) in forced {
        if options.get(*k).is_some_and(|user| user != v) {
            warn!(key = k, "option overridden: {needs} needs {k}={v}");
        }
        cc.set(*k, *v);
    }
    cc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_defaults_and_forced_settings_override_options() {
        let options = BTreeMap::from([
            ("linger.ms".to_string(), "50".to_string()),
            ("acks".to_string(), "1".to_string()),
            ("security.protocol".to_string(), "SASL_SSL".to_string()),
        ]);
        let cc = client_config(
            "127.0.0.1:9092",
            &[("linger.ms", "5"), ("compression.type", "lz4")],
            &options,
            &IDEMPOTENT_PRODUCER,
            "at-least-once",
        );
        assert_eq!(cc.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(cc.get("compression.type"), Some("lz4"));
        assert_eq!(cc.get("linger.ms"), Some("50"));
        assert_eq!(cc.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(cc.get("acks"), Some("all"));
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
    }
}
