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
pub mod scenarios;
mod sink;
mod smtp;
mod tokens;

pub use generate::Generated;
pub use oauth::{AADSTS7000215, TokenServer, TokenServerConfig};
pub use pki::{Pki, ServerCert};
pub use sink::{SMTP_SINK, SmtpSink};
pub use smtp::{AuthAttempt, Received, ServerTls, SmtpServer, SmtpServerConfig};
pub use tokens::Tokens;

use std::sync::{Mutex, MutexGuard};

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

/// A loopback listener served on its own thread and tokio runtime (so
/// clients on any runtime can use it); stopped when dropped.
pub(crate) struct Background {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Binds `127.0.0.1` on a free port and runs `serve` for every
    /// connection.
    pub(crate) fn spawn<F, Fut>(name: &str, serve: F) -> std::io::Result<Background>
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let accept = async {
                        while let Ok((tcp, _)) = listener.accept().await {
                            tokio::spawn(serve(tcp));
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
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.addr
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
