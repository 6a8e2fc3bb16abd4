//! ipinsights.io as documented in `ipinsights-api.txt`: `GET /api/v1/lookup` by `ip`,
//! `asn` or `cidr`, `POST /api/v1/bulk-lookup` (at most 100 IPs, private and reserved
//! ones free of quota) and `POST /api/v1/report` with every documented validation.
//! `X-API-Key` auth; every answer carries `X-RateLimit-Limit` and `X-RateLimit-Remaining`
//! of the presented key (a 429 also `Retry-After`). Quota: one unit per lookup, per
//! public IP in a bulk, per report. The document gives no error body and no bulk
//! response shape; we answer `{"success":false,"error":msg}` and
//! `{"success":true,"data":[...],"count":n,"queried_at":..}`.
//!
//! Example IPs answer their documented example verbatim: 8.8.8.8, 203.0.113.42 (a
//! documentation address the document shows answered, so it is exempt from the
//! reserved-address rule), AS15169, 8.8.8.0/24, and the example report.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use ipnet::{IpNet, Ipv4Net};
use serde_json::{json, Map, Value};

use super::accounting::ReportRecord;
use super::config::Provider;
use super::data::{is_public, nth_address, threat_level, Dataset, IpProfile};
use super::state::{Auth, SimState};
use super::wire::{self, parse_ip};
use crate::lookup::providers::examples;

const P: Provider = Provider::Ipinsights;
const AI_EXAMPLE_IP: &str = "203.0.113.42";

/// Documented report categories.
#[rustfmt::skip]
pub const CATEGORIES: &[&str] = &[
    "ssh_bruteforce", "rdp_bruteforce", "web_bruteforce", "web_attack", "sql_injection", "xss",
    "port_scan", "vulnerability_scan", "exploit_attempt", "credential_stuffing", "phishing",
    "spam", "malware", "ddos", "botnet", "c2", "tor_abuse", "open_proxy_abuse", "other",
];

/// Documented report sources.
#[rustfmt::skip]
pub const SOURCES: &[&str] = &[
    "wazuh", "graylog", "splunk", "sentinel", "crowdsec", "fail2ban", "suricata", "thehive",
    "n8n", "home_assistant", "manual",
];

type St = State<Arc<SimState>>;

/// The routes under `/ipinsights`.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/api/v1/lookup", get(lookup))
        .route("/api/v1/bulk-lookup", post(bulk))
        .route("/api/v1/report", post(report))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not found") })
}

/// The error body.
pub fn error(status: StatusCode, message: &str) -> Response {
    wire::json(status, json!({ "success": false, "error": message }))
}

/// Adds the rate-limit headers of `key` (the full limit for unauthenticated callers).
fn finish(s: &SimState, key: Option<&str>, mut resp: Response) -> Response {
    let (limit, remaining) = match key {
        Some(k) => s.window_status(P, k),
        None => {
            let l = s.config().provider(P).rate(P).requests;
            (l, l)
        }
    };
    wire::set_num(&mut resp, "x-ratelimit-limit", limit);
    wire::set_num(&mut resp, "x-ratelimit-remaining", remaining);
    resp
}

fn too_many(retry_after: u64) -> Response {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
    wire::set_num(&mut r, "retry-after", retry_after);
    r
}

/// Authenticates; `Err` is the finished 401.
// The `Err` is the finished answer of this request; boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn authed(s: &SimState, headers: &HeaderMap) -> Result<String, Response> {
    let key = wire::header(headers, "x-api-key");
    match s.auth(P, key) {
        Auth::Ok => Ok(key.unwrap_or_default().trim().to_string()),
        _ => Err(finish(
            s,
            None,
            error(StatusCode::UNAUTHORIZED, "Missing or invalid API key"),
        )),
    }
}

fn is_example(ip: IpAddr) -> bool {
    ip.to_string() == "8.8.8.8" || ip.to_string() == AI_EXAMPLE_IP
}

