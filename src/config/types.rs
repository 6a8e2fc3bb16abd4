//! Serde wire types of the pipeline config. Every struct rejects unknown keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Metrics and health endpoints; off when absent.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// The pipelines this process runs. Enums are written as single-key maps
    /// (`source: {kafka: {...}}`), the natural YAML shape.
    #[serde(with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub pipelines: Vec<PipelineConfig>,
    /// Reciprocal attacker reporters, run next to the pipelines (see `crate::report`).
    #[serde(default, with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub reporters: Vec<super::ReporterConfig>,
    /// The intel table shared by every replica on a compacted Kafka topic; off
    /// when absent (see `crate::lookup::table`).
    #[serde(default)]
    pub intel_table: Option<IntelTableConfig>,
}

/// `intel_table:`: every API answer is published to a compacted topic keyed by
/// provider and address, and every replica loads it at start and follows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntelTableConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The compacted topic (default `ipenrich-intel`).
    #[serde(default = "default_intel_topic")]
    pub topic: String,
    /// Create the topic at start when it is missing (default true); without it,
    /// a missing topic stops the start with an error.
    #[serde(default = "default_true")]
    pub create: bool,
    /// Partitions of a created topic (default 6).
    #[serde(default = "default_intel_partitions")]
    pub partitions: i32,
    /// Replication factor of a created topic (default -1: the broker's default).
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// `retention.ms` of a created topic beside compaction (default 7d): records
    /// older than every TTL are deleted, so the topic stays bounded.
    #[serde(default = "default_intel_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// Longest the start waits to load the table before pipelines run (default 60s);
    /// past it they start with what was loaded and a warning.
    #[serde(default = "default_warm_timeout", with = "humantime_serde")]
    pub warm_timeout: Duration,
    /// Route a miss to the replica that owns its address (through the topic
    /// `<topic>-requests`, keyed like the table), so that one address is asked
    /// upstream once in the whole deployment (default true).
    #[serde(default = "default_true")]
    pub route_misses: bool,
    /// Longest a routed miss waits for its owner's answer before it is asked
    /// here after all (default 20s: an owner that is alive answers long before,
    /// even on a loaded machine, and a late fall-back costs a second lookup).
    #[serde(default = "default_route_timeout", with = "humantime_serde")]
    pub route_timeout: Duration,
    /// Extra librdkafka properties (security, tuning).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_route_timeout() -> Duration {
    Duration::from_secs(20)
}

fn default_intel_topic() -> String {
    "ipenrich-intel".into()
}

fn default_true() -> bool {
    true
}

fn default_intel_partitions() -> i32 {
    6
}

fn default_replication() -> i32 {
    -1
}

fn default_intel_retention() -> Duration {
    Duration::from_secs(7 * 86_400)
}

fn default_warm_timeout() -> Duration {
    Duration::from_secs(60)
}

/// The `/metrics` and `/health/*` listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on, e.g. `0.0.0.0:9898`.
    pub listen: SocketAddr,
}

/// One pipeline: source -> extract -> lookup -> merge -> sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name used in metrics labels and logs.
    pub name: String,
    /// Where events come from.
    pub source: SourceConfig,
    /// Which fields hold addresses.
    #[serde(default)]
    pub extract: ExtractConfig,
    /// Lookup chain, in order of precedence.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// How results are written into the event.
    #[serde(default)]
    pub output: OutputConfig,
    /// Where enriched events go.
    pub sink: SinkConfig,
    /// Where events that cannot be processed go, with the reason.
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,
    /// Size and concurrency bounds.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How long SIGTERM may take to drain and commit.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

/// Kubernetes' default termination grace period is 30 s; stay inside it.
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(25)
}

/// How a line of input is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Every event must be a JSON object; anything else goes to the dead letter.
    Json,
    /// Every line is text and becomes `{"message": "<line>"}`.
    Text,
    /// JSON objects are events, other lines become `{"message": "<line>"}`.
    #[default]
    Auto,
}

/// Event source.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// A Kafka consumer group.
    Kafka(KafkaSourceConfig),
    /// A file of newline-delimited events, read to its end.
    File(FileSourceConfig),
    /// Standard input, read to its end.
    Stdin(StdinSourceConfig),
}

