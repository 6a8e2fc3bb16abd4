//! End-to-end, side by side: ipenrich against the limit of the machine and against a
//! peer, each a separate process on the real broker. `scripts/bench-e2e.sh` runs it
//! (it starts the broker and builds Benthos when Go is present); by hand:
//! `cargo bench --bench e2e -- [--events N] [--rounds R] [--only a,b]`.
//!
//! Method (BENCHMARKS.md has the figures):
//! - N Wazuh-like events (default 500,000, about 600 bytes: sshd, Suricata, nginx and
//!   Windows 4625 alerts; Zipf-distributed public addresses from the demo database, so
//!   every MMDB lookup hits) are preloaded into a 4-partition topic.
//! - Rounds alternate the contenders, each a fresh process in a fresh consumer group:
//!   `passthrough` (this binary, re-executed: consume and produce unchanged with exactly
//!   ipenrich's librdkafka settings, `source::kafka::consumer_config` and
//!   `sink::kafka::producer_config`, offsets stored after delivery: the limit),
//!   `ipenrich-mmdb`, `ipenrich-ipinsights` (against `ipenrich simulate`, cold cache),
//!   and `benthos-passthrough` and `benthos-geoip` (regex + `geoip_asn`) when a
//!   `benthos` binary is found (`$BENTHOS`, then `PATH`).
//! - Output topics use `LogAppendTime`, so times come from the broker's clock: the run
//!   lasts from the spawn to the last output record's append time, and "first output"
//!   is the first record's append time after the spawn (and after the contender's
//!   partition assignment, where it logs one). CPU seconds and peak RSS (`VmHWM`) are
//!   read from /proc when the last record is in.
//! - Latency: a second process of each contender reads a fresh `LogAppendTime` topic
//!   that the harness fills at 50 % of that contender's measured rate; the added
//!   latency of a record is its output append time minus its input append time.
//! - Every run reads its output back: every event must be there (duplicates are
//!   counted), and per-partition order is checked (events of one input partition must
//!   come out in input order). A lost event, or broken order in ipenrich or the
//!   passthrough, fails the run (exit 1). Nothing here is a timed assertion.
//!
//! Reported: the medians over the rounds, and every ratio.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: i32 = 4;
/// ipenrich's default `limits.max_in_flight`, which the passthrough keeps too.
const MAX_IN_FLIGHT: usize = 20_000;
/// Distinct public addresses the events draw from (Zipf, s = 1.1).
const POOL: usize = 20_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir() -> PathBuf {
    let dir = root().join("target/bench-e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------- events

/// splitmix64: a deterministic generator, so every run moves the same events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Public addresses inside the demo database's networks (every MMDB lookup hits),
/// and a Zipf sampler over them.
struct Addresses {
    pool: Vec<String>,
    cumulative: Vec<f64>,
}

impl Addresses {
    fn new() -> Self {
        let csv = std::fs::read_to_string(root().join("samples/demo-asn.csv")).unwrap();
        let nets: Vec<ipnet::IpNet> = csv
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("network"))
            .filter_map(|l| l.split(',').next()?.parse().ok())
            .collect();
        let mut rng = Rng(7);
        let mut pool = std::collections::BTreeSet::new();
        while pool.len() < POOL {
            let net = nets[(rng.next() % nets.len() as u64) as usize];
            pool.insert(pick(net, &mut rng));
        }
        let mut pool: Vec<String> = pool.into_iter().collect();
        // Shuffle, so rank is unrelated to the address.
        for i in (1..pool.len()).rev() {
            pool.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let mut total = 0.0;
        let cumulative = (1..=pool.len())
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(1.1);
                total
            })
            .collect();
        Addresses { pool, cumulative }
    }

    fn zipf(&self, rng: &mut Rng) -> &str {
        let x = rng.unit() * self.cumulative.last().unwrap();
        let i = self.cumulative.partition_point(|c| *c < x);
        &self.pool[i.min(self.pool.len() - 1)]
    }
}

/// A host address inside `net`, away from its network and broadcast addresses.
fn pick(net: ipnet::IpNet, rng: &mut Rng) -> String {
    match net {
        ipnet::IpNet::V4(n) => {
            let size = 1u64 << (32 - n.prefix_len().max(1));
            let base = u32::from(n.network()) as u64;
            let host = 1 + rng.next() % size.saturating_sub(2).max(1);
            std::net::Ipv4Addr::from((base + host) as u32).to_string()
        }
        ipnet::IpNet::V6(n) => {
            let bits = (128 - n.prefix_len()).min(64);
            let base = u128::from(n.network());
            let host = 1 + (rng.next() as u128 & ((1u128 << bits) - 2));
            std::net::Ipv6Addr::from(base + host).to_string()
        }
    }
}

