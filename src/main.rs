//! The `ipenrich` command line: parse arguments, load config, start telemetry, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::{error, info};

use ipenrich::config::{self, Config, PipelineConfig, SinkConfig, SourceConfig};
use ipenrich::http::Readiness;
use ipenrich::metrics::Metrics;
use ipenrich::pipeline;
use ipenrich::telemetry::{self, LogFormat};

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
    /// Builds an MMDB (ASN + country) from CSV lines `network,asn,organization,country`.
    Mmdb {
        #[command(subcommand)]
        command: MmdbCommand,
    },
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
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ipenrich: {e:#}");
            ExitCode::FAILURE
        }
    }
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
        Command::Mmdb {
            command: MmdbCommand::Build { csv, out },
        } => {
            let text = std::fs::read_to_string(&csv)
                .with_context(|| format!("reading {}", csv.display()))?;
            let writer = ipenrich::simulate::mmdb_writer::asn_db_from_csv(&text)
                .with_context(|| format!("building from {}", csv.display()))?;
            writer
                .write_to(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: &Path) -> Result<Config> {
    Ok(config::load_file(path)?)
}

fn check(path: &Path) -> Result<ExitCode> {
    let config = match config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut ok = true;
    if let Some(http) = &config.http {
        println!("http: listen {}", http.listen);
    }
    for p in &config.pipelines {
        println!("pipeline {}:", p.name);
        println!("  source: {}", describe_source(&p.source));
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
        println!(
            "  extract: fields [{}], text [{}], scan_all_strings {}, max {} per event",
            fields.join(", "),
            p.extract.text.join(", "),
            p.extract.scan_all_strings,
            p.limits.max_ips_per_event
        );
        for provider in &p.providers {
            match provider {
                config::ProviderConfig::Mmdb(m) => {
                    match ipenrich::lookup::providers::mmdb::MmdbProvider::open(&m.path) {
                        Ok(_) => println!(
                            "  provider: mmdb {} (reload every {:?})",
                            m.path.display(),
                            m.reload_interval
                        ),
                        Err(e) => {
                            ok = false;
                            println!("  provider: mmdb {}: ERROR {e}", m.path.display());
                        }
                    }
                }
            }
        }
        println!("  output: {:?} into `{}`", p.output.format, p.output.field);
        println!("  sink: {}", describe_sink(&p.sink));
        match &p.dead_letter {
            Some(config::DeadLetterConfig::Kafka(d)) => {
                println!("  dead_letter: kafka topic {}", d.topic)
            }
            Some(config::DeadLetterConfig::File(f)) => {
                println!("  dead_letter: file {}", f.path.display())
            }
            None => println!("  dead_letter: stderr"),
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    readiness
        .expected
        .store(config.pipelines.len(), Ordering::Relaxed);
    if let Some(http) = &config.http {
        let (addr, _task) = ipenrich::http::serve(http.listen, metrics.clone(), readiness.clone())
            .await
            .with_context(|| format!("binding http listener {}", http.listen))?;
        info!(%addr, "serving /metrics and /health");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for p in config.pipelines {
        let m = metrics.pipeline(&p.name);
        let rx = stop_rx.clone();
        let readiness = readiness.clone();
        tasks.spawn(async move {
            readiness.running.fetch_add(1, Ordering::Relaxed);
            let result = pipeline::run(&p, m, rx).await;
            readiness.running.fetch_sub(1, Ordering::Relaxed);
            (p.name, result)
        });
    }
    let signal = async {
        if until_signal {
            termination().await
        } else {
            std::future::pending().await
        }
    };
    tokio::pin!(signal);
    let mut failed = false;
    loop {
        tokio::select! {
            _ = &mut signal, if !*stop_tx.borrow() => {
                info!("shutdown requested");
                let _ = stop_tx.send(true);
            }
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                match joined {
                    Ok((name, Ok(summary))) => info!(pipeline = %name, events_in = summary.events_in, events_out = summary.events_out, dead_letters = summary.dead_letters, timed_out = summary.timed_out, "pipeline finished"),
                    Ok((name, Err(e))) => {
                        error!(pipeline = %name, error = %e, "pipeline failed");
                        eprintln!("ipenrich: {e}");
                        failed = true;
                        let _ = stop_tx.send(true);
                    }
                    Err(e) => {
                        error!(error = %e, "pipeline task panicked");
                        failed = true;
                        let _ = stop_tx.send(true);
                    }
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn enrich(
    config: Option<&Path>,
    name: Option<&str>,
    input: Option<&Path>,
    output: Option<&Path>,
) -> Result<ExitCode> {
    let mut p: PipelineConfig = match config {
        None => pipeline::default_config(input, output),
        Some(path) => {
            let cfg = load(path)?;
            let mut pipelines = cfg.pipelines.into_iter();
            match name {
                None => pipelines.next().context("the config has no pipeline")?,
                Some(n) => match pipelines.find(|p| p.name == n) {
                    Some(p) => p,
                    None => bail!("{}: no pipeline named {n:?}", path.display()),
                },
            }
        }
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
        },
        false,
    )
    .await
}
