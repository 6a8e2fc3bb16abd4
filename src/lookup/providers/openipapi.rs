//! OpenIPApi client: single and batch lookups, ASN details, fraud score, MMDB downloads.
//!
//! Contract (`openipapi-api.txt`): key in `X-API-Key`; `GET /v1/lookup/{ip}`
//! (optional `fields=geo,network,threat,abuse`), `POST /v1/lookup/batch`
//! `{"ips":[...]}` -> `{"results":[...],"count":N}` in request order, at most
//! 100 / 500 / 1,000 / 5,000 addresses by plan (Starter / Pro / Business /
//! Enterprise; the free plan gets `plan_required`, so it looks up one at a time);
//! `GET /v1/asn/{asn}`, `GET /v1/fraud/{ip}`, `GET /v1/database/download/{source}`
//! with ETag / If-None-Match (304). Errors are `{"error": code, "message", "status"}`
//! (historical lookups: `{"error": text, "code": code}`); every documented code maps
//! to one [`ProviderError`] variant. A 404 on an address lookup is `NoData`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderName, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde::Deserialize;

use super::http::{
    body_message, fallback_status_error, lower, score_0_100, text, AsNumber, HttpClient,
    HttpSettings, RateInfo, RawResponse,
};
use super::{Answer, Provider, ProviderError, ProviderFuture};
pub use crate::config::OpenIpApiPlan as Plan;
use crate::lookup::record::{AsnInfo, GeoInfo, IntelRecord, ThreatInfo};
use crate::secret::Secret;

/// Name in config, metrics and logs.
pub const NAME: &str = "openipapi";

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// An MMDB file offered by `/v1/database/download/{source}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DatabaseSource {
    /// Country code + ASN (Pro).
    #[serde(rename = "country")]
    Country,
    /// ASN + organisation (Business).
    #[serde(rename = "asn")]
    Asn,
    /// GeoLite2 city (Business).
    #[serde(rename = "city-geolite2")]
    CityGeolite2,
    /// DB-IP Lite city (Enterprise).
    #[serde(rename = "city-dbip")]
    CityDbip,
}

impl DatabaseSource {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseSource::Country => "country",
            DatabaseSource::Asn => "asn",
            DatabaseSource::CityGeolite2 => "city-geolite2",
            DatabaseSource::CityDbip => "city-dbip",
        }
    }
}

/// Result of a conditional MMDB download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    /// A new file and its ETag (to send next time).
    Modified { bytes: Bytes, etag: Option<String> },
    /// 304: the file behind the ETag we sent is still current.
    NotModified,
}

/// A lookup object (`GET /v1/lookup/{ip}`, each batch entry).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LookupResult {
    pub ip: Option<String>,
    #[serde(rename = "type")]
    pub ip_type: Option<String>,
    pub geo: Option<Geo>,
    pub network: Option<Network>,
    pub threat: Option<Threat>,
    pub abuse: Option<Abuse>,
    /// A per-entry error code in a batch (e.g. `invalid_ip`), if the provider sends one.
    pub error: Option<String>,
}

/// `geo`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Geo {
    pub country_code: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub region_code: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub timezone: Option<String>,
    pub is_sanctioned: Option<bool>,
    #[serde(default)]
    pub sanction_lists: Vec<String>,
}

/// `network`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Network {
    pub asn: Option<AsNumber>,
    pub as_name: Option<String>,
    pub as_domain: Option<String>,
    pub isp: Option<String>,
    pub organization: Option<String>,
    pub connection_type: Option<String>,
}

/// `threat`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Threat {
    pub is_vpn: Option<bool>,
    pub is_proxy: Option<bool>,
    pub is_tor: Option<bool>,
    pub is_relay: Option<bool>,
    pub is_hosting: Option<bool>,
    pub threat_score: Option<f64>,
    #[serde(default)]
    pub threat_categories: Vec<String>,
    /// `null` when not a verified bot; the key may be absent under `fields=`.
    #[serde(default, deserialize_with = "present_or_null")]
    pub bot_type: Option<Option<String>>,
}

