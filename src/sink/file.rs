//! Line sinks: a file (appended) or standard output, one event per line.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::SinkError;

/// Writes newline-terminated records.
pub struct LineSink {
    out: BufWriter<Box<dyn Write + Send>>,
    name: String,
    /// The file itself, for `sync_data`; `None` for stdout and stderr, where a
    /// flush hands the bytes to the reading process and that is all there is.
    file: Option<std::fs::File>,
}

impl LineSink {
    /// Appends to a file, creating it; `-` is standard output.
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        if path == Path::new("-") {
            return Ok(Self::stdout());
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let sync_handle = file.try_clone().map_err(|source| SinkError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(LineSink {
            out: BufWriter::with_capacity(256 * 1024, Box::new(file)),
            name: path.display().to_string(),
            file: Some(sync_handle),
        })
    }

    /// Standard output.
    pub fn stdout() -> Self {
        LineSink {
            out: BufWriter::with_capacity(256 * 1024, Box::new(std::io::stdout())),
            name: "stdout".into(),
            file: None,
        }
    }

    /// Standard error (the dead letter of local runs without one configured).
    pub fn stderr() -> Self {
        LineSink {
            out: BufWriter::with_capacity(64 * 1024, Box::new(std::io::stderr())),
            name: "stderr".into(),
            file: None,
        }
    }

    /// Writes one record and a newline.
    pub fn write_line(&mut self, line: &[u8]) -> Result<(), SinkError> {
        self.out
            .write_all(line)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| SinkError::Io {
                path: self.name.clone(),
                source,
            })
    }

    /// Flushes buffered lines.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::Io {
            path: self.name.clone(),
            source,
        })
    }

    /// Flushes and, for a file, waits until the bytes are on disk (`sync_data`), so
    /// that a committed offset never points past output a crash could lose.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        self.flush()?;
        if let Some(file) = &self.file {
            file.sync_data().map_err(|source| SinkError::Io {
                path: self.name.clone(),
                source,
            })?;
        }
        Ok(())
    }
}
