//! The transport: configuration, a connection pool, and `send`.

use std::sync::Arc;
use std::time::Duration;

use postern_oauth::Secret;
use postern_smtp::{
    ClientConfig, ClientName, Envelope, Mechanism, Security, ServerIdentity, Timeouts,
    TransactionReport,
};
use tracing::Instrument;

use crate::connection::{Connection, Login, Target};
use crate::error::Error;
use crate::message::{Feed, Message};
use crate::oauth2::{Auth, OAuth2};
use crate::pool::{Pool, PoolConfig};
use crate::runtime::Runtime;
use crate::sharing::{Coordinator, Sharing};
use crate::tls::TlsOptions;

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
    pipeline_transactions: bool,
    sharing: Option<Sharing>,
    #[cfg(feature = "dkim")]
    dkim: Option<Arc<crate::dkim::Dkim>>,
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
            pipeline_transactions: false,
            sharing: None,
            #[cfg(feature = "dkim")]
            dkim: None,
        }
    }

    /// Shares the token cache and the mailbox's limits with every process
    /// using the same store (see [`Sharing`]): one token request per expiry
    /// for all of them, a rotated refresh token redeemed once, connection,
    /// message and recipient limits counted together.
    pub fn share(mut self, sharing: Sharing) -> Self {
        self.sharing = Some(sharing);
        self
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

    /// Pipelining across transactions in [`Transport::send_all`] (RFC 2920
    /// §3.1): the next MAIL, RCPT and DATA follow a message's final `.`
    /// without waiting for its reply. About one round trip per message
    /// instead of two. **Off by default**: Postfix handles it, but
    /// Dovecot 2.3's submission server fails an assertion and drops the
    /// connection (`pending_rcpt_cmds == 0` in
    /// `smtp_server_transaction_finished`), leaving the message unconfirmed.
    /// Turn it on for servers known to handle it.
    pub fn pipeline_transactions(mut self, on: bool) -> Self {
        self.pipeline_transactions = on;
        self
    }

    /// Signs every message with DKIM before it is sent. A message in memory
    /// is signed on the way; a streamed one must have been signed in a
    /// first pass ([`crate::Dkim::sign_read`], [`Message::prepend`]) and is
    /// refused with [`crate::DkimError::Streamed`] otherwise.
    #[cfg(feature = "dkim")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dkim")))]
    pub fn dkim(mut self, dkim: crate::dkim::Dkim) -> Self {
        self.dkim = Some(Arc::new(dkim));
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
        client.tls = self.security;
        client.server = ServerIdentity::new(self.host.clone(), port);
        let tls = self.tls.client_config()?;
        if self.tls.accepts_invalid_certs() {
            tracing::warn!(host = %self.host, "certificate verification is OFF");
        }
        let mailbox = match &self.auth {
            Auth::None => self.host.clone(),
            Auth::Password { user, .. } | Auth::BearerToken { user, .. } => user.clone(),
            Auth::OAuth2(o) => o.user.clone(),
        };
        let coordinator = self
            .sharing
            .map(|s| Arc::new(Coordinator::new(s, &mailbox)));
        let login = Login::new(&self.auth, &tls, coordinator.clone());
        Ok(Transport {
            shared: Arc::new(Shared {
                target: Target {
                    host: self.host,
                    port,
                    connect_timeout: self.connect_timeout,
                    client,
                    tls,
                    mechanism: self.mechanism,
                    pipeline_transactions: self.pipeline_transactions,
                },
                login,
                pool: Pool::new(
                    self.pool,
                    coordinator
                        .as_ref()
                        .and_then(|c| c.idle_hold().map(|h| (h, Arc::clone(c)))),
                ),
                coordinator,
                rt: self.rt,
                #[cfg(feature = "dkim")]
                dkim: self.dkim,
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

pub(crate) struct Shared<R: Runtime> {
    pub(crate) rt: R,
    target: Target,
    pub(crate) login: Login,
    pub(crate) pool: Pool<R>,
    pub(crate) coordinator: Option<Arc<Coordinator>>,
    #[cfg(feature = "dkim")]
    dkim: Option<Arc<crate::dkim::Dkim>>,
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
    /// Transactions started before the previous message's reply
    /// (pipelining across transactions, [`Transport::send_all`]).
    pub pipelined_transactions: u64,
    /// Connections idle in the pool now.
    pub idle: usize,
    /// The shared store failed and this process goes on alone (its own
    /// token cache and limits) until it answers again.
    pub store_degraded: bool,
    /// Messages that waited for the next window of a shared message rate.
    pub rate_waits: u64,
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

    /// The message as it goes out: DKIM-signed when the transport signs.
    fn prepare(&self, message: Message) -> Result<Message, Error> {
        #[cfg(feature = "dkim")]
        if let Some(dkim) = &self.shared.dkim {
            return match message.as_bytes() {
                Some(bytes) => Ok(Message::bytes(dkim.sign(bytes).map_err(Error::Dkim)?)),
                None if message.is_signed_stream() => Ok(message),
                None => Err(Error::Dkim(crate::dkim::DkimError::Streamed)),
            };
        }
        Ok(message)
    }

    async fn send_inner(
        &self,
        envelope: &Envelope,
        message: Message,
    ) -> Result<TransactionReport, Error> {
        if self.shared.pool.is_shut() {
            return Err(Error::Shutdown);
        }
        let message = self.prepare(message)?;
        self.send_prepared(envelope, message).await
    }

    async fn send_prepared(
        &self,
        envelope: &Envelope,
        message: Message,
    ) -> Result<TransactionReport, Error> {
        let s = &self.shared;
        let Some(c) = &s.coordinator else {
            return self.send_once(envelope, message).await;
        };
        let recipients = u64::try_from(envelope.recipients.len()).unwrap_or(u64::MAX);
        c.admit(&s.rt, recipients).await?;
        // Kept for a resend after a concurrency refusal: the same bytes,
        // shared, not copied.
        let resendable = message.share();
        let mut result = self.send_once(envelope, message).await;
        // Too many connections or submissions at once for the mailbox (the
        // core's reading of the reply): back off with jitter and try again,
        // while nothing of the message was accepted.
        for attempt in 0..3 {
            let Err(e) = &result else { break };
            let signal = e.limit_signal();
            if let Some(signal) = signal {
                c.observe(&s.rt, signal).await;
            }
            let safe = matches!(e, Error::Rejected(_))
                || matches!(e, Error::Smtp(inner) if inner.ended_before_message());
            let Some(again) = resendable
                .as_ref()
                .filter(|_| safe && signal == Some(postern_smtp::limits::LimitSignal::Concurrency))
                .and_then(Message::share)
            else {
                break;
            };
            let wait = postern_smtp::limits::backoff(attempt, crate::sharing::random_u64());
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "the server limits concurrent submissions for the mailbox: backing off"
            );
            s.rt.sleep_until(s.rt.now() + wait).await;
            result = self.send_once(envelope, again).await;
        }
        result
    }

    async fn send_once(
        &self,
        envelope: &Envelope,
        mut message: Message,
    ) -> Result<TransactionReport, Error> {
        let s = &self.shared;
        if s.pool.is_shut() {
            return Err(Error::Shutdown);
        }
        if let Login::Fetched(p) = &s.login {
            p.warm(&s.rt);
        }
        let envelope = &*message.declared(envelope);
        let _permit = s.pool.permit().await;
        let (mut conn, reused) = self.connection().await?;
        let mut feed = Feed::new(&mut message);
        let mut result = conn.send(envelope, &mut feed).await;
        if let Err(e) = &result
            && reused
            && feed.rewind_for_resend(e)
        {
            tracing::debug!("pooled connection was dead; reconnecting");
            self.replace_dead(&mut conn).await?;
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
        self.release(conn).await;
        result
    }

    /// Back to the pool when usable; otherwise closed now (with TLS
    /// `close_notify`), before the caller learns the outcome.
    async fn release(&self, conn: Connection<R>) {
        if conn.is_ready() {
            self.shared.pool.checkin(&self.shared.rt, conn);
        } else {
            conn.finish().await;
        }
    }

    /// Sends several messages over one pooled connection (several in turn
    /// when they are more than `max_messages_per_connection`). With
    /// [`TransportBuilder::pipeline_transactions`] and a server offering
    /// PIPELINING, the next MAIL, RCPT and DATA go out right after a
    /// message's final `.`, without waiting for its reply, so a batch of
    /// small messages costs about one round trip each instead of two.
    ///
    /// One result per message, in order, each as [`Transport::send`] would
    /// give it. A refused message does not affect the others. When the
    /// connection fails, a message whose end went out without a reply gets
    /// [`Error::Unconfirmed`] and is never sent again; messages of which
    /// nothing went out are sent again one by one on fresh connections.
    /// Messages go with DATA in a batch even where CHUNKING is offered
    /// (binary bodies excepted): the SMTP core never pipelines past a BDAT
    /// message.
    pub async fn send_all<I>(&self, messages: I) -> Vec<Result<TransactionReport, Error>>
    where
        I: IntoIterator<Item = (Envelope, Message)>,
    {
        let span = tracing::info_span!("smtp.send_all", host = %self.shared.target.host);
        self.send_all_inner(messages.into_iter().collect())
            .instrument(span)
            .await
    }

    async fn send_all_inner(
        &self,
        messages: Vec<(Envelope, Message)>,
    ) -> Vec<Result<TransactionReport, Error>> {
        let s = &self.shared;
        let mut results: Vec<Option<Result<TransactionReport, Error>>> =
            messages.iter().map(|_| None).collect();
        let mut batch: Vec<(usize, Envelope, Message)> = Vec::new();
        for (i, (envelope, message)) in messages.into_iter().enumerate() {
            if s.pool.is_shut() {
                results[i] = Some(Err(Error::Shutdown));
                continue;
            }
            match self.prepare(message) {
                Ok(message) => {
                    let envelope = message.declared(&envelope).into_owned();
                    if let Some(c) = &s.coordinator {
                        let n = u64::try_from(envelope.recipients.len()).unwrap_or(u64::MAX);
                        if let Err(e) = c.admit(&s.rt, n).await {
                            results[i] = Some(Err(e));
                            continue;
                        }
                    }
                    batch.push((i, envelope, message));
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if let Login::Fetched(p) = &s.login {
            p.warm(&s.rt);
        }
        // Connection by connection, each taking what it may carry
        // (`max_messages_per_connection`); what a failed connection left
        // undelivered goes one by one below.
        let mut alone = Vec::new();
        while batch.len() > 1 {
            let permit = s.pool.permit().await;
            let conn = self.connection().await.map(|(conn, _)| conn);
            let Ok(mut conn) = conn else {
                // No connection: every message tries on its own below, and
                // gets its own error.
                drop(permit);
                break;
            };
            let take = batch.len().min(s.pool.allowance(&conn));
            let later = batch.split_off(take);
            let mut indices = Vec::with_capacity(take);
            let mut envelopes = Vec::with_capacity(take);
            let mut bodies = Vec::with_capacity(take);
            for (i, envelope, message) in std::mem::replace(&mut batch, later) {
                indices.push(i);
                envelopes.push(envelope);
                bodies.push(message);
            }
            let mut sub: Vec<Option<Result<TransactionReport, Error>>> =
                indices.iter().map(|_| None).collect();
            let (outcome, untouched) = {
                let refs: Vec<&Envelope> = envelopes.iter().collect();
                let mut feeds: Vec<Feed<'_>> = bodies.iter_mut().map(Feed::new).collect();
                let pipeline = s.target.pipeline_transactions;
                let outcome = conn.send_batch(&refs, &mut feeds, &mut sub, pipeline).await;
                let untouched: Vec<bool> = feeds.iter().map(Feed::untouched).collect();
                (outcome, untouched)
            };
            if let Err(error) = &outcome {
                tracing::warn!(%error, "the batch connection failed");
            }
            s.pool.count_pipelined(conn.take_pipelined());
            self.release(conn).await;
            drop(permit);
            let items = indices.into_iter().zip(envelopes).zip(bodies);
            for ((((i, envelope), message), result), untouched) in items.zip(sub).zip(untouched) {
                match result {
                    Some(r) => results[i] = Some(r),
                    // Nothing of it was delivered: once more, alone.
                    None if untouched || message.as_bytes().is_some() => {
                        alone.push((i, envelope, message));
                    }
                    None => {
                        let cause = outcome.as_ref().err().map(ToString::to_string);
                        results[i] = Some(Err(Error::Message(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            format!(
                                "the batch failed while this streamed message was being sent \
                                 ({}); it was not delivered and cannot be read again",
                                cause.unwrap_or_default()
                            ),
                        ))));
                    }
                }
            }
        }
        batch.extend(alone);
        // One by one: a batch of one, what a failed batch left, or every
        // message when no connection could be opened (each then gets its
        // own error).
        // (Admitted above: not counted again.)
        for (i, envelope, message) in batch {
            results[i] = Some(self.send_once(&envelope, message).await);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Shutdown)))
            .collect()
    }

    /// Counters, for monitoring and tests.
    #[must_use]
    pub fn stats(&self) -> TransportStats {
        let s = &self.shared;
        let (opened, reused, pipelined, idle) = s.pool.counters();
        TransportStats {
            connections_opened: opened,
            connections_reused: reused,
            token_fetches: match &s.login {
                Login::Fetched(p) => p.fetches(),
                _ => 0,
            },
            pipelined_transactions: pipelined,
            idle,
            store_degraded: s.coordinator.as_ref().is_some_and(|c| c.is_degraded()),
            rate_waits: s.coordinator.as_ref().map_or(0, |c| c.rolls()),
        }
    }

    /// Opens a connection and authenticates without sending anything: proves
    /// the settings work. The connection stays in the pool.
    pub async fn check(&self) -> Result<(), Error> {
        let s = &self.shared;
        let _permit = s.pool.permit().await;
        let conn = self.open().await?;
        s.pool.checkin(&s.rt, conn);
        Ok(())
    }

    /// Refuses new sends and ends idle connections with QUIT. Sends in
    /// progress finish; their connections are closed afterwards.
    pub async fn shutdown(&self) {
        self.shared.pool.shutdown().await;
    }

    async fn open(&self) -> Result<Connection<R>, Error> {
        self.open_with(None).await
    }

    /// A pooled connection, or a new one. Under a shared connection limit,
    /// a caller waiting for a slot also takes a connection another task
    /// returns to the pool meanwhile.
    pub(crate) async fn connection(&self) -> Result<(Connection<R>, bool), Error> {
        let s = &self.shared;
        if let Some(conn) = s.pool.checkout(&s.rt).await {
            return Ok((conn, true));
        }
        let Some(c) = s.coordinator.as_ref().filter(|c| c.limits_connections()) else {
            return Ok((self.open_with(None).await?, false));
        };
        let deadline = s.rt.now() + c.slot_wait();
        loop {
            if let Some(slot) = c.try_slot(&s.rt).await {
                return Ok((self.open_with(Some(slot)).await?, false));
            }
            if let Some(conn) = s.pool.checkout(&s.rt).await {
                return Ok((conn, true));
            }
            c.wait_for_slot(&s.rt, deadline).await?;
        }
    }

    /// Replaces a pooled connection found dead, keeping its slot.
    pub(crate) async fn replace_dead(&self, conn: &mut Connection<R>) -> Result<(), Error> {
        let slot = conn.slot.take();
        let fresh = self.open_with(slot).await?;
        self.shared
            .rt
            .spawn(std::mem::replace(conn, fresh).finish());
        Ok(())
    }

    async fn open_with(
        &self,
        slot: Option<crate::sharing::Slot<R>>,
    ) -> Result<Connection<R>, Error> {
        let s = &self.shared;
        let slot = match (slot, &s.coordinator) {
            (Some(slot), _) => Some(slot),
            (None, Some(c)) => c.acquire_slot(&s.rt, s.rt.now() + c.slot_wait()).await?,
            (None, None) => None,
        };
        s.pool.count_opened();
        let mut conn = Connection::open(&s.rt, &s.target, &s.login).await?;
        conn.slot = slot;
        Ok(conn)
    }

    pub(crate) async fn release_connection(&self, conn: Connection<R>) {
        self.release(conn).await;
    }

    pub(crate) fn shared(&self) -> &Shared<R> {
        &self.shared
    }
}
