//! ipenrich: a stream processor that enriches security events with IP intelligence.
//!
//! # Layout
//!
//! Data flows one way: **source -> extract -> lookup -> merge -> sink**, with the
//! reporter as a side branch and telemetry beside everything. `docs/ARCHITECTURE.md`
//! draws the tasks and channels of a running pipeline.
//!
//! - [`cli`]: the commands behind `ipenrich`'s subcommands and their printers; `main.rs` only parses and exits.
//! - [`config`]: YAML wire types -> validated [`config::Config`]; errors name file, line and key.
//! - [`event`]: the record a source hands over (payload, key, headers, position) and JSON field paths.
//! - [`source`]: Kafka consumer group, files and stdin; offsets and the at-least-once watermark.
//! - [`extract`]: pure functions from JSON/text to classified IP addresses; no IO.
//! - [`lookup`]: the normalised intel record, providers (MMDB adapter, HTTP APIs) and the lookup chain.
//! - [`merge`]: renders lookup answers into the event (the `enrichment` object, ECS fields), patching the raw JSON text.
//! - [`sink`]: Kafka producer, files and stdout, and the dead-letter output.
//! - [`kafka`]: the one Kafka client builder: defaults, user options, then the forced guarantees.
//! - [`pipeline`]: wires the stages under an in-flight budget and owns shutdown.
//! - [`failure`]: every error's class: per record (dead letter), fatal, or transient.
//! - [`health`]: readiness of a running pipeline (brokers reachable, partitions held).
//! - [`supervisor`]: starts pipelines and reporters, owns readiness and bounded shutdown.
//! - [`report`]: the side branch: attack signals, fail2ban-style confirmation, reports to ipinsights.
//! - [`secret`]: API keys from env or mounted files, redacted in `Debug`, logs and errors.
//! - [`mmdb`]: MaxMind DB files: reading (verify, decode, reload) and writing (`mmdb build`).
//! - [`simulate`]: the provider simulator (`ipenrich simulate`), a sandbox for tests and benchmarks.
//! - [`metrics`], [`telemetry`], [`http`]: Prometheus metrics, logging, `/metrics` and health endpoints.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod event;
pub mod extract;
pub mod failure;
pub mod health;
pub mod http;
pub mod kafka;
pub mod lookup;
pub mod merge;
pub mod metrics;
pub mod mmdb;
pub mod pipeline;
pub mod report;
pub mod secret;
pub mod simulate;
pub mod sink;
pub mod source;
pub mod supervisor;
pub mod telemetry;
