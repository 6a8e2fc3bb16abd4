//! Extraction: pure functions from JSON and text to classified IP addresses; no IO.

pub mod class;
pub mod text;
