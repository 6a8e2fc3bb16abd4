//! Line sources: a file or standard input, one event per line, read to the end.
//!
//! Lines are read with a hard bound so one endless line cannot exhaust memory: up
//! to `keep` bytes are kept (enough to pass an over-long line to the dead letter
//! whole in any realistic case), the rest is counted and skipped, and the record
//! says how long the line really was.

use std::sync::Arc;

use prometheus::IntCounter;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::{Ack, SourceError};
use crate::event::{Position, SourceRecord};

/// Reads newline-delimited records.
pub struct LineSource {
    reader: Box<dyn AsyncBufRead + Send + Unpin>,
    name: Arc<str>,
    line: u64,
    keep: usize,
    /// The line being read. Kept here, not on the stack of `next`, so that dropping
    /// a pending `next()` (the pipeline polls for ready records) loses no bytes.
    partial: Vec<u8>,
    partial_len: usize,
    partial_started: bool,
    /// Counts the bytes consumed, for `ipenrich_source_bytes_total` and the
    /// progress bar of `enrich`.
    bytes_read: Option<IntCounter>,
}

/// A line read, possibly cut.
pub struct Line {
    pub bytes: Vec<u8>,
    /// Full length when the line was longer than what was kept.
    pub cut_from: Option<usize>,
}

impl LineSource {
    /// Opens a file.
    pub async fn file(path: &std::path::Path, keep: usize) -> Result<Self, SourceError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| SourceError::Io {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self::from_reader(
            BufReader::with_capacity(256 * 1024, file),
            &path.display().to_string(),
            keep,
        ))
    }

    /// Reads standard input.
    pub fn stdin(keep: usize) -> Self {
        Self::from_reader(
            BufReader::with_capacity(256 * 1024, tokio::io::stdin()),
            "stdin",
            keep,
        )
    }

    /// Reads any buffered reader (tests).
    pub fn from_reader(
        reader: impl AsyncBufRead + Send + Unpin + 'static,
        name: &str,
        keep: usize,
    ) -> Self {
        LineSource {
            reader: Box::new(reader),
            name: Arc::from(name),
            line: 0,
            keep,
            partial: Vec::new(),
            partial_len: 0,
            partial_started: false,
            bytes_read: None,
        }
    }

    /// Counts every byte read in `counter`.
    pub fn counting(mut self, counter: IntCounter) -> Self {
        self.bytes_read = Some(counter);
        self
    }

    /// The next non-empty line as a record; `Ok(None)` at the end.
    pub async fn next(&mut self) -> Result<Option<(SourceRecord, Ack)>, SourceError> {
        loop {
            let Some(line) = self.read_line().await? else {
                return Ok(None);
            };
            self.line += 1;
            let mut bytes = line.bytes;
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            if bytes.iter().all(u8::is_ascii_whitespace) && line.cut_from.is_none() {
                continue;
            }
            let mut headers = Vec::new();
            if let Some(full) = line.cut_from {
                headers.push((
                    "ipenrich.original_length".to_string(),
                    full.to_string().into_bytes(),
                ));
            }
            let record = SourceRecord {
                payload: bytes,
                key: None,
                headers,
                position: Position::Line {
                    source: self.name.clone(),
                    line: self.line,
                },
                timestamp_ms: None,
            };
            return Ok(Some((record, Ack::None)));
        }
    }

    /// Reads one line; cancel-safe (progress lives in `self`).
    async fn read_line(&mut self) -> Result<Option<Line>, SourceError> {
        loop {
            let buf = self
                .reader
                .fill_buf()
                .await
                .map_err(|source| SourceError::Io {
                    path: self.name.to_string(),
                    source,
                })?;
            if buf.is_empty() {
                break;
            }
            self.partial_started = true;
            let (chunk, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            let room = self.keep.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.partial_len += chunk.len();
            let consumed = done.unwrap_or(buf.len());
            self.reader.consume(consumed);
            if let Some(counter) = &self.bytes_read {
                counter.inc_by(consumed as u64);
            }
            if done.is_some() {
                break;
            }
        }
        if !std::mem::take(&mut self.partial_started) {
            return Ok(None);
        }
        let bytes = std::mem::take(&mut self.partial);
        let total = std::mem::take(&mut self.partial_len);
        let cut_from = (total > bytes.len()).then_some(total);
        Ok(Some(Line { bytes, cut_from }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &'static [u8], keep: usize) -> Vec<(Vec<u8>, usize, u64)> {
        let mut src = LineSource::from_reader(input, "t", keep);
        let mut out = Vec::new();
        while let Some((rec, _)) = src.next().await.unwrap() {
            let Position::Line { line, .. } = rec.position else {
                panic!()
            };
            out.push((rec.payload, rec.headers.len(), line));
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_skips_blank_keeps_numbers() {
        let got = all(b"a\r\n\n  \nbb\nlast", 100).await;
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), 0, 1),
                (b"bb".to_vec(), 0, 4),
                (b"last".to_vec(), 0, 5)
            ]
        );
    }

    #[tokio::test]
    async fn every_byte_read_is_counted() {
        let counter = IntCounter::new("t", "t").unwrap();
        let input: &'static [u8] = b"a\r\n\n  \nbb\nlast";
        let mut src = LineSource::from_reader(input, "t", 100).counting(counter.clone());
        while src.next().await.unwrap().is_some() {}
        assert_eq!(counter.get(), input.len() as u64);
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_marked() {
        let got = all(b"0123456789\nok\n", 4).await;
        assert_eq!(got[0].0, b"0123");
        assert_eq!(got[0].1, 1);
        assert_eq!(got[1], (b"ok".to_vec(), 0, 2));
    }
}
