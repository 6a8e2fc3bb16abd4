//! IPGeolocation.io ASN client: `GET /v3/asn?ip=` (or `?asn=`), one per call.
//!
//! Contract (`ipgeolocation-asn-api.txt`): the key travels as the `apiKey` query
//! parameter, so the request URL is a secret: it is never logged and every
//! transport error is stripped of it. 200 costs credits (header
//! `X-Credits-Charged`, summed here); 423 (bogon/private) and 404 (not in the
//! database) are `NoData` for an address, not errors. Error bodies are
//! `{"message"}` only, so control flow follows the status. `as_number` is
//! `"AS24940"` and the route counts are strings (`"84"`).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::http::{
    self, body_message, lower, text, AsNumber, HttpClient, HttpSettings, RateInfo, RawResponse,
};
use super::{Answer, ProviderError};
use crate::lookup::record::{AsnInfo, IntelRecord};
use crate::secret::Secret;

/// Name in config, metrics and logs.
pub const NAME: &str = "ipgeolocation";

/// Optional modules of `include=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    Peers,
    Downstreams,
    Upstreams,
    Routes,
    WhoisResponse,
}

impl Include {
    fn as_str(self) -> &'static str {
        match self {
            Include::Peers => "peers",
            Include::Downstreams => "downstreams",
            Include::Upstreams => "upstreams",
            Include::Routes => "routes",
            Include::WhoisResponse => "whois_response",
        }
    }
}

/// The 200 body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AsnLookup {
    /// Present for IP lookups only.
    pub ip: Option<String>,
    pub asn: Option<IpGeoAsn>,
}

/// `asn`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IpGeoAsn {
    pub as_number: Option<AsNumber>,
    pub organization: Option<String>,
    pub country: Option<String>,
    pub asn_name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub domain: Option<String>,
    pub date_allocated: Option<String>,
    pub rir: Option<String>,
    pub allocation_status: Option<String>,
    pub num_of_ipv4_routes: Option<Count>,
    pub num_of_ipv6_routes: Option<Count>,
    #[serde(default)]
    pub peers: Vec<Connection>,
    #[serde(default)]
    pub downstreams: Vec<Connection>,
    #[serde(default)]
    pub upstreams: Vec<Connection>,
    #[serde(default)]
    pub routes: Vec<String>,
    pub whois_response: Option<String>,
}

/// A peer, upstream or downstream AS.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Connection {
    pub as_number: Option<AsNumber>,
    pub description: Option<String>,
    pub country: Option<String>,
}

/// A count sent as a string (`"84"`) or, tolerated, a number.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Count {
    Number(u64),
    Text(String),
}

impl Count {
    /// The count, when it is a number.
    pub fn value(&self) -> Option<u64> {
        match self {
            Count::Number(n) => Some(*n),
            Count::Text(t) => t.trim().parse().ok(),
        }
    }
}

#[derive(Debug, Default)]
struct Credits {
    last: Option<f64>,
    total: f64,
}

/// The IPGeolocation ASN client.
pub struct IpGeolocationClient {
    http: HttpClient,
    credits: Mutex<Credits>,
}

enum Query<'a> {
    Ip(IpAddr),
    Asn(&'a str),
}

