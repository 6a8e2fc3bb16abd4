//! The commands behind `ipenrich`'s subcommands, callable without a process:
//! `main.rs` parses the arguments and maps an [`Exit`] or a [`CliError`] to the exit
//! code; everything a command does and prints is here.
//!
//! Contract: a command prints its results to an [`Output`] (standard output in the
//! binary, a buffer in tests) and its per-item complaints to stderr. A reader that
//! closes standard output early (`ipenrich check | head -1`) stops the printing,
//! never the command's verdict. Errors that end a command are [`CliError`]s whose
//! `#[source]` chain `main.rs` prints on one line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{self, ConfigError, PipelineConfig};

pub mod check;
pub mod enrich;
pub mod lookup;
pub mod mmdb;
pub mod output;
pub mod progress;
pub mod run;
pub mod simulate;

pub use output::Output;

/// How a command ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit 0.
    Success,
    /// Exit 1: the command ran to its end, but something it checked or did failed
    /// (an invalid provider, an address that does not parse, a failed pipeline).
    Failure,
}

impl Exit {
    /// `Success` when `ok`.
    pub fn from_ok(ok: bool) -> Exit {
        if ok {
            Exit::Success
        } else {
            Exit::Failure
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        match exit {
            Exit::Success => ExitCode::SUCCESS,
            Exit::Failure => ExitCode::FAILURE,
        }
    }
}

/// Why a command could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Standard output failed for another reason than a closed pipe.
    #[error("writing to standard output")]
    Output(#[source] std::io::Error),
    /// The config file could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config holds no pipeline to pick.
    #[error("the config has no pipeline")]
    NoPipeline,
    /// `--pipeline` names none of the config's pipelines.
    #[error("{}: no pipeline named {name:?}", path.display())]
    NoSuchPipeline { path: PathBuf, name: String },
    /// The providers of the picked pipeline could not be built, one line each.
    #[error("{}", .0.join("\n"))]
    Providers(Vec<String>),
    /// A lookup answer could not be rendered as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A pipeline or reporter could not be started.
    #[error(transparent)]
    Start(#[from] crate::supervisor::StartError),
    /// `mmdb fetch` could not run or its one fetch failed.
    #[error(transparent)]
    Fetch(#[from] crate::mmdb::fetch::FetchError),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// `enrich` was asked to write into the file it reads.
    #[error("{}: the output is the input file", .0.display())]
    OutputIsInput(PathBuf),
    /// The simulator's config is invalid or its address cannot be bound.
    #[error(transparent)]
    Simulate(#[from] crate::simulate::SimError),
}

/// The named pipeline of a config file, or its first.
pub fn select_pipeline(path: &Path, name: Option<&str>) -> Result<PipelineConfig, CliError> {
    let cfg = config::load_file(path)?;
    let mut pipelines = cfg.pipelines.into_iter();
    match name {
        None => pipelines.next().ok_or(CliError::NoPipeline),
        Some(n) => pipelines
            .find(|p| p.name == n)
            .ok_or_else(|| CliError::NoSuchPipeline {
                path: path.to_owned(),
                name: n.to_owned(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/demo.yaml")
    }

    #[test]
    fn select_pipeline_picks_the_first_or_the_named_one() {
        assert_eq!(select_pipeline(&demo(), None).unwrap().name, "demo");
        assert_eq!(select_pipeline(&demo(), Some("demo")).unwrap().name, "demo");
        let err = select_pipeline(&demo(), Some("nope")).unwrap_err();
        assert!(matches!(err, CliError::NoSuchPipeline { .. }), "{err:?}");
        assert!(
            err.to_string().ends_with("no pipeline named \"nope\""),
            "{err}"
        );
    }

    #[test]
    fn exit_maps_to_the_process_exit_code() {
        assert_eq!(Exit::from_ok(true), Exit::Success);
        assert_eq!(Exit::from_ok(false), Exit::Failure);
        assert_eq!(ExitCode::from(Exit::Success), ExitCode::SUCCESS);
        assert_eq!(ExitCode::from(Exit::Failure), ExitCode::FAILURE);
    }
}
