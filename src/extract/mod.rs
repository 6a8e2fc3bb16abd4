//! Extraction: pure functions from decoded events to classified IP addresses; no IO.
//!
//! [`text::scan`] finds addresses in a string, [`class::classify`] says what kind of
//! address each is, and [`Extractor`] applies a pipeline's field list to an event:
//! configured fields (with their role), free-text fields, or every string. Each
//! address is reported once per event, at its first occurrence, and at most
//! `max_ips` addresses are kept; hitting the cap is reported, never silent.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::config::ExtractConfig;
use crate::event::{node, Decoded, Node};

pub mod class;
pub mod text;

pub use class::{classify, IpClass};

/// One address found in an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The address, canonical (IPv4-mapped IPv6 reported as IPv4).
    pub ip: IpAddr,
    /// What kind of address it is; only `Public` ones are looked up.
    pub class: IpClass,
    /// Dotted path of the field it was found in.
    pub field: Arc<str>,
    /// The configured role of that field, if any.
    pub role: Option<Arc<str>>,
}

/// The addresses of one event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extraction {
    /// Distinct addresses in order of first appearance, at most `max_ips`.
    pub found: Vec<Found>,
    /// True when more distinct addresses were present than `max_ips`.
    pub capped: bool,
}

struct FieldSpec {
    segments: Vec<String>,
    dotted: Arc<str>,
    role: Option<Arc<str>>,
}

/// A pipeline's extraction rules, compiled once.
pub struct Extractor {
    fields: Vec<FieldSpec>,
    scan_all: bool,
    max_ips: usize,
    message: Arc<str>,
}

impl Extractor {
    /// Compiles the `extract` section of a pipeline.
    pub fn new(config: &ExtractConfig, max_ips: usize) -> Self {
        let spec = |path: &str, role: Option<&str>| FieldSpec {
            segments: path.split('.').map(str::to_string).collect(),
            dotted: Arc::from(path),
            role: role.map(Arc::from),
        };
        let mut fields: Vec<FieldSpec> = config
            .fields
            .iter()
            .map(|f| spec(&f.path, f.role.as_deref()))
            .collect();
        fields.extend(config.text.iter().map(|p| spec(p, None)));
        Extractor {
            fields,
            scan_all: config.scan_all_strings,
            max_ips,
            message: Arc::from("message"),
        }
    }

    /// Finds the addresses of one event.
    pub fn extract(&self, event: &Decoded<'_>) -> Extraction {
        let mut out = Collector {
            x: Extraction::default(),
            max: self.max_ips,
        };
        match event {
            Decoded::Text(line) => out.scan(line, &self.message, &None),
            Decoded::Json(object) => {
                for f in &self.fields {
                    if let Some((first, rest)) = f.segments.split_first() {
                        if let Some(v) = object.get(first) {
                            walk_value(v, rest, &mut |s| out.scan(s, &f.dotted, &f.role));
                        }
                    }
                }
                if self.scan_all {
                    let mut path = Vec::new();
                    scan_members(&object.members, &mut path, &mut out);
                }
            }
        }
        out.x
    }
}

struct Collector {
    x: Extraction,
    max: usize,
}

impl Collector {
    fn scan(&mut self, s: &str, field: &Arc<str>, role: &Option<Arc<str>>) {
        text::scan(s, |ip| self.push(ip, || field.clone(), role));
    }

    fn push(&mut self, ip: IpAddr, field: impl FnOnce() -> Arc<str>, role: &Option<Arc<str>>) {
        if self.x.found.iter().any(|f| f.ip == ip) {
            return;
        }
        if self.x.found.len() >= self.max {
            self.x.capped = true;
            return;
        }
        self.x.found.push(Found {
            ip,
            class: classify(ip),
            field: field(),
            role: role.clone(),
        });
    }
}

/// Calls `f` on every string reached by `rest`; arrays along the way are walked.
/// Only the values on the path are opened, one level at a time.
fn walk_value(v: &RawValue, rest: &[String], f: &mut impl FnMut(&str)) {
    match node(v) {
        Node::Object(members) => {
            if let Some((first, rest)) = rest.split_first() {
                if let Some((_, v)) = members.iter().find(|(k, _)| k == first) {
                    walk_value(v, rest, f);
                }
            }
        }
        Node::Array(items) => items.iter().for_each(|item| walk_value(item, rest, f)),
        Node::String(s) if rest.is_empty() => f(&s),
        _ => {}
    }
}

