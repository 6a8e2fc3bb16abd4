//! Cloudflare Radar "Get AS details by IP address" as documented in
//! `cloudflare-radar-asn-by-ip.txt`: `GET /client/v4/radar/entities/asns/ip?ip=` with
//! `Authorization: Bearer <token>`. Answers use the API envelope
//! `{"result","success","errors","messages"}`; errors are
//! `{"success":false,"errors":[{"code","message"}],"messages":[],"result":null}`
//! (400 missing or invalid `ip`, 401 bad token, 404 private/reserved address, 429 +
//! `Retry-After`). Addresses in 17.0.0.0/8 (Apple, AS714) answer the documented
//! example verbatim (it has no `errors`/`messages`). `format=CSV` is not simulated.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::config::Provider;
use super::data::is_public;
use super::state::{Auth, SimState};
use super::wire;
use crate::lookup::providers::examples;

const P: Provider = Provider::Cloudflare;

/// The routes under `/cloudflare`.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/client/v4/radar/entities/asns/ip", get(asn_by_ip))
        .fallback(|| async { error(StatusCode::NOT_FOUND, 7003, "No route for that URI") })
}

/// The error envelope.
pub fn error(status: StatusCode, code: u32, message: &str) -> Response {
    wire::json(
        status,
        json!({ "success": false, "errors": [{ "code": code, "message": message }], "messages": [], "result": null }),
    )
}

#[derive(serde::Deserialize)]
struct Params {
    ip: Option<String>,
}

async fn asn_by_ip(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Response {
    s.endpoint(P, "asns_ip");
    let token = wire::header(&headers, "authorization").and_then(|h| h.strip_prefix("Bearer "));
    if s.auth(P, token) != Auth::Ok {
        return error(StatusCode::UNAUTHORIZED, 10000, "Authentication error");
    }
    let token = token.unwrap_or_default().trim().to_string();
    if let Err(retry) = s.take(P, &token, "asns_ip", 1) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            971,
            "Please wait and consider throttling your request speed",
        );
        wire::set_num(&mut r, "retry-after", retry);
        return r;
    }
    let Some(text) = q.ip.filter(|t| !t.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, 10001, "ip: Required");
    };
    let Some(ip) = wire::parse_ip(&text) else {
        return error(StatusCode::BAD_REQUEST, 10001, "ip: Invalid IP address");
    };
    if !is_public(ip) {
        return error(
            StatusCode::NOT_FOUND,
            10404,
            "ASN not found for a private or reserved address",
        );
    }
    s.lookup_ips(P, 1, 1);
    let p = s.data().profile(ip);
    if p.asn.number == 714 {
        return wire::json(
            StatusCode::OK,
            examples::parse(examples::CLOUDFLARE_ASN_714),
        );
    }
    let users = 1_000 + (p.hash >> 20) % 5_000_000;
    let local = users * (50 + (p.hash >> 8) % 50) / 100;
    let website = if p.asn.domain.is_empty() {
        String::new()
    } else {
        format!("https://www.{}/", p.asn.domain)
    };
    let body = json!({
        "result": {
            "asn": {
                "asn": p.asn.number,
                "country": p.asn.country,
                "countryName": p.country.name,
                "estimatedUsers": {
                    "locations": [{
                        "locationAlpha2": p.country.code,
                        "locationName": p.country.name,
                        "estimatedUsers": local,
                    }],
                    "estimatedUsers": users,
                },
                "name": p.asn.org,
                "orgName": p.asn.org,
                "related": [],
                "source": p.asn.rir,
                "website": website,
                "aka": p.asn.handle,
            }
        },
        "success": true,
        "errors": [],
        "messages": [],
    });
    wire::json(StatusCode::OK, body)
}
