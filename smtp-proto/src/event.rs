//! What the client machine tells its driver.

use std::fmt;

use crate::address::Mailbox;
use crate::body::BodyStats;
use crate::diagnose::{Context, Diagnosis, diagnose};
use crate::error::Error;
use crate::reply::Reply;
use crate::sasl::Mechanism;

/// Identifies one transaction on a connection, in the order they were started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub u64);

/// An event from [`crate::Client::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum Event {
    /// The session is set up (greeting, EHLO, and STARTTLS with the second EHLO
    /// when it applies): the machine takes AUTH and transactions now.
    Ready {
        /// `true` when the connection is encrypted (implicit TLS or STARTTLS).
        tls: bool,
    },
    /// The server agreed to STARTTLS. The driver must now run the TLS handshake
    /// on the same socket, with no buffered plaintext in between, and then call
    /// [`crate::Client::handle_tls_established`].
    StartTls,
    /// AUTH succeeded.
    Authenticated {
        /// The mechanism used.
        mechanism: Mechanism,
        /// The `235` reply.
        reply: Reply,
    },
    /// AUTH failed; the connection stays usable for another attempt.
    AuthFailed(AuthFailure),
    /// The server is ready for the message body: feed it with
    /// [`crate::Client::write_body`] and end it with
    /// [`crate::Client::finish_body`].
    BodyWritable {
        /// The transaction.
        id: TransactionId,
    },
    /// A MAIL (`recipient` is `None`) or RCPT reply of a transaction started
    /// with [`crate::Client::open_transaction`], as it arrives: a relay
    /// passes it on to its own client. The outcome comes later as usual.
    EnvelopeReply {
        /// The transaction.
        id: TransactionId,
        /// The recipient's index, for a RCPT reply.
        recipient: Option<usize>,
        /// The reply.
        reply: Reply,
    },
    /// The message was accepted for at least one recipient. Rejected recipients,
    /// if any, are in the report.
    Delivered(TransactionReport),
    /// The message was not accepted for any recipient. The client has sent RSET
    /// (when the dialogue allows it), so the connection stays usable.
    TransactionFailed(TransactionReport),
    /// The reply to an explicit RSET or NOOP.
    Reply(Reply),
    /// The connection is over: after QUIT (`error` is `None`) or a fatal error.
    /// The driver closes the socket. Nothing is sent after this event.
    Closed {
        /// The fatal error, if the connection failed.
        error: Option<Error>,
    },
}

/// The outcome of one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecipientResult {
    /// The recipient.
    pub mailbox: Mailbox,
    /// The reply to its RCPT, or `None` when RCPT was never sent for it (MAIL
    /// failed without pipelining).
    pub reply: Option<Reply>,
}

impl RecipientResult {
    /// The outcome for `mailbox`: `reply` to its RCPT, if one came.
    #[must_use]
    pub fn new(mailbox: Mailbox, reply: Option<Reply>) -> Self {
        RecipientResult { mailbox, reply }
    }

    /// `true` when the server accepted the recipient.
    #[must_use]
    pub fn accepted(&self) -> bool {
        self.reply.as_ref().is_some_and(Reply::is_positive)
    }
}

/// Everything the server said about one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransactionReport {
    /// The transaction.
    pub id: TransactionId,
    /// The reply to MAIL FROM.
    pub mail: Option<Reply>,
    /// One entry per recipient, in envelope order.
    pub recipients: Vec<RecipientResult>,
    /// The reply to DATA (`354` or a refusal); `None` with BDAT or when DATA was
    /// not sent.
    pub data: Option<Reply>,
    /// The reply after the message (end of data, or the last BDAT), or the BDAT
    /// reply that failed.
    pub message: Option<Reply>,
    /// Counts from the body encoder.
    pub body: BodyStats,
}

/// A reply from constant text (the simulated replies below).
fn canned(text: &str) -> Option<Reply> {
    let wire = format!("{text}\r\n");
    match crate::reply::ReplyParser::default().parse(wire.as_bytes()) {
        Ok((_, reply)) => reply,
        Err(_) => None,
    }
}

