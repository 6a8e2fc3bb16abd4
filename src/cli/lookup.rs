//! `ipenrich lookup`: what the configured providers say about addresses.
//!
//! Contract: every address is classified; only public ones are sent to the providers,
//! and none once the reader of the output has gone away (no provider quota is spent on
//! answers nobody reads). An argument that is not an IP address is reported on stderr
//! and makes the verdict [`Exit::Failure`], after the other addresses were answered.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use super::{select_pipeline, CliError, Exit, Output};
use crate::lookup::build::{chain, SharedProviders};
use crate::lookup::Chain;

/// How answers are printed: one JSON object per line, or a fixed-width table with a
/// header line. (The variants carry no `///` docs: clap would print them in `--help`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Table,
}

/// Looks `ips` up with the providers of pipeline `name` (default: the first) of
/// `config`, or only classifies them without a config.
pub async fn lookup(
    ips: &[String],
    config: Option<&Path>,
    name: Option<&str>,
    format: Format,
    out: &mut Output<impl Write>,
) -> Result<Exit, CliError> {
    let chain = match config {
        None => Chain::default(),
        Some(path) => {
            let p = select_pipeline(path, name)?;
            let shared = SharedProviders::new(prometheus::Registry::new());
            chain(&p.providers, &shared).map_err(|errors| {
                CliError::Providers(
                    errors
                        .iter()
                        .map(|e| format!("{}: pipeline {}: {e}", path.display(), p.name))
                        .collect(),
                )
            })?
        }
    };
    let mut failed = false;
    if matches!(format, Format::Table) {
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
        let Ok(ip) = text.parse::<IpAddr>() else {
            eprintln!("ipenrich: {text:?} is not an IP address");
            failed = true;
            continue;
        };
        let ip = ip.to_canonical();
        let class = crate::extract::classify(ip);
        let resolved = if class.is_public() && !chain.is_empty() {
            Some(chain.lookup(ip).await)
        } else {
            None
        };
        match format {
            Format::Json => {
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
            Format::Table => {
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
    Ok(Exit::from_ok(!failed))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn ips(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn lines(out: Output<Vec<u8>>) -> Vec<String> {
        String::from_utf8(out.into_inner())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn without_a_config_addresses_are_only_classified() {
        let mut out = Output::new(Vec::new());
        let exit = lookup(&ips(&["10.0.0.1"]), None, None, Format::Json, &mut out)
            .await
            .unwrap();
        assert_eq!(exit, Exit::Success);
        assert_eq!(lines(out), [r#"{"ip":"10.0.0.1","class":"private"}"#]);
    }

    #[tokio::test]
    async fn a_bad_address_fails_after_the_others_are_answered() {
        let mut out = Output::new(Vec::new());
        let exit = lookup(
            &ips(&["nope", "::ffff:127.0.0.1"]),
            None,
            None,
            Format::Table,
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(exit, Exit::Failure);
        let lines = lines(out);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("ip "), "{lines:?}");
        // Mapped IPv4 is answered as IPv4.
        assert!(lines[1].starts_with("127.0.0.1 "), "{lines:?}");
    }

    #[tokio::test]
    async fn the_demo_database_answers_public_addresses() {
        let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines/demo.yaml");
        let mut out = Output::new(Vec::new());
        let exit = lookup(
            &ips(&["185.220.101.1"]),
            Some(&config),
            None,
            Format::Json,
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(exit, Exit::Success);
        let line: serde_json::Value = serde_json::from_str(&lines(out)[0]).unwrap();
        assert_eq!(line["class"], "public");
        assert_eq!(line["asn"]["number"], 60729);
    }

    #[tokio::test]
    async fn an_unknown_pipeline_is_an_error() {
        let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines/demo.yaml");
        let mut out = Output::new(Vec::new());
        let err = lookup(
            &ips(&["1.1.1.1"]),
            Some(&config),
            Some("nope"),
            Format::Json,
            &mut out,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CliError::NoSuchPipeline { .. }), "{err:?}");
    }
}
