//! The transport: configuration, a connection pool, and `send`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_lock::Semaphore;
use postern_oauth::Secret;
use postern_smtp::{
    ClientConfig, ClientName, Envelope, Mechanism, ServerIdentity, Timeouts, TlsPolicy,
    TransactionReport,
};
use tracing::Instrument;

use crate::auth::{Auth, OAuth2};
use crate::connection::{Connection, Login, Target};
use crate::error::Error;
use crate::message::{Feed, Message};
use crate::runtime::Runtime;
use crate::tls::TlsOptions;

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Security {
    /// TLS from the first byte; default port 465 (RFC 8314 prefers it).
    ImplicitTls,
    /// Plaintext, then STARTTLS, which must succeed; default port 587. The
    /// default.
    #[default]
    StartTls,
    /// STARTTLS when offered, else plaintext (credentials are still never
    /// sent in clear); default port 587.
    StartTlsOpportunistic,
    /// No TLS; default port 25. Credentials need
    /// [`TransportBuilder::dangerous_allow_credentials_without_tls`].
    Plaintext,
}

impl Security {
    /// The port used when none is set.
    #[must_use]
    pub fn default_port(self) -> u16 {
        match self {
            Security::ImplicitTls => 465,
            Security::StartTls | Security::StartTlsOpportunistic => 587,
            Security::Plaintext => 25,
        }
    }

    fn policy(self) -> TlsPolicy {
        match self {
            Security::ImplicitTls => TlsPolicy::Implicit,
            Security::StartTls => TlsPolicy::StartTlsRequired,
            Security::StartTlsOpportunistic => TlsPolicy::StartTlsOpportunistic,
            Security::Plaintext => TlsPolicy::None,
        }
    }
}

/// Connection pool limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections open at once (sends beyond wait); default 4.
    pub max_connections: usize,
    /// Messages per connection before it is closed with QUIT; default 100
    /// (Exchange Online and Gmail cut sessions after a few hundred).
    pub max_messages_per_connection: u32,
    /// An idle connection older than this is closed instead of reused;
    /// default 60 s (Postfix drops idle clients after 300 s, Exchange
    /// sooner).
    pub idle_timeout: Duration,
    /// A connection idle longer than this is checked with NOOP before reuse;
    /// a younger one is reused without a round trip. Default 5 s.
    pub noop_after: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 4,
            max_messages_per_connection: 100,
            idle_timeout: Duration::from_secs(60),
            noop_after: Duration::from_secs(5),
        }
    }
}

/// Builds a [`Transport`].
#[derive(Debug)]
#[must_use]
pub struct TransportBuilder<R: Runtime> {
    rt: R,
    host: String,
    port: Option<u16>,
    security: Security,
    tls: TlsOptions,
    auth: Auth,
    mechanism: Option<Mechanism>,
    client: ClientConfig,
    connect_timeout: Duration,
    pool: PoolConfig,
}

impl<R: Runtime> TransportBuilder<R> {
    /// A builder on runtime `rt` for the server `host`.
    pub fn new(rt: R, host: impl Into<String>) -> Self {
        TransportBuilder {
            rt,
            host: host.into(),
            port: None,
            security: Security::default(),
            tls: TlsOptions::default(),
            auth: Auth::None,
            mechanism: None,
            client: ClientConfig::default(),
            connect_timeout: Duration::from_secs(30),
            pool: PoolConfig::default(),
        }
    }

