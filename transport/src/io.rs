//! Small async IO helpers over `futures-io` traits, and the stream that is
//! plaintext until STARTTLS.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};

use crate::runtime::Runtime;

/// Writes all of `bytes` and flushes.
pub(crate) async fn write_all<S: AsyncWrite + Unpin>(
    s: &mut S,
    mut bytes: &[u8],
) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *s).poll_write(cx, bytes)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    poll_fn(|cx| Pin::new(&mut *s).poll_flush(cx)).await
}

/// Reads once into `buf`.
pub(crate) async fn read<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) -> io::Result<usize> {
    poll_fn(|cx| Pin::new(&mut *s).poll_read(cx, buf)).await
}

/// The SMTP connection: plaintext TCP, or TLS over it (implicit or after
/// STARTTLS). Nothing is buffered here: every byte read goes to the caller.
pub(crate) enum Conn<R: Runtime> {
    Plain(R::Tcp),
    Tls(R::Tls),
    /// Only between taking the plaintext stream for the handshake and
    /// storing the TLS one; a failed handshake leaves it here.
    Upgrading,
}

fn upgrading() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "TLS handshake did not finish")
}

impl<R: Runtime> Conn<R> {
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
            Conn::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    pub(crate) async fn close(&mut self) {
        // Errors on close are of no consequence: the session is over.
        let _ = poll_fn(|cx| match self {
            Conn::Plain(s) => Pin::new(s).poll_close(cx),
            Conn::Tls(s) => Pin::new(s).poll_close(cx),
            Conn::Upgrading => Poll::Ready(Ok(())),
        })
        .await;
    }
}
