//! OpenIPApi as documented in `openipapi-api.txt`: `GET /v1/lookup/{ip}` (`fields`,
//! `date`), `POST /v1/lookup/batch` (plan maximum 100/500/1,000/5,000, `plan_required` on
//! free, results in request order), `GET /v1/asn/{asn}`, `GET /v1/fraud/{ip}`,
//! `GET /v1/validate/{ip}` (no key, no quota) and `GET /v1/database/download/{source}`
//! (ETag, `If-None-Match` -> 304, 10 downloads per source per day). `X-API-Key` auth,
//! per-plan requests per minute (429 `rate_limited` + `Retry-After`), optional lookup
//! quota (429 `limit_exceeded`), errors `{"error","message","status"}`.
//!
//! Choices the document leaves open: a private or reserved IP is `not_found` (and a
//! `{"ip","type","error":"not_found"}` entry inside a batch); a batch above the plan
//! maximum is 403 `plan_upgrade_required`; a malformed body is 400 `invalid_request`.
//! Fields above the plan (`network.asn` Starter+, `threat.*` but `bot_type` and `abuse`
//! Pro+) are left out. 185.220.101.45, AS13335 answer the documented examples.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::config::{OpenIpApiPlan, Provider};
use super::data::{hash_bytes, is_public, Dataset};
use super::state::{days_from_civil, Auth, SimState};
use super::wire::{self, parse_ip};
use crate::lookup::providers::examples;

const P: Provider = Provider::Openipapi;
const EXAMPLE_IP: &str = "185.220.101.45";

type St = State<Arc<SimState>>;

/// The routes under `/openipapi`.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/v1/lookup/batch", post(batch))
        .route("/v1/lookup/{ip}", get(lookup))
        .route("/v1/asn/{asn}", get(asn))
        .route("/v1/fraud/{ip}", get(fraud))
        .route("/v1/validate/{ip}", get(validate))
        .route("/v1/account/usage", get(usage))
        .route(
            "/v1/database/download/{source}",
            get(super::database::download),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "No data found for the requested resource.",
            )
        })
}

/// The documented error body.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    wire::json(
        status,
        json!({ "error": code, "message": message, "status": status.as_u16() }),
    )
}

fn invalid_ip() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_ip",
        "The provided IP address is not a valid IPv4 or IPv6 address.",
    )
}

pub(super) fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "No data found for the requested resource.",
    )
}

fn plan_required() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "plan_required",
        "The requested feature is not available on your current plan.",
    )
}

/// Auth, then one request from the per-minute window. `Err` is the finished answer.
// The `Err` is the finished answer of this request; boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub(super) fn admit(
    s: &SimState,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<(String, OpenIpApiPlan), Response> {
    s.endpoint(P, endpoint);
    let key = wire::header(headers, "x-api-key");
    if s.auth(P, key) != Auth::Ok {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "The provided API key is invalid or has been revoked.",
        ));
    }
    let key = key.unwrap_or_default().trim().to_string();
    if let Err(retry) = s.take(P, &key, endpoint, 1) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests in a short window. Back off and retry.",
        );
        wire::set_num(&mut r, "retry-after", retry);
        return Err(r);
    }
    Ok((key, s.config().provider(P).openipapi_plan()))
}

/// (year, month, day) of a count of days since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `GET /v1/account/usage`: this key's lookups in the current calendar month (the
/// simulator's `quota`, else the plan's documented monthly lookups).
async fn usage(State(s): St, headers: HeaderMap) -> Response {
    let (key, plan) = match admit(&s, &headers, "usage") {
        Ok(k) => k,
        Err(r) => return r,
    };
    let limit = s
        .config()
        .provider(P)
        .quota
        .or(plan.monthly_lookups())
        .unwrap_or(u64::MAX);
    let used = s.quota_used(P, &key);
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as i64);
    let (y, m, d) = civil(days);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let last = civil(days - i64::from(d) + 1 + 31).2; // day in the next month
    let month_days = 31 + 1 - last; // days of this month
    wire::json(
        StatusCode::OK,
        json!({
            "plan": format!("{plan:?}"),
            "period_start": format!("{y:04}-{m:02}-01"),
            "period_end": format!("{y:04}-{m:02}-{month_days:02}"),
            "lookups_used": used,
            "lookups_limit": limit,
            "lookups_remaining": limit.saturating_sub(used),
            "reset_at": format!("{ny:04}-{nm:02}-01T00:00:00Z"),
        }),
    )
}

// The `Err` is the finished answer of this request; boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn quota(s: &SimState, key: &str, endpoint: &str, n: u64) -> Result<(), Response> {
    if s.quota_take(P, key, endpoint, n) {
        Ok(())
    } else {
        Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "limit_exceeded",
            "You have used all lookups in your current billing period.",
        ))
    }
}