/// Scans every string value; the dotted path is only built when an address is found.
/// Depth is bounded by the decoder's nesting check.
fn scan_members<'v>(
    members: &[(Cow<'v, str>, &'v RawValue)],
    path: &mut Vec<Cow<'v, str>>,
    out: &mut Collector,
) {
    for (k, v) in members {
        path.push(k.clone());
        scan_value(v, path, out);
        path.pop();
    }
}

fn scan_value<'v>(v: &'v RawValue, path: &mut Vec<Cow<'v, str>>, out: &mut Collector) {
    match node(v) {
        Node::Object(members) => scan_members(&members, path, out),
        Node::Array(items) => items.iter().for_each(|item| scan_value(item, path, out)),
        Node::String(s) => {
            let mut field: Option<Arc<str>> = None;
            text::scan(&s, |ip| {
                out.push(
                    ip,
                    || {
                        field
                            .get_or_insert_with(|| Arc::from(path.join(".")))
                            .clone()
                    },
                    &None,
                )
            });
        }
        Node::Scalar => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FieldConfig, Format};
    use crate::event::decode;

    fn extractor(
        fields: &[(&str, Option<&str>)],
        text: &[&str],
        scan_all: bool,
        max: usize,
    ) -> Extractor {
        let config = ExtractConfig {
            fields: fields
                .iter()
                .map(|(p, r)| FieldConfig {
                    path: p.to_string(),
                    role: r.map(str::to_string),
                })
                .collect(),
            text: text.iter().map(|s| s.to_string()).collect(),
            scan_all_strings: scan_all,
        };
        Extractor::new(&config, max)
    }

    fn ips(x: &Extraction) -> Vec<String> {
        x.found
            .iter()
            .map(|f| format!("{}@{}:{}", f.ip, f.field, f.role.as_deref().unwrap_or("-")))
            .collect()
    }

    #[test]
    fn configured_fields_carry_roles_and_walk_arrays() {
        let ev = br#"{"data":{"srcip":"203.0.114.7","dstip":["8.8.8.8","10.0.0.1:22"]},"full_log":"from 1.1.1.1 port 22"}"#;
        let d = decode(ev, Format::Json, 1 << 20).unwrap();
        let x = extractor(
            &[
                ("data.srcip", Some("source")),
                ("data.dstip", Some("destination")),
            ],
            &["full_log"],
            false,
            10,
        )
        .extract(&d);
        assert_eq!(
            ips(&x),
            [
                "203.0.114.7@data.srcip:source",
                "8.8.8.8@data.dstip:destination",
                "10.0.0.1@data.dstip:destination",
                "1.1.1.1@full_log:-"
            ]
        );
        assert!(!x.capped);
    }

    #[test]
    fn duplicates_keep_first_occurrence() {
        let d = decode(
            br#"{"a":"8.8.8.8","b":{"c":"x 8.8.8.8 y 9.9.9.9"}}"#,
            Format::Json,
            1 << 20,
        )
        .unwrap();
        let x = extractor(&[], &[], true, 10).extract(&d);
        assert_eq!(ips(&x), ["8.8.8.8@a:-", "9.9.9.9@b.c:-"]);
    }

    #[test]
    fn cap_is_reported() {
        let line: String = (1..=200).map(|i| format!("8.8.{i}.1 ")).collect();
        let d = decode(line.as_bytes(), Format::Auto, 1 << 20).unwrap();
        let x = extractor(&[], &[], true, 64).extract(&d);
        assert_eq!(x.found.len(), 64);
        assert!(x.capped);
        assert_eq!(x.found[0].field.as_ref(), "message");
    }

    #[test]
    fn missing_and_non_string_fields_are_ignored() {
        let d = decode(br#"{"a":5,"b":null,"c":{"d":true}}"#, Format::Json, 1 << 20).unwrap();
        let x = extractor(
            &[("a", None), ("c.d", None), ("zz.y", None)],
            &[],
            false,
            10,
        )
        .extract(&d);
        assert!(x.found.is_empty());
    }
}