impl SourceConfig {
    /// The configured line format.
    pub fn format(&self) -> Format {
        match self {
            SourceConfig::Kafka(k) => k.format,
            SourceConfig::File(f) => f.format,
            SourceConfig::Stdin(s) => s.format,
        }
    }
}

/// Kafka consumer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    pub brokers: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Consumer group id; replicas with the same id share the partitions.
    pub group_id: String,
    /// `json` is the norm on Kafka; `auto` and `text` for syslog-style topics.
    #[serde(default = "default_kafka_format")]
    pub format: Format,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// SIEM topics carry JSON; a non-JSON record there is a bad event.
fn default_kafka_format() -> Format {
    Format::Json
}

/// File source settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Path of the file.
    pub path: PathBuf,
    /// Line format.
    #[serde(default)]
    pub format: Format,
}

/// Standard input settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {
    /// Line format.
    #[serde(default)]
    pub format: Format,
}

/// Which parts of an event hold addresses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractConfig {
    /// JSON fields (dotted paths) that hold addresses, with their role.
    #[serde(default)]
    pub fields: Vec<FieldConfig>,
    /// JSON fields (dotted paths) of free text to scan, e.g. `full_log`, `message`.
    #[serde(default)]
    pub text: Vec<String>,
    /// Scan every string in the event (slower; the default of `ipenrich enrich`).
    #[serde(default)]
    pub scan_all_strings: bool,
}

/// A JSON field with an address in it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// Dotted path, e.g. `data.srcip`; arrays along the way are walked.
    pub path: String,
    /// What the address is to the event: `source`, `destination`, `client`, ...
    #[serde(default)]
    pub role: Option<String>,
}

/// One provider in the lookup chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// An offline MaxMind DB file (GeoLite2-ASN, GeoIP2, or one built by `ipenrich mmdb build`).
    Mmdb(MmdbConfig),
    /// ipinsights.io: bulk lookups of up to 100 addresses; threat scores.
    Ipinsights(HttpProviderConfig),
    /// OpenIPApi: batch size by plan; ASN, geo, threat flags.
    Openipapi(OpenIpApiConfig),
    /// IPTrust: one address per call; fields by plan.
    Iptrust(HttpProviderConfig),
    /// IPGeolocation.io ASN API: one address per call; routing detail.
    Ipgeolocation(HttpProviderConfig),
    /// Cloudflare Radar ASN-by-IP: one address per call.
    CloudflareRadar(HttpProviderConfig),
}

impl ProviderConfig {
    /// The provider's name in logs, metrics and `lookup` output.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Mmdb(_) => "mmdb",
            ProviderConfig::Ipinsights(_) => "ipinsights",
            ProviderConfig::Openipapi(_) => "openipapi",
            ProviderConfig::Iptrust(_) => "iptrust",
            ProviderConfig::Ipgeolocation(_) => "ipgeolocation",
            ProviderConfig::CloudflareRadar(_) => "cloudflare_radar",
        }
    }

    /// The configured `name`, else the kind: the `provider` label of its metrics.
    pub fn name(&self) -> &str {
        let named = match self {
            ProviderConfig::Mmdb(_) => None,
            ProviderConfig::Openipapi(c) => c.name.as_deref(),
            ProviderConfig::Ipinsights(c)
            | ProviderConfig::Iptrust(c)
            | ProviderConfig::Ipgeolocation(c)
            | ProviderConfig::CloudflareRadar(c) => c.name.as_deref(),
        };
        named.unwrap_or(self.kind())
    }
}

/// Where an API key comes from. Never written inline: config files get committed.
/// Written `{env: VAR}` or `{file: PATH}`.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// An environment variable.
    Env(String),
    /// A file, e.g. a mounted Kubernetes secret (trailing newline trimmed).
    File(PathBuf),
}

