//! IPTrust as documented in `iptrust-api.txt`: `GET /ip/{ip}`, one IP a call,
//! `X-API-Key` auth. 400 invalid IP, 401 missing/unknown key, 403 for a key listed in
//! `forbidden_keys`, 429 (+ `Retry-After`) past the configured rate. Sections follow
//! the plan: Essential (ip, is_bogon, asn core, location), Plus (adds asn.type,
//! asn.description, company, known_bot, hosting), Premium (adds asn.risk*,
//! abuse_contact, tor_exit_node, privacy_relay, proxy, vpn). The document gives no
//! error body; we answer `{"error": msg}`. A bogon answers 200 `{"ip","is_bogon":true}`.
//! 74.148.39.34 answers the documented example (filtered by plan like any answer).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::config::{IpTrustPlan, Provider};
use super::data::{is_public, IpProfile};
use super::state::{Auth, SimState};
use super::wire::{self, parse_ip};
use crate::lookup::providers::examples;

const P: Provider = Provider::Iptrust;

/// The routes under `/iptrust`.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/ip/{ip}", get(lookup))
        .route(
            "/ip/",
            get(|| async { error(StatusCode::BAD_REQUEST, "The IP address is missing.") }),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not found") })
}

/// The error body.
pub fn error(status: StatusCode, message: &str) -> Response {
    wire::json(status, json!({ "error": message }))
}

async fn lookup(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(ip): Path<String>,
) -> Response {
    s.endpoint(P, "ip");
    let key = wire::header(&headers, "x-api-key");
    match s.auth(P, key) {
        Auth::Ok => {}
        Auth::Forbidden => {
            return error(
                StatusCode::FORBIDDEN,
                "Forbidden. Your API key does not have access to this resource.",
            )
        }
        Auth::Missing | Auth::Invalid => {
            return error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized. The API key is missing or invalid.",
            )
        }
    }
    let key = key.unwrap_or_default().trim().to_string();
    if let Err(retry) = s.take(P, &key, "ip", 1) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limited. You have exceeded your plan's request quota or rate limit.",
        );
        wire::set_num(&mut r, "retry-after", retry);
        return r;
    }
    let Some(ip) = parse_ip(&ip) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad request. The IP address is not a valid IPv4/IPv6 address.",
        );
    };
    let public = is_public(ip);
    s.lookup_ips(P, 1, u64::from(public));
    if !public {
        return wire::json(
            StatusCode::OK,
            json!({ "ip": ip.to_string(), "is_bogon": true }),
        );
    }
    let full = if ip.to_string() == "74.148.39.34" {
        examples::parse(examples::IPTRUST_LOOKUP_74)
    } else {
        premium_object(&s.data().profile(ip))
    };
    let plan = s.config().provider(P).iptrust_plan();
    wire::json(StatusCode::OK, for_plan(full, plan))
}

/// Removes the sections and fields above `plan`.
pub fn for_plan(mut v: Value, plan: IpTrustPlan) -> Value {
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    if plan < IpTrustPlan::Premium {
        for k in [
            "abuse_contact",
            "tor_exit_node",
            "privacy_relay",
            "proxy",
            "vpn",
        ] {
            obj.remove(k);
        }
        if let Some(asn) = obj.get_mut("asn").and_then(Value::as_object_mut) {
            for k in ["risk", "risk_label", "risk_types"] {
                asn.remove(k);
            }
        }
    }
    if plan < IpTrustPlan::Plus {
        for k in ["company", "known_bot", "hosting"] {
            obj.remove(k);
        }
        if let Some(asn) = obj.get_mut("asn").and_then(Value::as_object_mut) {
            for k in ["type", "description"] {
                asn.remove(k);
            }
        }
    }
    v
}

fn risk_label(risk: f64) -> &'static str {
    match risk {
        r if r < 0.2 => "very_low",
        r if r < 0.4 => "low",
        r if r < 0.6 => "moderate",
        r if r < 0.8 => "high",
        _ => "very_high",
    }
}

