//! Prometheus metrics: one [`Metrics`] registry built at start-up.
//!
//! Labels are bounded: pipeline, provider, class, kind, status. Never an address,
//! a user, a URL or an event field (unbounded cardinality).

use crate::extract::IpClass;
use crate::lookup::Status;
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
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
}

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
    /// Readiness of this pipeline; also drives `up`.
    pub health: std::sync::Arc<crate::health::PipelineHealth>,
    name: String,
    dead_letters: IntCounterVec,
    ips_by_class: Vec<IntCounter>,
    lookups_by_status: Vec<IntCounter>,
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> Self {
        let r = Registry::new();
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
