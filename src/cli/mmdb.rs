//! `ipenrich mmdb fetch`: one download for an init container, or one every interval
//! for a sidecar (`--every`).
//!
//! Contract, once: exit 0 when the database was updated or is unchanged (304). A
//! failure leaves the file at `--out` as it was; when that file is a valid database
//! the failure is a warning and the exit is still 0 (a pod whose volume already
//! holds a database must start), except when the server refused the credentials
//! (401/403): a wrong key or plan never fixes itself, so it fails the container
//! where an operator sees it. Missing credentials or bad arguments always fail.
//!
//! Contract, `--every`: fetch at start and then every interval until SIGTERM or
//! SIGINT, which end the command with exit 0 at once, even mid-download (the file
//! at `--out` is only ever replaced whole). Failures are logged and retried, never
//! fatal (see [`Fetcher::run_every`]).

use std::time::Duration;

use tracing::warn;

use super::{CliError, Exit};
use crate::mmdb::fetch::{Class, Credentials, FetchSettings, Fetcher};
use crate::telemetry::error_chain;

/// `--every`: a humantime duration (`6h`, `30m`, `1day`) of at least one second.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval =
        humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < Duration::from_secs(1) {
        return Err("the interval must be at least 1s".to_owned());
    }
    Ok(interval)
}

/// Runs `ipenrich mmdb fetch`.
pub async fn fetch(settings: FetchSettings, every: Option<Duration>) -> Result<Exit, CliError> {
    let credentials = Credentials::from_env(settings.source)?;
    let fetcher = Fetcher::new(settings, credentials)?;
    match every {
        None => once(&fetcher).await,
        Some(interval) => {
            // Installed before the first request, so a signal during it is caught.
            let stop = super::run::termination_now().map_err(CliError::Signals)?;
            fetcher.run_every(interval, stop).await;
            Ok(Exit::Success)
        }
    }
}

/// One fetch and its verdict (see the module contract).
async fn once(fetcher: &Fetcher) -> Result<Exit, CliError> {
    let error = match fetcher.fetch().await {
        Ok(fetched) => {
            fetcher.log_fetched(&fetched);
            return Ok(Exit::Success);
        }
        Err(e) => e,
    };
    if error.class() != Class::Refused {
        if let Some(db) = fetcher.valid_database().await {
            warn!(
                error = %error_chain(&error),
                out = %fetcher.out().display(),
                database_type = %db.database_type,
                build_epoch = db.build_epoch,
                "database fetch failed; keeping the valid database already there"
            );
            return Ok(Exit::Success);
        }
    }
    Err(error.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_humantime_and_at_least_a_second() {
        assert_eq!(parse_interval("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("500ms").is_err());
        assert!(parse_interval("often").is_err());
    }
}
