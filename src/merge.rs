//! Merge: writes extraction and lookup results into the event.
//!
//! The `enrichment` format is spliced into the raw JSON bytes: the event's own text
//! is copied unchanged and `,"enrichment":{...}}` replaces its closing brace, so no
//! field is ever reordered, re-rendered or dropped, and no full re-serialisation is
//! paid per event. Only when the event already has a field of that name, or when ECS
//! fields must be merged into existing objects, is the event rebuilt from its parsed
//! form (whose key order is preserved).

use std::io::Write;

use serde_json::{Map, Value};

use crate::config::{OutputConfig, OutputFormat};
use crate::event::Decoded;
use crate::extract::{Extraction, Found};
use crate::lookup::{Resolved, Status};

/// The enrichment of one event: each found address with its lookup, if it had one.
pub struct Enrichment<'a> {
    pub extraction: &'a Extraction,
    /// Same length as `extraction.found`; `None` for addresses that were not looked up.
    pub lookups: &'a [Option<Resolved>],
}

impl Enrichment<'_> {
    /// The event-level status: `skipped` (nothing public), `ok`, `partial`, `no_data`,
    /// or, when no address got data, the first failure (`timeout`, `rate_limited`,
    /// `circuit_open`, `error`).
    pub fn status(&self) -> &'static str {
        let mut looked = 0;
        let mut ok = 0;
        let mut failure = None;
        for r in self.lookups.iter().flatten() {
            looked += 1;
            match r.status {
                Status::Ok => ok += 1,
                Status::NoData => {}
                other => {
                    failure.get_or_insert(other);
                }
            }
        }
        if looked == 0 {
            "skipped"
        } else if ok == looked {
            "ok"
        } else if ok > 0 {
            "partial"
        } else {
            failure.map_or("no_data", Status::as_str)
        }
    }
}

/// Renders the enriched event as one line of JSON (no trailing newline).
pub fn render(event: &Decoded<'_>, enrichment: &Enrichment<'_>, output: &OutputConfig) -> Vec<u8> {
    let field = output.field.as_str();
    let want_object = output.format != OutputFormat::Ecs;
    let want_ecs = output.format != OutputFormat::Enrichment;
    match event {
        Decoded::Json(object) if !want_ecs && object.get(field).is_none() => {
            let raw = object.raw.trim_end();
            let mut out = Vec::with_capacity(raw.len() + 256);
            // A valid object ends with '}'; splice before it.
            out.extend_from_slice(&raw.as_bytes()[..raw.len() - 1]);
            if !object.members.is_empty() {
                out.push(b',');
            }
            write_key(&mut out, field);
            write_enrichment(&mut out, enrichment);
            out.push(b'}');
            out
        }
        Decoded::Text(line) if !want_ecs => {
            let mut out = Vec::with_capacity(line.len() + 256);
            out.extend_from_slice(b"{\"message\":");
            serde_json::to_writer(&mut out, line).expect("writing to a Vec cannot fail");
            out.push(b',');
            write_key(&mut out, field);
            write_enrichment(&mut out, enrichment);
            out.push(b'}');
            out
        }
        _ => {
            let mut object = match event {
                Decoded::Json(object) => object.to_map(),
                Decoded::Text(line) => {
                    let mut m = Map::new();
                    m.insert("message".into(), Value::String((*line).to_string()));
                    m
                }
            };
            if want_ecs {
                write_ecs(&mut object, enrichment);
            }
            if want_object {
                let mut buf = Vec::with_capacity(256);
                write_enrichment(&mut buf, enrichment);
                let value: Value = serde_json::from_slice(&buf).expect("enrichment is valid json");
                object.insert(field.to_string(), value);
            }
            serde_json::to_vec(&Value::Object(object)).expect("a json value always serialises")
        }
    }
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    serde_json::to_writer(&mut *out, key).expect("writing to a Vec cannot fail");
    out.push(b':');
}

fn write_enrichment(out: &mut Vec<u8>, e: &Enrichment<'_>) {
    let _ = write!(out, "{{\"status\":\"{}\",\"ips\":[", e.status());
    for (i, (found, lookup)) in e.extraction.found.iter().zip(e.lookups).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_ip(out, found, lookup.as_ref());
    }
    out.push(b']');
    if e.extraction.capped {
        let _ = write!(
            out,
            ",\"capped\":true,\"ip_limit\":{}",
            e.extraction.found.len()
        );
    }
    out.push(b'}');
}