/// Why an `api_key` value is refused. It does not quote the value, which may be a key
/// written inline (or substituted from `${VAR}`): serde's derived message would
/// ("unknown variant `<the key>`, expected `env` or `file`").
pub(crate) const KEY_SOURCE_EXPECTED: &str = "expected `env: VAR` or `file: PATH`; inline keys are not accepted (`${VAR}` inlines the key: write `env: VAR`)";

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde_yaml_ng::Value;
        let refused = || <D::Error as serde::de::Error>::custom(KEY_SOURCE_EXPECTED);
        let Value::Mapping(map) = Value::deserialize(deserializer)? else {
            return Err(refused());
        };
        let mut entries = map.into_iter();
        match (entries.next(), entries.next()) {
            (Some((Value::String(kind), Value::String(target))), None) => match kind.as_str() {
                "env" => Ok(KeySource::Env(target)),
                "file" => Ok(KeySource::File(PathBuf::from(target))),
                _ => Err(refused()),
            },
            _ => Err(refused()),
        }
    }
}

/// A remote API provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProviderConfig {
    /// The `provider` label of this key's metrics and its name in logs (default:
    /// the provider's kind). Two keys of one provider need two names.
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL; the provider's production host when absent (tests use the simulator's).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key (or token).
    pub api_key: KeySource,
    /// Connection, read and whole-request timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Cache, batching, rate limits and circuit breaker in front of the API.
    #[serde(default)]
    pub lookup: EngineConfig,
}

/// OpenIPApi, whose batch size and endpoints depend on the plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenIpApiConfig {
    /// As [`HttpProviderConfig::name`].
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL; `https://api.openipapi.com` when absent.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key.
    pub api_key: KeySource,
    /// `free`, `starter`, `pro`, `business` or `enterprise` (batch 1/100/500/1,000/5,000).
    pub plan: OpenIpApiPlan,
    /// Connection, read and whole-request timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Cache, batching, rate limits and circuit breaker in front of the API.
    #[serde(default)]
    pub lookup: EngineConfig,
}

/// The lookup engine in front of one API key. Every key is optional; the defaults
/// come from the provider's documented limits (see `lookup::build`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// How long an answer is cached (default 24h).
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// How long "no data" is cached (default 1h).
    #[serde(default, with = "humantime_serde")]
    pub negative_ttl: Option<Duration>,
    /// Most cached addresses (default 1,000,000).
    #[serde(default)]
    pub cache_entries: Option<usize>,
    /// Addresses per bulk call, at most the provider's maximum (default: that maximum).
    #[serde(default)]
    pub max_batch: Option<usize>,
    /// Longest a miss waits for its batch to fill (default 50ms).
    #[serde(default, with = "humantime_serde")]
    pub max_wait: Option<Duration>,
    /// Calls in flight at once (default 4).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Sustained requests per second the key may make.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Requests that may go out back to back.
    #[serde(default)]
    pub request_burst: Option<u32>,
    /// Sustained addresses per second, where the provider charges per address.
    #[serde(default)]
    pub units_per_second: Option<f64>,
    /// Addresses that may be charged back to back (at least one full batch).
    #[serde(default)]
    pub unit_burst: Option<u32>,
    /// Consecutive failures that open the circuit breaker (default 5).
    #[serde(default)]
    pub breaker_failures: Option<u32>,
    /// How long an open breaker waits before a probe (default 30s).
    #[serde(default, with = "humantime_serde")]
    pub breaker_open_for: Option<Duration>,
    /// Most addresses waiting for upstream; more are answered `rate_limited` (default 10,000).
    #[serde(default)]
    pub max_pending: Option<usize>,
    /// The provider's rate window, sliding (default: the documented one; ipinsights
    /// 1h, OpenIPApi 1m).
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// Requests (OpenIPApi) or addresses (ipinsights) allowed in any `window`
    /// (default: the documented limit of the provider and plan).
    #[serde(default)]
    pub window_limit: Option<u64>,
    /// IPv6 addresses are cached, asked and counted by their network of this many
    /// bits (default 64; 128 keys every address on its own).
    #[serde(default)]
    pub ipv6_prefix: Option<u8>,
    /// While the provider's headers say its window is spent, one request goes out
    /// this often to see whether it has room again (default 2m).
    #[serde(default, with = "humantime_serde")]
    pub probe_every: Option<Duration>,
    /// Hourly, daily or monthly budgets of charged addresses, e.g.
    /// `[{period: 24h, limit: 10000}, {period: 30days, limit: 250000}]`.
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
}

