//! The provider-response property, shared by the `provider_responses` fuzz target and
//! `tests/properties.rs`.
//!
//! Each of the five HTTP clients is pointed at a stub on 127.0.0.1 that answers with
//! whatever status, headers and body it is given, and one of the client's calls is
//! made. So the whole response path runs as in production: rate-limit headers,
//! status mapping, error-body messages, envelopes, bulk alignment, `to_record`.
//! Property: no panic; a lookup answers once per address asked; no error (message,
//! source chain or `Debug`) carries the API key or its first 8 characters, even
//! when the provider echoes the key back.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use ipenrich::lookup::providers::cloudflare_radar::CloudflareRadarClient;
use ipenrich::lookup::providers::http::{parse_retry_after, HttpSettings, RateInfo};
use ipenrich::lookup::providers::ipgeolocation::{Include, IpGeolocationClient};
use ipenrich::lookup::providers::ipinsights::{
    IpInsightsClient, ReportCategory, ReportRequest, ReportSource,
};
use ipenrich::lookup::providers::iptrust::IpTrustClient;
use ipenrich::lookup::providers::openipapi::{DatabaseSource, OpenIpApiClient, Plan};
use ipenrich::lookup::providers::{Answer, Provider, ProviderError};
use ipenrich::secret::Secret;

/// The key every client sends. Seeds echo it back in error bodies, so the fuzzer
/// starts from a provider that leaks it and must never see it in an error.
pub const KEY: &str = "fz-Key-q7W2x9Lm";

/// Headers the stub can send, in the order of the bits of [`Canned::header_mask`].
pub const HEADERS: [&str; 6] = [
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-credits-charged",
    "etag",
    "content-type",
];

/// The calls, one per documented endpoint whose answer is parsed.
pub const CALLS: [&str; 14] = [
    "ipinsights lookup",
    "ipinsights bulk lookup",
    "ipinsights asn",
    "ipinsights cidr",
    "ipinsights report",
    "openipapi lookup",
    "openipapi batch",
    "openipapi asn",
    "openipapi fraud",
    "openipapi download",
    "iptrust lookup",
    "ipgeolocation lookup",
    "ipgeolocation asn",
    "cloudflare radar lookup",
];

/// One answer of the stub.
#[derive(Debug, Clone, Default)]
pub struct Canned {
    pub status: u16,
    /// Header name and raw value; values that are not valid header values are dropped.
    pub headers: Vec<(&'static str, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Canned {
    /// Decodes a fuzz input: `[call, status_hi, status_lo, header_mask, values..., body]`.
    /// The status is `200 + (u16 % 400)`; each set bit of `header_mask` takes the next
    /// `\n`-terminated line as the value of that header in [`HEADERS`]; the rest is the
    /// body. Returns the call index and the answer.
    pub fn from_fuzz(data: &[u8]) -> Option<(usize, Canned)> {
        let [call, hi, lo, mask, rest @ ..] = data else {
            return None;
        };
        let mut rest = rest;
        let mut headers = Vec::new();
        for (bit, name) in HEADERS.iter().enumerate() {
            if mask & (1 << bit) == 0 {
                continue;
            }
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            headers.push((*name, rest[..end].to_vec()));
            rest = rest.get(end + 1..).unwrap_or(&[]);
        }
        Some((
            usize::from(*call) % CALLS.len(),
            Canned {
                status: 200 + u16::from_be_bytes([*hi, *lo]) % 400,
                headers,
                body: rest.to_vec(),
            },
        ))
    }
}

/// A stub server and the five clients pointed at it, on a runtime of their own.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    answer: Arc<Mutex<Canned>>,
    ipinsights: IpInsightsClient,
    openipapi: OpenIpApiClient,
    iptrust: IpTrustClient,
    ipgeolocation: IpGeolocationClient,
    cloudflare: CloudflareRadarClient,
}

