//! Pipeline configuration: YAML wire types, loading and validation.
//!
//! A config file holds one or more pipelines. Loading parses the YAML, then replaces
//! `${ENV_VAR}` (and `${ENV_VAR:-default}`) inside string values, never in the text, so
//! a value from the environment cannot change the document. It rejects unknown keys,
//! and reports every problem with the file, the line and the key path
//! (`pipelines[0].sink.kafka.topic`), so that a bad deployment fails at start-up with
//! a message an operator can act on. No message quotes the value of a key that may
//! hold a secret.
//!
//! The wire types parse straight into strong types (`Duration`, `IpNet`, non-empty
//! lists) so that most mistakes are caught by the parser with an exact location;
//! [`validate`] catches what only the whole file can tell (duplicate names, a dead
//! letter output that is also the sink).

mod de;
mod load;
pub mod reporter;
mod types;

pub use load::{load_file, load_str, ConfigError, Problem};
pub use reporter::{
    ReportCategory, ReportSource, ReporterConfig, MAX_REPORT_CATEGORIES, MAX_REPORT_COMMENT,
};
pub use types::*;

/// Checks what the parser cannot: relations between keys. Returns every problem.
pub fn validate(config: &Config) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if config.pipelines.is_empty() {
        problems.push((
            "pipelines".to_string(),
            "at least one pipeline is required".to_string(),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in config.pipelines.iter().enumerate() {
        if !names.insert(p.name.as_str()) {
            problems.push((
                format!("pipelines[{i}].name"),
                format!("duplicate pipeline name {:?}", p.name),
            ));
        }
        validate_pipeline(p, &|key| format!("pipelines[{i}].{key}"), &mut problems);
        validate_truncation(p, &|key| format!("pipelines[{i}].{key}"), &mut problems);
    }
    validate_reporters(&config.reporters, &mut problems);
    if let Some(t) = &config.intel_table {
        if t.brokers.trim().is_empty() {
            problems.push(("intel_table.brokers".into(), "must not be empty".into()));
        }
        if t.topic.is_empty() || t.topic.len() > 249 {
            problems.push((
                "intel_table.topic".into(),
                "must be 1-249 characters".into(),
            ));
        }
        if t.partitions == 0 || t.partitions < -1 {
            problems.push((
                "intel_table.partitions".into(),
                "must be at least 1 (or -1, the broker's default)".into(),
            ));
        }
    }
    problems
}

/// One pipeline on its own: name, topics that do not loop, outputs that differ,
/// brokers, something to extract, limits. `at` makes a key's full path.
fn validate_pipeline(
    p: &PipelineConfig,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<(String, String)>,
) {
    if p.name.is_empty()
        || !p
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problems.push((
            at("name"),
            "use letters, digits, '-' and '_' only".to_string(),
        ));
    }
    if let SourceConfig::Kafka(k) = &p.source {
        if k.topics.is_empty() {
            problems.push((
                at("source.kafka.topics"),
                "at least one topic is required".into(),
            ));
        }
        if k.group_id.is_empty() {
            problems.push((at("source.kafka.group_id"), "must not be empty".into()));
        }
        if let SinkConfig::Kafka(s) = &p.sink {
            if k.topics.iter().any(|t| t == &s.topic) {
                problems.push((
                    at("sink.kafka.topic"),
                    format!("{:?} is also a source topic: events would loop", s.topic),
                ));
            }
        }
    }
    match (&p.sink, &p.dead_letter) {
        (SinkConfig::Kafka(s), Some(DeadLetterConfig::Kafka(d))) if s.topic == d.topic => {
            problems.push((
                at("dead_letter.kafka.topic"),
                "must differ from the sink topic".into(),
            ));
        }
        (SinkConfig::File(s), Some(DeadLetterConfig::File(d))) if s.path == d.path => {
            problems.push((
                at("dead_letter.file.path"),
                "must differ from the sink path".into(),
            ));
        }
        _ => {}
    }
    let needs_brokers = matches!(p.sink, SinkConfig::Kafka(_))
        || matches!(p.dead_letter, Some(DeadLetterConfig::Kafka(_)));
    let has_brokers = matches!(p.source, SourceConfig::Kafka(_))
        || matches!(&p.sink, SinkConfig::Kafka(s) if s.brokers.is_some())
        || matches!(&p.dead_letter, Some(DeadLetterConfig::Kafka(d)) if d.brokers.is_some());
    if needs_brokers && !has_brokers {
        problems.push((
            at("sink.kafka.brokers"),
            "brokers are required when the source is not kafka".into(),
        ));
    }
    if p.extract.fields.is_empty() && p.extract.text.is_empty() && !p.extract.scan_all_strings {
        problems.push((
            at("extract"),
            "nothing to extract: give `fields`, `text` or `scan_all_strings: true`".into(),
        ));
    }
    if p.limits.max_ips_per_event == 0 {
        problems.push((at("limits.max_ips_per_event"), "must be at least 1".into()));
    }
    if p.limits.max_in_flight == 0 {
        problems.push((at("limits.max_in_flight"), "must be at least 1".into()));
    }
    if p.limits.max_in_flight_bytes == 0 {
        problems.push((
            at("limits.max_in_flight_bytes"),
            "must be at least 1".into(),
        ));
    }
    match p.output_message_max_bytes() {
        Some(Err(e)) => problems.push((at("sink.kafka.options"), e)),
        Some(Ok(max)) => {
            let event = p.max_event_bytes();
            if event.saturating_add(ENRICHMENT_HEADROOM) > max {
                problems.push((
                        at("limits.max_event_bytes"),
                        format!(
                            "{event} leaves less than {ENRICHMENT_HEADROOM} bytes for the enrichment, key and headers under the sink's message.max.bytes ({max}); lower it or raise message.max.bytes"
                        ),
                    ));
            }
        }
        None => {}
    }
    validate_output(&p.output, at, problems);
}

/// The top-level keys the ECS format writes into the event (or into HEC's `event`).
pub const ECS_KEYS: [&str; 8] = [
    "source",
    "destination",
    "client",
    "server",
    "host",
    "related",
    "threat",
    "ipenrich",
];

/// `output.field` is a dotted path without empty segments that does not land on
/// what the ECS format writes, nor replace HEC's `event`.
fn validate_output(
    output: &OutputConfig,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<(String, String)>,
) {
    let segments: Vec<&str> = output.field.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        problems.push((
            at("output.field"),
            "a dotted path without empty segments, e.g. `enrichment` or `event.enrichment`".into(),
        ));
        return;
    }
    let hec = output.envelope == Envelope::Hec;
    if hec && segments == ["event"] {
        problems.push((
            at("output.field"),
            "`event` would replace the HEC event; use `event.enrichment`".into(),
        ));
    }
    if output.format != OutputFormat::Both {
        return;
    }
    // Relative to where the ECS fields go: the top, or HEC's `event`; and the last
    // segment, where the object goes when a value that is not an object blocks
    // the path.
    let mut roots = vec![segments[0], segments[segments.len() - 1]];
    if hec && segments[0] == "event" && segments.len() > 1 {
        roots.push(segments[1]);
    }
    if let Some(taken) = roots.iter().find(|s| ECS_KEYS.contains(s)) {
        problems.push((
            at("output.field"),
            format!(
                "`{taken}` is written by the ECS format; choose another name, e.g. `enrichment`"
            ),
        ));
    }
}

