//! One SMTP connection driven by the sans-IO client (design §3.2): bytes and
//! time in, bytes and events out, nothing decided here that the core decides.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use postern_smtp::{
    Client, ClientConfig, Credentials, Envelope, Event, Mechanism, Recipient, Reply, SessionEnd,
    TransactionId, TransactionReport,
};

use crate::error::Error;
use crate::io::Conn;
use crate::message::{Fed, Feed, FeedError};
use crate::oauth2::Auth;
use crate::provider::TokenProvider;
use crate::runtime::{Deadline, Runtime, until};
use crate::tls::server_name;

/// Bytes read from the socket at a time: 16 KiB (one TLS record). Every byte
/// read goes to the client at once; nothing else is buffered.
pub const READ_BUFFER: usize = 16 * 1024;

/// The longest a connection's end (QUIT, its reply, the close) may take.
const MAX_CLOSE: std::time::Duration = std::time::Duration::from_secs(10);

/// The close (with TLS `close_notify`) gets at least this long, even when
/// the QUIT exchange used the whole [`MAX_CLOSE`].
const CLOSE_AT_LEAST: std::time::Duration = std::time::Duration::from_secs(1);

/// Poll-loop rounds with progress before yielding to the executor, so one
/// large message cannot starve other tasks on the same thread.
const BUDGET: u32 = 64;

/// Where to connect and how.
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) connect_timeout: std::time::Duration,
    pub(crate) client: ClientConfig,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) mechanism: Option<Mechanism>,
    /// Pipelining across transactions in batches (`send_all`).
    pub(crate) pipeline_transactions: bool,
}

/// The credentials in use, with the token provider when tokens are fetched.
pub(crate) enum Login {
    None,
    Fixed(Credentials),
    Fetched(Arc<TokenProvider>),
}

impl Login {
    pub(crate) fn new(
        auth: &Auth,
        tls: &Arc<rustls::ClientConfig>,
        shared: Option<Arc<crate::sharing::Coordinator>>,
    ) -> Self {
        match auth {
            Auth::None => Login::None,
            Auth::Password { user, password } => {
                Login::Fixed(Credentials::password(user.clone(), password.clone()))
            }
            Auth::BearerToken { user, token } => {
                Login::Fixed(Credentials::bearer(user.clone(), token.clone()))
            }
            Auth::OAuth2(o) => Login::Fetched(Arc::new(TokenProvider::new(
                (**o).clone(),
                Arc::clone(tls),
                shared,
            ))),
        }
    }
}

pub(crate) struct Connection<R: Runtime> {
    rt: R,
    stream: Conn<R>,
    client: Client,
    deadline: Deadline<R::Sleep>,
    buf: Box<[u8]>,
    flushed: bool,
    eof: bool,
    /// Messages sent on this connection.
    pub(crate) messages: u32,
    /// Transactions started before the previous one's reply, not yet
    /// counted by the pool.
    pipelined: u64,
    /// When the connection was last returned to the pool.
    pub(crate) idle_since: Instant,
    /// Bounds the end of a connection (QUIT and the close): the QUIT
    /// timeout, at most [`MAX_CLOSE`], so an error is never held back long.
    close_timeout: std::time::Duration,
    /// Tells this connection apart in the pool.
    pub(crate) id: u64,
    /// Its slot under a shared connection limit, released when it drops.
    pub(crate) slot: Option<crate::sharing::Slot<R>>,
}

