//! The `ecs` output format against the Elastic Common Schema itself: every example
//! pipeline of `pipelines/` runs through the real binary (`ipenrich enrich`) over its
//! sample input, in `output.format: ecs` and `both`, and every field it adds is
//! checked against ECS's field list (`tests/data/ecs-fields.csv`) by name and by
//! type. Exempt are the custom namespace `ipenrich`, the `enrichment` object of
//! `both`, and what the input event already had.
//!
//! Providers: the demo MMDB (`samples/demo-asn.mmdb`) of the examples, and for
//! `simulated-providers.yaml` the provider simulator (`ipenrich simulate`) on
//! loopback, so threat scores come through as well. Nothing reaches the network.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ipenrich::config::{Envelope, Format, PipelineConfig};
use serde_json::Value;

/// Each example pipeline and the samples it reads; a new example must be added here.
const EXAMPLES: [(&str, &[&str]); 7] = [
    ("demo", &["samples/events.log"]),
    (
        "fail2ban-sshd",
        &[
            "samples/report/fail2ban-sshd-attack.log",
            "samples/report/fail2ban-sshd-benign.log",
        ],
    ),
    ("simulated-providers", &["samples/events.log"]),
    (
        "splunk-hec-kafka",
        &[
            "samples/report/splunk-hec-attack.jsonl",
            "samples/report/splunk-hec-benign.jsonl",
        ],
    ),
    ("splunk-hec", &["samples/splunk-hec.jsonl"]),
    (
        "suricata-eve",
        &[
            "samples/report/suricata-eve-attack.jsonl",
            "samples/report/suricata-eve-benign.jsonl",
        ],
    ),
    (
        "wazuh-alerts",
        &[
            "samples/report/wazuh-alerts-attack.jsonl",
            "samples/report/wazuh-alerts-benign.jsonl",
        ],
    ),
];

/// ECS field name -> type, from the CSV.
fn ecs_fields() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("tests/data/ecs-fields.csv")).unwrap();
    let rows = csv(&text);
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (field, kind) = (col("Field"), col("Type"));
    let fields: BTreeMap<String, String> = rows[1..]
        .iter()
        .filter(|r| r.len() > kind)
        .map(|r| (r[field].clone(), r[kind].clone()))
        .collect();
    assert!(fields.len() > 2000, "the whole ECS field list");
    assert_eq!(fields["source.as.number"], "long");
    fields
}

/// RFC 4180: quoted fields may hold commas, doubled quotes and line breaks.
fn csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

#[test]
fn the_csv_reader_keeps_quoted_commas() {
    let rows = csv("a,b\n\"x, \"\"y\"\"\",\"1\n2\"\nlast,row");
    assert_eq!(rows[1], ["x, \"y\"", "1\n2"]);
    assert_eq!(rows[2], ["last", "row"]);
}

/// Whether `v` is a valid value of ECS type `kind` (one value, not an array).
fn type_ok(kind: &str, v: &Value) -> bool {
    match kind {
        "long" | "integer" => v.is_i64() || v.is_u64(),
        "float" | "double" | "scaled_float" | "half_float" => v.is_number(),
        "keyword" | "constant_keyword" | "wildcard" | "match_only_text" | "text" | "date" => {
            v.is_string()
        }
        "ip" => v.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()),
        "boolean" => v.is_boolean(),
        "geo_point" => {
            let coord = |k: &str, max: f64| {
                v.get(k)
                    .and_then(Value::as_f64)
                    .is_some_and(|x| (-max..=max).contains(&x))
            };
            v.as_object().is_some_and(|o| o.len() == 2) && coord("lat", 90.0) && coord("lon", 180.0)
        }
        "object" | "flattened" | "nested" => v.is_object(),
        _ => false,
    }
}

