//! `ipenrich mmdb fetch` from the outside: the binary against the provider simulator
//! (OpenIPApi's database downloads) and against a fake MaxMind on loopback (Basic
//! auth, a redirect to a "presigned" URL on another port, a `.tar.gz` with an ETag).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use common::*;
use flate2::write::GzEncoder;
use flate2::Compression;

const OIP_KEY: &str = "sim-openipapi-key";
const ACCOUNT: &str = "424242";
const LICENSE: &str = "l1cense-Sekr1t-0001";
const EDITION: &str = "GeoLite2-ASN";

fn demo_mmdb() -> Vec<u8> {
    std::fs::read(root().join("samples/demo-asn.mmdb")).unwrap()
}

/// Runs `ipenrich mmdb fetch ARGS` with `env` (and no other credentials).
async fn fetch(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(["mmdb", "fetch"])
        .args(args)
        .env_remove("OPENIPAPI_API_KEY")
        .env_remove("MAXMIND_ACCOUNT_ID")
        .env_remove("MAXMIND_LICENSE_KEY")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file in `dir`, sorted: no leftover temporary file may stay.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn asn_of(path: &Path, ip: &str) -> u64 {
    let reader =
        maxminddb::Reader::from_source(std::fs::read(path).unwrap()).expect("a readable mmdb");
    let record: serde_json::Value = reader
        .lookup(ip.parse().unwrap())
        .unwrap()
        .decode()
        .unwrap()
        .expect("the address is in the database");
    record["autonomous_system_number"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openipapi_fetch_writes_a_database_then_a_304_keeps_it() {
    let sim = start_sim(Default::default()).await;
    let base = sim.base_url("openipapi");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("asn.mmdb");
    let args = openipapi_args("asn", &out, &base);
    let first = fetch(&args, &[("OPENIPAPI_API_KEY", OIP_KEY)]).await;
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("database updated"),
        "{}",
        stderr(&first)
    );
    assert_eq!(asn_of(&out, "8.8.8.8"), 15169);
    assert_eq!(files(dir.path()), ["asn.mmdb", "asn.mmdb.etag"]);
    let bytes = std::fs::read(&out).unwrap();
    let modified = std::fs::metadata(&out).unwrap().modified().unwrap();

    let second = fetch(&args, &[("OPENIPAPI_API_KEY", OIP_KEY)]).await;
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stderr(&second).contains("unchanged"), "{}", stderr(&second));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    assert_eq!(
        std::fs::metadata(&out).unwrap().modified().unwrap(),
        modified,
        "a 304 does not rewrite the file"
    );
    let statuses = &sim.accounting().openipapi.responses_by_status;
    assert_eq!(statuses.get(&200), Some(&1), "{statuses:?}");
    assert_eq!(
        statuses.get(&304),
        Some(&1),
        "one download spent: {statuses:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_missing_key_fails_without_printing_it() {
    let sim = start_sim(Default::default()).await;
    let base = sim.base_url("openipapi");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("asn.mmdb");
    let args = openipapi_args("asn", &out, &base);
    let wrong = "wrong-Key-7c1d9e";
    let refused = fetch(&args, &[("OPENIPAPI_API_KEY", wrong)]).await;
    assert!(!refused.status.success());
    let text = stderr(&refused);
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(!text.contains(wrong), "the key is printed: {text}");
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));

    // A refused key fails even beside a valid database: it will not fix itself.
    std::fs::write(&out, demo_mmdb()).unwrap();
    let refused = fetch(&args, &[("OPENIPAPI_API_KEY", wrong)]).await;
    assert!(!refused.status.success(), "{}", stderr(&refused));
    assert_eq!(std::fs::read(&out).unwrap(), demo_mmdb());

    let missing = fetch(&args, &[]).await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("environment variable OPENIPAPI_API_KEY is not set"),
        "{}",
        stderr(&missing)
    );
    let geolite = fetch(
        &[
            "--source",
            "geolite2",
            "--edition",
            EDITION,
            "--out",
            "x.mmdb",
        ],
        &[("MAXMIND_ACCOUNT_ID", ACCOUNT)],
    )
    .await;
    assert!(!geolite.status.success());
    assert!(
        stderr(&geolite).contains("MAXMIND_LICENSE_KEY is not set"),
        "{}",
        stderr(&geolite)
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_keeps_a_valid_database_and_exits_zero() {
    let sim = start_sim(Default::default()).await;
    let base = sim.base_url("openipapi");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.mmdb");
    // `nope` is no database source: 404.
    let args = openipapi_args("nope", &out, &base);
    let env = [("OPENIPAPI_API_KEY", OIP_KEY)];
    let without = fetch(&args, &env).await;
    assert!(!without.status.success());
    assert!(
        stderr(&without).contains("HTTP 404"),
        "{}",
        stderr(&without)
    );

    std::fs::write(&out, demo_mmdb()).unwrap();
    let with = fetch(&args, &env).await;
    assert!(with.status.success(), "{}", stderr(&with));
    assert!(
        stderr(&with).contains("keeping the valid database"),
        "{}",
        stderr(&with)
    );
    assert_eq!(std::fs::read(&out).unwrap(), demo_mmdb());

    // A broken file there is no database to keep.
    std::fs::write(&out, b"not a database").unwrap();
    let broken = fetch(&args, &env).await;
    assert!(!broken.status.success(), "{}", stderr(&broken));
    assert_eq!(std::fs::read(&out).unwrap(), b"not a database");
    sim.shutdown().await;
}

/// A fake MaxMind: the API checks Basic auth and redirects to the "CDN" on another
/// port, which must not see the credentials and serves `archive` with an ETag.
struct FakeMaxMind {
    archive: Vec<u8>,
    etag: &'static str,
    /// Status of every API answer instead of the redirect, when set.
    fail_with: Option<StatusCode>,
    cdn: std::sync::OnceLock<String>,
    api_hits: AtomicUsize,
    downloads: AtomicUsize,
    not_modified: AtomicUsize,
}

impl FakeMaxMind {
    async fn start(archive: Vec<u8>, fail_with: Option<StatusCode>) -> (Arc<FakeMaxMind>, String) {
        let fake = Arc::new(FakeMaxMind {
            archive,
            etag: "\"d41d8cd98f00b204\"",
            fail_with,
            cdn: std::sync::OnceLock::new(),
            api_hits: AtomicUsize::new(0),
            downloads: AtomicUsize::new(0),
            not_modified: AtomicUsize::new(0),
        });
        let api = Router::new()
            .route("/geoip/databases/{edition}/download", get(api_download))
            .with_state(fake.clone());
        let cdn = Router::new()
            .route("/presigned/{name}", get(cdn_download))
            .with_state(fake.clone());
        let api_addr = serve(api).await;
        let cdn_addr = serve(cdn).await;
        fake.cdn.set(format!("http://{cdn_addr}")).unwrap();
        (fake, format!("http://{api_addr}"))
    }
}

async fn serve(router: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn api_download(
    State(fake): State<Arc<FakeMaxMind>>,
    axum::extract::Path(edition): axum::extract::Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    fake.api_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(status) = fake.fail_with {
        return status.into_response();
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{LICENSE}"))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
    {
        return (
            StatusCode::UNAUTHORIZED,
            "Invalid account ID or license key",
        )
            .into_response();
    }
    if edition != EDITION || query.get("suffix").map(String::as_str) != Some("tar.gz") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let cdn = fake.cdn.get().unwrap();
    let location = format!("{cdn}/presigned/{edition}.tar.gz?X-Amz-Signature=s1gnature");
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

async fn cdn_download(State(fake): State<Arc<FakeMaxMind>>, headers: HeaderMap) -> Response {
    if headers.contains_key(header::AUTHORIZATION) {
        return (StatusCode::BAD_REQUEST, "credentials sent to the CDN").into_response();
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(fake.etag)
    {
        fake.not_modified.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, fake.etag)]).into_response();
    }
    fake.downloads.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::OK,
        [(header::ETAG, fake.etag)],
        fake.archive.clone(),
    )
        .into_response()
}

/// A `.tar.gz` of regular files, as MaxMind packs them.
fn tar_gz(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, *bytes).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn maxmind_archive(database: &[u8]) -> Vec<u8> {
    tar_gz(&[
        ("GeoLite2-ASN_20260419/COPYRIGHT.txt", b"(c) MaxMind"),
        ("GeoLite2-ASN_20260419/LICENSE.txt", b"GeoLite2 EULA"),
        ("GeoLite2-ASN_20260419/GeoLite2-ASN.mmdb", database),
    ])
}

fn openipapi_args<'a>(edition: &'a str, out: &'a Path, base: &'a str) -> Vec<&'a str> {
    vec![
        "--source",
        "openipapi",
        "--edition",
        edition,
        "--out",
        out.to_str().unwrap(),
        "--url",
        base,
    ]
}

