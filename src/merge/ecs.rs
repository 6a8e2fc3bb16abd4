//! The Elastic Common Schema fields of one event, as a [`Patch`].
//!
//! Only fields that ECS defines are written, with ECS's types, plus one custom
//! namespace, `ipenrich`, for what ECS has no field for (the lookup status of each
//! address, threat score, level and flags):
//!
//! - `<role>.ip`, `<role>.as.number`, `<role>.as.organization.name` and
//!   `<role>.geo.*` for the first address of each role `source`, `destination`,
//!   `client` and `server`, added where missing and never over a value that is
//!   there; the role is left out when its object already names another address.
//! - `host.ip` for the first `host` address (ECS has no `host.as` nor `host.geo`
//!   for a looked-up address; its intelligence is in `threat.enrichments`).
//! - `related.ip`: every extracted address (every role, and those found in text),
//!   added once to the array the event may have.
//! - `threat.enrichments[]`: one per looked-up public address with data, appended
//!   to the array the event may have.
//! - `ipenrich`: `status`, `ips[]` and `unplaced` (the paths where an ECS field could
//!   not go because a value that is not an object, or another address, is there);
//!   owned by ipenrich and replaced.
//!
//! Nothing here writes an empty object or array: a field without a value is left out.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::patch::{self, insert, Members, Patch};
use super::Enrichment;
use crate::extract::{Found, IpClass};
use crate::lookup::record::{GeoInfo, IntelRecord, ThreatInfo};
use crate::lookup::{Resolved, Status};

/// Roles that have an ECS object with `ip`, `as` and `geo`.
const NETWORK_ROLES: [&str; 4] = ["source", "destination", "client", "server"];

/// ECS `threat.enrichments.matched.type`: the value ECS gives for an indicator
/// matched against an event field, which is what an intel lookup of an extracted
/// address is.
const MATCHED_TYPE: &str = "indicator_match_rule";

/// The ECS fields of one event and the paths that could not take theirs.
pub struct Ecs {
    pub patch: Vec<(String, Patch)>,
    pub unplaced: Vec<String>,
}

/// The ECS patch of `e` for the document `doc` (the event, or HEC's `event`).
/// `strip` is removed from the front of field paths, so that they name fields of
/// `doc` (`event.src` is `src` inside HEC's `event`).
pub fn build(e: &Enrichment<'_>, doc: &Members<'_>, strip: &str) -> Ecs {
    let mut patch = Vec::new();
    let mut unplaced = Vec::new();
    let pairs = || e.extraction.found.iter().zip(e.lookups);
    for role in NETWORK_ROLES {
        let Some((found, lookup)) = pairs().find(|(f, _)| f.role.as_deref() == Some(role)) else {
            continue;
        };
        let names_another = patch::get(doc, &[role, "ip"]).is_some_and(|raw| {
            let mut listed = match crate::event::node(raw) {
                crate::event::Node::Array(items) => {
                    items.iter().map(|i| patch::address(i)).collect::<Vec<_>>()
                }
                _ => vec![patch::address(raw)],
            };
            listed.retain(Option::is_some);
            !listed.contains(&Some(found.ip))
        });
        if names_another {
            unplaced.push(role.to_string());
            continue;
        }
        insert(
            &mut patch,
            &[role, "ip"],
            Patch::Missing(text(&found.ip.to_string())),
        );
        if let Some(record) = with_data(lookup.as_ref()) {
            as_and_geo(&mut patch, &[role], record, Patch::Missing);
        }
    }
    if let Some(host) = e
        .extraction
        .found
        .iter()
        .find(|f| f.role.as_deref() == Some("host"))
    {
        insert(&mut patch, &["host", "ip"], Patch::Union(vec![host.ip]));
    }
    let all: Vec<IpAddr> = e.extraction.found.iter().map(|f| f.ip).collect();
    insert(&mut patch, &["related", "ip"], Patch::Union(all));
    let indicators: Vec<String> = pairs()
        .filter_map(|(f, l)| Some((f, l.as_ref()?)))
        .filter(|(f, r)| f.class == IpClass::Public && with_data(Some(r)).is_some())
        .map(|(f, r)| enrichment(f, r, strip).to_string())
        .collect();
    insert(
        &mut patch,
        &["threat", "enrichments"],
        Patch::Append(indicators),
    );
    for path in patch::blocked(doc, &patch, "") {
        let segments: Vec<&str> = path.split('.').collect();
        patch::remove(&mut patch, &segments);
        unplaced.push(path);
    }
    unplaced.sort();
    unplaced.dedup();
    let own = ipenrich(e, strip, &unplaced);
    patch.push(("ipenrich".into(), Patch::Replace(own.to_string())));
    Ecs { patch, unplaced }
}

