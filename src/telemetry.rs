//! Logging: `tracing` to standard error (standard output carries events), as text
//! or JSON lines, filtered by `RUST_LOG` (default `info`). Errors are logged and
//! printed with their whole cause chain ([`error_chain`]): "cannot load mmdb file X"
//! alone does not say that the file is missing.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// `error: cause: cause` on one line, as anyhow's `{:#}` prints it. A cause that
/// the message already ends with (an error that prints its source and also returns
/// it from `source()`) is not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_prints_every_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = crate::lookup::providers::mmdb::MmdbError::Stat {
            path: "/x.mmdb".into(),
            source: io,
        };
        assert_eq!(
            error_chain(&err),
            "cannot stat mmdb file /x.mmdb: no such file"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("sink: {source}")]
    struct PrintsItsSource {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn error_chain_does_not_repeat_a_cause_already_printed() {
        let err = PrintsItsSource {
            source: std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe"),
        };
        assert_eq!(error_chain(&err), "sink: broken pipe");
    }
}
