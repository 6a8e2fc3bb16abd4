//! The layout rules of issue 9, checked on the source tree so that they hold after
//! every change, not only on the day they were written:
//! - `docs/ARCHITECTURE.md` names every room under `src/`, and every room it names exists;
//! - no production room imports the simulator (only `cli/`, for `ipenrich simulate`);
//! - `config/` is a leaf: it imports no other room;
//! - no function in `src/` is longer than 100 lines (tables of data excepted).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file below `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The rooms of `src/`: its files and folders, and the folders one level down
/// (`lookup/providers/`), spelled as the architecture table spells them.
fn rooms_in_src() -> BTreeSet<String> {
    let src = root().join("src");
    let mut rooms = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            rooms.insert(format!("{name}/"));
            for sub in std::fs::read_dir(&path).unwrap() {
                let sub = sub.unwrap().path();
                if sub.is_dir() {
                    let leaf = sub.file_name().unwrap().to_string_lossy().to_string();
                    rooms.insert(format!("{name}/{leaf}/"));
                }
            }
        } else if name.ends_with(".rs") {
            rooms.insert(name);
        }
    }
    rooms
}

/// The first cell of each row of the room table: `| \`name\` | ... |`.
fn rooms_in_doc() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |").map(|(name, _)| name.to_string()))
        .collect()
}

#[test]
fn architecture_names_every_room_and_only_rooms_that_exist() {
    let (src, doc) = (rooms_in_src(), rooms_in_doc());
    let missing: Vec<_> = src.difference(&doc).collect();
    let stale: Vec<_> = doc.difference(&src).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/ARCHITECTURE.md does not match src/: not named {missing:?}, named but absent {stale:?}"
    );
}

#[test]
fn no_production_room_imports_the_simulator() {
    let src = root().join("src");
    for file in rust_files(&src) {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .to_string();
        // The simulator itself, the crate root that declares it, and the commands
        // (`ipenrich simulate` and its error).
        if rel.starts_with("simulate/") || rel.starts_with("cli/") || rel == "lib.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("crate::simulate") && !text.contains("ipenrich::simulate"),
            "{rel} imports the simulator"
        );
    }
}

#[test]
fn config_imports_no_other_room() {
    let dir = root().join("src/config");
    for file in rust_files(&dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                assert!(
                    rest.starts_with("config"),
                    "{}:{} reaches outside config/: {line}",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}

/// A function starts at a line whose code begins with `fn`, `pub fn`, `async fn`
/// and the like and ends at the first later line that closes it at the same
/// indentation (rustfmt's layout).
#[test]
fn no_function_is_longer_than_100_lines() {
    let mut long = Vec::new();
    for file in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let is_fn = trimmed
                .split_whitespace()
                .take_while(|w| !w.starts_with("fn"))
                .all(|w| {
                    matches!(w, "pub" | "async" | "const" | "unsafe" | "extern")
                        || w.starts_with("pub(")
                })
                && trimmed.split_whitespace().any(|w| w == "fn")
                && !trimmed.ends_with(';');
            if !is_fn {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let close = format!("{}}}", " ".repeat(indent));
            if let Some(len) = lines[i..].iter().position(|l| *l == close) {
                if len + 1 > 100 {
                    long.push(format!(
                        "{}:{} ({} lines)",
                        file.strip_prefix(root()).unwrap().display(),
                        i + 1,
                        len + 1
                    ));
                }
            }
        }
    }
    assert!(long.is_empty(), "functions over 100 lines: {long:?}");
}
