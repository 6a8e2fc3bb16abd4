//! The provider simulator and test fixtures.

pub mod mmdb_writer;
