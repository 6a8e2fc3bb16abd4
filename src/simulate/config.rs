//! Simulator configuration: accepted keys, plans, rate limits and failure injection per
//! provider. Every field is optional on the wire; what is left out falls back to the
//! documented default of *that* provider (see the `default_*` functions), so a YAML file
//! or a `PUT /_sim/config` body only names what a test wants to change.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SimError;
pub use crate::config::OpenIpApiPlan;

/// The five simulated providers; the string form is also the URL prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// ipinsights.io, `X-API-Key`.
    Ipinsights,
    /// OpenIPApi, `X-API-Key`.
    Openipapi,
    /// IPTrust, `X-API-Key`.
    Iptrust,
    /// IPGeolocation.io, `apiKey` query parameter.
    Ipgeolocation,
    /// Cloudflare Radar, `Authorization: Bearer`.
    Cloudflare,
}

impl Provider {
    /// All providers, in URL-prefix order.
    pub const ALL: [Provider; 5] = [
        Provider::Ipinsights,
        Provider::Openipapi,
        Provider::Iptrust,
        Provider::Ipgeolocation,
        Provider::Cloudflare,
    ];

    /// The lowercase name, also the path prefix (`/ipinsights/...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Ipinsights => "ipinsights",
            Provider::Openipapi => "openipapi",
            Provider::Iptrust => "iptrust",
            Provider::Ipgeolocation => "ipgeolocation",
            Provider::Cloudflare => "cloudflare",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// The whole simulator configuration (`PUT /_sim/config` takes the same JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// ipinsights.io settings.
    pub ipinsights: ProviderConfig,
    /// OpenIPApi settings.
    pub openipapi: ProviderConfig,
    /// IPTrust settings.
    pub iptrust: ProviderConfig,
    /// IPGeolocation.io settings.
    pub ipgeolocation: ProviderConfig,
    /// Cloudflare Radar settings.
    pub cloudflare: ProviderConfig,
    /// Optional CSV `network,asn,organization,country` (the `samples/demo-asn.csv`
    /// format) whose networks take precedence over the built-in table.
    pub data_csv: Option<PathBuf>,
}

/// Settings of one provider; `None` means "the documented default of this provider".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Accepted API keys (Bearer tokens for Cloudflare); default `sim-<provider>-key`.
    pub api_keys: Option<Vec<String>>,
    /// Keys that authenticate but lack access: IPTrust answers 403 (other providers
    /// treat them as invalid keys).
    pub forbidden_keys: Vec<String>,
    /// Plan name: OpenIPApi free|starter|pro|business|enterprise (default business),
    /// IPTrust essential|plus|premium (default premium), IPGeolocation free|paid
    /// (default paid; free keys get the documented 401). Ignored by the others.
    pub plan: Option<String>,
    /// Rate limit per API key; default: the documented limit of the provider and plan.
    pub rate_limit: Option<RateLimitConfig>,
    /// Total lookups before the quota answer (OpenIPApi `limit_exceeded`, IPGeolocation
    /// usage-limit 429); default unlimited.
    pub quota: Option<u64>,
    /// Failure injection.
    pub faults: FaultConfig,
}

/// A sliding-window rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Units allowed per window (a request, or one public IP for ipinsights bulk).
    pub requests: u64,
    /// Window length in milliseconds.
    pub window_ms: u64,
}

impl RateLimitConfig {
    /// The window as a `Duration`.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }
}

/// Deterministic failure injection. A rate `r` fires on request `n` (1-based, counted
/// per provider since the last reset) when `floor(n*r) > floor((n-1)*r)`: exactly
/// `floor(N*r)` of the first `N` requests fail, evenly spread (`0.25` = every 4th).
/// Precedence when several fire together: reset, then 5xx, then malformed body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Latency added before every answer, in milliseconds.
    pub latency_ms: u64,
    /// Latency added after the handler ran and before its answer is written, in
    /// milliseconds: the request took effect (a report was recorded) but the
    /// client waits, as when an answer is lost on the way back.
    pub answer_latency_ms: u64,
    /// Share of requests answered with a 5xx in the provider's error shape.
    pub server_error_rate: f64,
    /// Status used for injected 5xx; default 500 (documented by every provider).
    pub server_error_status: Option<u16>,
    /// Share of requests answered 200 with a truncated JSON body.
    pub malformed_rate: f64,
    /// Share of requests whose connection is reset (TCP RST) instead of answered.
    pub reset_rate: f64,
}

/// IPTrust plans; higher tiers include every lower-tier field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpTrustPlan {
    /// Core geo and ASN data.
    Essential,
    /// Adds company, AS type, hosting, known bot.
    Plus,
    /// Adds risk, abuse contact, Tor, privacy relay, proxy, VPN.
    Premium,
}

impl IpTrustPlan {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "essential" => Self::Essential,
            "plus" => Self::Plus,
            "premium" => Self::Premium,
            _ => return None,
        })
    }
}

fn default_keys(p: Provider) -> Vec<String> {
    vec![format!("sim-{}-key", p.as_str())]
}

