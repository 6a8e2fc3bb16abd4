//! Standard output for the commands that print (`check`, `lookup`, `simulate`).
//!
//! Contract: when the reader goes away (EPIPE), later lines are dropped and the command
//! ends as it would have, instead of panicking as `println!` does; other write errors
//! are returned. Each line is written with one `write_all` and flushed, so a line is
//! never split and a reader sees it at once.

use std::fmt;
use std::io::{ErrorKind, Write};

use super::CliError;

/// Lines to standard output (or, in tests, any writer).
#[derive(Debug)]
pub struct Output<W: Write> {
    writer: W,
    closed: bool,
    buffer: String,
}

impl Output<std::io::Stdout> {
    /// The process's standard output.
    pub fn stdout() -> Self {
        Output::new(std::io::stdout())
    }
}

impl<W: Write> Output<W> {
    /// Lines to `writer`.
    pub fn new(writer: W) -> Self {
        Output {
            writer,
            closed: false,
            buffer: String::new(),
        }
    }

    /// Writes one line and flushes it.
    pub fn line(&mut self, line: fmt::Arguments<'_>) -> Result<(), CliError> {
        if self.closed {
            return Ok(());
        }
        self.buffer.clear();
        // Formatting into a String fails only if a Display impl does; none of ours do.
        let _ = fmt::Write::write_fmt(&mut self.buffer, format_args!("{line}\n"));
        match self
            .writer
            .write_all(self.buffer.as_bytes())
            .and_then(|()| self.writer.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(CliError::Output(e)),
        }
    }

    /// Whether the reader has gone away.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The writer, with everything written so far.
    pub fn into_inner(self) -> W {
        self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// Accepts `room` writes, then fails every write with `kind`.
    struct Failing {
        room: usize,
        kind: ErrorKind,
        written: Vec<u8>,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from(self.kind));
            }
            self.room -= 1;
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_end_with_a_newline() {
        let mut out = Output::new(Vec::new());
        out.line(format_args!("a {}", 1)).unwrap();
        out.line(format_args!("b")).unwrap();
        assert!(!out.is_closed());
        assert_eq!(out.into_inner(), b"a 1\nb\n");
    }

    #[test]
    fn a_closed_pipe_drops_later_lines_quietly() {
        let mut out = Output::new(Failing {
            room: 1,
            kind: ErrorKind::BrokenPipe,
            written: Vec::new(),
        });
        out.line(format_args!("first")).unwrap();
        out.line(format_args!("second")).unwrap();
        assert!(out.is_closed());
        out.line(format_args!("third")).unwrap();
        assert_eq!(out.into_inner().written, b"first\n");
    }

    #[test]
    fn other_write_errors_are_returned() {
        let mut out = Output::new(Failing {
            room: 0,
            kind: ErrorKind::PermissionDenied,
            written: Vec::new(),
        });
        let err = out.line(format_args!("x")).unwrap_err();
        assert!(matches!(err, CliError::Output(_)), "{err:?}");
        assert_eq!(err.to_string(), "writing to standard output");
        assert!(!out.is_closed());
    }
}
