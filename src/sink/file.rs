//! Line sinks: a file or standard output, one event per line.
//!
//! A file is appended to or truncated when it is opened, as its config says
//! (`append`, default true: a restarted Kafka pipeline must not erase what it
//! delivered before). Standard error goes through [`crate::telemetry::Stderr`]
//! line by line, so dead letters printed there never cut through a progress bar.

use std::fs::OpenOptions;
use std::io::{BufWriter, LineWriter, Write};
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
    /// Opens a file, creating it, to append to it or after truncating it; `-` is
    /// standard output.
    pub fn open(path: &Path, append: bool) -> Result<Self, SinkError> {
        if path == Path::new("-") {
            return Ok(Self::stdout());
        }
        let mut options = OpenOptions::new();
        options.create(true);
        if append {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        let file = options.open(path).map_err(|source| SinkError::Io {
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
            out: BufWriter::with_capacity(
                64 * 1024,
                Box::new(LineWriter::new(crate::telemetry::Stderr)),
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, append: bool, line: &str) {
        let mut sink = LineSink::open(path, append).unwrap();
        sink.write_line(line.as_bytes()).unwrap();
        sink.sync().unwrap();
    }

    #[test]
    fn a_file_is_appended_to_or_truncated_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        write(&path, true, "one");
        write(&path, true, "two");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        write(&path, false, "three");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }
}
