//! Reading a config file: YAML parsing, `${ENV}` substitution in values and located
//! errors that never quote a secret.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::de::Node;
use super::types::{Config, KEY_SOURCE_EXPECTED};

/// One problem in a config file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Key path such as `pipelines[0].sink.kafka.topic`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// A config that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", Invalid { file, problems })]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

struct Invalid<'a> {
    file: &'a str,
    problems: &'a [Problem],
}

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{}:{}: key `{}`: {}", self.file, line, p.key, p.message)?,
                None => write!(f, "{}: key `{}`: {}", self.file, p.key, p.message)?,
            }
        }
        Ok(())
    }
}

/// Reads, parses, substitutes and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, &path.display().to_string(), |name| {
        std::env::var(name).ok()
    })
}

/// Parses config text; `file` names it in errors, `env` resolves `${VAR}`.
///
/// The text is parsed first and `${VAR}` substituted into the parsed string values
/// afterwards, so a value from the environment is a string exactly as the variable
/// holds it: a secret holding `: `, ` #` or a leading `*`, `&`, `!` or `@` cannot
/// change the document. Lines are found from the key path in the unchanged text.
pub fn load_str(
    text: &str,
    file: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        file: file.to_string(),
        problems,
    };
    let mut tree: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        invalid(vec![Problem {
            line,
            key: ".".to_string(),
            message: without_location(e.to_string()),
        }])
    })?;
    let mut unresolved = Vec::new();
    substitute(&mut tree, "", &env, &mut unresolved);
    if !unresolved.is_empty() {
        return Err(invalid(located(text, unresolved)));
    }
    let config: Config = serde_path_to_error::deserialize(Node(&tree)).map_err(|e| {
        let key = e.path().to_string();
        let message = without_location(e.into_inner().to_string());
        // An unknown key is found on its own line, not its parent's.
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .and_then(|(name, _)| locate(text, &format!("{key}.{name}")));
        let line = unknown.or_else(|| locate(text, &key));
        let message = if may_hold_secret(&key) {
            redacted(message)
        } else {
            message
        };
        invalid(vec![Problem { line, key, message }])
    })?;
    let problems = located(text, super::validate(&config));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(invalid(problems))
    }
}

/// serde_yaml appends " at line X column Y"; the location is printed separately.
fn without_location(mut message: String) -> String {
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    message
}

/// `(key, message)` pairs with the line of each key in `text`.
fn located(text: &str, problems: Vec<(String, String)>) -> Vec<Problem> {
    problems
        .into_iter()
        .map(|(key, message)| Problem {
            line: locate(text, &key),
            key,
            message,
        })
        .collect()
}

/// Words that mark a key whose value is a secret (`api_key`, `sasl.password`,
/// `ssl.key.password`, `token`, ...).
const SECRET_WORDS: [&str; 7] = [
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "credential",
];

/// Whether any part of a key path names a secret.
fn may_hold_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| key.contains(word))
}

/// An error about a value that may be a secret. serde quotes the offending value
/// ("unknown variant `<the key>`"), so only messages known not to quote a value pass:
/// ours for `api_key`, and serde's about missing or unknown field names.
fn redacted(message: String) -> String {
    if message == KEY_SOURCE_EXPECTED
        || message.starts_with("missing field `")
        || message.starts_with("unknown field `")
    {
        message
    } else {
        "invalid value (not shown: this key may hold a secret)".to_string()
    }
}

/// Replaces `${VAR}`, `${VAR:-default}` and `$$` in every string value of the tree
/// (keys are left alone), and records the key path of every reference that cannot
/// be resolved.
fn substitute(
    value: &mut Value,
    key: &str,
    env: &impl Fn(&str) -> Option<String>,
    unresolved: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => unresolved.push((key.to_string(), message)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{key}[{i}]"), env, unresolved);
            }
        }
        Value::Mapping(map) => {
            for (name, item) in map.iter_mut() {
                let name = match name {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => "?".to_string(),
                };
                let child = if key.is_empty() {
                    name
                } else {
                    format!("{key}.{name}")
                };
                substitute(item, &child, env, unresolved);
            }
        }
        Value::Tagged(tagged) => substitute(&mut tagged.value, key, env, unresolved),
        _ => {}
    }
}

/// Expands one string value. A variable that is set but empty counts as unset, so
/// that its default applies. Errors name the variable, never a value.
fn expand(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "unterminated `${`".to_string())?;
            let spec = &body[..end];
            let (name, default) = match spec.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (spec, None),
            };
            if name.is_empty() {
                return Err("`${}` names no environment variable".to_string());
            }
            let value = env(name)
                .filter(|v| !v.is_empty())
                .or(default.map(str::to_string))
                .ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Finds the line of a key path such as `pipelines[1].sink.kafka.topic` in block-style
