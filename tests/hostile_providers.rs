//! Providers that misbehave in ways the simulator cannot: absurd rate-limit
//! headers, bodies without end, keys rejected. A scripted server on 127.0.0.1:0
//! plays the provider; the real clients, the lookup engine and the reporter's
//! submitter talk to it. What must hold on any machine: nothing panics, every
//! lookup is answered, nothing is asked twice that need not be.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use ipenrich::lookup::engine::{Engine, EngineSettings, Outcome};
use ipenrich::lookup::providers::http::{HttpSettings, MAX_BODY_BYTES};
use ipenrich::lookup::providers::ipinsights::{IpInsightsClient, ReportCategory, ReportRequest};
use ipenrich::lookup::providers::{Provider, ProviderError};
use ipenrich::lookup::rate_limit::{RateLimiter, RateSettings};
use ipenrich::lookup::time::MAX_PROVIDER_PAUSE;
use ipenrich::report::submit::{Sent, Submitter};
use ipenrich::secret::Secret;
use tokio::sync::watch;

/// 2^63 seconds: parses as `u64`, panicked at `Instant + Duration`.
const TWO_TO_THE_63: &str = "9223372036854775808";

/// One scripted answer.
#[derive(Clone)]
struct Script {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Payload,
}

#[derive(Clone)]
enum Payload {
    Text(String),
    /// JSON whitespace for ever, chunked (no `Content-Length`).
    Endless,
    /// This many bytes of whitespace with their `Content-Length`.
    Sized(usize),
}

fn script(status: u16, headers: &[(&'static str, &str)], body: &str) -> Script {
    Script {
        status,
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        body: Payload::Text(body.to_owned()),
    }
}

/// A provider answering each request with the next script, the last one for ever.
#[derive(Clone, Default)]
struct Fake {
    scripts: Arc<Mutex<VecDeque<Script>>>,
    requests: Arc<AtomicUsize>,
}

impl Fake {
    async fn start(scripts: Vec<Script>) -> (Fake, String) {
        let fake = Fake {
            scripts: Arc::new(Mutex::new(scripts.into())),
            requests: Arc::default(),
        };
        let app = Router::new().fallback(answer).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, format!("http://{addr}"))
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn answer(State(fake): State<Fake>) -> Response {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    let s = {
        let mut scripts = fake.scripts.lock().unwrap();
        if scripts.len() > 1 {
            scripts.pop_front()
        } else {
            scripts.front().cloned()
        }
    }
    .unwrap_or_else(|| script(599, &[], "no script"));
    let mut response = Response::builder().status(StatusCode::from_u16(s.status).unwrap());
    for (name, value) in &s.headers {
        response = response.header(*name, value);
    }
    let body = match s.body {
        Payload::Text(text) => Body::from(text),
        Payload::Endless => Body::from_stream(futures::stream::repeat_with(|| {
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(&[b' '; 64 << 10]))
        })),
        Payload::Sized(n) => Body::from(vec![b' '; n]),
    };
    response.body(body).unwrap()
}

fn client(base: &str) -> IpInsightsClient {
    let settings = HttpSettings::new(base, Secret::new("hostile-test-key").unwrap())
        .unwrap()
        .with_timeouts(
            Duration::from_secs(5),
            Duration::from_secs(10),
            Duration::from_secs(30),
        );
    IpInsightsClient::new(&settings).unwrap()
}

fn generous() -> EngineSettings {
    EngineSettings {
        rate: RateSettings {
            requests_per_second: 1000.0,
            request_burst: NonZeroU32::new(1000).unwrap(),
            units_per_second: Some(100_000.0),
            unit_burst: NonZeroU32::new(100_000).unwrap(),
            window_limit: None,
            ..RateSettings::ipinsights()
        },
        ..EngineSettings::default()
    }
}

fn engine(base: &str, settings: EngineSettings) -> Arc<Engine> {
    let limiter = settings.limiter("ipinsights").unwrap();
    Engine::try_new(
        Arc::new(client(base)),
        settings,
        limiter,
        &prometheus::Registry::new(),
    )
    .unwrap()
}

fn public(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x2D00_0000 + n))
}

/// Looks `ips` up concurrently; `None` for one still unanswered after a minute
/// (a give-up bound for a lookup that would otherwise wait forever).
async fn lookup_all(e: &Arc<Engine>, ips: &[IpAddr]) -> Vec<Option<Outcome>> {
    let tasks: Vec<_> = ips
        .iter()
        .map(|&ip| {
            let e = e.clone();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(60), e.lookup(ip))
                    .await
                    .ok()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("the lookup task did not panic"));
    }
    out
}

