//! Arbitrary bytes as the MMDB provider's database file: open, look up, reload.
//! Input: the file. Property: `checks/mmdb.rs`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../checks/mmdb.rs"]
mod mmdb;

/// One file per process (fork mode runs several).
static PATH: OnceLock<PathBuf> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let path = PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("ipenrich-fuzz-{}.mmdb", std::process::id()))
    });
    mmdb::check_mmdb(data, path);
});
