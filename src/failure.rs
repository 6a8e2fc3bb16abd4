//! Every failure has a class, decided where it is born.
//!
//! - [`Class::PerRecord`]: one record cannot be processed or delivered (bad JSON, too
//!   large, refused by the broker, cannot be mapped). It goes to the dead letter with
//!   its reason and is acknowledged; the pipeline goes on.
//! - [`Class::Fatal`]: the pipeline cannot go on (authorisation, fencing, unknown
//!   topic, a revoked API key under `backpressure`). It stops with a clear message,
//!   readiness turns false and the process exits non-zero; nothing unacknowledged is
//!   committed, so a restart re-reads it.
//! - [`Class::Transient`]: retried with back-off (librdkafka retries broker trouble
//!   by itself until `message.timeout.ms`; providers are retried by the lookup
//!   engine). It is visible in logs and metrics, never silent.
//!
//! The table of every error and its class is in `docs/failures.md`.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode as C;

/// What a failure means for the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    PerRecord,
    Fatal,
    Transient,
}

/// Classifies a Kafka client error (consumer, producer or delivery report).
pub fn classify_kafka(error: &KafkaError) -> Class {
    match error.rdkafka_error_code() {
        Some(code) => classify_code(code),
        // Client-side errors without a code: creation, configuration, a cancelled
        // delivery future (the producer is gone). Nothing retries them.
        None => match error {
            KafkaError::PartitionEOF(_) | KafkaError::NoMessageReceived => Class::Transient,
            _ => Class::Fatal,
        },
    }
}

/// Classifies a librdkafka error code.
pub fn classify_code(code: C) -> Class {
    match code {
        // The broker or client refuses this one record; the next one may pass.
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::InvalidRecord | C::MessageBatchTooLarge => {
            Class::PerRecord
        }
        // Nothing will change by waiting: the operator must act.
        C::Fatal
        | C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::Fenced
        | C::FencedInstanceId
        | C::ProducerFenced
        | C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::InvalidGroupId
        | C::InvalidConfig
        | C::InvalidArgument
        // A delivery that librdkafka retried until message.timeout.ms: the output has
        // been unreachable for that long. Stop rather than skip the record.
        | C::MessageTimedOut => Class::Fatal,
        _ => Class::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_documented_classes() {
        assert_eq!(classify_code(C::MessageSizeTooLarge), Class::PerRecord);
        assert_eq!(classify_code(C::TopicAuthorizationFailed), Class::Fatal);
        assert_eq!(classify_code(C::FencedInstanceId), Class::Fatal);
        assert_eq!(classify_code(C::UnknownTopicOrPartition), Class::Fatal);
        assert_eq!(classify_code(C::AllBrokersDown), Class::Transient);
        assert_eq!(classify_code(C::BrokerTransportFailure), Class::Transient);
        assert_eq!(
            classify_kafka(&KafkaError::MessageConsumption(C::GroupAuthorizationFailed)),
            Class::Fatal
        );
        assert_eq!(
            classify_kafka(&KafkaError::MessageConsumption(C::AllBrokersDown)),
            Class::Transient
        );
    }
}
