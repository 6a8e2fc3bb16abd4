//! Contract tests of the five provider clients over real HTTP on 127.0.0.1.
//!
//! `stub_*` tests run the clients against a scripted stub server (one canned
//! answer at a time, every request recorded), which pins the request shape
//! (paths, key placement, bodies, conditional GETs) and the error mapping.
//! `no_secret_leaks_*` runs every client's error paths with logs captured at
//! trace level (the `log` records of reqwest/hyper included) and asserts that
//! neither a key nor its first 8 characters show up anywhere.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use ipenrich::lookup::providers::cloudflare_radar::CloudflareRadarClient;
use ipenrich::lookup::providers::http::HttpSettings;
use ipenrich::lookup::providers::ipgeolocation::IpGeolocationClient;
use ipenrich::lookup::providers::ipinsights::{
    IpInsightsClient, ReportCategory, ReportRequest, ReportSource,
};
use ipenrich::lookup::providers::iptrust::IpTrustClient;
use ipenrich::lookup::providers::openipapi::{DatabaseSource, Download, OpenIpApiClient, Plan};
use ipenrich::lookup::providers::{Answer, Provider, ProviderError};
use ipenrich::secret::Secret;

// ---------------------------------------------------------------- stub server

#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn canned(status: u16, body: &str) -> Canned {
    Canned {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    uri: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Default)]
struct StubState {
    queue: VecDeque<Canned>,
    seen: Vec<Seen>,
}

/// A server answering each request with the next canned answer (or 599 when
/// none is left). `{echo}` in a canned body becomes the request line and headers,
/// JSON-escaped: the worst provider, one that echoes the key back.
#[derive(Clone, Default)]
struct Stub(Arc<Mutex<StubState>>);

impl Stub {
    async fn start() -> (Stub, String) {
        let stub = Stub::default();
        let app = Router::new().fallback(handle).with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (stub, format!("http://{addr}"))
    }

    fn push(&self, answer: Canned) {
        self.0.lock().unwrap().queue.push_back(answer);
    }

    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().seen.clone()
    }

    fn last(&self) -> Seen {
        self.seen().pop().expect("no request reached the stub")
    }
}

async fn handle(State(stub): State<Stub>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let echo = format!("{} {} {:?}", parts.method, uri, parts.headers);
    let answer = {
        let mut state = stub.0.lock().unwrap();
        state.seen.push(Seen {
            method: parts.method.to_string(),
            uri,
            headers: parts.headers.clone(),
            body: body.to_vec(),
        });
        state.queue.pop_front()
    };
    let answer = answer.unwrap_or_else(|| canned(599, "no canned answer"));
    let escaped = serde_json::to_string(&echo).unwrap();
    let body = answer
        .body
        .replace("{echo}", &escaped[1..escaped.len() - 1]);
    let mut response = Response::builder().status(StatusCode::from_u16(answer.status).unwrap());
    for (name, value) in &answer.headers {
        response = response.header(*name, value);
    }
    response.body(Body::from(body)).unwrap()
}

/// Timeouts no answer from 127.0.0.1 reaches, however busy the machine: only the
/// tests whose subject is a timeout use short ones, against a server that never
/// answers in time ([`silent_server`], the simulator's latency fault).
fn settings(base: &str, key: &str) -> HttpSettings {
    HttpSettings::new(base, Secret::new(key).unwrap())
        .unwrap()
        .with_timeouts(
            Duration::from_secs(30),
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).and_then(|v| v.to_str().ok())
}

// ------------------------------------------------------------- request shapes

