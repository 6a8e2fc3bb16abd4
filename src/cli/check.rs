//! `ipenrich check`: validates a config and prints the resolved pipelines and reporters.
//!
//! Contract: the verdict is [`Exit::Success`] only when the config loads and every
//! provider of every pipeline can be built (an MMDB file is opened and verified); each
//! problem is printed to stderr with the file and pipeline it belongs to. Base URLs are
//! printed without userinfo or query values, so a key in a URL never reaches the output.

use std::io::Write;
use std::path::Path;

use super::{CliError, Exit, Output};
use crate::config::{self, ProviderConfig, SinkConfig, SourceConfig};
use crate::lookup::build::{member, SharedProviders};
use crate::secret::redact_url;
use crate::telemetry::error_chain;

/// Checks the config at `path`, printing what it resolves to on `out`.
pub async fn check(path: &Path, out: &mut Output<impl Write>) -> Result<Exit, CliError> {
    let config = match config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", error_chain(&e));
            return Ok(Exit::Failure);
        }
    };
    let mut ok = true;
    // A closed pipe stops the printing, not the checking: the exit code still says
    // whether the config is valid.
    let shared = SharedProviders::new(prometheus::Registry::new());
    if let Some(http) = &config.http {
        out.line(format_args!("http: listen {}", http.listen))?;
    }
    for p in &config.pipelines {
        out.line(format_args!("pipeline {}:", p.name))?;
        out.line(format_args!("  source: {}", describe_source(&p.source)))?;
        let fields: Vec<String> = p
            .extract
            .fields
            .iter()
            .map(|f| {
                format!(
                    "{}{}",
                    f.path,
                    f.role
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        out.line(format_args!(
            "  extract: fields [{}], text [{}], scan_all_strings {}, max {} per event",
            fields.join(", "),
            p.extract.text.join(", "),
            p.extract.scan_all_strings,
            p.limits.max_ips_per_event
        ))?;
        for (i, provider) in p.providers.iter().enumerate() {
            match member(i, provider, &shared) {
                Ok(_) => out.line(format_args!("  provider: {}", describe_provider(provider)))?,
                Err(e) => {
                    ok = false;
                    out.line(format_args!(
                        "  provider: {}: ERROR {e}",
                        describe_provider(provider)
                    ))?;
                    eprintln!("{}: pipeline {}: {e}", path.display(), p.name);
                }
            }
        }
        out.line(format_args!(
            "  output: {:?} into `{}`{}",
            p.output.format,
            p.output.field,
            match p.output.envelope {
                config::Envelope::None => "",
                config::Envelope::Hec => ", ECS fields into HEC's `event`",
            }
        ))?;
        out.line(format_args!("  sink: {}", describe_sink(&p.sink)))?;
        match &p.dead_letter {
            Some(config::DeadLetterConfig::Kafka(d)) => {
                out.line(format_args!("  dead_letter: kafka topic {}", d.topic))?
            }
            Some(config::DeadLetterConfig::File(f)) => {
                out.line(format_args!("  dead_letter: file {}", f.path.display()))?
            }
            None => out.line(format_args!("  dead_letter: stderr"))?,
        }
    }
    for r in &config.reporters {
        out.line(format_args!("reporter {}:", r.name))?;
        out.line(format_args!(
            "  reads: [{}] -> signals {}",
            r.topics.join(", "),
            r.signals_topic
        ))?;
        let rules: Vec<&str> = r.rules.iter().map(|rule| rule.name.as_str()).collect();
        out.line(format_args!("  rules: [{}]", rules.join(", ")))?;
        let mode = if r.dry_run {
            "dry-run (nothing is sent)".to_string()
        } else {
            match &r.ipinsights {
                Some(i) => format!("sending to ipinsights at {}", redact_url(&i.base_url)),
                None => "sending to ipinsights".to_string(),
            }
        };
        out.line(format_args!("  mode: {mode}"))?;
        if !check_topics(r, path, out).await? {
            ok = false;
        }
    }
    Ok(Exit::from_ok(ok))
}

/// How long `check` waits for a reporter's brokers before it leaves its topics unverified.
const TOPIC_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks the reporter's brokers whether its topics exist or may be created at start
/// (validated, nothing created). Unreachable brokers leave them unverified, not
/// failed: `check` also runs where the cluster is not. False when a topic is
/// missing and will not be created.
async fn check_topics(
    r: &config::ReporterConfig,
    path: &Path,
    out: &mut Output<impl Write>,
) -> Result<bool, CliError> {
    let Ok(settings) = r.validate() else {
        return Ok(true);
    };
    match crate::report::topics::plan(&settings, TOPIC_CHECK_TIMEOUT).await {
        Ok(topics) => {
            for (topic, status) in topics {
                let what = match status {
                    crate::report::topics::Status::Exists(n) => format!("exists, {n} partitions"),
                    crate::report::topics::Status::Created(n) => {
                        format!("missing, created at start with {n} partitions")
                    }
                };
                out.line(format_args!("  topic {topic}: {what}"))?;
            }
            Ok(true)
        }
        Err(crate::report::ReportError::Topology(e)) => {
            out.line(format_args!("  topics: ERROR {e}"))?;
            eprintln!("{}: reporter {}: {e}", path.display(), r.name);
            Ok(false)
        }
        Err(e) => {
            out.line(format_args!(
                "  topics: not verified (brokers {}: {})",
                r.brokers,
                error_chain(&e)
            ))?;
            Ok(true)
        }
    }
}

/// One provider for `check`; a base URL is printed without userinfo or query values.
pub fn describe_provider(p: &ProviderConfig) -> String {
    use ProviderConfig as P;
    let url = |u: &Option<String>| {
        u.as_deref()
            .map_or_else(|| "(production)".into(), redact_url)
    };
    match p {
        P::Mmdb(m) => format!(
            "mmdb {} (reload every {:?})",
            m.path.display(),
            m.reload_interval
        ),
        P::Openipapi(c) => format!("openipapi {} plan {:?}", url(&c.base_url), c.plan),
        P::Ipinsights(c) | P::Iptrust(c) | P::Ipgeolocation(c) | P::CloudflareRadar(c) => {
            format!("{} {}", p.kind(), url(&c.base_url))
        }
    }
}

/// One source for `check`.
pub fn describe_source(s: &SourceConfig) -> String {
    match s {
        SourceConfig::Kafka(k) => format!(
            "kafka {} topics [{}] group {} format {:?}",
            k.brokers,
            k.topics.join(", "),
            k.group_id,
            k.format
        ),
        SourceConfig::File(f) => format!("file {} format {:?}", f.path.display(), f.format),
        SourceConfig::Stdin(s) => format!("stdin format {:?}", s.format),
    }
}

/// One sink for `check`.
pub fn describe_sink(s: &SinkConfig) -> String {
    match s {
        SinkConfig::Kafka(k) => {
            format!("kafka topic {} partitioning {:?}", k.topic, k.partitioning)
        }
        SinkConfig::File(f) => format!("file {}", f.path.display()),
        SinkConfig::Stdout(_) => "stdout".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn printed(out: Output<Vec<u8>>) -> String {
        String::from_utf8(out.into_inner()).unwrap()
    }

    #[tokio::test]
    async fn the_demo_config_is_valid_and_named() {
        let mut out = Output::new(Vec::new());
        // Paths in the demo config are relative to the repository root, as is the
        // working directory of unit tests.
        let exit = check(&root().join("pipelines/demo.yaml"), &mut out)
            .await
            .unwrap();
        assert_eq!(exit, Exit::Success);
        let text = printed(out);
        assert!(text.starts_with("pipeline demo:\n"), "{text}");
        assert!(text.contains("  source: file samples/events.log"), "{text}");
        assert!(text.contains("  provider: mmdb "), "{text}");
        assert!(text.contains("  sink: stdout\n"), "{text}");
        assert!(text.contains("  dead_letter: stderr\n"), "{text}");
    }

    #[tokio::test]
    async fn a_provider_that_cannot_be_built_fails_the_check_but_is_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        let missing = dir.path().join("missing.mmdb");
        std::fs::write(
            &path,
            format!(
                "pipelines:\n  - name: m\n    source:\n      stdin: {{}}\n    extract:\n      scan_all_strings: true\n    providers:\n      - mmdb:\n          path: {}\n    sink:\n      stdout: {{}}\n",
                missing.display()
            ),
        )
        .unwrap();
        let mut out = Output::new(Vec::new());
        assert_eq!(check(&path, &mut out).await.unwrap(), Exit::Failure);
        let text = printed(out);
        assert!(text.contains("pipeline m:"), "{text}");
        assert!(
            text.contains(": ERROR providers[0].mmdb: cannot stat mmdb file"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_unreadable_config_is_a_failure_not_an_error() {
        let mut out = Output::new(Vec::new());
        let exit = check(Path::new("/nonexistent/ipenrich.yaml"), &mut out)
            .await
            .unwrap();
        assert_eq!(exit, Exit::Failure);
        assert!(printed(out).is_empty());
    }

    #[tokio::test]
    async fn provider_urls_are_printed_without_secrets() {
        let yaml = "pipelines:\n  - name: p\n    source:\n      stdin: {}\n    extract:\n      scan_all_strings: true\n    providers:\n      - iptrust:\n          base_url: https://user:pw@example.test/v1?key=s3cret\n          api_key: {env: IPTRUST_KEY}\n    sink:\n      stdout: {}\n";
        let config = config::load_str(yaml, "inline.yaml", |_| None).unwrap();
        let line = describe_provider(&config.pipelines[0].providers[0]);
        assert!(line.starts_with("iptrust https://"), "{line}");
        assert!(!line.contains("pw") && !line.contains("s3cret"), "{line}");
    }
}
