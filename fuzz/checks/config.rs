//! The config-loading property, shared by the `config_load` fuzz target and
//! `tests/properties.rs`.
//!
//! For any text and any environment: `load_str` never panics; a refusal lists at
//! least one problem, each with a line inside the file (the expansion of `${VAR}`
//! keeps lines, so parser locations stay right) and a message that names the file;
//! an accepted config has no problem left for `validate`, and each of its pipelines
//! can enrich a sample event with its own extraction rules, format, size limit and
//! output settings (the event-path property of `pipeline.rs`).

use ipenrich::config::{load_str, validate, ConfigError};
use ipenrich::event::decode;
use ipenrich::extract::Extractor;
use ipenrich::merge::{render, Enrichment};

use super::pipeline::{check_rendered, fake_lookups};

/// File name given to `load_str`; every error must start with it.
pub const FILE: &str = "fuzz.yaml";

/// Sample events each accepted pipeline must enrich.
const EVENTS: [&[u8]; 3] = [
    br#"{"rule":{"level":5},"agent":{"ip":"192.168.1.20"},"data":{"srcip":"162.142.125.11"},"source":{"ip":"8.8.8.8"},"full_log":"sshd[912]: Invalid user test from 162.142.125.11 port 41022"}"#,
    b"Nov 23 04:12:01 bastion sshd[4121]: Failed password for root from 2a01:4f8:c17:1234::2 port 40022 ssh2",
    br#"{"event_type":"alert","src_ip":"45.155.205.233","dest_ip":"10.0.0.5","dest_port":3389}"#,
];

/// What `${NAME}` resolves to: 0 unset, 1 the name itself, 2 empty (so the default
/// applies), 3 a value with a newline (refused), 4 a broker address.
pub fn env(mode: u8, name: &str) -> Option<String> {
    match mode % 5 {
        0 => None,
        1 => Some(name.to_string()),
        2 => Some(String::new()),
        3 => Some("a\nb".to_string()),
        _ => Some("127.0.0.1:9092".to_string()),
    }
}

/// Checks the property for one config text; panics when it fails.
pub fn check_config(text: &str, env_mode: u8) {
    match load_str(text, FILE, |name| env(env_mode, name)) {
        Err(ConfigError::Read { .. }) => panic!("load_str reported a read error"),
        Err(error @ ConfigError::Invalid { .. }) => {
            let shown = error.to_string();
            let ConfigError::Invalid { file, problems } = error else {
                unreachable!()
            };
            assert_eq!(file, FILE);
            assert!(!problems.is_empty(), "a refusal without a problem");
            // libyaml puts the end of a stream whose last line is unterminated on
            // the next line: one past the last line break, plus one.
            let end = line_breaks(text) + 2;
            for p in &problems {
                if let Some(line) = p.line {
                    assert!(
                        (1..=end).contains(&line),
                        "problem {p:?} is located at line {line}, past the end of the file (line {end})"
                    );
                }
            }
            assert!(
                shown.starts_with(FILE),
                "error does not name the file: {shown}"
            );
        }
        Ok(config) => {
            let left = validate(&config);
            assert!(left.is_empty(), "accepted config has problems: {left:?}");
            for p in &config.pipelines {
                let extractor = Extractor::new(&p.extract, p.limits.max_ips_per_event);
                for event in EVENTS {
                    let Ok(decoded) = decode(event, p.source.format(), p.max_event_bytes()) else {
                        continue;
                    };
                    let extraction = extractor.extract(&decoded);
                    let lookups = fake_lookups(&extraction, 0);
                    let enrichment = Enrichment {
                        extraction: &extraction,
                        lookups: &lookups,
                    };
                    let rendered = render(&decoded, &enrichment, &p.output).line;
                    if let Err(why) = check_rendered(&decoded, &p.output, &rendered) {
                        panic!("pipeline {:?}: {why}", p.name);
                    }
                }
            }
        }
    }
}

/// Line breaks as YAML counts them (LF, CR, and libyaml's NEL, LS, PS); CRLF is
/// counted twice, which only loosens the bound.
fn line_breaks(text: &str) -> usize {
    text.chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count()
}
