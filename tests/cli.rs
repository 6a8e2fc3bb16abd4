//! The `ipenrich` binary from the outside: the README's run command, `check`,
//! and bad input through `enrich` (nothing lost, every reason recorded).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8(bytes.to_vec())
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not json ({e}): {l}")))
        .collect()
}

#[test]
fn readme_run_command_prints_enriched_events_with_asn() {
    let out = Command::new(bin())
        .args(["enrich", "--config", "pipelines/demo.yaml"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = lines(&out.stdout);
    let input = std::fs::read_to_string(root().join("samples/events.log")).unwrap();
    assert_eq!(
        events.len(),
        input.lines().filter(|l| !l.trim().is_empty()).count(),
        "one output per input"
    );
    let sshd = &events[0];
    assert!(
        sshd["message"].as_str().unwrap().contains("sshd[4121]"),
        "input order kept"
    );
    assert_eq!(sshd["enrichment"]["ips"][0]["ip"], "218.92.0.112");
    assert_eq!(sshd["enrichment"]["ips"][0]["asn"]["number"], 4134);
    let wazuh = events
        .iter()
        .find(|e| e.get("rule").is_some())
        .expect("the wazuh alert");
    assert_eq!(
        wazuh["rule"]["level"], 10,
        "the event's own fields are kept"
    );
    let ips = wazuh["enrichment"]["ips"].as_array().unwrap();
    let censys = ips
        .iter()
        .find(|i| i["ip"] == "162.142.125.11")
        .expect("srcip found");
    assert_eq!(censys["asn"]["number"], 398324);
    let agent = ips
        .iter()
        .find(|i| i["ip"] == "192.168.1.20")
        .expect("agent ip listed");
    assert_eq!(agent["class"], "private");
    assert!(agent.get("asn").is_none());
}

#[test]
fn enrich_without_config_reads_stdin_and_scans_everything() {
    let mut child = Command::new(bin())
        .args(["enrich", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"a\":{\"b\":[\"x 8.8.8.8\"]}}\nplain 10.1.1.1 and [2001:db8::1]:443\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let events = lines(&out.stdout);
    assert_eq!(events[0]["enrichment"]["ips"][0]["field"], "a.b");
    assert_eq!(
        events[0]["enrichment"]["status"], "skipped",
        "no provider configured"
    );
    assert_eq!(events[1]["message"], "plain 10.1.1.1 and [2001:db8::1]:443");
    let classes: Vec<&str> = events[1]["enrichment"]["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["private", "documentation"]);
}

#[test]
fn every_example_pipeline_passes_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = Command::new(bin())
            .arg("check")
            .arg("--config")
            .arg(&path)
            .current_dir(root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 5, "pipelines/ holds the example configs");
}

#[test]
fn broken_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "broken.yaml",
        "pipelines:\n  - name: x\n    source:\n      stdin: {}\n    extract:\n      scan_all_strings: true\n    sink:\n      stdout: {}\n    limits:\n      max_ips_per_evnt: 3\n",
    );
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:10: key `pipelines[0].limits", path.display()))
            && err.contains("max_ips_per_evnt"),
        "{err}"
    );
    // `run` refuses it at start-up with the same message.
    let out = Command::new(bin())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":10: key `pipelines[0].limits"));
}

#[test]
fn bad_input_lands_in_the_dead_letter_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let many: String = (0..10_000)
        .map(|i| format!("9.{}.{}.{} ", i / 65536, i / 256 % 256, i % 256 + 1))
        .collect();
    let mut f = std::fs::File::create(&input).unwrap();
    f.write_all(b"{\"n\":1,\"ip\":\"8.8.8.8\"}\n").unwrap();
    f.write_all(b"{\"n\":2, not json\n").unwrap();
    f.write_all(b"{\"n\":3,\"x\":\"\xc3\x28\"}\n").unwrap();
    f.write_all(format!("{{\"n\":4,\"pad\":\"{}\"}}\n", "y".repeat(10 * 1024 * 1024)).as_bytes())
        .unwrap();
    f.write_all(
        format!(
            "{{\"n\":5,\"deep\":{}{}}}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
        .as_bytes(),
    )
    .unwrap();
    f.write_all(format!("{{\"n\":6,\"msg\":\"{many}\"}}\n").as_bytes())
        .unwrap();
    f.write_all(b"\"just a string\"\n").unwrap();
    f.write_all(b"{\"n\":8,\"ip\":\"1.1.1.1\"}\n").unwrap();
    drop(f);
    let (out_path, dlq_path) = (dir.path().join("out.jsonl"), dir.path().join("dlq.jsonl"));
    let cfg = write_config(
        dir.path(),
        "p.yaml",
        &format!(
            "pipelines:\n  - name: bad\n    source:\n      file:\n        path: {}\n        format: json\n    extract:\n      scan_all_strings: true\n    providers:\n      - mmdb:\n          path: {}\n    sink:\n      file:\n        path: {}\n    dead_letter:\n      file:\n        path: {}\n    limits:\n      max_event_bytes: 1048576\n      max_ips_per_event: 100\n",
            input.display(),
            root().join("samples/demo-asn.mmdb").display(),
            out_path.display(),
            dlq_path.display()
        ),
    );
    let run = Command::new(bin())
        .args(["enrich", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = lines(&std::fs::read(&out_path).unwrap());
    let dead = lines(&std::fs::read(&dlq_path).unwrap());
    assert_eq!(out.len() + dead.len(), 8, "in = out + dead letter");
    let ns: Vec<u64> = out.iter().map(|e| e["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, [1, 6, 8], "good events in input order");
    assert_eq!(out[0]["enrichment"]["ips"][0]["asn"]["number"], 15169);
    assert_eq!(out[1]["enrichment"]["capped"], true, "the cap is reported");
    assert_eq!(out[1]["enrichment"]["ips"].as_array().unwrap().len(), 100);
    let kinds: Vec<&str> = dead.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "invalid_json",
            "invalid_utf8",
            "too_large",
            "invalid_json",
            "not_an_object"
        ]
    );
    for d in &dead {
        assert!(!d["error"].as_str().unwrap().is_empty());
        assert!(d["source"].as_str().unwrap().contains("in.jsonl:"), "{d}");
    }
    assert!(
        dead[2]["event"].as_str().unwrap().len() > 10 * 1024 * 1024,
        "the 10 MB event is kept whole"
    );
    assert!(
        dead[1].get("event_base64").is_some(),
        "invalid utf-8 is kept as base64"
    );
    assert!(dead[3]["error"]
        .as_str()
        .unwrap()
        .contains("recursion limit"));
}

/// Issue 3: `ipenrich simulate` + `ipenrich lookup IP --config pipelines/simulated-providers.yaml`,
/// exactly as README shows (the port comes from SIM_URL so tests do not collide).
#[test]
fn simulate_then_lookup_as_the_readme_shows() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let sim = std::process::Command::new(bin())
        .args(["simulate", "--listen", &listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Proc(sim);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "simulator did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = Command::new(bin())
        .args([
            "lookup",
            "185.220.101.45",
            "10.0.0.1",
            "--config",
            "pipelines/simulated-providers.yaml",
        ])
        .env("SIM_URL", format!("http://{listen}"))
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = lines(&out.stdout);
    assert_eq!(answers[0]["ip"], "185.220.101.45");
    assert_eq!(answers[0]["status"], "ok");
    assert_eq!(
        answers[0]["asn"]["number"], 60729,
        "asn from the demo database"
    );
    assert!(
        answers[0]["threat"]["score"].is_u64(),
        "threat from the simulated APIs: {}",
        answers[0]
    );
    assert!(answers[0]["geo"]["country_code"].is_string());
    assert_eq!(
        answers[1],
        serde_json::json!({"ip": "10.0.0.1", "class": "private"}),
        "private: never asked"
    );
}

#[test]
fn missing_api_key_fails_at_start_naming_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "keys.yaml",
        "pipelines:\n  - name: k\n    source:\n      stdin: {}\n    extract:\n      scan_all_strings: true\n    providers:\n      - ipinsights:\n          api_key:\n            env: IPENRICH_TEST_NO_SUCH_KEY\n    sink:\n      stdout: {}\n",
    );
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env_remove("IPENRICH_TEST_NO_SUCH_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("providers[0].ipinsights") && err.contains("IPENRICH_TEST_NO_SUCH_KEY"),
        "{err}"
    );
    let out = Command::new(bin())
        .args(["enrich", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "run refuses to start");
}

const LEAKED: &str = "sk-live-9d7c1e55aa30";

/// Issue 8 item 11: `api_key: ${VAR}` (a natural guess) put the key into the YAML
/// text, and the error quoted it: "unknown variant `<the key>`".
#[test]
fn an_inline_api_key_is_refused_without_being_printed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "k.yaml",
        "pipelines:\n  - name: k\n    source:\n      stdin: {}\n    extract:\n      scan_all_strings: true\n    providers:\n      - ipinsights:\n          api_key: ${IPENRICH_TEST_INLINE_KEY}\n    sink:\n      stdout: {}\n",
    );
    for command in ["check", "run", "enrich"] {
        let out = Command::new(bin())
            .args([command, "--config"])
            .arg(&path)
            .env("IPENRICH_TEST_INLINE_KEY", LEAKED)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{command}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("sk-live"), "{command}: {all}");
        assert!(
            all.contains(":9: key `pipelines[0].providers[0].ipinsights.api_key`")
                && all.contains("inline keys are not accepted"),
            "{command}: {all}"
        );
    }
}

/// Issue 8 item 12: a database whose metadata `description` is an empty map (what
/// Python's `mmdb-writer` writes by default) was refused.
#[test]
fn lookup_reads_an_mmdb_with_an_empty_description() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("plain.mmdb");
    let mut writer = ipenrich::mmdb::writer::asn_db_from_csv(
        "network,asn,organization,country\n8.8.8.0/24,15169,Google LLC,US\n",
    )
    .unwrap();
    writer.clear_description();
    writer.write_to(&db).unwrap();
    let path = write_config(
        dir.path(),
        "p.yaml",
        &format!(
            "pipelines:\n  - name: p\n    source:\n      stdin: {{}}\n    extract:\n      scan_all_strings: true\n    providers:\n      - mmdb:\n          path: {}\n    sink:\n      stdout: {{}}\n",
            db.display()
        ),
    );
    let out = Command::new(bin())
        .args(["lookup", "8.8.8.8", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(&out.stdout)[0]["asn"]["number"], 15169);
}

/// Issue 8 item 12: CLI errors lost their `#[source]`: "cannot stat mmdb file X"
/// without "No such file or directory".
#[test]
fn a_missing_mmdb_file_is_reported_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mmdb");
    let path = write_config(
        dir.path(),
        "m.yaml",
        &format!(
            "pipelines:\n  - name: m\n    source:\n      stdin: {{}}\n    extract:\n      scan_all_strings: true\n    providers:\n      - mmdb:\n          path: {}\n    sink:\n      stdout: {{}}\n",
            missing.display()
        ),
    );
    let cause = "No such file or directory";
    for args in [
        vec!["check", "--config"],
        vec!["enrich", "--config"],
        vec!["lookup", "8.8.8.8", "--config"],
    ] {
        let out = Command::new(bin())
            .args(&args)
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("cannot stat mmdb file {}", missing.display()))
                && err.contains(cause),
            "{args:?}: {err}"
        );
    }
    // So does a missing config (its message no longer repeats the cause itself).
    for command in ["check", "run"] {
        let out = Command::new(bin())
            .args([command, "--config"])
            .arg(dir.path().join("nope.yaml"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.matches(cause).count(),
            1,
            "{command}: the cause once: {err}"
        );
    }
    // A file that is there but is no database says why, too.
    std::fs::write(&missing, b"not a database").unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot load mmdb file") && err.contains("metadata"),
        "{err}"
    );
}

