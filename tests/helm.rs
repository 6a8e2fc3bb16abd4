//! The Helm chart: it lints, renders a config that `ipenrich check` accepts, gives the
//! drain time to finish, reads the MMDB database where `mmdb.source` puts it, rejects
//! values it does not know (an ipenrich config given as values above all), renders
//! manifests that decode strictly into the Kubernetes types and pass Pod Security
//! "restricted" (the Go checker in `tests/k8s`), ships alert rules that `promtool`
//! checks and tests, and its Grafana dashboard shows exactly the metrics the code
//! exports (no panel on a metric that does not exist, no metric without a panel).
//!
//! Needs `go` (tests/k8s; helm is built with it too) and `promtool` (Debian package
//! `prometheus`, installed by scripts/test.sh); a missing one fails the test by name.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn chart() -> PathBuf {
    root().join("helm/ipenrich")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template t helm/ipenrich <args>`, whatever its outcome.
fn template(args: &[&str]) -> Output {
    Command::new(helm())
        .args(["template", "t"])
        .arg(chart())
        .args(args)
        .output()
        .expect("running helm template")
}

/// The manifests `helm template` renders with `args`; panics when it fails.
fn render(args: &[&str]) -> String {
    let out = template(args);
    assert!(
        out.status.success(),
        "helm template {args:?}: {}",
        text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn documents(rendered: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(rendered)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

/// The rendered ipenrich config (the ConfigMap's `config.yaml`).
fn rendered_config(docs: &[Value]) -> String {
    of_kind(docs, "ConfigMap")
        .into_iter()
        .find_map(|d| d["data"]["config.yaml"].as_str())
        .expect("the config ConfigMap")
        .to_string()
}

/// The path of the first pipeline's first (mmdb) provider.
fn mmdb_path(config: &str) -> String {
    let config: Value = serde_yaml_ng::from_str(config).unwrap();
    config["pipelines"][0]["providers"][0]["mmdb"]["path"]
        .as_str()
        .expect("the first provider is mmdb")
        .to_string()
}

/// Runs `ipenrich check` on a rendered config.
fn check_config(config: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config.yaml", config);
    Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env("KAFKA_BROKERS", "kafka:9092")
        .output()
        .unwrap()
}

/// Where the image keeps its demo database (scripts/image.sh copies samples/demo-asn.mmdb
/// there); `mmdb.source: demo`, the default, reads it.
const DEMO_MMDB: &str = "/usr/share/ipenrich/demo-asn.mmdb";

#[test]
fn chart_lints_and_renders_a_config_that_passes_check() {
    for values in [None, Some("ci/full-values.yaml")] {
        let mut lint = Command::new(helm());
        lint.arg("lint").arg(chart());
        if let Some(v) = values {
            lint.arg("-f").arg(chart().join(v));
        }
        let out = lint.output().unwrap();
        assert!(out.status.success(), "helm lint {values:?}: {}", text(&out));
    }

    let docs = documents(&render(&[]));
    for k in [
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "ServiceAccount",
    ] {
        assert!(!of_kind(&docs, k).is_empty(), "{k} rendered");
    }
    let config = rendered_config(&docs);
    assert_eq!(
        mmdb_path(&config),
        DEMO_MMDB,
        "the default reads the demo database"
    );
    // The test runs on the host, not in the image: the image's DEMO_MMDB is a copy of
    // samples/demo-asn.mmdb (scripts/image.sh), so check the config with that path in
    // its place. The claim test below checks a path the chart renders, unreplaced.
    let demo = root().join("samples/demo-asn.mmdb");
    let check = check_config(&config.replace(DEMO_MMDB, &demo.display().to_string()));
    assert!(
        check.status.success(),
        "the chart's config fails check: {}",
        text(&check)
    );

    // The pod must outlive the drain: grace period > every pipeline's shutdown_timeout.
    let deployment = of_kind(&docs, "Deployment")[0];
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
    let chart_yaml: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    let app_version = chart_yaml["appVersion"].as_str().unwrap();
    assert_eq!(
        container["image"].as_str(),
        Some(format!("ghcr.io/ipenrich/ipenrich:{app_version}").as_str()),
        "the image scripts/image.sh tags, at the chart's appVersion"
    );
}

/// The rendered Deployment's pod spec and the MMDB path of its config.
struct Pod {
    spec: Value,
    mmdb: String,
}

impl Pod {
    fn render(args: &[&str]) -> Pod {
        let docs = documents(&render(args));
        let spec = of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"].clone();
        Pod {
            spec,
            mmdb: mmdb_path(&rendered_config(&docs)),
        }
    }

    fn containers(&self, list: &str) -> Vec<&Value> {
        self.spec[list]
            .as_sequence()
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }

    fn container(&self, name: &str) -> Option<&Value> {
        let mut all = self.containers("initContainers");
        all.extend(self.containers("containers"));
        all.into_iter().find(|c| c["name"].as_str() == Some(name))
    }

    fn names(&self, list: &str) -> Vec<&str> {
        self.containers(list)
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect()
    }

    fn volume(&self, name: &str) -> Option<&Value> {
        self.spec["volumes"]
            .as_sequence()?
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
    }

    fn args(&self, container: &str) -> Vec<&str> {
        self.container(container).expect(container)["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect()
    }

    /// The container's mount of `volume`: (mountPath, readOnly).
    fn mount(&self, container: &str, volume: &str) -> Option<(&str, bool)> {
        let mounts = self.container(container).expect(container)["volumeMounts"].as_sequence();
        mounts
            .into_iter()
            .flatten()
            .find(|m| m["name"].as_str() == Some(volume))
            .map(|m| {
                let read_only = m["readOnly"].as_bool().unwrap_or(false);
                (m["mountPath"].as_str().unwrap(), read_only)
            })
    }

    /// (name, secret, key) of each env var the container takes from a Secret.
    fn secret_env(&self, container: &str) -> Vec<(String, String, String)> {
        let env = self.container(container).expect(container)["env"].as_sequence();
        env.into_iter()
            .flatten()
            .filter_map(|e| {
                let r = &e["valueFrom"]["secretKeyRef"];
                Some((
                    e["name"].as_str()?.to_string(),
                    r["name"].as_str()?.to_string(),
                    r["key"].as_str()?.to_string(),
                ))
            })
            .collect()
    }
}

fn env3(name: &str, secret: &str, key: &str) -> (String, String, String) {
    (name.into(), secret.into(), key.into())
}

#[test]
fn the_demo_database_is_the_default_and_needs_no_volume() {
    let pod = Pod::render(&[]);
    assert_eq!(pod.mmdb, DEMO_MMDB);
    assert!(pod.volume("mmdb").is_none(), "the demo reads the image");
    assert!(pod.names("initContainers").is_empty());
    assert_eq!(pod.names("containers"), ["ipenrich"]);
}

#[test]
fn openipapi_is_fetched_at_start_and_refreshed_by_a_sidecar() {
    let pod = Pod::render(&[
        "--set=mmdb.source=openipapi",
        "--set=mmdb.openipapi.existingSecret=oia",
    ]);
    let out = "/data/mmdb/openipapi-asn.mmdb";
    assert_eq!(pod.mmdb, out);
    let fetch = [
        "mmdb",
        "fetch",
        "--source",
        "openipapi",
        "--edition",
        "asn",
        "--out",
        out,
    ];
    assert_eq!(pod.args("mmdb-fetch"), fetch);
    assert_eq!(
        pod.args("mmdb-refresh"),
        [&fetch[..], &["--every", "24h"]].concat()
    );
    assert_eq!(pod.names("containers"), ["ipenrich", "mmdb-refresh"]);
    for c in ["mmdb-fetch", "mmdb-refresh"] {
        assert_eq!(
            pod.secret_env(c),
            [env3("OPENIPAPI_API_KEY", "oia", "api-key")]
        );
    }
    assert!(pod.volume("mmdb").unwrap()["emptyDir"].is_mapping());
    for c in ["mmdb-fetch", "mmdb-refresh"] {
        assert_eq!(
            pod.mount(c, "mmdb"),
            Some(("/data/mmdb", false)),
            "{c} writes"
        );
    }

    // Another edition, a base URL, no sidecar, a claim instead of the emptyDir.
    let pod = Pod::render(&[
        "--set=mmdb.source=openipapi",
        "--set=mmdb.openipapi.existingSecret=oia",
        "--set=mmdb.openipapi.secretKey=key",
        "--set=mmdb.openipapi.edition=geo",
        "--set=mmdb.openipapi.url=http://mirror:8600/openipapi",
        "--set=mmdb.refresh.enabled=false",
        "--set=mmdb.persistence.existingClaim=dbs",
    ]);
    assert_eq!(pod.mmdb, "/data/mmdb/openipapi-geo.mmdb");
    assert_eq!(
        pod.args("mmdb-fetch")[4..],
        [
            "--edition",
            "geo",
            "--out",
            &pod.mmdb,
            "--url",
            "http://mirror:8600/openipapi"
        ]
    );
    assert_eq!(
        pod.secret_env("mmdb-fetch"),
        [env3("OPENIPAPI_API_KEY", "oia", "key")]
    );
    assert_eq!(pod.names("containers"), ["ipenrich"]);
    let claim = &pod.volume("mmdb").unwrap()["persistentVolumeClaim"];
    assert_eq!(claim["claimName"].as_str(), Some("dbs"));

    let out = template(&["--set=mmdb.source=openipapi"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("mmdb.openipapi.existingSecret is required"),
        "{}",
        text(&out)
    );
}

#[test]
fn geolite2_is_fetched_with_the_maxmind_account() {
    let pod = Pod::render(&[
        "--set=mmdb.source=geolite2",
        "--set=mmdb.geolite2.existingSecret=maxmind",
        "--set=mmdb.refresh.interval=72h",
    ]);
    let out = "/data/mmdb/GeoLite2-ASN.mmdb";
    assert_eq!(pod.mmdb, out);
    let fetch = [
        "mmdb",
        "fetch",
        "--source",
        "geolite2",
        "--edition",
        "GeoLite2-ASN",
        "--out",
        out,
    ];
    assert_eq!(pod.args("mmdb-fetch"), fetch);
    assert_eq!(
        pod.args("mmdb-refresh"),
        [&fetch[..], &["--every", "72h"]].concat()
    );
    let account = [
        env3("MAXMIND_ACCOUNT_ID", "maxmind", "account-id"),
        env3("MAXMIND_LICENSE_KEY", "maxmind", "license-key"),
    ];
    assert_eq!(pod.secret_env("mmdb-refresh"), account);
    assert_eq!(
        pod.mount("ipenrich", "mmdb"),
        Some(("/data/mmdb", true)),
        "the pipeline reads the fetched database, read-only"
    );
    assert!(
        pod.secret_env("ipenrich").is_empty(),
        "the pipeline never sees the account"
    );
}

#[test]
fn a_configmap_or_a_claim_of_your_own_is_mounted_without_fetchers() {
    let pod = Pod::render(&[
        "--set=mmdb.source=configMap",
        "--set=mmdb.configMap.name=my-db",
    ]);
    assert_eq!(pod.mmdb, "/data/mmdb/ipenrich.mmdb");
    assert_eq!(
        pod.volume("mmdb").unwrap()["configMap"]["name"].as_str(),
        Some("my-db")
    );
    assert!(pod.names("initContainers").is_empty());
    assert_eq!(pod.names("containers"), ["ipenrich"]);

    // A claim holding samples/: mounted where the host has it, the path the pipeline
    // reads is a real database, and `ipenrich check` opens it.
    let samples = root().join("samples").display().to_string();
    let args = [
        "--set=mmdb.source=existingClaim".to_string(),
        "--set=mmdb.persistence.existingClaim=dbs".to_string(),
        format!("--set=mmdb.mountPath={samples}"),
        "--set=mmdb.file=demo-asn.mmdb".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let docs = documents(&render(&args));
    let config = rendered_config(&docs);
    assert_eq!(mmdb_path(&config), format!("{samples}/demo-asn.mmdb"));
    let check = check_config(&config);
    assert!(check.status.success(), "check: {}", text(&check));
    let pod = Pod::render(&args);
    let claim = &pod.volume("mmdb").unwrap()["persistentVolumeClaim"];
    assert_eq!(claim["claimName"].as_str(), Some("dbs"));
    assert_eq!(claim["readOnly"].as_bool(), Some(true));
    assert!(pod.names("initContainers").is_empty());

    let out = template(&[
        "--set=mmdb.source=existingClaim",
        "--set=mmdb.persistence.existingClaim=dbs",
    ]);
    assert!(
        text(&out).contains("mmdb.file is required"),
        "{}",
        text(&out)
    );
}

/// Runs a tool the chart's tests need; a missing tool fails with what to install.
fn tool(name: &str, install: &str, dir: &Path, args: &[&str]) -> Output {
    match Command::new(name).args(args).current_dir(dir).output() {
        Ok(out) => out,
        Err(e) => panic!("`{name}` is needed by this test and cannot run ({e}): {install}"),
    }
}

const GO: &str = "install Go (https://go.dev/dl; the module proxy must be reachable)";

/// `tests/k8s`: strict decoding and Pod Security "restricted" on rendered manifests.
fn k8s_check(rendered: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "manifests.yaml", rendered);
    let path = path.display().to_string();
    tool(
        "go",
        GO,
        &root().join("tests/k8s"),
        &["run", ".", "-f", &path],
    )
}

#[test]
fn the_checker_of_manifests_rejects_what_it_must() {
    // The checker's own tests: each breakage (unknown field, no seccomp profile, a
    // writable root filesystem, ...) is reported.
    let out = tool(
        "go",
        GO,
        &root().join("tests/k8s"),
        &["test", "-count=1", "./..."],
    );
    assert!(out.status.success(), "go test in tests/k8s: {}", text(&out));
}

#[test]
fn manifests_decode_strictly_and_pass_pod_security_restricted() {
    let full = chart().join("ci/full-values.yaml").display().to_string();
    let renders: [&[&str]; 4] = [
        &[],
        &["-f", &full],
        &[
            "--set=mmdb.source=geolite2",
            "--set=mmdb.geolite2.existingSecret=mm",
        ],
        &[
            "--set=mmdb.source=configMap",
            "--set=mmdb.configMap.name=db",
        ],
    ];
    for args in renders {
        let out = k8s_check(&render(args));
        assert!(
            out.status.success(),
            "tests/k8s on {args:?}: {}",
            text(&out)
        );
    }

    // Everything of the chart is on in full-values.yaml, and its config is valid.
    let docs = documents(&render(&["-f", &full]));
    for k in [
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "ServiceAccount",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(
            !of_kind(&docs, k).is_empty(),
            "{k} rendered from full-values.yaml"
        );
    }
    let config = rendered_config(&docs);
    let cfg = ipenrich::config::load_str(&config, "full-values", |_| Some("kafka:9092".into()));
    let cfg = cfg.expect("full-values.yaml's config loads");
    assert!(cfg.intel_table.is_some() && !cfg.reporters.is_empty());
    let spec = &of_kind(&docs, "Deployment")[0]["spec"];
    assert!(spec["replicas"].is_null(), "the HPA owns the replica count");

    // The same check on the chart fails when the chart breaks the rules.
    for (set, reason) in [
        (
            "securityContext.readOnlyRootFilesystem=false",
            "readOnlyRootFilesystem",
        ),
        (
            "securityContext.allowPrivilegeEscalation=true",
            "allowPrivilegeEscalation",
        ),
        ("podSecurityContext.runAsNonRoot=false", "runAsNonRoot"),
    ] {
        let out = k8s_check(&render(&["--set", set]));
        assert!(
            !out.status.success() && text(&out).contains(reason),
            "{set}: {}",
            text(&out)
        );
    }
}

#[test]
fn an_ipenrich_config_given_as_values_is_rejected_by_name() {
    // Pipelines are selected by values (`config:`), never silently ignored: every
    // example pipeline file passed with -f fails, naming its top-level keys.
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("pipelines")).unwrap() {
        let path = entry.unwrap().path().display().to_string();
        for command in [&["template", "t"][..], &["lint"]] {
            let out = Command::new(helm())
                .args(command)
                .arg(chart())
                .args(["-f", &path])
                .output()
                .unwrap();
            assert!(
                !out.status.success(),
                "{command:?} accepted {path} as values"
            );
            assert!(
                text(&out).contains("additional properties") && text(&out).contains("'pipelines'"),
                "{command:?} -f {path}: {}",
                text(&out)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2 * 7, "pipelines/*.yaml: {checked} checks");
    // A typo is an error too, not a value nobody reads.
    let out = template(&["--set=mmdb.sorce=openipapi"]);
    assert!(
        !out.status.success() && text(&out).contains("'sorce'"),
        "{}",
        text(&out)
    );
}

const PROMTOOL: &str =
    "install promtool (Debian: apt-get install prometheus; scripts/test.sh does)";

#[test]
fn alert_rules_pass_promtool_and_deploy_unchanged() {
    let rules = chart().join("rules");
    let check = tool(
        "promtool",
        PROMTOOL,
        &rules,
        &["check", "rules", "ipenrich.rules.yaml"],
    );
    assert!(
        check.status.success(),
        "promtool check rules: {}",
        text(&check)
    );
    let test = tool(
        "promtool",
        PROMTOOL,
        &rules,
        &["test", "rules", "ipenrich.rules.test.yaml"],
    );
    assert!(
        test.status.success(),
        "promtool test rules: {}",
        text(&test)
    );

    // The PrometheusRule carries the file as it is (plus the labels asked for).
    let file: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(rules.join("ipenrich.rules.yaml")).unwrap(),
    )
    .unwrap();
    let docs = documents(&render(&["--set=prometheusRule.enabled=true"]));
    assert_eq!(of_kind(&docs, "PrometheusRule")[0]["spec"], file);
    let docs = documents(&render(&[
        "--set=prometheusRule.enabled=true",
        "--set=prometheusRule.additionalAlertLabels.team=soc",
    ]));
    let groups = &of_kind(&docs, "PrometheusRule")[0]["spec"]["groups"];
    let alerts = groups[0]["rules"].as_sequence().unwrap();
    assert_eq!(alerts.len(), 6);
    for alert in alerts {
        assert_eq!(alert["labels"]["team"].as_str(), Some("soc"), "{alert:?}");
        assert!(alert["labels"]["severity"].as_str().is_some(), "{alert:?}");
    }
}

/// The README's "Deploy on Kubernetes" section: its values file and its `helm install`
/// lines, taken verbatim. Each install is rendered (`helm template` with the same
/// arguments), decoded strictly, evaluated at Pod Security "restricted", and its config
/// loads; the geolite2 values mount the fetchers with the Secret the section creates.
#[test]
fn readme_deploy_values_render_and_pass_the_checks() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Deploy on Kubernetes\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a \"Deploy on Kubernetes\" section");
    let blocks: Vec<(&str, &str)> = section
        .split("\n```")
        .skip(1)
        .step_by(2)
        .filter_map(|b| b.split_once('\n'))
        .collect();
    let values = blocks
        .iter()
        .find(|(lang, body)| *lang == "yaml" && body.starts_with("# my-values.yaml\n"))
        .expect("a yaml block starting `# my-values.yaml`")
        .1;
    let dir = tempfile::tempdir().unwrap();
    let values_file = write_config(dir.path(), "my-values.yaml", values);
    let installs: Vec<&str> = blocks
        .iter()
        .filter(|(lang, _)| *lang == "bash")
        .flat_map(|(_, body)| body.lines())
        .filter(|l| l.starts_with("helm install "))
        .collect();
    assert!(installs.len() >= 2, "helm install lines: {installs:?}");
    let values_path = values_file.display().to_string();
    for line in installs {
        // `helm install NAME helm/ipenrich ARGS` -> `helm template t <chart> ARGS`.
        let args: Vec<&str> = line
            .split_whitespace()
            .skip(4)
            .map(|a| {
                if a == "my-values.yaml" {
                    values_path.as_str()
                } else {
                    a
                }
            })
            .collect();
        let rendered = render(&args);
        let out = k8s_check(&rendered);
        assert!(out.status.success(), "{line}: {}", text(&out));
        let docs = documents(&rendered);
        let config = rendered_config(&docs);
        ipenrich::config::load_str(&config, "readme", |_| Some("kafka:9092".into()))
            .unwrap_or_else(|e| panic!("{line}: the rendered config does not load: {e}"));
        if args.contains(&values_path.as_str()) {
            let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
            let fetcher = serde_yaml_ng::to_string(&pod["initContainers"]).unwrap();
            assert!(
                fetcher.contains("geolite2") && fetcher.contains("name: maxmind"),
                "{line}: the GeoLite2 fetcher with the Secret `maxmind`: {fetcher}"
            );
            assert_eq!(mmdb_path(&config), "/data/mmdb/GeoLite2-ASN.mmdb", "{line}");
        }
    }
}