/// `abuse`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Abuse {
    pub contact_email: Option<String>,
}

/// `GET /v1/asn/{asn}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AsnDetails {
    pub asn: Option<AsNumber>,
    pub as_name: Option<String>,
    pub as_domain: Option<String>,
    pub organization: Option<String>,
    pub country_code: Option<String>,
    pub ip_ranges_count: Option<u64>,
    pub total_ips: Option<u64>,
}

/// `GET /v1/fraud/{ip}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct FraudReport {
    pub ip: Option<String>,
    pub fraud_score: Option<f64>,
    pub risk_level: Option<String>,
    pub signals: Option<FraudSignals>,
    /// allow, review, challenge or block.
    pub recommendation: Option<String>,
}

/// `signals` of a fraud report.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct FraudSignals {
    pub is_vpn: Option<bool>,
    pub is_proxy: Option<bool>,
    pub is_tor: Option<bool>,
    pub is_datacenter: Option<bool>,
    pub is_known_attacker: Option<bool>,
    pub high_risk_country: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Batch {
    results: Vec<LookupResult>,
}

/// Distinguishes `"bot_type": null` (Some(None)) from an absent key (None).
fn present_or_null<'de, D>(deserializer: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Some(Option::<String>::deserialize(deserializer)?))
}

/// The OpenIPApi client.
pub struct OpenIpApiClient {
    http: HttpClient,
    plan: Plan,
    fields: Option<String>,
    download_timeout: Duration,
}

/// `GET /v1/account/usage` (openipapi-api.txt "GET /v1/account/usage").
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct AccountUsage {
    pub plan: Option<String>,
    pub period_start: Option<String>,
    pub period_end: Option<String>,
    pub lookups_used: u64,
    pub lookups_limit: u64,
    pub lookups_remaining: u64,
    /// RFC 3339, e.g. `2026-04-01T00:00:00Z`.
    pub reset_at: Option<String>,
}

impl AccountUsage {
    /// `reset_at` in ms since the Unix epoch, when it is a valid RFC 3339 time.
    pub fn reset_at_ms(&self) -> Option<u64> {
        let t =
            humantime_serde::re::humantime::parse_rfc3339_weak(self.reset_at.as_deref()?).ok()?;
        let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
        u64::try_from(d.as_millis()).ok()
    }
}

/// Documented values of `fields`.
const FIELD_NAMES: [&str; 4] = ["geo", "network", "threat", "abuse"];

impl OpenIpApiClient {
    /// Downloads of tens of MB get more time than a lookup.
    pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