/// Checks `out` (what the pipeline wrote at `path`) against ECS, skipping what equals
/// `input` at the same path; returns the paths of ECS fields it checked.
fn check_ecs(
    fields: &BTreeMap<String, String>,
    path: &str,
    out: &Value,
    input: Option<&Value>,
    problems: &mut Vec<String>,
    checked: &mut BTreeSet<String>,
) {
    if input == Some(out) {
        return;
    }
    if let (Value::Object(o), Some(Value::Object(i))) = (out, input) {
        for (k, v) in o {
            let p = join(path, k);
            check_ecs(fields, &p, v, i.get(k), problems, checked);
        }
        return;
    }
    let empty = match out {
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if empty {
        problems.push(format!("{path}: an empty {out}"));
        return;
    }
    let Some(kind) = fields.get(path) else {
        // Not a field: it must be an object on the way to ECS fields.
        match out {
            Value::Object(o) if has_subfields(fields, path) => {
                for (k, v) in o {
                    check_ecs(fields, &join(path, k), v, None, problems, checked);
                }
            }
            _ => problems.push(format!("{path}: not an ECS field: {out}")),
        }
        return;
    };
    checked.insert(path.to_string());
    let values: Vec<&Value> = match out {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    for v in values {
        if !type_ok(kind, v) {
            problems.push(format!("{path}: {v} is not of ECS type {kind}"));
        } else if kind == "nested" || (kind == "object" && has_subfields(fields, path)) {
            // An object of the fields defined under it (`labels`, with none, and
            // `flattened` fields take any keys).
            for (k, inner) in v.as_object().into_iter().flatten() {
                check_ecs(fields, &join(path, k), inner, None, problems, checked);
            }
        }
    }
}

fn has_subfields(fields: &BTreeMap<String, String>, path: &str) -> bool {
    let prefix = format!("{path}.");
    fields.keys().any(|f| f.starts_with(&prefix))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// No `{}` or `[]` in `out` that `input` did not have at that place.
fn no_new_empty(path: &str, out: &Value, input: Option<&Value>, problems: &mut Vec<String>) {
    match out {
        Value::Object(o) if o.is_empty() && input != Some(out) => {
            problems.push(format!("{path}: empty object"))
        }
        Value::Array(a) if a.is_empty() && input != Some(out) => {
            problems.push(format!("{path}: empty array"))
        }
        Value::Object(o) => {
            for (k, v) in o {
                no_new_empty(&join(path, k), v, input.and_then(|i| i.get(k)), problems);
            }
        }
        Value::Array(a) => {
            for v in a {
                no_new_empty(path, v, None, problems);
            }
        }
        _ => {}
    }
}

/// The input lines the pipeline turns into events (the rest go to the dead letter),
/// each as the event it is.
fn input_events(samples: &[&str], format: Format) -> Vec<Value> {
    let mut events = Vec::new();
    for sample in samples {
        let text = std::fs::read_to_string(root().join(sample)).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let object = serde_json::from_str::<Value>(line)
                .ok()
                .filter(Value::is_object);
            match (format, object) {
                (Format::Text, _) | (Format::Auto, None) => {
                    events.push(serde_json::json!({ "message": line }))
                }
                (_, Some(o)) => events.push(o),
                (Format::Json, None) => {}
            }
        }
    }
    events
}

/// `pipelines/<name>.yaml` with `output.format` set, written into `dir`.
fn with_format(name: &str, format: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join(format!("pipelines/{name}.yaml"))).unwrap();
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let pipeline = &mut doc["pipelines"][0];
    let output = pipeline
        .as_mapping_mut()
        .unwrap()
        .entry("output".into())
        .or_insert_with(|| serde_yaml_ng::Value::Mapping(Default::default()));
    output
        .as_mapping_mut()
        .unwrap()
        .insert("format".into(), format.into());
    let path = dir.join(format!("{name}-{format}.yaml"));
    std::fs::write(&path, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    path
}

/// Runs `enrich` over the samples, one after the other, as one input.
fn enrich(config: &Path, samples: &[&str], dir: &Path, sim: &str) -> Vec<Value> {
    let input = dir.join("input");
    let mut all = String::new();
    for s in samples {
        all.push_str(&std::fs::read_to_string(root().join(s)).unwrap());
        if !all.ends_with('\n') {
            all.push('\n');
        }
    }
    std::fs::write(&input, all).unwrap();
    let out = Command::new(bin())
        .args(["enrich", "--config"])
        .arg(config)
        .arg("--input")
        .arg(&input)
        .env("SIM_URL", sim)
        .env("SPLUNK_OUT", "-")
        .env("SPLUNK_DLQ", dir.join("dead-letter.jsonl"))
        .current_dir(root())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not json ({e}): {l}")))
        .collect()
}

/// The simulator on a free loopback port; its address as SIM_URL.
fn simulator() -> (Proc, String) {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let child = Command::new(bin())
        .args(["simulate", "--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "simulator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(child), format!("http://{listen}"))
}

/// What the whole run saw, for the assertions that need at least one case.
#[derive(Default)]
struct Seen {
    text_events_with_intel: usize,
    hec_object_events: usize,
    hec_raw_events: usize,
    threat_scores: usize,
    checked: BTreeSet<String>,
}

/// Removes and returns the value at a dotted path of objects.
fn take(v: &mut Value, dotted: &str) -> Option<Value> {
    let (parent, last) = match dotted.rsplit_once('.') {
        Some((parent, last)) => (format!("/{}", parent.replace('.', "/")), last),
        None => (String::new(), dotted),
    };
    v.pointer_mut(&parent)?.as_object_mut()?.remove(last)
}

fn ips(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().map(str::to_string))
        .collect()
}

/// Every promise for one output event.
fn check_event(
    fields: &BTreeMap<String, String>,
    p: &PipelineConfig,
    both: bool,
    out: &Value,
    input: &Value,
    seen: &mut Seen,
) -> Vec<String> {
    let mut problems = Vec::new();
    // The enrichment object of `both` is ipenrich's own format: at `output.field`,
    // or on the top under its last segment when the path is blocked.
    let field = p.output.field.as_str();
    let last = field.rsplit('.').next().unwrap_or(field);
    let mut out = out.clone();
    let enrichment = if both {
        take(&mut out, field).or_else(|| take(&mut out, last))
    } else {
        None
    };
    if both && enrichment.is_none() {
        problems.push(format!("no enrichment object at {field}"));
    }
    no_new_empty("", &out, Some(input), &mut problems);
    let hec_object = p.output.envelope == Envelope::Hec && out["event"].is_object();
    let (doc, input_doc) = if hec_object {
        (out["event"].clone(), &input["event"])
    } else {
        (out.clone(), input)
    };
    // Everything else in the ECS document is ECS, or ipenrich's, or was there.
    let mut ecs_doc = doc.clone();
    let Some(own) = ecs_doc.as_object_mut().and_then(|o| o.remove("ipenrich")) else {
        problems.push("no ipenrich namespace".into());
        return problems;
    };
    check_ecs(
        fields,
        "",
        &ecs_doc,
        Some(input_doc),
        &mut problems,
        &mut seen.checked,
    );
    if hec_object {
        seen.hec_object_events += 1;
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        let had: Vec<&String> = input.as_object().unwrap().keys().collect();
        if keys != had {
            problems.push(format!("HEC keys changed: {keys:?} (had {had:?})"));
        }
    } else if p.output.envelope == Envelope::Hec {
        seen.hec_raw_events += 1;
    }
    related_and_threat(&doc, input, &own, enrichment.as_ref(), &mut problems, seen);
    problems
}

/// `related.ip` holds every extracted address; every address with data has its
/// `threat.enrichments` entry (text-only events too).
fn related_and_threat(
    doc: &Value,
    input: &Value,
    own: &Value,
    enrichment: Option<&Value>,
    problems: &mut Vec<String>,
    seen: &mut Seen,
) {
    let extracted = ips(&own["ips"]);
    if let Some(e) = enrichment {
        if ips(&e["ips"]) != extracted {
            problems.push(format!(
                "ipenrich.ips {extracted:?} differ from the enrichment's"
            ));
        }
    }
    let related: BTreeSet<IpAddr> = doc["related"]["ip"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect();
    for ip in &extracted {
        if !related.contains(&ip.parse::<IpAddr>().unwrap()) {
            problems.push(format!("related.ip lacks {ip}"));
        }
    }
    let matched: Vec<(String, String)> = doc["threat"]["enrichments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let s = |k: &str| t["matched"][k].as_str().unwrap_or_default().to_string();
            (s("atomic"), s("field"))
        })
        .collect();
    let text_event = input.get("message").is_some() && input.as_object().unwrap().len() == 1;
    for ip in own["ips"].as_array().into_iter().flatten() {
        if ip["threat"]["score"].is_u64() {
            seen.threat_scores += 1;
        }
        if ip["status"] != "ok" {
            continue;
        }
        let want = (
            ip["ip"].as_str().unwrap().to_string(),
            ip["field"].as_str().unwrap().to_string(),
        );
        if !matched.contains(&want) {
            problems.push(format!("no threat.enrichments entry for {want:?}"));
        } else if text_event {
            seen.text_events_with_intel += 1;
        }
    }
}

/// The acceptance: the `ecs` output of every example pipeline is ECS.
#[test]
fn every_example_pipeline_writes_only_ecs_fields_of_the_right_type() {
    let fields = ecs_fields();
    let dir = tempfile::tempdir().unwrap();
    let (_sim, sim_url) = simulator();
    let mut seen = Seen::default();
    let listed: BTreeSet<&str> = EXAMPLES.iter().map(|(n, _)| *n).collect();
    for entry in std::fs::read_dir(root().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        assert!(listed.contains(name.as_str()), "add {name} to EXAMPLES");
    }
    for (name, samples) in EXAMPLES {
        for format in ["ecs", "both"] {
            let config = with_format(name, format, dir.path());
            let p = ipenrich::config::load_file(&config)
                .unwrap()
                .pipelines
                .remove(0);
            let inputs = input_events(samples, p.source.format());
            let outputs = enrich(&config, samples, dir.path(), &sim_url);
            assert_eq!(
                outputs.len(),
                inputs.len(),
                "{name} {format}: one event per input"
            );
            for (out, input) in outputs.iter().zip(&inputs) {
                let problems = check_event(&fields, &p, format == "both", out, input, &mut seen);
                assert!(
                    problems.is_empty(),
                    "{name} ({format}): {problems:#?}\n  in:  {input}\n  out: {out}"
                );
            }
        }
    }
    assert!(
        seen.text_events_with_intel > 0,
        "text-only events get threat.enrichments"
    );
    assert!(
        seen.hec_object_events > 0 && seen.hec_raw_events > 0,
        "HEC events of both kinds"
    );
    assert!(
        seen.threat_scores > 0,
        "the simulated threat providers answered"
    );
    for field in [
        "related.ip",
        "source.ip",
        "source.as.number",
        "source.as.organization.name",
        "destination.ip",
        "client.ip",
        "host.ip",
        "threat.enrichments",
        "threat.enrichments.indicator.ip",
        "threat.enrichments.indicator.type",
        "threat.enrichments.indicator.provider",
        "threat.enrichments.indicator.confidence",
        "threat.enrichments.indicator.as.number",
        "threat.enrichments.indicator.geo.country_iso_code",
        "threat.enrichments.matched.atomic",
        "threat.enrichments.matched.field",
        "threat.enrichments.matched.type",
    ] {
        assert!(
            seen.checked.contains(field),
            "{field} was never written: {:?}",
            seen.checked
        );
    }
}

/// The example fixes: Suricata's `xff` at the top, Wazuh's Suricata alerts
/// (`data.src_ip`), Splunk CIM's `dest`.
#[test]
fn example_pipelines_read_the_fields_their_sources_write() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, sample: &str| {
        let config = with_format(name, "both", dir.path());
        enrich(&config, &[sample], dir.path(), "http://127.0.0.1:9")
    };
    let suricata = run("suricata-eve", "samples/report/suricata-eve-benign.jsonl");
    let xff = suricata
        .iter()
        .find(|e| e.get("xff").is_some())
        .expect("the sample with xff");
    assert_eq!(xff["client"]["ip"], "185.220.101.45");
    assert_eq!(xff["client"]["as"]["number"], 60729);
    let wazuh = run("wazuh-alerts", "samples/report/wazuh-alerts-benign.jsonl");
    let ids = wazuh
        .iter()
        .find(|e| e["data"].get("src_ip").is_some())
        .expect("the Suricata alert read by Wazuh");
    assert_eq!(ids["source"]["ip"], "10.0.0.12");
    assert_eq!(ids["destination"]["ip"], "151.101.1.69");
    assert_eq!(ids["host"]["ip"], serde_json::json!(["192.168.1.30"]));
    assert!(ids["host"].get("as").is_none(), "host.as is not ECS");
    let hec = run("splunk-hec", "samples/splunk-hec.jsonl");
    assert_eq!(hec[0]["event"]["destination"]["ip"], "10.1.2.3");
    assert_eq!(
        hec[0]["event"]["enrichment"]["ips"][1]["field"],
        "event.dest"
    );
    assert_eq!(hec[0]["event"]["ipenrich"]["ips"][1]["field"], "dest");
    assert!(hec[0].get("event.enrichment").is_none());
}
