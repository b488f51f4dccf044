//! postern-transport: the runtime-neutral half of postern's SMTP transports.
//!
//! Users depend on `postern-tokio` or `postern-async-std`, which re-export
//! this crate's types with the runtime filled in. This crate is written once
//! against the small [`runtime::Runtime`] trait (TCP connect with `TCP_NODELAY`, the
//! TLS handshake, a resettable timer, spawn, the clock), so a test can supply
//! a runtime on virtual time with in-memory connections.
//!
//! # The contract
//!
//! **What this crate decides: nothing about the protocols.** The sans-IO
//! cores decide, as pure functions tested without sockets:
//!
//! | question | answered by |
//! | --- | --- |
//! | which SASL mechanism, what a reply means, when a phase times out | [`postern_smtp::Client`] |
//! | whether a failure is temporary | [`postern_smtp::Error::is_transient`], [`TransactionReport::is_transient`], [`AuthFailure::is_transient`], [`postern_oauth::FetchError::is_transient`] |
//! | whether a fresh token may cure a refused AUTH | [`AuthFailure::token_refresh_may_help`] (never for `5.7.139` and other configuration refusals) |
//! | whether a message can be resent without a duplicate | [`postern_smtp::Error::ended_before_message`] |
//! | which set-up step failed and what to do | [`Stage`], [`Diagnosis`], from [`postern_smtp::diagnose`] and [`postern_oauth::diagnose`] |
//! | when to refresh a token, which caller fetches it | [`postern_oauth::TokenCache`] |
//!
//! **What it does:** moves bytes, time and events between the cores and the
//! network, and keeps the state that spans connections:
//!
//! - `connection.rs`: the driver loop of design §3.2 for one SMTP
//!   connection, and the one piece of glue between the two cores: when the
//!   client reports a refused AUTH that a fresh token may cure, invalidate
//!   the cached token of that generation, fetch once, authenticate once more;
//! - `provider.rs`: one [`postern_oauth::TokenCache`] per transport, single
//!   flight across tasks, refresh ahead of expiry in the background; `http.rs`:
//!   its HTTP/1.1 exchanges over rustls; `oauth2.rs`: its settings and presets;
//! - `pool.rs`: checkout and checkin, idle bookkeeping, NOOP before reuse;
//! - `message.rs`: the message and the one feed that hands it to the client;
//! - `transport.rs`: the builder and [`Transport::send`].
//!
//! A layering test (`tests/layering.rs`) fails when code outside the cores
//! matches on SMTP errors, phases, reply codes, OAuth error codes or token
//! claims.
//!
//! # The driver loop
//!
//! Every byte read goes to the client, with no read-ahead buffer of the
//! transport's own, so STARTTLS upgrades the same socket and bytes injected
//! before the handshake are caught by the core. One reusable timer follows
//! [`postern_smtp::Client::poll_timeout`]. A round budget yields to the
//! executor, so a 1 GiB body cannot starve other tasks.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod connection;
#[cfg(feature = "dkim")]
mod dkim;
#[cfg(feature = "mail-builder")]
mod email;
mod error;
pub mod http;
mod io;
mod message;
mod oauth2;
mod pool;
mod provider;
mod relay;
pub mod runtime;
mod sharing;
pub mod store;
mod stub;
mod tls;
mod transport;

#[cfg(feature = "dkim")]
#[cfg_attr(docsrs, doc(cfg(feature = "dkim")))]
pub use dkim::{DEFAULT_SIGNED_HEADERS, Dkim, DkimError, MAX_HEADER_SECTION};
#[cfg(feature = "mail-builder")]
#[cfg_attr(docsrs, doc(cfg(feature = "mail-builder")))]
pub use email::Email;
pub use error::Error;
/// The MIME builder behind [`Email`], for messages it does not cover.
#[cfg(feature = "mail-builder")]
#[cfg_attr(docsrs, doc(cfg(feature = "mail-builder")))]
pub use mail_builder;
pub use message::{Message, READ_CHUNK};
pub use oauth2::{Assertion, Auth, ClientCredential, OAuth2, TokenGrant};
pub use pool::PoolConfig;
pub use postern_oauth::shared::StoreKey;
pub use postern_smtp::limits::{MailboxLimits, Rate};
pub use relay::{RelayData, RelayStart, RelayTransaction};
pub use sharing::Sharing;
#[cfg(any(feature = "redis-tokio", feature = "redis-smol"))]
pub use store::RedisStore;
pub use store::{FileStore, MemoryStore, Store, StoreError, open_store};
pub use stub::{Sent, StubTransport};
pub use tls::{TlsOptions, crypto_provider};
pub use transport::{Transport, TransportBuilder, TransportStats};

/// The sans-IO OAuth2 crate.
pub use postern_oauth as oauth;
pub use postern_oauth::{CacheConfig, Endpoint, MicrosoftCloud, Proxy, TokenResponse};
/// The sans-IO SMTP client crate.
pub use postern_smtp as smtp;
pub use postern_smtp::{
    AuthFailure, AuthFailureKind, BodyType, ClientConfig, ClientName, Diagnosis, Envelope, Mailbox,
    Mechanism, NamedMailbox, RecipientResult, Reply, Secret, Security, Stage, Timeouts,
    TransactionReport,
};
/// rustls, for callers that build their own configuration.
pub use rustls;

/// The public surface of a runtime crate (`postern-tokio`,
/// `postern-async-std`), named one by one: written once here, expanded at
/// each crate's root. The runtime plumbing (the `Runtime` trait, the HTTP
/// helpers) stays in this crate.
#[doc(hidden)]
#[macro_export]
macro_rules! public_surface {
    () => {
        /// The sans-IO OAuth2 core: token requests and responses, PKCE, device
        /// flow, the token cache, diagnoses.
        pub use $crate::oauth;
        /// rustls, the one public dependency: for [`TlsOptions::from_rustls_config`]
        /// and the certificate errors inside [`Error::Tls`]. Its version is
        /// postern's; a major rustls upgrade is a major postern release.
        pub use $crate::rustls;
        /// The sans-IO SMTP core: the client machine, the reply parser, the EHLO
        /// model, SASL, the body encoder, diagnoses.
        pub use $crate::smtp;
    };
}