    /// The port; default from [`Security::default_port`].
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The TLS mode; default [`Security::StartTls`].
    pub fn security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Certificate trust settings.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Authenticate with a password (PLAIN or LOGIN).
    pub fn password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Auth::Password {
            user: user.into(),
            password: Secret::new(password),
        };
        self
    }

    /// Authenticate with an access token obtained elsewhere (XOAUTH2 or
    /// OAUTHBEARER). It is not refreshed.
    pub fn bearer_token(mut self, user: impl Into<String>, token: impl Into<String>) -> Self {
        self.auth = Auth::BearerToken {
            user: user.into(),
            token: Secret::new(token),
        };
        self
    }

    /// Authenticate with tokens the transport fetches and refreshes.
    pub fn oauth2(mut self, oauth2: OAuth2) -> Self {
        self.auth = Auth::OAuth2(Box::new(oauth2));
        self
    }

    /// Sets the credentials.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Forces a SASL mechanism instead of the best one offered.
    pub fn mechanism(mut self, mechanism: Mechanism) -> Self {
        self.mechanism = Some(mechanism);
        self
    }

    /// The name sent in EHLO; default `[127.0.0.1]`. Use the machine's fully
    /// qualified name where the server checks it.
    pub fn ehlo_name(mut self, name: ClientName) -> Self {
        self.client.ehlo_name = name;
        self
    }

    /// Per-phase SMTP timeouts (RFC 5321 §4.5.3.2 values by default).
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.client.timeouts = timeouts;
        self
    }

    /// DNS + TCP connect (+ implicit TLS handshake) timeout; default 30 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Pool limits.
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// Every other SMTP client setting (chunking, body policies, limits).
    /// The TLS policy and server identity are set from the builder.
    pub fn client_config(mut self, config: ClientConfig) -> Self {
        self.client = config;
        self
    }

    /// **Dangerous.** Sends credentials over a connection without TLS. Only
    /// for loopback tests or a network you control end to end.
    pub fn dangerous_allow_credentials_without_tls(mut self, on: bool) -> Self {
        self.client.dangerous_allow_credentials_without_tls = on;
        self
    }

    /// Checks the settings and builds the transport. No connection is made.
    pub fn build(self) -> Result<Transport<R>, Error> {
        if self.host.is_empty() {
            return Err(Error::Config("no SMTP host".to_owned()));
        }
        crate::tls::server_name(&self.host)?;
        let port = self.port.unwrap_or(self.security.default_port());
        let mut client = self.client;
        client.tls = self.security.policy();
        client.server = ServerIdentity {
            host: Some(self.host.clone()),
            port: Some(port),
        };
        let tls = self.tls.client_config()?;
        if self.tls.accepts_invalid_certs() {
            tracing::warn!(host = %self.host, "certificate verification is OFF");
        }
        let login = Login::new(&self.auth, &tls);
        let max = self.pool.max_connections.max(1);
        Ok(Transport {
            shared: Arc::new(Shared {
                target: Target {
                    host: self.host,
                    port,
                    connect_timeout: self.connect_timeout,
                    client,
                    tls,
                    mechanism: self.mechanism,
                },
                login,
                pool: self.pool,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(max),
                shut: AtomicBool::new(false),
                opened: AtomicU64::new(0),
                reused: AtomicU64::new(0),
                rt: self.rt,
            }),
        })
    }
}

/// Sends mail through one SMTP server, reusing connections.
///
/// Cheap to clone; clones share the pool and the token cache. Call
/// [`Transport::shutdown`] to end idle sessions with QUIT.
pub struct Transport<R: Runtime> {
    shared: Arc<Shared<R>>,
}

