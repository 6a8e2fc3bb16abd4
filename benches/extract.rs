//! Throughput of the free-text address scanner over realistic log lines.
//!
//! Kept short (small warm-up and measurement time) so `cargo bench` stays quick; the
//! numbers are bytes of input per second, the unit the pipeline budget is stated in.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ipenrich::extract::text::scan;
use std::time::Duration;

const SSHD: &str = "Jan 12 03:04:05 bastion-01 sshd[24817]: Failed password for invalid user \
     admin from 203.0.113.5 port 52113 ssh2";

const JSON: &str = r#"{"@timestamp":"2024-01-12T03:04:05.678Z","event":{"kind":"event","category":["network"],"action":"connection_denied"},"source":{"ip":"185.220.101.1","port":51234},"destination":{"ip":"10.0.0.5","port":22},"network":{"transport":"tcp"},"http":{"request":{"headers":{"x-forwarded-for":"198.51.100.7, 2001:db8::42"}}},"message":"denied by policy v1.2.3 on host web-01.example.com"}"#;

const NO_IPS: &str =
    "2024-01-12T03:04:05.678Z INFO request completed: method=GET path=/api/v2/items \
     status=200 duration_ms=12.5 user=alice session=9f86d081884c7d659a2feaa0c55ad015 bytes=5120";

fn many_ips() -> String {
    let mut line = String::from("X-Forwarded-For: ");
    for i in 0..400u32 {
        let [a, b, c, d] = (0x0800_0000u32 + i * 104_729).to_be_bytes();
        line.push_str(&format!("{a}.{b}.{c}.{d}, "));
        if i % 8 == 0 {
            line.push_str(&format!("[2001:db8::{i:x}]:443, "));
        }
    }
    line
}

fn bench_scan(c: &mut Criterion) {
    let long = many_ips();
    let inputs: [(&str, &str); 4] = [
        ("sshd_line", SSHD),
        ("json_event", JSON),
        ("line_without_ips", NO_IPS),
        ("long_line_many_ips", &long),
    ];
    let mut group = c.benchmark_group("scan");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    for (name, text) in inputs {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                scan(black_box(text), |ip| {
                    black_box(ip);
                    n += 1;
                });
                n
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
