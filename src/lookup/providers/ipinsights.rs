//! ipinsights.io client: IP, ASN and CIDR lookups, bulk lookups, and reports.
//!
//! Contract (`ipinsights-api.txt`): key in `X-API-Key`; `GET /api/v1/lookup?ip=`
//! (also `?asn=` and `?cidr=`), `POST /api/v1/bulk-lookup` with up to 100 IPs,
//! `POST /api/v1/report` (201). Answers come in a `{"success", "data"}` envelope.
//! Statuses: 400 invalid input (for a report also "same IP within 15 minutes"),
//! 401 bad key, 422 private/reserved IP, 429 rate limit, 500 server error. A 422 on
//! a lookup is an answer ("nothing on a private address"), on a report an error.
//! `as_number` comes as `"AS15169"` and is turned into 15169.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use reqwest::header::HeaderName;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::http::{
    self, body_message, lower, score_0_100, text, AsNumber, HttpClient, HttpSettings, RateInfo,
    RawResponse,
};
use super::{Answer, Provider, ProviderError, ProviderFuture};
pub use crate::config::{ReportCategory, ReportSource, MAX_REPORT_CATEGORIES, MAX_REPORT_COMMENT};
use crate::lookup::record::{AsnInfo, GeoInfo, IntelRecord, ThreatInfo};

/// Name in config, metrics and logs.
pub const NAME: &str = "ipinsights";
/// Documented bulk limit: "Submit up to 100 IPs in a single call".
pub const MAX_BULK: usize = 100;

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The ipinsights.io client.
pub struct IpInsightsClient {
    http: HttpClient,
}

/// The `data` object of `GET /api/v1/lookup?ip=` (and of each bulk entry).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IpData {
    pub ip: Option<String>,
    pub ip_version: Option<u8>,
    pub country_code: Option<String>,
    pub country_name: Option<String>,
    pub region_name: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub timezone: Option<String>,
    pub isp: Option<String>,
    pub org: Option<String>,
    pub as_number: Option<AsNumber>,
    pub as_name: Option<String>,
    pub is_tor: Option<bool>,
    pub is_proxy: Option<bool>,
    pub is_datacenter: Option<bool>,
    #[serde(default)]
    pub blacklists: Vec<BlacklistEntry>,
    pub threat_assessment: Option<ThreatAssessment>,
}

/// One entry of `blacklists`: documented as (source, category, listed_at); a bare
/// string is accepted as the source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum BlacklistEntry {
    Entry {
        source: Option<String>,
        category: Option<String>,
        listed_at: Option<String>,
    },
    Name(String),
}

/// `threat_assessment`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ThreatAssessment {
    pub score: Option<f64>,
    pub level: Option<String>,
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// The `data` object of `GET /api/v1/lookup?asn=`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AsnSummary {
    pub as_number: Option<AsNumber>,
    pub as_name: Option<String>,
    pub isp: Option<String>,
    pub org: Option<String>,
    pub total_ips: Option<u64>,
    pub blacklisted_ips: Option<u64>,
    pub risk_breakdown: Option<RiskBreakdown>,
    pub risk_score: Option<f64>,
    pub risk_level: Option<String>,
    #[serde(default)]
    pub ips: Vec<KnownIp>,
}

/// The `data` object of `GET /api/v1/lookup?cidr=`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CidrSummary {
    pub cidr: Option<String>,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub total_ips_in_db: Option<u64>,
    pub blacklisted_ips: Option<u64>,
    #[serde(default)]
    pub autonomous_systems: Vec<AsRef>,
    pub risk_breakdown: Option<RiskBreakdown>,
    pub risk_score: Option<f64>,
    pub risk_level: Option<String>,
    #[serde(default)]
    pub ips: Vec<KnownIp>,
}

/// Counts per risk level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RiskBreakdown {
    pub low: Option<u64>,
    pub medium: Option<u64>,
    pub high: Option<u64>,
    pub critical: Option<u64>,
}

/// An AS named in a CIDR summary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AsRef {
    pub as_number: Option<AsNumber>,
    pub as_name: Option<String>,
}

/// A known address in an ASN or CIDR summary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KnownIp {
    pub ip: String,
    pub threat_score: Option<f64>,
    pub level: Option<String>,
    pub is_blacklisted: Option<bool>,
    pub as_number: Option<AsNumber>,
    pub country_code: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Envelope<T> {
    success: Option<bool>,
    data: Option<T>,
}

