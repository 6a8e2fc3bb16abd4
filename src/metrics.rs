//! Prometheus metrics: one [`Metrics`] registry built at start-up.
//!
//! Labels are bounded: pipeline, provider, class, kind, status. Never an address,
//! a user, a URL or an event field (unbounded cardinality).

use crate::extract::IpClass;
use crate::lookup::Status;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Metric names, kept in one place for dashboards and alerts.
pub mod names {
    pub const EVENTS_IN: &str = "ipenrich_events_in_total";
    pub const EVENTS_OUT: &str = "ipenrich_events_out_total";
    pub const SOURCE_BYTES: &str = "ipenrich_source_bytes_total";
    pub const DEAD_LETTERS: &str = "ipenrich_dead_letters_total";
    pub const IPS_EXTRACTED: &str = "ipenrich_ips_extracted_total";
    pub const LOOKUPS: &str = "ipenrich_lookups_total";
    pub const CAPPED: &str = "ipenrich_events_ip_capped_total";
    pub const IN_FLIGHT: &str = "ipenrich_events_in_flight";
    pub const UP: &str = "ipenrich_pipeline_up";
    pub const RESTARTS: &str = "ipenrich_restarts_total";
    pub const CONSUMER_LAG: &str = "ipenrich_consumer_lag";
    pub const LATENCY: &str = "ipenrich_event_latency_seconds";
    pub const UNPLACED: &str = "ipenrich_unplaced_total";
}

/// Buckets of the end-to-end latency, from a millisecond to a minute: an
/// enrichment answered from cache takes milliseconds, one waiting on a rate-limited
/// provider up to `max_enrichment_delay`, one stuck behind a broker outage longer.
const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    events_in: IntCounterVec,
    events_out: IntCounterVec,
    source_bytes: IntCounterVec,
    dead_letters: IntCounterVec,
    ips_extracted: IntCounterVec,
    lookups: IntCounterVec,
    capped: IntCounterVec,
    in_flight: IntGaugeVec,
    up: IntGaugeVec,
    restarts: IntCounterVec,
    consumer_lag: IntGaugeVec,
    latency: HistogramVec,
    unplaced: IntCounterVec,
}

/// Handles of one pipeline, resolved once so the per-event path does no label hashing.
#[derive(Clone)]
pub struct PipelineMetrics {
    pub events_in: IntCounter,
    pub events_out: IntCounter,
    /// Bytes read from a file or standard input (none for Kafka).
    pub source_bytes: IntCounter,
    pub capped: IntCounter,
    pub in_flight: IntGauge,
    pub up: IntGauge,
    /// Seconds from reading an event to the sink's acknowledgement of its output.
    pub latency: Histogram,
    /// Messages behind the partitions' end, per partition (`ipenrich_consumer_lag`).
    pub consumer_lag: ConsumerLag,
    /// Readiness of this pipeline; also drives `up`.
    pub health: std::sync::Arc<crate::health::PipelineHealth>,
    name: String,
    dead_letters: IntCounterVec,
    ips_by_class: Vec<IntCounter>,
    lookups_by_status: Vec<IntCounter>,
    unplaced: IntCounterVec,
}

impl PipelineMetrics {
    /// Counts a dead letter by kind.
    pub fn dead_letter(&self, kind: &str) {
        self.dead_letters
            .with_label_values(&[&self.name, kind])
            .inc();
    }

    /// Counts an extracted address by class.
    pub fn ip(&self, class: IpClass) {
        self.ips_by_class[class as usize].inc();
    }

    /// Counts a lookup by status.
    pub fn lookup(&self, status: Status) {
        self.lookups_by_status[status as usize].inc();
    }

    /// Counts output that could not go to its path (`ipenrich.unplaced`). The paths
    /// are the ECS fields ipenrich writes and `output.field`: a bounded set.
    pub fn unplaced(&self, path: &str) {
        self.unplaced.with_label_values(&[&self.name, path]).inc();
    }
}

/// The consumer lag gauges of one pipeline: a series per assigned partition, removed
/// when the partition is no longer assigned (no stale lag after a rebalance).
#[derive(Clone)]
pub struct ConsumerLag {
    pipeline: String,
    gauges: IntGaugeVec,
    shown: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<(String, i32)>>>,
}