static CONNECTION_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl<R: Runtime> Connection<R> {
    /// Connects, runs the TLS policy and the greeting/EHLO dialogue, and
    /// authenticates.
    pub(crate) async fn open(rt: &R, target: &Target, login: &Login) -> Result<Self, Error> {
        let deadline = rt.now() + target.connect_timeout;
        let timeout = || Error::ConnectTimeout {
            host: target.host.clone(),
            port: target.port,
        };
        let tcp = until(rt, deadline, rt.connect(&target.host, target.port))
            .await
            .ok_or_else(timeout)?
            .map_err(|source| Error::Connect {
                host: target.host.clone(),
                port: target.port,
                source,
            })?;
        let stream = if target.client.tls == postern_smtp::Security::ImplicitTls {
            let name = server_name(&target.host)?;
            let tls = until(
                rt,
                deadline,
                rt.tls_connect(Arc::clone(&target.tls), name, tcp),
            )
            .await
            .ok_or_else(timeout)?
            .map_err(|source| Error::Tls {
                host: target.host.clone(),
                source,
            })?;
            Conn::Tls(tls)
        } else {
            Conn::Plain(tcp)
        };
        let now = rt.now();
        let mut conn = Connection {
            rt: rt.clone(),
            stream,
            client: Client::new(target.client.clone(), now),
            deadline: Deadline::new(),
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            flushed: true,
            eof: false,
            messages: 0,
            pipelined: 0,
            idle_since: now,
            close_timeout: target.client.timeouts.quit.min(MAX_CLOSE),
            id: CONNECTION_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            slot: None,
        };
        match conn.set_up(target, login).await {
            Ok(()) => Ok(conn),
            Err(e) => {
                // A refused AUTH leaves the session usable: end it with QUIT.
                conn.finish().await;
                Err(e)
            }
        }
    }

    /// The greeting, EHLO, STARTTLS and AUTH.
    async fn set_up(&mut self, target: &Target, login: &Login) -> Result<(), Error> {
        loop {
            match self.next_event(None).await? {
                Event::Ready { tls } => {
                    tracing::debug!(tls, host = %target.host, "session ready");
                    break;
                }
                Event::StartTls => self.upgrade(target).await?,
                event => self.unexpected(event)?,
            }
        }
        self.authenticate(target, login).await
    }

    /// The TLS handshake after `220` to STARTTLS, bounded by the client's
    /// handshake deadline.
    async fn upgrade(&mut self, target: &Target) -> Result<(), Error> {
        let Conn::Plain(tcp) = std::mem::replace(&mut self.stream, Conn::Upgrading) else {
            return Err(Error::Io(io::Error::other(
                "STARTTLS on a connection that is not plaintext",
            )));
        };
        let name = server_name(&target.host)?;
        let handshake = self.rt.tls_connect(Arc::clone(&target.tls), name, tcp);
        let outcome = match self.client.poll_timeout() {
            Some(at) => until(&self.rt, at, handshake).await,
            None => Some(handshake.await),
        };
        match outcome {
            Some(Ok(tls)) => {
                self.stream = Conn::Tls(tls);
                tracing::debug!(host = %target.host, "STARTTLS handshake done");
                self.client.handle_tls_established(self.rt.now())?;
                Ok(())
            }
            Some(Err(source)) => Err(Error::Tls {
                host: target.host.clone(),
                source,
            }),
            None => {
                let _ = self.client.handle_timeout(self.rt.now());
                Err(self.client.error().cloned().map_or(
                    Error::ConnectTimeout {
                        host: target.host.clone(),
                        port: target.port,
                    },
                    Error::from,
                ))
            }
        }
    }

    /// AUTH with the configured credentials. A token the server rejects is
    /// replaced once by a freshly fetched one (never for configuration
    /// errors such as 5.7.139; the core classifies).
    async fn authenticate(&mut self, target: &Target, login: &Login) -> Result<(), Error> {
        let (mut credentials, mut generation) = match login {
            Login::None => return Ok(()),
            Login::Fixed(c) => (c.clone(), None),
            Login::Fetched(p) => {
                let issued = p.token(&self.rt).await?;
                (
                    Credentials::bearer(p.user().to_owned(), issued.token.clone()),
                    Some(issued.generation),
                )
            }
        };
        let mut retried = false;
        loop {
            let mechanism =
                self.client
                    .authenticate(self.rt.now(), &credentials, target.mechanism)?;
            tracing::debug!(mechanism = mechanism.name(), "AUTH sent");
            let failure = loop {
                match self.next_event(None).await? {
                    Event::Authenticated { mechanism, .. } => {
                        tracing::debug!(mechanism = mechanism.name(), "authenticated");
                        return Ok(());
                    }
                    Event::AuthFailed(f) => break f,
                    event => self.unexpected(event)?,
                }
            };
            tracing::warn!(
                mechanism = failure.mechanism.name(),
                code = failure.reply.code(),
                reply = %failure.reply.printable(),
                kind = ?failure.kind,
                "authentication failed"
            );
            match (login, generation) {
                (Login::Fetched(p), Some(g)) if failure.token_refresh_may_help() && !retried => {
                    retried = true;
                    p.invalidate(&self.rt, g);
                    let issued = p.token(&self.rt).await?;
                    credentials = Credentials::bearer(p.user().to_owned(), issued.token.clone());
                    generation = Some(issued.generation);
                    tracing::info!("retrying AUTH once with a fresh token");
                }
                _ => return Err(failure.into()),
            }
        }
    }

    /// One transaction. `Rejected` leaves the connection usable.
    pub(crate) async fn send(
        &mut self,
        envelope: &Envelope,
        feed: &mut Feed<'_>,
    ) -> Result<TransactionReport, Error> {
        self.client.send_envelope(self.rt.now(), envelope)?;
        self.transaction(feed).await.map_err(|e| {
            // The core knows whether the end of the message went out.
            if self.client.message_unconfirmed() {
                Error::Unconfirmed(Box::new(e))
            } else {
                e
            }
        })
    }

    /// Drives one transaction to its report.
    async fn transaction(&mut self, feed: &mut Feed<'_>) -> Result<TransactionReport, Error> {
        loop {
            match self.next_event(Some(feed)).await? {
                Event::BodyWritable { .. } => feed.start(),
                Event::Delivered(report) => {
                    self.messages += 1;
                    return Ok(report);
                }
                Event::TransactionFailed(report) => return Err(Error::Rejected(Box::new(report))),
                event => self.unexpected(event)?,
            }
        }
    }

    /// Several transactions on this connection; with `pipeline`, pipelined
    /// across transactions where the SMTP core allows it (the next envelope
    /// goes out right after a message's final `.`). `results[i]` is filled for
    /// every message with an outcome; on a connection failure the messages
    /// whose end went out without a reply get [`Error::Unconfirmed`], and
    /// the ones whose end never went out stay `None`: nothing of them was
    /// delivered, they can be sent again.
    pub(crate) async fn send_batch(
        &mut self,
        envelopes: &[&Envelope],
        feeds: &mut [Feed<'_>],
        results: &mut [Option<Result<TransactionReport, Error>>],
        pipeline: bool,
    ) -> Result<(), Error> {
        self.client.set_pipeline_transactions(pipeline);
        let result = self.send_batch_inner(envelopes, feeds, results).await;
        self.client.set_pipeline_transactions(false);
        result
    }

    async fn send_batch_inner(
        &mut self,
        envelopes: &[&Envelope],
        feeds: &mut [Feed<'_>],
        results: &mut [Option<Result<TransactionReport, Error>>],
    ) -> Result<(), Error> {
        let mut ids: Vec<Option<TransactionId>> = vec![None; envelopes.len()];
        let mut next = 0;
        let mut writing: Option<usize> = None;
        let index = |ids: &[Option<TransactionId>], id: TransactionId| {
            ids.iter().position(|x| *x == Some(id))
        };
        loop {
            // Start the next message when the core takes it: when idle, or
            // right after the current body ended (pipelining across
            // transactions).
            while next < envelopes.len()
                && writing.is_none()
                && (self.client.is_ready() || self.client.can_send_envelope())
            {
                if !self.client.is_ready() {
                    self.pipelined += 1;
                }
                match self.client.send_envelope(self.rt.now(), envelopes[next]) {
                    Ok(id) => ids[next] = Some(id),
                    Err(e) => results[next] = Some(Err(e.into())),
                }
                next += 1;
            }
            if next == envelopes.len() && results.iter().all(Option::is_some) {
                return Ok(());
            }
            let mut feed = writing.map(|i| &mut feeds[i]);
            let step = poll_fn(|cx| self.poll_step(cx, feed.as_deref_mut())).await;
            match step {
                Ok(Step::BodyEnded) => writing = None,
                Ok(Step::Event(Event::BodyWritable { id })) => {
                    if let Some(i) = index(&ids, id) {
                        feeds[i].start();
                        writing = Some(i);
                    }
                }
                Ok(Step::Event(Event::Delivered(report))) => {
                    if let Some(i) = index(&ids, report.id) {
                        self.messages += 1;
                        results[i] = Some(Ok(report));
                    }
                }
                Ok(Step::Event(Event::TransactionFailed(report))) => {
                    if let Some(i) = index(&ids, report.id) {
                        results[i] = Some(Err(Error::Rejected(Box::new(report))));
                    }
                }
                Ok(Step::Event(event)) => {
                    if let Err(e) = self.unexpected(event) {
                        return Err(self.fail_batch(e, &ids, results));
                    }
                }
                Err(e) => return Err(self.fail_batch(e, &ids, results)),
            }
        }
    }

    /// MAIL of a relayed transaction ([`Client::open_transaction`]); its
    /// reply.
    pub(crate) async fn relay_mail(&mut self, envelope: &Envelope) -> Result<Reply, Error> {
        self.client.open_transaction(self.rt.now(), envelope)?;
        self.envelope_reply(None).await
    }

    /// One RCPT of a relayed transaction; its reply.
    pub(crate) async fn relay_rcpt(&mut self, recipient: Recipient) -> Result<Reply, Error> {
        let index = self.client.add_recipient(self.rt.now(), recipient)?;
        self.envelope_reply(Some(index)).await
    }

    async fn envelope_reply(&mut self, recipient: Option<usize>) -> Result<Reply, Error> {
        loop {
            match self.next_event(None).await? {
                Event::EnvelopeReply {
                    recipient: r,
                    reply,
                    ..
                } if r == recipient => return Ok(reply),
                event => self.unexpected(event)?,
            }
        }
    }

    /// Ends a relayed envelope: `None` when the body may follow, else the
    /// refusal (the transaction is over, the connection ready again).
    pub(crate) async fn relay_data(&mut self) -> Result<Option<Reply>, Error> {
        self.client.close_envelope(self.rt.now())?;
        loop {
            match self.next_event(None).await? {
                Event::BodyWritable { .. } => return Ok(None),
                Event::TransactionFailed(report) => {
                    return Ok(Some(report.refusal()));
                }
                event => self.unexpected(event)?,
            }
        }
    }

    /// Content of a relayed transaction, written out before returning.
    pub(crate) async fn relay_write(&mut self, mut content: &[u8]) -> Result<(), Error> {
        while !content.is_empty() {
            let n = self.client.write_body(self.rt.now(), content)?;
            content = &content[n..];
            self.write_pending().await?;
        }
        Ok(())
    }

    /// The end of a relayed message and its verdict.
    pub(crate) async fn relay_finish(&mut self) -> Result<TransactionReport, Error> {
        let result = async {
            self.client.finish_body(self.rt.now())?;
            loop {
                match self.next_event(None).await? {
                    Event::Delivered(report) => {
                        self.messages += 1;
                        return Ok(report);
                    }
                    Event::TransactionFailed(report) => {
                        return Err(Error::Rejected(Box::new(report)));
                    }
                    event => self.unexpected(event)?,
                }
            }
        }
        .await;
        result.map_err(|e| {
            if self.client.message_unconfirmed() {
                Error::Unconfirmed(Box::new(e))
            } else {
                e
            }
        })
    }

    /// Gives up a relayed transaction before its body (RSET, the connection
    /// stays usable). During the body there is no way back: an error, and
    /// the caller closes the connection.
    pub(crate) async fn relay_abandon(&mut self) -> Result<(), Error> {
        self.client.abandon_envelope(self.rt.now())?;
        loop {
            match self.next_event(None).await? {
                Event::TransactionFailed(_) => return Ok(()),
                event => self.unexpected(event)?,
            }
        }
    }

    /// Writes what the client has to send.
    async fn write_pending(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_transmit_all(cx, &mut false)).await
    }

    /// Writes the client's pending bytes until none are left (`Ready`) or
    /// the socket blocks (`Pending`); `wrote` is set when any went out.
    fn poll_transmit_all(
        &mut self,
        cx: &mut Context<'_>,
        wrote: &mut bool,
    ) -> Poll<Result<(), Error>> {
        while let Some(out) = self.client.poll_transmit() {
            match self.stream.poll_write(cx, out) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => {
                    self.client.advance_transmit(n);
                    self.flushed = false;
                    *wrote = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The pipelined-transaction count since the last call.
    pub(crate) fn take_pipelined(&mut self) -> u64 {
        std::mem::take(&mut self.pipelined)
    }

    /// The connection failed during a batch: the messages whose end went out
    /// without a reply may have been delivered. The first gets the cause;
    /// any other (at most one more) a copy of its text. Returns the cause
    /// when no message took it.
    fn fail_batch(
        &self,
        error: Error,
        ids: &[Option<TransactionId>],
        results: &mut [Option<Result<TransactionReport, Error>>],
    ) -> Error {
        let mut cause = Some(error);
        let mut text = String::new();
        for id in self.client.unconfirmed_transactions() {
            let Some(i) = ids.iter().position(|x| *x == Some(id)) else {
                continue;
            };
            let inner = match cause.take() {
                Some(e) => {
                    text = e.to_string();
                    e
                }
                None => Error::Io(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    text.clone(),
                )),
            };
            results[i] = Some(Err(Error::Unconfirmed(Box::new(inner))));
        }
        cause.unwrap_or_else(|| Error::Io(io::Error::new(io::ErrorKind::ConnectionAborted, text)))
    }

    /// NOOP: is an idle connection still alive?
    pub(crate) async fn noop(&mut self) -> Result<(), Error> {
        self.client.noop(self.rt.now())?;
        loop {
            match self.next_event(None).await? {
                Event::Reply(r) if r.is_positive() => return Ok(()),
                Event::Reply(r) => return Err(Error::Reply(Box::new(r))),
                event => self.unexpected(event)?,
            }
        }
    }

    /// Ends the connection as the SMTP core says it should end
    /// ([`postern_smtp::Client::session_end`]): with QUIT when the session is
    /// usable, without another command when it failed or an exchange is half
    /// done. Either way the stream is closed, which ends a TLS session with
    /// `close_notify` first, so the server logs a clean end. Bounded by the
    /// QUIT timeout, at most [`MAX_CLOSE`].
    pub(crate) async fn finish(mut self) {
        let rt = self.rt.clone();
        let deadline = rt.now() + self.close_timeout;
        match self.client.session_end() {
            SessionEnd::Quit => {
                if self.client.quit(rt.now()).is_ok() {
                    let reply = async {
                        while let Ok(event) = self.next_event(None).await {
                            if matches!(event, Event::Closed { .. }) {
                                break;
                            }
                        }
                    };
                    if until(&rt, deadline, reply).await.is_none() {
                        tracing::debug!("no reply to QUIT in time");
                    }
                }
            }
            SessionEnd::Abandon { reason } => {
                tracing::debug!(?reason, "abandoning the session");
            }
            SessionEnd::Closed => {}
            other => tracing::debug!(?other, "ending the session"),
        }
        let close_by = deadline.max(rt.now() + CLOSE_AT_LEAST);
        if until(&rt, close_by, self.stream.close()).await.is_none() {
            tracing::debug!("closing the connection timed out");
        }
        // The connection is closed: its slot goes back before the caller
        // goes on (a process ending right after shutdown still frees it).
        if let Some(slot) = self.slot.take() {
            slot.release().await;
        }
    }
}

/// What one drive of the connection produced. Returned by value, never
/// stored: boxing the event would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// An event of the SMTP client.
    Event(Event),
    /// The message body was ended: the next transaction may start.
    BodyEnded,
}

impl<R: Runtime> Connection<R> {
    /// `true` when the connection can take another transaction.
    pub(crate) fn is_ready(&self) -> bool {
        self.client.is_ready()
    }

    /// Turns an event the caller did not expect into an error when it ends
    /// the connection; others are logged.
    fn unexpected(&self, event: Event) -> Result<(), Error> {
        match event {
            Event::Closed { error: Some(e) } => Err(e.into()),
            Event::Closed { error: None } => Err(Error::Io(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection was closed",
            ))),
            other => {
                tracing::debug!(?other, "event ignored");
                Ok(())
            }
        }
    }

    /// Drives the client until its next event: writes what it has, feeds the
    /// message body, reads the socket, fires its timer.
    async fn next_event(&mut self, mut feed: Option<&mut Feed<'_>>) -> Result<Event, Error> {
        loop {
            match poll_fn(|cx| self.poll_step(cx, feed.as_deref_mut())).await? {
                Step::Event(event) => return Ok(event),
                Step::BodyEnded => {}
            }
        }
    }

    fn poll_step(
        &mut self,
        cx: &mut Context<'_>,
        mut feed: Option<&mut Feed<'_>>,
    ) -> Poll<Result<Step, Error>> {
        for _ in 0..BUDGET {
            let mut progress = false;
            // 1. Transmit.
            if let Poll::Ready(Err(e)) = self.poll_transmit_all(cx, &mut progress) {
                return Poll::Ready(Err(e));
            }
            if !self.flushed && self.client.poll_transmit().is_none() {
                match self.stream.poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flushed = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                    Poll::Pending => {}
                }
            }
            // 2. Events.
            if let Some(event) = self.client.poll_event() {
                return Poll::Ready(Ok(Step::Event(event)));
            }
            // 3. The message body, while the client takes it.
            if let Some(f) = feed.as_deref_mut() {
                match f.poll_feed(cx, &mut self.client, self.rt.now()) {
                    Ok(Fed::Progress) => progress = true,
                    Ok(Fed::Idle) => {}
                    Err(FeedError::Source(e)) => return Poll::Ready(Err(Error::Message(e))),
                    Err(FeedError::Client(e)) => return Poll::Ready(Err(e.into())),
                }
                if f.take_ended() {
                    return Poll::Ready(Ok(Step::BodyEnded));
                }
            }
            // 4. Input.
            if !self.eof {
                match self.stream.poll_read(cx, &mut self.buf) {
                    Poll::Ready(Ok(0)) => {
                        self.eof = true;
                        if let Err(e) = self.client.handle_eof(self.rt.now()) {
                            tracing::debug!(error = %e, "server closed the connection");
                        }
                        progress = true;
                    }
                    Poll::Ready(Ok(n)) => {
                        if let Err(e) = self.client.handle_input(self.rt.now(), &self.buf[..n]) {
                            tracing::debug!(error = %e, "session failed");
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
                        progress = true
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                    Poll::Pending => {}
                }
            }
            // 5. The deadline.
            if self
                .deadline
                .poll(&self.rt, self.client.poll_timeout(), cx)
                .is_ready()
            {
                if let Err(e) = self.client.handle_timeout(self.rt.now()) {
                    tracing::debug!(error = %e, "timed out");
                }
                progress = true;
            }
            if !progress {
                if self.eof {
                    // The server is gone and the client has nothing more to
                    // say: nothing will wake this task again.
                    return Poll::Ready(Err(self.client.error().cloned().map_or_else(
                        || Error::Io(io::ErrorKind::UnexpectedEof.into()),
                        Error::from,
                    )));
                }
                return Poll::Pending;
            }
        }
        // Out of budget with work left: yield, and come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