impl IpGeolocationClient {
    /// A client for `settings.base_url` (production: `https://api.ipgeolocation.io`).
    pub fn new(settings: &HttpSettings) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpClient::new(NAME, settings)?,
            credits: Mutex::new(Credits::default()),
        })
    }

    /// Rate-limit headers of the latest response.
    pub fn last_rate_info(&self) -> Option<RateInfo> {
        self.http.last_rate_info()
    }

    /// `X-Credits-Charged` of the latest response that carried it.
    pub fn last_credits_charged(&self) -> Option<f64> {
        self.credits.lock().ok().and_then(|c| c.last)
    }

    /// Sum of `X-Credits-Charged` over the life of this client.
    pub fn credits_charged_total(&self) -> f64 {
        self.credits.lock().map(|c| c.total).unwrap_or(0.0)
    }

    async fn get(
        &self,
        query: Query<'_>,
        include: &[Include],
    ) -> Result<RawResponse, ProviderError> {
        let mut url = self.http.url(&["v3", "asn"]);
        {
            let mut pairs = url.query_pairs_mut();
            match query {
                Query::Ip(ip) => pairs.append_pair("ip", &ip.to_string()),
                Query::Asn(asn) => pairs.append_pair("asn", asn),
            };
            if !include.is_empty() {
                let names: Vec<&str> = include.iter().map(|i| i.as_str()).collect();
                pairs.append_pair("include", &names.join(","));
            }
            pairs.append_pair("apiKey", self.http.key().expose());
        }
        let response = self.http.send(self.http.get(url)).await?;
        let charged = response
            .headers
            .get("x-credits-charged")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|c| c.is_finite() && *c >= 0.0);
        if let (Some(charged), Ok(mut credits)) = (charged, self.credits.lock()) {
            credits.last = Some(charged);
            credits.total += charged;
        }
        Ok(response)
    }

    /// `GET /v3/asn?ip=` as the provider sends it; `None` for 404 and 423.
    pub async fn lookup_raw(
        &self,
        ip: IpAddr,
        include: &[Include],
    ) -> Result<Option<AsnLookup>, ProviderError> {
        let response = self.get(Query::Ip(ip), include).await?;
        if matches!(response.status.as_u16(), 404 | 423) {
            return Ok(None);
        }
        self.check(&response)?;
        Ok(Some(response.json(self.http.key())?))
    }

    /// `GET /v3/asn?ip=&include=routes`, normalised. The routes cost nothing more
    /// (one credit per request) and name the prefix that holds `ip`, so the engine
    /// answers the rest of that prefix without a call.
    pub async fn lookup_ip(&self, ip: IpAddr) -> Result<Answer, ProviderError> {
        Ok(match self.lookup_raw(ip, &[Include::Routes]).await? {
            Some(body) => {
                let record = to_record(body, ip);
                if record.is_empty() {
                    Answer::NoData
                } else {
                    Answer::Found(record)
                }
            }
            None => Answer::NoData,
        })
    }

    /// `GET /v3/asn?asn=`; `asn` like `"24940"` or `"AS24940"`. 404 is `NotFound`.
    pub async fn lookup_asn(
        &self,
        asn: &str,
        include: &[Include],
    ) -> Result<AsnLookup, ProviderError> {
        let response = self.get(Query::Asn(asn), include).await?;
        self.check(&response)?;
        response.json(self.http.key())
    }

    fn check(&self, response: &RawResponse) -> Result<(), ProviderError> {
        let result = status_error(response, self.http.key());
        if let Err(error) = &result {
            tracing::debug!(provider = NAME, status = response.status.as_u16(), %error, "provider refused");
        }
        result
    }
}

/// Maps the documented statuses (the body has only a `message`).
fn status_error(response: &RawResponse, key: &Secret) -> Result<(), ProviderError> {
    // The documented 429s (usage limit, surcharge limit) carry no code: a
    // `Retry-After` says a pause helps (a rate window, the shared mapping), its
    // absence that the subscription's allowance is spent.
    if response.status.as_u16() == 429 && response.retry_after().is_none() {
        return Err(ProviderError::QuotaExceeded {
            message: body_message(&response.body, key),
            retry_after: None,
        });
    }
    // 405 (we only GET) and 505 are our bugs; 499 is a timeout; 5xx server.
    http::status_error(
        response,
        key,
        &[
            (404, |message| ProviderError::NotFound { message }),
            (423, |message| ProviderError::Unprocessable { message }),
        ],
    )
}

/// IPGeolocation answer for `ip` -> record: ASN facts only, with `route` the
/// longest announced route that holds `ip` (when `include=routes` brought them).
/// Route counts, allocation and peering data have no record field (see
/// `docs/providers.md`).
pub fn to_record(body: AsnLookup, ip: IpAddr) -> IntelRecord {
    let a = body.asn.unwrap_or_default();
    let route = a
        .routes
        .iter()
        .filter_map(|r| r.trim().parse::<ipnet::IpNet>().ok())
        .filter(|n| n.contains(&ip))
        .max_by_key(ipnet::IpNet::prefix_len)
        .map(|n| Arc::<str>::from(n.trunc().to_string()));
    let asn = AsnInfo {
        number: a.as_number.as_ref().and_then(AsNumber::value),
        name: text(a.asn_name),
        org: text(a.organization),
        country: text(a.country),
        domain: text(a.domain),
        kind: lower(a.kind),
        route,
        rir: lower(a.rir),
    };
    IntelRecord {
        asn: (asn != AsnInfo::default()).then_some(asn),
        ..IntelRecord::default()
    }
}