async fn lookup(
    State(s): St,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let get = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let endpoint = match (get("ip"), get("asn"), get("cidr")) {
        (Some(_), _, _) => "lookup_ip",
        (_, Some(_), _) => "lookup_asn",
        (_, _, Some(_)) => "lookup_cidr",
        _ => "lookup",
    };
    s.endpoint(P, endpoint);
    let key = match authed(&s, &headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let resp = lookup_inner(&s, &key, endpoint, get("ip"), get("asn"), get("cidr"));
    finish(&s, Some(&key), resp)
}

fn lookup_inner(
    s: &SimState,
    key: &str,
    endpoint: &str,
    ip: Option<&str>,
    asn: Option<&str>,
    cidr: Option<&str>,
) -> Response {
    let data = s.data();
    let body = if let Some(text) = ip {
        let Some(ip) = parse_ip(text) else {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid request: missing or malformed IP",
            );
        };
        if !is_public(ip) && !is_example(ip) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IP address is private or reserved",
            );
        }
        if let Err(retry) = s.take(P, key, endpoint, 1) {
            return too_many(retry);
        }
        s.lookup_ips(P, 1, 1);
        match ip.to_string().as_str() {
            "8.8.8.8" => examples::parse(examples::IPINSIGHTS_LOOKUP_8888),
            AI_EXAMPLE_IP => examples::parse(examples::IPINSIGHTS_LOOKUP_AI),
            _ => {
                json!({ "success": true, "data": ip_data(&data.profile(ip)), "queried_at": s.iso_now() })
            }
        }
    } else if let Some(text) = asn {
        let Some(number) = wire::parse_asn(text) else {
            return error(StatusCode::BAD_REQUEST, "Invalid request: malformed ASN");
        };
        if let Err(retry) = s.take(P, key, endpoint, 1) {
            return too_many(retry);
        }
        if number == 15169 {
            examples::parse(examples::IPINSIGHTS_ASN_15169)
        } else {
            json!({ "success": true, "data": asn_summary(&data, number), "queried_at": s.iso_now() })
        }
    } else if let Some(text) = cidr {
        let Ok(net) = text.trim().parse::<Ipv4Net>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid request: malformed CIDR (IPv4 only)",
            );
        };
        if !(8..=32).contains(&net.prefix_len()) {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid request: prefix length must be between /8 and /32",
            );
        }
        if let Err(retry) = s.take(P, key, endpoint, 1) {
            return too_many(retry);
        }
        if text.trim() == "8.8.8.0/24" {
            examples::parse(examples::IPINSIGHTS_CIDR_8880)
        } else {
            json!({ "success": true, "data": cidr_summary(&data, net.trunc()), "queried_at": s.iso_now() })
        }
    } else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid request: one of ip, asn or cidr is required",
        );
    };
    wire::json(StatusCode::OK, body)
}

/// The `data` object of an IP lookup.
pub fn ip_data(p: &IpProfile) -> Value {
    let level = threat_level(p.threat_score);
    let mut reasons = Vec::new();
    if p.is_hosting {
        reasons.push("Datacentre IP address");
    }
    if p.is_tor {
        reasons.push("Tor exit node");
    }
    if p.is_proxy {
        reasons.push("Known proxy/VPN");
    }
    if p.threat_score > 50 {
        reasons.push("Reported for abusive activity");
    }
    let blacklists: Vec<Value> = if p.threat_score > 50 {
        vec![
            json!({ "source": "spamhaus", "category": "abuse", "listed_at": "2026-02-01T00:00:00Z" }),
        ]
    } else {
        Vec::new()
    };
    json!({
        "ip": p.ip.to_string(),
        "ip_version": if p.ip.is_ipv4() { 4 } else { 6 },
        "type": if p.ip.is_ipv4() { "ipv4" } else { "ipv6" },
        "country_code": p.country.code,
        "country_name": p.country.name,
        "region_name": p.city.region,
        "city": p.city.name,
        "latitude": p.city.lat,
        "longitude": p.city.lon,
        "timezone": p.city.tz,
        "isp": p.asn.org,
        "org": p.asn.org,
        "as_number": format!("AS{}", p.asn.number),
        "as_name": p.asn.handle,
        "is_tor": p.is_tor,
        "is_proxy": p.is_proxy || p.is_vpn,
        "is_datacenter": p.is_hosting,
        "blacklists": blacklists,
        "threat_assessment": { "score": p.threat_score, "level": level, "reasons": reasons },
        "ai_agent_assessment": { "score": 0, "level": "unlikely", "signals": [], "methodology_version": "1.0" },
    })
}

