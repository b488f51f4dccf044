//! Loopback peers for postern's tests, demo and benchmarks.
//!
//! - [`SmtpServer`]: an SMTP submission server (STARTTLS / implicit TLS,
//!   PLAIN, LOGIN, XOAUTH2, OAUTHBEARER, PIPELINING, CHUNKING) that records
//!   what it receives;
//! - [`TokenServer`]: an OAuth2 token endpoint whose tokens the SMTP server
//!   accepts (through a shared [`Tokens`] set);
//! - [`Pki`]: a throwaway CA with good, wrong-host and expired certificates;
//! - [`SmtpSink`]: Postfix's real `smtp-sink`, when installed;
//! - [`Generated`]: a message of any size produced on the fly;
//! - [`Virtual`]: the transport's runtime on virtual time, over in-memory
//!   pipes to these peers (TLS still real);
//! - [`scenarios`]: the transport tests, written once and run by both
//!   adapter crates on their runtime.
//!
//! These are in-process peers of our own: fast and deterministic, never the
//! only proof of interoperability (the real-peer tests run against Postfix,
//! Dovecot and oidc-provider).
#![forbid(unsafe_code)]

mod generate;
mod oauth;
pub mod peers;
mod pki;
pub mod redis;
pub mod scenarios;
mod sink;
mod smtp;
mod tokens;
mod virtual_time;

pub use generate::Generated;
pub use oauth::{AADSTS7000215, TokenServer, TokenServerConfig};
pub use pki::{Pki, ServerCert};
pub use sink::{SMTP_SINK, SmtpSink};
pub use smtp::{AuthAttempt, Received, ServerTls, SmtpServer, SmtpServerConfig};
pub use tokens::Tokens;
pub use virtual_time::{Virtual, VirtualSleep, join};

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

/// FNV-1a, 64 bits: a cheap digest to compare large messages without keeping
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv::new()
    }
}

impl Fnv {
    /// The empty digest.
    #[must_use]
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The digest.
    #[must_use]
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// A byte stream a loopback peer serves: a TCP connection, or the server
/// half of an in-memory pipe (see [`crate::Virtual`]).
pub(crate) trait Duplex:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Duplex for T {}

/// A connection as a peer's session sees it.
pub(crate) type Conn = Box<dyn Duplex>;

/// Opens an in-memory connection to a peer.
pub(crate) type Dialer = Arc<dyn Fn() -> tokio::io::DuplexStream + Send + Sync>;

type Serve = Arc<dyn Fn(Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Bytes an in-memory pipe buffers in each direction: 256 KiB.
pub const PIPE_BUFFER: usize = 256 * 1024;

/// A loopback listener served on its own thread and tokio runtime (so
/// clients on any runtime can use it); stopped when dropped. Connections
/// come from the TCP listener or, in memory, from [`Background::attach`].
pub(crate) struct Background {
    addr: std::net::SocketAddr,
    serve: Serve,
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Binds `127.0.0.1` on a free port and runs `serve` for every
    /// connection.
    pub(crate) fn spawn<F, Fut>(name: &str, serve: F) -> std::io::Result<Background>
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let serve: Serve = Arc::new(move |conn| Box::pin(serve(conn)));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let accept_serve = Arc::clone(&serve);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let accept = async {
                        while let Ok((tcp, _)) = listener.accept().await {
                            let _ = tcp.set_nodelay(true);
                            tokio::spawn(accept_serve(Box::new(tcp)));
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
                rt.shutdown_background();
            })?;
        Ok(Background {
            addr,
            serve,
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Serves one in-memory connection and returns the client's end of it.
    pub(crate) fn attach(&self) -> tokio::io::DuplexStream {
        (self.dialer())()
    }

    /// What [`Background::attach`] does, as a function that outlives this
    /// borrow (for [`crate::Virtual`]'s table of peers).
    pub(crate) fn dialer(&self) -> Dialer {
        let handle = self.handle.clone();
        let serve = Arc::clone(&self.serve);
        Arc::new(move || {
            let (client, server) = tokio::io::duplex(PIPE_BUFFER);
            handle.spawn(serve(Box::new(server)));
            client
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Peak resident memory of this process (`VmHWM`), in bytes, where the
/// platform reports it.
#[must_use]
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
