//! postern-transport: the runtime-neutral half of postern's SMTP transports.
//!
//! Users depend on `postern-tokio` or `postern-async-std`, which re-export
//! this crate's types with the runtime filled in. This crate holds what the
//! two share, written once against the small [`Runtime`] trait:
//!
//! - the loop that drives the sans-IO [`postern_smtp::Client`] over a socket
//!   (design §3.2): every byte read goes to the client, one reusable timer
//!   follows [`postern_smtp::Client::poll_timeout`], STARTTLS upgrades the
//!   same socket with nothing buffered in between;
//! - the OAuth2 token provider: one [`postern_oauth::TokenCache`] per
//!   transport, fetched over HTTPS with postern-oauth's HTTP/1.1 requests,
//!   single flight across tasks, refreshed ahead of expiry in the background,
//!   invalidated and fetched once more when the SMTP server rejects a token;
//! - the connection pool, rustls configuration and the error type.
//!
//! No protocol decision lives here: the cores decide (which mechanism, what
//! a reply means, whether a fresh token may help); this crate moves bytes,
//! time and events.
#![forbid(unsafe_code)]

mod connection;
#[cfg(feature = "mail-builder")]
mod email;
mod error;
mod http;
mod io;
mod message;
mod oauth2;
mod pool;
mod provider;
mod runtime;
mod tls;
mod transport;

pub use connection::READ_BUFFER;
#[cfg(feature = "mail-builder")]
pub use email::Email;
pub use error::Error;
pub use http::{fetch_token, http_exchange};
pub use message::{Message, READ_CHUNK};
pub use oauth2::{Assertion, Auth, ClientCredential, OAuth2, TokenGrant};
pub use pool::PoolConfig;
pub use runtime::{Runtime, Sleep, Stream};
pub use tls::{TlsOptions, crypto_provider};
pub use transport::{Transport, TransportBuilder, TransportStats};

/// The sans-IO OAuth2 crate.
pub use postern_oauth as oauth;
pub use postern_oauth::{CacheConfig, Endpoint, MicrosoftCloud, TokenResponse};
/// The sans-IO SMTP client crate.
pub use postern_smtp as smtp;
pub use postern_smtp::{
    AuthFailure, AuthFailureKind, ClientConfig, ClientName, Diagnosis, Envelope, Mailbox,
    Mechanism, RecipientResult, Reply, Secret, Security, Stage, Timeouts, TransactionReport,
};
/// rustls, for callers that build their own configuration.
pub use rustls;
