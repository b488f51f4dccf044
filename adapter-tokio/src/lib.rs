//! postern-tokio: send mail over SMTP with OAuth2 (XOAUTH2, OAUTHBEARER) or a
//! password, on tokio, with rustls.
//!
//! ```no_run
//! use postern_tokio::{Envelope, Mailbox, OAuth2, Secret, Security, Transport};
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
//! The transport fetches the token, caches it, refreshes it ahead of expiry
//! in the background, and when the server rejects it fetches a fresh one and
//! authenticates once more. Connections are pooled ([`PoolConfig`]). Every
//! phase has its own timeout ([`Timeouts`]).
//!
//! This crate is the tokio half of a pair: `postern-async-std` has the same
//! types and methods, so switching runtime is a one-line change. Both are thin:
//! they supply TCP, TLS and timers to `postern-transport`, which drives the
//! sans-IO `postern-smtp` and `postern-oauth` cores.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `mail-builder` | yes | [`Email`]: text, HTML, attachments, display names, with its envelope; [`mail_builder`] re-exported for the rest |
//! | `dkim` | no | `Dkim`: DKIM signing (RSA-SHA256, Ed25519-SHA256) of every message, with `mail-auth` |
//! | `rustls-native-certs` | no | `TlsOptions::native_roots`: the operating system's trust store |
//! | `aws-lc-rs` | no | the aws-lc-rs crypto provider instead of *ring* |
//!
//! Certificates are verified against the Mozilla roots (`webpki-roots`) plus
//! any added with [`TlsOptions::with_root_pem_file`];
//! [`TlsOptions::from_rustls_config`] takes a whole rustls configuration of
//! the caller's own. [`rustls`] is the one public dependency.
//!
//! # A message with parts
//!
//! ```no_run
//! # #[cfg(feature = "mail-builder")]
//! # async fn run(transport: postern_tokio::Transport) -> Result<(), Box<dyn std::error::Error>> {
//! use postern_tokio::{Email, NamedMailbox};
//!
//! let (envelope, message) = Email::new(NamedMailbox::parse("Billing <billing@example.com>")?)
//!     .to(NamedMailbox::parse("\"Doe, Jane\" <jane@example.org>")?)
//!     .subject("Invoice 42")
//!     .text("Amount due: 10 EUR.")
//!     .html("<p>Amount due: <b>10 EUR</b>.</p>")
//!     .attachment("application/pdf", "invoice-42.pdf", b"%PDF-1.7 ...".to_vec())
//!     .build()?;
//! transport.send(&envelope, message).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # DKIM, pooling and many sends at once
//!
//! ```no_run
//! # #[cfg(feature = "dkim")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use postern_tokio::{Dkim, Envelope, Mailbox, PoolConfig, Transport};
//!
//! let transport = Transport::builder("smtp.example.com")
//!     .password("app@example.com", std::env::var("SMTP_PASSWORD")?)
//!     .dkim(Dkim::from_pem_file("example.com", "mail2026", "dkim.pem")?)
//!     // Up to 8 connections, 100 messages each, then a fresh one.
//!     .pool(PoolConfig::default().max_connections(8).max_messages_per_connection(100))
//!     .build()?;
//! let from = Mailbox::parse("app@example.com")?;
//! let sends = (0..500).map(|i| {
//!     let transport = transport.clone();
//!     let envelope = Envelope::new(from.clone(), [Mailbox::parse(&format!("user{i}@example.org")).unwrap()]);
//!     async move { transport.send(&envelope, format!("From: app@example.com\r\nSubject: {i}\r\n\r\nHi\r\n")).await }
//! });
//! for result in futures_join_all(sends).await {
//!     result?;
//! }
//! transport.shutdown().await;
//! # Ok(())
//! # }
//! # async fn futures_join_all<F: std::future::Future>(f: impl IntoIterator<Item = F>) -> Vec<F::Output> { let mut v = Vec::new(); for x in f { v.push(x.await); } v }
//! ```
//!
//! # Handling errors
//!
//! ```no_run
//! # async fn run(transport: postern_tokio::Transport, envelope: postern_tokio::Envelope) {
//! match transport.send(&envelope, "Subject: hi\r\n\r\nHello\r\n").await {
//!     Ok(report) => {
//!         for refused in report.rejected() {
//!             eprintln!("{} refused: {:?}", refused.mailbox, refused.reply);
//!         }
//!     }
//!     // Sent whole, no reply: it may have been delivered; never resend blindly.
//!     Err(e) if e.may_have_been_delivered() => eprintln!("check before resending: {e}"),
//!     // 4xx, timeouts, dropped connections: the same send may succeed later.
//!     Err(e) if e.is_transient() => eprintln!("retry later: {e}"),
//!     Err(e) => {
//!         // Permanent: what an admin must fix, with a link when known.
//!         eprintln!("failed at {}: {e}", e.stage().name());
//!         if let Some(d) = e.diagnosis() {
//!             eprintln!("{}: {} ({})", d.id, d.fix, d.link.unwrap_or_default());
//!         }
//!     }
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