    /// A client for `settings.base_url` (production: `https://api.openipapi.com`).
    pub fn new(settings: &HttpSettings, plan: Plan) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpClient::new(NAME, settings)?,
            plan,
            fields: None,
            download_timeout: Self::DEFAULT_DOWNLOAD_TIMEOUT,
        })
    }

    /// Restricts single lookups to some of `geo,network,threat,abuse`.
    pub fn with_fields(mut self, fields: &[&str]) -> Result<Self, ProviderError> {
        if let Some(bad) = fields.iter().find(|f| !FIELD_NAMES.contains(f)) {
            return Err(ProviderError::Config {
                reason: format!(
                    "unknown openipapi field {bad:?}; known: geo, network, threat, abuse"
                ),
            });
        }
        self.fields = (!fields.is_empty()).then(|| fields.join(","));
        Ok(self)
    }

    /// Overall time allowed for one MMDB download.
    pub fn with_download_timeout(mut self, timeout: Duration) -> Self {
        self.download_timeout = timeout;
        self
    }

    /// The configured plan.
    pub fn plan(&self) -> Plan {
        self.plan
    }

    /// Rate-limit headers of the latest response.
    pub fn last_rate_info(&self) -> Option<RateInfo> {
        self.http.last_rate_info()
    }

    async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<RawResponse, ProviderError> {
        let mut url = self.http.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let request = self.http.with_key_header(self.http.get(url), API_KEY, "")?;
        self.http.send(request).await
    }

    /// `GET /v1/lookup/{ip}` as the provider sends it (with the configured `fields`).
    pub async fn lookup_raw(&self, ip: IpAddr) -> Result<Option<LookupResult>, ProviderError> {
        let ip = ip.to_string();
        let query: Vec<(&str, &str)> = self.fields.iter().map(|f| ("fields", f.as_str())).collect();
        let response = self.get(&["v1", "lookup", &ip], &query).await?;
        if response.status == StatusCode::NOT_FOUND {
            if let Err(ProviderError::NotFound { .. }) = self.check(&response) {
                return Ok(None);
            }
        }
        self.check(&response)?;
        Ok(Some(response.json(self.http.key())?))
    }

    /// `GET /v1/lookup/{ip}`, normalised.
    pub async fn lookup_ip(&self, ip: IpAddr) -> Result<Answer, ProviderError> {
        Ok(match self.lookup_raw(ip).await? {
            Some(result) => answer(to_record(result)),
            None => Answer::NoData,
        })
    }

    /// `POST /v1/lookup/batch`, normalised, in input order.
    pub async fn lookup_batch(&self, ips: &[IpAddr]) -> Result<Vec<Answer>, ProviderError> {
        let max = self.plan.max_batch();
        if ips.len() > max {
            return Err(ProviderError::BatchTooLarge {
                len: ips.len(),
                max,
            });
        }
        if ips.is_empty() {
            return Ok(Vec::new());
        }
        let body =
            serde_json::json!({ "ips": ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>() });
        let url = self.http.url(&["v1", "lookup", "batch"]);
        let request = self
            .http
            .with_key_header(self.http.post(url).json(&body), API_KEY, "")?;
        let response = self.http.send(request).await?;
        self.check(&response)?;
        let batch: Batch = response.json(self.http.key())?;
        align(ips, batch.results)
    }

    /// `GET /v1/asn/{asn}` (Starter plan or higher).
    pub async fn asn(&self, asn: u32) -> Result<AsnDetails, ProviderError> {
        let response = self.get(&["v1", "asn", &asn.to_string()], &[]).await?;
        self.check(&response)?;
        response.json(self.http.key())
    }

    /// `GET /v1/account/usage`: the billing period's lookups used and left.
    pub async fn usage(&self) -> Result<AccountUsage, ProviderError> {
        let response = self.get(&["v1", "account", "usage"], &[]).await?;
        self.check(&response)?;
        response.json(self.http.key())
    }

    /// `GET /v1/fraud/{ip}` (Starter plan or higher).
    pub async fn fraud(&self, ip: IpAddr) -> Result<FraudReport, ProviderError> {
        let response = self.get(&["v1", "fraud", &ip.to_string()], &[]).await?;
        self.check(&response)?;
        response.json(self.http.key())
    }

    /// `GET /v1/database/download/{source}`, conditional on `etag` when given.
    pub async fn download_database(
        &self,
        source: DatabaseSource,
        etag: Option<&str>,
    ) -> Result<Download, ProviderError> {
        let url = self
            .http
            .url(&["v1", "database", "download", source.as_str()]);
        let mut request = self.http.get(url).timeout(self.download_timeout);
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let request = self.http.with_key_header(request, API_KEY, "")?;
        let response = self
            .http
            .send_limited(request, super::http::MAX_DOWNLOAD_BYTES)
            .await?;
        if response.status == StatusCode::NOT_MODIFIED {
            return Ok(Download::NotModified);
        }
        self.check(&response)?;
        let etag = response
            .headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        tracing::debug!(
            provider = NAME,
            source = source.as_str(),
            bytes = response.body.len(),
            "database downloaded"
        );
        Ok(Download::Modified {
            bytes: response.body,
            etag,
        })
    }

    fn check(&self, response: &RawResponse) -> Result<(), ProviderError> {
        let result = status_error(response, self.http.key());
        if let Err(error) = &result {
            tracing::debug!(provider = NAME, status = response.status.as_u16(), %error, "provider refused");
        }
        result
    }
}