/// A budget of charged units (addresses, reports) per period.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Window length: a duration (`1h`, `24h`, `30days`) or `month`, a calendar
    /// month from `reset_at`'s day and time (clamped to short months).
    pub period: BudgetPeriod,
    /// Units allowed per window, for the whole deployment: replicas add up what
    /// they spent through the intel table.
    pub limit: u64,
    /// A moment when the provider's window resets, e.g. `2026-01-15T09:00:00Z`
    /// (RFC 3339); windows start there plus whole periods. Default: the Unix
    /// epoch, i.e. whole UTC hours and days.
    #[serde(default, with = "humantime_serde")]
    pub reset_at: Option<std::time::SystemTime>,
}

/// A budget's window: a fixed length, or a calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Every(Duration),
    Month,
}

impl<'de> Deserialize<'de> for BudgetPeriod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let word: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        match word.to_ascii_lowercase().as_str() {
            "month" | "1month" | "monthly" | "calendarmonth" => Ok(BudgetPeriod::Month),
            _ => humantime_serde::re::humantime::parse_duration(&text)
                .map(BudgetPeriod::Every)
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "{text:?} is neither a duration nor `month`: {e}"
                    ))
                }),
        }
    }
}

/// HTTP timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP + TLS connect.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect: Duration,
    /// Between bytes of a response.
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read: Duration,
    /// The whole request, bulk calls included.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect: default_connect_timeout(),
            read: default_read_timeout(),
            request: default_request_timeout(),
        }
    }
}

/// A healthy API connects in well under a second; longer means it is down.
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Matches the clients' default (src/lookup/providers/http.rs).
fn default_read_timeout() -> Duration {
    Duration::from_secs(5)
}

/// A 100-address bulk call answers within seconds; 30 s bounds a stuck one.
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Offline MMDB provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmdbConfig {
    /// Path of the `.mmdb` file.
    pub path: PathBuf,
    /// How often the file is checked for changes; `0s` turns reloading off.
    #[serde(default = "default_mmdb_reload", with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// MaxMind publishes GeoLite2 twice a week; a minute's delay is plenty.
fn default_mmdb_reload() -> Duration {
    Duration::from_secs(60)
}

/// Where results land in the event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// `enrichment` (one object), `ecs` (Elastic Common Schema fields: `source.as.*`,
    /// `related.ip`, `threat.enrichments`, and the `ipenrich` namespace) or `both`.
    #[serde(default)]
    pub format: OutputFormat,
    /// Dotted path of the `enrichment` object from the top of the record:
    /// `event.enrichment` nests into HEC's `event` object. Objects on the way are
    /// created where missing; a value that is not an object is never overwritten
    /// (the object then goes to the top-level key named by the path's last segment).
    #[serde(default = "default_output_field")]
    pub field: String,
    /// `none`, or `hec`: the ECS fields go into a Splunk HEC event's `event` object
    /// (onto the record's top level when `event` is raw text).
    #[serde(default)]
    pub envelope: Envelope,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            format: OutputFormat::default(),
            field: default_output_field(),
            envelope: Envelope::default(),
        }
    }
}

fn default_output_field() -> String {
    "enrichment".to_string()
}

/// Output schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// One `enrichment` object listing every address.
    #[default]
    Enrichment,
    /// Elastic Common Schema fields (`source.as.number`, `related.ip`,
    /// `threat.enrichments`, ...) and the `ipenrich` namespace.
    Ecs,
    /// Both of the above.
    Both,
}

/// What wraps the event a SIEM indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// The record is the event.
    #[default]
    None,
    /// Splunk HTTP Event Collector: `{"time","host","source","sourcetype","event"}`,
    /// where `event` is what Splunk indexes and `host`/`source` are strings.
    Hec,
}

/// Where enriched events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// A Kafka topic.
    Kafka(KafkaSinkConfig),
    /// A file, one event per line (appended unless `append: false`).
    File(FileSinkConfig),
    /// Standard output, one event per line.
    Stdout(StdoutSinkConfig),
}