const BULK_OK: &str = r#"{"success":true,"data":[]}"#;

/// Regression (issue 8 item 6): `Retry-After: 9223372036854775808` on a 429
/// panicked the engine's batch task at `Instant + Duration`; the batch's waiters
/// were never answered and later lookups of the same addresses joined them for
/// ever. Other absurd values (more digits than `u64`, a date in year 9999) and
/// the same header on a 200 next to `X-RateLimit-Remaining: 0` must pause the key
/// for at most `MAX_PROVIDER_PAUSE`, and every lookup must be answered.
#[tokio::test]
async fn absurd_retry_after_pauses_the_key_and_answers_every_lookup() {
    let absurd = [
        TWO_TO_THE_63,
        "18446744073709551615",
        "340282366920938463463374607431768211456",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ];
    for value in absurd {
        for status in [429, 200] {
            let (fake, base) = Fake::start(vec![script(
                status,
                &[
                    ("Retry-After", value),
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Limit", "99999999999999999999999"),
                ],
                BULK_OK,
            )])
            .await;
            // One full bulk of 100 and a batch wait longer than any test: the
            // addresses leave together, whatever the machine's speed.
            let e = engine(
                &base,
                EngineSettings {
                    max_wait: Duration::from_secs(600),
                    ..generous()
                },
            );
            let ips: Vec<IpAddr> = (0..100).map(public).collect();
            let got = lookup_all(&e, &ips).await;
            let expected = if status == 429 {
                Outcome::RateLimited
            } else {
                Outcome::Answer(ipenrich::lookup::providers::Answer::NoData)
            };
            assert_eq!(got, vec![Some(expected); 100], "{status} {value}");
            assert_eq!(fake.requests(), 1, "{status} {value}: one bulk");
            assert_eq!(e.pending(), 0, "{status} {value}");
            let paused = e.limiter().paused_for().expect("the key is paused");
            assert!(paused <= MAX_PROVIDER_PAUSE, "{status} {value}: {paused:?}");
            // Paused (or cached): the same addresses again, nothing is sent.
            let again = lookup_all(&e, &ips[..5]).await;
            if status == 429 {
                assert_eq!(again, vec![Some(Outcome::RateLimited); 5]);
            } else {
                assert!(again.iter().all(|o| matches!(o, Some(Outcome::Answer(_)))));
            }
            assert_eq!(fake.requests(), 1, "{status} {value}: nothing sent");
        }
    }
}

fn report() -> ReportRequest {
    ReportRequest {
        ip: public(7),
        categories: vec![ReportCategory::SshBruteforce],
        comment: None,
        source: None,
    }
}

