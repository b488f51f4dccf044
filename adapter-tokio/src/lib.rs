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
//! Certificates are verified against the Mozilla roots (`webpki-roots`) plus
//! any added with [`TlsOptions::add_root_pem_file`]; the feature
//! `rustls-native-certs` adds the platform store. The crypto provider is
//! *ring* (it builds with only a C compiler).
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

// The public surface, named one by one. The runtime plumbing (the
// `Runtime` trait, the HTTP helpers) stays in `postern_transport`.
/// The sans-IO OAuth2 core: token requests and responses, PKCE, device
/// flow, the token cache, diagnoses.
pub use postern_transport::oauth;
/// rustls, the one public dependency: for [`TlsOptions::from_rustls_config`]
/// and the certificate errors inside [`Error::Tls`]. Its version is
/// postern's; a major rustls upgrade is a major postern release.
pub use postern_transport::rustls;
/// The sans-IO SMTP core: the client machine, the reply parser, the EHLO
/// model, SASL, the body encoder, diagnoses.
pub use postern_transport::smtp;
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