/// The `i`th event: a realistic mix of Wazuh alerts, about 600 bytes each.
fn event(i: usize, a: &str, b: &str) -> String {
    let ts = format!("2026-11-23T04:{:02}:{:02}.120+0000", (i / 60) % 60, i % 60);
    match i % 4 {
        0 => format!(
            r#"{{"timestamp":"{ts}","rule":{{"level":10,"description":"sshd: brute force trying to get access to the system.","id":"5712","groups":["syslog","sshd","authentication_failures"]}},"agent":{{"id":"003","name":"web-01","ip":"192.168.1.20"}},"manager":{{"name":"wazuh-manager"}},"id":"{i}","cluster":{{"name":"wazuh","node":"master"}},"predecoder":{{"program_name":"sshd","timestamp":"Nov 23 04:14:01","hostname":"web-01"}},"decoder":{{"parent":"sshd","name":"sshd"}},"data":{{"srcip":"{a}","srcport":"41022","dstuser":"root"}},"full_log":"Nov 23 04:14:01 web-01 sshd[912]: Failed password for root from {a} port 41022 ssh2","location":"/var/log/auth.log"}}"#
        ),
        1 => format!(
            r#"{{"timestamp":"{ts}","rule":{{"level":6,"description":"Suricata: Alert - ET SCAN Potential SSH Scan","id":"86601","groups":["ids","suricata"]}},"agent":{{"id":"007","name":"ids-01","ip":"10.0.4.7"}},"manager":{{"name":"wazuh-manager"}},"id":"{i}","decoder":{{"name":"json"}},"data":{{"event_type":"alert","src_ip":"{a}","src_port":"51234","dest_ip":"{b}","dest_port":"22","proto":"TCP","alert":{{"signature_id":"2001219","signature":"ET SCAN Potential SSH Scan","category":"Attempted Information Leak","severity":"2"}}}},"location":"/var/log/suricata/eve.json"}}"#
        ),
        2 => format!(
            r#"{{"timestamp":"{ts}","rule":{{"level":5,"description":"Web server 400 error code.","id":"31101","groups":["web","accesslog","attack"]}},"agent":{{"id":"004","name":"edge-02","ip":"10.0.2.4"}},"manager":{{"name":"wazuh-manager"}},"id":"{i}","decoder":{{"name":"web-accesslog"}},"data":{{"protocol":"GET","srcip":"{a}","id":"404","url":"/wp-login.php"}},"full_log":"{a} - - [23/Nov/2026:04:14:02 +0000] \"GET /wp-login.php HTTP/1.1\" 404 153 \"-\" \"curl/8.4.0\" \"{b}\"","location":"/var/log/nginx/access.log"}}"#
        ),
        _ => format!(
            r#"{{"timestamp":"{ts}","rule":{{"level":5,"description":"Logon failure - Unknown user or bad password.","id":"60122","groups":["windows","authentication_failed"]}},"agent":{{"id":"011","name":"dc-01","ip":"10.0.9.11"}},"manager":{{"name":"wazuh-manager"}},"id":"{i}","decoder":{{"name":"windows_eventchannel"}},"data":{{"win":{{"system":{{"eventID":"4625","computer":"dc-01.corp.local"}},"eventdata":{{"subjectUserSid":"S-1-0-0","targetUserName":"administrator","targetDomainName":"CORP","status":"0xc000006d","failureReason":"%%2313","workstationName":"-","ipAddress":"{a}","ipPort":"50432","logonType":"3"}}}}}},"location":"EventChannel"}}"#
        ),
    }
}

struct Events {
    addresses: Addresses,
    rng: Rng,
}

impl Events {
    fn new() -> Self {
        Events {
            addresses: Addresses::new(),
            rng: Rng(42),
        }
    }

    fn next(&mut self, i: usize) -> String {
        let a = self.addresses.zipf(&mut self.rng).to_string();
        let b = self.addresses.zipf(&mut self.rng).to_string();
        event(i, &a, &b)
    }
}

// ---------------------------------------------------------------- the broker

fn bootstrap() -> String {
    if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
        return b;
    }
    let out = Command::new("bash")
        .arg(root().join("scripts/kafka.sh"))
        .arg("start")
        .output()
        .expect("scripts/kafka.sh");
    assert!(
        out.status.success(),
        "scripts/kafka.sh start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("KAFKA_BOOTSTRAP="))
        .next_back()
        .expect("KAFKA_BOOTSTRAP from scripts/kafka.sh")
        .to_string()
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("e2e-{prefix}-{nanos}")
}

/// Creates 4-partition topics whose records carry the broker's append time.
async fn create(bootstrap: &str, names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1))
                .set("message.timestamp.type", "LogAppendTime")
        })
        .collect();
    for r in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn producer(bootstrap: &str, linger_ms: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", linger_ms)
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2000000")
        .create()
        .unwrap()
}

