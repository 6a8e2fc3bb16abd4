//! IPTrust client: `GET /ip/{ip}`, one address per call.
//!
//! Contract (`iptrust-api.txt`): key in `X-API-Key`; 200 with an object whose
//! fields depend on the plan (Essential / Plus / Premium), 400 invalid IP, 401,
//! 403, 429, 500. `is_bogon: true` is `NoData`. `asn.number` is `"AS8075"` and
//! `asn.risk` is 0.0-1.0; the record gets 8075 and a 0-100 score.

use std::net::IpAddr;

use reqwest::header::HeaderName;
use serde::Deserialize;

use super::http::{
    self, fraction_to_score, lower, text, AsNumber, HttpClient, HttpSettings, RateInfo, RawResponse,
};
use super::{Answer, ProviderError};
use crate::lookup::record::{AsnInfo, GeoInfo, IntelRecord, ThreatInfo};
use crate::secret::Secret;

/// Name in config, metrics and logs.
pub const NAME: &str = "iptrust";

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The IPTrust client.
pub struct IpTrustClient {
    http: HttpClient,
}

/// The 200 body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IpTrustAnswer {
    pub ip: Option<String>,
    pub is_bogon: Option<bool>,
    pub asn: Option<Asn>,
    pub location: Option<Location>,
    pub company: Option<Company>,
    pub known_bot: Option<KnownBot>,
    pub hosting: Option<Detected>,
    pub abuse_contact: Option<AbuseContact>,
    pub tor_exit_node: Option<Detected>,
    pub privacy_relay: Option<Detected>,
    pub proxy: Option<Detected>,
    pub vpn: Option<Detected>,
}

/// `asn`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Asn {
    pub number: Option<AsNumber>,
    pub name: Option<String>,
    pub company: Option<String>,
    pub country: Option<String>,
    pub route: Option<String>,
    pub rir: Option<String>,
    pub domain: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub description: Option<String>,
    pub risk: Option<f64>,
    pub risk_label: Option<String>,
    #[serde(default)]
    pub risk_types: Vec<String>,
}

/// `location`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Location {
    pub city: Option<String>,
    pub state: Option<String>,
    pub country: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub meta: Option<LocationMeta>,
}

/// `location.meta` (the fields ipenrich reads; the rest are ignored).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LocationMeta {
    pub country_iso2: Option<String>,
    pub country_iso3: Option<String>,
}

/// `company`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Company {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub domain: Option<String>,
    pub description: Option<String>,
}

/// `known_bot`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct KnownBot {
    pub detected: Option<bool>,
    pub bot_type: Option<String>,
    pub name: Option<String>,
}

/// `hosting`, `tor_exit_node`, `privacy_relay`, `proxy`, `vpn`: a `detected` flag
/// and provider-specific extras.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Detected {
    pub detected: Option<bool>,
    pub name: Option<String>,
    pub domain: Option<String>,
    pub provider: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub last_detected: Option<String>,
}

/// `abuse_contact`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AbuseContact {
    pub address: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
}

impl IpTrustClient {
    /// A client for `settings.base_url` (production: `https://api.iptrust.co`).
    pub fn new(settings: &HttpSettings) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpClient::new(NAME, settings)?,
        })
    }

    /// Rate-limit headers of the latest response.
    pub fn last_rate_info(&self) -> Option<RateInfo> {
        self.http.last_rate_info()
    }

    /// `GET /ip/{ip}` as the provider sends it.
    pub async fn lookup_raw(&self, ip: IpAddr) -> Result<IpTrustAnswer, ProviderError> {
        let url = self.http.url(&["ip", &ip.to_string()]);
        let request = self.http.with_key_header(self.http.get(url), API_KEY, "")?;
        let response = self.http.send(request).await?;
        if let Err(error) = status_error(&response, self.http.key()) {
            tracing::debug!(provider = NAME, status = response.status.as_u16(), %error, "provider refused");
            return Err(error);
        }
        response.json(self.http.key())
    }

    /// `GET /ip/{ip}`, normalised.
    pub async fn lookup_ip(&self, ip: IpAddr) -> Result<Answer, ProviderError> {
        Ok(to_answer(self.lookup_raw(ip).await?))
    }
}

/// 429 is "exceeded your plan's request quota or rate limit": the two are not told
/// apart, so it is a rate limit honouring Retry-After when sent.
fn status_error(response: &RawResponse, key: &Secret) -> Result<(), ProviderError> {
    http::status_error(
        response,
        key,
        &[(403, |message| ProviderError::Forbidden { message })],
    )
}

/// IPTrust answer -> `NoData` for bogons, else the record.
pub fn to_answer(answer: IpTrustAnswer) -> Answer {
    if answer.is_bogon == Some(true) {
        return Answer::NoData;
    }
    let record = to_record(answer);
    if record.is_empty() {
        Answer::NoData
    } else {
        Answer::Found(record)
    }
}