// The public surface, written once in postern-transport.
postern_transport::public_surface!();
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use postern_transport::RedisStore;
pub use postern_transport::{
    Assertion, Auth, CacheConfig, ClientCredential, Endpoint, MicrosoftCloud, OAuth2, Proxy,
    Secret, TokenGrant, TokenResponse,
};
pub use postern_transport::{
    AuthFailure, AuthFailureKind, BodyType, Diagnosis, Envelope, Error, Mailbox, Message,
    NamedMailbox, READ_CHUNK, RecipientResult, Reply, Stage, TransactionReport,
};
pub use postern_transport::{
    ClientConfig, ClientName, Mechanism, PoolConfig, Security, Timeouts, TlsOptions, TransportStats,
};
#[cfg(feature = "dkim")]
#[cfg_attr(docsrs, doc(cfg(feature = "dkim")))]
pub use postern_transport::{DEFAULT_SIGNED_HEADERS, Dkim, DkimError, MAX_HEADER_SECTION};
#[cfg(feature = "mail-builder")]
#[cfg_attr(docsrs, doc(cfg(feature = "mail-builder")))]
pub use postern_transport::{Email, mail_builder};
/// Sharing tokens and limits among processes: a store and its settings.
pub use postern_transport::{
    FileStore, MailboxLimits, MemoryStore, Rate, Sharing, Store, StoreError, StoreKey, open_store,
};
pub use postern_transport::{Sent, StubTransport};

/// The tokio runtime as postern's transport sees it. Uses the ambient tokio
/// runtime (`tokio::spawn`, `tokio::time`): build and use the transport inside
/// one. Tokio's paused test clock drives every postern deadline.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

/// A transport on tokio.
pub type Transport = postern_transport::Transport<Tokio>;
/// Builds a [`Transport`].
pub type TransportBuilder = postern_transport::TransportBuilder<Tokio>;
/// A transaction relayed one command at a time ([`Transport::relay`]), for
/// a submission proxy.
pub type RelayTransaction = postern_transport::RelayTransaction<Tokio>;
/// How [`Transport::relay`] ended.
pub type RelayStart = postern_transport::RelayStart<Tokio>;
/// How [`RelayTransaction::data`] ended.
pub type RelayData = postern_transport::RelayData<Tokio>;

/// A message streamed from a tokio reader (a `tokio::fs::File`, a pipe) in
/// [`READ_CHUNK`] pieces: constant memory whatever its size.
pub fn message_from_reader(reader: impl tokio::io::AsyncRead + Send + 'static) -> Message {
    Message::reader(Box::pin(reader).compat())
}

/// Fetches one access token for `oauth` (the same request the transport
/// makes, with the same errors), for another protocol (IMAP, Microsoft
/// Graph) or a set-up check. No cache: a [`Transport`] keeps and refreshes
/// its own. A rotated refresh token is handed to `oauth`'s persistence hook
/// before this returns.
pub async fn fetch_token(oauth: &OAuth2, tls: &TlsOptions) -> Result<TokenResponse, Error> {
    postern_transport::http::fetch_token(&Tokio, tls, oauth).await
}

/// [`fetch_token`] through a shared store: the token another process fetched
/// while it is fresh, else one fetched under the store's lease (see
/// [`Sharing`]). Use it whenever a refresh token is shared: a direct
/// redemption would retire the store's copy.
pub async fn fetch_token_shared(
    oauth: &OAuth2,
    tls: &TlsOptions,
    sharing: Sharing,
) -> Result<TokenResponse, Error> {
    postern_transport::http::fetch_token_shared(&Tokio, tls, oauth, sharing).await
}

/// The timer type of the runtime impl: public (an associated type must be)
/// but unnameable outside this crate.
mod timer {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Instant;

    /// A reusable tokio timer.
    #[derive(Debug)]
    pub struct TokioSleep(pub(super) Pin<Box<tokio::time::Sleep>>);

    impl Future for TokioSleep {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.as_mut().poll(cx)
        }
    }

    impl postern_transport::runtime::Sleep for TokioSleep {
        fn reset(&mut self, deadline: Instant) {
            self.0.as_mut().reset(deadline.into());
        }
    }
}
use timer::TokioSleep;

impl postern_transport::runtime::Runtime for Tokio {
    type Tcp = Compat<tokio::net::TcpStream>;
    type Tls = Compat<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Sleep = TokioSleep;

    async fn connect(&self, host: &str, port: u16) -> io::Result<Self::Tcp> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(stream.compat())
    }

    async fn tls_connect(
        &self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        tcp: Self::Tcp,
    ) -> io::Result<Self::Tls> {
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp.into_inner())
            .await?;
        Ok(tls.compat())
    }

    fn sleep_until(&self, deadline: Instant) -> TokioSleep {
        TokioSleep(Box::pin(tokio::time::sleep_until(deadline.into())))
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}