impl ConsumerLag {
    /// Replaces every series of this pipeline with `lags` (topic, partition, messages).
    pub fn set_all(&self, lags: impl IntoIterator<Item = (String, i32, i64)>) {
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        let mut now = std::collections::BTreeSet::new();
        for (topic, partition, lag) in lags {
            let p = partition.to_string();
            self.gauges
                .with_label_values(&[&self.pipeline, &topic, &p])
                .set(lag);
            now.insert((topic, partition));
        }
        for (topic, partition) in shown.difference(&now) {
            let p = partition.to_string();
            let _ = self
                .gauges
                .remove_label_values(&[&self.pipeline, topic, &p]);
        }
        *shown = now;
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let h = HistogramVec::new(opts, labels).expect("valid metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds and registers every metric, and the process's own (`process_*`: CPU,
    /// resident memory, open file descriptors; Linux only).
    pub fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process collector registered once");
        Metrics {
            events_in: counter(
                &r,
                names::EVENTS_IN,
                "Events read from the source.",
                &["pipeline"],
            ),
            events_out: counter(
                &r,
                names::EVENTS_OUT,
                "Enriched events delivered to the sink.",
                &["pipeline"],
            ),
            source_bytes: counter(
                &r,
                names::SOURCE_BYTES,
                "Bytes read from a file or standard input (Kafka sources count none).",
                &["pipeline"],
            ),
            dead_letters: counter(
                &r,
                names::DEAD_LETTERS,
                "Events sent to the dead letter, by reason.",
                &["pipeline", "kind"],
            ),
            ips_extracted: counter(
                &r,
                names::IPS_EXTRACTED,
                "Distinct addresses extracted per event, by class.",
                &["pipeline", "class"],
            ),
            lookups: counter(
                &r,
                names::LOOKUPS,
                "Address lookups through the provider chain, by status.",
                &["pipeline", "status"],
            ),
            capped: counter(
                &r,
                names::CAPPED,
                "Events that held more addresses than max_ips_per_event.",
                &["pipeline"],
            ),
            in_flight: gauge(
                &r,
                names::IN_FLIGHT,
                "Events read and not yet delivered.",
                &["pipeline"],
            ),
            up: gauge(&r, names::UP, "1 while the pipeline runs.", &["pipeline"]),
            restarts: counter(
                &r,
                names::RESTARTS,
                "Restarts of a failed pipeline or reporter by its supervisor.",
                &["component", "name"],
            ),
            consumer_lag: gauge(
                &r,
                names::CONSUMER_LAG,
                "Messages between the committed offset and the end of an assigned partition.",
                &["pipeline", "topic", "partition"],
            ),
            latency: histogram(
                &r,
                names::LATENCY,
                "Seconds from reading an event to the acknowledgement of its output.",
                &["pipeline"],
            ),
            unplaced: counter(
                &r,
                names::UNPLACED,
                "Output fields left out because a value that is not an object (or another address) holds their path, by path.",
                &["pipeline", "path"],
            ),
            registry: r,
        }
    }

    /// Handles for one pipeline.
    pub fn pipeline(&self, name: &str) -> PipelineMetrics {
        PipelineMetrics {
            events_in: self.events_in.with_label_values(&[name]),
            events_out: self.events_out.with_label_values(&[name]),
            source_bytes: self.source_bytes.with_label_values(&[name]),
            capped: self.capped.with_label_values(&[name]),
            in_flight: self.in_flight.with_label_values(&[name]),
            up: self.up.with_label_values(&[name]),
            latency: self.latency.with_label_values(&[name]),
            consumer_lag: ConsumerLag {
                pipeline: name.to_string(),
                gauges: self.consumer_lag.clone(),
                shown: Default::default(),
            },
            health: std::sync::Arc::new(crate::health::PipelineHealth::new(
                self.up.with_label_values(&[name]),
            )),
            name: name.to_string(),
            dead_letters: self.dead_letters.clone(),
            ips_by_class: IpClass::ALL
                .iter()
                .map(|c| self.ips_extracted.with_label_values(&[name, c.as_str()]))
                .collect(),
            lookups_by_status: Status::ALL
                .iter()
                .map(|s| self.lookups.with_label_values(&[name, s.as_str()]))
                .collect(),
            unplaced: self.unplaced.clone(),
        }
    }

    /// Restarts of one supervised component (`pipeline` or `reporter`).
    pub fn restarts(&self, component: &str, name: &str) -> IntCounter {
        self.restarts.with_label_values(&[component, name])
    }

    /// The registry, for components that register their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is utf-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_partition_leaves_no_stale_lag() {
        let metrics = Metrics::new();
        let lag = metrics.pipeline("p").consumer_lag;
        lag.set_all([("t".to_string(), 0, 5), ("t".to_string(), 1, 7)]);
        let text = metrics.render();
        assert!(text.contains(r#"ipenrich_consumer_lag{partition="1",pipeline="p",topic="t"} 7"#));
        lag.set_all([("t".to_string(), 0, 2)]);
        let text = metrics.render();
        assert!(text.contains(r#"ipenrich_consumer_lag{partition="0",pipeline="p",topic="t"} 2"#));
        assert!(!text.contains(r#"partition="1""#), "{text}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn process_metrics_are_exported() {
        let text = Metrics::new().render();
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }
}
