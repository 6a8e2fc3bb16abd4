//! A real Prometheus scrapes a real `ipenrich run` on the real broker: every query of
//! the Grafana dashboard returns data, and `promtool check metrics` finds nothing to
//! say about `/metrics`.
//!
//! The run carries everything the dashboard shows: a Kafka pipeline asking the five
//! simulated providers behind the MMDB, the intel table (shared cache, routing), and a
//! dry-run reporter. Prometheus comes from Debian's `prometheus` package, which
//! `scripts/test.sh` installs when it is missing.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A Prometheus server scraping one target every second, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: ipenrich\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        let config = write_config(dir, "prometheus.yml", &config);
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed (scripts/test.sh installs Debian's package)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Series returned by an instant query; `Err` with Prometheus's error.
    async fn query(&self, http: &reqwest::Client, expr: &str) -> Result<usize, String> {
        let answer = http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: serde_json::Value = answer.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        Ok(body["data"]["result"].as_array().map_or(0, Vec::len))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every PromQL expression of the dashboard, with its variables set to match all.
fn dashboard_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(root().join("helm/ipenrich/dashboards/ipenrich.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$pipeline", ".*");
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

/// The pipeline, intel table and reporter of this test, on fresh topics.
fn config(dir: &Path, kafka: &str, sim: &str, input: &str) -> std::path::PathBuf {
    let (output, dlq, table) = (unique("prom-out"), unique("prom-dlq"), unique("prom-intel"));
    let (signals, changelog, audit) = (
        unique("prom-signals"),
        unique("prom-ledger"),
        unique("prom-audit"),
    );
    let group = unique("prom");
    let key = |p: &str| root().join(format!("samples/simulator/{p}.key"));
    let mut providers = format!(
        "      - mmdb:\n          path: {}\n",
        root().join("samples/demo-asn.mmdb").display()
    );
    for (name, prefix, extra) in [
        ("ipinsights", "ipinsights", ""),
        ("openipapi", "openipapi", "          plan: business\n"),
        ("iptrust", "iptrust", ""),
        ("ipgeolocation", "ipgeolocation", ""),
        ("cloudflare_radar", "cloudflare", ""),
    ] {
        providers.push_str(&format!(
            "      - {name}:\n          base_url: {sim}/{prefix}\n          api_key: {{file: {}}}\n{extra}",
            key(prefix).display()
        ));
    }
    let text = format!(
        r#"http:
  listen: 127.0.0.1:0
intel_table:
  brokers: "{kafka}"
  topic: {table}
  partitions: 3
pipelines:
  - name: prom
    source:
      kafka:
        brokers: "{kafka}"
        topics: [{input}]
        group_id: {group}
    extract:
      fields:
        - {{path: src, role: source}}
      text: [msg]
    providers:
{providers}    limits: {{max_ips_per_event: 2}}
    output: {{format: both}}
    sink:
      kafka: {{topic: {output}}}
    dead_letter:
      kafka: {{topic: {dlq}}}
reporters:
  - name: prom
    brokers: "{kafka}"
    topics: [{output}]
    signal_group_id: {group}-signals
    decision_group_id: {group}-decide
    signals_topic: {signals}
    changelog_topic: {changelog}
    dry_run: true
    rules:
      - name: failed-login
        when: [{{field: kind, equals: "login failed"}}]
        attacker: {{field: src}}
        categories: [ssh_bruteforce]
        source: fail2ban
        maxretry: 2
        findtime: 10m
    audit:
      kafka: {{topic: {audit}}}
"#
    );
    write_config(dir, "prom.yaml", &text)
}

/// Events with public sources, a few with more addresses than the cap, a few whose
/// `source` is a string (ECS fields left out), and one that is not UTF-8 (a dead letter).
fn events(round: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..60)
        .map(|i| {
            let ip = format!("185.220.{}.{}", 100 + i % 4, 1 + (i + round) % 40);
            let msg = if i % 10 == 0 {
                "seen 8.8.8.8 and 1.1.1.1 and 9.9.9.9"
            } else {
                "sshd"
            };
            // A HEC-like `source` string: the ECS `source.*` fields cannot go there.
            let source = if i % 7 == 0 {
                r#","source":"syslog""#
            } else {
                ""
            };
            format!(r#"{{"src":"{ip}","kind":"login failed","msg":"{msg}"{source}}}"#).into_bytes()
        })
        .collect();
    out.push(vec![0xff, 0xfe, b'{', b'}']);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let input = unique("prom-in");
    create_topics(&kafka, &[&input], 3);
    let sim = start_sim(ipenrich::simulate::SimConfig::default()).await;
    let sim_url = format!("http://{}", sim.addr());
    let cfg = config(dir.path(), &kafka, &sim_url, &input);
    let log = dir.path().join("run.log");
    let _run = Proc::run(&cfg, &log);
    let target = metrics_addr(&log);
    let prometheus = Prometheus::start(dir.path(), &target);
    let http = reqwest::Client::new();

    // Two scrapes of the target, then data until every query answers: events keep
    // coming, so counters move and `rate` has two samples. Give-up bound only.
    let queries = dashboard_queries();
    let give_up = Instant::now() + Duration::from_secs(300);
    let mut round = 0;
    let empty = loop {
        let records = events(round);
        // Blocking produce: off the runtime's workers.
        let (kafka, input) = (kafka.clone(), input.clone());
        tokio::task::spawn_blocking(move || {
            produce(
                &kafka,
                &input,
                records
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| ((i % 3) as i32, None, r)),
            )
        })
        .await
        .unwrap();
        round += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let scrapes = prometheus
            .query(&http, "count_over_time(up{job=\"ipenrich\"}[10m])")
            .await;
        let scraped = prometheus
            .query(&http, "count_over_time(up{job=\"ipenrich\"}[10m]) >= 2")
            .await;
        if scraped != Ok(1) {
            assert!(
                Instant::now() < give_up,
                "Prometheus never scraped twice: {scrapes:?}; see {}",
                dir.path().join("prometheus.log").display()
            );
            continue;
        }
        let mut empty = Vec::new();
        for (title, expr) in &queries {
            match prometheus.query(&http, expr).await {
                Ok(0) => empty.push(format!("{title}: {expr}")),
                Ok(_) => {}
                Err(e) => panic!("Prometheus rejects the query of {title:?} ({expr}): {e}"),
            }
        }
        if empty.is_empty() || Instant::now() > give_up {
            break empty;
        }
    };
    assert!(
        empty.is_empty(),
        "dashboard queries without data after {round} rounds of events:\n{}",
        empty.join("\n")
    );
    println!(
        "{} dashboard queries answered by Prometheus after {round} rounds",
        queries.len()
    );

    let exposition = scrape(&target);
    let body = exposition
        .split_once("\r\n\r\n")
        .map_or(exposition.as_str(), |(_, b)| b);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed with prometheus");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}