/// YAML: walks the path, keeping track of indentation and `- ` list items. Returns the
/// deepest line found, so a missing leaf still points at its parent.
fn locate(text: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0usize;
    let mut min_indent = 0usize;
    let mut found = None;
    for segment in key.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((name, idx)) => (name, idx.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(from) {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if indent < min_indent && i > from {
                break;
            }
            let body = trimmed.trim_start_matches("- ");
            if body
                .strip_prefix(name)
                .is_some_and(|r| r.trim_start().starts_with(':'))
            {
                hit = Some((i, indent + (trimmed.len() - body.len())));
                break;
            }
        }
        let (line, indent) = hit?;
        found = Some(line + 1);
        from = line + 1;
        min_indent = indent + 1;
        if let Some(index) = index {
            let mut seen = 0usize;
            let mut item = None;
            for (i, l) in lines.iter().enumerate().skip(from) {
                let trimmed = l.trim_start();
                let ind = l.len() - trimmed.len();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                if ind < indent || (ind == indent && !trimmed.starts_with("- ")) {
                    break;
                }
                if trimmed.starts_with("- ") && ind >= indent {
                    if seen == index {
                        item = Some((i, ind));
                        break;
                    }
                    seen += 1;
                }
            }
            let (i, ind) = item?;
            found = Some(i + 1);
            from = i;
            min_indent = ind;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
pipelines:
  - name: a
    source:
      stdin: {}
    extract:
      scan_all_strings: true
    sink:
      stdout: {}
  - name: b
    source:
      kafka:
        brokers: ${BROKERS:-127.0.0.1:9092}
        topics: [in]
        group_id: g
    extract:
      fields:
        - path: data.srcip
          role: source
    sink:
      kafka:
        topic: in
";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn expands_env_with_default() {
        let err = load_str(GOOD, "x.yaml", no_env).unwrap_err().to_string();
        // The only problem is the loop: the default broker was accepted.
        assert_eq!(
            err,
            "x.yaml:21: key `pipelines[1].sink.kafka.topic`: \"in\" is also a source topic: events would loop"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = GOOD.replace(
            "        group_id: g",
            "        group_id: g\n        brokerz: x",
        );
        let err = load_str(&text, "p.yaml", no_env).unwrap_err().to_string();
        assert!(
            err.starts_with("p.yaml:15: key `pipelines[1].source.kafka"),
            "{err}"
        );
        assert!(err.contains("unknown field `brokerz`"), "{err}");
    }

    #[test]
    fn wrong_type_is_located() {
        let text = "pipelines:\n  - name: a\n    source:\n      stdin: {}\n    extract:\n      scan_all_strings: true\n    sink:\n      stdout: {}\n    limits:\n      max_in_flight: lots\n";
        let err = load_str(text, "l.yaml", no_env).unwrap_err().to_string();
        assert!(
            err.starts_with("l.yaml:10: key `pipelines[0].limits.max_in_flight`"),
            "{err}"
        );
    }

    #[test]
    fn missing_env_var_is_reported_at_its_key() {
        let err = load_str("pipelines: ${NOPE}\n", "e.yaml", no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "e.yaml:1: key `pipelines`: environment variable NOPE is not set"
        );
        // Every unresolved reference is reported, each at its own key and line.
        let text = GOOD
            .replace("${BROKERS:-127.0.0.1:9092}", "${BROKERS}")
            .replace("topic: in", "topic: ${OUT_TOPIC}");
        let err = load_str(&text, "e.yaml", no_env).unwrap_err().to_string();
        assert_eq!(
            err,
            "e.yaml:12: key `pipelines[1].source.kafka.brokers`: environment variable BROKERS is not set\n\
             e.yaml:21: key `pipelines[1].sink.kafka.topic`: environment variable OUT_TOPIC is not set"
        );
    }

    /// Issue 8 item 11: `${VAR}` was expanded into the YAML text before parsing, so a
    /// value holding `: `, ` #`, or starting with `*`, `&`, `!` or `@` changed the
    /// document (or broke it). A substituted value must stay the exact string.
    #[test]
    fn substituted_values_stay_the_exact_string() {
        for value in [
            "*x: #y",
            "&anchor b",
            "!tag c",
            "@at",
            "a: b",
            "a #b",
            "'q' \"d\"",
            "[1, 2]",
            "{k: v}",
            "line\nbreak",
            "$${NOT_EXPANDED}",
        ] {
            let text = GOOD.replace("topic: in", "topic: ${OUT}");
            let cfg = load_str(&text, "x.yaml", |n| match n {
                "BROKERS" => Some(value.to_string()),
                "OUT" => Some(format!("out-{value}")),
                _ => None,
            })
            .unwrap_or_else(|e| panic!("{value:?}: {e}"));
            match (&cfg.pipelines[1].source, &cfg.pipelines[1].sink) {
                (super::super::SourceConfig::Kafka(k), super::super::SinkConfig::Kafka(s)) => {
                    assert_eq!(k.brokers, value);
                    assert_eq!(s.topic, format!("out-{value}"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Substituted values are strings; a boolean or number key still reads them, as
    /// `dry_run: ${DRY_RUN:-true}` needs. `$$` is a `$`,
    /// and a `${` inside the value of a variable is not expanded again.
    #[test]
    fn substituted_strings_feed_numbers_and_booleans() {
        let text = GOOD
            .replace("topic: in", "topic: out")
            .replace(
                "    extract:\n      scan_all_strings: true",
                "    extract:\n      scan_all_strings: ${SCAN:-true}\n    limits:\n      max_in_flight: ${IN_FLIGHT}",
            )
            .replace("group_id: g", "group_id: g$$1");
        let cfg = load_str(&text, "x.yaml", |n| match n {
            "IN_FLIGHT" => Some("123".to_string()),
            "BROKERS" => Some("${IN_FLIGHT}".to_string()),
            _ => None,
        })
        .unwrap();
        assert!(cfg.pipelines[0].extract.scan_all_strings);
        assert_eq!(cfg.pipelines[0].limits.max_in_flight, 123);
        match &cfg.pipelines[1].source {
            super::super::SourceConfig::Kafka(k) => {
                assert_eq!(k.group_id, "g$1");
                assert_eq!(k.brokers, "${IN_FLIGHT}");
            }
            other => panic!("{other:?}"),
        }
        let err = load_str(&text, "x.yaml", |n| {
            (n == "IN_FLIGHT").then(|| "many".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("x.yaml:8: key `pipelines[0].limits.max_in_flight`: invalid type"),
            "{err}"
        );
    }

    const SECRET: &str = "sk-live-4f8a9c2e71d3";

    fn with_provider(provider: &str) -> String {
        GOOD.replace("topic: in", "topic: out").replace(
            "    sink:\n      stdout: {}",
            &format!("    providers:\n      - ipinsights:\n          {provider}\n    sink:\n      stdout: {{}}"),
        )
    }

    /// Issue 8 item 11: an inline key, or `api_key: ${VAR}`, was echoed in
    /// "unknown variant `<the key>`, expected `env` or `file`".
    #[test]
    fn an_inline_api_key_is_refused_without_being_quoted() {
        let env = |n: &str| (n == "IPINSIGHTS_API_KEY").then(|| SECRET.to_string());
        for provider in [
            format!("api_key: {SECRET}"),
            "api_key: ${IPINSIGHTS_API_KEY}".to_string(),
            format!("api_key: {{inline: {SECRET}}}"),
            format!("api_key: [{SECRET}]"),
            format!("api_key: {{env: [{SECRET}]}}"),
        ] {
            let err = load_str(&with_provider(&provider), "k.yaml", env)
                .unwrap_err()
                .to_string();
            assert!(!err.contains("sk-live"), "{provider}: {err}");
            assert_eq!(
                err,
                format!("k.yaml:9: key `pipelines[0].providers[0].ipinsights.api_key`: {KEY_SOURCE_EXPECTED}"),
                "{provider}"
            );
        }
        // The two accepted forms.
        for provider in ["api_key: {env: IPINSIGHTS_API_KEY}", "api_key: {file: /k}"] {
            load_str(&with_provider(provider), "k.yaml", env).unwrap();
        }
    }

    /// Issue 8 item 11: the reporter's key was echoed the same way.
    #[test]
    fn an_inline_reporter_key_is_not_quoted() {
        let text = format!(
            "{}reporters:\n  - name: r\n    topics: [in]\n    signals_topic: s\n    dry_run: false\n    ipinsights:\n      api_key: {SECRET}\n",
            GOOD.replace("topic: in", "topic: out")
        );
        let err = load_str(&text, "r.yaml", no_env).unwrap_err().to_string();
        assert!(!err.contains("sk-live"), "{err}");
        assert!(
            err.contains("key `reporters[0].ipinsights.api_key`"),
            "{err}"
        );
        assert!(err.contains("inline keys are not accepted"), "{err}");
    }

    #[test]
    fn errors_under_secret_keys_do_not_quote_the_value() {
        assert!(may_hold_secret(
            "pipelines[0].source.kafka.options.sasl.password"
        ));
        assert!(may_hold_secret("reporters[0].ipinsights.api_key"));
        assert!(!may_hold_secret("pipelines[0].sink.kafka.partitioning"));
        assert_eq!(
            redacted(format!(
                "unknown variant `{SECRET}`, expected `env` or `file`"
            )),
            "invalid value (not shown: this key may hold a secret)"
        );
        assert_eq!(
            redacted("unknown field `x`, expected `env`".to_string()),
            "unknown field `x`, expected `env`"
        );
    }

    #[test]
    fn env_value_is_used() {
        let text = GOOD.replace("topic: in", "topic: out");
        let cfg = load_str(&text, "x.yaml", |n| {
            (n == "BROKERS").then(|| "k:1".to_string())
        })
        .unwrap();
        match &cfg.pipelines[1].source {
            super::super::SourceConfig::Kafka(k) => assert_eq!(k.brokers, "k:1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn locate_walks_lists() {
        assert_eq!(locate(GOOD, "pipelines[1].name"), Some(9));
        assert_eq!(locate(GOOD, "pipelines[0].sink.stdout"), Some(8));
        assert_eq!(
            locate(GOOD, "pipelines[1].extract.fields[0].role"),
            Some(18)
        );
    }
}
