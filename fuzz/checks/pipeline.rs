//! The event-path property, shared by the `event_pipeline` fuzz target and
//! `tests/properties.rs` (included into both with `#[path]`, so the fuzzer and the
//! test suite check exactly the same thing).
//!
//! For any bytes, in every input format and every output format: decoding either
//! refuses the event with a reason or hands it on; extraction and rendering never
//! panic; the rendered event is one JSON object (RFC 8259 grammar, the same notion
//! of "valid" the decoder applies to input, so a number like `1e400` passes through)
//! that keeps every top-level key of the event, carries the output field unless the
//! format is `ecs`, and repeats no key the event did not already repeat. In the
//! `enrichment` format, when the event has no field of that name (and the name has
//! no dot), the event's own text is kept byte for byte (merge promises a splice).

use std::collections::BTreeMap;
use std::sync::Arc;

use ipenrich::config::{Envelope, ExtractConfig, FieldConfig, Format, OutputConfig, OutputFormat};
use ipenrich::event::{decode, Decoded};
use ipenrich::extract::{Extraction, Extractor, IpClass};
use ipenrich::lookup::record::{AsnInfo, GeoInfo, IntelRecord, ThreatInfo};
use ipenrich::lookup::{Resolved, Status};
use ipenrich::merge::{render, Enrichment};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Input formats, in the order the knobs pick them.
pub const FORMATS: [Format; 3] = [Format::Json, Format::Text, Format::Auto];
/// Output formats.
pub const OUTPUTS: [OutputFormat; 3] = [
    OutputFormat::Enrichment,
    OutputFormat::Ecs,
    OutputFormat::Both,
];

/// Largest event the fuzz target and the tests hand to `decode` (the config default
/// `max_event_bytes` is 1 MiB).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Checks the property for one event. `knobs` picks the extraction rules (bits 0-1,
/// see [`extract_config`]), the output field name (bits 2-4, see [`output_field`]),
/// the HEC envelope (bit 6), the address cap (bit 7: 2 instead of 64) and the fake
/// lookup answers; every input
/// and output format is tried. Panics (naming the combination) when it fails.
pub fn check_event(payload: &[u8], knobs: u8) {
    let extractor = Extractor::new(&extract_config(knobs & 0b11), cap(knobs));
    for format in FORMATS {
        let Ok(decoded) = decode(payload, format, MAX_EVENT_BYTES) else {
            continue;
        };
        let extraction = extractor.extract(&decoded);
        assert_extraction_is_sane(&extraction, knobs);
        let lookups = fake_lookups(&extraction, knobs);
        let enrichment = Enrichment {
            extraction: &extraction,
            lookups: &lookups,
        };
        for output_format in OUTPUTS {
            let output = OutputConfig {
                format: output_format,
                field: output_field(&decoded, knobs),
                envelope: envelope(knobs),
            };
            // Rendering never refuses an event: what cannot be placed is named in
            // `unplaced`, and a value that is there is never written over.
            let rendered = render(&decoded, &enrichment, &output).line;
            if let Err(why) = check_rendered(&decoded, &output, &rendered) {
                panic!(
                    "{why}\n  input format {format:?}, output {output_format:?}, field {:?}, envelope {:?}\n  output: {}",
                    output.field,
                    output.envelope,
                    String::from_utf8_lossy(&rendered)
                );
            }
        }
    }
}

/// Bit 6 of `knobs`: the Splunk HEC envelope (ECS fields into `event`).
fn envelope(knobs: u8) -> Envelope {
    if knobs & 0x40 == 0 {
        Envelope::None
    } else {
        Envelope::Hec
    }
}

/// Rendered output against its event; `Err` names the broken promise.
pub fn check_rendered(
    event: &Decoded<'_>,
    output: &OutputConfig,
    rendered: &[u8],
) -> Result<(), String> {
    let keys = top_level_keys(rendered).map_err(|e| format!("output is not a json object: {e}"))?;
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for k in &keys {
        *count.entry(k.as_str()).or_default() += 1;
    }
    let original: Vec<&str> = match event {
        Decoded::Json(object) => object.members.iter().map(|(k, _)| k.as_ref()).collect(),
        Decoded::Text(_) => vec!["message"],
    };
    let mut original_count: BTreeMap<&str, usize> = BTreeMap::new();
    for k in &original {
        *original_count.entry(k).or_default() += 1;
    }
    for k in &original {
        if !count.contains_key(k) {
            return Err(format!("top-level key {k:?} of the event is missing"));
        }
    }
    // A dotted field nests from its first segment, or, when a value that is not
    // an object stands on its path, sits on the top under its last segment.
    let first = output.field.split('.').next().unwrap_or_default();
    let last = output.field.rsplit('.').next().unwrap_or_default();
    if output.format != OutputFormat::Ecs && !count.contains_key(first) && !count.contains_key(last)
    {
        return Err(format!("output field {:?} is missing", output.field));
    }
    for (k, n) in &count {
        let allowed = original_count.get(k).copied().unwrap_or(1).max(1);
        if *n > allowed {
            return Err(format!(
                "key {k:?} appears {n} times (the event had it {} times)",
                allowed
            ));
        }
    }
    if let Decoded::Json(object) = event {
        if output.format == OutputFormat::Enrichment
            && !output.field.contains('.')
            && object.get(&output.field).is_none()
        {
            let raw = object.raw.trim_end();
            let kept = &raw.as_bytes()[..raw.len().saturating_sub(1)];
            if !rendered.starts_with(kept) {
                return Err("the event's own text was not kept byte for byte".to_string());
            }
        }
    }
    Ok(())
}