/// Body of `POST /api/v1/report`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRequest {
    /// Public address of the attacker.
    pub ip: IpAddr,
    /// One to five categories.
    pub categories: Vec<ReportCategory>,
    /// Free text, at most 1,024 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Which integration reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<ReportSource>,
}

impl ReportRequest {
    /// Checks the documented limits that need no server: 1-5 distinct categories,
    /// comment length. The server judges the address (422 for private ones).
    pub fn validate(&self) -> Result<(), ProviderError> {
        let mut distinct = self.categories.clone();
        distinct.sort_by_key(|c| *c as u8);
        distinct.dedup();
        if distinct.is_empty() || distinct.len() > MAX_REPORT_CATEGORIES {
            return Err(ProviderError::InvalidInput {
                message: format!(
                    "a report needs 1 to {MAX_REPORT_CATEGORIES} categories, got {}",
                    distinct.len()
                ),
            });
        }
        if let Some(comment) = &self.comment {
            let chars = comment.chars().count();
            if chars > MAX_REPORT_COMMENT {
                return Err(ProviderError::InvalidInput {
                    message: format!(
                        "report comment has {chars} characters, at most {MAX_REPORT_COMMENT} allowed"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The 201 answer to a report.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReportReceipt {
    pub report_id: u64,
    pub weight: Option<f64>,
    pub corroborated: Option<bool>,
    pub reputation: Option<f64>,
    #[serde(default)]
    pub categories: Vec<String>,
    pub reported_at: Option<String>,
    pub message: Option<String>,
}

impl IpInsightsClient {
    /// A client for `settings.base_url` (production: `https://ipinsights.io`).
    pub fn new(settings: &HttpSettings) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpClient::new(NAME, settings)?,
        })
    }

    /// Rate-limit headers of the latest response.
    pub fn last_rate_info(&self) -> Option<RateInfo> {
        self.http.last_rate_info()
    }

    async fn get_lookup(&self, param: &str, value: &str) -> Result<RawResponse, ProviderError> {
        let mut url = self.http.url(&["api", "v1", "lookup"]);
        url.query_pairs_mut().append_pair(param, value);
        let request = self.http.with_key_header(self.http.get(url), API_KEY, "")?;
        self.http.send(request).await
    }

    /// `GET /api/v1/lookup?ip=`: the normalised answer for one address.
    pub async fn lookup_ip(&self, ip: IpAddr) -> Result<Answer, ProviderError> {
        let response = self.get_lookup("ip", &ip.to_string()).await?;
        if response.status == StatusCode::UNPROCESSABLE_ENTITY {
            // Documented: "IP address is private or reserved" - nothing to know.
            return Ok(Answer::NoData);
        }
        self.check(&response, Endpoint::Lookup)?;
        let envelope: Envelope<IpData> = response.json(self.http.key())?;
        Ok(match envelope.data {
            Some(data) => answer(to_record(data)),
            None => Answer::NoData,
        })
    }

    /// `GET /api/v1/lookup?asn=`; `asn` like `"AS15169"` or `"15169"`.
    pub async fn lookup_asn(&self, asn: &str) -> Result<AsnSummary, ProviderError> {
        let response = self.get_lookup("asn", asn).await?;
        self.check(&response, Endpoint::Lookup)?;
        self.data(response)
    }

    /// `GET /api/v1/lookup?cidr=`; the documented prefix range is /8 to /32.
    pub async fn lookup_cidr(&self, cidr: Ipv4Net) -> Result<CidrSummary, ProviderError> {
        if cidr.prefix_len() < 8 {
            return Err(ProviderError::InvalidInput {
                message: format!("cidr prefix /{} is shorter than /8", cidr.prefix_len()),
            });
        }
        let response = self.get_lookup("cidr", &cidr.to_string()).await?;
        self.check(&response, Endpoint::Lookup)?;
        self.data(response)
    }

    /// `POST /api/v1/bulk-lookup` for up to 100 addresses, answers in input order.
    ///
    /// The document shows no bulk response; entries are matched to the input by
    /// their `ip` field (an address without an entry is `NoData`), from a `data`
    /// array, `data.results` or `results`.
    pub async fn bulk_lookup(&self, ips: &[IpAddr]) -> Result<Vec<Answer>, ProviderError> {
        if ips.len() > MAX_BULK {
            return Err(ProviderError::BatchTooLarge {
                len: ips.len(),
                max: MAX_BULK,
            });
        }
        if ips.is_empty() {
            return Ok(Vec::new());
        }
        let body =
            serde_json::json!({ "ips": ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>() });
        let url = self.http.url(&["api", "v1", "bulk-lookup"]);
        let request = self
            .http
            .with_key_header(self.http.post(url).json(&body), API_KEY, "")?;
        let response = self.http.send(request).await?;
        self.check(&response, Endpoint::Lookup)?;
        let value: serde_json::Value = response.json(self.http.key())?;
        let entries = bulk_entries(&value).ok_or_else(|| ProviderError::Decode {
            reason: "bulk answer has no result array".to_owned(),
        })?;
        let mut by_ip: HashMap<IpAddr, Answer> = HashMap::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.get("data").filter(|d| d.is_object()).unwrap_or(entry);
            let data: IpData =
                serde_json::from_value(entry.clone()).map_err(|e| ProviderError::Decode {
                    reason: self.http.redact(&e.to_string()),
                })?;
            let Some(ip) = data.ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()) else {
                continue;
            };
            by_ip.insert(ip, answer(to_record(data)));
        }
        Ok(ips
            .iter()
            .map(|ip| by_ip.get(ip).cloned().unwrap_or(Answer::NoData))
            .collect())
    }

    /// `POST /api/v1/report`. 400 is a duplicate (same IP within 15 minutes) when
    /// the message says so, else invalid input; 422 a private/reserved address.
    pub async fn report(&self, report: &ReportRequest) -> Result<ReportReceipt, ProviderError> {
        report.validate()?;
        let url = self.http.url(&["api", "v1", "report"]);
        let request = self
            .http
            .with_key_header(self.http.post(url).json(report), API_KEY, "")?;
        let response = self.http.send(request).await?;
        self.check(&response, Endpoint::Report)?;
        let receipt: ReportReceipt = response.json(self.http.key())?;
        tracing::debug!(
            provider = NAME,
            report_id = receipt.report_id,
            "report accepted"
        );
        Ok(receipt)
    }

    fn data<T: serde::de::DeserializeOwned>(
        &self,
        response: RawResponse,
    ) -> Result<T, ProviderError> {
        let envelope: Envelope<T> = response.json(self.http.key())?;
        if envelope.success == Some(false) {
            return Err(ProviderError::Rejected {
                message: body_message(&response.body, self.http.key()),
            });
        }
        envelope.data.ok_or_else(|| ProviderError::Decode {
            reason: "answer has no data object".to_owned(),
        })
    }

    fn check(&self, response: &RawResponse, endpoint: Endpoint) -> Result<(), ProviderError> {
        let result = status_error(response, endpoint, self.http.key());
        if let Err(error) = &result {
            tracing::debug!(provider = NAME, status = response.status.as_u16(), %error, "provider refused");
        }
        result
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Lookup,
    Report,
}

/// Maps the documented statuses; `Ok` for 2xx.
fn status_error(
    response: &RawResponse,
    endpoint: Endpoint,
    key: &crate::secret::Secret,
) -> Result<(), ProviderError> {
    if response.status.as_u16() == 400 && endpoint == Endpoint::Report {
        let message = body_message(&response.body, key);
        if is_duplicate_message(&message) {
            return Err(ProviderError::Duplicate { message });
        }
    }
    http::status_error(
        response,
        key,
        &[(422, |message| ProviderError::Unprocessable { message })],
    )
}

/// The document says only "rate-limited at the application layer (HTTP 400)" for
/// a repeat within 15 minutes; the message is what tells it from a malformed body.
fn is_duplicate_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "already",
        "duplicate",
        "15 min",
        "recently",
        "too soon",
        "repeat",
    ]
    .iter()
    .any(|w| m.contains(w))
}

fn bulk_entries(value: &serde_json::Value) -> Option<&Vec<serde_json::Value>> {
    value
        .get("data")
        .and_then(|d| d.as_array().or_else(|| d.get("results")?.as_array()))
        .or_else(|| value.get("results")?.as_array())
}

fn answer(record: IntelRecord) -> Answer {
    if record.is_empty() {
        Answer::NoData
    } else {
        Answer::Found(record)
    }
}

/// ipinsights `data` -> record. `isp` is the AS holder ("Google LLC"), `org` the
/// network's own name ("Google Public DNS"): the record's `org` takes `isp` first.
pub fn to_record(data: IpData) -> IntelRecord {
    let number = data.as_number.as_ref().and_then(AsNumber::value);
    let asn = AsnInfo {
        number,
        name: text(data.as_name),
        org: text(data.isp).or_else(|| text(data.org)),
        ..AsnInfo::default()
    };
    let geo = GeoInfo {
        country_code: text(data.country_code),
        country_name: text(data.country_name),
        region: text(data.region_name),
        city: text(data.city),
        latitude: data.latitude,
        longitude: data.longitude,
        timezone: text(data.timezone),
    };
    let mut blacklists: Vec<Arc<str>> = Vec::new();
    let mut categories: Vec<Arc<str>> = Vec::new();
    for entry in data.blacklists {
        let (source, category) = match entry {
            BlacklistEntry::Entry {
                source, category, ..
            } => (source, category),
            BlacklistEntry::Name(name) => (Some(name), None),
        };
        if let Some(s) = text(source) {
            if !blacklists.contains(&s) {
                blacklists.push(s);
            }
        }
        if let Some(c) = lower(category) {
            if !categories.contains(&c) {
                categories.push(c);
            }
        }
    }
    let assessment = data.threat_assessment.unwrap_or_default();
    let threat = ThreatInfo {
        score: assessment.score.and_then(score_0_100),
        level: lower(assessment.level),
        is_tor: data.is_tor,
        is_proxy: data.is_proxy,
        is_hosting: data.is_datacenter,
        categories,
        blacklists,
        ..ThreatInfo::default()
    };
    IntelRecord {
        asn: (asn != AsnInfo::default()).then_some(asn),
        geo: (geo != GeoInfo::default()).then_some(geo),
        threat: (threat != ThreatInfo::default()).then_some(threat),
    }
}

impl Provider for IpInsightsClient {
    fn last_rate_info(&self) -> Option<RateInfo> {
        self.http.last_rate_info()
    }

