//! The provider simulator over real HTTP on 127.0.0.1:0: auth, documented examples,
//! bulk rules, rate limits with `Retry-After`, report validation, ETag/304, fault
//! injection, runtime config and accounting.

use std::net::SocketAddr;
use std::time::Duration;

use ipenrich::simulate::{self, Accounting, SimConfig, SimHandle};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const II_KEY: &str = "sim-ipinsights-key";
const OIP_KEY: &str = "sim-openipapi-key";
const IPT_KEY: &str = "sim-iptrust-key";
const IPG_KEY: &str = "sim-ipgeolocation-key";
const CF_KEY: &str = "sim-cloudflare-key";

async fn sim_yaml(yaml: &str) -> SimHandle {
    let config = if yaml.is_empty() {
        SimConfig::default()
    } else {
        SimConfig::from_yaml_str(yaml).expect("test config")
    };
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    simulate::start(config, bind)
        .await
        .expect("simulator starts")
}

fn client() -> Client {
    Client::builder().no_proxy().build().unwrap()
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    (status, resp.json().await.expect("json body"))
}

fn header_u64(resp: &reqwest::Response, name: &str) -> u64 {
    resp.headers()[name].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn every_provider_rejects_missing_and_wrong_keys() {
    let sim = sim_yaml("iptrust: {forbidden_keys: [blocked]}").await;
    let c = client();
    let ii = c
        .get(format!(
            "{}/api/v1/lookup?ip=1.2.3.4",
            sim.base_url("ipinsights")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(header_u64(&ii, "x-ratelimit-limit"), 600);
    assert_eq!(header_u64(&ii, "x-ratelimit-remaining"), 600);
    let (status, body) = json_of(ii).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["success"], false);

    let (status, body) = json_of(
        c.get(format!("{}/v1/lookup/8.8.8.8", sim.base_url("openipapi")))
            .header("X-API-Key", "wrong")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"error": "invalid_api_key", "message": "The provided API key is invalid or has been revoked.", "status": 401})
    );

    let url = format!("{}/ip/9.9.9.9", sim.base_url("iptrust"));
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let forbidden = c
        .get(&url)
        .header("X-API-Key", "blocked")
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);

    let (status, body) = json_of(
        c.get(format!(
            "{}/v3/asn?ip=8.8.8.8",
            sim.base_url("ipgeolocation")
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("Please provide an API key"));
    assert_eq!(
        body.as_object().unwrap().len(),
        1,
        "error body is {{\"message\"}} only"
    );
    let wrong = c
        .get(format!(
            "{}/v3/asn?ip=8.8.8.8&apiKey={CF_KEY}",
            sim.base_url("ipgeolocation")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // The ipinsights key is not a Cloudflare token, and the token needs "Bearer ".
    for auth in [format!("Bearer {II_KEY}"), CF_KEY.to_string()] {
        let (status, body) = json_of(
            c.get(format!(
                "{}/client/v4/radar/entities/asns/ip?ip=8.8.8.8",
                sim.base_url("cloudflare")
            ))
            .header("Authorization", auth)
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["success"], false);
        assert_eq!(body["errors"][0]["code"], 10000);
    }
    let acc = sim.accounting();
    assert_eq!(acc.ipinsights.auth_failures, 1);
    assert_eq!(acc.openipapi.auth_failures, 1);
    assert_eq!(acc.iptrust.auth_failures, 2);
    assert_eq!(acc.ipgeolocation.auth_failures, 2);
    assert_eq!(acc.cloudflare.auth_failures, 2);
    assert_eq!(
        acc.ipinsights.units_charged, 0,
        "a refused request costs nothing"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn documented_examples_come_back_verbatim() {
    let sim = sim_yaml("").await;
    let c = client();
    // Copied from ipinsights-api.txt independently of the simulator's own copy.
    let expected = json!({ "success": true, "data": { "ip": "8.8.8.8", "ip_version": 4, "type": "ipv4", "country_code": "US", "country_name": "United States", "region_name": "California", "city": "Mountain View", "latitude": 37.4056, "longitude": -122.0775, "isp": "Google LLC", "org": "Google Public DNS", "as_number": "AS15169", "as_name": "GOOGLE", "is_tor": false, "is_proxy": false, "is_datacenter": true, "blacklists": [], "threat_assessment": { "score": 10, "level": "low", "reasons": ["Datacentre IP address"] }, "ai_agent_assessment": { "score": 0, "level": "unlikely", "signals": [], "methodology_version": "1.0" } }, "queried_at": "2026-02-20T12:00:00Z" });
    let ii = |q: &str| {
        c.get(format!("{}/api/v1/lookup?{q}", sim.base_url("ipinsights")))
            .header("X-API-Key", II_KEY)
            .send()
    };
    let (status, body) = json_of(ii("ip=8.8.8.8").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, expected);
    let (_, body) = json_of(ii("ip=203.0.113.42").await.unwrap()).await;
    assert_eq!(body["data"]["ai_agent_assessment"]["score"], 72);
    assert_eq!(body["queried_at"], "2026-05-12T06:00:00Z");
    let (_, body) = json_of(ii("asn=AS15169").await.unwrap()).await;
    assert_eq!(body["data"]["total_ips"], 42);
    assert_eq!(
        body["data"]["risk_breakdown"],
        json!({ "low": 38, "medium": 2, "high": 1, "critical": 1 })
    );
    let (_, body) = json_of(ii("cidr=8.8.8.0/24").await.unwrap()).await;
    assert_eq!(body["data"]["total_ips_in_db"], 5);
    assert_eq!(body["data"]["risk_score"], 22);

    let oip = |path: &str| {
        c.get(format!("{}{path}", sim.base_url("openipapi")))
            .header("X-API-Key", OIP_KEY)
            .send()
    };
    let (_, body) = json_of(oip("/v1/lookup/185.220.101.45").await.unwrap()).await;
    assert_eq!(body["network"]["asn"], 205100);
    assert_eq!(
        body["threat"]["threat_categories"],
        json!(["tor_exit_node", "known_abuser"])
    );
    assert_eq!(body["abuse"]["contact_email"], "abuse@f3netze.de");
    let (_, body) = json_of(oip("/v1/asn/AS13335").await.unwrap()).await;
    assert_eq!(
        body,
        json!({ "asn": 13335, "as_name": "Cloudflare, Inc.", "as_domain": "cloudflare.com", "organization": "Cloudflare, Inc.", "country_code": "US", "ip_ranges_count": 1284, "total_ips": 2359296 })
    );
    let (_, body) = json_of(oip("/v1/fraud/185.220.101.45").await.unwrap()).await;
    assert_eq!(
        (body["fraud_score"].clone(), body["recommendation"].clone()),
        (json!(92), json!("block"))
    );

    let (_, body) = json_of(
        c.get(format!("{}/ip/74.148.39.34", sim.base_url("iptrust")))
            .header("X-API-Key", IPT_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["asn"]["risk"], 0.9);
    assert_eq!(
        body["location"]["meta"]["country_emoji_u"],
        "U+1F1EA U+1F1F8"
    );
    assert_eq!(
        body["vpn"],
        json!({ "detected": true, "provider": "nord_vpn", "last_detected": "2025-11-15" })
    );

    let all = "peers,downstreams,upstreams,routes,whois_response";
    let resp = c
        .get(format!(
            "{}/v3/asn?asn=AS24940&include={all}&apiKey={IPG_KEY}",
            sim.base_url("ipgeolocation")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-credits-charged"], "1");
    let (_, body) = json_of(resp).await;
    assert!(body.get("ip").is_none(), "asn lookups carry no ip");
    assert_eq!(
        body["asn"]["peers"][0],
        json!({ "as_number": "AS58057", "description": "Securebit A", "country": "CH" })
    );
    assert_eq!(
        body["asn"]["routes"],
        json!(["78.46.0.0/15", "138.199.128.0/17"])
    );
    assert_eq!(body["asn"]["num_of_ipv4_routes"], "84");
    let keys: Vec<&str> = body["asn"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.last(), Some(&"whois_response"));

    let (_, body) = json_of(
        c.get(format!(
            "{}/client/v4/radar/entities/asns/ip?ip=17.253.144.10",
            sim.base_url("cloudflare")
        ))
        .bearer_auth(CF_KEY)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(body["result"]["asn"]["asn"], 714);
    assert_eq!(
        body["result"]["asn"]["estimatedUsers"]["estimatedUsers"],
        86099
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "the example has only result and success"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn ipinsights_bulk_charges_public_ips_only_and_caps_at_100() {
    let sim = sim_yaml("").await;
    let c = client();
    let url = format!("{}/api/v1/bulk-lookup", sim.base_url("ipinsights"));
    let post = |body: Value| c.post(&url).header("X-API-Key", II_KEY).json(&body).send();
    let too_many: Vec<String> = (0..101)
        .map(|i| format!("45.1.{}.{}", i / 200, i % 200 + 1))
        .collect();
    assert_eq!(
        post(json!({ "ips": too_many })).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(json!({ "ips": [] })).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(json!({ "ips": ["8.8.8.8", "nope"] }))
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );

    let resp = post(json!({ "ips": ["8.8.8.8", "10.0.0.1", "1.1.1.1", "192.168.7.7", "9.9.9.9"] }))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header_u64(&resp, "x-ratelimit-remaining"),
        597,
        "3 public IPs cost 3 units"
    );
    let (_, body) = json_of(resp).await;
    let ips: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["ip"].as_str().unwrap())
        .collect();
    assert_eq!(
        ips,
        ["8.8.8.8", "10.0.0.1", "1.1.1.1", "192.168.7.7", "9.9.9.9"]
    );
    assert_eq!(body["data"][1]["is_private"], true);
    assert_eq!(body["data"][2]["as_number"], "AS13335");
    let full: Vec<String> = (0..100).map(|i| format!("45.2.0.{}", i + 1)).collect();
    assert_eq!(
        post(json!({ "ips": full })).await.unwrap().status(),
        StatusCode::OK
    );

    let acc = sim.accounting();
    assert_eq!(acc.ipinsights.ips_per_request, vec![5, 100]);
    assert_eq!(acc.ipinsights.mean_ips_per_request(), Some(52.5));
    assert_eq!(acc.ipinsights.public_ips_charged, 103);
    assert_eq!(acc.ipinsights.endpoint("bulk_lookup"), 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_and_recovers() {
    let sim = sim_yaml("ipinsights: {rate_limit: {requests: 3, window_ms: 1500}}").await;
    let c = client();
    let url = format!("{}/api/v1/lookup?ip=8.8.4.4", sim.base_url("ipinsights"));
    for left in [2, 1, 0] {
        let r = c
            .get(&url)
            .header("X-API-Key", II_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header_u64(&r, "x-ratelimit-remaining"), left);
    }
    let refused = c
        .get(&url)
        .header("X-API-Key", II_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = header_u64(&refused, "retry-after");
    assert!((1..=2).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(header_u64(&refused, "x-ratelimit-limit"), 3);
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let again = c
        .get(&url)
        .header("X-API-Key", II_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);

    let acc = sim.accounting();
    let event = &acc.ipinsights.rate_limited[0];
    assert_eq!(acc.ipinsights.rate_limited.len(), 1);
    assert_eq!(event.retry_after_secs, retry_after);
    assert_eq!(event.endpoint, "lookup_ip");
    let last = *acc.ipinsights.arrivals_ms.last().unwrap();
    assert!(last >= event.sent_ms + retry_after * 1000);
    assert_eq!(acc.ipinsights.early_retries(), 0);
    assert_eq!(acc.ipinsights.responses_by_status[&429], 1);

    // OpenIPApi: per-plan requests per minute (free = 30) unless configured.
    let sim2 = sim_yaml("openipapi: {plan: free}").await;
    let url = format!("{}/v1/lookup/8.8.8.8", sim2.base_url("openipapi"));
    for _ in 0..30 {
        assert_eq!(
            c.get(&url)
                .header("X-API-Key", OIP_KEY)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let r = c
        .get(&url)
        .header("X-API-Key", OIP_KEY)
        .send()
        .await
        .unwrap();
    assert!(header_u64(&r, "retry-after") >= 1);
    let (status, body) = json_of(r).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::TOO_MANY_REQUESTS, json!("rate_limited"))
    );
    sim.shutdown().await;
    sim2.shutdown().await;
}

#[tokio::test]
async fn ipinsights_report_validation() {
    let sim = sim_yaml("").await;
    let c = client();
    let url = format!("{}/api/v1/report", sim.base_url("ipinsights"));
    let post = |body: Value| c.post(&url).header("X-API-Key", II_KEY).json(&body).send();
    let example = json!({ "ip": "203.0.113.42", "categories": ["ssh_bruteforce", "port_scan"], "comment": "10 failed SSH logins from this IP in 60s", "source": "manual" });
    let resp = post(example.clone()).await.unwrap();
    assert_eq!(
        header_u64(&resp, "x-ratelimit-remaining"),
        599,
        "a report costs one unit"
    );
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body,
        json!({ "success": true, "message": "Report received. Thank you for contributing.", "report_id": 18429, "weight": 1.00, "corroborated": false, "reputation": 1.00, "categories": ["ssh_bruteforce","port_scan"], "reported_at": "2026-05-12T06:49:10Z" })
    );
    assert_eq!(
        post(example).await.unwrap().status(),
        StatusCode::BAD_REQUEST,
        "same ip, same key, within 15 min"
    );

    let cases = [
        (
            json!({ "ip": "10.1.2.3", "categories": ["spam"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "ip": "127.0.0.1", "categories": "spam" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "ip": "45.3.0.1", "categories": ["spam", "hacking"] }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "ip": "45.3.0.1", "categories": [] }),
            StatusCode::BAD_REQUEST,
        ),
        (json!({ "ip": "45.3.0.1" }), StatusCode::BAD_REQUEST),
        (
            json!({ "ip": "45.3.0.1", "categories": "spam,xss,c2,ddos,botnet,malware" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "ip": "45.3.0.1", "categories": ["spam"], "comment": "x".repeat(1025) }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "ip": "45.3.0.1", "categories": ["spam"], "source": "syslog" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "ip": "not-an-ip", "categories": ["spam"] }),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            post(body.clone()).await.unwrap().status(),
            expected,
            "{body}"
        );
    }
    let ok = json!({ "ip": "45.3.0.1", "categories": "spam, xss,c2,ddos,botnet", "comment": "y".repeat(1024), "source": "fail2ban" });
    let (status, body) = json_of(post(ok).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["report_id"], 18430);
    assert_eq!(
        body["categories"],
        json!(["spam", "xss", "c2", "ddos", "botnet"])
    );
    // Another key may report the same IP.
    let other = sim_yaml("ipinsights: {api_keys: [a, b]}").await;
    let url2 = format!("{}/api/v1/report", other.base_url("ipinsights"));
    for key in ["a", "b"] {
        let r = c
            .post(&url2)
            .header("X-API-Key", key)
            .json(&json!({ "ip": "45.3.0.9", "categories": ["spam"] }))
            .send();
        assert_eq!(r.await.unwrap().status(), StatusCode::CREATED);
    }

    let acc = sim.accounting();
    assert_eq!(acc.ipinsights.reports.len(), 2);
    let r = &acc.ipinsights.reports[1];
    assert_eq!(
        (r.ip.as_str(), r.source.as_deref(), r.categories.len()),
        ("45.3.0.1", Some("fail2ban"), 5)
    );
    assert_eq!(acc.ipinsights.units_charged, 2);
    sim.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn openipapi_plans_batches_and_fields() {
    let sim = sim_yaml("openipapi: {plan: free}").await;
    let c = client();
    let batch = |sim: &SimHandle, ips: Vec<String>| {
        c.post(format!("{}/v1/lookup/batch", sim.base_url("openipapi")))
            .header("X-API-Key", OIP_KEY)
            .json(&json!({ "ips": ips }))
            .send()
    };
    let (status, body) = json_of(batch(&sim, vec!["8.8.8.8".into()]).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].clone(), body["status"].clone()),
        (StatusCode::FORBIDDEN, json!("plan_required"), json!(403))
    );
    let (_, body) = json_of(
        c.get(format!(
            "{}/v1/lookup/185.220.101.45",
            sim.base_url("openipapi")
        ))
        .header("X-API-Key", OIP_KEY)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(
        body["network"].get("asn").is_none(),
        "network.asn is Starter+"
    );
    assert!(body.get("abuse").is_none(), "abuse is Pro+");
    assert_eq!(
        body["threat"],
        json!({ "bot_type": null }),
        "bot_type is on every plan"
    );

    let starter = sim_yaml("openipapi: {plan: starter}").await;
    let ips: Vec<String> = (0..101).map(|i| format!("45.4.0.{}", i + 1)).collect();
    let (status, body) = json_of(batch(&starter, ips.clone()).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::FORBIDDEN, json!("plan_upgrade_required"))
    );
    let (status, body) = json_of(batch(&starter, ips[..100].to_vec()).await.unwrap()).await;
    assert_eq!(
        (status, body["count"].clone()),
        (StatusCode::OK, json!(100))
    );
    let order: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ip"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ips[..100].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let (status, body) = json_of(
        batch(&starter, vec!["8.8.8.8".into(), "1.2.3".into()])
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_ip"))
    );

    let get = |path: &str| {
        c.get(format!("{}{path}", starter.base_url("openipapi")))
            .header("X-API-Key", OIP_KEY)
            .send()
    };
    let (_, body) = json_of(get("/v1/lookup/8.8.8.8?fields=geo").await.unwrap()).await;
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["ip", "type", "geo"]);
    let (status, body) = json_of(get("/v1/asn/64512").await.unwrap()).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let (status, body) = json_of(get("/v1/lookup/999.1.1.1").await.unwrap()).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_ip"))
    );
    let (status, body) = json_of(get("/v1/lookup/8.8.8.8?date=2026-01-15").await.unwrap()).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::FORBIDDEN, json!("plan_upgrade_required"))
    );

    let acc = starter.accounting();
    assert_eq!(acc.openipapi.ips_per_request, vec![100, 1]);
    assert_eq!(acc.openipapi.endpoint("batch"), 3);
    sim.shutdown().await;
    starter.shutdown().await;
}

#[tokio::test]
async fn openipapi_database_download_has_etag_and_304() {
    let sim = sim_yaml("").await;
    let c = client();
    let url = format!("{}/v1/database/download/asn", sim.base_url("openipapi"));
    let first = c
        .get(&url)
        .header("X-API-Key", OIP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    let bytes = first.bytes().await.unwrap();
    let reader = maxminddb::Reader::from_source(bytes.to_vec()).expect("a readable mmdb");
    let record: Value = reader
        .lookup("8.8.8.8".parse().unwrap())
        .unwrap()
        .decode()
        .unwrap()
        .expect("8.8.8.8 is in the database");
    assert_eq!(record["autonomous_system_number"], 15169);

    let cached = c
        .get(&url)
        .header("X-API-Key", OIP_KEY)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(cached.headers()["etag"].to_str().unwrap(), etag);
    let stale = c
        .get(&url)
        .header("X-API-Key", OIP_KEY)
        .header("If-None-Match", "\"0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);

    let pro = sim_yaml("openipapi: {plan: pro}").await;
    let r = c
        .get(format!(
            "{}/v1/database/download/asn",
            pro.base_url("openipapi")
        ))
        .header("X-API-Key", OIP_KEY)
        .send();
    assert_eq!(
        r.await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "the asn database is Business+"
    );
    let r = c
        .get(format!(
            "{}/v1/database/download/nope",
            pro.base_url("openipapi")
        ))
        .header("X-API-Key", OIP_KEY)
        .send();
    assert_eq!(r.await.unwrap().status(), StatusCode::NOT_FOUND);
    sim.shutdown().await;
    pro.shutdown().await;
}

#[tokio::test]
async fn iptrust_sections_follow_the_plan() {
    let c = client();
    let mut bodies = Vec::new();
    for plan in ["essential", "plus", "premium"] {
        let sim = sim_yaml(&format!("iptrust: {{plan: {plan}}}")).await;
        let get = |ip: &str| {
            c.get(format!("{}/ip/{ip}", sim.base_url("iptrust")))
                .header("X-API-Key", IPT_KEY)
                .send()
        };
        let (status, body) = json_of(get("45.5.0.1").await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        bodies.push(body);
        assert_eq!(
            get("1.2.3.999").await.unwrap().status(),
            StatusCode::BAD_REQUEST
        );
        let (_, bogon) = json_of(get("192.168.0.1").await.unwrap()).await;
        assert_eq!(bogon["is_bogon"], true);
        sim.shutdown().await;
    }
    let [essential, plus, premium] = &bodies[..] else {
        unreachable!()
    };
    assert!(essential.get("company").is_none() && essential["asn"].get("type").is_none());
    assert!(essential["location"]["meta"]["country_iso3"].is_string());
    assert!(
        plus.get("company").is_some() && plus.get("hosting").is_some() && plus.get("vpn").is_none()
    );
    assert!(premium["asn"]["risk"].is_number() && premium.get("tor_exit_node").is_some());
    assert_eq!(
        essential["asn"]["number"], premium["asn"]["number"],
        "same data on every plan"
    );
}

#[tokio::test]
async fn ipgeolocation_statuses_and_credits() {
    let sim = sim_yaml("").await;
    let c = client();
    let get = |q: String| {
        c.get(format!("{}/v3/asn?{q}", sim.base_url("ipgeolocation")))
            .send()
    };
    let key = format!("apiKey={IPG_KEY}");
    let (status, body) = json_of(get(format!("ip=10.0.0.1&{key}")).await.unwrap()).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::LOCKED,
            json!({ "message": "'10.0.0.1' is a bogon IP address." })
        )
    );
    let (status, body) = json_of(get(format!("ip=999.999.999.999&{key}")).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "Provided name, service or IP address '999.999.999.999' is not valid."
    );
    assert_eq!(
        get(format!("asn=AS64512&{key}")).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(format!("ip=8.8.8.8&asn=15169&{key}"))
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(format!("ip=8.8.8.8&ip=1.1.1.1&{key}"))
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(key.clone()).await.unwrap().status(),
        StatusCode::LOCKED,
        "no ip: the caller, loopback"
    );
    let post = c
        .post(format!("{}/v3/asn?{key}", sim.base_url("ipgeolocation")))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(post).await;
    assert_eq!(
        (status, body["message"].clone()),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!("Request method 'POST' is not supported")
        )
    );
    let (status, body) = json_of(
        c.get(format!("{}/v3/asn-invalid", sim.base_url("ipgeolocation")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["message"].clone()),
        (
            StatusCode::NOT_FOUND,
            json!("No endpoint GET /v3/asn-invalid.")
        )
    );

    let resp = get(format!(
        "ip=49.12.0.0&fields=asn.organization,asn.country&{key}"
    ))
    .await
    .unwrap();
    assert_eq!(resp.headers()["x-credits-charged"], "1");
    let (_, body) = json_of(resp).await;
    assert_eq!(
        body,
        json!({ "ip": "49.12.0.0", "asn": { "organization": "Hetzner Online GmbH", "country": "DE" } })
    );
    let (_, body) = json_of(
        get(format!(
            "ip=8.8.8.8&excludes=asn.date_allocated,ip&include=peers&{key}"
        ))
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(body["ip"], "8.8.8.8");
    assert!(body["asn"].get("date_allocated").is_none() && body["asn"]["peers"].is_array());
    assert!(
        body["asn"].get("routes").is_none(),
        "modules only when included"
    );

    let acc = sim.accounting();
    assert_eq!(acc.ipgeolocation.credits, 2, "credits only for 200 answers");
    let free = sim_yaml("ipgeolocation: {plan: free}").await;
    let r = c
        .get(format!(
            "{}/v3/asn?ip=8.8.8.8&{key}",
            free.base_url("ipgeolocation")
        ))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("ASN Lookup is not supported"));
    sim.shutdown().await;
    free.shutdown().await;
}

#[tokio::test]
async fn cloudflare_envelope() {
    let sim = sim_yaml("").await;
    let c = client();
    let get = |q: &str| {
        c.get(format!(
            "{}/client/v4/radar/entities/asns/ip{q}",
            sim.base_url("cloudflare")
        ))
        .bearer_auth(CF_KEY)
        .send()
    };
    let (status, body) = json_of(get("?ip=1.1.1.1").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["success"].clone(), body["errors"].clone()),
        (json!(true), json!([]))
    );
    assert_eq!(body["result"]["asn"]["asn"], 13335);
    assert!(body["result"]["asn"]["estimatedUsers"]["estimatedUsers"].is_u64());
    let (status, body) = json_of(get("").await.unwrap()).await;
    assert_eq!(
        (status, body["success"].clone()),
        (StatusCode::BAD_REQUEST, json!(false))
    );
    assert_eq!(
        get("?ip=nope").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_are_injected_deterministically_and_can_be_changed_at_runtime() {
    let yaml = "iptrust: {faults: {server_error_rate: 0.5, server_error_status: 503}}\n\
                cloudflare: {faults: {reset_rate: 1.0}}\n\
                ipinsights: {faults: {malformed_rate: 1.0}}";
    let sim = sim_yaml(yaml).await;
    let c = client();
    let url = format!("{}/ip/45.6.0.1", sim.base_url("iptrust"));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            c.get(&url)
                .header("X-API-Key", IPT_KEY)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 503, 200, 503, 200, 503]);

    let reset = c
        .get(format!(
            "{}/client/v4/radar/entities/asns/ip?ip=1.1.1.1",
            sim.base_url("cloudflare")
        ))
        .bearer_auth(CF_KEY)
        .send()
        .await;
    assert!(
        reset.is_err(),
        "the connection is reset, no response: {reset:?}"
    );

    let malformed = c
        .get(format!(
            "{}/api/v1/lookup?ip=8.8.8.8",
            sim.base_url("ipinsights")
        ))
        .header("X-API-Key", II_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::OK);
    assert!(
        malformed.json::<Value>().await.is_err(),
        "a truncated body does not parse"
    );

    let acc = sim.accounting();
    assert_eq!(
        (
            acc.iptrust.faults.server_errors,
            acc.iptrust.responses_by_status[&503]
        ),
        (3, 3)
    );
    assert_eq!(acc.cloudflare.faults.resets, 1);
    assert_eq!(acc.ipinsights.faults.malformed, 1);
    assert_eq!(acc.ipinsights.units_charged, 0, "faults cost no quota");

    // Runtime config: clear the faults; a bad config is refused and changes nothing.
    let admin = format!("http://{}/_sim", sim.addr());
    let bad = c
        .put(format!("{admin}/config"))
        .json(&json!({ "iptrust": { "plan": "gold" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let ok = c
        .put(format!("{admin}/config"))
        .json(&json!({ "iptrust": { "plan": "essential" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    for _ in 0..4 {
        assert_eq!(
            c.get(&url)
                .header("X-API-Key", IPT_KEY)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let r = c
        .get(format!(
            "{}/client/v4/radar/entities/asns/ip?ip=1.1.1.1",
            sim.base_url("cloudflare")
        ))
        .bearer_auth(CF_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let health = c.get(format!("{admin}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let over_http: Accounting = c
        .get(format!("{admin}/accounting"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http, sim.accounting());
    assert_eq!(over_http.iptrust.requests_total, 10);
    assert_eq!(over_http.iptrust.arrivals_ms.len(), 10);
    assert_eq!(
        c.post(format!("{admin}/reset"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(sim.accounting(), Accounting::default());
    sim.shutdown().await;
}

#[tokio::test]
async fn answers_are_deterministic_across_runs() {
    let c = client();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = sim_yaml("").await;
        let mut answers = Vec::new();
        for ip in ["45.7.1.2", "93.184.216.34", "2a01:4f8::1", "151.101.1.69"] {
            let r = c
                .get(format!("{}/ip/{ip}", sim.base_url("iptrust")))
                .header("X-API-Key", IPT_KEY)
                .send();
            answers.push(r.await.unwrap().json::<Value>().await.unwrap());
            let r = c
                .get(format!("{}/v1/fraud/{ip}", sim.base_url("openipapi")))
                .header("X-API-Key", OIP_KEY)
                .send();
            answers.push(r.await.unwrap().json::<Value>().await.unwrap());
        }
        runs.push(answers);
        sim.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].iter().all(|a| a.get("error").is_none()),
        "{:?}",
        runs[0]
    );
}