/// A file output that is emptied at start (`append: false`) only under a source that
/// is read once: a Kafka pipeline restarts, and each start would erase what it had
/// delivered and committed.
fn validate_truncation(
    p: &PipelineConfig,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<(String, String)>,
) {
    if !matches!(p.source, SourceConfig::Kafka(_)) {
        return;
    }
    if matches!(&p.sink, SinkConfig::File(f) if !f.append) {
        problems.push((
            at("sink.file.append"),
            "must be true with a kafka source: a restart would erase delivered events".into(),
        ));
    }
    if matches!(&p.dead_letter, Some(DeadLetterConfig::File(f)) if !f.append) {
        problems.push((
            at("dead_letter.file.append"),
            "must be true with a kafka source: a restart would erase delivered dead letters".into(),
        ));
    }
}

/// Each reporter, and names used once.
fn validate_reporters(reporters: &[ReporterConfig], problems: &mut Vec<(String, String)>) {
    let mut reporter_names = std::collections::HashSet::new();
    for (i, r) in reporters.iter().enumerate() {
        if !reporter_names.insert(r.name.as_str()) {
            problems.push((
                format!("reporters[{i}].name"),
                format!("duplicate reporter name {:?}", r.name),
            ));
        }
        if let Err(found) = r.validate() {
            problems.extend(
                found
                    .into_iter()
                    .map(|(key, problem)| (format!("reporters[{i}].{key}"), problem)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka_sink_pipeline(limits: &str, options: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "pipelines:\n  - name: p\n    source:\n      kafka:\n        brokers: 127.0.0.1:9\n        topics: [in]\n        group_id: g\n    extract:\n      scan_all_strings: true\n    sink:\n      kafka:\n        topic: out\n{options}    limits: {{{limits}}}\n"
        );
        load_str(&text, "t.yaml", |_: &str| None)
    }

    /// Regression (issue 8.2): `max_event_bytes` defaulted to 1 MiB while the
    /// producer's `message.max.bytes` is 1,000,000, so an event of 1,000,020 bytes
    /// decoded, failed to produce, and crash-looped the pipeline. The default now
    /// leaves room for the enrichment, and `check` refuses a value that does not.
    #[test]
    fn max_event_bytes_leaves_room_under_the_output_limit() {
        let c = kafka_sink_pipeline("", "").expect("default is valid");
        assert_eq!(
            c.pipelines[0].max_event_bytes(),
            LIBRDKAFKA_MESSAGE_MAX_BYTES - ENRICHMENT_HEADROOM
        );

        let err = kafka_sink_pipeline("max_event_bytes: 1048576", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.max_event_bytes") && err.contains("message.max.bytes"),
            "{err}"
        );

        let raised = "        options:\n          message.max.bytes: \"2000000\"\n";
        assert!(kafka_sink_pipeline("max_event_bytes: 1048576", raised).is_ok());
        assert_eq!(
            kafka_sink_pipeline("", raised).unwrap().pipelines[0].max_event_bytes(),
            2_000_000 - ENRICHMENT_HEADROOM
        );

        let err = kafka_sink_pipeline("max_in_flight_bytes: 0", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_in_flight_bytes"), "{err}");
    }

    fn with_output(output: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "pipelines:\n  - name: p\n    source: {{stdin: {{}}}}\n    extract: {{scan_all_strings: true}}\n    output: {output}\n    sink: {{stdout: {{}}}}\n"
        );
        load_str(&text, "t.yaml", |_: &str| None)
    }

    #[test]
    fn output_field_is_a_dotted_path_off_the_ecs_keys() {
        for ok in [
            "{format: both, field: event.enrichment, envelope: hec}",
            "{format: ecs, field: threat}",
            "{format: enrichment, field: threat}",
            "{format: both, field: enrichment}",
        ] {
            assert!(with_output(ok).is_ok(), "{ok}: {:?}", with_output(ok).err());
        }
        for (bad, says) in [
            ("{field: event..x}", "empty segments"),
            ("{field: .x}", "empty segments"),
            (
                "{format: both, field: threat}",
                "`threat` is written by the ECS format",
            ),
            ("{format: both, field: ipenrich.x}", "`ipenrich`"),
            ("{format: both, field: event.threat}", "`threat`"),
            (
                "{format: both, field: event.related, envelope: hec}",
                "`related`",
            ),
            (
                "{field: event, envelope: hec}",
                "would replace the HEC event",
            ),
            ("{envelope: splunk}", "envelope"),
        ] {
            let err = with_output(bad).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("output"), "{bad}: {err}");
        }
    }

    fn file_outputs(source: &str, append: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "pipelines:\n  - name: p\n    source:\n{source}    extract:\n      scan_all_strings: true\n    sink:\n      file:\n        path: out.jsonl\n{append}    dead_letter:\n      file:\n        path: dead.jsonl\n{append}"
        );
        load_str(&text, "t.yaml", |_: &str| None)
    }

    #[test]
    fn file_outputs_append_by_default_and_truncate_only_under_a_one_shot_source() {
        let kafka = "      kafka:\n        brokers: 127.0.0.1:9\n        topics: [in]\n        group_id: g\n";
        let file = "      file:\n        path: in.log\n";
        let truncate = "        append: false\n";
        let c = file_outputs(kafka, "").unwrap();
        assert!(matches!(&c.pipelines[0].sink, SinkConfig::File(f) if f.append));
        assert!(matches!(&c.pipelines[0].dead_letter, Some(DeadLetterConfig::File(f)) if f.append));

        let c = file_outputs(file, truncate).unwrap();
        assert!(matches!(&c.pipelines[0].sink, SinkConfig::File(f) if !f.append));

        let err = file_outputs(kafka, truncate).unwrap_err().to_string();
        assert!(err.contains("pipelines[0].sink.file.append"), "{err}");
        assert!(
            err.contains("pipelines[0].dead_letter.file.append"),
            "{err}"
        );
    }
}