    fn name(&self) -> &str {
        NAME
    }

    fn max_batch(&self) -> usize {
        MAX_BULK
    }

    fn lookup<'a>(
        &'a self,
        ips: &'a [IpAddr],
    ) -> ProviderFuture<'a, Result<Vec<Answer>, ProviderError>> {
        Box::pin(async move {
            match ips {
                [ip] => Ok(vec![self.lookup_ip(*ip).await?]),
                _ => self.bulk_lookup(ips).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::providers::examples;
    use crate::secret::Secret;
    use reqwest::header::HeaderMap;

    fn data_of(json: &str) -> IpData {
        let envelope: Envelope<IpData> = serde_json::from_str(json).unwrap();
        envelope.data.unwrap()
    }

    /// "IP Lookup" example response, verbatim.
    #[test]
    fn example_ip_lookup() {
        let json = examples::IPINSIGHTS_LOOKUP_8888;
        let record = to_record(data_of(json));
        let asn = record.asn.unwrap();
        assert_eq!(asn.number, Some(15169));
        assert_eq!(asn.name.as_deref(), Some("GOOGLE"));
        assert_eq!(asn.org.as_deref(), Some("Google LLC"));
        let geo = record.geo.unwrap();
        assert_eq!(geo.country_code.as_deref(), Some("US"));
        assert_eq!(geo.country_name.as_deref(), Some("United States"));
        assert_eq!(geo.region.as_deref(), Some("California"));
        assert_eq!(geo.city.as_deref(), Some("Mountain View"));
        assert_eq!(geo.latitude, Some(37.4056));
        assert_eq!(geo.longitude, Some(-122.0775));
        let threat = record.threat.unwrap();
        assert_eq!(threat.score, Some(10));
        assert_eq!(threat.level.as_deref(), Some("low"));
        assert_eq!(threat.is_tor, Some(false));
        assert_eq!(threat.is_proxy, Some(false));
        assert_eq!(threat.is_hosting, Some(true));
        assert!(threat.blacklists.is_empty());
    }

    /// "AI Agent Assessment populated" example: only the AI block, so no record facts.
    #[test]
    fn example_ai_agent_assessment_is_no_data() {
        let json = examples::IPINSIGHTS_LOOKUP_AI;
        let data = data_of(json);
        assert_eq!(data.ip.as_deref(), Some("203.0.113.42"));
        assert_eq!(answer(to_record(data)), Answer::NoData);
    }

    /// "ASN Lookup" example response.
    #[test]
    fn example_asn_lookup() {
        let json = examples::IPINSIGHTS_ASN_15169;
        let envelope: Envelope<AsnSummary> = serde_json::from_str(json).unwrap();
        let s = envelope.data.unwrap();
        assert_eq!(s.as_number.unwrap().value(), Some(15169));
        assert_eq!(s.as_name.as_deref(), Some("GOOGLE"));
        assert_eq!(s.total_ips, Some(42));
        assert_eq!(s.blacklisted_ips, Some(3));
        assert_eq!(s.risk_breakdown.unwrap().critical, Some(1));
        assert_eq!(s.risk_score, Some(12.0));
        assert_eq!(s.ips.len(), 1);
        assert_eq!(s.ips[0].ip, "8.8.8.8");
        assert_eq!(s.ips[0].is_blacklisted, Some(false));
    }

    /// "CIDR Lookup" example response.
    #[test]
    fn example_cidr_lookup() {
        let json = examples::IPINSIGHTS_CIDR_8880;
        let envelope: Envelope<CidrSummary> = serde_json::from_str(json).unwrap();
        let s = envelope.data.unwrap();
        assert_eq!(s.cidr.as_deref(), Some("8.8.8.0/24"));
        assert_eq!(s.total_ips_in_db, Some(5));
        assert_eq!(
            s.autonomous_systems[0].as_number.as_ref().unwrap().value(),
            Some(15169)
        );
        assert_eq!(s.risk_breakdown.unwrap().high, Some(1));
        assert_eq!(s.ips[0].as_number.as_ref().unwrap().value(), Some(15169));
    }

    /// "Submit a Report" example request and the HTTP 201 example response.
    #[test]
    fn example_report_request_and_receipt() {
        let request = ReportRequest {
            ip: "203.0.113.42".parse().unwrap(),
            categories: vec![ReportCategory::SshBruteforce, ReportCategory::PortScan],
            comment: Some("10 failed SSH logins from this IP in 60s".to_owned()),
            source: Some(ReportSource::Manual),
        };
        let expected: serde_json::Value = serde_json::from_str(r#"{ "ip": "203.0.113.42", "categories": ["ssh_bruteforce","port_scan"], "comment": "10 failed SSH logins from this IP in 60s", "source": "manual" }"#).unwrap();
        assert_eq!(serde_json::to_value(&request).unwrap(), expected);
        request.validate().unwrap();

        let json = examples::IPINSIGHTS_REPORT;
        let receipt: ReportReceipt = serde_json::from_str(json).unwrap();
        assert_eq!(receipt.report_id, 18429);
        assert_eq!(receipt.weight, Some(1.0));
        assert_eq!(receipt.corroborated, Some(false));
        assert_eq!(receipt.reputation, Some(1.0));
        assert_eq!(receipt.categories, ["ssh_bruteforce", "port_scan"]);
    }

    #[test]
    fn category_and_source_names_match_the_document() {
        let cats = [
            ReportCategory::SshBruteforce,
            ReportCategory::RdpBruteforce,
            ReportCategory::WebBruteforce,
            ReportCategory::WebAttack,
            ReportCategory::SqlInjection,
            ReportCategory::Xss,
            ReportCategory::PortScan,
            ReportCategory::VulnerabilityScan,
            ReportCategory::ExploitAttempt,
            ReportCategory::CredentialStuffing,
            ReportCategory::Phishing,
            ReportCategory::Spam,
            ReportCategory::Malware,
            ReportCategory::Ddos,
            ReportCategory::Botnet,
            ReportCategory::C2,
            ReportCategory::TorAbuse,
            ReportCategory::OpenProxyAbuse,
            ReportCategory::Other,
        ];
        let names: Vec<String> = cats
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(names.join(", "), "ssh_bruteforce, rdp_bruteforce, web_bruteforce, web_attack, sql_injection, xss, port_scan, vulnerability_scan, exploit_attempt, credential_stuffing, phishing, spam, malware, ddos, botnet, c2, tor_abuse, open_proxy_abuse, other");
        let sources = [
            ReportSource::Wazuh,
            ReportSource::Graylog,
            ReportSource::Splunk,
            ReportSource::Sentinel,
            ReportSource::Crowdsec,
            ReportSource::Fail2ban,
            ReportSource::Suricata,
            ReportSource::Thehive,
            ReportSource::N8n,
            ReportSource::HomeAssistant,
            ReportSource::Manual,
        ];
        let names: Vec<String> = sources
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(names.join(", "), "wazuh, graylog, splunk, sentinel, crowdsec, fail2ban, suricata, thehive, n8n, home_assistant, manual");
    }

    #[test]
    fn report_validation_enforces_documented_limits() {
        let mut r = ReportRequest {
            ip: "203.0.113.42".parse().unwrap(),
            categories: vec![],
            comment: None,
            source: None,
        };
        assert!(matches!(
            r.validate(),
            Err(ProviderError::InvalidInput { .. })
        ));
        r.categories = vec![ReportCategory::Spam; 9];
        r.validate().unwrap(); // duplicates collapse to one
        r.categories = vec![
            ReportCategory::Spam,
            ReportCategory::Xss,
            ReportCategory::C2,
            ReportCategory::Ddos,
            ReportCategory::Botnet,
            ReportCategory::Other,
        ];
        assert!(matches!(
            r.validate(),
            Err(ProviderError::InvalidInput { .. })
        ));
        r.categories.pop();
        r.comment = Some("é".repeat(MAX_REPORT_COMMENT));
        r.validate().unwrap();
        r.comment = Some("x".repeat(MAX_REPORT_COMMENT + 1));
        assert!(matches!(
            r.validate(),
            Err(ProviderError::InvalidInput { .. })
        ));
    }

    #[test]
    fn bulk_entries_shapes() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"success":true,"data":[{"ip":"1.1.1.1"}]}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"success":true,"data":{"results":[{"ip":"1.1.1.1"}]}}"#)
                .unwrap();
        let c: serde_json::Value =
            serde_json::from_str(r#"{"results":[{"ip":"1.1.1.1"}]}"#).unwrap();
        for v in [a, b, c] {
            assert_eq!(bulk_entries(&v).unwrap().len(), 1);
        }
        assert!(bulk_entries(&serde_json::json!({"data": {}})).is_none());
    }

    fn raw(status: u16, body: &str, headers: &[(&str, &str)]) -> RawResponse {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        RawResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: bytes::Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn documented_statuses_map_to_distinct_errors() {
        let key = Secret::new("sim-ipinsights-key").unwrap();
        let err = |status, body: &str, endpoint| {
            status_error(&raw(status, body, &[("Retry-After", "30")]), endpoint, &key).unwrap_err()
        };
        assert!(status_error(&raw(201, "{}", &[]), Endpoint::Report, &key).is_ok());
        assert!(
            matches!(err(400, r#"{"success":false,"error":"Invalid IP address"}"#, Endpoint::Lookup), ProviderError::InvalidInput { message } if message == "Invalid IP address")
        );
        assert!(matches!(
            err(
                400,
                r#"{"success":false,"error":"This IP was already reported in the last 15 minutes"}"#,
                Endpoint::Report
            ),
            ProviderError::Duplicate { .. }
        ));
        assert!(matches!(
            err(
                400,
                r#"{"success":false,"error":"Invalid category"}"#,
                Endpoint::Report
            ),
            ProviderError::InvalidInput { .. }
        ));
        assert!(matches!(
            err(
                401,
                r#"{"success":false,"error":"Missing or invalid API key"}"#,
                Endpoint::Lookup
            ),
            ProviderError::Unauthorized { .. }
        ));
        assert!(matches!(
            err(
                422,
                r#"{"success":false,"error":"IP address is private or reserved"}"#,
                Endpoint::Report
            ),
            ProviderError::Unprocessable { .. }
        ));
        assert!(
            matches!(err(429, "", Endpoint::Lookup), ProviderError::RateLimited { retry_after: Some(d) } if d.as_secs() == 30)
        );
        assert!(matches!(
            err(500, "oops", Endpoint::Lookup),
            ProviderError::Server { status: 500, .. }
        ));
        assert!(matches!(
            err(418, "", Endpoint::Lookup),
            ProviderError::UnexpectedStatus { status: 418, .. }
        ));
    }
}
