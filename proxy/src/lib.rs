//! postern-proxy: a local SMTP submission proxy for applications and
//! appliances that only speak SMTP with a password.
//!
//! The application logs in locally with AUTH PLAIN or LOGIN and a local
//! password; the proxy relays each of its transactions to the real
//! submission server through a postern [`Transport`] (OAuth2 XOAUTH2 or
//! OAUTHBEARER with cached, single-flight tokens, pooled connections, one
//! retry after a rejected token).
//!
//! - **Nothing is acknowledged before upstream acknowledged it.** MAIL and
//!   each RCPT go upstream as they arrive and the local client gets
//!   upstream's reply (its text stripped of control characters); the
//!   content streams through in bounded chunks; the final reply is
//!   upstream's. When upstream or its token cannot be had, the local client
//!   gets a 4xx saying why, never a 2xx.
//! - **Local access control.** Every account has a local password, stored
//!   as an Argon2 hash ([`hash_password`]), never the upstream secret. A
//!   success is remembered in memory (keyed by a salted digest, bounded,
//!   expiring) so a client that opens a session per message pays the slow
//!   hash once. A login may send only as its own mailbox or a listed alias.
//! - **Sharing.** One transport per upstream mailbox, shared by every local
//!   session: its pool bounds the upstream connections (Exchange Online
//!   allows 3 per mailbox) and its token cache makes one token request
//!   serve them all.
//!
//! The crate is runtime-neutral (it runs on the transport's [`Runtime`]);
//! the `postern proxy` command binds the listeners on tokio and reads the
//! configuration.
#![forbid(unsafe_code)]

mod auth;
mod local;
pub mod policy;
mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_smtp::{Mailbox, ServerConfig};
use postern_transport::runtime::{Runtime, Stream};
use postern_transport::{Error, Transport};

pub use auth::{check_hash, hash_password, verify_password};
pub use local::LocalTls;

/// Builds the transport for one upstream mailbox (the login's user name).
pub type UpstreamFactory<R> = Arc<dyn Fn(&str) -> Result<Transport<R>, Error> + Send + Sync>;

/// How an account reaches upstream.
#[non_exhaustive]
pub enum Upstream<R: Runtime> {
    /// One mailbox, one transport.
    One(Transport<R>),
    /// A catch-all account: a transport per mailbox that logs in, built on
    /// first use (client credentials serve any mailbox of a tenant).
    PerMailbox(UpstreamFactory<R>),
}

/// A local account.
#[non_exhaustive]
pub struct Account<R: Runtime> {
    /// The local user name: a mailbox (`app@example.com`), a catch-all for
    /// a domain (`@example.com`) or for everything (`@`).
    pub name: String,
    /// The local password's Argon2 hash (a PHC string).
    pub password_hash: String,
    /// Senders allowed besides the login's own mailbox.
    pub aliases: Vec<Mailbox>,
    /// Upstream.
    pub upstream: Upstream<R>,
}

impl<R: Runtime> Account<R> {
    /// An account; `password_hash` is checked when the proxy is built.
    pub fn new(
        name: impl Into<String>,
        password_hash: impl Into<String>,
        upstream: Upstream<R>,
    ) -> Self {
        Account {
            name: name.into(),
            password_hash: password_hash.into(),
            aliases: Vec::new(),
            upstream,
        }
    }

    /// Adds senders this account may use besides its own address.
    #[must_use]
    pub fn aliases(mut self, aliases: impl IntoIterator<Item = Mailbox>) -> Self {
        self.aliases.extend(aliases);
        self
    }
}

/// Proxy-wide settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProxySettings {
    /// How long a verified local password is remembered (default 15 min).
    pub auth_cache_ttl: Duration,
    /// How many verified logins are remembered (default 4096).
    pub auth_cache_size: usize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            auth_cache_ttl: Duration::from_secs(15 * 60),
            auth_cache_size: 4096,
        }
    }
}

postern_common::setters!(ProxySettings {
    auth_cache_ttl: Duration,
    auth_cache_size: usize,
});

/// Counters of a proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Local sessions served.
    pub sessions: u64,
    /// Upstream connections opened, over all transports.
    pub upstream_connections: u64,
    /// Token requests, over all transports.
    pub token_fetches: u64,
}

pub(crate) struct Inner<R: Runtime> {
    pub(crate) rt: R,
    pub(crate) accounts: Vec<Account<R>>,
    pub(crate) auth_cache: auth::AuthCache,
    /// Verified against for unknown users, so timing does not reveal names.
    pub(crate) dummy_hash: String,
    transports: Mutex<HashMap<(usize, String), Transport<R>>>,
    sessions: AtomicU64,
}