impl Harness {
    /// Starts the stub on 127.0.0.1:0 and builds the clients.
    pub fn start() -> Harness {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let answer = Arc::new(Mutex::new(Canned::default()));
        let app = Router::new()
            .fallback(serve)
            .with_state(Arc::clone(&answer));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        runtime.spawn(async move { axum::serve(listener, app).await });
        let settings = HttpSettings::new(&base, Secret::new(KEY).expect("key"))
            .expect("settings")
            .with_timeouts(
                Duration::from_secs(5),
                Duration::from_secs(5),
                Duration::from_secs(10),
            );
        Harness {
            answer,
            ipinsights: IpInsightsClient::new(&settings).expect("client"),
            openipapi: OpenIpApiClient::new(&settings, Plan::Starter).expect("client"),
            iptrust: IpTrustClient::new(&settings).expect("client"),
            ipgeolocation: IpGeolocationClient::new(&settings).expect("client"),
            cloudflare: CloudflareRadarClient::new(&settings).expect("client"),
            runtime,
        }
    }

    /// Makes call `call` (an index into [`CALLS`]) against `answer` and checks the
    /// property; panics, naming the call, when it fails.
    pub fn check(&self, call: usize, answer: Canned) {
        check_headers(&answer.headers);
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = answer;
        let call = call % CALLS.len();
        let outcome = self.runtime.block_on(self.call(call));
        if let Err(error) = outcome {
            let mut text = format!("{error}");
            let mut source = std::error::Error::source(&error);
            while let Some(s) = source {
                let _ = write!(text, ": {s}");
                source = s.source();
            }
            let _ = write!(text, " {error:?}");
            assert!(
                !text.contains(KEY) && !text.contains(&KEY[..8]),
                "{}: the api key leaked into an error: {text}",
                CALLS[call]
            );
        }
    }

    async fn call(&self, call: usize) -> Result<(), ProviderError> {
        let one = [ip("8.8.8.8")];
        let three = [ip("8.8.8.8"), ip("1.1.1.1"), ip("2001:4860:4860::8888")];
        let aligned = |ips: &[IpAddr], answers: Vec<Answer>| {
            assert_eq!(
                answers.len(),
                ips.len(),
                "{}: one answer per address",
                CALLS[call]
            );
        };
        match call {
            0 => aligned(&one, self.ipinsights.lookup(&one).await?),
            1 => aligned(&three, self.ipinsights.lookup(&three).await?),
            2 => {
                let _summary = self.ipinsights.lookup_asn("AS15169").await?;
            }
            3 => {
                let cidr = "8.8.8.0/24".parse().expect("cidr literal");
                let _summary = self.ipinsights.lookup_cidr(cidr).await?;
            }
            4 => {
                let report = ReportRequest {
                    ip: ip("203.0.113.7"),
                    categories: vec![ReportCategory::SshBruteforce],
                    comment: Some("fuzz".to_string()),
                    source: Some(ReportSource::Fail2ban),
                };
                let _receipt = self.ipinsights.report(&report).await?;
            }
            5 => aligned(&one, self.openipapi.lookup(&one).await?),
            6 => aligned(&three, self.openipapi.lookup(&three).await?),
            7 => {
                let _details = self.openipapi.asn(13335).await?;
            }
            8 => {
                let _report = self.openipapi.fraud(ip("185.220.101.45")).await?;
            }
            9 => {
                let _download = self
                    .openipapi
                    .download_database(DatabaseSource::Country, Some("\"v1\""))
                    .await?;
            }
            10 => aligned(&one, self.iptrust.lookup(&one).await?),
            11 => aligned(&one, self.ipgeolocation.lookup(&one).await?),
            12 => {
                let _asn = self
                    .ipgeolocation
                    .lookup_asn("AS24940", &[Include::Peers, Include::Routes])
                    .await?;
            }
            _ => aligned(&one, self.cloudflare.lookup(&one).await?),
        }
        Ok(())
    }
}

/// The rate-limit header parsing on its own, with wall clocks at both ends of time.
fn check_headers(headers: &[(&'static str, Vec<u8>)]) {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(HeaderName::from_static(name), value);
        }
        if let Ok(text) = std::str::from_utf8(value) {
            for now in [SystemTime::UNIX_EPOCH, SystemTime::now()] {
                let _ = parse_retry_after(text, now);
            }
        }
    }
    for now in [SystemTime::UNIX_EPOCH, SystemTime::now()] {
        let _ = RateInfo::from_headers_at(&map, now);
    }
}

async fn serve(State(answer): State<Arc<Mutex<Canned>>>) -> Response {
    let answer = answer.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address literal")
}
