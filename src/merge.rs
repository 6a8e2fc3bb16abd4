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
use crate::event::{BadEvent, Decoded};
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
///
/// Fails only when an ECS role object the event already has cannot be parsed for
/// merging (a value serde_json cannot represent); the event then goes to the dead
/// letter with that reason. Every other member is copied as raw text, so a hostile
/// value elsewhere in the event passes through untouched.
pub fn render(
    event: &Decoded<'_>,
    enrichment: &Enrichment<'_>,
    output: &OutputConfig,
) -> Result<Vec<u8>, BadEvent> {
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
            Ok(out)
        }
        // A text line is `message`; an output field of that name would shadow it.
        Decoded::Text(line) if !want_ecs && field != "message" => {
            let mut out = Vec::with_capacity(line.len() + 256);
            out.extend_from_slice(b"{\"message\":");
            write_str(&mut out, line);
            out.push(b',');
            write_key(&mut out, field);
            write_enrichment(&mut out, enrichment);
            out.push(b'}');
            Ok(out)
        }
        _ => render_rebuilt(event, enrichment, field, want_object, want_ecs),
    }
}

/// The slow path: members are copied as raw text, except the ECS role objects that
/// gain fields and the output field, which are (re)written.
fn render_rebuilt(
    event: &Decoded<'_>,
    enrichment: &Enrichment<'_>,
    field: &str,
    want_object: bool,
    want_ecs: bool,
) -> Result<Vec<u8>, BadEvent> {
    let ecs = if want_ecs {
        ecs_fields(enrichment)
    } else {
        Vec::new()
    };
    let mut enrichment_json = Vec::new();
    if want_object {
        write_enrichment(&mut enrichment_json, enrichment);
    }
    let mut out = Vec::with_capacity(event_len(event) + 512);
    out.push(b'{');
    let mut first = true;
    let mut put_key = |out: &mut Vec<u8>, key: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        write_key(out, key);
    };
    let mut done: Vec<&str> = Vec::new();
    match event {
        Decoded::Json(object) => {
            for (key, raw) in &object.members {
                let key = key.as_ref();
                if done.contains(&key) {
                    continue; // a duplicate of a member written below: last one loses
                }
                if want_object && key == field {
                    put_key(&mut out, key);
                    out.extend_from_slice(&enrichment_json);
                    done.push(key);
                } else if let Some((_, add)) = ecs.iter().find(|(role, _)| *role == key) {
                    let mut value = object.parse_member(key, raw)?;
                    if let Value::Object(target) = &mut value {
                        merge_missing(target, add);
                    }
                    put_key(&mut out, key);
                    write_value(&mut out, &value);
                    done.push(key);
                } else {
                    put_key(&mut out, key);
                    out.extend_from_slice(raw.get().as_bytes());
                }
            }
        }
        // The line is `message`, unless the output field takes that name:
        // then the line is ECS's `event.original`, never a duplicate key.
        Decoded::Text(line) if want_object && field == "message" => {
            put_key(&mut out, "event");
            out.extend_from_slice(b"{\"original\":");
            write_str(&mut out, line);
            out.push(b'}');
        }
        Decoded::Text(line) => {
            put_key(&mut out, "message");
            write_str(&mut out, line);
        }
    }
    for (role, add) in &ecs {
        if !done.contains(role) {
            put_key(&mut out, role);
            write_value(&mut out, &Value::Object(add.clone()));
        }
    }
    if want_object && !done.contains(&field) {
        put_key(&mut out, field);
        out.extend_from_slice(&enrichment_json);
    }
    out.push(b'}');
    Ok(out)
}