/// Risk statistics over sample IPs: (breakdown, blacklisted, mean score, rows).
fn stats(profiles: &[IpProfile], with_asn: bool) -> (Value, usize, u64, Vec<Value>) {
    let mut counts = [0usize; 4];
    let mut rows = Vec::new();
    for p in profiles {
        let idx = match threat_level(p.threat_score) {
            "low" => 0,
            "medium" => 1,
            "high" => 2,
            _ => 3,
        };
        counts[idx] += 1;
        let mut row = json!({
            "ip": p.ip.to_string(),
            "threat_score": p.threat_score,
            "level": threat_level(p.threat_score),
            "is_blacklisted": p.threat_score > 50,
        });
        if with_asn {
            row["as_number"] = json!(format!("AS{}", p.asn.number));
        }
        row["country_code"] = json!(p.country.code);
        rows.push(row);
    }
    let blacklisted = counts[2] + counts[3];
    let sum: u64 = profiles.iter().map(|p| u64::from(p.threat_score)).sum();
    let mean = if profiles.is_empty() {
        0
    } else {
        sum / profiles.len() as u64
    };
    let breakdown =
        json!({ "low": counts[0], "medium": counts[1], "high": counts[2], "critical": counts[3] });
    (breakdown, blacklisted, mean, rows)
}

fn asn_summary(data: &Dataset, number: u32) -> Value {
    let info = data.asn(number);
    let routes = data.routes_of(number);
    let n = if routes.is_empty() {
        0
    } else {
        5 + (u64::from(number) * 7) % 20
    };
    let profiles: Vec<IpProfile> = (0..n)
        .map(|i| data.profile(nth_address(routes[(i as usize) % routes.len()], 8 + i * 37)))
        .filter(|p| p.asn.number == number)
        .collect();
    let (breakdown, blacklisted, mean, rows) = stats(&profiles, false);
    json!({
        "as_number": format!("AS{number}"),
        "as_name": info.as_ref().map(|a| a.handle.clone()),
        "isp": info.as_ref().map(|a| a.org.clone()),
        "org": info.as_ref().map(|a| a.org.clone()),
        "total_ips": profiles.len(),
        "blacklisted_ips": blacklisted,
        "risk_breakdown": breakdown,
        "risk_score": mean,
        "risk_level": threat_level(mean as u8),
        "ips": rows,
    })
}

fn cidr_summary(data: &Dataset, net: Ipv4Net) -> Value {
    let size = 1u64 << (32 - net.prefix_len());
    let known = (u64::from(u32::from(net.network())) % 7).min(size);
    let profiles: Vec<IpProfile> = (0..known)
        .map(|i| data.profile(nth_address(IpNet::V4(net), (i * 61 + 1) % size)))
        .filter(|p| is_public(p.ip))
        .collect();
    let mut systems: Vec<Value> = Vec::new();
    for p in &profiles {
        let entry = json!({ "as_number": format!("AS{}", p.asn.number), "as_name": p.asn.handle });
        if !systems.contains(&entry) {
            systems.push(entry);
        }
    }
    let (breakdown, blacklisted, mean, rows) = stats(&profiles, true);
    json!({
        "cidr": net.to_string(),
        "range_start": net.network().to_string(),
        "range_end": net.broadcast().to_string(),
        "total_ips_in_db": profiles.len(),
        "blacklisted_ips": blacklisted,
        "autonomous_systems": systems,
        "risk_breakdown": breakdown,
        "risk_score": mean,
        "risk_level": threat_level(mean as u8),
        "ips": rows,
    })
}

async fn bulk(State(s): St, headers: HeaderMap, body: Bytes) -> Response {
    s.endpoint(P, "bulk_lookup");
    let key = match authed(&s, &headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let resp = bulk_inner(&s, &key, &body);
    finish(&s, Some(&key), resp)
}

fn bulk_inner(s: &SimState, key: &str, body: &[u8]) -> Response {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, m);
    let Some(obj) = wire::parse_object(body) else {
        return bad("Invalid request: body must be a JSON object {\"ips\":[...]}");
    };
    let Some(list) = obj.get("ips").and_then(Value::as_array) else {
        return bad("Invalid request: \"ips\" must be an array of IP addresses");
    };
    if list.is_empty() || list.len() > 100 {
        return bad("Invalid request: submit between 1 and 100 IPs");
    }
    let mut ips = Vec::with_capacity(list.len());
    for v in list {
        match v.as_str().and_then(parse_ip) {
            Some(ip) => ips.push(ip),
            None => return bad(&format!("Invalid request: malformed IP {v}")),
        }
    }
    let charged = ips
        .iter()
        .filter(|ip| is_public(**ip) || is_example(**ip))
        .count() as u64;
    if let Err(retry) = s.take(P, key, "bulk_lookup", charged) {
        return too_many(retry);
    }
    s.lookup_ips(P, ips.len(), charged);
    let data = s.data();
    let rows: Vec<Value> = ips
        .iter()
        .map(|&ip| match ip.to_string().as_str() {
            "8.8.8.8" => examples::parse(examples::IPINSIGHTS_LOOKUP_8888)["data"].take(),
            AI_EXAMPLE_IP => examples::parse(examples::IPINSIGHTS_LOOKUP_AI)["data"].take(),
            _ if is_public(ip) => ip_data(&data.profile(ip)),
            _ => json!({
                "ip": ip.to_string(),
                "ip_version": if ip.is_ipv4() { 4 } else { 6 },
                "type": if ip.is_ipv4() { "ipv4" } else { "ipv6" },
                "is_private": true,
            }),
        })
        .collect();
    let count = rows.len();
    wire::json(
        StatusCode::OK,
        json!({ "success": true, "data": rows, "count": count, "queried_at": s.iso_now() }),
    )
}