/// IPTrust answer -> record. `company` (who uses this address) is not the AS
/// holder and is not mapped; `asn.company` is.
pub fn to_record(answer: IpTrustAnswer) -> IntelRecord {
    let a = answer.asn.unwrap_or_default();
    let asn = AsnInfo {
        number: a.number.as_ref().and_then(AsNumber::value),
        name: text(a.name),
        org: text(a.company),
        country: text(a.country.map(|c| c.to_ascii_uppercase())),
        domain: text(a.domain),
        kind: lower(a.kind),
        route: text(a.route),
        rir: lower(a.rir),
    };
    let geo = answer.location.map(|l| GeoInfo {
        country_code: text(l.meta.and_then(|m| m.country_iso2)),
        country_name: text(l.country),
        region: text(l.state),
        city: text(l.city),
        latitude: l.latitude,
        longitude: l.longitude,
        timezone: None,
    });
    let flag = |d: &Option<Detected>| d.as_ref().and_then(|d| d.detected);
    let threat = ThreatInfo {
        score: a.risk.and_then(fraction_to_score),
        level: lower(a.risk_label),
        is_tor: flag(&answer.tor_exit_node),
        is_proxy: flag(&answer.proxy),
        is_vpn: flag(&answer.vpn),
        is_hosting: flag(&answer.hosting),
        is_relay: flag(&answer.privacy_relay),
        known_bot: answer.known_bot.and_then(|b| b.detected),
        categories: a
            .risk_types
            .into_iter()
            .filter_map(|t| text(Some(t)))
            .collect(),
        blacklists: Vec::new(),
    };
    IntelRecord {
        asn: (asn != AsnInfo::default()).then_some(asn),
        geo: geo.filter(|g| *g != GeoInfo::default()),
        threat: (threat != ThreatInfo::default()).then_some(threat),
    }
}

super::single_address_provider!(IpTrustClient);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::providers::examples;
    use bytes::Bytes;
    use reqwest::header::HeaderMap;
    use reqwest::StatusCode;

    /// The example: "Example Response", verbatim.
    #[test]
    fn example_response() {
        let answer: IpTrustAnswer = serde_json::from_str(examples::IPTRUST_LOOKUP_74).unwrap();
        let Answer::Found(record) = to_answer(answer) else {
            panic!("no data")
        };
        let asn = record.asn.unwrap();
        assert_eq!(asn.number, Some(8075));
        assert_eq!(asn.name.as_deref(), Some("MICROSOFT-CORP-MSN-AS-BLOCK"));
        assert_eq!(asn.org.as_deref(), Some("Microsoft Corporation"));
        assert_eq!(asn.country.as_deref(), Some("US"));
        assert_eq!(asn.route.as_deref(), Some("74.144.0.0/12"));
        assert_eq!(asn.rir.as_deref(), Some("arin"));
        assert_eq!(asn.domain.as_deref(), Some("www.microsoft.com"));
        assert_eq!(asn.kind.as_deref(), Some("hosting"));
        let geo = record.geo.unwrap();
        assert_eq!(geo.country_code.as_deref(), Some("ES"));
        assert_eq!(geo.country_name.as_deref(), Some("Spain"));
        assert_eq!(geo.region.as_deref(), Some("Barcelona"));
        assert_eq!(geo.city.as_deref(), Some("Barcelona"));
        assert_eq!(geo.latitude, Some(41.389));
        assert_eq!(geo.longitude, Some(2.159));
        let threat = record.threat.unwrap();
        assert_eq!(threat.score, Some(90));
        assert_eq!(threat.level.as_deref(), Some("very_high"));
        assert_eq!(
            threat.categories.iter().map(|c| &**c).collect::<Vec<_>>(),
            ["request_frequency", "repeated_abuse"]
        );
        assert_eq!(threat.is_tor, Some(true));
        assert_eq!(threat.is_proxy, Some(true));
        assert_eq!(threat.is_vpn, Some(true));
        assert_eq!(threat.is_hosting, Some(true));
        assert_eq!(threat.is_relay, Some(true));
        assert_eq!(threat.known_bot, Some(true));
    }

    /// An Essential-plan answer: no risk, so no threat block.
    #[test]
    fn essential_plan_has_no_threat() {
        let json = r#"{"ip":"9.9.9.9","is_bogon":false,"asn":{"number":"AS19281","name":"QUAD9-AS-1","company":"Quad9","country":"US","route":"9.9.9.0/24","rir":"ARIN"}}"#;
        let Answer::Found(record) = to_answer(serde_json::from_str(json).unwrap()) else {
            panic!()
        };
        assert_eq!(record.asn.unwrap().number, Some(19281));
        assert!(record.threat.is_none());
        assert!(record.geo.is_none());
    }

    #[test]
    fn bogon_is_no_data() {
        let json = r#"{"ip":"10.0.0.1","is_bogon":true}"#;
        assert_eq!(
            to_answer(serde_json::from_str(json).unwrap()),
            Answer::NoData
        );
    }

    #[test]
    fn documented_statuses_map() {
        let key = Secret::new("iptrust-secret").unwrap();
        let raw = |status: u16| RawResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(br#"{"message":"m"}"#),
        };
        use ProviderError as E;
        assert!(status_error(&raw(200), &key).is_ok());
        assert!(matches!(
            status_error(&raw(400), &key),
            Err(E::InvalidInput { .. })
        ));
        assert!(matches!(
            status_error(&raw(401), &key),
            Err(E::Unauthorized { .. })
        ));
        assert!(matches!(
            status_error(&raw(403), &key),
            Err(E::Forbidden { .. })
        ));
        assert!(matches!(
            status_error(&raw(429), &key),
            Err(E::RateLimited { retry_after: None })
        ));
        assert!(matches!(
            status_error(&raw(500), &key),
            Err(E::Server { status: 500, .. })
        ));
    }
}