impl TransactionReport {
    /// The report of a transaction a server took for every recipient
    /// (`refusal` is `None`), or in which it refused every recipient with
    /// `refusal`: what a stub transport in an application's tests returns.
    #[must_use]
    pub fn simulated(
        id: TransactionId,
        recipients: impl IntoIterator<Item = Mailbox>,
        refusal: Option<Reply>,
        body: BodyStats,
    ) -> Self {
        let accepted = refusal.is_none();
        TransactionReport {
            id,
            mail: canned("250 2.1.0 Ok"),
            recipients: recipients
                .into_iter()
                .map(|mailbox| RecipientResult {
                    mailbox,
                    reply: refusal.clone().or_else(|| canned("250 2.1.5 Ok")),
                })
                .collect(),
            data: accepted
                .then(|| canned("354 End data with <CR><LF>.<CR><LF>"))
                .flatten(),
            message: accepted.then(|| canned("250 2.0.0 Ok: queued")).flatten(),
            body,
        }
    }

    /// The reply that decided a failed transaction, for a relay to pass
    /// on: the refused message's, else a refused DATA's, else a refused
    /// MAIL's, else the first refused recipient's, else
    /// `554 5.5.1 No valid recipients`.
    #[must_use]
    pub fn refusal(&self) -> Reply {
        let refused = |r: &Option<Reply>| {
            r.as_ref()
                .filter(|r| !r.is_positive() && r.code() != 354)
                .cloned()
        };
        refused(&self.message)
            .or_else(|| refused(&self.data))
            .or_else(|| refused(&self.mail))
            .or_else(|| self.recipients.iter().find_map(|r| refused(&r.reply)))
            .unwrap_or_else(|| {
                Reply::new(554, &["5.5.1 No valid recipients"]).expect("a constant reply is valid")
            })
    }

    /// Recipients the server accepted.
    pub fn accepted(&self) -> impl Iterator<Item = &RecipientResult> {
        self.recipients.iter().filter(|r| r.accepted())
    }

    /// Recipients the server did not accept.
    pub fn rejected(&self) -> impl Iterator<Item = &RecipientResult> {
        self.recipients.iter().filter(|r| !r.accepted())
    }

    /// `true` when the message was accepted for every recipient.
    #[must_use]
    pub fn all_accepted(&self) -> bool {
        self.message.as_ref().is_some_and(Reply::is_positive)
            && self.recipients.iter().all(RecipientResult::accepted)
    }

    /// What the client was doing when the decisive reply came: MAIL, RCPT
    /// (every recipient refused), or the message (DATA or its end).
    #[must_use]
    pub fn context(&self) -> Context {
        if failed(&self.mail).is_some() {
            Context::Mail
        } else if self.recipient_refusal().is_some() {
            Context::Rcpt
        } else if self.message.is_some() || self.data.is_some() {
            Context::Data
        } else {
            Context::Rcpt
        }
    }

    /// `true` when the refusal was temporary: the same message may be
    /// accepted later. When every recipient was refused, the recipients'
    /// replies decide (a `4xx` for any of them), not a `554 no valid
    /// recipients` to the pipelined DATA that follows from them.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.decisive_reply().is_some_and(Reply::is_transient)
    }

    /// What the decisive reply says about the mailbox's sending limits
    /// ([`crate::limits::classify`]).
    #[must_use]
    pub fn limit_signal(&self) -> Option<crate::limits::LimitSignal> {
        self.decisive_reply().and_then(crate::limits::classify)
    }

    /// The admin diagnosis of the decisive reply, when it is a known one.
    #[must_use]
    pub fn diagnosis(&self) -> Option<Diagnosis> {
        diagnose(self.context(), self.decisive_reply()?)
    }

    /// The reply that decided a failure: a refused MAIL; else, when no
    /// recipient was accepted, a recipient's refusal (a temporary one first,
    /// since those recipients may be accepted later); else the refused
    /// message or DATA; else, for a partial delivery, the last recipient
    /// refusal.
    #[must_use]
    pub fn decisive_reply(&self) -> Option<&Reply> {
        failed(&self.mail)
            .or_else(|| self.recipient_refusal())
            .or_else(|| failed(&self.message))
            .or_else(|| failed(&self.data))
            .or_else(|| self.recipients.iter().rev().find_map(|r| failed(&r.reply)))
    }

    /// When no recipient was accepted: the first temporary refusal, else
    /// the first refusal.
    fn recipient_refusal(&self) -> Option<&Reply> {
        if self.recipients.iter().any(RecipientResult::accepted) {
            return None;
        }
        let refusals = || self.recipients.iter().filter_map(|r| failed(&r.reply));
        refusals()
            .find(|r| r.is_transient())
            .or_else(|| refusals().next())
    }
}

