//! Logging: `tracing` to standard error (standard output carries events), as text
//! or JSON lines, filtered by `RUST_LOG` (default `info`). Errors are logged and
//! printed with their whole cause chain ([`error_chain`]): "cannot load mmdb file X"
//! alone does not say that the file is missing.
//!
//! Colour codes are written only when standard error is a terminal and `NO_COLOR`
//! is unset or empty (<https://no-color.org>), so a log file or a collector never
//! sees escape sequences. Everything written to standard error goes through
//! [`Stderr`], which hides a progress bar shown with [`show_progress`] for the time
//! of the write: a log line never lands in the middle of the bar.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::sync::{PoisonError, RwLock};

use indicatif::ProgressBar;
use tracing_subscriber::EnvFilter;

/// The progress bar drawn on standard error, if any (see [`show_progress`]).
static PROGRESS: RwLock<Option<ProgressBar>> = RwLock::new(None);

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| Stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// Whether logs may carry colour codes: only on a terminal, and not when the
/// user set `NO_COLOR` to anything but the empty string.
fn colour(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Standard error, written around the progress bar: each write hides the bar,
/// writes, and draws the bar again below. Writes are passed whole, so a caller
/// that writes whole lines (the log formatter; [`std::io::LineWriter`]) never
/// leaves the bar beside half a line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        around_progress(|| io::stderr().lock().write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Prints one line on standard error around the progress bar (`eprintln!` would
/// write into it).
pub fn print_line(line: &str) {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    // Standard error gone is nothing a message about it could be written to.
    let _ = Stderr.write_all(text.as_bytes());
}

/// Runs `f` with the progress bar hidden, if one is shown.
fn around_progress<R>(f: impl FnOnce() -> R) -> R {
    let bar = PROGRESS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// Routes standard error around `bar` until the guard is dropped. The caller draws
/// the bar; dropping the guard (also on unwind) stops the routing and leaves the
/// bar as it was last drawn, finished or not.
pub fn show_progress(bar: ProgressBar) -> ProgressGuard {
    *PROGRESS.write().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
    ProgressGuard(bar)
}

/// Ends the routing of [`show_progress`] when dropped.
#[must_use = "the bar is routed around only while the guard lives"]
pub struct ProgressGuard(ProgressBar);

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        PROGRESS
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if !self.0.is_finished() {
            self.0.abandon();
        }
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
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsString::new())),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour(true, Some(OsString::from("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsString::from("1"))));
    }

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