/// Issue 8 item 11: `check` printed a `base_url` holding credentials, or an
/// `?apiKey=` query, as it was.
#[test]
fn check_prints_base_urls_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "u.yaml",
        "pipelines:\n  - name: u\n    source:\n      stdin: {}\n    extract:\n      scan_all_strings: true\n    providers:\n      - ipinsights:\n          base_url: https://admin:hunter2@127.0.0.1:9/ipinsights\n          api_key: {env: IPENRICH_TEST_URL_KEY}\n      - ipgeolocation:\n          base_url: https://127.0.0.1:9/ipgeo?apiKey=topsecret&x=1\n          api_key: {env: IPENRICH_TEST_URL_KEY}\n    sink:\n      stdout: {}\n",
    );
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .env("IPENRICH_TEST_URL_KEY", LEAKED)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for secret in ["hunter2", "admin", "topsecret", "sk-live"] {
        assert!(!all.contains(secret), "{secret}: {all}");
    }
    assert!(
        stdout.contains("ipinsights https://***@127.0.0.1:9/ipinsights"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ipgeolocation https://127.0.0.1:9/ipgeo?apiKey=***&x=***"),
        "{stdout}"
    );
}

/// Runs `ipenrich <args>` with its standard output closed before it writes a byte,
/// as `ipenrich check ... | head -0` does. Returns the exit code and stderr.
fn with_stdout_closed(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child holds only the write end: from here on every write to it is EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 8 item 10c: `ipenrich check ... | head -1` panicked in `println!` on the
/// closed pipe (exit 101, "failed printing to stdout" and a backtrace on stderr);
/// `enrich` failed with "ipenrich: ... Broken pipe" and exit 1.
#[test]
fn a_closed_stdout_ends_check_and_lookup_quietly() {
    for args in [
        &["check", "--config", "pipelines/demo.yaml"][..],
        &["lookup", "8.8.8.8", "10.0.0.1"][..],
        &["lookup", "8.8.8.8", "--format", "table"][..],
        &[
            "lookup",
            "8.8.8.8",
            "--config",
            "pipelines/demo.yaml",
            "--format",
            "table",
        ][..],
        &["enrich", "--config", "pipelines/demo.yaml"][..],
    ] {
        let (code, stderr) = with_stdout_closed(args);
        // Log lines start with a timestamp; an error printed by `main` with this.
        let error_printed = stderr.lines().any(|l| l.starts_with("ipenrich: "));
        assert!(
            !stderr.contains("panicked") && !error_printed,
            "{args:?}: {stderr}"
        );
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
    }
    // The exit code still tells whether the config is valid.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mmdb");
    let path = write_config(
        dir.path(),
        "m.yaml",
        &format!(
            "pipelines:\n  - name: m\n    source:\n      stdin: {{}}\n    extract:\n      scan_all_strings: true\n    providers:\n      - mmdb:\n          path: {}\n    sink:\n      stdout: {{}}\n",
            missing.display()
        ),
    );
    let (code, stderr) = with_stdout_closed(&["check", "--config", path.to_str().unwrap()]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(1), "{stderr}");
}

/// What `ipenrich <args>` writes to its standard error when that is a terminal: a
/// pseudo-terminal whose other end this test reads. Standard output goes nowhere.
fn stderr_on_a_terminal(args: &[&str], env: &[(&str, &str)], remove: &[&str]) -> String {
    use std::io::Read;
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("a pseudo-terminal");
    let mut command = Command::new(bin());
    command
        .args(args)
        .current_dir(root())
        .env("TERM", "xterm")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(pty.slave));
    for var in remove {
        command.env_remove(var);
    }
    let mut child = command.spawn().unwrap();
    // The child holds the only other copy of the terminal's end: once it exits, reads
    // end (EIO on Linux) instead of blocking.
    drop(command);
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let status = child.wait().unwrap();
    let seen = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(status.success(), "{args:?}: {seen}");
    seen
}

