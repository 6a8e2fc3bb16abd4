//! Cloudflare Radar client: AS details by IP, one address per call.
//!
//! Contract (`cloudflare-radar-asn-by-ip.txt`):
//! `GET /client/v4/radar/entities/asns/ip?ip=` with `Authorization: Bearer <token>`;
//! the answer is the Cloudflare envelope `{"result": {"asn": {...}}, "success": true}`
//! (failures: `"success": false` and `"errors": [{"code", "message"}]`). A 2xx
//! with `success: false` is [`ProviderError::Rejected`]; a 404 or an answer
//! without `result.asn` is `NoData`. `asn.asn` is a bare number; `source` is the RIR.

use std::net::IpAddr;

use reqwest::header::AUTHORIZATION;
use reqwest::Url;
use serde::Deserialize;

use super::http::{
    self, body_message, lower, text, HttpClient, HttpSettings, RateInfo, RawResponse,
};
use super::{Answer, ProviderError};
use crate::lookup::record::{AsnInfo, IntelRecord};
use crate::secret::Secret;

/// Name in config, metrics and logs.
pub const NAME: &str = "cloudflare";

/// The envelope.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Envelope {
    pub result: Option<RadarResult>,
    pub success: Option<bool>,
    #[serde(default)]
    pub errors: Vec<ApiMessage>,
}

/// One entry of `errors`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ApiMessage {
    pub code: Option<i64>,
    pub message: Option<String>,
}

/// `result`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RadarResult {
    pub asn: Option<RadarAsn>,
}

/// `result.asn`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RadarAsn {
    pub asn: Option<u32>,
    pub country: Option<String>,
    #[serde(rename = "countryName")]
    pub country_name: Option<String>,
    #[serde(rename = "estimatedUsers")]
    pub estimated_users: Option<EstimatedUsers>,
    pub name: Option<String>,
    #[serde(rename = "orgName")]
    pub org_name: Option<String>,
    #[serde(default)]
    pub related: Vec<RelatedAsn>,
    /// Regional internet registry.
    pub source: Option<String>,
    pub website: Option<String>,
    pub aka: Option<String>,
}

/// `estimatedUsers` (APNIC population estimates).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EstimatedUsers {
    #[serde(default)]
    pub locations: Vec<UserLocation>,
    #[serde(rename = "estimatedUsers")]
    pub estimated_users: Option<u64>,
}

/// One location of `estimatedUsers.locations`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct UserLocation {
    #[serde(rename = "locationAlpha2")]
    pub location_alpha2: Option<String>,
    #[serde(rename = "locationName")]
    pub location_name: Option<String>,
    #[serde(rename = "estimatedUsers")]
    pub estimated_users: Option<u64>,
}

/// One entry of `related`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RelatedAsn {
    pub asn: Option<u32>,
    pub name: Option<String>,
    pub aka: Option<String>,
    #[serde(rename = "estimatedUsers")]
    pub estimated_users: Option<u64>,
}

/// The Cloudflare Radar client.
pub struct CloudflareRadarClient {
    http: HttpClient,
}

impl CloudflareRadarClient {
    /// A client for `settings.base_url` (production: `https://api.cloudflare.com`).
    pub fn new(settings: &HttpSettings) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpClient::new(NAME, settings)?,
        })
    }

    /// Rate-limit headers of the latest response.
    pub fn last_rate_info(&self) -> Option<RateInfo> {
        self.http.last_rate_info()
    }

    /// The envelope's `result.asn` as sent; `None` for 404 or no `asn`.
    pub async fn lookup_raw(&self, ip: IpAddr) -> Result<Option<RadarAsn>, ProviderError> {
        let mut url = self
            .http
            .url(&["client", "v4", "radar", "entities", "asns", "ip"]);
        url.query_pairs_mut().append_pair("ip", &ip.to_string());
        let request = self
            .http
            .with_key_header(self.http.get(url), AUTHORIZATION, "Bearer ")?;
        let response = self.http.send(request).await?;
        if response.status.as_u16() == 404 {
            return Ok(None);
        }
        if let Err(error) = status_error(&response, self.http.key()) {
            tracing::debug!(provider = NAME, status = response.status.as_u16(), %error, "provider refused");
            return Err(error);
        }
        let envelope: Envelope = response.json(self.http.key())?;
        if envelope.success != Some(true) {
            return Err(ProviderError::Rejected {
                message: body_message(&response.body, self.http.key()),
            });
        }
        Ok(envelope.result.and_then(|r| r.asn))
    }

    /// Normalised answer for one address.
    pub async fn lookup_ip(&self, ip: IpAddr) -> Result<Answer, ProviderError> {
        Ok(match self.lookup_raw(ip).await? {
            Some(asn) => {
                let record = to_record(asn);
                if record.is_empty() {
                    Answer::NoData
                } else {
                    Answer::Found(record)
                }
            }
            None => Answer::NoData,
        })
    }
}