/// Kafka producer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers; defaults to the source's.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Output topic.
    pub topic: String,
    /// `preserve`: same partition number as the input (keeps per-partition order);
    /// `key`: librdkafka's partitioner on the message key.
    #[serde(default)]
    pub partitioning: Partitioning,
    /// Extra librdkafka producer properties.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// How output partitions are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Partitioning {
    /// Input partition number (modulo the output topic's partition count).
    #[default]
    Preserve,
    /// Hash of the message key.
    Key,
}

/// File sink settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Path of the file; `-` means standard output.
    pub path: PathBuf,
    /// Append to the file (default); `false` empties it when the pipeline starts,
    /// for one-shot runs over a file. Refused with a Kafka source, whose pipeline
    /// restarts would erase output it already delivered.
    #[serde(default = "default_append")]
    pub append: bool,
}

/// Files are appended to: a pipeline restarted by the supervisor, or a process
/// restarted by its orchestrator, keeps what it delivered before.
fn default_append() -> bool {
    true
}

/// Standard output sink (no settings).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {}

/// Dead-letter output.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum DeadLetterConfig {
    /// A Kafka topic; the original bytes, key and headers plus `ipenrich.error*` headers.
    Kafka(KafkaDeadLetterConfig),
    /// A file of JSON lines `{"error": ..., "source": ..., "event": ...}`.
    File(FileSinkConfig),
}

/// Dead-letter topic settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaDeadLetterConfig {
    /// Bootstrap servers; defaults to the sink's, then the source's.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Dead-letter topic.
    pub topic: String,
}

/// Bounds that keep one bad event or a slow provider from hurting the rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Larger events go to the dead letter unprocessed. Default: the output's
    /// `message.max.bytes` (librdkafka's 1,000,000 unless the sink's options say
    /// otherwise) less [`ENRICHMENT_HEADROOM`] for the enrichment, key and headers;
    /// 1 MiB for file and stdout sinks. `check` refuses a value that leaves less
    /// headroom than that under a Kafka sink's `message.max.bytes`.
    #[serde(default)]
    pub max_event_bytes: Option<usize>,
    /// Addresses enriched per event; the rest are counted and the cap is flagged.
    #[serde(default = "default_max_ips_per_event")]
    pub max_ips_per_event: usize,
    /// Events read but not yet delivered; consumption pauses at this bound.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Bytes of events read but not yet delivered; consumption pauses at this bound
    /// too, so that large events cannot multiply memory by `max_in_flight`.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// Longest an event waits for API lookups; then it goes on with `timeout`,
    /// `rate_limited` or `circuit_open` for the addresses still missing.
    #[serde(default = "default_max_enrichment_delay", with = "humantime_serde")]
    pub max_enrichment_delay: Duration,
    /// `fail_open` (default): past `max_enrichment_delay` the event goes on with a
    /// status marker. `backpressure`: events wait for answers and reading pauses.
    #[serde(default)]
    pub on_slow_lookup: SlowLookup,
}

/// What a pipeline does when providers are slower than the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowLookup {
    /// Never stall the stream: mark the addresses and move on.
    #[default]
    FailOpen,
    /// Never skip a lookup: stop reading until the providers answer.
    Backpressure,
}

/// Long enough for a bulk call to a healthy API, short enough that a stalled one
/// delays the stream by seconds, not minutes.
fn default_max_enrichment_delay() -> Duration {
    Duration::from_secs(2)
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_event_bytes: None,
            max_ips_per_event: default_max_ips_per_event(),
            max_in_flight: default_max_in_flight(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            max_enrichment_delay: default_max_enrichment_delay(),
            on_slow_lookup: SlowLookup::default(),
        }
    }
}

/// librdkafka's default `message.max.bytes`: a producer refuses larger messages.
pub const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Room kept under the output's message limit for what an event gains on the way:
/// the enrichment (64 addresses with ASN, geo and threat fields stay under 40 KB),
/// the key, the headers and the record framing.
pub const ENRICHMENT_HEADROOM: usize = 64 * 1024;

