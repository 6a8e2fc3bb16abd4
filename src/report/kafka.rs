//! The reporter's Kafka clients, built one way: the user's `options` first, then the
//! settings the reporter's guarantees rest on, which the user cannot change.
//!
//! Consumers of both stages store offsets themselves (`enable.auto.offset.store=false`)
//! and let librdkafka commit the stored ones every second; producers are idempotent
//! with `acks=all` and a fixed partitioner so every replica maps an IP to the same
//! signal partition.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, StreamConsumer};
use rdkafka::producer::FutureProducer;
use tracing::warn;

use super::ReportError;

/// Where a reporter's clients connect, and with which extra properties.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clients<'a> {
    /// Kafka bootstrap servers.
    pub brokers: &'a str,
    /// The user's librdkafka properties.
    pub options: &'a BTreeMap<String, String>,
}

/// Consumer settings of a stage: at-least-once, offsets stored by the stage.
const STAGE_CONSUMER: [(&str, &str); 5] = [
    ("auto.offset.reset", "earliest"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("enable.auto.offset.store", "false"),
    ("enable.auto.commit", "true"),
    ("auto.commit.interval.ms", "1000"),
];

/// Producer settings: no duplicates, no loss, the same partition for an IP everywhere.
const PRODUCER: [(&str, &str); 4] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("partitioner", "consistent_random"),
    ("linger.ms", "2"),
];

impl Clients<'_> {
    /// Client properties shared by every Kafka client of a reporter.
    pub(crate) fn config(&self, client_id: &str) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", self.brokers)
            .set("client.id", client_id);
        for (k, v) in self.options {
            cc.set(k, v);
        }
        cc
    }

    /// A stage consumer in `group`, rebalances handled by `context`; `what` names it
    /// in errors.
    pub(crate) fn stage_consumer<C: ConsumerContext + 'static>(
        &self,
        client_id: &str,
        group: &str,
        context: C,
        what: &'static str,
    ) -> Result<StreamConsumer<C>, ReportError> {
        let mut cc = self.config(client_id);
        cc.set("group.id", group);
        for (k, v) in STAGE_CONSUMER {
            cc.set(k, v);
        }
        cc.create_with_context(context)
            .map_err(|source| ReportError::Kafka { what, source })
    }

    /// A consumer that reads assigned partitions and never commits (changelog restore).
    pub(crate) fn reading_consumer(
        &self,
        client_id: &str,
        group: &str,
    ) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
        let mut cc = self.config(client_id);
        cc.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        cc.create()
    }

    /// An idempotent, `acks=all` producer. The partitioner is forced so every replica
    /// maps an IP to the same signal partition.
    pub(crate) fn producer(&self, client_id: &str) -> Result<FutureProducer, ReportError> {
        let mut cc = self.config(client_id);
        for (k, v) in PRODUCER {
            if self.options.get(k).is_some_and(|user| user != v) {
                warn!(key = k, "option overridden: the reporter needs {k}={v}");
            }
            cc.set(k, v);
        }
        cc.create().map_err(|source| ReportError::Kafka {
            what: "producer create",
            source,
        })
    }
}

impl crate::config::reporter::ReporterSettings {
    /// The Kafka clients of this reporter.
    pub(crate) fn clients(&self) -> Clients<'_> {
        Clients {
            brokers: &self.brokers,
            options: &self.options,
        }
    }
}