fn geolite_args<'a>(out: &'a Path, base: &'a str) -> Vec<&'a str> {
    vec![
        "--source",
        "geolite2",
        "--edition",
        EDITION,
        "--out",
        out.to_str().unwrap(),
        "--url",
        base,
    ]
}

const MAXMIND_ENV: [(&str, &str); 2] = [
    ("MAXMIND_ACCOUNT_ID", ACCOUNT),
    ("MAXMIND_LICENSE_KEY", LICENSE),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geolite2_follows_the_redirect_extracts_and_honours_the_etag() {
    let (fake, base) = FakeMaxMind::start(maxmind_archive(&demo_mmdb()), None).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("GeoLite2-ASN.mmdb");
    let args = geolite_args(&out, &base);
    let first = fetch(&args, &MAXMIND_ENV).await;
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(std::fs::read(&out).unwrap(), demo_mmdb());
    assert_eq!(
        files(dir.path()),
        ["GeoLite2-ASN.mmdb", "GeoLite2-ASN.mmdb.etag"]
    );
    assert!(!stderr(&first).contains("s1gnature"), "{}", stderr(&first));

    let second = fetch(&args, &MAXMIND_ENV).await;
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stderr(&second).contains("unchanged"), "{}", stderr(&second));
    assert_eq!(fake.downloads.load(Ordering::SeqCst), 1);
    assert_eq!(fake.not_modified.load(Ordering::SeqCst), 1);

    let wrong = fetch(
        &args,
        &[
            ("MAXMIND_ACCOUNT_ID", ACCOUNT),
            ("MAXMIND_LICENSE_KEY", "Wrong-l1cense"),
        ],
    )
    .await;
    assert!(!wrong.status.success());
    let text = stderr(&wrong);
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(
        !text.contains("Wrong-l1cense") && !text.contains(LICENSE),
        "{text}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), demo_mmdb());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_archive_never_touches_the_output() {
    let not_a_database = b"MZ this is no maxmind db".repeat(100);
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "no database member",
            tar_gz(&[("GeoLite2-ASN_20260419/LICENSE.txt", b"EULA")]),
        ),
        (
            "a member that is no database",
            maxmind_archive(&not_a_database),
        ),
        ("no archive at all", b"<html>maintenance</html>".to_vec()),
    ];
    for (what, archive) in cases {
        let (_fake, base) = FakeMaxMind::start(archive, None).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("GeoLite2-ASN.mmdb");
        let args = geolite_args(&out, &base);

        let alone = fetch(&args, &MAXMIND_ENV).await;
        assert!(!alone.status.success(), "{what}: {}", stderr(&alone));
        assert!(
            files(dir.path()).is_empty(),
            "{what}: {:?}",
            files(dir.path())
        );

        std::fs::write(&out, demo_mmdb()).unwrap();
        let beside = fetch(&args, &MAXMIND_ENV).await;
        assert!(beside.status.success(), "{what}: {}", stderr(&beside));
        assert!(
            stderr(&beside).contains("keeping the valid database"),
            "{what}: {}",
            stderr(&beside)
        );
        assert_eq!(std::fs::read(&out).unwrap(), demo_mmdb(), "{what}");
        assert_eq!(files(dir.path()), ["GeoLite2-ASN.mmdb"], "{what}");
    }
}

