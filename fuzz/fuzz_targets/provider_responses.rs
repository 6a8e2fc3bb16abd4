//! Every HTTP provider client against a stub that answers with the fuzz input.
//! Input: `[call, status_hi, status_lo, header_mask, header lines..., body]`
//! (`Canned::from_fuzz`). Property: `checks/providers.rs`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../checks/providers.rs"]
mod providers;

static HARNESS: OnceLock<providers::Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let harness = HARNESS.get_or_init(providers::Harness::start);
    if let Some((call, answer)) = providers::Canned::from_fuzz(data) {
        harness.check(call, answer);
    }
});
