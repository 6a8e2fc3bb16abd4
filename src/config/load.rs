//! Reading a config file: `${ENV}` expansion, YAML parsing and located errors.

use std::fmt;
use std::path::{Path, PathBuf};

use super::types::Config;

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
    #[error("{}: cannot read config: {source}", path.display())]
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

/// Reads, expands, parses and validates a config file.
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
pub fn load_str(
    text: &str,
    file: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        file: file.to_string(),
        problems,
    };
    let expanded = expand_env(text, &env).map_err(|p| invalid(vec![p]))?;
    let de = serde_yaml_ng::Deserializer::from_str(&expanded);
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        // serde_yaml appends " at line X column Y"; the location is printed separately.
        let mut message = inner.to_string();
        if let Some(at) = message.find(" at line ") {
            message.truncate(at);
        }
        invalid(vec![Problem { line, key, message }])
    })?;
    let problems: Vec<Problem> = super::validate(&config)
        .into_iter()
        .map(|(key, message)| Problem {
            line: locate(&expanded, &key),
            key,
            message,
        })
        .collect();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(invalid(problems))
    }
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`.
/// Expansion is textual and line-preserving, so parser locations stay right.
fn expand_env(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, Problem> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = body.find('}').ok_or_else(|| Problem {
                    line: Some(n + 1),
                    key: "${".to_string(),
                    message: "unterminated `${`".to_string(),
                })?;
                let spec = &body[..end];
                let (name, default) = match spec.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (spec, None),
                };
                let value = env(name)
                    .filter(|v| !v.is_empty())
                    .or(default.map(str::to_string));
                let value = value.ok_or_else(|| Problem {
                    line: Some(n + 1),
                    key: format!("${{{name}}}"),
                    message: format!("environment variable {name} is not set"),
                })?;
                if value.contains('\n') {
                    return Err(Problem {
                        line: Some(n + 1),
                        key: format!("${{{name}}}"),
                        message: format!("environment variable {name} holds a newline"),
                    });
                }
                out.push_str(&value);
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
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
    fn missing_env_var_is_reported() {
        let err = load_str("pipelines: ${NOPE}\n", "e.yaml", no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "e.yaml:1: key `${NOPE}`: environment variable NOPE is not set"
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