/// `enrich` over a file draws its progress bar only when stderr is a terminal: the
/// same run with stderr on a pipe carries no trace of it.
#[test]
fn the_progress_bar_is_drawn_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let args = [
        "enrich",
        "--input",
        "samples/events.log",
        "--output",
        output.to_str().unwrap(),
    ];
    let terminal = stderr_on_a_terminal(&args, &[], &[]);
    assert!(
        terminal.contains("events/s"),
        "no bar on a terminal: {terminal:?}"
    );

    let piped = Command::new(bin())
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(stderr.contains("pipeline finished"), "{stderr}");
    assert!(
        !stderr.contains("events/s") && !stderr.contains('\r'),
        "progress drawn into a pipe: {stderr:?}"
    );
}

/// Logs carry colour codes only on a terminal, and not there either with NO_COLOR.
#[test]
fn logs_have_no_colour_codes_off_a_terminal_or_with_no_color() {
    // A warning: the input file does not exist, so the run finishes with failures.
    let out = Command::new(bin())
        .args(["enrich", "--input", "/nonexistent/ipenrich/events.log"])
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("finished with failures"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes in a pipe: {stderr:?}"
    );

    // Standard input has no progress bar: every escape code on the terminal is a colour.
    let args = ["enrich", "--input", "-"];
    let coloured = stderr_on_a_terminal(&args, &[], &["NO_COLOR"]);
    assert!(
        coloured.contains("\u{1b}["),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = stderr_on_a_terminal(&args, &[("NO_COLOR", "1")], &[]);
    assert!(plain.contains("pipeline finished"), "{plain:?}");
    assert!(
        !plain.contains('\u{1b}'),
        "colour despite NO_COLOR: {plain:?}"
    );
}

/// `--output FILE` writes the file afresh; `--append` adds to it.
#[test]
fn output_truncates_and_append_appends() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    std::fs::write(&input, "{\"src\":\"10.1.2.3\"}\n{\"src\":\"8.8.8.8\"}\n").unwrap();
    std::fs::write(&output, "stale line\n").unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(bin())
            .args(["enrich", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&output).unwrap()
    };
    let once = run(&[]);
    assert_eq!(once.lines().count(), 2, "{once}");
    assert!(!once.contains("stale line"), "{once}");
    assert_eq!(run(&[]), once, "a second run replaces, not appends");
    assert_eq!(run(&["--append"]), format!("{once}{once}"));

    let out = Command::new(bin())
        .args(["enrich", "--append"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--append needs --output");
}

/// A config's file sink appends by default and truncates with `append: false`.
#[test]
fn a_config_file_sink_appends_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    std::fs::write(&input, "{\"src\":\"10.1.2.3\"}\n").unwrap();
    let config = |append: &str| {
        write_config(
            dir.path(),
            "c.yaml",
            &format!(
                "pipelines:\n  - name: f\n    source:\n      file:\n        path: {}\n    extract:\n      scan_all_strings: true\n    sink:\n      file:\n        path: {}\n{append}",
                input.display(),
                output.display()
            ),
        )
    };
    let run = |config: &Path| {
        let out = Command::new(bin())
            .args(["enrich", "--config"])
            .arg(config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&output).unwrap().lines().count()
    };
    let appending = config("");
    assert_eq!(run(&appending), 1);
    assert_eq!(run(&appending), 2);
    let truncating = config("        append: false\n");
    assert_eq!(run(&truncating), 1);
}

/// `check` reads its config from IPENRICH_CONFIG, as `run` does.
#[test]
fn check_takes_the_config_from_ipenrich_config() {
    let out = Command::new(bin())
        .arg("check")
        .env("IPENRICH_CONFIG", "pipelines/demo.yaml")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pipeline demo:"));
    let out = Command::new(bin())
        .arg("check")
        .env("IPENRICH_CONFIG", "/nonexistent/ipenrich.yaml")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the variable's file is the one checked"
    );
}
