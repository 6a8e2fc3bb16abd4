//! The progress bar of `ipenrich enrich` over a file: bytes read of the file's
//! size, events read and events per second, on standard error.
//!
//! Contract: a bar is drawn only when the input is a file (standard input has no
//! size to go by) and standard error is a terminal; otherwise nothing of it is
//! written, so logs sent to a file or a pipe stay plain log lines. While the bar is
//! shown, everything written to standard error (logs, dead letters, the failure
//! message) goes through [`crate::telemetry::Stderr`], which lifts the bar for the
//! write. The numbers are the pipeline's own metrics, read ten times a second: the
//! bar adds nothing to the per-event path. The bar stays on screen at the end with
//! the final numbers.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prometheus::IntCounter;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{PipelineConfig, SourceConfig};
use crate::metrics::PipelineMetrics;
use crate::telemetry::{self, ProgressGuard};

/// How often the numbers are read and the bar redrawn.
const TICK: Duration = Duration::from_millis(100);

/// The file whose reading gets a bar: the source of `p` when it is a file and
/// standard error is a terminal.
pub fn wanted(p: &PipelineConfig, stderr_is_terminal: bool) -> Option<&Path> {
    match &p.source {
        SourceConfig::File(f) if stderr_is_terminal => Some(&f.path),
        _ => None,
    }
}

/// A bar being drawn; [`Progress::finish`] draws the last numbers.
pub struct Progress {
    bar: ProgressBar,
    counters: Counters,
    ticker: JoinHandle<()>,
    // Dropped after the bar is finished or abandoned (field order).
    _route: ProgressGuard,
}

/// What the bar shows, from the pipeline's metrics.
#[derive(Clone)]
struct Counters {
    bytes: IntCounter,
    events: IntCounter,
    started: Instant,
}

impl Counters {
    fn draw(&self, bar: &ProgressBar) {
        bar.set_position(self.bytes.get());
        let events = self.events.get();
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            events as f64 / secs
        } else {
            0.0
        };
        bar.set_message(format!("{events} events, {rate:.0} events/s"));
    }
}

impl Progress {
    /// Draws a bar over the reading of `path` by the pipeline that counts into
    /// `metrics`. A file whose size cannot be read gets a bar without a length.
    pub fn start(path: &Path, metrics: &PipelineMetrics) -> Progress {
        let len = std::fs::metadata(path).ok().map(|m| m.len());
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr_with_hz(10));
        // The template is a constant; the default style stands in should it not parse.
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let counters = Counters {
            bytes: metrics.source_bytes.clone(),
            events: metrics.events_in.clone(),
            started: Instant::now(),
        };
        let route = telemetry::show_progress(bar.clone());
        let ticker = tokio::spawn({
            let (bar, counters) = (bar.clone(), counters.clone());
            async move {
                let mut tick = tokio::time::interval(TICK);
                loop {
                    tick.tick().await;
                    counters.draw(&bar);
                }
            }
        });
        Progress {
            bar,
            counters,
            ticker,
            _route: route,
        }
    }

    /// Draws the final numbers and leaves the bar on screen as they are (`finish`
    /// would fill the bar even when the run stopped half way).
    pub fn finish(self) {
        self.ticker.abort();
        self.counters.draw(&self.bar);
        self.bar.abandon();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(input: Option<&Path>) -> PipelineConfig {
        crate::pipeline::default_config(input, None)
    }

    #[test]
    fn a_bar_only_for_a_file_on_a_terminal() {
        let file = pipeline(Some(Path::new("events.log")));
        assert_eq!(wanted(&file, true), Some(Path::new("events.log")));
        assert_eq!(wanted(&file, false), None, "stderr is not a terminal");
        let stdin = pipeline(Some(Path::new("-")));
        assert_eq!(wanted(&stdin, true), None, "stdin has no size");
        assert_eq!(wanted(&pipeline(None), true), None);
    }

    #[tokio::test]
    async fn the_bar_shows_the_pipeline_counters() {
        let metrics = crate::metrics::Metrics::new().pipeline("p");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.log");
        std::fs::write(&path, vec![b'x'; 1000]).unwrap();
        let progress = Progress::start(&path, &metrics);
        metrics.source_bytes.inc_by(400);
        metrics.events_in.inc_by(7);
        let bar = progress.bar.clone();
        progress.finish();
        assert_eq!(bar.length(), Some(1000));
        assert_eq!(bar.position(), 400);
        assert!(bar.message().starts_with("7 events, "), "{}", bar.message());
        assert!(bar.is_finished());
    }
}