/// The statuses Cloudflare's v4 API uses; the message comes from `errors[]`.
fn status_error(response: &RawResponse, key: &Secret) -> Result<(), ProviderError> {
    http::status_error(
        response,
        key,
        &[
            (403, |message| ProviderError::Forbidden { message }),
            (404, |message| ProviderError::NotFound { message }),
        ],
    )
}

/// Radar `result.asn` -> record. `website` is a URL; its host becomes `domain`.
/// `countryName` and `estimatedUsers` have no record field.
pub fn to_record(a: RadarAsn) -> IntelRecord {
    let domain = a.website.and_then(|w| match Url::parse(&w) {
        Ok(url) => url.host_str().map(str::to_owned),
        Err(_) => Some(w),
    });
    let asn = AsnInfo {
        number: a.asn,
        name: text(a.name),
        org: text(a.org_name),
        country: text(a.country),
        domain: text(domain),
        kind: None,
        route: None,
        rir: lower(a.source),
    };
    IntelRecord {
        asn: (asn != AsnInfo::default()).then_some(asn),
        ..IntelRecord::default()
    }
}

super::single_address_provider!(CloudflareRadarClient);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::providers::examples;
    use bytes::Bytes;
    use reqwest::header::HeaderMap;
    use reqwest::StatusCode;

    /// The example: "Returns Examples", verbatim.
    #[test]
    fn example_response() {
        let envelope: Envelope = serde_json::from_str(examples::CLOUDFLARE_ASN_714).unwrap();
        assert_eq!(envelope.success, Some(true));
        let a = envelope.result.unwrap().asn.unwrap();
        let users = a.estimated_users.clone().unwrap();
        assert_eq!(users.estimated_users, Some(86099));
        assert_eq!(users.locations[0].estimated_users, Some(16710));
        assert_eq!(a.related[0].estimated_users, Some(65345));
        let asn = to_record(a).asn.unwrap();
        assert_eq!(asn.number, Some(714));
        assert_eq!(asn.name.as_deref(), Some("Apple Inc."));
        assert_eq!(asn.org.as_deref(), Some("orgName"));
        assert_eq!(asn.country.as_deref(), Some("GB"));
        assert_eq!(asn.rir.as_deref(), Some("ripe"));
        assert_eq!(asn.domain.as_deref(), Some("www.apple.com"));
    }

    fn raw(status: u16, body: &str) -> RawResponse {
        RawResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn statuses_and_error_envelope_map() {
        let key = Secret::new("cf-token-abcdefgh").unwrap();
        let body = r#"{"result":null,"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[]}"#;
        use ProviderError as E;
        assert!(matches!(
            status_error(&raw(400, body), &key),
            Err(E::InvalidInput { .. })
        ));
        assert!(
            matches!(status_error(&raw(401, body), &key), Err(E::Unauthorized { message }) if message == "Authentication error")
        );
        assert!(matches!(
            status_error(&raw(403, body), &key),
            Err(E::Forbidden { .. })
        ));
        assert!(matches!(
            status_error(&raw(429, body), &key),
            Err(E::RateLimited { .. })
        ));
        assert!(matches!(
            status_error(&raw(503, body), &key),
            Err(E::Server { status: 503, .. })
        ));
        assert!(status_error(&raw(200, body), &key).is_ok());
    }
}