/// Every section, as a Premium key sees it.
fn premium_object(p: &IpProfile) -> Value {
    let c = p.country;
    let risk = f64::from(p.threat_score / 10) / 10.0;
    let mut risk_types = Vec::new();
    if p.threat_score > 50 {
        risk_types.push("repeated_abuse");
    }
    if p.threat_score > 75 {
        risk_types.push("confirmed_bot");
    }
    let domain = if p.asn.domain.is_empty() {
        Value::Null
    } else {
        json!(p.asn.domain)
    };
    let description = format!(
        "{} operates AS{} ({}).",
        p.asn.org, p.asn.number, p.asn.kind
    );
    let known_bot = if p.googlebot {
        json!({ "detected": true, "bot_type": "crawler", "name": "google_bot" })
    } else {
        json!({ "detected": false })
    };
    let hosting = if p.is_hosting {
        json!({ "detected": true, "domain": domain, "name": p.asn.org })
    } else {
        json!({ "detected": false })
    };
    let proxy = if p.is_proxy {
        json!({ "detected": true, "type": if p.hash % 2 == 0 { "residential" } else { "open" }, "last_detected": "2026-02-15" })
    } else {
        json!({ "detected": false })
    };
    let vpn = if p.is_vpn {
        json!({ "detected": true, "provider": "nord_vpn", "last_detected": "2026-02-15" })
    } else {
        json!({ "detected": false })
    };
    json!({
        "ip": p.ip.to_string(),
        "is_bogon": false,
        "asn": {
            "number": format!("AS{}", p.asn.number),
            "name": p.asn.handle,
            "company": p.asn.org,
            "country": p.asn.country,
            "route": p.route.to_string(),
            "rir": p.asn.rir,
            "domain": domain,
            "type": p.asn.kind,
            "description": description,
            "risk": risk,
            "risk_label": risk_label(risk),
            "risk_types": risk_types,
        },
        "location": {
            "city": p.city.name,
            "state": p.city.region,
            "country": c.name,
            "latitude": p.city.lat,
            "longitude": p.city.lon,
            "meta": {
                "country_iso2": c.code,
                "country_iso3": c.iso3,
                "country_numeric_code": c.numeric,
                "country_phone_code": c.phone,
                "country_capital": c.capital,
                "country_currency": c.currency,
                "country_currency_name": c.currency_name,
                "country_native": c.native,
                "country_region": c.region,
                "country_subregion": c.subregion,
                "country_emoji": c.emoji,
                "country_emoji_u": c.emoji_u,
            },
        },
        "company": { "name": p.asn.org, "type": p.asn.kind, "domain": domain, "description": description },
        "known_bot": known_bot,
        "hosting": hosting,
        "abuse_contact": {
            "email": if p.asn.domain.is_empty() { Value::Null } else { json!(format!("abuse@{}", p.asn.domain)) },
            "name": format!("{} Abuse Contact", p.asn.org),
        },
        "tor_exit_node": { "detected": p.is_tor },
        "privacy_relay": { "detected": p.is_relay },
        "proxy": proxy,
        "vpn": vpn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_nest() {
        let full = examples::parse(examples::IPTRUST_LOOKUP_74);
        let essential = for_plan(full.clone(), IpTrustPlan::Essential);
        assert!(essential.get("company").is_none() && essential.get("vpn").is_none());
        assert!(essential["asn"].get("type").is_none() && essential["asn"].get("route").is_some());
        let plus = for_plan(full.clone(), IpTrustPlan::Plus);
        assert!(plus.get("hosting").is_some() && plus.get("tor_exit_node").is_none());
        assert!(plus["asn"].get("risk").is_none() && plus["asn"].get("type").is_some());
        assert_eq!(for_plan(full.clone(), IpTrustPlan::Premium), full);
    }
}
