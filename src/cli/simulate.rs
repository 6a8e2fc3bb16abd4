//! `ipenrich simulate`: the provider simulator on a chosen address until a signal.
//!
//! Contract: the base URL of every simulated provider is printed, one per line, then
//! the simulator serves until SIGTERM or SIGINT, whether or not anybody reads the
//! printout. This command is the only production caller of [`crate::simulate`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use super::run::termination;
use super::{CliError, Exit, Output};
use crate::simulate::{start, SimConfig};

/// Serves the simulator on `listen` with the settings at `config` (or the defaults).
pub async fn simulate(
    listen: SocketAddr,
    config: Option<&Path>,
    out: &mut Output<impl Write>,
) -> Result<Exit, CliError> {
    let config = match config {
        Some(path) => SimConfig::from_yaml_file(path)?,
        None => SimConfig::default(),
    };
    let handle = start(config, listen).await?;
    // The simulator keeps serving when nobody reads these lines.
    for p in [
        "ipinsights",
        "openipapi",
        "iptrust",
        "ipgeolocation",
        "cloudflare",
    ] {
        out.line(format_args!("{p:<14} {}", handle.base_url(p)))?;
    }
    out.line(format_args!(
        "{:<14} http://{}/_sim/accounting",
        "accounting",
        handle.addr()
    ))?;
    termination().await;
    handle.shutdown().await;
    Ok(Exit::Success)
}