/// Waits until `done` holds, panicking with `what` after a generous bound.
async fn wait_until(what: &str, log: &Path, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_keeps_running_across_a_failing_server_and_exits_zero_on_sigterm() {
    let (fake, base) = FakeMaxMind::start(Vec::new(), Some(StatusCode::SERVICE_UNAVAILABLE)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("GeoLite2-ASN.mmdb");
    let log: PathBuf = dir.path().join("fetch.log");
    let mut args = geolite_args(&out, &base);
    args.extend(["--every", "1h"]);
    let child = std::process::Command::new(bin())
        .args(["mmdb", "fetch"])
        .args(&args)
        .envs(MAXMIND_ENV)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    // The first attempt and its retry after the back-off: still running.
    wait_until("two attempts", &log, || {
        fake.api_hits.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(proc.0.try_wait().unwrap(), None, "the sidecar exited");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("HTTP 503"), "{text}");
    assert!(!text.contains(LICENSE), "{text}");
    let code = tokio::task::spawn_blocking(move || proc.terminate(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_logs_a_refused_key_and_keeps_running() {
    let (fake, base) = FakeMaxMind::start(maxmind_archive(&demo_mmdb()), None).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("GeoLite2-ASN.mmdb");
    let log: PathBuf = dir.path().join("fetch.log");
    let mut args = geolite_args(&out, &base);
    args.extend(["--every", "1h"]);
    let child = std::process::Command::new(bin())
        .args(["mmdb", "fetch"])
        .args(&args)
        .env("MAXMIND_ACCOUNT_ID", ACCOUNT)
        .env("MAXMIND_LICENSE_KEY", "Wrong-l1cense")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    let log_for_wait = log.clone();
    wait_until("the refusal is logged", &log, || {
        std::fs::read_to_string(&log_for_wait).is_ok_and(|t| t.contains("HTTP 401"))
    })
    .await;
    assert_eq!(
        proc.0.try_wait().unwrap(),
        None,
        "a refused key ended the sidecar"
    );
    assert_eq!(
        fake.api_hits.load(Ordering::SeqCst),
        1,
        "no retry before the interval"
    );
    let code = tokio::task::spawn_blocking(move || proc.terminate(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains("Wrong-l1cense"));
}

/// OpenIPApi's key travels in `X-API-Key`, which reqwest does not strip on a
/// redirect: a redirect to another host is refused, so the key never leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openipapi_redirect_to_another_host_is_not_followed() {
    let elsewhere_hits = Arc::new(AtomicUsize::new(0));
    let elsewhere = Router::new().fallback({
        let hits = elsewhere_hits.clone();
        move || async move {
            hits.fetch_add(1, Ordering::SeqCst);
            demo_mmdb()
        }
    });
    let elsewhere = serve(elsewhere).await;
    let api = Router::new().fallback(move || async move {
        let location = format!("http://{elsewhere}/asn.mmdb");
        (StatusCode::FOUND, [(header::LOCATION, location)])
    });
    let api = serve(api).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("asn.mmdb");
    let base = format!("http://{api}");
    let args = openipapi_args("asn", &out, &base);
    let got = fetch(&args, &[("OPENIPAPI_API_KEY", OIP_KEY)]).await;
    assert!(!got.status.success());
    assert!(
        stderr(&got).contains("redirect not followed"),
        "{}",
        stderr(&got)
    );
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "the key went elsewhere"
    );
    assert!(files(dir.path()).is_empty());
}