fn send(p: &BaseProducer, topic: &str, i: usize, payload: &str) {
    let key = format!("k{i}");
    let mut rec = BaseRecord::to(topic)
        .partition(i as i32 % PARTITIONS)
        .key(&key)
        .payload(payload);
    loop {
        match p.send(rec) {
            Ok(()) => break,
            Err((_, back)) => {
                p.poll(Duration::from_millis(10));
                rec = back;
            }
        }
    }
    p.poll(Duration::ZERO);
}

/// Preloads `n` events; returns their total size in bytes.
fn fill(bootstrap: &str, topic: &str, n: usize) -> usize {
    let p = producer(bootstrap, "20");
    let mut events = Events::new();
    let mut bytes = 0;
    for i in 0..n {
        let payload = events.next(i);
        bytes += payload.len();
        send(&p, topic, i, &payload);
    }
    p.flush(Duration::from_secs(120)).unwrap();
    bytes
}

/// Watches and reads topics (no group, nothing committed).
struct Reader {
    consumer: BaseConsumer,
}

/// One output record: its key's event number (`None` for the warm-up records), its
/// partition and its broker append time.
struct Record {
    id: Option<usize>,
    partition: i32,
    ts: i64,
}

impl Reader {
    fn new(bootstrap: &str) -> Self {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .unwrap();
        Reader { consumer }
    }

    fn ends(&self, topic: &str) -> Vec<i64> {
        (0..PARTITIONS)
            .map(|p| loop {
                match self
                    .consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                {
                    Ok((_, high)) => break high,
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            })
            .collect()
    }

    fn count(&self, topic: &str) -> usize {
        self.ends(topic).iter().sum::<i64>() as usize
    }

    /// Every record of `topic`, partition by partition in log order.
    fn read(&self, topic: &str) -> Vec<Record> {
        let ends = self.ends(topic);
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        self.consumer.assign(&tpl).unwrap();
        let mut left: i64 = ends.iter().sum();
        let mut out = Vec::with_capacity(left as usize);
        let deadline = Instant::now() + Duration::from_secs(600);
        while left > 0 && Instant::now() < deadline {
            let Some(m) = self.consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = m.unwrap();
            if m.offset() >= ends[m.partition() as usize] {
                continue;
            }
            left -= 1;
            let id = m
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.strip_prefix('k'))
                .and_then(|k| k.parse().ok());
            out.push(Record {
                id,
                partition: m.partition(),
                ts: m.timestamp().to_millis().unwrap_or(0),
            });
        }
        self.consumer.unassign().unwrap();
        assert_eq!(left, 0, "{topic}: could not read every record back");
        out
    }
}

// ---------------------------------------------------------------- contenders

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Passthrough,
    IpenrichMmdb,
    IpenrichIpinsights,
    BenthosPassthrough,
    BenthosGeoip,
}

const ALL: [Contender; 5] = [
    Contender::Passthrough,
    Contender::IpenrichMmdb,
    Contender::IpenrichIpinsights,
    Contender::BenthosPassthrough,
    Contender::BenthosGeoip,
];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Passthrough => "passthrough",
            Contender::IpenrichMmdb => "ipenrich-mmdb",
            Contender::IpenrichIpinsights => "ipenrich-ipinsights",
            Contender::BenthosPassthrough => "benthos-passthrough",
            Contender::BenthosGeoip => "benthos-geoip",
        }
    }

    /// Ours must keep per-partition order; Benthos's order is reported, not required.
    fn must_keep_order(self) -> bool {
        !matches!(
            self,
            Contender::BenthosPassthrough | Contender::BenthosGeoip
        )
    }

    fn is_benthos(self) -> bool {
        !self.must_keep_order()
    }
}

/// What every contender shares: the broker, the databases, the simulator.
struct Setup {
    bootstrap: String,
    benthos: Option<PathBuf>,
    /// The demo database with database type GeoLite2-ASN (Benthos's `geoip_asn`
    /// insists on it); ipenrich reads the same file.
    asn_db: PathBuf,
    sim_url: String,
}

fn find_benthos() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("BENTHOS") {
        return Some(PathBuf::from(b)).filter(|p| p.exists());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("benthos"))
            .find(|p| p.is_file())
    })
}

fn write_asn_db() -> PathBuf {
    let csv = std::fs::read_to_string(root().join("samples/demo-asn.csv")).unwrap();
    let mut db = ipenrich::mmdb::writer::asn_db_from_csv(&csv).unwrap();
    db.set_database_type("GeoLite2-ASN");
    let path = work_dir().join("GeoLite2-ASN.mmdb");
    db.write_to(&path).unwrap();
    path
}

