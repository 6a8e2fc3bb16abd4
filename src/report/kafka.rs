//! The reporter's Kafka clients, built by [`crate::kafka::client_config`]: the
//! user's `options` first, then the settings the reporter's guarantees rest on,
//! which the user cannot change.
//!
//! Consumers of both stages store offsets themselves (`enable.auto.offset.store=false`)
//! and let librdkafka commit the stored ones every second; producers are idempotent
//! with `acks=all` and a fixed partitioner so every replica maps an IP to the same
//! signal partition.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, StreamConsumer};
use rdkafka::producer::FutureProducer;

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
    /// Client properties shared by every Kafka client of a reporter, with `forced`
    /// applied over the user's options.
    fn config(&self, defaults: &[(&str, &str)], forced: &[(&str, &str)]) -> ClientConfig {
        crate::kafka::client_config(self.brokers, defaults, self.options, forced, "the reporter")
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
        self.config(
            &[("client.id", client_id), ("group.id", group)],
            &STAGE_CONSUMER,
        )
        .create_with_context(context)
        .map_err(|source| ReportError::Kafka { what, source })
    }

    /// A consumer that reads assigned partitions and never commits (changelog restore).
    pub(crate) fn reading_consumer(
        &self,
        client_id: &str,
        group: &str,
    ) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
        self.config(
            &[("client.id", client_id), ("group.id", group)],
            &[
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("isolation.level", "read_committed"),
            ],
        )
        .create()
    }

    /// An idempotent, `acks=all` producer. The partitioner is forced so every replica
    /// maps an IP to the same signal partition.
    pub(crate) fn producer(&self, client_id: &str) -> Result<FutureProducer, ReportError> {
        self.config(&[("client.id", client_id)], &PRODUCER)
            .create()
            .map_err(|source| ReportError::Kafka {
                what: "producer create",
                source,
            })
    }
}

impl Clients<'_> {
    /// The transactional producer of one changelog partition: `txn_id` is the same
    /// for every replica, so the broker lets only its latest initialiser write.
    pub(crate) fn transactional_producer(
        &self,
        txn_id: &str,
    ) -> Result<super::ownership::TxnProducer, ReportError> {
        self.config(
            &[("client.id", txn_id)],
            &[
                ("transactional.id", txn_id),
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "0"),
            ],
        )
        .create()
        .map_err(|source| ReportError::Kafka {
            what: "changelog writer create",
            source,
        })
    }

    /// An admin client (topic creation).
    pub(crate) fn admin(
        &self,
        client_id: &str,
    ) -> Result<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>, ReportError>
    {
        self.config(&[("client.id", client_id)], &[])
            .create()
            .map_err(|source| ReportError::Kafka {
                what: "admin client create",
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
