//! IPGeolocation.io ASN API as documented in `ipgeolocation-asn-api.txt`: `GET /v3/asn`
//! with `ip` or `asn`, `include` (peers, downstreams, upstreams, routes,
//! whois_response), `fields` and `excludes` (dot notation, `ip` always kept), and the
//! key in the `apiKey` query parameter. Statuses: 400 (invalid IP or ASN, repeated or
//! conflicting parameters, special characters), 401 (missing, unknown, forbidden or
//! free-plan key: each with its documented message), 404 (unknown ASN, unknown path),
//! 405 (any method but GET), 423 (bogon or private IP), 429 (rate or quota; we add
//! `Retry-After`). Error body `{"message"}` only. `X-Credits-Charged: 1` on 200 only.
//! An omitted or empty `ip` means the caller's address: on loopback that is a bogon.
//! AS24940 and 49.12.0.0 answer the documented example. `output=xml` is ignored (JSON).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::config::Provider;
use super::data::{is_public, AsnInfo, Dataset};
use super::server::ConnCtx;
use super::state::{Auth, SimState};
use super::tables;
use super::wire;
use crate::lookup::providers::examples;

const P: Provider = Provider::Ipgeolocation;
const MODULES: [&str; 5] = [
    "peers",
    "routes",
    "upstreams",
    "downstreams",
    "whois_response",
];

/// The routes under `/ipgeolocation`.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/v3/asn", get(asn).fallback(method_not_allowed))
        .fallback(|method: Method, uri: Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                &format!("No endpoint {method} {}.", uri.path()),
            )
        })
}

/// The error body: `{"message"}` only.
pub fn error(status: StatusCode, message: &str) -> Response {
    wire::json(status, json!({ "message": message }))
}

async fn method_not_allowed(method: Method) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("Request method '{method}' is not supported"),
    )
}

fn invalid_target(value: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("Provided name, service or IP address '{value}' is not valid."),
    )
}

