//! The `ipenrich` command line: parse arguments, load config, start telemetry, run.
//!
//! Errors are printed with their whole cause chain. Standard output may be closed
//! early by its reader (`ipenrich check | head -1`): printing then stops quietly
//! (`Stdout`) instead of panicking as `println!` does, and `enrich` ends with
//! exit 0 when its stdout sink finds the pipe closed.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use ipenrich::config::{self, Config, PipelineConfig, SinkConfig, SourceConfig};
use ipenrich::pipeline;
use ipenrich::secret::redact_url;
use ipenrich::telemetry::{self, error_chain, LogFormat};

/// mimalloc: per-thread free lists. glibc's malloc serialises the producer, consumer
/// and worker threads on its arena locks (seen in perf as futex wake-ups).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Enriches security events with IP intelligence, from Kafka, files or stdin.
#[derive(Parser)]
#[command(name = "ipenrich", version, about)]
struct Cli {
    /// Log line format (logs go to stderr).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "IPENRICH_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every pipeline of a config until SIGTERM or SIGINT.
    Run {
        /// Pipeline config (YAML).
        #[arg(long, short, env = "IPENRICH_CONFIG")]
        config: PathBuf,
    },
    /// Validates a config and prints the resolved pipelines; exit 0 when valid.
    Check {
        /// Pipeline config (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Runs one pipeline over a file or stdin and exits at the end of the input.
    Enrich {
        /// Pipeline config; without it every string is scanned and no provider is asked.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Which pipeline of the config (default: the first).
        #[arg(long)]
        pipeline: Option<String>,
        /// Input file, `-` for stdin (default: the config's source, else stdin).
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// Output file, `-` for stdout (default: the config's file/stdout sink, else stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Serves the five provider APIs on loopback, exactly as documented (no quota spent).
    Simulate {
        /// Address to listen on; providers are path prefixes (`/ipinsights`, `/openipapi`, ...).
        #[arg(long, default_value = "127.0.0.1:8600")]
        listen: std::net::SocketAddr,
        /// Simulator settings (keys, plans, rate limits, faults) as YAML.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Prints what the configured providers say about addresses.
    Lookup {
        /// Addresses to look up.
        #[arg(required = true)]
        ips: Vec<String>,
        /// Pipeline config whose providers to ask (without it: classification only).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Which pipeline of the config (default: the first).
        #[arg(long)]
        pipeline: Option<String>,
        /// Output as JSON lines or a table.
        #[arg(long, value_enum, default_value = "json")]
        format: LookupFormat,
    },
    /// Builds an MMDB (ASN + country) from CSV lines `network,asn,organization,country`.
    Mmdb {
        #[command(subcommand)]
        command: MmdbCommand,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LookupFormat {
    Json,
    Table,
}

#[derive(Subcommand)]
enum MmdbCommand {
    /// Writes an MMDB file from a CSV file.
    Build {
        /// CSV input.
        #[arg(long)]
        csv: PathBuf,
        /// MMDB output.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Standard output for the commands that print (`check`, `lookup`, `simulate`).
/// When the reader goes away (EPIPE), later lines are dropped and the command ends
/// as it would have; other write errors are returned.
#[derive(Default)]
struct Stdout {
    closed: bool,
}

impl Stdout {
    /// Writes one line and flushes it.
    fn line(&mut self, line: fmt::Arguments<'_>) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
        }
    }

    /// Whether the reader has gone away.
    fn is_closed(&self) -> bool {
        self.closed
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ipenrich: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ipenrich: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Kafka clients left behind (an unreachable broker) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { config } => run(&config).await,
        Command::Check { config } => check(&config),
        Command::Enrich {
            config,
            pipeline,
            input,
            output,
        } => {
            enrich(
                config.as_deref(),
                pipeline.as_deref(),
                input.as_deref(),
                output.as_deref(),
            )
            .await
        }
        Command::Simulate { listen, config } => simulate(listen, config.as_deref()).await,
        Command::Lookup {
            ips,
            config,
            pipeline,
            format,
        } => lookup(&ips, config.as_deref(), pipeline.as_deref(), format).await,
        Command::Mmdb {
            command: MmdbCommand::Build { csv, out },
        } => {
            ipenrich::mmdb::build(&csv, &out)?;
            eprintln!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn simulate(listen: std::net::SocketAddr, config: Option<&Path>) -> Result<ExitCode> {
    let config = match config {
        Some(path) => ipenrich::simulate::SimConfig::from_yaml_file(path)?,
        None => ipenrich::simulate::SimConfig::default(),
    };
    let handle = ipenrich::simulate::start(config, listen).await?;
    // The simulator keeps serving when nobody reads these lines.
    let mut out = Stdout::default();
    for p in [
        "ipinsights",
        "openipapi",
        "iptrust",
        "ipgeolocation",
        "cloudflare",
    ] {
        out.line(format_args!("{p:<14} {}", handle.base_url(p)))?;
    }
    out.line(format_args!(
        "{:<14} http://{}/_sim/accounting",
        "accounting",
        handle.addr()
    ))?;
    termination().await;
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn lookup(
    ips: &[String],
    config: Option<&Path>,
    name: Option<&str>,
    format: LookupFormat,
) -> Result<ExitCode> {
    let chain = match config {
        None => ipenrich::lookup::Chain::default(),
        Some(path) => {
            let p = select_pipeline(path, name)?;
            let shared = ipenrich::lookup::build::SharedProviders::new(prometheus::Registry::new());
            ipenrich::lookup::build::chain(&p.providers, &shared).map_err(|errors| {
                let lines: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: pipeline {}: {e}", path.display(), p.name))
                    .collect();
                anyhow::anyhow!(lines.join("\n"))
            })?
        }
    };
    let mut failed = false;
    let mut out = Stdout::default();
    if matches!(format, LookupFormat::Table) {
        out.line(format_args!(
            "{:<40} {:<14} {:<8} {:>8}  {:<32} {:<3} {:>6}",
            "ip", "class", "status", "asn", "org", "cc", "threat"
        ))?;
    }
    for text in ips {
        // Nobody reads the answers any more: spend no more provider quota.
        if out.is_closed() {
            break;
        }
        let Ok(ip) = text.parse::<std::net::IpAddr>() else {
            eprintln!("ipenrich: {text:?} is not an IP address");
            failed = true;
            continue;
        };
        let ip = ip.to_canonical();
        let class = ipenrich::extract::classify(ip);
        let resolved = if class.is_public() && !chain.is_empty() {
            Some(chain.lookup(ip).await)
        } else {
            None
        };
        match format {
            LookupFormat::Json => {
                let mut line = serde_json::json!({"ip": ip.to_string(), "class": class.as_str()});
                if let Some(r) = &resolved {
                    line["status"] = r.status.as_str().into();
                    line["providers"] = chain.names().into();
                    if let Some(a) = &r.record.asn {
                        line["asn"] = serde_json::to_value(a)?;
                    }
                    if let Some(g) = &r.record.geo {
                        line["geo"] = serde_json::to_value(g)?;
                    }
                    if let Some(t) = &r.record.threat {
                        line["threat"] = serde_json::to_value(t)?;
                    }
                }
                out.line(format_args!("{line}"))?;
            }
            LookupFormat::Table => {
                let asn = resolved.as_ref().and_then(|r| r.record.asn.as_ref());
                let threat = resolved
                    .as_ref()
                    .and_then(|r| r.record.threat.as_ref())
                    .and_then(|t| t.score);
                out.line(format_args!(
                    "{:<40} {:<14} {:<8} {:>8}  {:<32} {:<3} {:>6}",
                    ip.to_string(),
                    class.as_str(),
                    resolved.as_ref().map_or("-", |r| r.status.as_str()),
                    asn.and_then(|a| a.number)
                        .map_or("-".to_string(), |n| format!("AS{n}")),
                    asn.and_then(|a| a.org.as_deref().or(a.name.as_deref()))
                        .unwrap_or("-")
                        .chars()
                        .take(32)
                        .collect::<String>(),
                    asn.and_then(|a| a.country.as_deref()).unwrap_or("-"),
                    threat.map_or("-".to_string(), |s| s.to_string()),
                ))?;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The named pipeline of a config file, or its first.
fn select_pipeline(path: &Path, name: Option<&str>) -> Result<PipelineConfig> {
    let cfg = load(path)?;
    let mut pipelines = cfg.pipelines.into_iter();
    match name {
        None => pipelines.next().context("the config has no pipeline"),
        Some(n) => match pipelines.find(|p| p.name == n) {
            Some(p) => Ok(p),
            None => bail!("{}: no pipeline named {n:?}", path.display()),
        },
    }
}

fn load(path: &Path) -> Result<Config> {
    Ok(config::load_file(path)?)
}

fn check(path: &Path) -> Result<ExitCode> {
    let config = match config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", error_chain(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut ok = true;
    // A closed pipe stops the printing, not the checking: the exit code still says
    // whether the config is valid.
    let mut out = Stdout::default();
    let shared = ipenrich::lookup::build::SharedProviders::new(prometheus::Registry::new());
    if let Some(http) = &config.http {
        out.line(format_args!("http: listen {}", http.listen))?;
    }
    for p in &config.pipelines {
        out.line(format_args!("pipeline {}:", p.name))?;
        out.line(format_args!("  source: {}", describe_source(&p.source)))?;
        let fields: Vec<String> = p
            .extract
            .fields
            .iter()
            .map(|f| {
                format!(
                    "{}{}",
                    f.path,
                    f.role
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        out.line(format_args!(
            "  extract: fields [{}], text [{}], scan_all_strings {}, max {} per event",
            fields.join(", "),
            p.extract.text.join(", "),
            p.extract.scan_all_strings,
            p.limits.max_ips_per_event
        ))?;
        for (i, provider) in p.providers.iter().enumerate() {
            match ipenrich::lookup::build::member(i, provider, &shared) {
                Ok(_) => out.line(format_args!("  provider: {}", describe_provider(provider)))?,
                Err(e) => {
                    ok = false;
                    out.line(format_args!(
                        "  provider: {}: ERROR {e}",
                        describe_provider(provider)
                    ))?;
                    eprintln!("{}: pipeline {}: {e}", path.display(), p.name);
                }
            }
        }
        out.line(format_args!(
            "  output: {:?} into `{}`",
            p.output.format, p.output.field
        ))?;
        out.line(format_args!("  sink: {}", describe_sink(&p.sink)))?;
        match &p.dead_letter {
            Some(config::DeadLetterConfig::Kafka(d)) => {
                out.line(format_args!("  dead_letter: kafka topic {}", d.topic))?
            }
            Some(config::DeadLetterConfig::File(f)) => {
                out.line(format_args!("  dead_letter: file {}", f.path.display()))?
            }
            None => out.line(format_args!("  dead_letter: stderr"))?,
        }
    }
    for r in &config.reporters {
        out.line(format_args!("reporter {}:", r.name))?;
        out.line(format_args!(
            "  reads: [{}] -> signals {}",
            r.topics.join(", "),
            r.signals_topic
        ))?;
        let rules: Vec<&str> = r.rules.iter().map(|rule| rule.name.as_str()).collect();
        out.line(format_args!("  rules: [{}]", rules.join(", ")))?;
        let mode = if r.dry_run {
            "dry-run (nothing is sent)".to_string()
        } else {
            match &r.ipinsights {
                Some(i) => format!("sending to ipinsights at {}", redact_url(&i.base_url)),
                None => "sending to ipinsights".to_string(),
            }
        };
        out.line(format_args!("  mode: {mode}"))?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One provider for `check`; a base URL is printed without userinfo or query values.
fn describe_provider(p: &config::ProviderConfig) -> String {
    use config::ProviderConfig as P;
    let url = |u: &Option<String>| {
        u.as_deref()
            .map_or_else(|| "(production)".into(), redact_url)
    };
    match p {
        P::Mmdb(m) => format!(
            "mmdb {} (reload every {:?})",
            m.path.display(),
            m.reload_interval
        ),
        P::Openipapi(c) => format!("openipapi {} plan {:?}", url(&c.base_url), c.plan),
        P::Ipinsights(c) | P::Iptrust(c) | P::Ipgeolocation(c) | P::CloudflareRadar(c) => {
            format!("{} {}", p.kind(), url(&c.base_url))
        }
    }
}

fn describe_source(s: &SourceConfig) -> String {
    match s {
        SourceConfig::Kafka(k) => format!(
            "kafka {} topics [{}] group {} format {:?}",
            k.brokers,
            k.topics.join(", "),
            k.group_id,
            k.format
        ),
        SourceConfig::File(f) => format!("file {} format {:?}", f.path.display(), f.format),
        SourceConfig::Stdin(s) => format!("stdin format {:?}", s.format),
    }
}

fn describe_sink(s: &SinkConfig) -> String {
    match s {
        SinkConfig::Kafka(k) => {
            format!("kafka topic {} partitioning {:?}", k.topic, k.partitioning)
        }
        SinkConfig::File(f) => format!("file {}", f.path.display()),
        SinkConfig::Stdout(_) => "stdout".to_string(),
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

async fn run(path: &Path) -> Result<ExitCode> {
    let config = load(path)?;
    run_pipelines(config, true).await
}

async fn run_pipelines(config: Config, until_signal: bool) -> Result<ExitCode> {
    let stop = async {
        if until_signal {
            termination().await
        } else {
            std::future::pending().await
        }
    };
    // `ipenrich enrich ... | head -1`: a reader that has all it wanted is no failure.
    let closed_output_is_clean = !until_signal;
    Ok(
        match ipenrich::supervisor::run(config, stop, closed_output_is_clean).await? {
            ipenrich::supervisor::Verdict::Clean => ExitCode::SUCCESS,
            ipenrich::supervisor::Verdict::Failed => ExitCode::FAILURE,
        },
    )
}

async fn enrich(
    config: Option<&Path>,
    name: Option<&str>,
    input: Option<&Path>,
    output: Option<&Path>,
) -> Result<ExitCode> {
    let mut p: PipelineConfig = match config {
        None => pipeline::default_config(input, output),
        Some(path) => select_pipeline(path, name)?,
    };
    if let Some(input) = input {
        let format = p.source.format();
        p.source = if input == Path::new("-") {
            SourceConfig::Stdin(config::StdinSourceConfig { format })
        } else {
            SourceConfig::File(config::FileSourceConfig {
                path: input.into(),
                format,
            })
        };
    } else if matches!(p.source, SourceConfig::Kafka(_)) {
        p.source = SourceConfig::Stdin(config::StdinSourceConfig {
            format: p.source.format(),
        });
    }
    if let Some(output) = output {
        p.sink = SinkConfig::File(config::FileSinkConfig {
            path: output.into(),
        });
    } else if matches!(p.sink, SinkConfig::Kafka(_)) {
        p.sink = SinkConfig::Stdout(config::StdoutSinkConfig {});
    }
    if matches!(p.dead_letter, Some(config::DeadLetterConfig::Kafka(_))) {
        p.dead_letter = None;
    }
    run_pipelines(
        Config {
            http: None,
            pipelines: vec![p],
            reporters: Vec::new(),
        },
        false,
    )
    .await
}