fn write_ip(out: &mut Vec<u8>, found: &Found, lookup: Option<&Resolved>) {
    // Addresses are plain ASCII: no escaping needed.
    let _ = write!(out, "{{\"ip\":\"{}\",\"field\":", found.ip);
    serde_json::to_writer(&mut *out, found.field.as_ref()).expect("vec write");
    if let Some(role) = &found.role {
        out.extend_from_slice(b",\"role\":");
        serde_json::to_writer(&mut *out, role.as_ref()).expect("vec write");
    }
    let _ = write!(out, ",\"class\":\"{}\"", found.class.as_str());
    if let Some(r) = lookup {
        let _ = write!(out, ",\"status\":\"{}\"", r.status.as_str());
        if let Some(asn) = &r.record.asn {
            out.extend_from_slice(b",\"asn\":");
            serde_json::to_writer(&mut *out, asn).expect("vec write");
        }
        if let Some(geo) = &r.record.geo {
            out.extend_from_slice(b",\"geo\":");
            serde_json::to_writer(&mut *out, geo).expect("vec write");
        }
        if let Some(threat) = &r.record.threat {
            out.extend_from_slice(b",\"threat\":");
            serde_json::to_writer(&mut *out, threat).expect("vec write");
        }
    }
    out.push(b'}');
}

/// ECS roles that have a top-level object of their own.
const ECS_ROLES: [&str; 5] = ["source", "destination", "client", "server", "host"];