/// The full lookup object for a public IP, before plan filtering.
fn lookup_object(data: &Dataset, ip: IpAddr) -> Value {
    if ip.to_string() == EXAMPLE_IP {
        return examples::parse(examples::OPENIPAPI_LOOKUP_185);
    }
    let p = data.profile(ip);
    let connection_type = match p.asn.kind.as_str() {
        "hosting" | "business" => "datacenter",
        "education" => "education",
        "government" => "government",
        _ if p.hash % 5 == 0 => "mobile",
        _ => "residential",
    };
    let mut categories = Vec::new();
    if p.is_tor {
        categories.push("tor_exit_node");
    }
    if p.is_proxy {
        categories.push("open_proxy");
    }
    if p.threat_score > 50 {
        categories.push("known_abuser");
    }
    json!({
        "ip": ip.to_string(),
        "type": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
        "geo": {
            "country_code": p.country.code,
            "country": p.country.name,
            "region": p.city.region,
            "region_code": p.city.region_code,
            "city": p.city.name,
            "postal_code": p.city.postal,
            "latitude": p.city.lat,
            "longitude": p.city.lon,
            "timezone": p.city.tz,
            "is_sanctioned": !p.country.sanctions.is_empty(),
            "sanction_lists": p.country.sanctions,
        },
        "network": {
            "asn": p.asn.number,
            "as_name": p.asn.org,
            "as_domain": p.asn.domain,
            "isp": p.asn.org,
            "organization": p.asn.org,
            "connection_type": connection_type,
        },
        "threat": {
            "is_vpn": p.is_vpn,
            "is_proxy": p.is_proxy,
            "is_tor": p.is_tor,
            "is_relay": p.is_relay,
            "is_hosting": p.is_hosting,
            "threat_score": p.threat_score,
            "threat_categories": categories,
            "bot_type": if p.googlebot { json!("googlebot") } else { Value::Null },
        },
        "abuse": {
            "contact_email": if p.asn.domain.is_empty() { Value::Null } else { json!(format!("abuse@{}", p.asn.domain)) },
        },
    })
}

/// Drops what the plan does not include, then keeps only the `fields` sections.
fn shape(mut v: Value, plan: OpenIpApiPlan, fields: Option<&str>) -> Value {
    if plan < OpenIpApiPlan::Starter {
        if let Some(n) = v.get_mut("network").and_then(Value::as_object_mut) {
            for k in ["asn", "as_name", "as_domain"] {
                n.remove(k);
            }
        }
    }
    if let Some(obj) = v.as_object_mut() {
        if plan < OpenIpApiPlan::Pro {
            obj.remove("abuse");
            if let Some(t) = obj.get_mut("threat").and_then(Value::as_object_mut) {
                t.retain(|k, _| k == "bot_type");
            }
        }
        if let Some(list) = fields.filter(|f| !f.trim().is_empty()) {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            obj.retain(|k, _| k == "ip" || k == "type" || wanted.contains(&k.as_str()));
        }
    }
    v
}

#[derive(serde::Deserialize)]
struct LookupQuery {
    fields: Option<String>,
    date: Option<String>,
}

async fn lookup(
    State(s): St,
    headers: HeaderMap,
    Path(ip): Path<String>,
    Query(q): Query<LookupQuery>,
) -> Response {
    let (key, plan) = match admit(&s, &headers, "lookup") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(ip) = parse_ip(&ip) else {
        return invalid_ip();
    };
    if let Some(date) = q.date.as_deref() {
        if plan < OpenIpApiPlan::Pro {
            return error(
                StatusCode::FORBIDDEN,
                "plan_upgrade_required",
                "Historical lookup requires Pro plan or above.",
            );
        }
        let today = s.sim_day();
        let Some(day) = parse_date(date).filter(|d| *d <= today) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_date",
                "The date parameter is missing, malformed, or in the future.",
            );
        };
        if today - day > 365 {
            return error(
                StatusCode::BAD_REQUEST,
                "date_out_of_range",
                "Historical lookup date is more than 365 days in the past.",
            );
        }
        if !is_public(ip) || hash_bytes(day as u64, ip.to_string().as_bytes()) % 10 == 0 {
            let message = format!("No historical snapshot available for this IP on {date}");
            return wire::json(
                StatusCode::NOT_FOUND,
                json!({ "error": message, "code": "no_snapshot" }),
            );
        }
        if let Err(r) = quota(&s, &key, "lookup", 1) {
            return r;
        }
        s.lookup_ips(P, 1, 1);
        let data = shape(lookup_object(&s.data(), ip), plan, q.fields.as_deref());
        let body = json!({ "ip": ip.to_string(), "snapshot_date": date, "is_historical": true, "data": data });
        return wire::json(StatusCode::OK, body);
    }
    if !is_public(ip) {
        return not_found();
    }
    if let Err(r) = quota(&s, &key, "lookup", 1) {
        return r;
    }
    s.lookup_ips(P, 1, 1);
    wire::json(
        StatusCode::OK,
        shape(lookup_object(&s.data(), ip), plan, q.fields.as_deref()),
    )
}

fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let days_in_month = [
        31,
        28 + u32::from(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)),
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month[(m - 1) as usize] {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

async fn batch(State(s): St, headers: HeaderMap, body: Bytes) -> Response {
    let (key, plan) = match admit(&s, &headers, "batch") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(max) = plan.batch_max() else {
        return plan_required();
    };
    let list = match wire::parse_object(&body)
        .and_then(|o| o.get("ips").and_then(Value::as_array).cloned())
    {
        Some(l) if !l.is_empty() => l,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The body must be {\"ips\": [...]} with at least one IP.",
            )
        }
    };
    if list.len() > max {
        let message = format!(
            "Batch of {} IPs exceeds the maximum of {max} IPs per request on your plan.",
            list.len()
        );
        return error(StatusCode::FORBIDDEN, "plan_upgrade_required", &message);
    }
    let Some(ips) = list
        .iter()
        .map(|v| v.as_str().and_then(parse_ip))
        .collect::<Option<Vec<_>>>()
    else {
        return invalid_ip();
    };
    let public = ips.iter().filter(|ip| is_public(**ip)).count() as u64;
    if let Err(r) = quota(&s, &key, "batch", ips.len() as u64) {
        return r;
    }
    s.lookup_ips(P, ips.len(), public);
    let data = s.data();
    let results: Vec<Value> = ips
        .iter()
        .map(|&ip| {
            if is_public(ip) {
                shape(lookup_object(&data, ip), plan, None)
            } else {
                json!({ "ip": ip.to_string(), "type": if ip.is_ipv4() { "IPv4" } else { "IPv6" }, "error": "not_found" })
            }
        })
        .collect();
    let count = results.len();
    wire::json(
        StatusCode::OK,
        json!({ "results": results, "count": count }),
    )
}

async fn asn(State(s): St, headers: HeaderMap, Path(text): Path<String>) -> Response {
    let (_, plan) = match admit(&s, &headers, "asn") {
        Ok(v) => v,
        Err(r) => return r,
    };
    if plan < OpenIpApiPlan::Starter {
        return plan_required();
    }
    let Some(number) = wire::parse_asn(&text) else {
        return not_found();
    };
    if number == 13335 {
        return wire::json(
            StatusCode::OK,
            examples::parse(examples::OPENIPAPI_ASN_13335),
        );
    }
    let data = s.data();
    let Some(info) = data.asn(number) else {
        return not_found();
    };
    let ranges = data.routes_of(number);
    let total: u128 = ranges
        .iter()
        .filter(|n| matches!(n, ipnet::IpNet::V4(_)))
        .map(|n| 1u128 << (32 - n.prefix_len()))
        .sum();
    let h = u64::from(number);
    wire::json(
        StatusCode::OK,
        json!({
            "asn": number,
            "as_name": info.org,
            "as_domain": info.domain,
            "organization": info.org,
            "country_code": info.country,
            "ip_ranges_count": ranges.len() as u64 + h % 200,
            "total_ips": total as u64 + (h % 97) * 256,
        }),
    )
}

async fn fraud(State(s): St, headers: HeaderMap, Path(ip): Path<String>) -> Response {
    let (key, plan) = match admit(&s, &headers, "fraud") {
        Ok(v) => v,
        Err(r) => return r,
    };
    if plan < OpenIpApiPlan::Starter {
        return plan_required();
    }
    let Some(ip) = parse_ip(&ip) else {
        return invalid_ip();
    };
    if !is_public(ip) {
        return not_found();
    }
    if let Err(r) = quota(&s, &key, "fraud", 1) {
        return r;
    }
    s.lookup_ips(P, 1, 1);
    if ip.to_string() == EXAMPLE_IP {
        return wire::json(
            StatusCode::OK,
            examples::parse(examples::OPENIPAPI_FRAUD_185),
        );
    }
    let p = s.data().profile(ip);
    let bonus = 10 * u8::from(p.is_vpn) + 15 * u8::from(p.is_tor) + 10 * u8::from(p.is_proxy);
    let score = p.threat_score.saturating_add(bonus).min(100);
    let (level, recommendation) = match score {
        0..=30 => ("low", "allow"),
        31..=60 => ("medium", "review"),
        61..=85 => ("high", "challenge"),
        _ => ("critical", "block"),
    };
    wire::json(
        StatusCode::OK,
        json!({
            "ip": ip.to_string(),
            "fraud_score": score,
            "risk_level": level,
            "signals": {
                "is_vpn": p.is_vpn,
                "is_proxy": p.is_proxy,
                "is_tor": p.is_tor,
                "is_datacenter": p.is_hosting,
                "is_known_attacker": p.threat_score > 50,
                "high_risk_country": !p.country.sanctions.is_empty(),
            },
            "recommendation": recommendation,
        }),
    )
}

async fn validate(State(s): St, Path(text): Path<String>) -> Response {
    s.endpoint(P, "validate");
    let Some(ip) = parse_ip(&text) else {
        return wire::json(
            StatusCode::OK,
            json!({ "ip": text, "valid": false, "type": null, "private": false, "bogon": false }),
        );
    };
    if ip.to_string() == EXAMPLE_IP {
        return wire::json(
            StatusCode::OK,
            examples::parse(examples::OPENIPAPI_VALIDATE),
        );
    }
    let private = match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    };
    wire::json(
        StatusCode::OK,
        json!({
            "ip": ip.to_string(),
            "valid": true,
            "type": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
            "private": private,
            "bogon": !is_public(ip),
        }),
    )
}
