//! `ipenrich enrich`: one pipeline over a file or stdin, ending with its input.
//!
//! Contract: a Kafka source or sink of the config is replaced by stdin or stdout (a
//! Kafka dead letter by stderr), so `enrich` never touches a broker; `--input` and
//! `--output` replace the config's source and sink, `-` meaning stdin or stdout.
//! `--output FILE` empties the file first unless `--append` is given; a file sink of
//! the config keeps its own `append` (default true). An output that is the input
//! file is refused before anything is opened. Without a config every string is
//! scanned and no provider is asked. A stdout reader that goes away (`| head -1`)
//! ends the run cleanly. Reading a file with standard error on a terminal draws a
//! progress bar ([`super::progress`]).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use super::progress::{self, Progress};
use super::run::run_pipelines;
use super::{select_pipeline, CliError, Exit};
use crate::config::{
    Config, DeadLetterConfig, FileSinkConfig, FileSourceConfig, PipelineConfig, SinkConfig,
    SourceConfig, StdinSourceConfig, StdoutSinkConfig,
};
use crate::metrics::Metrics;

/// Runs pipeline `name` (default: the first) of `config`, or the default pipeline,
/// from `input` to `output` (appended to with `append`) until the input ends.
pub async fn enrich(
    config: Option<&Path>,
    name: Option<&str>,
    input: Option<&Path>,
    output: Option<&Path>,
    append: bool,
) -> Result<Exit, CliError> {
    let p = match config {
        None => crate::pipeline::default_config(input, output),
        Some(path) => select_pipeline(path, name)?,
    };
    let p = one_shot(p, input, output, append);
    refuse_writing_the_input(&p)?;
    let metrics = Arc::new(Metrics::new());
    let progress = progress::wanted(&p, std::io::stderr().is_terminal())
        .map(|path| Progress::start(path, &metrics.pipeline(&p.name)));
    let exit = run_pipelines(
        Config {
            http: None,
            pipelines: vec![p],
            reporters: Vec::new(),
            // One shot reaches no broker (see `one_shot`).
            intel_table: None,
        },
        metrics,
        false,
    )
    .await;
    if let Some(progress) = progress {
        progress.finish();
    }
    exit
}

/// An output file that is the input file would be emptied before it is read, or
/// grow while it is read: refused.
fn refuse_writing_the_input(p: &PipelineConfig) -> Result<(), CliError> {
    let SourceConfig::File(input) = &p.source else {
        return Ok(());
    };
    let outputs = [
        match &p.sink {
            SinkConfig::File(f) => Some(&f.path),
            _ => None,
        },
        match &p.dead_letter {
            Some(DeadLetterConfig::File(f)) => Some(&f.path),
            _ => None,
        },
    ];
    for output in outputs.into_iter().flatten() {
        if same_file(&input.path, output) {
            return Err(CliError::OutputIsInput(output.clone()));
        }
    }
    Ok(())
}

/// True when both paths exist and name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `p` rewired to read `input` and write `output`, and to reach no broker.
fn one_shot(
    mut p: PipelineConfig,
    input: Option<&Path>,
    output: Option<&Path>,
    append: bool,
) -> PipelineConfig {
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
            append,
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
        let exit = enrich(None, None, Some(&input), Some(&output), false)
            .await
            .unwrap();
        assert_eq!(exit, Exit::Success);
        let written = std::fs::read_to_string(&output).unwrap();
        assert!(written.contains("10.1.2.3"), "{written}");
        assert!(written.contains("private"), "{written}");
    }

    #[tokio::test]
    async fn output_truncates_unless_append() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let output = dir.path().join("out.jsonl");
        std::fs::write(&input, "{\"src\":\"10.1.2.3\"}\n").unwrap();
        std::fs::write(&output, "old line\n").unwrap();
        let run = |append| enrich(None, None, Some(&input), Some(&output), append);
        assert_eq!(run(false).await.unwrap(), Exit::Success);
        let once = std::fs::read_to_string(&output).unwrap();
        assert_eq!(once.lines().count(), 1, "{once}");
        assert!(!once.contains("old line"), "{once}");
        assert_eq!(run(true).await.unwrap(), Exit::Success);
        let twice = std::fs::read_to_string(&output).unwrap();
        assert_eq!(twice, format!("{once}{once}"));
    }

    #[tokio::test]
    async fn an_output_that_is_the_input_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, "{\"src\":\"10.1.2.3\"}\n").unwrap();
        let same = dir.path().join(".").join("in.jsonl");
        let err = enrich(None, None, Some(&input), Some(&same), false)
            .await
            .unwrap_err();
        assert!(matches!(err, CliError::OutputIsInput(_)), "{err:?}");
        assert_eq!(
            std::fs::read_to_string(&input).unwrap(),
            "{\"src\":\"10.1.2.3\"}\n"
        );
    }

    #[test]
    fn a_kafka_pipeline_is_rewired_to_stdin_and_stdout() {
        let yaml = "pipelines:\n  - name: k\n    source:\n      kafka:\n        brokers: localhost:9092\n        topics: [in]\n        group_id: g\n    extract:\n      scan_all_strings: true\n    sink:\n      kafka:\n        brokers: localhost:9092\n        topic: out\n";
        let config = crate::config::load_str(yaml, "inline.yaml", |_| None).unwrap();
        let p = one_shot(
            config.pipelines.into_iter().next().unwrap(),
            None,
            None,
            false,
        );
        assert!(matches!(p.source, SourceConfig::Stdin(_)));
        assert!(matches!(p.sink, SinkConfig::Stdout(_)));
        let p = one_shot(p, Some(Path::new("-")), Some(Path::new("out.jsonl")), true);
        assert!(matches!(p.source, SourceConfig::Stdin(_)));
        assert!(matches!(&p.sink, SinkConfig::File(f) if f.append));
    }
}
