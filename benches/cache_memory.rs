//! Memory of the lookup cache holding 1,000,000 addresses (issue 4: at most 256 MiB
//! RSS for the whole process). Plain `main`, no harness: fills a cache with realistic
//! records (one of 5,000 ASes with interned name/org strings, one of 200 countries, a
//! threat score 0-100 and three flags) and prints the resident set size before and
//! after, bytes per entry and the share of the budget. `cargo bench --bench cache_memory`.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use ipenrich::lookup::cache::{Cache, CacheMetrics, CacheSettings};
use ipenrich::lookup::providers::Answer;
use ipenrich::lookup::record::{AsnInfo, IntelRecord, ThreatInfo};

// The binary runs on mimalloc; measure with the same allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENTRIES: usize = 1_000_000;

/// AS number, name, organisation, country.
type As = (u32, Arc<str>, Arc<str>, Arc<str>);
const BUDGET: f64 = 256.0 * 1024.0 * 1024.0;

/// Resident set size in bytes, from /proc/self/statm (pages; 4 KiB on Linux x86-64).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm has a resident field");
    pages * 4096
}

/// xorshift: deterministic, no dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` it only has to build.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cache_memory bench: skipped (run it with `cargo bench --bench cache_memory`)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let _guard = runtime.enter();

    let countries: Vec<Arc<str>> = (0..200)
        .map(|i| {
            Arc::from(format!(
                "{}{}",
                (b'A' + (i / 26) as u8) as char,
                (b'A' + (i % 26) as u8) as char
            ))
        })
        .collect();
    // Strings as a client would produce them per response, then shared by the cache:
    // here each AS has its own pair, reused for every address of the AS.
    let ases: Vec<As> = (0..5_000u32)
        .map(|i| {
            (
                64_512 + i,
                Arc::from(format!("AS-NET-{i}")),
                Arc::from(format!("Example Networks {i} Ltd")),
                countries[(i % 200) as usize].clone(),
            )
        })
        .collect();
    let levels: Vec<Arc<str>> = ["low", "medium", "high", "critical"]
        .into_iter()
        .map(Arc::from)
        .collect();

    let settings = CacheSettings {
        ttl: Duration::from_secs(24 * 3600),
        negative_ttl: Duration::from_secs(3600),
        max_entries: NonZeroUsize::new(ENTRIES).unwrap(),
        max_bytes: NonZeroUsize::new(1 << 30).unwrap(),
        shards: NonZeroUsize::new(16).unwrap(),
    };
    let before = rss();
    let cache = Cache::try_new(&settings, CacheMetrics::unregistered()).expect("cache");
    let started = std::time::Instant::now();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for n in 0..ENTRIES as u32 {
        let r = next(&mut seed);
        let (number, name, org, country) = &ases[(r % 5_000) as usize];
        let score = ((r >> 16) % 101) as u8;
        let record = IntelRecord {
            asn: Some(AsnInfo {
                number: Some(*number),
                name: Some(name.clone()),
                org: Some(org.clone()),
                country: Some(country.clone()),
                ..AsnInfo::default()
            }),
            geo: None,
            threat: Some(ThreatInfo {
                score: Some(score),
                level: Some(levels[(score / 26) as usize].clone()),
                is_tor: Some(r >> 40 & 1 == 1),
                is_proxy: Some(r >> 41 & 1 == 1),
                is_hosting: Some(r >> 42 & 1 == 1),
                ..ThreatInfo::default()
            }),
        };
        // Distinct addresses from 1.0.0.0 on; 1 in 16 answers "no data".
        let ip = IpAddr::V4(Ipv4Addr::from(0x0100_0000u32 + n * 13));
        let answer = if r >> 50 & 15 == 0 {
            Answer::NoData
        } else {
            Answer::Found(record)
        };
        cache.insert(ip, &answer);
    }
    let fill = started.elapsed();
    let after = rss();
    let (asn, geo, threat) = cache.interned();
    let per_entry = (after.saturating_sub(before)) as f64 / cache.len() as f64;
    // Shards fill unevenly: a shard at its share of the bound evicts a little early.
    println!(
        "cache_memory: entries {} of {ENTRIES} inserted",
        cache.len()
    );
    println!("cache_memory: interned sections asn {asn} geo {geo} threat {threat}");
    println!("cache_memory: fill time {:.2} s", fill.as_secs_f64());
    println!(
        "cache_memory: rss before {:.1} MiB, after {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!(
        "cache_memory: {per_entry:.1} bytes per entry (rss delta), cache's own estimate {:.1}",
        cache.approx_bytes() as f64 / cache.len() as f64
    );
    println!(
        "cache_memory: process rss is {:.1} % of the 256 MiB budget",
        after as f64 / BUDGET * 100.0
    );
    assert!(
        (after as f64) <= BUDGET,
        "rss {after} exceeds the 256 MiB budget"
    );
}