/// Writes ECS fields for the first address of each ECS role, merging into objects
/// the event already has and never overwriting a value that is there.
fn write_ecs(object: &mut Map<String, Value>, e: &Enrichment<'_>) {
    for role in ECS_ROLES {
        let Some((found, lookup)) = e
            .extraction
            .found
            .iter()
            .zip(e.lookups)
            .find(|(f, _)| f.role.as_deref() == Some(role))
        else {
            continue;
        };
        let target = object
            .entry(role)
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(target) = target else {
            continue;
        };
        if role != "host" {
            target
                .entry("ip")
                .or_insert_with(|| Value::String(found.ip.to_string()));
        }
        let Some(record) = lookup.as_ref().map(|r| &r.record) else {
            continue;
        };
        if let Some(asn) = &record.asn {
            let mut as_obj = Map::new();
            if let Some(n) = asn.number {
                as_obj.insert("number".into(), n.into());
            }
            if let Some(org) = asn.org.as_deref().or(asn.name.as_deref()) {
                let mut o = Map::new();
                o.insert("name".into(), org.into());
                as_obj.insert("organization".into(), Value::Object(o));
            }
            target.entry("as").or_insert(Value::Object(as_obj));
        }
        if let Some(geo) = &record.geo {
            let mut g = Map::new();
            let mut put = |k: &str, v: Option<&str>| {
                if let Some(v) = v {
                    g.insert(k.into(), v.into());
                }
            };
            put("country_iso_code", geo.country_code.as_deref());
            put("country_name", geo.country_name.as_deref());
            put("region_name", geo.region.as_deref());
            put("city_name", geo.city.as_deref());
            put("timezone", geo.timezone.as_deref());
            if let (Some(lat), Some(lon)) = (geo.latitude, geo.longitude) {
                g.insert(
                    "location".into(),
                    serde_json::json!({"lat": lat, "lon": lon}),
                );
            }
            target.entry("geo").or_insert(Value::Object(g));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Format;
    use crate::event::decode;
    use crate::extract::IpClass;
    use crate::lookup::record::{AsnInfo, IntelRecord};

    fn google() -> Resolved {
        Resolved {
            status: Status::Ok,
            record: IntelRecord {
                asn: Some(AsnInfo {
                    number: Some(15169),
                    org: Some("Google LLC".into()),
                    country: Some("US".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    fn found(ip: &str, class: IpClass, role: Option<&str>) -> Found {
        Found {
            ip: ip.parse().unwrap(),
            class,
            field: Arc::from("data.srcip"),
            role: role.map(Arc::from),
        }
    }

    fn out(cfg: OutputFormat) -> OutputConfig {
        OutputConfig {
            format: cfg,
            field: "enrichment".into(),
        }
    }

    #[test]
    fn splices_without_touching_the_event() {
        let raw = br#"{ "z": 1, "a" : "8.8.8.8" }  "#;
        let d = decode(raw, Format::Json, 1 << 20).unwrap();
        let x = Extraction {
            found: vec![found("8.8.8.8", IpClass::Public, Some("source"))],
            capped: false,
        };
        let lookups = [Some(google())];
        let e = Enrichment {
            extraction: &x,
            lookups: &lookups,
        };
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment))).unwrap();
        assert_eq!(
            s,
            r#"{ "z": 1, "a" : "8.8.8.8" ,"enrichment":{"status":"ok","ips":[{"ip":"8.8.8.8","field":"data.srcip","role":"source","class":"public","status":"ok","asn":{"number":15169,"org":"Google LLC","country":"US"}}]}}"#
        );
    }

    #[test]
    fn empty_object_text_and_non_public() {
        let x = Extraction {
            found: vec![found("10.0.0.1", IpClass::Private, None)],
            capped: true,
        };
        let lookups = [None];
        let e = Enrichment {
            extraction: &x,
            lookups: &lookups,
        };
        let d = decode(b"{}", Format::Json, 10).unwrap();
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment))).unwrap();
        assert_eq!(
            s,
            r#"{"enrichment":{"status":"skipped","ips":[{"ip":"10.0.0.1","field":"data.srcip","class":"private"}],"capped":true,"ip_limit":1}}"#
        );
        let d = decode(b"say \"hi\" from 10.0.0.1", Format::Text, 100).unwrap();
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment))).unwrap();
        assert!(
            s.starts_with(
                r#"{"message":"say \"hi\" from 10.0.0.1","enrichment":{"status":"skipped""#
            ),
            "{s}"
        );
    }

    #[test]
    fn existing_field_is_replaced_in_place() {
        let d = decode(br#"{"a":1,"enrichment":"old","b":2}"#, Format::Json, 100).unwrap();
        let x = Extraction::default();
        let e = Enrichment {
            extraction: &x,
            lookups: &[],
        };
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment))).unwrap();
        assert_eq!(
            s,
            r#"{"a":1,"enrichment":{"status":"skipped","ips":[]},"b":2}"#
        );
    }

    #[test]
    fn ecs_merges_into_existing_objects() {
        let d = decode(
            br#"{"source":{"ip":"8.8.8.8","port":22},"x":1}"#,
            Format::Json,
            1000,
        )
        .unwrap();
        let x = Extraction {
            found: vec![found("8.8.8.8", IpClass::Public, Some("source"))],
            capped: false,
        };
        let lookups = [Some(google())];
        let e = Enrichment {
            extraction: &x,
            lookups: &lookups,
        };
        let v: Value = serde_json::from_slice(&render(&d, &e, &out(OutputFormat::Ecs))).unwrap();
        assert_eq!(v["source"]["port"], 22);
        assert_eq!(v["source"]["as"]["number"], 15169);
        assert_eq!(v["source"]["as"]["organization"]["name"], "Google LLC");
        assert!(v.get("enrichment").is_none());
        let v: Value = serde_json::from_slice(&render(&d, &e, &out(OutputFormat::Both))).unwrap();
        assert_eq!(v["enrichment"]["ips"][0]["asn"]["number"], 15169);
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["source", "x", "enrichment"]
        );
    }

    #[test]
    fn status_words() {
        let x = Extraction {
            found: vec![
                found("8.8.8.8", IpClass::Public, None),
                found("9.9.9.9", IpClass::Public, None),
            ],
            capped: false,
        };
        let nodata = Resolved {
            status: Status::NoData,
            record: IntelRecord::default(),
        };
        let err = Resolved {
            status: Status::Error,
            record: IntelRecord::default(),
        };
        let st = |l: [Option<Resolved>; 2]| {
            Enrichment {
                extraction: &x,
                lookups: &l,
            }
            .status()
        };
        assert_eq!(st([Some(google()), Some(google())]), "ok");
        assert_eq!(st([Some(google()), Some(nodata.clone())]), "partial");
        assert_eq!(st([Some(nodata.clone()), Some(nodata)]), "no_data");
        assert_eq!(st([Some(err.clone()), Some(err)]), "error");
        assert_eq!(st([None, None]), "skipped");
    }
}