/// Every address found is distinct, classified as `classify` says, and within the cap.
fn assert_extraction_is_sane(x: &Extraction, knobs: u8) {
    let cap = cap(knobs);
    assert!(
        x.found.len() <= cap,
        "{} addresses found, cap {cap}",
        x.found.len()
    );
    for (i, f) in x.found.iter().enumerate() {
        assert_eq!(
            f.class,
            ipenrich::extract::classify(f.ip),
            "class of {}",
            f.ip
        );
        assert!(
            x.found[..i].iter().all(|g| g.ip != f.ip),
            "{} reported twice",
            f.ip
        );
    }
}

/// The top-level keys of a JSON object in document order, duplicates kept; values
/// are checked for grammar only (as `decode` checks input).
pub fn top_level_keys(text: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a json object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some((k, _)) = map.next_entry::<String, &'de RawValue>()? {
                keys.push(k);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let keys = (&mut de).deserialize_map(Keys)?;
    de.end()?;
    Ok(keys)
}

fn cap(knobs: u8) -> usize {
    if knobs & 0x80 == 0 {
        64
    } else {
        2
    }
}

/// The output-field choice of `knobs` (0 to 4, as in [`output_field`]).
pub fn field_choice(knobs: u8) -> u8 {
    ((knobs >> 2) & 0b111) % 5
}

/// 0: scan every string; 1: configured fields with ECS roles plus free text;
/// 2: both, plus degenerate paths (empty, dots only).
fn extract_config(which: u8) -> ExtractConfig {
    let field = |path: &str, role: Option<&str>| FieldConfig {
        path: path.to_string(),
        role: role.map(str::to_string),
    };
    let roles = vec![
        field("source.ip", Some("source")),
        field("src_ip", Some("source")),
        field("data.srcip", Some("source")),
        field("event.src", Some("source")),
        field("destination.ip", Some("destination")),
        field("dest_ip", Some("destination")),
        field("data.dstip", Some("destination")),
        field("client.ip", Some("client")),
        field("server.ip", Some("server")),
        field("host.ip", Some("host")),
        field("agent.ip", Some("host")),
    ];
    let text = vec![
        "full_log".to_string(),
        "message".to_string(),
        "event.xff".to_string(),
    ];
    match which {
        0 => ExtractConfig {
            fields: Vec::new(),
            text: Vec::new(),
            scan_all_strings: true,
        },
        1 => ExtractConfig {
            fields: roles,
            text,
            scan_all_strings: false,
        },
        _ => {
            let mut fields = roles;
            fields.extend([
                field("", Some("source")),
                field("..", Some("client")),
                field("a..b", None),
            ]);
            ExtractConfig {
                fields,
                text: vec![String::new(), ".".to_string()],
                scan_all_strings: true,
            }
        }
    }
}

/// The output field: the default, the empty name, `message` (for a text line, the
/// name of its own key), a name that needs escaping, or the first key of a JSON
/// event (the in-place replacement path; the default for a text line).
fn output_field(event: &Decoded<'_>, knobs: u8) -> String {
    match field_choice(knobs) {
        0 => "enrichment".to_string(),
        1 => String::new(),
        2 => "message".to_string(),
        3 => "en\"ri\\ch\u{0}m\u{e9}nt\u{2028}".to_string(),
        _ => match event {
            Decoded::Json(object) => object
                .members
                .first()
                .map_or_else(|| "enrichment".to_string(), |(k, _)| k.to_string()),
            Decoded::Text(_) => "enrichment".to_string(),
        },
    }
}

/// One answer per public address, cycling through every status and a few record
/// shapes: complete, with strings that need escaping, with non-finite coordinates
/// (a MaxMind double can be NaN), and empty.
pub fn fake_lookups(x: &Extraction, knobs: u8) -> Vec<Option<Resolved>> {
    x.found
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if f.class != IpClass::Public {
                return None;
            }
            let n = i + usize::from(knobs);
            Some(Resolved {
                status: Status::ALL[n % Status::ALL.len()],
                record: fake_record(n % 4),
                sources: vec![Arc::from("fake")],
            })
        })
        .collect()
}

fn fake_record(which: usize) -> IntelRecord {
    let s = |v: &str| Some(Arc::<str>::from(v));
    match which {
        0 => IntelRecord {
            asn: Some(AsnInfo {
                number: Some(15169),
                name: s("GOOGLE"),
                org: s("Google LLC"),
                country: s("US"),
                domain: s("google.com"),
                kind: s("hosting"),
                route: s("8.8.8.0/24"),
                rir: s("arin"),
            }),
            geo: Some(GeoInfo {
                country_code: s("US"),
                country_name: s("United States"),
                region: s("California"),
                city: s("Mountain View"),
                latitude: Some(37.4056),
                longitude: Some(-122.0775),
                timezone: s("America/Los_Angeles"),
            }),
            threat: Some(ThreatInfo {
                score: Some(100),
                level: s("critical"),
                is_tor: Some(true),
                categories: vec![Arc::from("ssh_bruteforce")],
                blacklists: vec![Arc::from("spamhaus")],
                ..ThreatInfo::default()
            }),
        },
        1 => IntelRecord {
            asn: Some(AsnInfo {
                number: Some(u32::MAX),
                org: s("\"quoted\" \\ back\u{0}slash \u{2028} \u{1F600}"),
                ..AsnInfo::default()
            }),
            ..IntelRecord::default()
        },
        2 => IntelRecord {
            geo: Some(GeoInfo {
                latitude: Some(f64::NAN),
                longitude: Some(f64::INFINITY),
                city: s(""),
                ..GeoInfo::default()
            }),
            ..IntelRecord::default()
        },
        _ => IntelRecord::default(),
    }
}