super::single_address_provider!(IpGeolocationClient, per_network: true);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::providers::examples;
    use bytes::Bytes;
    use reqwest::header::HeaderMap;
    use reqwest::StatusCode;

    /// The example: The 200 example of the spec, from YAML to JSON (whois text shortened to its first lines).
    #[test]
    fn example_response() {
        let body: AsnLookup = serde_json::from_str(examples::IPGEOLOCATION_ASN_24940).unwrap();
        let a = body.asn.clone().unwrap();
        assert_eq!(a.num_of_ipv4_routes.unwrap().value(), Some(84));
        assert_eq!(a.num_of_ipv6_routes.unwrap().value(), Some(6));
        assert_eq!(a.peers.len(), 2);
        assert_eq!(
            a.upstreams[0].as_number.as_ref().unwrap().value(),
            Some(12552)
        );
        assert_eq!(a.downstreams[1].country.as_deref(), Some("CZ"));
        assert_eq!(a.routes, ["78.46.0.0/15", "138.199.128.0/17"]);
        assert!(a.whois_response.unwrap().contains("ASNumber: 24940"));
        let asn = to_record(body.clone(), "78.47.1.2".parse().unwrap())
            .asn
            .unwrap();
        // The route that holds the address asked for.
        assert_eq!(asn.route.as_deref(), Some("78.46.0.0/15"));
        let elsewhere = to_record(body, "49.12.0.1".parse().unwrap()).asn.unwrap();
        assert_eq!(elsewhere.route, None);
        assert_eq!(asn.number, Some(24940));
        assert_eq!(asn.name.as_deref(), Some("HETZNER-AS"));
        assert_eq!(asn.org.as_deref(), Some("Hetzner Online GmbH"));
        assert_eq!(asn.country.as_deref(), Some("DE"));
        assert_eq!(asn.domain.as_deref(), Some("hetzner.com"));
        assert_eq!(asn.kind.as_deref(), Some("hosting"));
        assert_eq!(asn.rir.as_deref(), Some("ripe"));
    }

    /// Schema examples: an IP lookup carries `ip` ("49.12.0.0").
    #[test]
    fn schema_example_with_ip() {
        let body: AsnLookup = serde_json::from_str(
            r#"{"ip":"49.12.0.0","asn":{"as_number":"AS24940","organization":"Hetzner Online GmbH","country":"DE"}}"#,
        )
        .unwrap();
        assert_eq!(body.ip.as_deref(), Some("49.12.0.0"));
        let ip = "49.12.0.0".parse().unwrap();
        assert_eq!(to_record(body, ip).asn.unwrap().number, Some(24940));
    }

    fn raw(status: u16, message: &str) -> RawResponse {
        RawResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(serde_json::json!({ "message": message }).to_string()),
        }
    }

    /// Every documented status with its documented example message.
    #[test]
    fn documented_statuses_map() {
        let key = Secret::new("ipgeo-secret-key").unwrap();
        use ProviderError as E;
        let e = |s, m| status_error(&raw(s, m), &key).unwrap_err();
        assert!(
            matches!(e(400, "Provided name, service or IP address '999.999.999.999' is not valid."), E::InvalidInput { message } if message.contains("999.999.999.999"))
        );
        assert!(matches!(e(401, "Provided API key is not valid. Contact technical support for assistance at support@ipgeolocation.io"), E::Unauthorized { .. }));
        assert!(matches!(
            e(
                404,
                "Provided ASN or IP Address does not exist in our database."
            ),
            E::NotFound { .. }
        ));
        assert!(matches!(
            e(405, "Request method 'POST' is not supported"),
            E::UnexpectedStatus { status: 405, .. }
        ));
        assert!(matches!(
            e(423, "'10.0.0.1' is a bogon IP address."),
            E::Unprocessable { .. }
        ));
        assert!(matches!(
            e(429, "You have reached the surcharge amount limit"),
            E::QuotaExceeded { .. }
        ));
        let mut limited = raw(
            429,
            "You have exceeded the limit of PLAN_USAGE_LIMIT requests",
        );
        limited.headers.insert("retry-after", "3".parse().unwrap());
        assert!(matches!(
            status_error(&limited, &key),
            Err(E::RateLimited { retry_after: Some(d) }) if d.as_secs() == 3
        ));
        assert!(matches!(
            e(
                499,
                "Client closed the request before the server could respond."
            ),
            E::Timeout
        ));
        for s in [500, 502, 503, 504] {
            assert!(matches!(e(s, "x"), E::Server { status, .. } if status == s));
        }
        assert!(matches!(
            e(505, "HTTP version not supported."),
            E::Server { status: 505, .. }
        ));
    }
}