/// Line sinks have no message limit; 1 MiB is more than any real log line.
const FILE_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Enough for 20,000 events of 12 KiB; bounds memory when events are large.
fn default_max_in_flight_bytes() -> usize {
    256 * 1024 * 1024
}

impl PipelineConfig {
    /// The output's largest message (`message.max.bytes`), for Kafka sinks.
    pub fn output_message_max_bytes(&self) -> Option<Result<usize, String>> {
        match &self.sink {
            SinkConfig::Kafka(k) => Some(match k.options.get("message.max.bytes") {
                None => Ok(LIBRDKAFKA_MESSAGE_MAX_BYTES),
                Some(v) => v
                    .parse::<usize>()
                    .map_err(|_| format!("message.max.bytes {v:?} is not a whole number")),
            }),
            _ => None,
        }
    }

    /// `limits.max_event_bytes`, or its default derived from the output's limit.
    pub fn max_event_bytes(&self) -> usize {
        self.limits
            .max_event_bytes
            .unwrap_or_else(|| match self.output_message_max_bytes() {
                Some(Ok(max)) => max.saturating_sub(ENRICHMENT_HEADROOM).max(1),
                _ => FILE_MAX_EVENT_BYTES,
            })
    }
}

/// Large enough for any real log line (XFF chains, firewall summaries).
fn default_max_ips_per_event() -> usize {
    64
}

/// A few seconds of input at 100k events/s, a few tens of MiB at most.
fn default_max_in_flight() -> usize {
    20_000
}

/// The OpenIPApi subscription, which fixes the batch size, the rate and the monthly
/// quota (openipapi-api.txt, "Batch size limits" and "Rate limits"). Ordered by tier,
/// so `plan >= OpenIpApiPlan::Pro` reads as "Pro plan or above".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenIpApiPlan {
    /// No batch endpoint (`plan_required`): one address per call.
    Free,
    Starter,
    Pro,
    Business,
    Enterprise,
}

impl OpenIpApiPlan {
    /// The plan named as in the config (`free`, `starter`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "free" => Self::Free,
            "starter" => Self::Starter,
            "pro" => Self::Pro,
            "business" => Self::Business,
            "enterprise" => Self::Enterprise,
            _ => return None,
        })
    }

    /// Documented "Max IPs per request"; `None` on the free plan, which has no
    /// batch endpoint (`plan_required`).
    pub fn batch_max(self) -> Option<usize> {
        match self {
            Self::Free => None,
            Self::Starter => Some(100),
            Self::Pro => Some(500),
            Self::Business => Some(1_000),
            Self::Enterprise => Some(5_000),
        }
    }

    /// Addresses one client call may carry: the batch maximum, 1 on the free plan.
    pub fn max_batch(self) -> usize {
        self.batch_max().unwrap_or(1)
    }

    /// Documented "Lookups / month"; Enterprise is "Unlimited".
    pub fn monthly_lookups(self) -> Option<u64> {
        match self {
            Self::Free => Some(10_000),
            Self::Starter => Some(100_000),
            Self::Pro => Some(500_000),
            Self::Business => Some(2_000_000),
            Self::Enterprise => None,
        }
    }

    /// Documented "Requests / minute". Enterprise is "Custom": we assume Business's
    /// 600 until the key's `X-RateLimit-Limit` says more (override with
    /// `lookup.window_limit`).
    pub fn per_minute(self) -> u64 {
        match self {
            Self::Free => 30,
            Self::Starter => 120,
            Self::Pro => 300,
            Self::Business | Self::Enterprise => 600,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(text: &str) -> Result<BudgetPeriod, String> {
        serde_yaml_ng::from_str::<BudgetPeriod>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_budget_period_is_a_duration_or_a_calendar_month() {
        assert_eq!(period("month"), Ok(BudgetPeriod::Month));
        assert_eq!(period("1 Month"), Ok(BudgetPeriod::Month));
        assert_eq!(
            period("30days"),
            Ok(BudgetPeriod::Every(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(
            period("24h"),
            Ok(BudgetPeriod::Every(Duration::from_secs(86_400)))
        );
        let e = period("fortnightly").unwrap_err();
        assert!(e.contains("neither a duration nor `month`"), "{e}");
    }
}
