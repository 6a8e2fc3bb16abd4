//! Turning the `providers:` section of a pipeline into a [`Chain`].
//!
//! Opening a database or reading an API key happens here, at start-up, so that a
//! missing file or variable stops the process with the config key that named it,
//! rather than surfacing as lookup errors later.

use std::sync::Arc;

use super::providers::cloudflare_radar::CloudflareRadarClient;
use super::providers::http::HttpSettings;
use super::providers::ipgeolocation::IpGeolocationClient;
use super::providers::ipinsights::IpInsightsClient;
use super::providers::iptrust::IpTrustClient;
use super::providers::mmdb::MmdbProvider;
use super::providers::openipapi::OpenIpApiClient;
use super::providers::Provider;
use super::{Chain, Member};
use crate::config::{KeySource, ProviderConfig, TimeoutsConfig};
use crate::secret::Secret;

/// A provider that could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct BuildError {
    /// Config key path of the provider, e.g. `providers[1].ipinsights`.
    pub key: String,
    /// What went wrong (never contains a key's value).
    pub reason: String,
}

/// Production hosts, from the providers' documents (../shared/providers/).
fn default_base_url(kind: &str) -> &'static str {
    match kind {
        "ipinsights" => "https://ipinsights.io",
        "openipapi" => "https://api.openipapi.com",
        "iptrust" => "https://api.iptrust.co",
        "ipgeolocation" => "https://api.ipgeolocation.io",
        _ => "https://api.cloudflare.com",
    }
}

fn secret(source: &KeySource) -> Result<Secret, String> {
    match source {
        KeySource::Env(var) => Secret::from_env(var),
        KeySource::File(path) => Secret::from_file(path),
    }
    .map_err(|e| e.to_string())
}

fn settings(
    kind: &str,
    base_url: Option<&str>,
    key: &KeySource,
    t: &TimeoutsConfig,
) -> Result<HttpSettings, String> {
    let url = base_url.unwrap_or(default_base_url(kind));
    Ok(HttpSettings::new(url, secret(key)?)
        .map_err(|e| e.to_string())?
        .with_timeouts(t.connect, t.read, t.request))
}

/// Builds one member of a chain.
pub fn member(index: usize, config: &ProviderConfig) -> Result<Member, BuildError> {
    let kind = config.kind();
    let err = |reason: String| BuildError {
        key: format!("providers[{index}].{kind}"),
        reason,
    };
    let remote = |p: Arc<dyn Provider>| Ok(Member::Remote(p));
    match config {
        ProviderConfig::Mmdb(m) => {
            let provider = Arc::new(MmdbProvider::open(&m.path).map_err(|e| err(e.to_string()))?);
            if !m.reload_interval.is_zero() && tokio::runtime::Handle::try_current().is_ok() {
                provider.spawn_reloader(m.reload_interval);
            }
            Ok(Member::Local(provider))
        }
        ProviderConfig::Ipinsights(c) => {
            let s = settings(kind, c.base_url.as_deref(), &c.api_key, &c.timeouts).map_err(err)?;
            remote(Arc::new(
                IpInsightsClient::new(&s).map_err(|e| err(e.to_string()))?,
            ))
        }
        ProviderConfig::Openipapi(c) => {
            let s = settings(kind, c.base_url.as_deref(), &c.api_key, &c.timeouts).map_err(err)?;
            remote(Arc::new(
                OpenIpApiClient::new(&s, c.plan).map_err(|e| err(e.to_string()))?,
            ))
        }
        ProviderConfig::Iptrust(c) => {
            let s = settings(kind, c.base_url.as_deref(), &c.api_key, &c.timeouts).map_err(err)?;
            remote(Arc::new(
                IpTrustClient::new(&s).map_err(|e| err(e.to_string()))?,
            ))
        }
        ProviderConfig::Ipgeolocation(c) => {
            let s = settings(kind, c.base_url.as_deref(), &c.api_key, &c.timeouts).map_err(err)?;
            remote(Arc::new(
                IpGeolocationClient::new(&s).map_err(|e| err(e.to_string()))?,
            ))
        }
        ProviderConfig::CloudflareRadar(c) => {
            let s = settings(kind, c.base_url.as_deref(), &c.api_key, &c.timeouts).map_err(err)?;
            remote(Arc::new(
                CloudflareRadarClient::new(&s).map_err(|e| err(e.to_string()))?,
            ))
        }
    }
}

/// Builds the whole chain of a pipeline, reporting every broken provider at once.
pub fn chain(providers: &[ProviderConfig]) -> Result<Chain, Vec<BuildError>> {
    let mut members = Vec::new();
    let mut errors = Vec::new();
    for (i, p) in providers.iter().enumerate() {
        match member(i, p) {
            Ok(m) => members.push(m),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(Chain::new(members))
    } else {
        Err(errors)
    }
}