/// The chart's init container, run for real: the arguments it renders, given to the
/// binary with the key its Secret would export, fetch a database from OpenIPApi (the
/// simulator) to exactly the path the rendered config reads, and `ipenrich check`
/// accepts that config with that database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_fetcher_writes_the_database_the_rendered_config_reads() {
    let sim = start_sim(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().display().to_string();
    let url = sim.base_url("openipapi");
    let sets = [
        "--set=mmdb.source=openipapi".to_string(),
        "--set=mmdb.openipapi.existingSecret=oia".to_string(),
        format!("--set=mmdb.openipapi.url={url}"),
        format!("--set=mmdb.mountPath={mount}"),
    ];
    let args: Vec<&str> = sets.iter().map(String::as_str).collect();
    let docs = documents(&render(&args));
    let pod = Pod {
        spec: of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"].clone(),
        mmdb: mmdb_path(&rendered_config(&docs)),
    };
    let fetch = pod.args("mmdb-fetch");
    let out = tokio::process::Command::new(bin())
        .args(&fetch)
        .env("OPENIPAPI_API_KEY", "sim-openipapi-key")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{fetch:?}: {}", text(&out));
    assert!(
        std::path::Path::new(&pod.mmdb).is_file(),
        "{fetch:?} wrote no {}",
        pod.mmdb
    );
    let checked = check_config(&rendered_config(&docs));
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(text(&checked).contains(&pod.mmdb), "{}", text(&checked));
}