#[tokio::test]
async fn stub_ipinsights_requests_and_answers() {
    let (stub, base) = Stub::start().await;
    let client = IpInsightsClient::new(&settings(&base, "ins-key-0001")).unwrap();
    assert_eq!(client.max_batch(), 100);

    stub.push(Canned {
        status: 200,
        headers: vec![
            ("X-RateLimit-Limit", "600".into()),
            ("X-RateLimit-Remaining", "95".into()),
        ],
        body: r#"{"success":true,"data":{"ip":"8.8.8.8","as_number":"AS15169","as_name":"GOOGLE","threat_assessment":{"score":10,"level":"low"}}}"#.into(),
    });
    let answers = client.lookup(&[ip("8.8.8.8")]).await.unwrap();
    let Answer::Found(record) = &answers[0] else {
        panic!("{answers:?}")
    };
    assert_eq!(record.asn.as_ref().unwrap().number, Some(15169));
    assert_eq!(record.threat.as_ref().unwrap().score, Some(10));
    let seen = stub.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/api/v1/lookup?ip=8.8.8.8");
    assert_eq!(header(&seen, "x-api-key"), Some("ins-key-0001"));
    assert_eq!(header(&seen, "user-agent"), Some("ipenrich/0.1.0"));
    let rate = client.last_rate_info().unwrap();
    assert_eq!((rate.limit, rate.remaining), (Some(600), Some(95)));

    // 422 on a lookup: private address, nothing to know.
    stub.push(canned(
        422,
        r#"{"success":false,"error":"IP address is private or reserved"}"#,
    ));
    assert_eq!(
        client.lookup(&[ip("10.1.2.3")]).await.unwrap(),
        vec![Answer::NoData]
    );

    // Bulk: body {"ips":[...]}, answers matched by ip, in input order.
    stub.push(canned(200, r#"{"success":true,"data":[{"ip":"1.1.1.1","as_number":"AS13335"},{"ip":"8.8.8.8","as_number":"AS15169"}]}"#));
    let answers = client
        .lookup(&[ip("8.8.8.8"), ip("9.9.9.9"), ip("1.1.1.1")])
        .await
        .unwrap();
    let numbers: Vec<Option<u32>> = answers
        .iter()
        .map(|a| match a {
            Answer::Found(r) => r.asn.as_ref().and_then(|a| a.number),
            Answer::NoData => None,
        })
        .collect();
    assert_eq!(numbers, [Some(15169), None, Some(13335)]);
    let seen = stub.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/api/v1/bulk-lookup")
    );
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"ips": ["8.8.8.8", "9.9.9.9", "1.1.1.1"]})
    );

    // Over the limit: refused before sending.
    let many: Vec<IpAddr> = (0..101u32)
        .map(|i| IpAddr::from([11, 0, 0, i as u8]))
        .collect();
    let before = stub.seen().len();
    assert!(matches!(
        client.lookup(&many).await,
        Err(ProviderError::BatchTooLarge { len: 101, max: 100 })
    ));
    assert_eq!(stub.seen().len(), before);

    // ASN and CIDR lookups.
    stub.push(canned(
        200,
        r#"{"success":true,"data":{"as_number":"AS15169","as_name":"GOOGLE","total_ips":42}}"#,
    ));
    let asn = client.lookup_asn("AS15169").await.unwrap();
    assert_eq!(asn.total_ips, Some(42));
    assert_eq!(stub.last().uri, "/api/v1/lookup?asn=AS15169");
    stub.push(canned(
        200,
        r#"{"success":true,"data":{"cidr":"8.8.8.0/24","total_ips_in_db":5}}"#,
    ));
    let cidr = client
        .lookup_cidr("8.8.8.0/24".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(cidr.total_ips_in_db, Some(5));
    assert_eq!(stub.last().uri, "/api/v1/lookup?cidr=8.8.8.0%2F24");

    // Reports: 201, then the documented 400 / 422 / 429.
    let report = ReportRequest {
        ip: ip("203.0.113.42"),
        categories: vec![ReportCategory::SshBruteforce, ReportCategory::PortScan],
        comment: Some("10 failed SSH logins from this IP in 60s".into()),
        source: Some(ReportSource::Manual),
    };
    stub.push(canned(201, r#"{ "success": true, "message": "Report received. Thank you for contributing.", "report_id": 18429, "weight": 1.00, "corroborated": false, "reputation": 1.00, "categories": ["ssh_bruteforce","port_scan"], "reported_at": "2026-05-12T06:49:10Z" }"#));
    assert_eq!(client.report(&report).await.unwrap().report_id, 18429);
    let seen = stub.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/api/v1/report")
    );
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body["categories"],
        serde_json::json!(["ssh_bruteforce", "port_scan"])
    );
    assert_eq!(body["source"], "manual");

    stub.push(canned(
        400,
        r#"{"success":false,"error":"IP already reported within the last 15 minutes"}"#,
    ));
    assert!(matches!(
        client.report(&report).await,
        Err(ProviderError::Duplicate { .. })
    ));
    stub.push(canned(
        422,
        r#"{"success":false,"error":"IP address is private or reserved"}"#,
    ));
    assert!(matches!(
        client.report(&report).await,
        Err(ProviderError::Unprocessable { .. })
    ));
    stub.push(Canned {
        status: 429,
        headers: vec![("Retry-After", "42".into())],
        body: r#"{"success":false,"error":"Rate limit exceeded"}"#.into(),
    });
    let err = client.report(&report).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(42))
    );
    assert_eq!(
        client.last_rate_info().unwrap().retry_after,
        Some(Duration::from_secs(42))
    );
}