impl<R: Runtime> Clone for Transport<R> {
    fn clone(&self) -> Self {
        Transport {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<R: Runtime> std::fmt::Debug for Transport<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("host", &self.shared.target.host)
            .field("port", &self.shared.target.port)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Shared<R: Runtime> {
    rt: R,
    target: Target,
    login: Login,
    pool: PoolConfig,
    idle: Mutex<Vec<Connection<R>>>,
    permits: Semaphore,
    shut: AtomicBool,
    opened: AtomicU64,
    reused: AtomicU64,
}

/// Counters of a transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// SMTP connections opened.
    pub connections_opened: u64,
    /// Sends that went over a connection already used before.
    pub connections_reused: u64,
    /// Requests sent to the token endpoint.
    pub token_fetches: u64,
    /// Connections idle in the pool now.
    pub idle: usize,
}

impl<R: Runtime + Default> Transport<R> {
    /// A builder for the server `host` on the default runtime handle.
    pub fn builder(host: impl Into<String>) -> TransportBuilder<R> {
        TransportBuilder::new(R::default(), host)
    }
}

impl<R: Runtime> Transport<R> {
    /// Sends `message` to the envelope's recipients.
    ///
    /// `Ok` when the server accepted the message for at least one recipient;
    /// the report says which recipients were refused. [`Error::Rejected`]
    /// when none was accepted or the message was refused; the report is in
    /// it.
    pub async fn send(
        &self,
        envelope: &Envelope,
        message: impl Into<Message>,
    ) -> Result<TransactionReport, Error> {
        let span = tracing::info_span!(
            "smtp.send",
            host = %self.shared.target.host,
            recipients = envelope.recipients.len()
        );
        self.send_inner(envelope, message.into())
            .instrument(span)
            .await
    }

    async fn send_inner(
        &self,
        envelope: &Envelope,
        mut message: Message,
    ) -> Result<TransactionReport, Error> {
        let s = &self.shared;
        if s.shut.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        if let Login::Fetched(p) = &s.login {
            p.warm(&s.rt);
        }
        let _permit = s.permits.acquire().await;
        let (mut conn, reused) = self.checkout().await?;
        let mut feed = Feed::new(&mut message);
        let mut result = conn.send(envelope, &mut feed).await;
        if reused && feed.restartable() && stale(&result, feed.consumed) {
            // The server dropped the idle session before our first command
            // got an answer: nothing was accepted, so send again on a new one.
            tracing::debug!("pooled connection was dead; reconnecting");
            feed.restart();
            conn = self.open().await?;
            result = conn.send(envelope, &mut feed).await;
        }
        match &result {
            Ok(report) => tracing::info!(
                code = report.message.as_ref().map(|r| r.code()),
                rejected = report.rejected().count(),
                "delivered"
            ),
            Err(error) => tracing::warn!(%error, "send failed"),
        }
        if conn.is_ready() {
            self.checkin(conn);
        }
        result
    }

    /// Counters, for monitoring and tests.
    #[must_use]
    pub fn stats(&self) -> TransportStats {
        let s = &self.shared;
        TransportStats {
            connections_opened: s.opened.load(Ordering::Relaxed),
            connections_reused: s.reused.load(Ordering::Relaxed),
            token_fetches: match &s.login {
                Login::Fetched(p) => p.fetches(),
                _ => 0,
            },
            idle: lock(&s.idle).len(),
        }
    }

    /// Opens a connection and authenticates without sending anything: proves
    /// the settings work. The connection stays in the pool.
    pub async fn check(&self) -> Result<(), Error> {
        let _permit = self.shared.permits.acquire().await;
        let conn = self.open().await?;
        self.checkin(conn);
        Ok(())
    }

    /// Refuses new sends and ends idle connections with QUIT. Sends in
    /// progress finish; their connections are closed afterwards.
    pub async fn shutdown(&self) {
        self.shared.shut.store(true, Ordering::Release);
        let idle: Vec<_> = std::mem::take(&mut *lock(&self.shared.idle));
        for conn in idle {
            conn.quit().await;
        }
    }

    async fn open(&self) -> Result<Connection<R>, Error> {
        let s = &self.shared;
        s.opened.fetch_add(1, Ordering::Relaxed);
        Connection::open(&s.rt, &s.target, &s.login).await
    }

    /// The most recently used live idle connection, or a new one.
    async fn checkout(&self) -> Result<(Connection<R>, bool), Error> {
        let s = &self.shared;
        loop {
            let Some(mut conn) = lock(&s.idle).pop() else {
                return Ok((self.open().await?, false));
            };
            let idle_for = s.rt.now().saturating_duration_since(conn.idle_since);
            if idle_for >= s.pool.idle_timeout {
                s.rt.spawn(conn.quit());
                continue;
            }
            if idle_for >= s.pool.noop_after
                && let Err(e) = conn.noop().await
            {
                tracing::debug!(error = %e, "idle connection failed NOOP");
                continue;
            }
            s.reused.fetch_add(1, Ordering::Relaxed);
            return Ok((conn, true));
        }
    }

    fn checkin(&self, mut conn: Connection<R>) {
        let s = &self.shared;
        if s.shut.load(Ordering::Acquire) || conn.messages >= s.pool.max_messages_per_connection {
            s.rt.spawn(conn.quit());
            return;
        }
        conn.idle_since = s.rt.now();
        lock(&s.idle).push(conn);
    }
}

/// A failure that means the pooled connection was already dead, before any
/// part of the message was sent (so nothing can have been accepted).
fn stale(result: &Result<TransactionReport, Error>, consumed: u64) -> bool {
    use postern_smtp::Error as E;
    use postern_smtp::Phase;
    let before_body = |phase: &Phase| matches!(phase, Phase::Mail | Phase::Rcpt | Phase::DataInit);
    match result {
        Err(Error::Io(_)) => consumed == 0,
        Err(Error::Smtp(e)) => match &**e {
            E::ConnectionClosed { phase } | E::ServiceUnavailable { phase, .. } => {
                before_body(phase) && consumed == 0
            }
            _ => false,
        },
        _ => false,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
