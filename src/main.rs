//! The `ipenrich` command line: parse arguments, start telemetry, call the command in
//! [`ipenrich::cli`], map its verdict to the exit code. Errors are printed with their
//! whole cause chain on one line (`anyhow`'s `{:#}`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use ipenrich::cli::{self, lookup::Format as LookupFormat, Output};
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
    #[arg(long, global = true, value_enum, default_value = "text")]
    #[arg(env = "IPENRICH_LOG_FORMAT")]
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
        #[arg(long, short, env = "IPENRICH_CONFIG")]
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
        /// Output file, emptied first unless `--append`; `-` for stdout (default: the
        /// config's file/stdout sink, else stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Append to the `--output` file instead of emptying it first.
        #[arg(long, requires = "output")]
        append: bool,
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
    /// MaxMind DB files: build one from CSV, or fetch one from a provider.
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
    /// Downloads a database and replaces `--out` atomically once it verifies; keys
    /// from OPENIPAPI_API_KEY, or MAXMIND_ACCOUNT_ID and MAXMIND_LICENSE_KEY.
    Fetch {
        /// Where the database comes from.
        #[arg(long, value_enum)]
        source: ipenrich::mmdb::fetch::Source,
        /// Edition or source name: `asn`, `country`, ... (openipapi);
        /// `GeoLite2-ASN`, `GeoLite2-City`, ... (geolite2).
        #[arg(long)]
        edition: String,
        /// The database file to replace; its ETag is kept in `<out>.etag`.
        #[arg(long)]
        out: PathBuf,
        /// Fetch now and then at this interval until SIGTERM (`6h`, `1day`); without
        /// it, fetch once.
        #[arg(long, value_parser = cli::mmdb::parse_interval)]
        every: Option<std::time::Duration>,
        /// Base URL instead of the production API (a mirror, the simulator).
        #[arg(long)]
        url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let exit = tokio::runtime::Runtime::new()
        .context("cannot start the runtime")
        .and_then(|runtime| {
            let exit = runtime.block_on(dispatch(cli.command));
            // Kafka clients left behind (an unreachable broker) must not hold the exit.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            exit
        });
    exit.unwrap_or_else(|e| {
        eprintln!("ipenrich: {e:#}");
        cli::Exit::Failure
    })
    .into()
}

async fn dispatch(command: Command) -> Result<cli::Exit> {
    let mut out = Output::stdout();
    Ok(match command {
        Command::Run { config } => cli::run::run(&config).await?,
        Command::Check { config } => cli::check::check(&config, &mut out).await?,
        Command::Enrich {
            config,
            pipeline,
            input,
            output,
            append,
        } => {
            let (config, input, output) = (config.as_deref(), input.as_deref(), output.as_deref());
            cli::enrich::enrich(config, pipeline.as_deref(), input, output, append).await?
        }
        Command::Simulate { listen, config } => {
            cli::simulate::simulate(listen, config.as_deref(), &mut out).await?
        }
        Command::Lookup {
            ips,
            config,
            pipeline,
            format,
        } => {
            let (config, pipeline) = (config.as_deref(), pipeline.as_deref());
            cli::lookup::lookup(&ips, config, pipeline, format, &mut out).await?
        }
        Command::Mmdb {
            command: MmdbCommand::Build { csv, out },
        } => {
            ipenrich::mmdb::build(&csv, &out)?;
            eprintln!("wrote {}", out.display());
            cli::Exit::Success
        }
        Command::Mmdb {
            command:
                MmdbCommand::Fetch {
                    source,
                    edition,
                    out,
                    every,
                    url,
                },
        } => {
            let settings = ipenrich::mmdb::fetch::FetchSettings {
                source,
                edition,
                out,
                base: url,
            };
            cli::mmdb::fetch(settings, every).await?
        }
    })
}
