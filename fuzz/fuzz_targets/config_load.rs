//! Config text -> `load_str`, under each of the environments of `checks/config.rs`
//! (unset, echoing, empty, newline, broker), and accepted pipelines over sample
//! events. Input: the YAML text. Property: `checks/config.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Only the output check is used here.
#[allow(dead_code)]
#[path = "../checks/pipeline.rs"]
mod pipeline;

#[path = "../checks/config.rs"]
mod config;

fuzz_target!(|data: &[u8]| {
    // `load_file` reads with `read_to_string`: a config is UTF-8 or never parsed.
    if let Ok(text) = std::str::from_utf8(data) {
        for env_mode in 0..5 {
            config::check_config(text, env_mode);
        }
    }
});
