//! The normalised intelligence record: one shape for every provider.
//!
//! Providers speak five dialects (`"AS15169"` strings, bare numbers, nested objects,
//! risk as 0.0-1.0 or 0-100). Each client converts its answer into an [`IntelRecord`]
//! so that caching, merging and reporting never see a provider's wire format.
//! Strings are `Arc<str>` so that a cache holding a million addresses can share the
//! few thousand distinct AS names instead of copying them per address.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What one provider knows about one address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IntelRecord {
    /// Autonomous system that announces the address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asn: Option<AsnInfo>,
    /// Geolocation, when the provider gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo: Option<GeoInfo>,
    /// Threat assessment, when the provider gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threat: Option<ThreatInfo>,
}

/// Autonomous-system facts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AsnInfo {
    /// AS number without the `AS` prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// Short AS handle, e.g. `GOOGLE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Arc<str>>,
    /// Organisation that holds the AS, e.g. `Google LLC`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<Arc<str>>,
    /// ISO 3166-1 alpha-2 country of the AS registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<Arc<str>>,
    /// The organisation's domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<Arc<str>>,
    /// Network type as the provider names it (isp, hosting, business, education, ...).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Arc<str>>,
    /// Announced prefix that covers the address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Arc<str>>,
    /// Regional internet registry (arin, ripe, apnic, lacnic, afrinic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rir: Option<Arc<str>>,
}

/// Geolocation facts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeoInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_code: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_name: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Arc<str>>,
}

/// Threat facts, normalised: `score` is always 0-100.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThreatInfo {
    /// 0 (benign) to 100 (certainly malicious).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
    /// low, medium, high, critical (or the provider's own word).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_tor: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_proxy: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_vpn: Option<bool>,
    /// Hosting provider or datacentre address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_hosting: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_relay: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_bot: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<Arc<str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blacklists: Vec<Arc<str>>,
}

impl IntelRecord {
    /// True when the record carries no fact at all ("no data").
    pub fn is_empty(&self) -> bool {
        self.asn.is_none() && self.geo.is_none() && self.threat.is_none()
    }
}
