//! `ipenrich enrich`: one pipeline over a file or stdin, ending with its input.
//!
//! Contract: a Kafka source or sink of the config is replaced by stdin or stdout (a
//! Kafka dead letter by stderr), so `enrich` never touches a broker; `--input` and
//! `--output` replace the config's source and sink, `-` meaning stdin. Without a
//! config every string is scanned and no provider is asked. A stdout reader that goes
//! away (`| head -1`) ends the run cleanly.

use std::path::Path;

use super::run::run_pipelines;
use super::{select_pipeline, CliError, Exit};
use crate::config::{
    Config, DeadLetterConfig, FileSinkConfig, FileSourceConfig, PipelineConfig, SinkConfig,
    SourceConfig, StdinSourceConfig, StdoutSinkConfig,
};

/// Runs pipeline `name` (default: the first) of `config`, or the default pipeline,
/// from `input` to `output` until the input ends.
pub async fn enrich(
    config: Option<&Path>,
    name: Option<&str>,
    input: Option<&Path>,
    output: Option<&Path>,
) -> Result<Exit, CliError> {
    let p = match config {
        None => crate::pipeline::default_config(input, output),
        Some(path) => select_pipeline(path, name)?,
    };
    run_pipelines(
        Config {
            http: None,
            pipelines: vec![one_shot(p, input, output)],
            reporters: Vec::new(),
            // One shot reaches no broker (see `one_shot`).
            intel_table: None,
        },
        false,
    )
    .await
}

/// `p` rewired to read `input` and write `output`, and to reach no broker.
fn one_shot(mut p: PipelineConfig, input: Option<&Path>, output: Option<&Path>) -> PipelineConfig {
    if let Some(input) = input {
        let format = p.source.format();
        p.source = if input == Path::new("-") {
            SourceConfig::Stdin(StdinSourceConfig { format })
        } else {
            SourceConfig::File(FileSourceConfig {
                path: input.into(),
                format,
            })
        };
    } else if matches!(p.source, SourceConfig::Kafka(_)) {
        p.source = SourceConfig::Stdin(StdinSourceConfig {
            format: p.source.format(),
        });
    }
    if let Some(output) = output {
        p.sink = SinkConfig::File(FileSinkConfig {
            path: output.into(),
        });
    } else if matches!(p.sink, SinkConfig::Kafka(_)) {
        p.sink = SinkConfig::Stdout(StdoutSinkConfig {});
    }
    if matches!(p.dead_letter, Some(DeadLetterConfig::Kafka(_))) {
        p.dead_letter = None;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn enriches_a_file_into_a_file_without_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let output = dir.path().join("out.jsonl");
        std::fs::write(&input, "{\"src\":\"10.1.2.3\"}\n").unwrap();
        let exit = enrich(None, None, Some(&input), Some(&output))
            .await
            .unwrap();
        assert_eq!(exit, Exit::Success);
        let written = std::fs::read_to_string(&output).unwrap();
        assert!(written.contains("10.1.2.3"), "{written}");
        assert!(written.contains("private"), "{written}");
    }

    #[test]
    fn a_kafka_pipeline_is_rewired_to_stdin_and_stdout() {
        let yaml = "pipelines:\n  - name: k\n    source:\n      kafka:\n        brokers: localhost:9092\n        topics: [in]\n        group_id: g\n    extract:\n      scan_all_strings: true\n    sink:\n      kafka:\n        brokers: localhost:9092\n        topic: out\n";
        let config = crate::config::load_str(yaml, "inline.yaml", |_| None).unwrap();
        let p = one_shot(config.pipelines.into_iter().next().unwrap(), None, None);
        assert!(matches!(p.source, SourceConfig::Stdin(_)));
        assert!(matches!(p.sink, SinkConfig::Stdout(_)));
        let p = one_shot(p, Some(Path::new("-")), Some(Path::new("out.jsonl")));
        assert!(matches!(p.source, SourceConfig::Stdin(_)));
        assert!(matches!(p.sink, SinkConfig::File(_)));
    }
}