fn ipenrich_config(setup: &Setup, c: Contender, input: &str, output: &str) -> String {
    let provider = match c {
        Contender::IpenrichMmdb => format!("      - mmdb: {{path: {}}}\n", setup.asn_db.display()),
        _ => format!(
            "      - ipinsights:\n          base_url: {}/ipinsights\n          api_key: {{file: {}/samples/simulator/ipinsights.key}}\n          lookup: {{window_limit: 1000000000, units_per_second: 1000000, unit_burst: 1000000, requests_per_second: 100000, request_burst: 10000}}\n",
            setup.sim_url,
            root().display()
        ),
    };
    // IPENRICH_BENCH_PIPELINE adds keys to the pipeline, e.g. `limits: {max_in_flight: 5000}`.
    let extra = std::env::var("IPENRICH_BENCH_PIPELINE")
        .map(|e| format!("    {e}\n"))
        .unwrap_or_default();
    format!(
        "pipelines:\n  - name: bench\n{extra}    source:\n      kafka:\n        brokers: \"{}\"\n        topics: [{input}]\n        group_id: {}\n    extract:\n      fields:\n        - {{path: data.srcip, role: source}}\n        - {{path: data.src_ip, role: source}}\n        - {{path: data.dest_ip, role: destination}}\n        - {{path: data.win.eventdata.ipAddress, role: source}}\n        - {{path: agent.ip, role: host}}\n      text: [full_log]\n    providers:\n{provider}    sink:\n      kafka: {{topic: {output}}}\n",
        setup.bootstrap,
        unique("group")
    )
}

fn benthos_config(setup: &Setup, c: Contender, input: &str, output: &str) -> String {
    let pipeline = if c == Contender::BenthosGeoip {
        format!(
            "pipeline:\n  processors:\n    - mapping: |\n        root = this\n        root.enrichment = content().string().re_find_all(\"[0-9]{{1,3}}\\\\.[0-9]{{1,3}}\\\\.[0-9]{{1,3}}\\\\.[0-9]{{1,3}}\").unique().map_each(ip -> ip.geoip_asn(\"{}\").catch(null))\n",
            setup.asn_db.display()
        )
    } else {
        String::new()
    };
    format!(
        "http: {{enabled: false}}\nlogger: {{level: WARN}}\nmetrics: {{none: {{}}}}\ninput:\n  kafka_franz:\n    seed_brokers: [\"{b}\"]\n    topics: [\"{input}\"]\n    consumer_group: \"{g}\"\n    start_from_oldest: true\n{pipeline}output:\n  kafka_franz:\n    seed_brokers: [\"{b}\"]\n    topic: \"{output}\"\n    key: '${{! meta(\"kafka_key\") }}'\n    partitioner: manual\n    partition: '${{! meta(\"kafka_partition\") }}'\n    compression: lz4\n    max_in_flight: 64\n    batching: {{count: 1000, period: 5ms}}\n",
        b = setup.bootstrap,
        g = unique("group"),
    )
}

/// Starts a contender reading `input` and writing `output`; its stderr goes to `log`.
fn spawn(setup: &Setup, c: Contender, input: &str, output: &str, log: &Path) -> Child {
    let config = work_dir().join(format!("{}.yaml", c.name()));
    let mut cmd = match c {
        Contender::Passthrough => {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args(["passthrough", &setup.bootstrap, input, output])
                .arg(unique("group"));
            cmd
        }
        Contender::IpenrichMmdb | Contender::IpenrichIpinsights => {
            std::fs::write(&config, ipenrich_config(setup, c, input, output)).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_ipenrich"));
            cmd.args(["run", "--log-format", "json", "--config"])
                .arg(&config);
            cmd
        }
        Contender::BenthosPassthrough | Contender::BenthosGeoip => {
            std::fs::write(&config, benthos_config(setup, c, input, output)).unwrap();
            let mut cmd = Command::new(setup.benthos.as_ref().unwrap());
            cmd.arg("-c").arg(&config);
            cmd
        }
    };
    // IPENRICH_BENCH_WRAP runs ipenrich and the passthrough under a profiler, `{out}`
    // standing for a per-run file name: e.g. `perf record -g -o {out}.perf.data --`
    // or `heaptrack -o {out}`. The figures of such a run are the profiler's.
    if let Some(wrap) = std::env::var("IPENRICH_BENCH_WRAP")
        .ok()
        .filter(|_| !c.is_benthos())
    {
        let out = log.with_extension("");
        let mut words = wrap
            .split_whitespace()
            .map(|w| w.replace("{out}", &out.to_string_lossy()));
        let mut wrapped = Command::new(words.next().expect("IPENRICH_BENCH_WRAP"));
        wrapped
            .args(words)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        cmd = wrapped;
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", c.name()))
}

/// When the contender got its partitions (wall clock, ms), where it logs it: the
/// passthrough prints `assigned_at_ms=`, ipenrich logs "partitions assigned".
fn assigned_at(log: &Path) -> Option<i64> {
    let file = std::fs::File::open(log).ok()?;
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if let Some(ms) = line.strip_prefix("assigned_at_ms=") {
            return ms.trim().parse().ok();
        }
        if line.contains("partitions assigned") {
            let v: serde_json::Value = serde_json::from_str(&line).ok()?;
            let ts = time::OffsetDateTime::parse(
                v["timestamp"].as_str()?,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            return Some((ts.unix_timestamp_nanos() / 1_000_000) as i64);
        }
    }
    None
}

fn start_simulator() -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let config = work_dir().join("simulator.yaml");
    std::fs::write(
        &config,
        "ipinsights: {rate_limit: {requests: 1000000000, window_ms: 3600000}}\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ipenrich"))
        .args(["simulate", "--listen", &listen, "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work_dir().join("simulator.log")).unwrap())
        .spawn()
        .expect("ipenrich simulate");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "the simulator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://{listen}"))
}