/// Default limits. ipinsights: 600 per hour per key (ipinsights-api.txt "Rate Limits").
/// OpenIPApi: plan requests/minute. IPTrust documents none: 600/minute. IPGeolocation
/// paid plans have no fixed limit: 6,000/minute. Cloudflare's API-wide limit is
/// 1,200 per 5 minutes.
fn default_rate(p: Provider, cfg: &ProviderConfig) -> RateLimitConfig {
    let minute = 60_000;
    match p {
        Provider::Ipinsights => RateLimitConfig {
            requests: 600,
            window_ms: 3_600_000,
        },
        Provider::Openipapi => RateLimitConfig {
            requests: cfg.openipapi_plan().per_minute(),
            window_ms: minute,
        },
        Provider::Iptrust => RateLimitConfig {
            requests: 600,
            window_ms: minute,
        },
        Provider::Ipgeolocation => RateLimitConfig {
            requests: 6_000,
            window_ms: minute,
        },
        Provider::Cloudflare => RateLimitConfig {
            requests: 1_200,
            window_ms: 5 * minute,
        },
    }
}

impl ProviderConfig {
    /// The accepted keys after defaults.
    pub fn keys(&self, p: Provider) -> Vec<String> {
        self.api_keys.clone().unwrap_or_else(|| default_keys(p))
    }

    /// The rate limit after defaults.
    pub fn rate(&self, p: Provider) -> RateLimitConfig {
        self.rate_limit.unwrap_or_else(|| default_rate(p, self))
    }

    /// OpenIPApi plan (default business, so batch, ASN, fraud and the ASN MMDB work).
    pub fn openipapi_plan(&self) -> OpenIpApiPlan {
        self.plan
            .as_deref()
            .and_then(OpenIpApiPlan::parse)
            .unwrap_or(OpenIpApiPlan::Business)
    }

    /// IPTrust plan (default premium: every section).
    pub fn iptrust_plan(&self) -> IpTrustPlan {
        self.plan
            .as_deref()
            .and_then(IpTrustPlan::parse)
            .unwrap_or(IpTrustPlan::Premium)
    }

    /// IPGeolocation: `true` when the plan is free (the ASN API answers 401).
    pub fn ipgeolocation_free(&self) -> bool {
        self.plan.as_deref() == Some("free")
    }

    /// Status of injected server errors.
    pub fn server_error_status(&self) -> u16 {
        self.faults.server_error_status.unwrap_or(500)
    }
}

impl SimConfig {
    /// The settings of one provider.
    pub fn provider(&self, p: Provider) -> &ProviderConfig {
        match p {
            Provider::Ipinsights => &self.ipinsights,
            Provider::Openipapi => &self.openipapi,
            Provider::Iptrust => &self.iptrust,
            Provider::Ipgeolocation => &self.ipgeolocation,
            Provider::Cloudflare => &self.cloudflare,
        }
    }

    /// Parses YAML (same field names as the JSON form).
    pub fn from_yaml_str(text: &str) -> Result<SimConfig, SimError> {
        let cfg: SimConfig =
            serde_yaml_ng::from_str(text).map_err(|e| SimError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a YAML file.
    pub fn from_yaml_file(path: &std::path::Path) -> Result<SimConfig, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml_str(&text)
    }

    /// Checks plans, rates and limits; reports every problem at once.
    pub fn validate(&self) -> Result<(), SimError> {
        let mut problems = Vec::new();
        for p in Provider::ALL {
            let c = self.provider(p);
            let name = p.as_str();
            if let Some(plan) = c.plan.as_deref() {
                let ok = match p {
                    Provider::Openipapi => OpenIpApiPlan::parse(plan).is_some(),
                    Provider::Iptrust => IpTrustPlan::parse(plan).is_some(),
                    Provider::Ipgeolocation => plan == "free" || plan == "paid",
                    Provider::Ipinsights => plan == "free",
                    Provider::Cloudflare => true,
                };
                if !ok {
                    problems.push(format!("{name}.plan: unknown plan {plan:?}"));
                }
            }
            if let Some(r) = c.rate_limit {
                if r.requests == 0 || r.window_ms == 0 {
                    problems.push(format!(
                        "{name}.rate_limit: requests and window_ms must be > 0"
                    ));
                }
            }
            if c.api_keys.as_ref().is_some_and(|k| k.is_empty()) {
                problems.push(format!("{name}.api_keys: at least one key is needed"));
            }
            let f = &c.faults;
            for (field, v) in [
                ("server_error_rate", f.server_error_rate),
                ("malformed_rate", f.malformed_rate),
                ("reset_rate", f.reset_rate),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    problems.push(format!("{name}.faults.{field}: {v} is not within 0..=1"));
                }
            }
            if let Some(s) = f.server_error_status {
                if !(500..=599).contains(&s) {
                    problems.push(format!(
                        "{name}.faults.server_error_status: {s} is not a 5xx"
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SimError::Config(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_yaml_keeps_provider_defaults() {
        let cfg = SimConfig::from_yaml_str("openipapi:\n  plan: starter\n").unwrap();
        assert_eq!(cfg.openipapi.openipapi_plan(), OpenIpApiPlan::Starter);
        assert_eq!(cfg.openipapi.rate(Provider::Openipapi).requests, 120);
        assert_eq!(
            cfg.ipinsights.keys(Provider::Ipinsights),
            vec!["sim-ipinsights-key"]
        );
        let r = cfg.ipinsights.rate(Provider::Ipinsights);
        assert_eq!((r.requests, r.window_ms), (600, 3_600_000));
    }

    #[test]
    fn every_problem_is_reported() {
        let yaml = "iptrust: {plan: gold}\nopenipapi: {faults: {reset_rate: 2.0}}\n";
        let err = SimConfig::from_yaml_str(yaml).unwrap_err().to_string();
        assert!(err.contains("iptrust.plan"), "{err}");
        assert!(err.contains("openipapi.faults.reset_rate"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(SimConfig::from_yaml_str("ipinsights: {keys: [a]}\n").is_err());
        assert!(SimConfig::from_yaml_str("nope: 1\n").is_err());
    }
}
