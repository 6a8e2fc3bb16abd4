//! Looking addresses up: the normalised record, the providers and the chain.

pub mod providers;
pub mod record;