// ---------------------------------------------------------------- one run

/// CPU seconds (user + system) and peak RSS in MiB of a running process.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(f64::NAN);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    (ticks / clock_ticks(), hwm_kib / 1024.0)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// SIGTERM, then SIGKILL if it is still there after 30 s.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until `output` holds `n` records; returns the contender's usage then.
fn wait_for(
    reader: &Reader,
    output: &str,
    n: usize,
    child: &mut Child,
    name: &str,
) -> Result<(f64, f64), String> {
    let deadline = Instant::now() + Duration::from_secs(120 + n as u64 / 1_000);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{name} exited ({status}) before its output was complete; see target/bench-e2e/{name}.log"
            ));
        }
        if reader.count(output) >= n {
            return Ok(usage(child.id()));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name}: {} of {n} records out when its time was up",
                reader.count(output)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A throughput run's figures.
#[derive(Clone)]
struct Run {
    /// Events per second while the run is under way: between the output records at
    /// 10 % and at 90 % (start-up and the tail are `first_from_start` and `whole`).
    rate: f64,
    /// Events per second from the spawn to the last output record.
    whole: f64,
    cpu: f64,
    rss_mib: f64,
    /// Spawn to the first output record, ms.
    first_from_start: f64,
    /// Partition assignment to the first output record, ms (when logged).
    first_from_assign: Option<f64>,
    inversions: usize,
    missing: usize,
    duplicates: usize,
    p50: f64,
    p99: f64,
}

/// Moves the preloaded `input` through the contender once.
fn throughput_run(
    rt: &tokio::runtime::Runtime,
    setup: &Setup,
    c: Contender,
    input: &str,
    n: usize,
) -> Result<Run, String> {
    let output = unique(&format!("{}-out", c.name()));
    rt.block_on(create(&setup.bootstrap, &[&output]));
    let log = work_dir().join(format!("{}.log", c.name()));
    let reader = Reader::new(&setup.bootstrap);
    let start = now_ms();
    let mut child = spawn(setup, c, input, &output, &log);
    let waited = wait_for(&reader, &output, n, &mut child, c.name());
    stop(child);
    let (cpu, rss_mib) = waited?;
    let records = reader.read(&output);
    let mut times: Vec<i64> = records.iter().map(|r| r.ts).collect();
    times.sort_unstable();
    let at = |q: usize| times.get(times.len() * q / 10).copied().unwrap_or(start);
    let (first, last) = (at(0), times.last().copied().unwrap_or(start));
    let (t10, t90) = (at(1), at(9));
    let mut seen = vec![false; n];
    let mut distinct = 0;
    // Per output partition and input partition, the last event number seen.
    let mut last_id: HashMap<(i32, usize), usize> = HashMap::new();
    let mut inversions = 0;
    for r in &records {
        let Some(id) = r.id.filter(|id| *id < n) else {
            continue;
        };
        if !std::mem::replace(&mut seen[id], true) {
            distinct += 1;
        }
        let origin = id % PARTITIONS as usize;
        if let Some(prev) = last_id.insert((r.partition, origin), id) {
            if prev > id {
                inversions += 1;
            }
        }
    }
    Ok(Run {
        rate: (times.len() * 8 / 10) as f64 / ((t90 - t10).max(1) as f64 / 1000.0),
        whole: n as f64 / ((last - start).max(1) as f64 / 1000.0),
        cpu,
        rss_mib,
        first_from_start: (first - start) as f64,
        first_from_assign: assigned_at(&log).map(|a| (first - a) as f64),
        inversions,
        missing: n - distinct,
        duplicates: records.len() - distinct,
        p50: f64::NAN,
        p99: f64::NAN,
    })
}

