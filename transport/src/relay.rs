//! A transaction relayed one command at a time on a pooled, authenticated
//! connection: what a submission proxy needs to pass its own client's MAIL,
//! each RCPT, DATA and the content upstream as they arrive, and to answer
//! each with upstream's own reply.
//!
//! The connection comes from the transport's pool under its connection
//! limit and goes back when the transaction ends; tokens come from the
//! transport's provider (one refresh and one retry after a rejected token,
//! as for [`Transport::send`]).

use async_lock::SemaphoreGuardArc;
use postern_smtp::{Envelope, Recipient, Reply, TransactionReport};

use crate::connection::Connection;
use crate::error::Error;
use crate::runtime::Runtime;
use crate::transport::Transport;

/// How [`Transport::relay`] ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum RelayStart<R: Runtime> {
    /// MAIL was accepted (the reply): send the recipients.
    Open(RelayTransaction<R>, Reply),
    /// MAIL was refused with this reply; nothing is open.
    Refused(Reply),
}

/// How [`RelayTransaction::data`] ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum RelayData<R: Runtime> {
    /// Upstream takes the content: the transaction, now in its body.
    Body(RelayTransaction<R>),
    /// Upstream refused; nothing is open.
    Refused(Reply),
}

/// An open relayed transaction. End it with [`RelayTransaction::finish`]
/// after the content, or [`RelayTransaction::abandon`]; dropped otherwise,
/// its connection is closed (never reused half-way through a transaction).
pub struct RelayTransaction<R: Runtime> {
    transport: Transport<R>,
    /// Boxed: a connection is about 1 KiB, moved with every call result.
    conn: Option<Box<Connection<R>>>,
    _permit: SemaphoreGuardArc,
}

impl<R: Runtime> std::fmt::Debug for RelayTransaction<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayTransaction")
            .field("open", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Transport<R> {
    /// Starts a relayed transaction: takes a pooled connection (or opens
    /// one, waiting while the pool's connection limit is reached) and sends
    /// MAIL for `envelope` (its `from`, `size`, `body` and `smtputf8`; its
    /// recipients, if any, go with it). A pooled connection found dead
    /// before MAIL's reply is replaced once: nothing of a message was sent.
    pub async fn relay(&self, envelope: &Envelope) -> Result<RelayStart<R>, Error> {
        let s = self.shared();
        if s.pool.is_shut() {
            return Err(Error::Shutdown);
        }
        if let crate::connection::Login::Fetched(p) = &s.login {
            p.warm(&s.rt);
        }
        // Shared limits: the message (and the recipients known now; a relay
        // adds the rest one by one) counted before anything goes out.
        if let Some(c) = &s.coordinator {
            let n = u64::try_from(envelope.recipients.len().max(1)).unwrap_or(u64::MAX);
            c.admit(&s.rt, n).await?;
        }
        let permit = s.pool.permit_arc().await;
        let (mut conn, reused) = self.connection().await?;
        let mut result = conn.relay_mail(envelope).await;
        if result.is_err() && reused {
            tracing::debug!("pooled connection was dead; reconnecting");
            self.replace_dead(&mut conn).await?;
            result = conn.relay_mail(envelope).await;
        }
        match result {
            Ok(reply) if reply.is_positive() => Ok(RelayStart::Open(
                RelayTransaction {
                    transport: self.clone(),
                    conn: Some(Box::new(conn)),
                    _permit: permit,
                },
                reply,
            )),
            Ok(reply) => {
                let _ = conn.relay_abandon().await;
                self.release_connection(conn).await;
                Ok(RelayStart::Refused(reply))
            }
            Err(e) => {
                self.release_connection(conn).await;
                Err(e)
            }
        }
    }
}

impl<R: Runtime> RelayTransaction<R> {
    /// The connection. It is only taken by the methods that end the
    /// transaction, which consume it, so it is always there; `Shutdown`
    /// stands for the impossible case.
    fn conn(&mut self) -> Result<&mut Connection<R>, Error> {
        self.conn.as_deref_mut().ok_or(Error::Shutdown)
    }

    /// Sends RCPT and returns upstream's reply to it.
    pub async fn rcpt(&mut self, recipient: impl Into<Recipient>) -> Result<Reply, Error> {
        self.conn()?.relay_rcpt(recipient.into()).await
    }

    /// Ends the envelope. [`RelayData::Body`]: upstream takes the content
    /// (write it with [`RelayTransaction::write`]). [`RelayData::Refused`]:
    /// upstream refused (the DATA reply, or a reply saying no recipient was
    /// accepted) and the transaction is over.
    pub async fn data(mut self) -> Result<RelayData<R>, Error> {
        match self.conn()?.relay_data().await? {
            None => Ok(RelayData::Body(self)),
            Some(refusal) => {
                self.release().await;
                Ok(RelayData::Refused(refusal))
            }
        }
    }

    /// Passes content bytes on (line ends made CRLF and dots stuffed by the
    /// SMTP core). Returns once they are written to the connection.
    pub async fn write(&mut self, content: &[u8]) -> Result<(), Error> {
        self.conn()?.relay_write(content).await
    }

    /// Ends the content and returns upstream's verdict: `Ok` with the
    /// report when the message was accepted, [`Error::Rejected`] when it was
    /// refused, [`Error::Unconfirmed`] when the end went out and the
    /// connection failed before the reply (the message may have been
    /// delivered).
    pub async fn finish(mut self) -> Result<TransactionReport, Error> {
        let result = self.conn()?.relay_finish().await;
        self.release().await;
        result
    }

    /// Gives the transaction up: RSET before the content (the connection
    /// goes back to the pool), or closes the connection during it (the only
    /// way to abort DATA; nothing is delivered).
    pub async fn abandon(mut self) {
        if let Some(conn) = self.conn.as_mut()
            && conn.relay_abandon().await.is_err()
        {
            tracing::debug!("upstream transaction abandoned by closing the connection");
        }
        self.release().await;
    }

    async fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.transport.release_connection(*conn).await;
        }
    }
}

impl<R: Runtime> Drop for RelayTransaction<R> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.transport.shared().rt.spawn(conn.finish());
        }
    }
}