async fn asn(State(s): State<Arc<SimState>>, req: Request) -> Response {
    s.endpoint(P, "asn");
    let uri = req.uri().clone();
    let caller = req
        .extensions()
        .get::<ConnectInfo<ConnCtx>>()
        .map(|c| c.0.remote.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    if uri
        .query()
        .unwrap_or("")
        .contains(['(', ')', '[', ']', '{', '}', '|', '^', '`'])
    {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid character found in the request target.",
        );
    }
    let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(&uri) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid character found in the request target.",
        );
    };
    // Repeated parameters are merged, which makes them invalid (document, `ip`/`asn`).
    let get = |name: &str| -> Option<String> {
        let values: Vec<&str> = pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let key = get("apiKey");
    let cfg = s.config();
    let unauthorized = |m: &str| error(StatusCode::UNAUTHORIZED, m);
    match s.auth(P, key.as_deref()) {
        Auth::Ok => {}
        Auth::Missing => return unauthorized("Please provide an API key (as 'apiKey=YOUR_API_KEY' URL parameter) to use IPGeolocation API. To get your free API Key, sign up at https://app.ipgeolocation.io/login"),
        Auth::Invalid => return unauthorized("Provided API key is not valid. Contact technical support for assistance at support@ipgeolocation.io"),
        Auth::Forbidden => return unauthorized("Your account has been locked to use IPGeolocation API. Contact technical support for assistance at support@ipgeolocation.io"),
    }
    if cfg.provider(P).ipgeolocation_free() {
        return unauthorized("ASN Lookup is not supported on your current subscription. This feature is available to Paid subscriptions only.");
    }
    let key = key.unwrap_or_default().trim().to_string();
    if let Err(retry) = s.take(P, &key, "asn", 1) {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "You have exceeded the limit of PLAN_USAGE_LIMIT requests per PLAN_INERVAL for your subscribed PLAN plan. Please throttle your requests or upgrade your plan to continue using IPGeolocation API without interruption.");
        wire::set_num(&mut r, "retry-after", retry);
        return r;
    }
    let data = s.data();
    let (ip, info) = match resolve_target(&data, caller, get("ip"), get("asn")) {
        Ok(target) => target,
        Err(response) => return response,
    };
    if !s.quota_take(P, &key, "asn", 1) {
        return error(StatusCode::TOO_MANY_REQUESTS, "You have reached the surcharge amount limit of PLAN_USAGE_LIMIT_AND_SURCHARGE_LIMIT on your subscribed PLAN plan. Please throttle your requests or upgrade your plan to continue using IPGeolocation API without interruption.");
    }
    if ip.is_some() {
        s.lookup_ips(P, 1, 1);
    }
    s.account(P, |a| a.credits += 1);
    let list = |name: &str| -> Vec<String> {
        get(name)
            .map(|v| {
                v.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let include = list("include");
    let mut asn_obj = asn_object(&data, &info, ip, &include);
    let mut body = Map::new();
    if let Some(ip) = ip {
        body.insert("ip".into(), json!(ip.to_string()));
    }
    body.insert("asn".into(), asn_obj.take());
    let body = filter(body, &list("fields"), &list("excludes"));
    let mut resp = wire::json(StatusCode::OK, Value::Object(body));
    wire::set_num(&mut resp, "x-credits-charged", 1);
    resp
}

/// The address or ASN asked about (`ip`, else `asn`, else the caller's address),
/// or the documented error answer (a request's early exit, so its size is no cost).
#[allow(clippy::result_large_err)]
fn resolve_target(
    data: &Dataset,
    caller: IpAddr,
    ip_param: Option<String>,
    asn_param: Option<String>,
) -> Result<(Option<IpAddr>, Arc<AsnInfo>), Response> {
    let ip_param = ip_param.filter(|v| !v.trim().is_empty());
    let asn_param = asn_param.filter(|v| !v.trim().is_empty());
    match (ip_param, asn_param) {
        (Some(_), Some(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            "Pass either 'ip' or 'asn', not both.",
        )),
        (None, Some(a)) => {
            let Some(number) = wire::parse_asn(&a) else {
                return Err(invalid_target(&a));
            };
            match data.asn(number) {
                Some(info) => Ok((None, info)),
                None => Err(not_found()),
            }
        }
        (ip, None) => {
            let ip = match ip {
                Some(text) => match wire::parse_ip(&text) {
                    Some(ip) => ip,
                    None => return Err(invalid_target(&text)),
                },
                None => caller,
            };
            if !is_public(ip) {
                return Err(error(
                    StatusCode::LOCKED,
                    &format!("'{ip}' is a bogon IP address."),
                ));
            }
            Ok((Some(ip), data.profile(ip).asn))
        }
    }
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Provided ASN or IP Address does not exist in our database.",
    )
}

fn connections(data: &Dataset, info: &AsnInfo, salt: u32, n: usize) -> Value {
    let all = tables::ASNS;
    let rows: Vec<Value> = (0..n)
        .map(|i| all[(info.number.wrapping_mul(31).wrapping_add(salt * 7 + i as u32 * 3) as usize) % all.len()].0)
        .filter(|&num| num != info.number)
        .filter_map(|num| data.asn(num))
        .map(|a| json!({ "as_number": format!("AS{}", a.number), "description": a.org, "country": a.country }))
        .collect();
    Value::Array(rows)
}

/// The `asn` object with the requested modules, in the document's key order.
fn asn_object(data: &Dataset, info: &AsnInfo, ip: Option<IpAddr>, include: &[String]) -> Value {
    let full = if info.number == 24940 {
        examples::parse(examples::IPGEOLOCATION_ASN_24940)["asn"].take()
    } else {
        let mut routes: Vec<String> = data
            .routes_of(info.number)
            .iter()
            .map(|n| n.to_string())
            .collect();
        if let Some(ip) = ip {
            let route = data.profile(ip).route.to_string();
            if !routes.contains(&route) {
                routes.push(route);
            }
        }
        let v4 = routes.iter().filter(|r| !r.contains(':')).count();
        let whois = format!(
            "ASNumber: {}\nASName: {}\nOrgName: {}\nCountry: {}\n",
            info.number, info.handle, info.org, info.country
        );
        json!({
            "as_number": format!("AS{}", info.number),
            "organization": info.org,
            "country": info.country,
            "type": info.kind.to_uppercase(),
            "domain": info.domain,
            "date_allocated": info.allocated,
            "asn_name": info.handle,
            "allocation_status": "ASSIGNED",
            "num_of_ipv4_routes": v4.to_string(),
            "num_of_ipv6_routes": (routes.len() - v4).to_string(),
            "rir": info.rir,
            "peers": connections(data, info, 1, 3),
            "routes": routes,
            "upstreams": connections(data, info, 2, 2),
            "downstreams": connections(data, info, 3, 2),
            "whois_response": whois,
        })
    };
    let mut full = full;
    if let Some(obj) = full.as_object_mut() {
        obj.retain(|k, _| !MODULES.contains(&k.as_str()) || include.iter().any(|i| i == k));
    }
    full
}

/// Applies `fields` then `excludes` (document "Fields" and "Excludes").
fn filter(
    mut body: Map<String, Value>,
    fields: &[String],
    excludes: &[String],
) -> Map<String, Value> {
    if !fields.is_empty() {
        let keys: Vec<String> = body.keys().cloned().collect();
        for k in keys {
            if k == "ip" || fields.iter().any(|f| f == &k) {
                continue;
            }
            let prefix = format!("{k}.");
            let nested: Vec<&str> = fields
                .iter()
                .filter_map(|f| f.strip_prefix(&prefix))
                .collect();
            match body.get_mut(&k).and_then(Value::as_object_mut) {
                Some(obj) if !nested.is_empty() => {
                    obj.retain(|sub, _| nested.contains(&sub.as_str()))
                }
                _ => {
                    body.remove(&k);
                }
            }
        }
    }
    for e in excludes {
        if e == "ip" {
            continue;
        }
        let in_fields = fields.contains(e);
        let (parent, leaf) = match e.split_once('.') {
            Some((p, l)) => (Some(p), l),
            None => (None, e.as_str()),
        };
        let container = match parent {
            Some(p) => match body.get_mut(p).and_then(Value::as_object_mut) {
                Some(obj) => obj,
                None => continue,
            },
            None => &mut body,
        };
        match container.get_mut(leaf) {
            Some(Value::Object(obj)) if in_fields => obj.clear(),
            Some(_) => {
                container.remove(leaf);
            }
            None => {}
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Map<String, Value> {
        let v = json!({ "ip": "1.2.3.4", "asn": { "as_number": "AS1", "organization": "O", "country": "US" } });
        v.as_object().cloned().unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fields_and_excludes_follow_the_document() {
        let f = filter(sample(), &s(&["asn.country"]), &[]);
        assert_eq!(
            Value::Object(f),
            json!({ "ip": "1.2.3.4", "asn": { "country": "US" } })
        );
        let f = filter(sample(), &s(&["asn", "asn.organization"]), &[]);
        assert_eq!(f["asn"].as_object().unwrap().len(), 3);
        let f = filter(sample(), &[], &s(&["asn.organization", "ip", "nope"]));
        assert_eq!(
            Value::Object(f),
            json!({ "ip": "1.2.3.4", "asn": { "as_number": "AS1", "country": "US" } })
        );
        let f = filter(sample(), &s(&["asn"]), &s(&["asn"]));
        assert_eq!(Value::Object(f), json!({ "ip": "1.2.3.4", "asn": {} }));
    }
}