impl<R: Runtime> Inner<R> {
    pub(crate) fn account_index(&self, user: &str) -> Option<usize> {
        policy::find_account(&self.accounts, |a| a.name.as_str(), user)
    }

    /// The transport for `user` on account `index`.
    pub(crate) fn transport(&self, index: usize, user: &str) -> Result<Transport<R>, Error> {
        match &self.accounts[index].upstream {
            Upstream::One(t) => Ok(t.clone()),
            Upstream::PerMailbox(factory) => {
                let key = (index, user.to_ascii_lowercase());
                let mut map = self.transports.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(t) = map.get(&key) {
                    return Ok(t.clone());
                }
                let t = factory(user)?;
                map.insert(key, t.clone());
                Ok(t)
            }
        }
    }

    fn all_transports(&self) -> Vec<Transport<R>> {
        let mut all: Vec<Transport<R>> = self
            .accounts
            .iter()
            .filter_map(|a| match &a.upstream {
                Upstream::One(t) => Some(t.clone()),
                Upstream::PerMailbox(_) => None,
            })
            .collect();
        all.extend(
            self.transports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned(),
        );
        all
    }
}

/// The proxy: accounts and their upstreams. Cheap to clone; serve each
/// accepted connection with [`Proxy::serve`].
pub struct Proxy<R: Runtime> {
    inner: Arc<Inner<R>>,
}

impl<R: Runtime> Clone for Proxy<R> {
    fn clone(&self) -> Self {
        Proxy {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R: Runtime> std::fmt::Debug for Proxy<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field(
                "accounts",
                &self
                    .inner
                    .accounts
                    .iter()
                    .map(|a| &a.name)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Proxy<R> {
    /// A proxy for `accounts`. Fails when an account has no usable local
    /// password hash or two accounts share a name.
    pub fn new(rt: R, accounts: Vec<Account<R>>, settings: ProxySettings) -> Result<Self, String> {
        if accounts.is_empty() {
            return Err("no accounts: the proxy would refuse every login".into());
        }
        for (i, a) in accounts.iter().enumerate() {
            check_hash(&a.password_hash).map_err(|e| format!("account {}: {e}", a.name))?;
            if accounts[..i]
                .iter()
                .any(|b| b.name.eq_ignore_ascii_case(&a.name))
            {
                return Err(format!("account {} is listed twice", a.name));
            }
        }
        let mut salt = [0u8; 16];
        let _ = getrandom::fill(&mut salt);
        let dummy_hash = hash_password(&format!("{salt:?}"))?;
        Ok(Proxy {
            inner: Arc::new(Inner {
                rt,
                accounts,
                auth_cache: auth::AuthCache::new(settings.auth_cache_ttl, settings.auth_cache_size),
                dummy_hash,
                transports: Mutex::new(HashMap::new()),
                sessions: AtomicU64::new(0),
            }),
        })
    }

    /// Serves one accepted local connection until it ends. `config` is the
    /// listener's server configuration (its security, limits, whether AUTH
    /// is offered without TLS); `tls` runs the handshake after STARTTLS
    /// (for implicit TLS, hand over the TLS stream and
    /// `ServerSecurity::ImplicitTls`).
    pub async fn serve<S: Stream, U: LocalTls<S>>(
        &self,
        stream: S,
        config: ServerConfig,
        tls: Option<&U>,
    ) {
        self.inner.sessions.fetch_add(1, Ordering::Relaxed);
        session::Session::new(&self.inner, stream, config, tls)
            .run()
            .await;
    }

    /// Counters, summed over the upstream transports.
    pub fn stats(&self) -> ProxyStats {
        let mut stats = ProxyStats {
            sessions: self.inner.sessions.load(Ordering::Relaxed),
            ..ProxyStats::default()
        };
        for t in self.inner.all_transports() {
            let s = t.stats();
            stats.upstream_connections += s.connections_opened;
            stats.token_fetches += s.token_fetches;
        }
        stats
    }

    /// Ends the idle upstream connections with QUIT and refuses new
    /// upstream transactions (local clients then get a 4xx). Stop
    /// accepting and let the sessions in flight finish first.
    pub async fn shutdown(&self) {
        for t in self.inner.all_transports() {
            t.shutdown().await;
        }
    }
}

/// A [`LocalTls`] for listeners without STARTTLS.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTls;

impl<S: Stream> LocalTls<S> for NoTls {
    type Stream = S;
    async fn accept(&self, _plain: S) -> std::io::Result<S> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this listener has no TLS certificate",
        ))
    }
}
