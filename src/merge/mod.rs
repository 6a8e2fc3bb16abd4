//! Merge: writes extraction and lookup results into the event.
//!
//! The `enrichment` format at a top-level field is spliced into the raw JSON bytes:
//! the event's own text is copied unchanged and `,"enrichment":{...}}` replaces its
//! closing brace, so no field is ever reordered, re-rendered or dropped, and no full
//! re-serialisation is paid per event. Every other case (a dotted `output.field`, a
//! field the event already has, the ECS format) patches the raw text
//! ([`patch`]): members are still copied as read, values are opened only along the
//! paths written to, and nothing that is not an object is written over. Rendering
//! cannot fail: what cannot be placed is left out of ECS and named in
//! `ipenrich.unplaced`, and the enrichment object then goes to the top level.

use std::borrow::Cow;
use std::io::Write;

use serde_json::value::RawValue;

use crate::config::{Envelope, OutputConfig, OutputFormat};
use crate::event::{node, Decoded, Node};
use crate::extract::{Extraction, Found};
use crate::lookup::{Resolved, Status};

mod ecs;
pub mod patch;

use patch::{Members, Patch};

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

/// One enriched event.
#[derive(Debug)]
pub struct Rendered {
    /// The event as one line of JSON (no trailing newline).
    pub line: Vec<u8>,
    /// Dotted paths where output could not go because a value that is not an object
    /// (or, for an ECS role, another address) is there; counted in
    /// `ipenrich_unplaced_total`.
    pub unplaced: Vec<String>,
}

/// Renders the enriched event. Never fails: every member of the event is copied as
/// raw text, so a hostile value anywhere passes through untouched.
pub fn render(event: &Decoded<'_>, enrichment: &Enrichment<'_>, output: &OutputConfig) -> Rendered {
    let field = output.field.as_str();
    let want_object = output.format != OutputFormat::Ecs;
    let want_ecs = output.format != OutputFormat::Enrichment;
    let plain = !want_ecs && !field.contains('.');
    let line = match event {
        Decoded::Json(object) if plain && object.get(field).is_none() => {
            let raw = object.raw.trim_end();
            let mut out = Vec::with_capacity(raw.len() + enrichment_capacity(enrichment));
            // A valid object ends with '}'; splice before it.
            out.extend_from_slice(&raw.as_bytes()[..raw.len() - 1]);
            if !object.members.is_empty() {
                out.push(b',');
            }
            patch::write_key(&mut out, field);
            write_enrichment(&mut out, enrichment);
            out.push(b'}');
            out
        }
        // A text line is `message`; an output field of that name would shadow it.
        Decoded::Text(line) if plain && field != "message" => {
            let mut out = Vec::with_capacity(line.len() + 16 + enrichment_capacity(enrichment));
            out.extend_from_slice(b"{\"message\":");
            write_str(&mut out, line);
            out.push(b',');
            patch::write_key(&mut out, field);
            write_enrichment(&mut out, enrichment);
            out.push(b'}');
            out
        }
        _ => return render_patched(event, enrichment, output, want_object, want_ecs),
    };
    Rendered {
        line,
        unplaced: Vec::new(),
    }
}