#[tokio::test]
async fn stub_openipapi_requests_and_answers() {
    let (stub, base) = Stub::start().await;
    let client = OpenIpApiClient::new(&settings(&base, "oip_key_0002"), Plan::Starter)
        .unwrap()
        .with_fields(&["network", "threat"])
        .unwrap();
    assert_eq!(client.max_batch(), 100);

    stub.push(canned(200, r#"{"ip":"185.220.101.45","network":{"asn":205100},"threat":{"threat_score":85,"bot_type":null}}"#));
    let answers = client.lookup(&[ip("185.220.101.45")]).await.unwrap();
    assert!(
        matches!(&answers[0], Answer::Found(r) if r.threat.as_ref().unwrap().score == Some(85))
    );
    let seen = stub.last();
    assert_eq!(
        seen.uri,
        "/v1/lookup/185.220.101.45?fields=network%2Cthreat"
    );
    assert_eq!(header(&seen, "x-api-key"), Some("oip_key_0002"));

    stub.push(canned(
        404,
        r#"{"error":"not_found","message":"No data found","status":404}"#,
    ));
    assert_eq!(
        client.lookup(&[ip("192.0.2.1")]).await.unwrap(),
        vec![Answer::NoData]
    );

    stub.push(canned(200, r#"{"results":[{"ip":"8.8.8.8","network":{"asn":15169}},{"ip":"1.1.1.1","network":{"asn":13335}}],"count":2}"#));
    let answers = client
        .lookup(&[ip("8.8.8.8"), ip("1.1.1.1")])
        .await
        .unwrap();
    assert!(
        matches!(&answers[1], Answer::Found(r) if r.asn.as_ref().unwrap().number == Some(13335))
    );
    let seen = stub.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/v1/lookup/batch")
    );

    stub.push(canned(403, r#"{"error":"plan_required","message":"The requested feature is not available on your current plan.","status":403}"#));
    assert!(matches!(
        client.lookup(&[ip("8.8.8.8"), ip("1.1.1.1")]).await,
        Err(ProviderError::PlanRequired { .. })
    ));

    stub.push(canned(
        200,
        r#"{"asn":13335,"as_name":"Cloudflare, Inc.","total_ips":2359296}"#,
    ));
    assert_eq!(client.asn(13335).await.unwrap().total_ips, Some(2359296));
    assert_eq!(stub.last().uri, "/v1/asn/13335");
    stub.push(canned(
        404,
        r#"{"error":"not_found","message":"Unknown ASN","status":404}"#,
    ));
    assert!(matches!(
        client.asn(4_000_000).await,
        Err(ProviderError::NotFound { .. })
    ));

    stub.push(canned(200, r#"{"ip":"185.220.101.45","fraud_score":92,"risk_level":"critical","recommendation":"block"}"#));
    assert_eq!(
        client
            .fraud(ip("185.220.101.45"))
            .await
            .unwrap()
            .recommendation
            .as_deref(),
        Some("block")
    );
    assert_eq!(stub.last().uri, "/v1/fraud/185.220.101.45");

    // Conditional download: first without, then with If-None-Match.
    stub.push(Canned {
        status: 200,
        headers: vec![("ETag", "\"fa2b851f9155838b\"".into())],
        body: "MMDB-BYTES".into(),
    });
    let first = client
        .download_database(DatabaseSource::Asn, None)
        .await
        .unwrap();
    let Download::Modified { bytes, etag } = first else {
        panic!("{first:?}")
    };
    assert_eq!(&bytes[..], b"MMDB-BYTES");
    assert_eq!(etag.as_deref(), Some("\"fa2b851f9155838b\""));
    let seen = stub.last();
    assert_eq!(seen.uri, "/v1/database/download/asn");
    assert_eq!(header(&seen, "if-none-match"), None);
    stub.push(canned(304, ""));
    let second = client
        .download_database(DatabaseSource::Asn, etag.as_deref())
        .await
        .unwrap();
    assert_eq!(second, Download::NotModified);
    assert_eq!(
        header(&stub.last(), "if-none-match"),
        Some("\"fa2b851f9155838b\"")
    );

    stub.push(Canned {
        status: 429,
        headers: vec![("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT".into())],
        body: r#"{"error":"rate_limited","message":"Too many requests","status":429}"#.into(),
    });
    // A date in the past: retry now.
    assert!(matches!(
        client.lookup(&[ip("8.8.8.8")]).await,
        Err(ProviderError::RateLimited {
            retry_after: Some(Duration::ZERO)
        })
    ));
}

#[tokio::test]
async fn stub_free_plan_never_uses_the_batch_endpoint() {
    let (_stub, base) = Stub::start().await;
    let client = OpenIpApiClient::new(&settings(&base, "oip_free_key"), Plan::Free).unwrap();
    assert_eq!(client.max_batch(), 1);
    assert!(matches!(
        client.lookup(&[ip("8.8.8.8"), ip("1.1.1.1")]).await,
        Err(ProviderError::BatchTooLarge { len: 2, max: 1 })
    ));
}

#[tokio::test]
async fn stub_iptrust_ipgeolocation_cloudflare_requests_and_answers() {
    let (stub, base) = Stub::start().await;

    let trust = IpTrustClient::new(&settings(&base, "trust-key-0003")).unwrap();
    stub.push(canned(
        200,
        r#"{"ip":"74.148.39.34","is_bogon":false,"asn":{"number":"AS8075","risk":0.9}}"#,
    ));
    let answers = trust.lookup(&[ip("74.148.39.34")]).await.unwrap();
    assert!(
        matches!(&answers[0], Answer::Found(r) if r.threat.as_ref().unwrap().score == Some(90))
    );
    let seen = stub.last();
    assert_eq!(seen.uri, "/ip/74.148.39.34");
    assert_eq!(header(&seen, "x-api-key"), Some("trust-key-0003"));
    stub.push(canned(200, r#"{"ip":"10.0.0.1","is_bogon":true}"#));
    assert_eq!(
        trust.lookup(&[ip("10.0.0.1")]).await.unwrap(),
        vec![Answer::NoData]
    );
    stub.push(canned(200, r#"{"ip":"2001:db8::1","is_bogon":false}"#));
    trust.lookup(&[ip("2001:db8::1")]).await.unwrap();
    assert_eq!(stub.last().uri, "/ip/2001:db8::1");

    let geo = IpGeolocationClient::new(&settings(&base, "geo-key-0004")).unwrap();
    stub.push(Canned {
        status: 200,
        headers: vec![("X-Credits-Charged", "1".into())],
        body: r#"{"ip":"49.12.0.0","asn":{"as_number":"AS24940","organization":"Hetzner Online GmbH","type":"HOSTING"}}"#.into(),
    });
    let answers = geo.lookup(&[ip("49.12.0.0")]).await.unwrap();
    assert!(
        matches!(&answers[0], Answer::Found(r) if r.asn.as_ref().unwrap().kind.as_deref() == Some("hosting"))
    );
    let seen = stub.last();
    assert_eq!(
        seen.uri,
        "/v3/asn?ip=49.12.0.0&include=routes&apiKey=geo-key-0004"
    );
    assert_eq!(header(&seen, "x-api-key"), None);
    assert_eq!(geo.last_credits_charged(), Some(1.0));
    stub.push(canned(
        423,
        r#"{"message":"'10.0.0.1' is a bogon IP address."}"#,
    ));
    assert_eq!(
        geo.lookup(&[ip("10.0.0.1")]).await.unwrap(),
        vec![Answer::NoData]
    );
    stub.push(canned(
        404,
        r#"{"message":"Provided ASN or IP Address does not exist in our database."}"#,
    ));
    assert_eq!(
        geo.lookup(&[ip("192.0.2.7")]).await.unwrap(),
        vec![Answer::NoData]
    );
    assert_eq!(geo.credits_charged_total(), 1.0);
    stub.push(canned(
        200,
        r#"{"asn":{"as_number":"AS24940","num_of_ipv4_routes":"84"}}"#,
    ));
    let body = geo
        .lookup_asn(
            "24940",
            &[
                ipenrich::lookup::providers::ipgeolocation::Include::Peers,
                ipenrich::lookup::providers::ipgeolocation::Include::Routes,
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        body.asn.unwrap().num_of_ipv4_routes.unwrap().value(),
        Some(84)
    );
    assert_eq!(
        stub.last().uri,
        "/v3/asn?asn=24940&include=peers%2Croutes&apiKey=geo-key-0004"
    );

    let cf = CloudflareRadarClient::new(&settings(&base, "cf-token-0005")).unwrap();
    stub.push(canned(200, r#"{"result":{"asn":{"asn":13335,"name":"CLOUDFLARENET","orgName":"Cloudflare, Inc.","source":"ARIN","website":"https://www.cloudflare.com"}},"success":true}"#));
    let answers = cf.lookup(&[ip("1.1.1.1")]).await.unwrap();
    assert!(
        matches!(&answers[0], Answer::Found(r) if r.asn.as_ref().unwrap().number == Some(13335))
    );
    let seen = stub.last();
    assert_eq!(seen.uri, "/client/v4/radar/entities/asns/ip?ip=1.1.1.1");
    assert_eq!(header(&seen, "authorization"), Some("Bearer cf-token-0005"));
    stub.push(canned(
        200,
        r#"{"result":null,"success":false,"errors":[{"code":1000,"message":"boom"}]}"#,
    ));
    assert!(
        matches!(cf.lookup(&[ip("1.1.1.1")]).await, Err(ProviderError::Rejected { message }) if message == "boom")
    );
    stub.push(canned(200, r#"{"success":true,"result":{}}"#));
    assert_eq!(
        cf.lookup(&[ip("192.0.2.9")]).await.unwrap(),
        vec![Answer::NoData]
    );
}

#[tokio::test]
async fn stub_base_url_with_a_path_prefix() {
    let (stub, base) = Stub::start().await;
    let client = IpTrustClient::new(&settings(&format!("{base}/iptrust/"), "k-prefix")).unwrap();
    stub.push(canned(200, r#"{"ip":"9.9.9.9"}"#));
    client.lookup(&[ip("9.9.9.9")]).await.unwrap();
    assert_eq!(stub.last().uri, "/iptrust/ip/9.9.9.9");
}

// ------------------------------------------------------------- leak test

/// Everything written by the test-wide subscriber.
fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        // `try_init` also installs the `log` bridge, as `telemetry::init` does, so
        // reqwest's and hyper's own `log` records are captured too.
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || BufferWriter(writer.clone()))
            .try_init();
        buffer
    })
}

struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Display, Debug and the source chain of an error.
fn describe(error: &ProviderError) -> String {
    let mut text = format!("{error} | {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(&format!(" | {s} | {s:?}"));
        source = s.source();
    }
    text
}

/// Error statuses of every document, each with a body that echoes the request
/// (URL with `apiKey`, headers with the key) in every message field we read.
const ECHO_BODY: &str = r#"{"success":false,"error":"{echo}","message":"{echo}","status":0,"errors":[{"code":1,"message":"{echo}"}]}"#;
const STATUSES: [u16; 15] = [
    400, 401, 403, 404, 405, 422, 423, 429, 499, 500, 502, 503, 504, 505, 418,
];

/// Runs `call` for every status and for a 200 with an undecodable body, returning
/// everything the caller could print.
async fn error_paths<F, Fut, T>(stub: &Stub, call: F) -> String
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
    T: std::fmt::Debug,
{
    let mut out = String::new();
    let mut bodies: Vec<Canned> = STATUSES.iter().map(|s| canned(*s, ECHO_BODY)).collect();
    bodies.push(canned(200, "{echo} is not json"));
    bodies.push(canned(
        200,
        r#"{"success":false,"errors":[{"message":"{echo}"}]}"#,
    ));
    bodies.push(canned(
        200,
        r#"{"success":true,"data":{"ip":"{echo}"},"results":[{"ip":"{echo}"}]}"#,
    ));
    for body in bodies {
        stub.push(body);
        match call().await {
            Ok(value) => out.push_str(&format!("{value:?}\n")),
            Err(error) => out.push_str(&format!("{}\n", describe(&error))),
        }
    }
    out
}

fn assert_clean(what: &str, text: &str, key: &str) {
    assert!(!text.contains(key), "{what} leaks the key:\n{text}");
    assert!(
        !text.contains(&key[..8]),
        "{what} leaks the key prefix:\n{text}"
    );
}

#[tokio::test]
async fn no_secret_leaks_on_any_error_path() {
    let logs = log_buffer();
    let (stub, base) = Stub::start().await;
    // Distinct first 8 characters per provider.
    let keys = [
        "Qm7ins1ghtsK3Y-9f8e7d6c5b4a",
        "Xo9pen1papiK3Y-0a1b2c3d4e5f",
        "Vt4trustK3Yzz-13579bdf2468a",
        "Gz2ge0l0cK3Yy-abcdef0123456",
        "Cf8radarT0KEN-fedcba9876543",
    ];
    let mut outputs = Vec::new();

    let c = IpInsightsClient::new(&settings(&base, keys[0])).unwrap();
    let report = ReportRequest {
        ip: ip("203.0.113.42"),
        categories: vec![ReportCategory::PortScan],
        comment: None,
        source: Some(ReportSource::Manual),
    };
    let pair = [ip("8.8.8.8"), ip("1.1.1.1")];
    let mut out = error_paths(&stub, || c.lookup_ip(ip("8.8.8.8"))).await;
    out += &error_paths(&stub, || c.bulk_lookup(&pair)).await;
    out += &error_paths(&stub, || c.lookup_asn("AS15169")).await;
    out += &error_paths(&stub, || c.report(&report)).await;
    assert_eq!(
        header(&stub.last(), "x-api-key"),
        Some(keys[0]),
        "key was sent"
    );
    outputs.push((keys[0], out));

    let c = OpenIpApiClient::new(&settings(&base, keys[1]), Plan::Pro).unwrap();
    let mut out = error_paths(&stub, || c.lookup_ip(ip("8.8.8.8"))).await;
    out += &error_paths(&stub, || c.lookup_batch(&pair)).await;
    out += &error_paths(&stub, || c.asn(13335)).await;
    out += &error_paths(&stub, || c.fraud(ip("8.8.8.8"))).await;
    // A 200 download is the provider's opaque file (here an echo of the request,
    // key included): only its size and ETag are outputs of ours.
    out += &error_paths(&stub, || async {
        c.download_database(DatabaseSource::Country, Some("\"e\""))
            .await
            .map(|d| match d {
                Download::Modified { bytes, etag } => {
                    format!("{} bytes, etag {etag:?}", bytes.len())
                }
                Download::NotModified => "not modified".to_owned(),
            })
    })
    .await;
    outputs.push((keys[1], out));

    let c = IpTrustClient::new(&settings(&base, keys[2])).unwrap();
    outputs.push((
        keys[2],
        error_paths(&stub, || c.lookup_ip(ip("8.8.8.8"))).await,
    ));

    let c = IpGeolocationClient::new(&settings(&base, keys[3])).unwrap();
    let mut out = error_paths(&stub, || c.lookup_ip(ip("8.8.8.8"))).await;
    out += &error_paths(&stub, || c.lookup_asn("AS24940", &[])).await;
    assert!(
        stub.last().uri.contains(keys[3]),
        "key was sent in the query"
    );
    outputs.push((keys[3], out));

    let c = CloudflareRadarClient::new(&settings(&base, keys[4])).unwrap();
    outputs.push((
        keys[4],
        error_paths(&stub, || c.lookup_ip(ip("8.8.8.8"))).await,
    ));

    // Transport failures: a closed port and a server that never answers.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let silent = silent_server().await;
    for (i, key) in keys.iter().enumerate() {
        for (addr, expect_timeout) in [(closed, false), (silent, true)] {
            // Short timeouts only against the server that never answers: a refused
            // connection must be `Connect` even when refusing takes a while.
            let s = if expect_timeout {
                HttpSettings::new(&format!("http://{addr}"), Secret::new(key).unwrap())
                    .unwrap()
                    .with_timeouts(
                        Duration::from_secs(2),
                        Duration::from_millis(300),
                        Duration::from_millis(600),
                    )
            } else {
                settings(&format!("http://{addr}"), key)
            };
            let result = match i {
                0 => {
                    IpInsightsClient::new(&s)
                        .unwrap()
                        .lookup(&[ip("8.8.8.8")])
                        .await
                }
                1 => {
                    OpenIpApiClient::new(&s, Plan::Pro)
                        .unwrap()
                        .lookup(&[ip("8.8.8.8")])
                        .await
                }
                2 => {
                    IpTrustClient::new(&s)
                        .unwrap()
                        .lookup(&[ip("8.8.8.8")])
                        .await
                }
                3 => {
                    IpGeolocationClient::new(&s)
                        .unwrap()
                        .lookup(&[ip("8.8.8.8")])
                        .await
                }
                _ => {
                    CloudflareRadarClient::new(&s)
                        .unwrap()
                        .lookup(&[ip("8.8.8.8")])
                        .await
                }
            };
            let error = result.unwrap_err();
            if expect_timeout {
                assert!(matches!(error, ProviderError::Timeout), "{error:?}");
            } else {
                assert!(matches!(error, ProviderError::Connect { .. }), "{error:?}");
            }
            outputs.push((key, describe(&error)));
        }
    }

    let captured = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    // The capture works: our own records and reqwest's `log` records are in it.
    assert!(captured.contains("provider refused"), "{captured}");
    assert!(
        captured.contains("provider=\"ipgeolocation\""),
        "{captured}"
    );
    assert!(captured.contains("starting new connection"), "{captured}");
    for (key, out) in &outputs {
        assert!(!out.is_empty());
        assert_clean("an error or output", out, key);
        assert_clean("the captured logs", &captured, key);
    }
}

/// Accepts connections and never writes a byte.
async fn silent_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

// ------------------------------------------------------- against the simulator

use ipenrich::lookup::providers::ipgeolocation::Include;
use ipenrich::simulate::{self, RateLimitConfig, SimConfig, SimHandle};

async fn sim(config: SimConfig) -> SimHandle {
    simulate::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn sim_settings(sim: &SimHandle, provider: &str) -> HttpSettings {
    settings(&sim.base_url(provider), &format!("sim-{provider}-key"))
}

fn found(answer: &Answer) -> &ipenrich::lookup::record::IntelRecord {
    match answer {
        Answer::Found(record) => record,
        Answer::NoData => panic!("expected a record, got no data"),
    }
}

#[tokio::test]
async fn sim_ipinsights_contract() {
    let sim = sim(SimConfig::default()).await;
    let client = IpInsightsClient::new(&sim_settings(&sim, "ipinsights")).unwrap();

    // The documented example address answers the documented example.
    let answers = client.lookup(&[ip("8.8.8.8")]).await.unwrap();
    let record = found(&answers[0]);
    assert_eq!(record.asn.as_ref().unwrap().number, Some(15169));
    assert_eq!(
        record.geo.as_ref().unwrap().city.as_deref(),
        Some("Mountain View")
    );
    assert_eq!(record.threat.as_ref().unwrap().score, Some(10));
    let rate = client.last_rate_info().unwrap();
    assert_eq!(rate.limit, Some(600));
    assert!(rate.remaining.is_some());

    let answers = client
        .lookup(&[ip("8.8.8.8"), ip("10.0.0.1"), ip("1.1.1.1")])
        .await
        .unwrap();
    assert_eq!(found(&answers[0]).asn.as_ref().unwrap().number, Some(15169));
    assert_eq!(answers[1], Answer::NoData);
    assert!(found(&answers[2]).asn.as_ref().unwrap().number.is_some());
    // 422 on a single private lookup is no data, not an error.
    assert_eq!(
        client.lookup(&[ip("10.0.0.1")]).await.unwrap(),
        vec![Answer::NoData]
    );

    assert_eq!(
        client.lookup_asn("AS15169").await.unwrap().total_ips,
        Some(42)
    );
    let cidr = client
        .lookup_cidr("8.8.8.0/24".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(cidr.total_ips_in_db, Some(5));

    let report = ReportRequest {
        ip: ip("203.0.113.42"),
        categories: vec![ReportCategory::SshBruteforce, ReportCategory::PortScan],
        comment: Some("10 failed SSH logins from this IP in 60s".into()),
        source: Some(ReportSource::Manual),
    };
    assert_eq!(client.report(&report).await.unwrap().report_id, 18429);
    assert!(matches!(
        client.report(&report).await,
        Err(ProviderError::Duplicate { .. })
    ));
    let private = ReportRequest {
        ip: ip("10.0.0.1"),
        ..report.clone()
    };
    assert!(matches!(
        client.report(&private).await,
        Err(ProviderError::Unprocessable { .. })
    ));
    let accounting = sim.accounting();
    assert_eq!(accounting.ipinsights.reports.len(), 1);
    assert_eq!(accounting.ipinsights.endpoint("bulk_lookup"), 1);

    let wrong =
        IpInsightsClient::new(&settings(&sim.base_url("ipinsights"), "not-the-key")).unwrap();
    assert!(matches!(
        wrong.lookup(&[ip("8.8.8.8")]).await,
        Err(ProviderError::Unauthorized { .. })
    ));

    // Rate limit: 429 with Retry-After, visible in the error and in the rate info.
    let mut config = SimConfig::default();
    config.ipinsights.rate_limit = Some(RateLimitConfig {
        requests: 1,
        window_ms: 3_600_000,
    });
    sim.set_config(config).unwrap();
    sim.reset();
    client.lookup(&[ip("9.9.9.9")]).await.unwrap();
    let error = client.lookup(&[ip("9.9.9.9")]).await.unwrap_err();
    let ProviderError::RateLimited {
        retry_after: Some(wait),
    } = error
    else {
        panic!("{error:?}")
    };
    assert!(wait > Duration::ZERO);
    assert_eq!(client.last_rate_info().unwrap().retry_after, Some(wait));
    assert_eq!(client.last_rate_info().unwrap().remaining, Some(0));
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_openipapi_contract() {
    let sim = sim(SimConfig::default()).await;
    let client = OpenIpApiClient::new(&sim_settings(&sim, "openipapi"), Plan::Business).unwrap();
    assert_eq!(client.max_batch(), 1_000);

    let answers = client.lookup(&[ip("185.220.101.45")]).await.unwrap();
    let record = found(&answers[0]);
    assert_eq!(record.asn.as_ref().unwrap().number, Some(205100));
    assert_eq!(record.threat.as_ref().unwrap().score, Some(85));
    assert_eq!(record.threat.as_ref().unwrap().is_tor, Some(true));

    let answers = client
        .lookup(&[ip("185.220.101.45"), ip("8.8.8.8"), ip("10.0.0.1")])
        .await
        .unwrap();
    assert_eq!(
        found(&answers[0]).asn.as_ref().unwrap().number,
        Some(205100)
    );
    assert!(found(&answers[1]).asn.is_some());
    assert_eq!(answers[2], Answer::NoData);
    assert_eq!(
        client.lookup(&[ip("10.0.0.1")]).await.unwrap(),
        vec![Answer::NoData]
    );

    assert_eq!(client.asn(13335).await.unwrap().total_ips, Some(2359296));
    let fraud = client.fraud(ip("185.220.101.45")).await.unwrap();
    assert_eq!(
        (fraud.fraud_score, fraud.recommendation.as_deref()),
        (Some(92.0), Some("block"))
    );

    let Download::Modified { bytes, etag } = client
        .download_database(DatabaseSource::Asn, None)
        .await
        .unwrap()
    else {
        panic!("first download must carry the file")
    };
    assert!(!bytes.is_empty());
    let etag = etag.expect("the download has an ETag");
    assert_eq!(
        client
            .download_database(DatabaseSource::Asn, Some(&etag))
            .await
            .unwrap(),
        Download::NotModified
    );

    let wrong = OpenIpApiClient::new(
        &settings(&sim.base_url("openipapi"), "oip_wrong"),
        Plan::Business,
    )
    .unwrap();
    assert!(matches!(
        wrong.lookup(&[ip("8.8.8.8")]).await,
        Err(ProviderError::Unauthorized { .. })
    ));

    // Free plan: batch, ASN and fraud need a plan.
    let mut config = SimConfig::default();
    config.openipapi.plan = Some("free".into());
    sim.set_config(config).unwrap();
    let starter = OpenIpApiClient::new(&sim_settings(&sim, "openipapi"), Plan::Starter).unwrap();
    assert!(matches!(
        starter.lookup(&[ip("8.8.8.8"), ip("1.1.1.1")]).await,
        Err(ProviderError::PlanRequired { .. })
    ));
    assert!(matches!(
        starter.asn(13335).await,
        Err(ProviderError::PlanRequired { .. })
    ));

    // Quota and rate limit.
    let mut config = SimConfig::default();
    config.openipapi.quota = Some(1);
    sim.set_config(config).unwrap();
    sim.reset();
    client.lookup(&[ip("8.8.8.8")]).await.unwrap();
    assert!(matches!(
        client.lookup(&[ip("8.8.8.8")]).await,
        Err(ProviderError::QuotaExceeded { .. })
    ));
    let mut config = SimConfig::default();
    config.openipapi.rate_limit = Some(RateLimitConfig {
        requests: 1,
        window_ms: 60_000,
    });
    sim.set_config(config).unwrap();
    sim.reset();
    client.lookup(&[ip("8.8.8.8")]).await.unwrap();
    assert!(matches!(
        client.lookup(&[ip("8.8.8.8")]).await,
        Err(ProviderError::RateLimited {
            retry_after: Some(_)
        })
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_iptrust_ipgeolocation_cloudflare_contract() {
    let mut config = SimConfig::default();
    config.iptrust.forbidden_keys = vec!["trust-forbidden-key".into()];
    let sim = sim(config).await;

    let trust = IpTrustClient::new(&sim_settings(&sim, "iptrust")).unwrap();
    let answers = trust.lookup(&[ip("74.148.39.34")]).await.unwrap();
    let record = found(&answers[0]);
    assert_eq!(record.asn.as_ref().unwrap().number, Some(8075));
    assert_eq!(record.threat.as_ref().unwrap().score, Some(90));
    assert_eq!(
        record.geo.as_ref().unwrap().country_code.as_deref(),
        Some("ES")
    );
    assert_eq!(
        trust.lookup(&[ip("10.0.0.1")]).await.unwrap(),
        vec![Answer::NoData]
    );
    let forbidden =
        IpTrustClient::new(&settings(&sim.base_url("iptrust"), "trust-forbidden-key")).unwrap();
    assert!(matches!(
        forbidden.lookup(&[ip("8.8.8.8")]).await,
        Err(ProviderError::Forbidden { .. })
    ));
    let wrong = IpTrustClient::new(&settings(&sim.base_url("iptrust"), "trust-wrong-key")).unwrap();
    assert!(matches!(
        wrong.lookup(&[ip("8.8.8.8")]).await,
        Err(ProviderError::Unauthorized { .. })
    ));

    let geo = IpGeolocationClient::new(&sim_settings(&sim, "ipgeolocation")).unwrap();
    let answers = geo.lookup(&[ip("49.12.0.0")]).await.unwrap();
    let asn = found(&answers[0]).asn.clone().unwrap();
    assert_eq!(asn.number, Some(24940));
    assert_eq!(asn.name.as_deref(), Some("HETZNER-AS"));
    assert_eq!(asn.kind.as_deref(), Some("hosting"));
    assert_eq!(geo.credits_charged_total(), 1.0);
    assert_eq!(
        geo.lookup(&[ip("10.0.0.1")]).await.unwrap(),
        vec![Answer::NoData]
    );
    assert_eq!(geo.credits_charged_total(), 1.0, "no credit for a 423");
    let body = geo
        .lookup_asn("AS24940", &[Include::Peers, Include::Routes])
        .await
        .unwrap();
    let detail = body.asn.unwrap();
    assert!(!detail.peers.is_empty());
    assert_eq!(detail.num_of_ipv4_routes.unwrap().value(), Some(84));
    assert_eq!(sim.accounting().ipgeolocation.credits, 2);
    let wrong =
        IpGeolocationClient::new(&settings(&sim.base_url("ipgeolocation"), "geo-wrong-key"))
            .unwrap();
    assert!(matches!(
        wrong.lookup(&[ip("8.8.8.8")]).await,
        Err(ProviderError::Unauthorized { .. })
    ));

    // A 429 with Retry-After is a rate window; the surcharge limit (no Retry-After)
    // is a spent allowance.
    let mut config = SimConfig::default();
    config.ipgeolocation.rate_limit = Some(RateLimitConfig {
        requests: 1,
        window_ms: 60_000,
    });
    sim.set_config(config).unwrap();
    sim.reset();
    geo.lookup(&[ip("8.8.8.8")]).await.unwrap();
    assert!(matches!(
        geo.lookup(&[ip("8.8.8.8")]).await,
        Err(ProviderError::RateLimited {
            retry_after: Some(_)
        })
    ));
    let mut config = SimConfig::default();
    config.ipgeolocation.quota = Some(1);
    sim.set_config(config).unwrap();
    sim.reset();
    geo.lookup(&[ip("8.8.8.8")]).await.unwrap();
    assert!(matches!(
        geo.lookup(&[ip("8.8.8.8")]).await,
        Err(ProviderError::QuotaExceeded { .. })
    ));
    sim.set_config(SimConfig::default()).unwrap();

    let cf = CloudflareRadarClient::new(&sim_settings(&sim, "cloudflare")).unwrap();
    let answers = cf.lookup(&[ip("17.1.2.3")]).await.unwrap();
    let asn = found(&answers[0]).asn.clone().unwrap();
    assert_eq!(asn.number, Some(714));
    assert_eq!(asn.rir.as_deref(), Some("ripe"));
    assert_eq!(asn.domain.as_deref(), Some("www.apple.com"));
    assert_eq!(
        cf.lookup(&[ip("10.0.0.1")]).await.unwrap(),
        vec![Answer::NoData]
    );
    let wrong =
        CloudflareRadarClient::new(&settings(&sim.base_url("cloudflare"), "cf-wrong-token"))
            .unwrap();
    assert!(matches!(
        wrong.lookup(&[ip("8.8.8.8")]).await,
        Err(ProviderError::Unauthorized { .. })
    ));
    sim.shutdown().await;
}

/// Injected faults (5xx, truncated JSON, TCP reset, latency past the client's
/// timeout) become typed, key-free errors for every client.
#[tokio::test]
async fn sim_faults_map_to_typed_errors() {
    let sim = sim(SimConfig::default()).await;
    let names = [
        "ipinsights",
        "openipapi",
        "iptrust",
        "ipgeolocation",
        "cloudflare",
    ];
    let lookup = |name: &'static str, s: HttpSettings| async move {
        let target = [ip("8.8.8.8")];
        match name {
            "ipinsights" => IpInsightsClient::new(&s).unwrap().lookup(&target).await,
            "openipapi" => {
                OpenIpApiClient::new(&s, Plan::Business)
                    .unwrap()
                    .lookup(&target)
                    .await
            }
            "iptrust" => IpTrustClient::new(&s).unwrap().lookup(&target).await,
            "ipgeolocation" => IpGeolocationClient::new(&s).unwrap().lookup(&target).await,
            _ => {
                CloudflareRadarClient::new(&s)
                    .unwrap()
                    .lookup(&target)
                    .await
            }
        }
    };
    type Check = fn(&ProviderError) -> bool;
    let cases: [(&str, Check); 4] = [
        ("server_error", |e| {
            matches!(e, ProviderError::Server { status: 503, .. })
        }),
        ("malformed", |e| matches!(e, ProviderError::Decode { .. })),
        ("reset", |e| {
            matches!(
                e,
                ProviderError::Transport { .. } | ProviderError::Connect { .. }
            )
        }),
        ("latency", |e| matches!(e, ProviderError::Timeout)),
    ];
    for (fault, check) in cases {
        let mut config = SimConfig::default();
        for name in names {
            let pc = match name {
                "ipinsights" => &mut config.ipinsights,
                "openipapi" => &mut config.openipapi,
                "iptrust" => &mut config.iptrust,
                "ipgeolocation" => &mut config.ipgeolocation,
                _ => &mut config.cloudflare,
            };
            match fault {
                "server_error" => {
                    pc.faults.server_error_rate = 1.0;
                    pc.faults.server_error_status = Some(503);
                }
                "malformed" => pc.faults.malformed_rate = 1.0,
                "reset" => pc.faults.reset_rate = 1.0,
                _ => pc.faults.latency_ms = 2_000,
            }
        }
        sim.set_config(config).unwrap();
        for name in names {
            let key = format!("sim-{name}-key");
            // Short timeouts only where a timeout is the subject (2 s latency).
            let s = if fault == "latency" {
                settings(&sim.base_url(name), &key).with_timeouts(
                    Duration::from_secs(2),
                    Duration::from_millis(300),
                    Duration::from_millis(500),
                )
            } else {
                settings(&sim.base_url(name), &key)
            };
            let error = lookup(name, s).await.unwrap_err();
            assert!(check(&error), "{name} {fault}: {error:?}");
            let text = describe(&error);
            assert_clean(&format!("{name} {fault}"), &text, &key);
        }
    }
    sim.shutdown().await;
}
