//! One local session: the server machine over the local stream, each of its
//! questions answered from the accounts and from upstream.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures_io::AsyncRead;
use futures_util::AsyncWriteExt;
use postern_smtp::{
    AuthRequest, Envelope, MailRequest, Mailbox, Reply, Server, ServerConfig, ServerEvent,
};
use postern_transport::runtime::{Runtime, Sleep, Stream};
use postern_transport::{Error, RelayData, RelayStart, RelayTransaction, Transport};

use crate::local::{Local, LocalTls};
use crate::policy::{check_sender, lacks_extension, upstream_body, upstream_failure};
use crate::{Account, Inner};

/// Bytes read from the local client at a time.
const READ_BUFFER: usize = 16 * 1024;

/// The transaction being relayed.
struct Relayed<R: Runtime> {
    upstream: Option<RelayTransaction<R>>,
    /// Upstream failed during the content: the message gets this 4xx.
    failed: Option<Reply>,
    from: String,
    recipients: usize,
    started: Instant,
}

pub(crate) struct Session<'a, R: Runtime, S, U: LocalTls<S>> {
    inner: &'a Arc<Inner<R>>,
    local: Local<S, U::Stream>,
    tls: Option<&'a U>,
    server: Server,
    /// The account and mailbox of the login, with its transport.
    login: Option<(usize, String, Transport<R>)>,
    txn: Option<Relayed<R>>,
    sleep: Option<R::Sleep>,
}

impl<'a, R: Runtime, S: Stream, U: LocalTls<S>> Session<'a, R, S, U> {
    pub(crate) fn new(
        inner: &'a Arc<Inner<R>>,
        stream: S,
        config: ServerConfig,
        tls: Option<&'a U>,
    ) -> Self {
        let server = Server::new(config, inner.rt.now());
        Session {
            inner,
            local: Local::Plain(stream),
            tls,
            server,
            login: None,
            txn: None,
            sleep: None,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            if self.flush().await.is_err() {
                break;
            }
            let mut closed = false;
            while let Some(event) = self.server.poll_event() {
                closed |= matches!(event, ServerEvent::Closed { .. });
                self.on_event(event).await;
                if self.flush().await.is_err() {
                    closed = true;
                    break;
                }
            }
            if closed || self.server.is_closed() {
                break;
            }
            if !self.server.wants_input() {
                // Only while a question is open, which on_event answered.
                continue;
            }
            match self.read(&mut buf).await {
                Read::Data(n) => {
                    let _ = self.server.handle_input(self.inner.rt.now(), &buf[..n]);
                }
                Read::Eof => {
                    let _ = self.server.handle_eof(self.inner.rt.now());
                }
                Read::Timeout => {
                    let _ = self.server.handle_timeout(self.inner.rt.now());
                }
                Read::Failed => {
                    let _ = self.server.handle_eof(self.inner.rt.now());
                }
            }
        }
        if let Some(txn) = self.txn.take()
            && let Some(upstream) = txn.upstream
        {
            upstream.abandon().await;
        }
        let _ = self.local.close().await;
    }

    async fn flush(&mut self) -> io::Result<()> {
        while let Some(bytes) = self.server.poll_transmit() {
            let n = self.local.write(bytes).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.server.advance_transmit(n);
        }
        self.local.flush().await
    }

