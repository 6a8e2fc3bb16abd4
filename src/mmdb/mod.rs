//! MaxMind DB files, read and written: the `mmdb` room.
//!
//! Contract: [`reader`] loads a file only after the full verifier passed, and a reload
//! never replaces a good database with a broken one; [`writer`] writes files that are a
//! function of their content only (byte-identical rebuilds). The MMDB lookup provider
//! (`lookup::providers::mmdb`) is a thin adapter over [`DatabaseFile`]; the simulator
//! builds its downloadable databases with [`writer`]; `ipenrich mmdb build` is
//! [`build()`]; `ipenrich mmdb fetch` is [`fetch`] (conditional download), with
//! [`archive`] (extraction from MaxMind's `.tar.gz`) and [`install`] (atomic replace
//! of a verified file). Nothing here depends on the simulator.

pub mod archive;
pub mod build;
pub mod fetch;
pub mod install;
pub mod reader;
pub mod writer;

pub use build::{build, BuildError};
pub use reader::{Database, DatabaseFile, MmdbError};