/// The record of a lookup that found something.
fn with_data(lookup: Option<&Resolved>) -> Option<&IntelRecord> {
    lookup
        .filter(|r| r.status == Status::Ok && !r.record.is_empty())
        .map(|r| &r.record)
}

/// A JSON string's text.
fn text(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// `<at>.as.*` and `<at>.geo.*` of a record, each leaf made by `leaf`.
fn as_and_geo(
    patch: &mut Vec<(String, Patch)>,
    at: &[&str],
    record: &IntelRecord,
    leaf: fn(String) -> Patch,
) {
    let path = |tail: &[&'static str]| -> Vec<&str> {
        at.iter().copied().chain(tail.iter().copied()).collect()
    };
    if let Some(asn) = &record.asn {
        if let Some(n) = asn.number {
            insert(patch, &path(&["as", "number"]), leaf(n.to_string()));
        }
        if let Some(org) = non_empty(asn.org.as_deref()).or(non_empty(asn.name.as_deref())) {
            insert(
                patch,
                &path(&["as", "organization", "name"]),
                leaf(text(org)),
            );
        }
    }
    if let Some(geo) = &record.geo {
        for (key, value) in geo_strings(geo) {
            insert(patch, &path(&["geo", key]), leaf(text(value)));
        }
        if let Some(location) = location(geo) {
            insert(
                patch,
                &path(&["geo", "location"]),
                leaf(location.to_string()),
            );
        }
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// The keyword fields of ECS `geo` that the normalised record has.
fn geo_strings(geo: &GeoInfo) -> impl Iterator<Item = (&'static str, &str)> {
    [
        ("country_iso_code", geo.country_code.as_deref()),
        ("country_name", geo.country_name.as_deref()),
        ("region_name", geo.region.as_deref()),
        ("city_name", geo.city.as_deref()),
        ("timezone", geo.timezone.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, non_empty(v)?)))
}

/// ECS `geo.location` (a `geo_point`), only for coordinates on Earth: Elasticsearch
/// refuses the whole document for a latitude of 1000.
fn location(geo: &GeoInfo) -> Option<Value> {
    let (lat, lon) = (geo.latitude?, geo.longitude?);
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
        .then(|| json!({"lat": lat, "lon": lon}))
}

/// One `threat.enrichments[]` object.
fn enrichment(found: &Found, r: &Resolved, strip: &str) -> Value {
    let mut indicator = Vec::new();
    as_and_geo(&mut indicator, &[], &r.record, Patch::Replace);
    let mut indicator = match object(&indicator) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let ip = found.ip.to_string();
    indicator.insert("ip".into(), Value::String(ip.clone()));
    let kind = if found.ip.is_ipv4() {
        "ipv4-addr"
    } else {
        "ipv6-addr"
    };
    indicator.insert("type".into(), kind.into());
    match r.sources.as_slice() {
        [] => {}
        [one] => {
            indicator.insert("provider".into(), Value::String(one.to_string()));
        }
        many => {
            let names = many.iter().map(|n| Value::String(n.to_string())).collect();
            indicator.insert("provider".into(), Value::Array(names));
        }
    }
    if let Some(score) = r.record.threat.as_ref().and_then(|t| t.score) {
        indicator.insert("confidence".into(), confidence(score).into());
    }
    json!({
        "indicator": indicator,
        "matched": {"atomic": ip, "field": field(found, strip), "type": MATCHED_TYPE},
    })
}

/// A patch of leaves holding JSON text, as a value (for objects built in memory).
fn object(patch: &[(String, Patch)]) -> Value {
    let map = patch
        .iter()
        .filter_map(|(k, p)| {
            let v = match p {
                Patch::Object(inner) => object(inner),
                Patch::Missing(t) | Patch::Replace(t) => serde_json::from_str(t).ok()?,
                Patch::Union(_) | Patch::Append(_) => return None,
            };
            Some((k.clone(), v))
        })
        .collect();
    Value::Object(map)
}

/// ECS `indicator.confidence` from the 0-100 threat score, by the None/Low/Med/High
/// scale of STIX 2.1 (Appendix A) that ECS names: 0 None, 1-29 Low, 30-69 Medium,
/// 70-100 High.
pub(super) fn confidence(score: u8) -> &'static str {
    match score {
        0 => "None",
        1..=29 => "Low",
        30..=69 => "Medium",
        _ => "High",
    }
}

fn field<'f>(found: &'f Found, strip: &str) -> &'f str {
    let f = found.field.as_ref();
    f.strip_prefix(strip).filter(|s| !s.is_empty()).unwrap_or(f)
}

