//! The TCP side: a listener whose connections carry a kill switch, so fault injection
//! can reset a connection (RST, no response) from inside a handler. A killed stream
//! fails every write and sets `SO_LINGER 0`, so closing it sends a TCP reset.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A listener handing out [`KillableStream`]s.
pub struct KillListener(pub TcpListener);

impl Listener for KillListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let kill = Arc::new(AtomicBool::new(false));
                    return (
                        KillableStream {
                            inner: stream,
                            kill,
                        },
                        addr,
                    );
                }
                Err(error) => {
                    // Same policy as axum's own TcpListener: log, back off, retry.
                    tracing::debug!(%error, "simulator accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A TCP stream that can be reset from a request handler.
pub struct KillableStream {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

impl KillableStream {
    fn killed(&self) -> bool {
        if self.kill.load(Ordering::Relaxed) {
            let _ = self.inner.set_zero_linger();
            true
        } else {
            false
        }
    }
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "simulated connection reset")
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Per-connection data handed to handlers through `ConnectInfo`.
#[derive(Debug, Clone)]
pub struct ConnCtx {
    /// The peer address (IPGeolocation answers for it when `ip` is omitted).
    pub remote: SocketAddr,
    kill: Arc<AtomicBool>,
}

impl ConnCtx {
    /// Makes the connection fail its next read or write and close with a reset.
    pub fn kill(&self) {
        self.kill.store(true, Ordering::Relaxed);
    }
}

impl Connected<IncomingStream<'_, KillListener>> for ConnCtx {
    fn connect_info(stream: IncomingStream<'_, KillListener>) -> Self {
        ConnCtx {
            remote: *stream.remote_addr(),
            kill: stream.io().kill.clone(),
        }
    }
}