/// A reply that refused something (neither positive nor `354`/`334`).
fn failed(r: &Option<Reply>) -> Option<&Reply> {
    r.as_ref()
        .filter(|r| !r.is_positive() && !r.is_intermediate())
}

/// Why AUTH failed, as far as the client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthFailureKind {
    /// A token mechanism got a permanent refusal that a fresh token may cure
    /// (expired or revoked token, wrong scope): fetch a new token once and try
    /// again, once.
    TokenRejected,
    /// The user name or password was refused.
    CredentialsRejected,
    /// A temporary failure (`454 4.7.0`: the server could not check the
    /// credentials, for example its token introspection was down). Try later.
    Temporary,
    /// A setting on the server side refuses this login whatever the
    /// credentials (`5.7.139` SMTP AUTH disabled, `504` mechanism unknown,
    /// `523`/`530`/`538` encryption required). Retrying will not help.
    Configuration,
    /// The client cancelled the exchange (`*`) because the server kept
    /// challenging, or challenged a mechanism that takes no challenge.
    Cancelled,
}

/// The details of a failed AUTH.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthFailure {
    /// The mechanism tried.
    pub mechanism: Mechanism,
    /// The final reply.
    pub reply: Reply,
    /// The decoded error challenge the server sent before the final reply (for
    /// XOAUTH2 and OAUTHBEARER a JSON document such as
    /// `{"status":"401","schemes":"bearer","scope":"..."}`), when there was one.
    pub challenge: Option<Vec<u8>>,
    /// The classification.
    pub kind: AuthFailureKind,
}

impl AuthFailure {
    /// `true` when fetching a fresh token and authenticating once more may
    /// succeed. A driver does that at most once per connection attempt.
    #[must_use]
    pub fn token_refresh_may_help(&self) -> bool {
        self.kind == AuthFailureKind::TokenRejected
    }

    /// `true` when the same AUTH may succeed later unchanged (a `4xx`).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.kind == AuthFailureKind::Temporary
    }

    /// The admin diagnosis of the final reply, when it is a known one.
    #[must_use]
    pub fn diagnosis(&self) -> Option<Diagnosis> {
        diagnose(Context::Auth(self.mechanism), &self.reply)
    }

    /// The challenge as text (lossy UTF-8, control and bidi characters
    /// escaped, bounded), when there was one.
    #[must_use]
    pub fn challenge_text(&self) -> Option<String> {
        self.challenge
            .as_deref()
            .map(|c| postern_common::sanitize_bytes(c, postern_common::SHOWN_CHARS))
    }
}

impl fmt::Debug for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFailure")
            .field("mechanism", &self.mechanism)
            .field("reply", &self.reply)
            .field("challenge", &self.challenge_text())
            .field("kind", &self.kind)
            .finish()
    }
}

/// How the driver ends a connection it no longer needs, as the client judges
/// from its state ([`crate::Client::session_end`]). A clean end leaves no
/// "unexpected disconnection" or "non-properly terminated" TLS error in the
/// server's log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The session is usable (after a refused AUTH, a refused transaction
    /// and its RSET, or simply idle): send QUIT with [`crate::Client::quit`],
    /// wait for [`Event::Closed`], then close the connection (with a TLS
    /// `close_notify` first).
    Quit,
    /// No other command can be sent: close the connection now, with a TLS
    /// `close_notify` first when the TLS session itself is intact.
    Abandon {
        /// Why QUIT is not possible.
        reason: AbandonReason,
    },
    /// The session is over (QUIT answered): close the connection.
    Closed,
}

/// Why a session is abandoned instead of ended with QUIT.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbandonReason {
    /// The connection failed: a body refused after DATA began (DATA cannot
    /// be cancelled), a timeout, a malformed reply, the server closing.
    Failed(Error),
    /// An exchange is half done (replies outstanding, a body being sent):
    /// a command now would be taken as part of it.
    Busy {
        /// What the client is doing.
        state: &'static str,
    },
}
