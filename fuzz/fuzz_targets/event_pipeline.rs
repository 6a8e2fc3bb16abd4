//! decode -> extract -> render, in every input and output format, with fake lookup
//! answers. Input: one knob byte (extraction rules, output field name, address cap;
//! see `checks/pipeline.rs`), then the event bytes. Property: `checks/pipeline.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/pipeline.rs"]
mod pipeline;

fuzz_target!(|data: &[u8]| {
    if let [knobs, event @ ..] = data {
        pipeline::check_event(event, *knobs);
    }
});