/// Runs a fresh contender on a fresh topic filled at `rate` events per second for
/// about 3 s; returns the p50 and p99 of the added latency in ms.
fn latency_run(
    rt: &tokio::runtime::Runtime,
    setup: &Setup,
    c: Contender,
    rate: f64,
) -> Result<(f64, f64), String> {
    let (input, output) = (unique("lat-in"), unique(&format!("{}-lat", c.name())));
    rt.block_on(create(&setup.bootstrap, &[&input, &output]));
    let log = work_dir().join(format!("{}-latency.log", c.name()));
    let reader = Reader::new(&setup.bootstrap);
    let mut child = spawn(setup, c, &input, &output, &log);
    let p = producer(&setup.bootstrap, "1");
    // One warm-up record per partition: the load starts once the contender runs.
    for part in 0..PARTITIONS {
        let key = format!("w{part}");
        p.send(
            BaseRecord::to(&input)
                .partition(part)
                .key(&key)
                .payload("{}"),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let warm = wait_for(&reader, &output, PARTITIONS as usize, &mut child, c.name());
    if let Err(e) = warm {
        stop(child);
        return Err(e);
    }
    let m = ((rate * 3.0) as usize).clamp(3_000, 300_000);
    let mut events = Events::new();
    let payloads: Vec<String> = (0..m).map(|i| events.next(i)).collect();
    let begin = Instant::now();
    let mut sent = 0;
    while sent < m {
        let due = ((begin.elapsed().as_secs_f64() * rate) as usize).min(m);
        while sent < due {
            send(&p, &input, sent, &payloads[sent]);
            sent += 1;
        }
        p.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1));
    }
    p.flush(Duration::from_secs(60)).unwrap();
    let done = wait_for(
        &reader,
        &output,
        m + PARTITIONS as usize,
        &mut child,
        c.name(),
    );
    stop(child);
    done?;
    let appended: HashMap<usize, i64> = reader
        .read(&input)
        .into_iter()
        .filter_map(|r| Some((r.id?, r.ts)))
        .collect();
    let mut added: Vec<i64> = reader
        .read(&output)
        .into_iter()
        .filter_map(|r| Some(r.ts - appended.get(&r.id?)?))
        .collect();
    if added.is_empty() {
        return Err(format!("{}: no latency sample", c.name()));
    }
    added.sort_unstable();
    let at = |q: f64| added[((added.len() - 1) as f64 * q).round() as usize] as f64;
    Ok((at(0.50), at(0.99)))
}

// ---------------------------------------------------------------- the passthrough

/// Prints when the passthrough got its partitions, for "first output after assignment".
struct Announce;

impl ClientContext for Announce {}

impl ConsumerContext for Announce {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if tpl.count() > 0 {
                eprintln!("assigned_at_ms={}", now_ms());
            }
        }
    }
}

/// Says when the idempotent producer has its producer id (as ipenrich's sink does).
struct ProducerId(tokio::sync::watch::Sender<bool>);

impl ClientContext for ProducerId {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if statistics
            .eos
            .is_some_and(|eos| eos.idemp_state == "Assigned")
        {
            self.0.send_replace(true);
        }
    }
}

/// The limit: consume, produce the same bytes to the same partition, store the
/// offset once delivered; ipenrich's exact librdkafka settings and in-flight bound,
/// and its start: the producer has its id before the consumer subscribes.
fn passthrough(args: &[String]) {
    let [brokers, input, output, group] = args else {
        panic!("usage: e2e passthrough BROKERS INPUT OUTPUT GROUP");
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let source = ipenrich::config::KafkaSourceConfig {
            brokers: brokers.clone(),
            topics: vec![input.clone()],
            group_id: group.clone(),
            format: ipenrich::config::Format::Json,
            options: BTreeMap::new(),
        };
        let (id_tx, mut has_id) = tokio::sync::watch::channel(false);
        let producer: FutureProducer<ProducerId> =
            ipenrich::sink::kafka::producer_config(brokers, &BTreeMap::new())
                .create_with_context(ProducerId(id_tx))
                .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), has_id.wait_for(|id| *id)).await;
        let consumer: StreamConsumer<Announce> =
            ipenrich::source::kafka::consumer_config("passthrough", &source)
                .create_with_context(Announce)
                .unwrap();
        consumer.subscribe(&[input.as_str()]).unwrap();
        let consumer = Arc::new(consumer);
        let mut pending = FuturesUnordered::new();
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                Some((delivery, partition, offset)) = pending.next(), if !pending.is_empty() => {
                    let delivery: Result<Result<_, _>, _> = delivery;
                    delivery.unwrap().map_err(|(e, _)| e).unwrap();
                    consumer.store_offset(input, partition, offset + 1).unwrap();
                }
                m = consumer.recv(), if pending.len() < MAX_IN_FLIGHT => {
                    let m = m.unwrap();
                    let (partition, offset) = (m.partition(), m.offset());
                    let mut rec = FutureRecord::to(output)
                        .payload(m.payload().unwrap_or_default())
                        .partition(partition);
                    if let Some(k) = m.key() {
                        rec = rec.key(k);
                    }
                    let f = producer.send_result(rec).map_err(|(e, _)| e).unwrap();
                    pending.push(futures::FutureExt::map(f, move |d| (d, partition, offset)));
                }
            }
        }
    });
}

