//! `ipenrich mmdb build`: an ASN + country database from CSV lines
//! `network,asn,organization,country` (the format of `samples/demo-asn.csv`).
//!
//! Contract: the output file is written only when the whole CSV was accepted; every
//! error names the file it is about.

use std::path::{Path, PathBuf};

use super::writer::{asn_db_from_csv, MmdbWriteError};

/// Why `mmdb build` failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The CSV file could not be read.
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The CSV is not a valid database description.
    #[error("building from {}", path.display())]
    Build {
        path: PathBuf,
        #[source]
        source: MmdbWriteError,
    },
    /// The database could not be written.
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: MmdbWriteError,
    },
}

/// Reads `csv`, builds the database and writes it to `out`.
pub fn build(csv: &Path, out: &Path) -> Result<(), BuildError> {
    let text = std::fs::read_to_string(csv).map_err(|source| BuildError::Read {
        path: csv.to_owned(),
        source,
    })?;
    let writer = asn_db_from_csv(&text).map_err(|source| BuildError::Build {
        path: csv.to_owned(),
        source,
    })?;
    writer.write_to(out).map_err(|source| BuildError::Write {
        path: out.to_owned(),
        source,
    })
}
