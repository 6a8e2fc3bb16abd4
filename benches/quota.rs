//! Quota economy of a deployment, for 1 and 3 replicas (issue 10 acceptance 4).
//!
//! Each round runs `ipenrich run` replicas (this build's binary) against the real
//! broker and the provider simulator (ipinsights, 12,000 addresses an hour, the
//! engines told exactly that), with the intel table and routing on, over the same
//! Zipf trace: 100,000 events over 10,000 addresses, a fifth of them IPv6 inside
//! four /64 networks. It prints, per round:
//!
//! - upstream lookups ÷ distinct addresses (IPv4, and IPv6 by /64): 1.00 is "each
//!   address asked once in the deployment";
//! - units charged in the busiest window ÷ the window's limit (≤ 1.00, and the
//!   simulator's 429 count, which must be 0);
//! - cache hit ratios by origin (`local`: answered by this replica's own lookup,
//!   `table`: by another replica's, through the intel table), over all lookups.
//!
//! Run: `cargo bench --bench quota` (needs `KAFKA_BOOTSTRAP`, or starts
//! `scripts/kafka.sh`). Figures, not assertions (the tests in `tests/lookup_e2e.rs`
//! hold the bounds).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use ipenrich::simulate::{RateLimitConfig, SimConfig};
use rdkafka::message::Message;

const N: usize = 100_000;
const DISTINCT: usize = 10_000;
const LIMIT: u64 = 12_000;
const WINDOW_MS: u64 = 3_600_000;
const PARTITIONS: i32 = 6;

fn address(rank: usize) -> String {
    if rank % 5 == 4 {
        format!("2a00:1450:4000:{:x}::{:x}", rank % 4, rank)
    } else {
        std::net::Ipv4Addr::from(0x2D08_0000 + rank as u32).to_string()
    }
}

/// The most units charged within any window, from the simulator's log.
fn busiest_window(arrivals_ms: &[u64], units: &[usize]) -> u64 {
    let mut best = 0u64;
    let mut sum = 0u64;
    let mut start = 0;
    for end in 0..arrivals_ms.len() {
        sum += units[end] as u64;
        while arrivals_ms[end] - arrivals_ms[start] >= WINDOW_MS {
            sum -= units[start] as u64;
            start += 1;
        }
        best = best.max(sum);
    }
    best
}

struct Round {
    replicas: usize,
    distinct: usize,
    upstream: u64,
    busiest: u64,
    rate_limited: usize,
    local: f64,
    table: f64,
    misses: f64,
    seconds: f64,
}

