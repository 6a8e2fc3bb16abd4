//! The reporter's own topics: signals, changelog and (when audited to Kafka) audit.
//!
//! Contract: at start, a missing topic is created where the brokers permit it (the
//! signals topic with `topic_partitions`, the changelog compacted with the signals
//! topic's partition count, the audit topic with one partition per signal
//! partition); when they do not (or `create_topics: false`), the error names the
//! topic and the command that creates it. [`plan`] asks the same questions without
//! creating anything (`CreateTopics` with `validate_only`), so `ipenrich check`
//! finds a refusal before `run` does.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::ReportError;
use crate::config::reporter::AuditConfig;
use crate::config::reporter::ReporterSettings;

/// What became of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// It exists, with this many partitions.
    Exists(i32),
    /// It was missing and was created (or, for [`plan`], would be).
    Created(i32),
}

/// One topic the reporter needs.
#[derive(Debug, Clone)]
struct Wanted {
    name: String,
    compact: bool,
}

/// Creates the reporter's missing topics; returns each topic with its status.
pub async fn ensure(
    settings: &ReporterSettings,
    timeout: Duration,
) -> Result<Vec<(String, Status)>, ReportError> {
    run(settings, timeout, false).await
}

/// What [`ensure`] would do, validated by the brokers but changing nothing.
pub async fn plan(
    settings: &ReporterSettings,
    timeout: Duration,
) -> Result<Vec<(String, Status)>, ReportError> {
    run(settings, timeout, true).await
}

async fn run(
    settings: &ReporterSettings,
    timeout: Duration,
    validate_only: bool,
) -> Result<Vec<(String, Status)>, ReportError> {
    let client_id = format!("ipenrich-report-{}-topics", settings.name);
    let group = format!("{}-topics", settings.decision_group_id);
    let clients = settings.clients();
    let consumer = Arc::new(
        clients
            .reading_consumer(&client_id, &group)
            .map_err(|source| ReportError::Kafka {
                what: "topic metadata client",
                source,
            })?,
    );
    let admin = clients.admin(&client_id)?;
    let mut wanted = vec![Wanted {
        name: settings.signals_topic.clone(),
        compact: false,
    }];
    wanted.push(Wanted {
        name: settings.changelog_topic.clone(),
        compact: true,
    });
    if let AuditConfig::Kafka(k) = &settings.audit {
        wanted.push(Wanted {
            name: k.topic.clone(),
            compact: false,
        });
    }
    let mut out = Vec::new();
    // The signals topic's partitions decide the others'.
    let mut partitions = settings.topic_partitions;
    for (i, w) in wanted.iter().enumerate() {
        let status = match existing(&consumer, &w.name, timeout).await? {
            Some(n) => Status::Exists(n),
            None => {
                if !settings.create_topics {
                    return Err(missing(w, partitions, settings, "create_topics is false"));
                }
                create(&admin, w, partitions, settings, timeout, validate_only).await?;
                Status::Created(partitions)
            }
        };
        if i == 0 {
            partitions = match status {
                Status::Exists(n) | Status::Created(n) => n,
            };
        }
        out.push((w.name.clone(), status));
    }
    Ok(out)
}

/// The partition count of `topic`, or None when the brokers do not know it.
/// Metadata calls block: they run on a blocking thread.
async fn existing(
    consumer: &Arc<BaseConsumer>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>, ReportError> {
    let c = consumer.clone();
    let name = topic.to_owned();
    let md = tokio::task::spawn_blocking(move || c.fetch_metadata(Some(&name), timeout))
        .await
        .map_err(|e| ReportError::Topology(format!("topic metadata: {e}")))?
        .map_err(|source| ReportError::Kafka {
            what: "topic metadata",
            source,
        })?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match t.error().map(RDKafkaErrorCode::from) {
        None => Ok(Some(
            i32::try_from(t.partitions().len()).unwrap_or(i32::MAX),
        )),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
        Some(code) => Err(ReportError::Topology(format!("topic {topic}: {code}"))),
    }
}

/// Creates (or validates the creation of) one topic.
async fn create(
    admin: &AdminClient<DefaultClientContext>,
    w: &Wanted,
    partitions: i32,
    settings: &ReporterSettings,
    timeout: Duration,
    validate_only: bool,
) -> Result<(), ReportError> {
    let replication = TopicReplication::Fixed(settings.topic_replication_factor);
    let mut topic = NewTopic::new(&w.name, partitions, replication);
    if w.compact {
        topic = topic.set("cleanup.policy", "compact");
    }
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout))
        .validate_only(validate_only);
    let results = admin
        .create_topics(&[topic], &options)
        .await
        .map_err(|source| ReportError::Kafka {
            what: "create topics",
            source,
        })?;
    for r in results {
        match r {
            Ok(_) => {}
            // Another replica created it first: as good as ours.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(missing(w, partitions, settings, &format!("{code}")));
            }
        }
    }
    Ok(())
}

/// The error for a topic that is missing and will not be created.
fn missing(w: &Wanted, partitions: i32, settings: &ReporterSettings, why: &str) -> ReportError {
    let compact = if w.compact {
        " --config cleanup.policy=compact"
    } else {
        ""
    };
    ReportError::Topology(format!(
        "topic {} does not exist and cannot be created ({why}); create it: \
         kafka-topics.sh --bootstrap-server {} --create --topic {} --partitions {partitions}{compact}",
        w.name, settings.brokers, w.name
    ))
}