/// The general path: the event's members with the ECS patch and the enrichment
/// object applied.
fn render_patched(
    event: &Decoded<'_>,
    enrichment: &Enrichment<'_>,
    output: &OutputConfig,
    want_object: bool,
    want_ecs: bool,
) -> Rendered {
    let field = output.field.as_str();
    let text_member: Option<Box<RawValue>>;
    let text_members: Vec<(Cow<'_, str>, &RawValue)>;
    let members: &Members<'_> = match event {
        Decoded::Json(object) => &object.members,
        Decoded::Text(line) => {
            // The line is `message`, unless the output field takes that name:
            // then the line is ECS's `event.original`, never a duplicate key.
            let (key, value) = if want_object && field == "message" {
                ("event", serde_json::json!({ "original": line }))
            } else {
                ("message", serde_json::Value::String((*line).to_owned()))
            };
            text_member = serde_json::value::to_raw_value(&value).ok();
            text_members = text_member
                .as_deref()
                .map(|raw| (Cow::Borrowed(key), raw))
                .into_iter()
                .collect();
            &text_members
        }
    };
    let mut patch = Vec::new();
    let mut unplaced = Vec::new();
    if want_ecs {
        let hec_event = match event {
            Decoded::Json(_) if output.envelope == Envelope::Hec => patch::get(members, &["event"])
                .and_then(|raw| match node(raw) {
                    Node::Object(inner) => Some(inner),
                    _ => None,
                }),
            _ => None,
        };
        match hec_event {
            Some(doc) => {
                let ecs = ecs::build(enrichment, &doc, "event.");
                unplaced.extend(ecs.unplaced.iter().map(|p| format!("event.{p}")));
                patch.push(("event".to_string(), Patch::Object(ecs.patch)));
            }
            None => {
                let ecs = ecs::build(enrichment, members, "");
                unplaced.extend(ecs.unplaced);
                patch = ecs.patch;
            }
        }
    }
    if want_object {
        let mut text = Vec::new();
        write_enrichment(&mut text, enrichment);
        let leaf = Patch::Replace(String::from_utf8_lossy(&text).into_owned());
        let path: Vec<&str> = field.split('.').collect();
        let mut alone = Vec::new();
        patch::insert(&mut alone, &path, leaf.clone());
        if patch::blocked(members, &alone, "").is_empty() {
            patch::insert(&mut patch, &path, leaf);
        } else {
            // Never lost: at the top, under the path's last segment.
            unplaced.push(field.to_string());
            let last = path.last().copied().unwrap_or(field);
            patch::insert(&mut patch, &[last], leaf);
        }
    }
    let mut line = Vec::with_capacity(event_len(event) + 1024);
    patch::write_object(&mut line, members, &patch);
    Rendered { line, unplaced }
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

/// Room for the enrichment object, so that the output is written without growing
/// (each growth copies the event: measured as memmove and fresh pages in issue 13's
/// profile). An address with ASN and country takes about 160 bytes.
fn enrichment_capacity(e: &Enrichment<'_>) -> usize {
    64 + 256 * e.extraction.found.len()
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Format;
    use crate::event::decode;
    use crate::extract::IpClass;
    use crate::lookup::record::{AsnInfo, GeoInfo, IntelRecord, ThreatInfo};
    use serde_json::Value;

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
            sources: vec![Arc::from("demo-asn")],
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
            envelope: Envelope::None,
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
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment)).line).unwrap();
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
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment)).line).unwrap();
        assert_eq!(
            s,
            r#"{"enrichment":{"status":"skipped","ips":[{"ip":"10.0.0.1","field":"data.srcip","class":"private"}],"capped":true,"ip_limit":1}}"#
        );
        let d = decode(b"say \"hi\" from 10.0.0.1", Format::Text, 100).unwrap();
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment)).line).unwrap();
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
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Enrichment)).line).unwrap();
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
            serde_json::from_slice(&render(&d, &e, &out(OutputFormat::Ecs)).line).unwrap();
        assert_eq!(v["source"]["port"], 22);
        assert_eq!(v["source"]["as"]["number"], 15169);
        assert_eq!(v["source"]["as"]["organization"]["name"], "Google LLC");
        assert!(v.get("enrichment").is_none());
        let v: Value =
            serde_json::from_slice(&render(&d, &e, &out(OutputFormat::Both)).line).unwrap();
        assert_eq!(v["enrichment"]["ips"][0]["asn"]["number"], 15169);
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["source", "x", "related", "threat", "ipenrich", "enrichment"]
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
            sources: Vec::new(),
        };
        let err = Resolved {
            status: Status::Error,
            record: IntelRecord::default(),
            sources: Vec::new(),
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
                let s = String::from_utf8(render(&d, &e, &out(format)).line).unwrap();
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

    /// A role object that must be merged into but holds such a value was a dead
    /// letter (`unmappable`): it was parsed whole to merge. Now it is patched as raw
    /// text and the value passes through.
    #[test]
    fn a_role_object_with_an_unrepresentable_value_is_merged_raw() {
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
        let s = String::from_utf8(render(&d, &e, &out(OutputFormat::Ecs)).line).unwrap();
        assert!(
            s.starts_with(r#"{"source":{"ip":"8.8.8.8","bytes":1e400,"as":{"number":15169,"#),
            "{s}"
        );
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
            let s = render(&d, &e, &out(format)).line;
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

    fn render_value(
        raw: &str,
        x: &Extraction,
        lookups: &[Option<Resolved>],
        o: &OutputConfig,
    ) -> (Value, Vec<String>) {
        let d = decode(raw.as_bytes(), Format::Auto, 1 << 20).unwrap();
        let e = Enrichment {
            extraction: x,
            lookups,
        };
        let r = render(&d, &e, o);
        let v = serde_json::from_slice(&r.line)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&r.line)));
        (v, r.unplaced)
    }

    /// No `{}` and no `[]` anywhere in `v`.
    fn assert_nothing_empty(v: &Value) {
        match v {
            Value::Object(m) => {
                assert!(!m.is_empty(), "an empty object");
                m.values().for_each(assert_nothing_empty);
            }
            Value::Array(a) => {
                assert!(!a.is_empty(), "an empty array");
                a.iter().for_each(assert_nothing_empty);
            }
            _ => {}
        }
    }

    fn scored(score: u8) -> Resolved {
        let mut r = google();
        r.record.geo = Some(GeoInfo {
            country_code: Some("US".into()),
            city: Some("".into()),
            latitude: Some(37.75),
            longitude: Some(-97.8),
            ..Default::default()
        });
        r.record.threat = Some(ThreatInfo {
            score: Some(score),
            level: Some("high".into()),
            is_tor: Some(true),
            is_vpn: Some(false),
            ..Default::default()
        });
        r.sources = vec![Arc::from("demo-asn"), Arc::from("ipinsights")];
        r
    }

    /// The issue: `host.as.*` (not ECS) and an empty `"host": {}` on every Wazuh alert.
    #[test]
    fn a_host_address_is_host_ip_and_never_host_as() {
        let x = Extraction {
            found: vec![
                found("8.8.8.8", IpClass::Public, Some("source")),
                found("192.168.1.20", IpClass::Private, Some("host")),
            ],
            capped: false,
        };
        let (v, unplaced) = render_value(
            r#"{"agent":{"ip":"192.168.1.20"}}"#,
            &x,
            &[Some(google()), None],
            &out(OutputFormat::Ecs),
        );
        assert_eq!(v["host"], serde_json::json!({"ip": ["192.168.1.20"]}));
        assert_eq!(v["source"]["ip"], "8.8.8.8");
        assert_eq!(
            v["related"]["ip"],
            serde_json::json!(["8.8.8.8", "192.168.1.20"])
        );
        assert!(unplaced.is_empty());
        assert_nothing_empty(&v);
    }

    #[test]
    fn related_ip_joins_what_the_event_has() {
        let x = Extraction {
            found: vec![
                found("8.8.8.8", IpClass::Public, Some("source")),
                found("10.0.0.1", IpClass::Private, None),
            ],
            capped: false,
        };
        let l = [Some(google()), None];
        let (v, _) = render_value(
            r#"{"related":{"ip":["10.0.0.1","1.1.1.1"],"user":["a"]}}"#,
            &x,
            &l,
            &out(OutputFormat::Ecs),
        );
        assert_eq!(
            v["related"]["ip"],
            serde_json::json!(["10.0.0.1", "1.1.1.1", "8.8.8.8"])
        );
        assert_eq!(v["related"]["user"], serde_json::json!(["a"]));
        let (v, _) = render_value(
            r#"{"related":{"ip":"8.8.8.8"}}"#,
            &x,
            &l,
            &out(OutputFormat::Ecs),
        );
        assert_eq!(
            v["related"]["ip"],
            serde_json::json!(["8.8.8.8", "10.0.0.1"])
        );
    }

    /// The issue: on Splunk HEC events `source` is a string and `source.*` was
    /// skipped without a word. Now the role is named in `ipenrich.unplaced` and the
    /// address keeps its intelligence in `related.ip` and `threat.enrichments`.
    #[test]
    fn a_role_that_is_not_an_object_is_unplaced_not_overwritten() {
        let (x, l) = source_8888();
        let (v, unplaced) = render_value(
            r#"{"source":"pan:traffic","related":"x","threat":{"enrichments":{"n":1}}}"#,
            &x,
            &l,
            &out(OutputFormat::Ecs),
        );
        assert_eq!(v["source"], "pan:traffic");
        assert_eq!(v["related"], "x");
        assert_eq!(v["threat"]["enrichments"], serde_json::json!({"n": 1}));
        assert_eq!(unplaced, ["related", "source", "threat.enrichments"]);
        assert_eq!(v["ipenrich"]["unplaced"], serde_json::json!(unplaced));
        let (v, unplaced) = render_value(
            r#"{"source":"pan:traffic"}"#,
            &x,
            &l,
            &out(OutputFormat::Ecs),
        );
        assert_eq!(unplaced, ["source"]);
        assert_eq!(v["related"]["ip"], serde_json::json!(["8.8.8.8"]));
        let t = &v["threat"]["enrichments"][0];
        assert_eq!(t["indicator"]["as"]["number"], 15169);
        assert_eq!(t["matched"]["atomic"], "8.8.8.8");
        assert_eq!(t["matched"]["field"], "data.srcip");
    }

    #[test]
    fn a_role_object_naming_another_address_gains_nothing() {
        let (x, l) = source_8888();
        let (v, unplaced) = render_value(
            r#"{"source":{"ip":"1.1.1.1"}}"#,
            &x,
            &l,
            &out(OutputFormat::Ecs),
        );
        assert_eq!(v["source"], serde_json::json!({"ip": "1.1.1.1"}));
        assert_eq!(unplaced, ["source"]);
        let (v, unplaced) = render_value(
            r#"{"source":{"ip":["1.1.1.1","8.8.8.8"]}}"#,
            &x,
            &l,
            &out(OutputFormat::Ecs),
        );
        assert_eq!(
            v["source"]["as"]["number"], 15169,
            "listed among its addresses"
        );
        assert!(unplaced.is_empty());
    }

    #[test]
    fn threat_goes_to_enrichments_and_the_custom_namespace() {
        let x = Extraction {
            found: vec![found("2001:4860::8888", IpClass::Public, None)],
            capped: false,
        };
        let (v, _) = render_value(
            "attack from 2001:4860::8888",
            &x,
            &[Some(scored(85))],
            &out(OutputFormat::Ecs),
        );
        assert_eq!(v["message"], "attack from 2001:4860::8888");
        assert_eq!(v["related"]["ip"], serde_json::json!(["2001:4860::8888"]));
        let i = &v["threat"]["enrichments"][0]["indicator"];
        assert_eq!(i["type"], "ipv6-addr");
        assert_eq!(i["confidence"], "High");
        assert_eq!(i["provider"], serde_json::json!(["demo-asn", "ipinsights"]));
        assert_eq!(
            i["geo"],
            serde_json::json!({"country_iso_code": "US", "location": {"lat": 37.75, "lon": -97.8}}),
            "no empty city"
        );
        assert_eq!(
            v["threat"]["enrichments"][0]["matched"]["type"],
            "indicator_match_rule"
        );
        assert_eq!(
            v["ipenrich"],
            serde_json::json!({"status": "ok", "ips": [{"ip": "2001:4860::8888", "field": "data.srcip", "class": "public", "status": "ok",
                "threat": {"score": 85, "level": "high", "flags": ["tor"]}}]})
        );
        assert_nothing_empty(&v);
        for (score, word) in [
            (0, "None"),
            (1, "Low"),
            (29, "Low"),
            (30, "Medium"),
            (69, "Medium"),
            (70, "High"),
            (100, "High"),
        ] {
            assert_eq!(ecs::confidence(score), word);
        }
    }

    /// Provider strings are data from outside: escaped, and a coordinate off the
    /// Earth (which would make Elasticsearch refuse the document) is left out.
    #[test]
    fn hostile_provider_values_stay_valid_ecs() {
        let mut r = scored(50);
        r.record.asn.as_mut().unwrap().org = Some("\"},\u{0}\n{\"x".into());
        r.record.geo.as_mut().unwrap().latitude = Some(1000.0);
        let (x, _) = source_8888();
        let (v, _) = render_value(
            r#"{"source":{"ip":"8.8.8.8"}}"#,
            &x,
            &[Some(r)],
            &out(OutputFormat::Both),
        );
        assert_eq!(v["source"]["as"]["organization"]["name"], "\"},\u{0}\n{\"x");
        assert!(v["source"]["geo"].get("location").is_none());
        assert_eq!(v["enrichment"]["ips"][0]["asn"]["number"], 15169);
    }

    #[test]
    fn a_dotted_output_field_nests_and_never_overwrites() {
        let (x, l) = source_8888();
        let mut o = out(OutputFormat::Enrichment);
        o.field = "event.enrichment".into();
        let (v, unplaced) = render_value(r#"{"time":1,"event":{"src":"8.8.8.8"}}"#, &x, &l, &o);
        assert_eq!(v["event"]["src"], "8.8.8.8");
        assert_eq!(v["event"]["enrichment"]["ips"][0]["ip"], "8.8.8.8");
        assert!(
            v.get("event.enrichment").is_none(),
            "the issue: a key with a dot"
        );
        assert!(unplaced.is_empty());
        let (v, _) = render_value(r#"{"time":1}"#, &x, &l, &o);
        assert_eq!(
            v["event"]["enrichment"]["status"], "ok",
            "created where missing"
        );
        let (v, unplaced) = render_value(r#"{"event":"raw line 8.8.8.8"}"#, &x, &l, &o);
        assert_eq!(v["event"], "raw line 8.8.8.8");
        assert_eq!(
            v["enrichment"]["ips"][0]["ip"], "8.8.8.8",
            "at the top, not lost"
        );
        assert_eq!(unplaced, ["event.enrichment"]);
    }

    #[test]
    fn a_hec_envelope_takes_ecs_into_its_event() {
        let (x, l) = source_8888();
        let o = OutputConfig {
            format: OutputFormat::Both,
            field: "event.enrichment".into(),
            envelope: Envelope::Hec,
        };
        let hec = r#"{"time":1,"host":"fw-01","source":"pan:traffic","event":{"src":"8.8.8.8","dst":"10.1.2.3"}}"#;
        let x = Extraction {
            found: vec![Found {
                field: Arc::from("event.src"),
                ..x.found[0].clone()
            }],
            capped: false,
        };
        let (v, unplaced) = render_value(hec, &x, &l, &o);
        assert!(unplaced.is_empty(), "{unplaced:?}");
        assert_eq!(v["source"], "pan:traffic");
        assert_eq!(v["host"], "fw-01");
        let ev = &v["event"];
        assert_eq!(ev["source"]["as"]["number"], 15169);
        assert_eq!(ev["related"]["ip"], serde_json::json!(["8.8.8.8"]));
        assert_eq!(ev["threat"]["enrichments"][0]["matched"]["field"], "src");
        assert_eq!(ev["ipenrich"]["ips"][0]["field"], "src");
        assert_eq!(ev["enrichment"]["ips"][0]["field"], "event.src");
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["time", "host", "source", "event"],
            "nothing added beside HEC's keys"
        );
        // A raw-text HEC event: ECS goes on the top, where `source` is a string.
        let raw = r#"{"time":1,"source":"/var/log/secure","event":"sshd: from 8.8.8.8"}"#;
        let (v, unplaced) = render_value(raw, &x, &l, &o);
        assert_eq!(v["event"], "sshd: from 8.8.8.8");
        assert_eq!(v["related"]["ip"], serde_json::json!(["8.8.8.8"]));
        assert_eq!(unplaced, ["source", "event.enrichment"]);
        assert_eq!(v["enrichment"]["status"], "ok");
    }

    /// `ENRICHMENT_HEADROOM` is what an event may grow by under the output's size
    /// limit; the `enrichment` format with 64 fully answered IPv6 addresses (long
    /// provider strings) stays inside it. `both` writes each answer again as ECS
    /// fields and can outgrow it (135 KB here): such an event near the limit goes
    /// to the dead letter as `too_large_for_output`, never lost (README, Output).
    #[test]
    fn the_largest_output_fits_the_enrichment_headroom() {
        let long = |s: &str| Some(Arc::<str>::from(format!("{s} {}", "x".repeat(40))));
        let record = IntelRecord {
            asn: Some(AsnInfo {
                number: Some(4_200_000_000),
                name: long("NAME"),
                org: long("Organisation"),
                country: Some("DE".into()),
                domain: long("domain"),
                kind: Some("hosting".into()),
                route: Some("2a01:4f8:ffff:ffff::/64".into()),
                rir: Some("ripe".into()),
            }),
            geo: Some(GeoInfo {
                country_code: Some("DE".into()),
                country_name: long("Country"),
                region: long("Region"),
                city: long("City"),
                latitude: Some(-33.123456789),
                longitude: Some(-151.123456789),
                timezone: Some("America/Argentina/Buenos_Aires".into()),
            }),
            threat: Some(ThreatInfo {
                score: Some(100),
                level: Some("critical".into()),
                is_tor: Some(true),
                is_proxy: Some(true),
                is_vpn: Some(true),
                is_hosting: Some(true),
                is_relay: Some(true),
                known_bot: Some(true),
                categories: vec![
                    "ssh_bruteforce".into(),
                    "port_scan".into(),
                    "web_attack".into(),
                ],
                blacklists: vec!["spamhaus_drop".into(), "firehol_level1".into()],
            }),
        };
        let resolved = Resolved {
            status: Status::Ok,
            record,
            sources: [
                "mmdb",
                "ipinsights",
                "openipapi",
                "iptrust",
                "ipgeolocation",
            ]
            .map(Arc::from)
            .to_vec(),
        };
        let found: Vec<Found> = (0..64)
            .map(|i| Found {
                ip: format!("2a01:4f8:c17:1234:ffff:ffff:ffff:{i:04x}")
                    .parse()
                    .unwrap(),
                class: IpClass::Public,
                field: Arc::from("data.some_long_field_name.src_ip"),
                role: Some(Arc::from(
                    ["source", "destination", "client", "server", "host"][i % 5],
                )),
            })
            .collect();
        let x = Extraction {
            found,
            capped: true,
        };
        let lookups = vec![Some(resolved); 64];
        let e = Enrichment {
            extraction: &x,
            lookups: &lookups,
        };
        let d = decode(b"{}", Format::Json, 10).unwrap();
        let grown = |format| render(&d, &e, &out(format)).line.len();
        let (plain, both) = (grown(OutputFormat::Enrichment), grown(OutputFormat::Both));
        assert!(
            plain + 2 * 1024 <= crate::config::ENRICHMENT_HEADROOM,
            "{plain} bytes"
        );
        assert!(
            (100_000..160_000).contains(&both),
            "{both} bytes: update the README"
        );
    }
}