fn round(replicas: usize, runtime: &tokio::runtime::Runtime) -> Round {
    let mut config = SimConfig::default();
    config.ipinsights.rate_limit = Some(RateLimitConfig {
        requests: LIMIT,
        window_ms: WINDOW_MS,
    });
    let sim = runtime.block_on(start_sim(config));
    let kafka = kafka();
    let (input, output, dlq) = (unique("quota-in"), unique("quota-out"), unique("quota-dlq"));
    create_topics(&kafka, &[&input, &output], PARTITIONS);
    create_topics(&kafka, &[&dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sim-ipinsights-key\n").unwrap();
    let text = format!(
        r#"
http:
  listen: 127.0.0.1:0
pipelines:
  - name: quota
    source:
      kafka: {{brokers: "{kafka}", topics: [{input}], group_id: {group}}}
    extract:
      fields: [{{path: src, role: source}}]
    providers:
      - ipinsights:
          base_url: {base}
          api_key: {{file: {key}}}
          lookup: {{window_limit: {LIMIT}}}
    sink:
      kafka: {{topic: {output}}}
    dead_letter:
      kafka: {{topic: {dlq}}}
    limits: {{max_enrichment_delay: 30s}}
intel_table:
  brokers: "{kafka}"
  topic: {table}
"#,
        group = unique("quota-g"),
        base = sim.base_url("ipinsights"),
        key = key.display(),
        table = unique("quota-intel"),
    );
    let cfg = write_config(dir.path(), "quota.yaml", &text);
    let ranks = zipf(DISTINCT, N, 0x0A07_A10C);
    let distinct: HashSet<String> = ranks
        .iter()
        .map(|&r| {
            if r % 5 == 4 {
                format!("/64 {}", r % 4)
            } else {
                address(r)
            }
        })
        .collect();
    produce(
        &kafka,
        &input,
        (0..N).map(|seq| {
            (
                (seq % PARTITIONS as usize) as i32,
                None,
                format!(r#"{{"seq":{seq},"src":"{}"}}"#, address(ranks[seq])).into_bytes(),
            )
        }),
    );
    let started = Instant::now();
    let logs: Vec<_> = (0..replicas)
        .map(|i| dir.path().join(format!("log-{i}")))
        .collect();
    let mut procs: Vec<Proc> = logs.iter().map(|l| Proc::run(&cfg, l)).collect();
    let consumer = reader(&kafka, &output, &[]);
    let mut seen = HashSet::with_capacity(N);
    let give_up = Instant::now() + Duration::from_secs(1800);
    while seen.len() < N && Instant::now() < give_up {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
            if let Some(seq) = v["seq"].as_u64() {
                seen.insert(seq);
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let scraped: Vec<String> = logs.iter().map(|l| scrape(&metrics_addr(l))).collect();
    for p in &mut procs {
        p.kill();
    }
    let sum = |name: &str, labels: &[&str]| -> f64 {
        scraped.iter().map(|m| metric(m, name, labels)).sum()
    };
    let acc = runtime.block_on(async { sim.accounting().ipinsights });
    runtime.block_on(sim.shutdown());
    assert_eq!(
        seen.len(),
        N,
        "not every event came out: see {}",
        dir.keep().display()
    );
    Round {
        replicas,
        distinct: distinct.len(),
        upstream: acc.public_ips_charged,
        busiest: busiest_window(&acc.arrivals_ms, &acc.ips_per_request),
        rate_limited: acc.rate_limited_count(),
        local: sum(
            "ipenrich_lookup_cache_hits_by_origin_total",
            &["origin=\"local\""],
        ),
        table: sum(
            "ipenrich_lookup_cache_hits_by_origin_total",
            &["origin=\"table\""],
        ),
        misses: sum("ipenrich_lookup_cache_misses_total", &[]),
        seconds,
    }
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` it only has to
    // build. The ratios do not depend on the build's speed, so
    // `cargo test --bench quota -- --bench` measures with the debug binary.
    if !std::env::args().any(|a| a == "--bench") {
        println!("quota bench: skipped (run it with `cargo bench --bench quota`)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rounds: Vec<Round> = [1, 3].iter().map(|&r| round(r, &runtime)).collect();
    println!(
        "\nquota economy: {N} Zipf events over {DISTINCT} addresses (a fifth IPv6 in four /64s), \
         ipinsights window {LIMIT} addresses per hour\n"
    );
    println!(
        "{:>8} {:>9} {:>9} {:>17} {:>15} {:>5} {:>10} {:>10} {:>8} {:>8}",
        "replicas",
        "distinct",
        "upstream",
        "lookups/distinct",
        "window/limit",
        "429s",
        "hit local",
        "hit table",
        "miss",
        "seconds"
    );
    for r in &rounds {
        let lookups = r.local + r.table + r.misses;
        println!(
            "{:>8} {:>9} {:>9} {:>17.4} {:>15.4} {:>5} {:>10.4} {:>10.4} {:>8.4} {:>8.1}",
            r.replicas,
            r.distinct,
            r.upstream,
            r.upstream as f64 / r.distinct as f64,
            r.busiest as f64 / LIMIT as f64,
            r.rate_limited,
            r.local / lookups,
            r.table / lookups,
            r.misses / lookups,
            r.seconds
        );
    }
}