/// Regression (issue 8 item 6): the same 429 on a report panicked the reporter
/// inside `Permits::rate_limited`, so the report was lost while the ledger
/// already counted it as sent. Now the send fails retryably (the ledger entry
/// is undone), even with attempts left: the clamped pause is longer than a report
/// may hold the decision loop (issue 11 item 5), so it is not sat out.
#[tokio::test]
async fn absurd_retry_after_on_a_report_fails_retryably_without_waiting() {
    let (fake, base) = Fake::start(vec![script(
        429,
        &[("Retry-After", TWO_TO_THE_63)],
        r#"{"success":false,"error":"slow down"}"#,
    )])
    .await;
    let limiter = Arc::new(RateLimiter::try_new("ipinsights", generous().rate).unwrap());
    let (_stop_tx, mut stop) = watch::channel(false);

    let submitter = Submitter::new(client(&base), limiter.clone(), 1);
    match submitter.send(&report(), &mut stop).await {
        Sent::Failed { retryable, .. } => assert!(retryable),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.requests(), 1);
    assert!(limiter.paused_for().unwrap() <= MAX_PROVIDER_PAUSE);

    // With attempts left, the key is paused far longer than a report may wait:
    // the next send fails retryably at once, and nothing is sent inside the pause.
    let submitter = Submitter::new(client(&base), limiter.clone(), 3);
    let started = std::time::Instant::now();
    match submitter.send(&report(), &mut stop).await {
        Sent::Failed { retryable, error } => {
            assert!(retryable);
            assert!(error.contains("no ipinsights permit"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    println!("failed after {:?}", started.elapsed());
    assert_eq!(fake.requests(), 1, "nothing sent inside the pause");
}

/// Regression (issue 8 item 10b): response bodies were read whole with no cap, so
/// a provider streaming without end grew memory until the request timeout (or
/// the OOM killer). Past `MAX_BODY_BYTES` the call is a provider error, the
/// engine answers `Failed`, and the client still works for the next call.
#[tokio::test]
async fn endless_or_huge_bodies_are_a_provider_error() {
    let endless = Script {
        status: 200,
        headers: Vec::new(),
        body: Payload::Endless,
    };
    let huge = Script {
        status: 200,
        headers: Vec::new(),
        body: Payload::Sized(MAX_BODY_BYTES + 1),
    };
    let just_fits = Script {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: Payload::Sized(MAX_BODY_BYTES),
    };
    let (fake, base) = Fake::start(vec![
        endless.clone(),
        huge.clone(),
        endless.clone(),
        just_fits,
        script(200, &[], BULK_OK),
    ])
    .await;
    let c = client(&base);
    let ips = [public(1), public(2)];
    for what in ["endless", "huge"] {
        match c.lookup(&ips).await {
            Err(ProviderError::BodyTooLarge { limit }) => assert_eq!(limit, MAX_BODY_BYTES),
            other => panic!("{what}: {other:?}"),
        }
    }
    // Through the engine: every waiter answered, nothing pending.
    let e = engine(&base, generous());
    assert_eq!(lookup_all(&e, &ips[..1]).await, vec![Some(Outcome::Failed)]);
    assert_eq!(e.pending(), 0);
    // At the cap exactly the body is read (and is not JSON: a decode error).
    assert!(matches!(
        c.lookup(&ips).await,
        Err(ProviderError::Decode { .. })
    ));
    // The client is not wedged by the bodies it dropped.
    assert_eq!(
        c.lookup(&ips).await.unwrap(),
        vec![ipenrich::lookup::providers::Answer::NoData; 2]
    );
    assert_eq!(fake.requests(), 5);
}

/// Regression (issue 8 item 13b): with `on_slow_lookup: backpressure` a 401 or
/// 403 for a revoked key was retried for ever (the event never finished, the
/// pipeline stalled silently). Now `Stage::process` fails fatally after one
/// upstream call, naming the provider, so the pipeline stops with a clear message;
/// under `fail_open` the event goes on marked `unauthorized`.
#[tokio::test]
async fn a_rejected_key_is_fatal_not_retried() {
    use ipenrich::config::{HttpProviderConfig, KeySource, ProviderConfig, SlowLookup};
    use ipenrich::lookup::build::SharedProviders;
    use ipenrich::metrics::Metrics;
    use ipenrich::pipeline::{default_config, Stage, StageError};

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "revoked-key-0001\n").unwrap();
    let (_never, give_up) = tokio::sync::watch::channel(false);
    for (status, body) in [
        (401, r#"{"success":false,"error":"Invalid API key"}"#),
        (403, r#"{"success":false,"error":"Key suspended"}"#),
    ] {
        for mode in [SlowLookup::Backpressure, SlowLookup::FailOpen] {
            let (fake, base) = Fake::start(vec![script(status, &[], body)]).await;
            let mut config = default_config(None, None);
            config.providers = vec![ProviderConfig::Ipinsights(HttpProviderConfig {
                name: None,
                base_url: Some(base),
                api_key: KeySource::File(key.clone()),
                timeouts: Default::default(),
                lookup: Default::default(),
            })];
            config.limits.on_slow_lookup = mode;
            let metrics = Metrics::new();
            let shared = SharedProviders::new(metrics.registry().clone());
            let stage = Stage::new(&config, metrics.pipeline("t"), &shared).unwrap();
            let out = tokio::time::timeout(
                Duration::from_secs(60),
                stage.process(br#"{"src":"45.0.0.1","msg":"login failed"}"#, &give_up),
            )
            .await
            .unwrap_or_else(|_| panic!("{status} {mode:?}: still retrying after a minute"));
            match (mode, out) {
                (SlowLookup::Backpressure, Err(StageError::Fatal(reason))) => {
                    assert!(reason.contains("ipinsights"), "{reason}");
                }
                (SlowLookup::FailOpen, Ok(out)) => {
                    let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
                    assert_eq!(
                        out["enrichment"]["ips"][0]["status"], "unauthorized",
                        "{status} {mode:?}: {out}"
                    );
                }
                (mode, other) => panic!("{status} {mode:?}: {other:?}"),
            }
            assert_eq!(fake.requests(), 1, "{status} {mode:?}: asked once");
        }
    }
}