fn event_len(event: &Decoded<'_>) -> usize {
    match event {
        Decoded::Json(o) => o.raw.len(),
        Decoded::Text(t) => t.len(),
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    // A parsed Value holds only finite numbers and valid strings: it always writes.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Inserts what `add` has and `target` lacks, one level of objects deep, never
/// overwriting a value that is there.
fn merge_missing(target: &mut Map<String, Value>, add: &Map<String, Value>) {
    for (k, v) in add {
        match (target.get_mut(k), v) {
            (None, _) => {
                target.insert(k.clone(), v.clone());
            }
            (Some(Value::Object(t)), Value::Object(a)) => merge_missing(t, a),
            _ => {}
        }
    }
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    write_str(out, key);
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
    write_str(out, found.field.as_ref());
    if let Some(role) = &found.role {
        out.extend_from_slice(b",\"role\":");
        write_str(out, role.as_ref());
    }
    let _ = write!(out, ",\"class\":\"{}\"", found.class.as_str());
    if let Some(r) = lookup {
        let _ = write!(out, ",\"status\":\"{}\"", r.status.as_str());
        if let Some(asn) = &r.record.asn {
            out.extend_from_slice(b",\"asn\":");
            let _ = serde_json::to_writer(&mut *out, asn);
        }
        if let Some(geo) = &r.record.geo {
            out.extend_from_slice(b",\"geo\":");
            let _ = serde_json::to_writer(&mut *out, geo);
        }
        if let Some(threat) = &r.record.threat {
            out.extend_from_slice(b",\"threat\":");
            let _ = serde_json::to_writer(&mut *out, threat);
        }
    }
    out.push(b'}');
}

/// ECS roles that have a top-level object of their own.
const ECS_ROLES: [&str; 5] = ["source", "destination", "client", "server", "host"];

/// The ECS fields for the first address of each ECS role: what each role's object
/// should gain. They are merged into objects the event already has, never
/// overwriting a value that is there.
fn ecs_fields(e: &Enrichment<'_>) -> Vec<(&'static str, Map<String, Value>)> {
    let mut fields = Vec::new();
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
        let mut target = Map::new();
        if role != "host" {
            target.insert("ip".into(), Value::String(found.ip.to_string()));
        }
        if let Some(record) = lookup.as_ref().map(|r| &r.record) {
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
                target.insert("as".into(), Value::Object(as_obj));
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
                    if lat.is_finite() && lon.is_finite() {
                        g.insert(
                            "location".into(),
                            serde_json::json!({"lat": lat, "lon": lon}),
                        );
                    }
                }
                target.insert("geo".into(), Value::Object(g));
            }
        }
        fields.push((role, target));
    }
    fields
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
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment)).unwrap()).unwrap();
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
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment)).unwrap()).unwrap();
        assert_eq!(
            s,
            r#"{"enrichment":{"status":"skipped","ips":[{"ip":"10.0.0.1","field":"data.srcip","class":"private"}],"capped":true,"ip_limit":1}}"#
        );
        let d = decode(b"say \"hi\" from 10.0.0.1", Format::Text, 100).unwrap();
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment)).unwrap()).unwrap();
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
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment)).unwrap()).unwrap();
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
        let v: Value =
            serde_json::from_slice(&render(&d, &e, &out(OutputFormat::Ecs)).unwrap()).unwrap();
        assert_eq!(v["source"]["port"], 22);
        assert_eq!(v["source"]["as"]["number"], 15169);
        assert_eq!(v["source"]["as"]["organization"]["name"], "Google LLC");
        assert!(v.get("enrichment").is_none());
        let v: Value =
            serde_json::from_slice(&render(&d, &e, &out(OutputFormat::Both)).unwrap()).unwrap();
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

    fn source_8888() -> (Extraction, [Option<Resolved>; 1]) {
        (
            Extraction {
                found: vec![found("8.8.8.8", IpClass::Public, Some("source"))],
                capped: false,
            },
            [Some(google())],
        )
    }

    /// Regression (issue 8.1): `{"a":1e400}` and `"\ud800"` passed decode and then
    /// panicked in `to_map` on every ECS pipeline, crash-looping the process.
    #[test]
    fn unrepresentable_values_pass_through_ecs_untouched() {
        let (x, lookups) = source_8888();
        let e = Enrichment {
            extraction: &x,
            lookups: &lookups,
        };
        for raw in [
            r#"{"a":1e400,"source":{"ip":"8.8.8.8"}}"#,
            r#"{"a":"\ud800","source":{"ip":"8.8.8.8"}}"#,
            r#"{"enrichment":1e400,"b":"\udfff"}"#,
        ] {
            let d = decode(raw.as_bytes(), Format::Json, 1 << 20).unwrap();
            for format in [
                OutputFormat::Ecs,
                OutputFormat::Both,
                OutputFormat::Enrichment,
            ] {
                let s = String::from_utf8(render(&d, &e, &out(format)).unwrap()).unwrap();
                assert!(
                    s.contains("1e400") || s.contains("\\ud800") || s.contains("\\udfff"),
                    "{s}"
                );
                if format != OutputFormat::Enrichment && raw.contains("source") {
                    assert!(s.contains(r#""source":{"ip":"8.8.8.8","as":{"#), "{s}");
                }
            }
        }
    }

    /// A role object that must be merged into but holds such a value is a bad event
    /// with a reason, never a panic.
    #[test]
    fn unmappable_role_object_is_a_bad_event() {
        let (x, lookups) = source_8888();
        let e = Enrichment {
            extraction: &x,
            lookups: &lookups,
        };
        let d = decode(
            br#"{"source":{"ip":"8.8.8.8","bytes":1e400}}"#,
            Format::Json,
            1 << 20,
        )
        .unwrap();
        let err = render(&d, &e, &out(OutputFormat::Ecs)).unwrap_err();
        assert_eq!(err.kind(), "unmappable");
        assert!(err.to_string().contains("`source`"), "{err}");
        // The enrichment format never needs to parse it.
        assert!(render(&d, &e, &out(OutputFormat::Enrichment)).is_ok());
    }

    /// Regression (issue 8.1): an object nested exactly 128 deep passed decode and
    /// panicked at the full parse; now decode refuses it, and 127 levels render.
    #[test]
    fn deepest_accepted_nesting_renders_in_every_format() {
        let (x, lookups) = source_8888();
        let e = Enrichment {
            extraction: &x,
            lookups: &lookups,
        };
        let nest = |levels: usize| {
            // `levels` counts the outer object too.
            let inner = "{\"a\":".repeat(levels - 3) + "{}" + &"}".repeat(levels - 3);
            format!(r#"{{"source":{{"ip":"8.8.8.8","deep":{inner}}}}}"#)
        };
        let at_limit = nest(crate::event::MAX_DEPTH);
        assert!(serde_json::from_str::<Value>(&at_limit).is_ok());
        let d = decode(at_limit.as_bytes(), Format::Json, 1 << 20).unwrap();
        for format in [
            OutputFormat::Ecs,
            OutputFormat::Both,
            OutputFormat::Enrichment,
        ] {
            let s = render(&d, &e, &out(format)).unwrap();
            assert!(serde_json::from_slice::<Value>(&s).is_ok(), "{format:?}");
        }
        let over = nest(crate::event::MAX_DEPTH + 1);
        assert!(serde_json::from_str::<Value>(&over).is_err());
        assert_eq!(
            decode(over.as_bytes(), Format::Json, 1 << 20)
                .unwrap_err()
                .kind(),
            "invalid_json"
        );
    }
}