/// Matches batch entries to the input: by `ip` when every entry names a parsable
/// one, else by position (the documented order). A count mismatch without
/// addresses is a decode error, not a guess.
fn align(ips: &[IpAddr], results: Vec<LookupResult>) -> Result<Vec<Answer>, ProviderError> {
    let keyed: Option<HashMap<IpAddr, LookupResult>> = results
        .iter()
        .map(|r| Some((r.ip.as_deref()?.parse::<IpAddr>().ok()?, r.clone())))
        .collect();
    if let Some(mut by_ip) = keyed {
        return Ok(ips
            .iter()
            .map(|ip| match by_ip.remove(ip) {
                Some(r) => entry_answer(r),
                None => Answer::NoData,
            })
            .collect());
    }
    if results.len() != ips.len() {
        return Err(ProviderError::Decode {
            reason: format!(
                "batch of {} answered with {} results",
                ips.len(),
                results.len()
            ),
        });
    }
    Ok(results.into_iter().map(entry_answer).collect())
}

fn entry_answer(result: LookupResult) -> Answer {
    if result.error.is_some() {
        return Answer::NoData;
    }
    answer(to_record(result))
}

fn answer(record: IntelRecord) -> Answer {
    if record.is_empty() {
        Answer::NoData
    } else {
        Answer::Found(record)
    }
}

/// Maps a non-2xx answer: by documented error code first, then by status.
fn status_error(response: &RawResponse, key: &Secret) -> Result<(), ProviderError> {
    let status = response.status;
    if status.is_success() {
        return Ok(());
    }
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    let field = |name: &str| body.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    // `{"error": code, "message": text}`, or for historical lookups
    // `{"error": text, "code": code}`.
    let (code, message) = match (field("code"), field("error"), field("message")) {
        (Some(code), error, message) => (Some(code), message.or(error)),
        (None, error, message) => (error, message),
    };
    let message = match (&code, message) {
        (Some(code), Some(m)) => super::http::redact(&format!("{code}: {m}"), key),
        (Some(code), None) => super::http::redact(code, key),
        (None, Some(m)) => super::http::redact(&m, key),
        (None, None) => body_message(&response.body, key),
    };
    let retry_after = response.retry_after();
    let by_code = match code.as_deref() {
        Some("invalid_api_key") => Some(ProviderError::Unauthorized {
            message: message.clone(),
        }),
        Some("limit_exceeded") => Some(ProviderError::QuotaExceeded {
            message: message.clone(),
            retry_after,
        }),
        Some("plan_required" | "plan_upgrade_required") => Some(ProviderError::PlanRequired {
            message: message.clone(),
        }),
        Some("invalid_ip" | "date_out_of_range" | "invalid_date") => {
            Some(ProviderError::InvalidInput {
                message: message.clone(),
            })
        }
        Some("not_found" | "no_snapshot") => Some(ProviderError::NotFound {
            message: message.clone(),
        }),
        Some("rate_limited") => Some(ProviderError::RateLimited { retry_after }),
        Some("internal_error") => Some(ProviderError::Server {
            status: status.as_u16(),
            message: message.clone(),
        }),
        _ => None,
    };
    Err(by_code.unwrap_or_else(|| match status.as_u16() {
        400 => ProviderError::InvalidInput { message },
        401 => ProviderError::Unauthorized { message },
        403 => ProviderError::Forbidden { message },
        404 => ProviderError::NotFound { message },
        429 => ProviderError::RateLimited { retry_after },
        _ => fallback_status_error(status, message),
    }))
}