/// The custom namespace: per-address status and threat, what could not be placed.
fn ipenrich(e: &Enrichment<'_>, strip: &str, unplaced: &[String]) -> Value {
    let mut own = Map::new();
    own.insert("status".into(), e.status().into());
    let ips: Vec<Value> = e
        .extraction
        .found
        .iter()
        .zip(e.lookups)
        .map(|(f, l)| ip_entry(f, l.as_ref(), strip))
        .collect();
    if !ips.is_empty() {
        own.insert("ips".into(), Value::Array(ips));
    }
    if e.extraction.capped {
        own.insert("capped".into(), true.into());
        own.insert("ip_limit".into(), e.extraction.found.len().into());
    }
    if !unplaced.is_empty() {
        own.insert("unplaced".into(), json!(unplaced));
    }
    Value::Object(own)
}

fn ip_entry(found: &Found, lookup: Option<&Resolved>, strip: &str) -> Value {
    let mut ip = Map::new();
    ip.insert("ip".into(), found.ip.to_string().into());
    ip.insert("field".into(), field(found, strip).into());
    if let Some(role) = &found.role {
        ip.insert("role".into(), role.as_ref().into());
    }
    ip.insert("class".into(), found.class.as_str().into());
    if let Some(r) = lookup {
        ip.insert("status".into(), r.status.as_str().into());
        if let Some(t) = r
            .record
            .threat
            .as_ref()
            .map(threat)
            .filter(|t| !t.is_empty())
        {
            ip.insert("threat".into(), Value::Object(t));
        }
    }
    Value::Object(ip)
}

/// `ipenrich.ips[].threat`: score, level, the flags that are set, categories and
/// blacklists.
fn threat(t: &ThreatInfo) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(score) = t.score {
        out.insert("score".into(), score.into());
    }
    if let Some(level) = non_empty(t.level.as_deref()) {
        out.insert("level".into(), level.into());
    }
    let flags: Vec<Value> = [
        ("tor", t.is_tor),
        ("proxy", t.is_proxy),
        ("vpn", t.is_vpn),
        ("hosting", t.is_hosting),
        ("relay", t.is_relay),
        ("bot", t.known_bot),
    ]
    .into_iter()
    .filter(|(_, set)| *set == Some(true))
    .map(|(name, _)| name.into())
    .collect();
    if !flags.is_empty() {
        out.insert("flags".into(), Value::Array(flags));
    }
    for (key, list) in [("categories", &t.categories), ("blacklists", &t.blacklists)] {
        let list: Vec<Value> = list.iter().map(|s| s.as_ref().into()).collect();
        if !list.is_empty() {
            out.insert(key.into(), Value::Array(list));
        }
    }
    out
}