// ---------------------------------------------------------------- the report

struct Options {
    events: usize,
    rounds: usize,
    only: Option<Vec<String>>,
    /// `--no-latency`: throughput runs only (quicker, for comparing changes).
    latency: bool,
}

fn options(args: &[String]) -> Options {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |flag: &str, default: usize| {
        value(flag).map_or(default, |v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{flag} wants a number, not {v:?}"))
        })
    };
    Options {
        events: number("--events", 500_000),
        rounds: number("--rounds", 5),
        only: value("--only").map(|v| v.split(',').map(str::to_string).collect()),
        latency: !args.iter().any(|a| a == "--no-latency"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The medians of one contender's rounds.
struct Summary {
    rate: f64,
    whole: f64,
    cpu: f64,
    per_cpu: f64,
    rss: f64,
    first_start: f64,
    first_assign: f64,
    p50: f64,
    p99: f64,
    worst_inversions: usize,
    missing: usize,
    duplicates: usize,
    failed: usize,
}

fn summarise(runs: &[Result<Run, String>], n: usize) -> Summary {
    let ok: Vec<&Run> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
    let m = |f: &dyn Fn(&Run) -> f64| median(ok.iter().map(|r| f(r)).collect());
    Summary {
        rate: m(&|r| r.rate),
        whole: m(&|r| r.whole),
        cpu: m(&|r| r.cpu),
        per_cpu: m(&|r| n as f64 / r.cpu),
        rss: m(&|r| r.rss_mib),
        first_start: m(&|r| r.first_from_start),
        first_assign: m(&|r| r.first_from_assign.unwrap_or(f64::NAN)),
        p50: m(&|r| r.p50),
        p99: m(&|r| r.p99),
        worst_inversions: ok.iter().map(|r| r.inversions).max().unwrap_or(0),
        missing: ok.iter().map(|r| r.missing).max().unwrap_or(0),
        duplicates: ok.iter().map(|r| r.duplicates).max().unwrap_or(0),
        failed: runs.len() - ok.len(),
    }
}

fn fmt(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        "n/a".to_string()
    } else {
        format!("{x:.decimals$}")
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (uncommitted changes)"
    };
    format!(
        "{} cores ({model}), {} MiB RAM; commit {}{dirty}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024),
        git(&["rev-parse", "--short", "HEAD"]),
    )
}

fn table(results: &[(Contender, Summary)]) -> String {
    let mut out = String::from("| contender | ev/s | ev/s from start | CPU s | ev per CPU-s | peak RSS MiB | first output after start / assignment, ms | added latency p50 / p99 at 50 % rate, ms | per-partition order | lost / duplicated |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
    for (c, s) in results {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} / {} |\n",
            c.name(),
            fmt(s.rate, 0),
            fmt(s.whole, 0),
            fmt(s.cpu, 2),
            fmt(s.per_cpu, 0),
            fmt(s.rss, 0),
            fmt(s.first_start, 0),
            fmt(s.first_assign, 0),
            fmt(s.p50, 0),
            fmt(s.p99, 0),
            if s.worst_inversions == 0 {
                "kept".to_string()
            } else {
                format!("broken ({} inversions)", s.worst_inversions)
            },
            s.missing,
            s.duplicates,
        );
        if s.failed > 0 {
            out += &format!("|   {} failed rounds ||||||||||\n", s.failed);
        }
    }
    out
}