async fn report(State(s): St, headers: HeaderMap, body: Bytes) -> Response {
    s.endpoint(P, "report");
    let key = match authed(&s, &headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let resp = match validate_report(&body) {
        Ok(r) => accept_report(&s, &key, r),
        Err(resp) => resp,
    };
    finish(&s, Some(&key), resp)
}

struct Report {
    ip: IpAddr,
    categories: Vec<String>,
    comment: Option<String>,
    source: Option<String>,
}

// The `Err` is the finished answer of this request; boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn validate_report(body: &[u8]) -> Result<Report, Response> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, &m);
    let obj: Map<String, Value> = wire::parse_object(body)
        .ok_or_else(|| bad("Invalid request: body must be a JSON object".into()))?;
    let ip = obj
        .get("ip")
        .and_then(Value::as_str)
        .and_then(parse_ip)
        .ok_or_else(|| bad("Invalid request: missing or malformed IP".into()))?;
    let categories: Vec<String> = match obj.get("categories") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(|s| s.trim().to_string()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("Invalid request: categories must be strings".into()))?,
        Some(Value::String(text)) => text
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect(),
        _ => return Err(bad("Invalid request: categories is required".into())),
    };
    if categories.is_empty() || categories.len() > 5 {
        return Err(bad(
            "Invalid request: one to five categories are required".into()
        ));
    }
    if let Some(c) = categories
        .iter()
        .find(|c| !CATEGORIES.contains(&c.as_str()))
    {
        return Err(bad(format!("Invalid request: unknown category '{c}'")));
    }
    let comment = match obj.get("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if c.chars().count() <= 1024 => Some(c.clone()),
        Some(Value::String(_)) => {
            return Err(bad(
                "Invalid request: comment exceeds 1,024 characters".into()
            ))
        }
        Some(_) => return Err(bad("Invalid request: comment must be a string".into())),
    };
    let source = match obj.get("source") {
        None | Some(Value::Null) => None,
        Some(Value::String(src)) if SOURCES.contains(&src.as_str()) => Some(src.clone()),
        Some(other) => return Err(bad(format!("Invalid request: unknown source {other}"))),
    };
    if !is_public(ip) && !is_example(ip) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IP address is private or reserved",
        ));
    }
    Ok(Report {
        ip,
        categories,
        comment,
        source,
    })
}

fn accept_report(s: &SimState, key: &str, r: Report) -> Response {
    if s.report_is_duplicate(key, r.ip) {
        return error(
            StatusCode::BAD_REQUEST,
            "This IP was already reported by your key within the last 15 minutes",
        );
    }
    if let Err(retry) = s.take(P, key, "report", 1) {
        return too_many(retry);
    }
    let mut id = s.remember_report(key, r.ip);
    let example = r.ip.to_string() == AI_EXAMPLE_IP;
    let reported_at = if example {
        id = 18_429;
        "2026-05-12T06:49:10Z".to_string()
    } else {
        s.iso_now()
    };
    let corroborated = !example && s.data().profile(r.ip).threat_score > 50;
    let received_ms = s.now_ms();
    s.account(P, |a| {
        a.reports.push(ReportRecord {
            ip: r.ip.to_string(),
            categories: r.categories.clone(),
            source: r.source.clone(),
            comment: r.comment.clone(),
            report_id: id,
            received_ms,
        })
    });
    let body = json!({
        "success": true,
        "message": "Report received. Thank you for contributing.",
        "report_id": id,
        "weight": 1.0,
        "corroborated": corroborated,
        "reputation": 1.0,
        "categories": r.categories,
        "reported_at": reported_at,
    });
    wire::json(StatusCode::CREATED, body)
}
