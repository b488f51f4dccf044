//! What an adapter supplies: TCP, the TLS handshake, timers, task spawning and
//! the clock. Everything else (the SMTP loop, token fetching, the pool) is
//! written once against this trait. Applications never need this module;
//! adapters and tests on virtual time do.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_io::{AsyncRead, AsyncWrite};
use rustls_pki_types::ServerName;

pub use crate::connection::READ_BUFFER;

/// A byte stream: a TCP connection or a TLS session over one.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// An async runtime as the transport needs it. Implemented by `postern-tokio`
/// and `postern-async-std`; a test can implement it to fake the clock.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected TCP stream.
    type Tcp: Stream;
    /// A TLS session over [`Runtime::Tcp`].
    type Tls: Stream;
    /// A resettable timer.
    type Sleep: Sleep;

    /// Resolves `host` and connects to the first address that answers, with
    /// `TCP_NODELAY` set (the transport writes whole command groups itself,
    /// so Nagle's algorithm only adds delayed-ACK stalls).
    fn connect(&self, host: &str, port: u16) -> impl Future<Output = io::Result<Self::Tcp>> + Send;

    /// Runs the client side of a TLS handshake over `tcp`, verifying the
    /// certificate for `server_name` as `config` says. Certificate errors come
    /// back as `io::ErrorKind::InvalidData` wrapping a `rustls::Error`.
    fn tls_connect(
        &self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        tcp: Self::Tcp,
    ) -> impl Future<Output = io::Result<Self::Tls>> + Send;

    /// A timer that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;

    /// Runs `task` in the background (a token refresh ahead of expiry, a QUIT
    /// on an idle connection).
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);

    /// The monotonic clock every deadline is measured on. The one place the
    /// transport reads time, so a runtime with paused time fakes all of it.
    fn now(&self) -> Instant;

    /// Seconds since the Unix epoch, for `Retry-After` dates and JWT claims.
    fn unix_now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A timer future whose deadline can be moved without allocating a new one.
pub trait Sleep: Future<Output = ()> + Send + Unpin + 'static {
    /// Moves the deadline; the timer can complete again after this.
    fn reset(&mut self, deadline: Instant);
}

/// One reusable timer that follows a changing deadline (the design's "one
/// sleep, reset only when the deadline changes").
pub(crate) struct Deadline<S> {
    sleep: Option<S>,
    at: Option<Instant>,
}

impl<S: Sleep> Deadline<S> {
    pub(crate) fn new() -> Self {
        Deadline {
            sleep: None,
            at: None,
        }
    }

    /// Polls the timer for `deadline`; `Ready` once it has passed. `None`
    /// never completes.
    pub(crate) fn poll<R: Runtime<Sleep = S>>(
        &mut self,
        rt: &R,
        deadline: Option<Instant>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let Some(deadline) = deadline else {
            self.at = None;
            return Poll::Pending;
        };
        if self.at != Some(deadline) {
            match &mut self.sleep {
                Some(s) => s.reset(deadline),
                None => self.sleep = Some(rt.sleep_until(deadline)),
            }
            self.at = Some(deadline);
        }
        match &mut self.sleep {
            Some(s) => Pin::new(s).poll(cx),
            None => Poll::Pending,
        }
    }
}

/// Runs `fut` until `deadline`; `None` when the deadline came first.
pub(crate) async fn until<R: Runtime, F: Future>(
    rt: &R,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut sleep = rt.sleep_until(deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        match Pin::new(&mut sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
