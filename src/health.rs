//! Health of a running pipeline, as `/health/ready` and `ipenrich_pipeline_up` tell it.
//!
//! A pipeline is ready when it has not failed, every Kafka client it uses reaches
//! at least one broker (librdkafka's statistics say which brokers are `UP`), and a
//! Kafka source holds partitions, or has been running for longer than the grace
//! period (a replica beyond the partition count is ready with none), and no
//! subscribed topic is missing (the source waits for it). Anything else
//! turns readiness false, so an operator sees a wrong broker address, an outage or a
//! dead pipeline instead of a green probe over a stream that does not move.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::time::Instant;

/// How long a Kafka source may run without partitions and still be ready.
pub const ASSIGNMENT_GRACE: Duration = Duration::from_secs(60);

/// How long after the consumer last said a subscribed topic is missing the pipeline
/// stays not ready: longer than the source's 30-s metadata refresh, after which
/// librdkafka says it again if the topic is still missing.
pub const TOPIC_MISSING_FOR: Duration = Duration::from_secs(45);

/// "Not known yet": no statistics have arrived.
const UNKNOWN: i64 = -1;

/// One pipeline's health, shared by its clients' callbacks and the HTTP server.
#[derive(Debug)]
pub struct PipelineHealth {
    started: Instant,
    kafka_source: AtomicBool,
    failed: AtomicBool,
    stopped: AtomicBool,
    assigned: AtomicI64,
    /// When the consumer last said a subscribed topic does not exist (ms since
    /// `started`), or [`UNKNOWN`].
    topic_missing_at: AtomicI64,
    consumer_brokers_up: AtomicI64,
    producer_brokers_up: AtomicI64,
    up_gauge: IntGauge,
}

impl PipelineHealth {
    /// A pipeline starting now; `up_gauge` mirrors readiness.
    pub fn new(up_gauge: IntGauge) -> Self {
        PipelineHealth {
            started: Instant::now(),
            kafka_source: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            stopped: AtomicBool::new(true),
            assigned: AtomicI64::new(0),
            topic_missing_at: AtomicI64::new(UNKNOWN),
            consumer_brokers_up: AtomicI64::new(UNKNOWN),
            producer_brokers_up: AtomicI64::new(UNKNOWN),
            up_gauge,
        }
    }

    /// The pipeline runs (a restart clears an earlier failure), or stopped, cleanly or not.
    pub fn set_running(&self, running: bool, kafka_source: bool) {
        if running {
            self.failed.store(false, Ordering::Relaxed);
        }
        self.kafka_source.store(kafka_source, Ordering::Relaxed);
        self.stopped.store(!running, Ordering::Relaxed);
        self.refresh();
    }

    /// A fatal error stopped the pipeline.
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.refresh();
    }

    /// Partitions held by the source's consumer after a rebalance.
    pub fn set_assigned(&self, partitions: usize) {
        self.assigned.store(
            i64::try_from(partitions).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        self.refresh();
    }

    /// The consumer says a subscribed topic does not exist (yet). It says so again
    /// at every metadata refresh while the topic is missing.
    pub fn set_topic_missing(&self) {
        let at = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.topic_missing_at.store(at, Ordering::Relaxed);
        self.refresh();
    }

    /// Brokers in state `UP` as the consumer's statistics report them.
    pub fn set_consumer_brokers_up(&self, up: usize) {
        self.consumer_brokers_up
            .store(i64::try_from(up).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.refresh();
    }

    /// Brokers in state `UP` as a producer's statistics report them.
    pub fn set_producer_brokers_up(&self, up: usize) {
        self.producer_brokers_up
            .store(i64::try_from(up).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.refresh();
    }

    /// Declares that a producer is in use (its reachability then counts).
    pub fn expect_producer(&self) {
        let _ = self.producer_brokers_up.compare_exchange(
            UNKNOWN,
            0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// True when the pipeline runs, has not failed and reaches its brokers.
    pub fn is_ready(&self) -> bool {
        if self.failed.load(Ordering::Relaxed) || self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        if self.producer_brokers_up.load(Ordering::Relaxed) == 0 {
            return false;
        }
        if !self.kafka_source.load(Ordering::Relaxed) {
            return true;
        }
        if self.consumer_brokers_up.load(Ordering::Relaxed) <= 0 {
            return false;
        }
        let missing_at = self.topic_missing_at.load(Ordering::Relaxed);
        if missing_at != UNKNOWN {
            let since = self.started.elapsed().as_millis() as i64 - missing_at;
            if since < TOPIC_MISSING_FOR.as_millis() as i64 {
                return false;
            }
        }
        self.assigned.load(Ordering::Relaxed) > 0 || self.started.elapsed() > ASSIGNMENT_GRACE
    }

    fn refresh(&self) {
        self.up_gauge.set(i64::from(self.is_ready()));
    }
}

/// Counts the brokers a client reaches in a librdkafka statistics document.
/// Bootstrap entries (`nodeid` -1) count too: they are real connections.
pub fn brokers_up(stats: &rdkafka::Statistics) -> usize {
    stats.brokers.values().filter(|b| b.state == "UP").count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> PipelineHealth {
        PipelineHealth::new(IntGauge::new("up", "up").unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn kafka_pipeline_is_ready_only_with_brokers_and_partitions() {
        let h = health();
        assert!(!h.is_ready(), "not running yet");
        h.set_running(true, true);
        assert!(!h.is_ready(), "no statistics yet");
        h.set_consumer_brokers_up(0);
        assert!(!h.is_ready(), "wrong broker address");
        h.set_consumer_brokers_up(1);
        assert!(!h.is_ready(), "no partitions within the grace period");
        h.set_assigned(3);
        assert!(h.is_ready());
        assert_eq!(h.up_gauge.get(), 1);
        h.set_consumer_brokers_up(0);
        assert!(!h.is_ready(), "broker outage");
        assert_eq!(h.up_gauge.get(), 0);
        h.set_consumer_brokers_up(1);
        h.set_assigned(0);
        tokio::time::advance(ASSIGNMENT_GRACE + Duration::from_secs(1)).await;
        assert!(h.is_ready(), "a spare replica without partitions");
        h.expect_producer();
        assert!(!h.is_ready(), "producer has not reached a broker");
        h.set_producer_brokers_up(2);
        assert!(h.is_ready());
        h.set_failed();
        assert!(!h.is_ready());
    }

    #[test]
    fn line_pipeline_is_ready_while_running() {
        let h = health();
        h.set_running(true, false);
        assert!(h.is_ready());
        h.set_running(false, false);
        assert!(!h.is_ready());
    }
}