    async fn read(&mut self, buf: &mut [u8]) -> Read {
        let deadline = self.server.poll_timeout();
        let rt = self.inner.rt.clone();
        let local = &mut self.local;
        let sleep = &mut self.sleep;
        if let Some(at) = deadline {
            match sleep {
                Some(s) => s.reset(at),
                None => *sleep = Some(rt.sleep_until(at)),
            }
        }
        poll_fn(|cx| {
            match Pin::new(&mut *local).poll_read(cx, buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Read::Eof),
                Poll::Ready(Ok(n)) => return Poll::Ready(Read::Data(n)),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Read::Failed),
                Poll::Pending => {}
            }
            if deadline.is_some()
                && let Some(s) = sleep.as_mut()
                && Pin::new(s).poll(cx).is_ready()
            {
                return Poll::Ready(Read::Timeout);
            }
            Poll::Pending
        })
        .await
    }

    async fn on_event(&mut self, event: ServerEvent) {
        let now = self.inner.rt.now();
        match event {
            ServerEvent::StartTls => self.start_tls().await,
            ServerEvent::Authenticate(request) => {
                let reply = self.authenticate(&request).await;
                let _ = self.server.answer(now, reply);
            }
            ServerEvent::Mail(mail) => {
                let reply = self.mail(mail).await;
                let _ = self.server.answer(self.inner.rt.now(), reply);
            }
            ServerEvent::Rcpt(to) => {
                let reply = self.rcpt(to).await;
                let _ = self.server.answer(self.inner.rt.now(), reply);
            }
            ServerEvent::Data { .. } => {
                let reply = self.data().await;
                let _ = match reply {
                    None => self.server.accept(self.inner.rt.now()),
                    Some(reply) => self.server.answer(self.inner.rt.now(), reply),
                };
            }
            ServerEvent::BodyChunk(bytes) => self.content(&bytes).await,
            ServerEvent::MessageRefused(reply) => {
                tracing::info!(code = reply.code(), "message refused by the proxy's limits");
                if let Some(txn) = self.txn.take()
                    && let Some(upstream) = txn.upstream
                {
                    upstream.abandon().await;
                }
            }
            ServerEvent::MessageEnd { size } => {
                let reply = self.finish(size).await;
                let _ = self.server.answer(self.inner.rt.now(), reply);
            }
            ServerEvent::Reset => {
                if let Some(txn) = self.txn.take()
                    && let Some(upstream) = txn.upstream
                {
                    upstream.abandon().await;
                }
            }
            ServerEvent::Hello { .. } => {}
            ServerEvent::Closed { error: Some(e) } => {
                tracing::info!(error = %e, "local session ended");
            }
            _ => {}
        }
    }

    async fn start_tls(&mut self) {
        if self.flush().await.is_err() {
            return;
        }
        let (Some(tls), Local::Plain(_)) = (self.tls, &self.local) else {
            self.local = Local::Gone;
            return;
        };
        let Local::Plain(plain) = std::mem::replace(&mut self.local, Local::Gone) else {
            return;
        };
        match tls.accept(plain).await {
            Ok(stream) => {
                self.local = Local::Tls(stream);
                let _ = self.server.handle_tls_established(self.inner.rt.now());
            }
            Err(e) => {
                tracing::info!(error = %e, "local TLS handshake failed");
                let _ = self.server.handle_eof(self.inner.rt.now());
            }
        }
    }

    async fn authenticate(&mut self, request: &AuthRequest) -> Reply {
        let refused = || {
            Reply::new(535, &["5.7.8 Authentication credentials invalid"])
                .expect("a constant reply is valid")
        };
        let inner = self.inner;
        let Some(index) = inner.account_index(&request.username) else {
            // The same work as a real check, so timing does not tell which
            // user names exist.
            let _ = crate::auth::verify_password(&inner.dummy_hash, request.password.expose());
            tracing::info!(user = %postern_common::sanitize(&request.username, 200), "local login refused: no such account");
            return refused();
        };
        let account = &inner.accounts[index];
        let now = inner.rt.now();
        let password = request.password.expose();
        let known =
            inner
                .auth_cache
                .contains(now, &request.username, password, &account.password_hash);
        if !known && !crate::auth::verify_password(&account.password_hash, password) {
            tracing::info!(user = %postern_common::sanitize(&request.username, 200), "local login refused: wrong password");
            return refused();
        }
        if !known {
            inner
                .auth_cache
                .insert(now, &request.username, password, &account.password_hash);
        }
        match inner.transport(index, &request.username) {
            Ok(transport) => {
                self.login = Some((index, request.username.clone(), transport));
                Reply::new(235, &["2.7.0 Authentication successful"])
                    .expect("a constant reply is valid")
            }
            Err(e) => {
                tracing::warn!(error = %e, "no upstream for this login");
                upstream_failure(&e)
            }
        }
    }

    fn account(&self) -> Option<&Account<R>> {
        self.login
            .as_ref()
            .map(|(i, _, _)| &self.inner.accounts[*i])
    }

    async fn mail(&mut self, mail: MailRequest) -> Reply {
        let Some((_, user, transport)) = &self.login else {
            return Reply::new(530, &["5.7.0 Authentication required"])
                .expect("a constant reply is valid");
        };
        let aliases = self.account().map_or(&[][..], |a| &a.aliases[..]);
        if let Err(refusal) = check_sender(user, aliases, &mail.from) {
            tracing::info!(
                user = %postern_common::sanitize(user, 200),
                from = %postern_common::sanitize(&mail.from.to_string(), 300),
                "sender refused"
            );
            return refusal;
        }
        let mut envelope = Envelope::new(mail.from.clone(), std::iter::empty::<Mailbox>());
        envelope.size = mail.size;
        envelope.smtputf8 = mail.smtputf8;
        // Legacy clients send 8-bit text without declaring it; upstream is
        // told 8BITMIME when it offers it (declaring it for 7-bit text is
        // allowed), else the client's own declaration is used.
        envelope.body = upstream_body(mail.body);
        let transport = transport.clone();
        let started = self.inner.rt.now();
        let mut result = transport.relay(&envelope).await;
        if envelope.body != mail.body
            && result.as_ref().is_err_and(|e| lacks_extension(e).is_some())
        {
            envelope.body = mail.body;
            result = transport.relay(&envelope).await;
        }
        match result {
            Ok(RelayStart::Open(upstream, reply)) => {
                self.txn = Some(Relayed {
                    upstream: Some(upstream),
                    failed: None,
                    from: mail.from.to_string(),
                    recipients: 0,
                    started,
                });
                reply.relayable()
            }
            Ok(RelayStart::Refused(reply)) => reply.relayable(),
            Ok(_) => upstream_failure(&Error::Shutdown),
            Err(e) => {
                tracing::warn!(error = %e, "upstream MAIL failed");
                upstream_failure(&e)
            }
        }
    }

    async fn rcpt(&mut self, to: Mailbox) -> Reply {
        let Some(txn) = self.txn.as_mut() else {
            return Reply::new(503, &["5.5.1 MAIL first"]).expect("a constant reply is valid");
        };
        let Some(upstream) = txn.upstream.as_mut() else {
            return txn
                .failed
                .clone()
                .unwrap_or_else(|| upstream_failure(&Error::Shutdown));
        };
        match upstream.rcpt(to).await {
            Ok(reply) => {
                if reply.is_positive() {
                    txn.recipients += 1;
                }
                reply.relayable()
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream RCPT failed");
                let reply = upstream_failure(&e);
                txn.upstream = None;
                txn.failed = Some(reply.clone());
                reply
            }
        }
    }

    /// `None`: go ahead (354 locally).
    async fn data(&mut self) -> Option<Reply> {
        let Some(txn) = self.txn.as_mut() else {
            return Some(upstream_failure(&Error::Shutdown));
        };
        let Some(upstream) = txn.upstream.take() else {
            return Some(
                txn.failed
                    .clone()
                    .unwrap_or_else(|| upstream_failure(&Error::Shutdown)),
            );
        };
        match upstream.data().await {
            Ok(RelayData::Body(upstream)) => {
                txn.upstream = Some(upstream);
                None
            }
            Ok(RelayData::Refused(refusal)) => {
                self.txn = None;
                Some(refusal.relayable())
            }
            Ok(_) => {
                self.txn = None;
                Some(upstream_failure(&Error::Shutdown))
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream DATA failed");
                self.txn = None;
                Some(upstream_failure(&e))
            }
        }
    }

    async fn content(&mut self, bytes: &[u8]) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let Some(upstream) = txn.upstream.as_mut() else {
            return;
        };
        if let Err(e) = upstream.write(bytes).await {
            tracing::warn!(error = %e, "upstream failed during the message");
            txn.failed = Some(upstream_failure(&e));
            // Dropping the transaction closes its connection: DATA cannot
            // be aborted any other way, and nothing is delivered.
            txn.upstream = None;
        }
    }

    async fn finish(&mut self, size: u64) -> Reply {
        let Some(mut txn) = self.txn.take() else {
            return upstream_failure(&Error::Shutdown);
        };
        let user = self
            .login
            .as_ref()
            .map_or("", |(_, u, _)| u.as_str())
            .to_owned();
        let reply = match (txn.upstream.take(), txn.failed.take()) {
            (Some(upstream), None) => match upstream.finish().await {
                Ok(report) => report
                    .message
                    .map(|r| r.relayable())
                    .unwrap_or_else(|| upstream_failure(&Error::Shutdown)),
                Err(Error::Rejected(report)) => report.refusal().relayable(),
                Err(e) => {
                    tracing::warn!(error = %e, "upstream did not take the message");
                    upstream_failure(&e)
                }
            },
            (_, Some(failed)) => failed,
            (None, None) => upstream_failure(&Error::Shutdown),
        };
        tracing::info!(
            user = %postern_common::sanitize(&user, 200),
            from = %postern_common::sanitize(&txn.from, 300),
            recipients = txn.recipients,
            size,
            reply = %reply.printable(),
            code = reply.code(),
            ms = self.inner.rt.now().saturating_duration_since(txn.started).as_millis() as u64,
            "relayed"
        );
        reply
    }
}

enum Read {
    Data(usize),
    Eof,
    Timeout,
    Failed,
}
