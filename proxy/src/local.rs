//! The local side of a session: a stream that starts plain and may become
//! TLS after STARTTLS.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use postern_transport::runtime::Stream;

/// The server side of a TLS handshake, supplied by the runtime crate (for
/// example a tokio-rustls acceptor).
pub trait LocalTls<S>: Send + Sync + 'static {
    /// The TLS session over `S`.
    type Stream: Stream;
    /// Runs the handshake over `plain`.
    fn accept(&self, plain: S) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// A local stream before or after STARTTLS.
pub(crate) enum Local<S, T> {
    Plain(S),
    Tls(T),
    /// During the handshake (or after it failed).
    Gone,
}

impl<S: Stream, T: Stream> AsyncRead for Local<S, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Local::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Local::Tls(t) => Pin::new(t).poll_read(cx, buf),
            Local::Gone => Poll::Ready(Ok(0)),
        }
    }
}

impl<S: Stream, T: Stream> AsyncWrite for Local<S, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Local::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Local::Tls(t) => Pin::new(t).poll_write(cx, buf),
            Local::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Local::Plain(s) => Pin::new(s).poll_flush(cx),
            Local::Tls(t) => Pin::new(t).poll_flush(cx),
            Local::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Local::Plain(s) => Pin::new(s).poll_close(cx),
            Local::Tls(t) => Pin::new(t).poll_close(cx),
            Local::Gone => Poll::Ready(Ok(())),
        }
    }
}