fn ratios(results: &[(Contender, Summary)]) -> String {
    let get = |c: Contender| results.iter().find(|(k, _)| *k == c).map(|(_, s)| s);
    let pairs = [
        (Contender::IpenrichMmdb, Contender::Passthrough),
        (Contender::IpenrichIpinsights, Contender::Passthrough),
        (Contender::IpenrichMmdb, Contender::BenthosGeoip),
        (Contender::IpenrichIpinsights, Contender::BenthosGeoip),
        (Contender::IpenrichMmdb, Contender::BenthosPassthrough),
        (Contender::Passthrough, Contender::BenthosPassthrough),
    ];
    let mut out = String::from(
        "| ratio | ev/s | ev/s from start | ev per CPU-s | peak RSS |\n|---|---:|---:|---:|---:|\n",
    );
    for (a, b) in pairs {
        if let (Some(x), Some(y)) = (get(a), get(b)) {
            out += &format!(
                "| {} / {} | {} | {} | {} | {} |\n",
                a.name(),
                b.name(),
                fmt(x.rate / y.rate, 2),
                fmt(x.whole / y.whole, 2),
                fmt(x.per_cpu / y.per_cpu, 2),
                fmt(x.rss / y.rss, 2)
            );
        }
    }
    if let (Some(us), Some(limit)) = (get(Contender::IpenrichMmdb), get(Contender::Passthrough)) {
        let check = |ok: bool| if ok { "met" } else { "NOT met" };
        out += &format!(
            "\nTargets (ipenrich-mmdb): ev/s >= 0.85 x passthrough: {}; ev per CPU-s >= 0.85 x: {}; peak RSS <= 128 MiB: {}; first output <= 100 ms after assignment: {}; p99 added latency <= 10 ms: {}\n",
            check(us.rate >= 0.85 * limit.rate),
            check(us.per_cpu >= 0.85 * limit.per_cpu),
            check(us.rss <= 128.0),
            check(us.first_assign <= 100.0),
            check(us.p99 <= 10.0),
        );
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "passthrough") {
        return passthrough(&args[2..]);
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` only checks that it builds.
    if !args.iter().any(|a| a == "--bench") {
        println!("e2e bench: skipped (run scripts/bench-e2e.sh)");
        return;
    }
    let opts = options(&args);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sim, sim_url) = start_simulator();
    let setup = Setup {
        bootstrap: bootstrap(),
        benthos: find_benthos(),
        asn_db: write_asn_db(),
        sim_url,
    };
    let contenders: Vec<Contender> = ALL
        .into_iter()
        .filter(|c| !c.is_benthos() || setup.benthos.is_some())
        .filter(|c| {
            opts.only
                .as_ref()
                .is_none_or(|o| o.iter().any(|n| n == c.name()))
        })
        .collect();
    if setup.benthos.is_none() {
        println!("no benthos binary (BENTHOS or PATH): the peer's rounds are skipped");
    }
    let input = unique("in");
    rt.block_on(create(&setup.bootstrap, &[&input]));
    let bytes = fill(&setup.bootstrap, &input, opts.events);
    let header = format!(
        "{} events, {} bytes on average, {PARTITIONS} partitions; {} rounds; {}",
        opts.events,
        bytes / opts.events.max(1),
        opts.rounds,
        machine()
    );
    println!("{header}");
    let mut runs: Vec<Vec<Result<Run, String>>> = vec![Vec::new(); contenders.len()];
    for round in 0..opts.rounds {
        for k in 0..contenders.len() {
            // Rotate the order each round, so no contender always follows the same one.
            let i = (k + round) % contenders.len();
            let c = contenders[i];
            let mut run = throughput_run(&rt, &setup, c, &input, opts.events);
            if let Some(r) = run.as_mut().ok().filter(|_| opts.latency) {
                match latency_run(&rt, &setup, c, r.rate / 2.0) {
                    Ok((p50, p99)) => (r.p50, r.p99) = (p50, p99),
                    Err(e) => println!("round {round}: {}: latency run failed: {e}", c.name()),
                }
            }
            match &run {
                Ok(r) => println!(
                    "round {round}: {:<20} {:>8.0} ev/s ({:>8.0} from start), {:>6.2} CPU s, {:>4.0} MiB, first output {:>5.0} ms after start, p50/p99 {}/{} ms, {} inversions, {} lost, {} duplicated",
                    c.name(), r.rate, r.whole, r.cpu, r.rss_mib, r.first_from_start, r.p50, r.p99, r.inversions, r.missing, r.duplicates
                ),
                Err(e) => println!("round {round}: {:<20} FAILED: {e}", c.name()),
            }
            runs[i].push(run);
        }
    }
    stop(sim);
    let results: Vec<(Contender, Summary)> = contenders
        .iter()
        .zip(&runs)
        .map(|(c, r)| (*c, summarise(r, opts.events)))
        .collect();
    let report = format!(
        "{header}\n\nMedians of {} rounds:\n\n{}\n{}",
        opts.rounds,
        table(&results),
        ratios(&results)
    );
    println!("\n{report}");
    let path = work_dir().join("report.md");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(report.as_bytes()))
        .unwrap();
    println!("(also in {})", path.display());
    let wrong: Vec<&str> = results
        .iter()
        .filter(|(c, s)| {
            s.missing > 0 || s.failed > 0 || (c.must_keep_order() && s.worst_inversions > 0)
        })
        .map(|(c, _)| c.name())
        .collect();
    if !wrong.is_empty() {
        eprintln!("lost events, broken order or failed rounds: {wrong:?}");
        std::process::exit(1);
    }
}
