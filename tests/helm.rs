//! The Helm chart: it lints, renders a config that `ipenrich check` accepts, gives the
//! drain time to finish, and its Grafana dashboard shows exactly the metrics the code
//! exports (no panel on a metric that does not exist, no metric without a panel).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use serde_yaml_ng::Value;

fn helm() -> String {
    let out = Command::new("bash")
        .arg(root().join("scripts/helm.sh"))
        .output()
        .expect("scripts/helm.sh");
    assert!(
        out.status.success(),
        "scripts/helm.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"ipenrich_[a-z_]+").unwrap();
    re.find_iter(text)
        .map(|m| {
            let name = m.as_str();
            ["_sum", "_count", "_bucket"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| base.ends_with("_request") || base.ends_with("_seconds"))
                })
                .unwrap_or(name)
                .to_string()
        })
        .collect()
}

/// Metric names defined in the source: string literals `"ipenrich_..."`.
fn exported_metrics() -> BTreeSet<String> {
    let re = regex::Regex::new(r#""(ipenrich_[a-z_]+)""#).unwrap();
    let mut names = BTreeSet::new();
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                names.extend(re.captures_iter(&text).map(|c| c[1].to_string()));
            }
        }
    }
    names
}

#[test]
fn dashboard_shows_exactly_the_exported_metrics() {
    let text =
        std::fs::read_to_string(root().join("helm/ipenrich/dashboards/ipenrich.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is json");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_string())
        })
        .collect();
    let shown = metric_names(&exprs.join("\n"));
    let exported = exported_metrics();
    assert!(
        exported.len() >= 15,
        "metric names found in src/: {exported:?}"
    );
    let missing: Vec<_> = shown.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "panels query metrics the code does not export: {missing:?}"
    );
    let unshown: Vec<_> = exported.difference(&shown).collect();
    assert!(
        unshown.is_empty(),
        "exported metrics without a panel: {unshown:?}"
    );
}

#[test]
fn chart_lints_and_renders_a_config_that_passes_check() {
    let helm = helm();
    let chart = root().join("helm/ipenrich");
    let lint = Command::new(&helm)
        .arg("lint")
        .arg(&chart)
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let out = Command::new(&helm)
        .args(["template", "t"])
        .arg(&chart)
        .arg("--set")
        .arg(format!(
            "mmdb.mountPath={}",
            root().join("samples").display()
        ))
        .args(["--set", "mmdb.file=demo-asn.mmdb"])
        .args(["--set", "serviceMonitor.enabled=true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect();
    let kind = |k: &'static str| docs.iter().filter(move |d| d["kind"].as_str() == Some(k));
    for k in [
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ] {
        assert!(kind(k).next().is_some(), "{k} rendered");
    }

    let config = kind("ConfigMap")
        .find_map(|d| d["data"]["config.yaml"].as_str())
        .expect("the config ConfigMap")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config.yaml", &config);
    let check = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env("KAFKA_BROKERS", "kafka:9092")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the chart's config fails check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The pod must outlive the drain: grace period > every pipeline's shutdown_timeout.
    let deployment = kind("Deployment").next().unwrap();
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let cfg = ipenrich::config::load_str(&config, "chart", |_| Some("kafka:9092".into())).unwrap();
    for p in &cfg.pipelines {
        assert!(
            grace > p.shutdown_timeout.as_secs(),
            "grace {grace}s <= shutdown_timeout of {}",
            p.name
        );
    }
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let probes = (
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        container["readinessProbe"]["httpGet"]["path"].as_str(),
    );
    assert_eq!(probes, (Some("/health/live"), Some("/health/ready")));
}