/// OpenIPApi lookup object -> record. `as_name` is the AS organisation
/// ("Cloudflare, Inc."), so it fills `org`; OpenIPApi has no short AS handle.
pub fn to_record(result: LookupResult) -> IntelRecord {
    let network = result.network.unwrap_or_default();
    let asn = AsnInfo {
        number: network.asn.as_ref().and_then(AsNumber::value),
        org: text(network.as_name).or_else(|| text(network.organization)),
        domain: text(network.as_domain),
        kind: lower(network.connection_type),
        ..AsnInfo::default()
    };
    let geo = result.geo.map(|g| GeoInfo {
        country_code: text(g.country_code),
        country_name: text(g.country),
        region: text(g.region),
        city: text(g.city),
        latitude: g.latitude,
        longitude: g.longitude,
        timezone: text(g.timezone),
    });
    let threat = result.threat.map(|t| ThreatInfo {
        score: t.threat_score.and_then(score_0_100),
        is_tor: t.is_tor,
        is_proxy: t.is_proxy,
        is_vpn: t.is_vpn,
        is_hosting: t.is_hosting,
        is_relay: t.is_relay,
        known_bot: t.bot_type.as_ref().map(|b| b.is_some()),
        categories: t
            .threat_categories
            .into_iter()
            .filter_map(|c| text(Some(c)))
            .collect(),
        ..ThreatInfo::default()
    });
    IntelRecord {
        asn: (asn != AsnInfo::default()).then_some(asn),
        geo: geo.filter(|g| *g != GeoInfo::default()),
        threat: threat.filter(|t| *t != ThreatInfo::default()),
    }
}

impl Provider for OpenIpApiClient {
    fn last_rate_info(&self) -> Option<RateInfo> {
        self.http.last_rate_info()
    }

    fn name(&self) -> &str {
        NAME
    }

    fn max_batch(&self) -> usize {
        self.plan.max_batch()
    }

