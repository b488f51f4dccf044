//! postern-async-std: send mail over SMTP with OAuth2 (XOAUTH2, OAUTHBEARER)
//! or a password, on async-std or smol, with rustls.
//!
//! ```no_run
//! use postern_async_std::{Envelope, Mailbox, OAuth2, Secret, Security, Transport};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mailbox = "reports@contoso.com";
//! let oauth = OAuth2::microsoft_app(
//!     "contoso.onmicrosoft.com",
//!     "00000000-0000-0000-0000-000000000000",
//!     Secret::new(std::env::var("CLIENT_SECRET")?),
//!     mailbox,
//! )?;
//! let transport = Transport::builder("smtp.office365.com")
//!     .security(Security::StartTls)
//!     .oauth2(oauth)
//!     .build()?;
//! let envelope = Envelope::new(Mailbox::parse(mailbox)?, [Mailbox::parse("ops@contoso.com")?]);
//! let report = transport
//!     .send(&envelope, "Subject: nightly report\r\n\r\nAll green.\r\n")
//!     .await?;
//! assert!(report.all_accepted());
//! transport.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The same types and methods as `postern-tokio`: switching runtime is a
//! one-line change. Everything here is written against the `futures-io`
//! traits and `async-io` timers, the reactor async-std itself runs on, so the
//! transport works unchanged under smol (async-std's successor) and any
//! executor that polls `async-io`; only [`AsyncStd::spawn`] uses async-std's
//! task pool.
//!
//! Certificates are verified against the Mozilla roots (`webpki-roots`) plus
//! any added with [`TlsOptions::add_root_pem_file`]; the feature
//! `rustls-native-certs` adds the platform store. The crypto provider is
//! *ring* (it builds with only a C compiler).
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use rustls::pki_types::ServerName;

#[cfg(feature = "mail-builder")]
pub use postern_transport::Email;
// Everything but the runtime-specific names below is postern-transport's.
pub use postern_transport::*;
pub use postern_transport::{
    Assertion, Auth, AuthFailure, AuthFailureKind, CacheConfig, ClientConfig, ClientCredential,
    ClientName, Endpoint, Envelope, Error, Mailbox, Mechanism, Message, MicrosoftCloud, OAuth2,
    PoolConfig, READ_BUFFER, READ_CHUNK, RecipientResult, Reply, Secret, Security, Timeouts,
    TlsOptions, TokenGrant, TransactionReport, TransportStats, oauth, smtp,
};

/// async-std (and smol) as postern's transport sees them.
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStd;

/// A transport on async-std.
pub type Transport = postern_transport::Transport<AsyncStd>;
/// Builds a [`Transport`].
pub type TransportBuilder = postern_transport::TransportBuilder<AsyncStd>;

/// A message streamed from a `futures-io` reader (an `async_std::fs::File`,
/// a smol `Unblock`) in [`READ_CHUNK`] pieces: constant memory whatever its
/// size.
pub fn message_from_reader(reader: impl futures_io::AsyncRead + Send + 'static) -> Message {
    Message::reader(reader)
}

/// A reusable `async-io` timer.
#[derive(Debug)]
pub struct AsyncIoSleep(async_io::Timer);

impl Future for AsyncIoSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl postern_transport::Sleep for AsyncIoSleep {
    fn reset(&mut self, deadline: Instant) {
        self.0.set_at(deadline);
    }
}

impl postern_transport::Runtime for AsyncStd {
    type Tcp = async_std::net::TcpStream;
    type Tls = futures_rustls::client::TlsStream<async_std::net::TcpStream>;
    type Sleep = AsyncIoSleep;

    async fn connect(&self, host: &str, port: u16) -> io::Result<Self::Tcp> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let stream = async_std::net::TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn tls_connect(
        &self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        tcp: Self::Tcp,
    ) -> io::Result<Self::Tls> {
        futures_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
    }

    fn sleep_until(&self, deadline: Instant) -> AsyncIoSleep {
        AsyncIoSleep(async_io::Timer::at(deadline))
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        async_std::task::spawn(task);
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}