    fn lookup<'a>(
        &'a self,
        ips: &'a [IpAddr],
    ) -> ProviderFuture<'a, Result<Vec<Answer>, ProviderError>> {
        Box::pin(async move {
            match ips {
                [ip] => Ok(vec![self.lookup_ip(*ip).await?]),
                _ => self.lookup_batch(ips).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::providers::examples;
    use reqwest::header::HeaderMap;

    /// "GET /v1/lookup/{ip}" example response, verbatim.
    const LOOKUP_EXAMPLE: &str = examples::OPENIPAPI_LOOKUP_185;

    #[test]
    fn example_lookup() {
        let result: LookupResult = serde_json::from_str(LOOKUP_EXAMPLE).unwrap();
        assert_eq!(
            result.abuse.as_ref().unwrap().contact_email.as_deref(),
            Some("abuse@f3netze.de")
        );
        let record = to_record(result);
        let asn = record.asn.unwrap();
        assert_eq!(asn.number, Some(205100));
        assert_eq!(asn.name, None);
        assert_eq!(asn.org.as_deref(), Some("F3 Netze e.V."));
        assert_eq!(asn.domain.as_deref(), Some("f3netze.de"));
        assert_eq!(asn.kind.as_deref(), Some("datacenter"));
        let geo = record.geo.unwrap();
        assert_eq!(geo.country_code.as_deref(), Some("DE"));
        assert_eq!(geo.country_name.as_deref(), Some("Germany"));
        assert_eq!(geo.region.as_deref(), Some("Hessen"));
        assert_eq!(geo.city.as_deref(), Some("Frankfurt am Main"));
        assert_eq!(geo.latitude, Some(50.1109));
        assert_eq!(geo.longitude, Some(8.6821));
        assert_eq!(geo.timezone.as_deref(), Some("Europe/Berlin"));
        let threat = record.threat.unwrap();
        assert_eq!(threat.score, Some(85));
        assert_eq!(threat.is_vpn, Some(true));
        assert_eq!(threat.is_proxy, Some(false));
        assert_eq!(threat.is_tor, Some(true));
        assert_eq!(threat.is_relay, Some(false));
        assert_eq!(threat.is_hosting, Some(true));
        assert_eq!(threat.known_bot, Some(false));
        assert_eq!(
            threat.categories.iter().map(|c| &**c).collect::<Vec<_>>(),
            ["tor_exit_node", "known_abuser"]
        );
    }

    /// "Verified Googlebot example" threat block.
    #[test]
    fn example_verified_googlebot() {
        let json = r#"{"ip":"66.249.66.1","threat": {
  "is_vpn": false,
  "is_proxy": false,
  "is_tor": false,
  "threat_score": 0,
  "bot_type": "googlebot"
}}"#;
        let threat = to_record(serde_json::from_str(json).unwrap())
            .threat
            .unwrap();
        assert_eq!(threat.known_bot, Some(true));
        assert_eq!(threat.score, Some(0));
        assert_eq!(threat.is_relay, None);
    }

    /// "Sanctioned country example" geo block (its elided fields left out).
    #[test]
    fn example_sanctioned_country() {
        let json = r#"{"geo": {
  "country_code": "IR",
  "country": "Iran",
  "is_sanctioned": true,
  "sanction_lists": ["OFAC", "EU", "UN"]
}}"#;
        let result: LookupResult = serde_json::from_str(json).unwrap();
        assert_eq!(
            result.geo.as_ref().unwrap().sanction_lists,
            ["OFAC", "EU", "UN"]
        );
        let geo = to_record(result).geo.unwrap();
        assert_eq!(geo.country_code.as_deref(), Some("IR"));
        assert_eq!(geo.country_name.as_deref(), Some("Iran"));
    }

    /// "POST /v1/lookup/batch" response shape: results in request order.
    #[test]
    fn example_batch_in_order() {
        let full: serde_json::Value = serde_json::from_str(LOOKUP_EXAMPLE).unwrap();
        let json = serde_json::json!({
            "results": [full, {"ip": "8.8.8.8", "network": {"asn": 15169}}, {"ip": "1.1.1.1"}],
            "count": 3
        });
        let batch: Batch = serde_json::from_value(json).unwrap();
        let ips: Vec<IpAddr> = ["1.1.1.1", "185.220.101.45", "8.8.8.8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let answers = align(&ips, batch.results).unwrap();
        assert_eq!(answers[0], Answer::NoData);
        let Answer::Found(r) = &answers[1] else {
            panic!("{answers:?}")
        };
        assert_eq!(r.asn.as_ref().unwrap().number, Some(205100));
        let Answer::Found(r) = &answers[2] else {
            panic!("{answers:?}")
        };
        assert_eq!(r.asn.as_ref().unwrap().number, Some(15169));
    }

    #[test]
    fn batch_without_addresses_aligns_by_position_or_fails() {
        let ips: Vec<IpAddr> = vec!["8.8.8.8".parse().unwrap(), "1.1.1.1".parse().unwrap()];
        let results = vec![
            LookupResult {
                network: Some(Network {
                    asn: Some(AsNumber::Number(1)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            LookupResult::default(),
        ];
        let answers = align(&ips, results.clone()).unwrap();
        assert!(
            matches!(&answers[0], Answer::Found(r) if r.asn.as_ref().unwrap().number == Some(1))
        );
        assert_eq!(answers[1], Answer::NoData);
        assert!(matches!(
            align(&ips[..1], results),
            Err(ProviderError::Decode { .. })
        ));
    }

    /// "GET /v1/asn/{asn}" example response.
    #[test]
    fn example_asn() {
        let json = examples::OPENIPAPI_ASN_13335;
        let d: AsnDetails = serde_json::from_str(json).unwrap();
        assert_eq!(d.asn.unwrap().value(), Some(13335));
        assert_eq!(d.as_name.as_deref(), Some("Cloudflare, Inc."));
        assert_eq!(d.country_code.as_deref(), Some("US"));
        assert_eq!(d.ip_ranges_count, Some(1284));
        assert_eq!(d.total_ips, Some(2359296));
    }

    /// "GET /v1/fraud/{ip}" example response.
    #[test]
    fn example_fraud() {
        let json = examples::OPENIPAPI_FRAUD_185;
        let f: FraudReport = serde_json::from_str(json).unwrap();
        assert_eq!(f.fraud_score, Some(92.0));
        assert_eq!(f.risk_level.as_deref(), Some("critical"));
        assert_eq!(f.recommendation.as_deref(), Some("block"));
        let s = f.signals.unwrap();
        assert_eq!(
            (s.is_vpn, s.is_tor, s.is_known_attacker, s.high_risk_country),
            (Some(true), Some(true), Some(true), Some(false))
        );
    }

    #[test]
    fn plan_batch_limits() {
        assert_eq!(Plan::Free.max_batch(), 1);
        assert_eq!(Plan::Starter.max_batch(), 100);
        assert_eq!(Plan::Pro.max_batch(), 500);
        assert_eq!(Plan::Business.max_batch(), 1_000);
        assert_eq!(Plan::Enterprise.max_batch(), 5_000);
    }

    fn raw(status: u16, body: &str) -> RawResponse {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "12".parse().unwrap());
        RawResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body.to_owned()),
        }
    }

    fn err(status: u16, code: &str) -> ProviderError {
        let key = Secret::new("oip_secret_key_1").unwrap();
        let body = format!(r#"{{"error":"{code}","message":"text for {code}","status":{status}}}"#);
        status_error(&raw(status, &body), &key).unwrap_err()
    }

    #[test]
    fn every_documented_error_code_maps() {
        use ProviderError as E;
        assert!(
            matches!(err(401, "invalid_api_key"), E::Unauthorized { message } if message == "invalid_api_key: text for invalid_api_key")
        );
        assert!(
            matches!(err(429, "limit_exceeded"), E::QuotaExceeded { retry_after: Some(d), .. } if d.as_secs() == 12)
        );
        assert!(matches!(err(403, "plan_required"), E::PlanRequired { .. }));
        assert!(matches!(err(400, "invalid_ip"), E::InvalidInput { .. }));
        assert!(matches!(err(404, "not_found"), E::NotFound { .. }));
        assert!(matches!(
            err(400, "date_out_of_range"),
            E::InvalidInput { .. }
        ));
        assert!(matches!(err(400, "invalid_date"), E::InvalidInput { .. }));
        assert!(matches!(
            err(403, "plan_upgrade_required"),
            E::PlanRequired { .. }
        ));
        assert!(
            matches!(err(429, "rate_limited"), E::RateLimited { retry_after: Some(d) } if d.as_secs() == 12)
        );
        assert!(matches!(
            err(500, "internal_error"),
            E::Server { status: 500, .. }
        ));
        // Historical shape: code in `code`, text in `error`.
        let key = Secret::new("oip_secret_key_1").unwrap();
        let e = status_error(&raw(404, r#"{"error": "No historical snapshot available for this IP on 2026-01-15","code": "no_snapshot"}"#), &key).unwrap_err();
        assert!(
            matches!(&e, E::NotFound { message } if message.starts_with("no_snapshot: No historical")),
            "{e}"
        );
        // Unknown code or no JSON: by status.
        assert!(matches!(err(403, "something_new"), E::Forbidden { .. }));
        assert!(matches!(
            status_error(&raw(502, "<html>"), &key).unwrap_err(),
            E::Server { status: 502, .. }
        ));
        assert!(matches!(
            status_error(&raw(429, ""), &key).unwrap_err(),
            E::RateLimited { .. }
        ));
        assert!(status_error(&raw(200, "{}"), &key).is_ok());
    }

    #[test]
    fn fields_are_checked() {
        let settings = HttpSettings::new("http://127.0.0.1:1", Secret::new("k").unwrap()).unwrap();
        let c = OpenIpApiClient::new(&settings, Plan::Pro).unwrap();
        let c = c.with_fields(&["geo", "threat"]).unwrap();
        assert_eq!(c.fields.as_deref(), Some("geo,threat"));
        assert!(matches!(
            c.with_fields(&["everything"]),
            Err(ProviderError::Config { .. })
        ));
    }
}
