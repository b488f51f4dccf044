//! The two error channels of the client (design: h11's local/remote split).
//!
//! - [`CommandError`]: the caller asked for something the machine cannot do now
//!   or with these arguments. Nothing was sent and the state is unchanged.
//! - [`Error`]: the connection is broken (bad bytes from the server, a timeout,
//!   an injection attempt). It is sticky: every later call returns it again, and
//!   it is reported once as [`crate::Event::Closed`].
//!
//! A 4xx/5xx reply is neither: it is an event carrying the full reply.

use std::fmt;

use crate::address::AddressError;
use crate::body::BodyError;
use crate::reply::{Reply, ReplyError};
use crate::sasl::{Mechanism, SaslError};
use crate::timer::Phase;
use postern_common::Stage;

/// A fatal, sticky failure of the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The server sent bytes that are not a valid reply.
    Reply {
        /// What the client was waiting for.
        phase: Phase,
        /// What is wrong with the bytes.
        error: ReplyError,
    },
    /// No reply (or no TLS handshake, or no body chunk) within the phase's timeout.
    Timeout {
        /// The phase that timed out.
        phase: Phase,
    },
    /// The server closed the connection.
    ConnectionClosed {
        /// What the client was waiting for.
        phase: Phase,
    },
    /// Bytes arrived after the `220` to STARTTLS and before the TLS handshake
    /// finished: a response injection attempt (CVE-2011-0411 class). The
    /// connection is abandoned.
    PlaintextAfterStartTls,
    /// TLS is required but the server does not offer STARTTLS.
    StartTlsUnavailable,
    /// TLS is required but the server refused STARTTLS.
    StartTlsRefused {
        /// The server's reply.
        reply: Reply,
    },
    /// The server refused the session (`554` greeting, or EHLO and HELO both
    /// refused).
    Refused {
        /// The phase.
        phase: Phase,
        /// The server's reply.
        reply: Reply,
    },
    /// The server is closing the connection (`421`).
    ServiceUnavailable {
        /// The phase.
        phase: Phase,
        /// The server's reply.
        reply: Reply,
    },
    /// A reply that makes no sense in this phase (for example a reply while the
    /// body is being sent, or a `334` after the client cancelled AUTH).
    UnexpectedReply {
        /// The phase.
        phase: Phase,
        /// The server's reply.
        reply: Reply,
    },
    /// The message body cannot be sent; the transaction is abandoned by closing
    /// the connection (there is no other way to abort DATA).
    Body(BodyError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Reply { phase, error } => write!(f, "invalid reply during {phase}: {error}"),
            Error::Timeout { phase } => write!(f, "timed out: {phase}"),
            Error::ConnectionClosed { phase } => {
                write!(f, "the server closed the connection ({phase})")
            }
            Error::PlaintextAfterStartTls => f.write_str(
                "the server sent data after agreeing to STARTTLS and before the TLS handshake \
                 (possible response injection); connection abandoned",
            ),
            Error::StartTlsUnavailable => f.write_str(
                "TLS is required but the server does not offer STARTTLS \
                 (use implicit TLS on port 465, or a server that supports STARTTLS)",
            ),
            Error::StartTlsRefused { reply } => {
                write!(
                    f,
                    "TLS is required but the server refused STARTTLS: {reply}"
                )
            }
            Error::Refused { phase, reply } => {
                write!(f, "the server refused the session ({phase}): {reply}")
            }
            Error::ServiceUnavailable { phase, reply } => {
                write!(f, "the server is closing the connection ({phase}): {reply}")
            }
            Error::UnexpectedReply { phase, reply } => {
                write!(f, "unexpected reply during {phase}: {reply}")
            }
            Error::Body(e) => write!(f, "message body refused: {e}"),
        }
    }
}

impl Error {
    /// What the client was waiting for when the connection failed, when it
    /// was waiting for a reply.
    #[must_use]
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Error::Reply { phase, .. }
            | Error::Timeout { phase }
            | Error::ConnectionClosed { phase }
            | Error::Refused { phase, .. }
            | Error::ServiceUnavailable { phase, .. }
            | Error::UnexpectedReply { phase, .. } => Some(*phase),
            Error::PlaintextAfterStartTls
            | Error::StartTlsUnavailable
            | Error::StartTlsRefused { .. } => Some(Phase::StartTls),
            Error::Body(_) => Some(Phase::DataBlock),
        }
    }

    /// `true` when the same send may succeed later unchanged: a timeout, a
    /// dropped connection, a `421`, a temporary refusal of the session. A
    /// server without the TLS the policy requires, or a body the client
    /// refused (a line too long, 8-bit data declared 7-bit), never will.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Error::StartTlsUnavailable | Error::StartTlsRefused { .. } | Error::Body(_) => false,
            Error::Refused { reply, .. } => !reply.is_permanent(),
            _ => true,
        }
    }

    /// What the server's reply says about the mailbox's sending limits
    /// ([`crate::limits::classify`]): a refused session or a `421`.
    #[must_use]
    pub fn limit_signal(&self) -> Option<crate::limits::LimitSignal> {
        match self {
            Error::Refused { reply, .. }
            | Error::ServiceUnavailable { reply, .. }
            | Error::StartTlsRefused { reply } => crate::limits::classify(reply),
            _ => None,
        }
    }

    /// `true` when the connection ended while the client waited for the
    /// reply to MAIL, RCPT or DATA: no byte of the message had been sent, so
    /// the server cannot have accepted it, and sending it again on a new
    /// connection cannot duplicate it. This is how a pooled connection that
    /// the server dropped while idle shows itself.
    #[must_use]
    pub fn ended_before_message(&self) -> bool {
        match self {
            Error::ConnectionClosed { phase } | Error::ServiceUnavailable { phase, .. } => {
                matches!(phase, Phase::Mail | Phase::Rcpt | Phase::DataInit)
            }
            _ => false,
        }
    }

    /// The stage of the chain that failed.
    #[must_use]
    pub fn stage(&self) -> Stage {
        match self.phase() {
            Some(Phase::StartTls | Phase::TlsHandshake) => Stage::StartTls,
            Some(Phase::Greeting | Phase::Ehlo) => Stage::Greeting,
            Some(Phase::Auth) => Stage::Auth,
            Some(
                Phase::Mail | Phase::Rcpt | Phase::DataInit | Phase::DataBlock | Phase::DataEnd,
            ) => Stage::Transaction,
            _ => Stage::Session,
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Reply { error, .. } => Some(error),
            Error::Body(e) => Some(e),
            _ => None,
        }
    }
}

/// A command the caller gave that cannot be carried out. Nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// The connection has failed; this is its sticky error.
    Failed(Error),
    /// The connection is closed (after QUIT).
    Closed,
    /// The machine is not in a state that takes this command (for example AUTH
    /// before the greeting, or MAIL while another transaction runs).
    NotReady {
        /// What the machine is doing.
        state: &'static str,
    },
    /// AUTH was already completed on this connection.
    AlreadyAuthenticated,
    /// The connection is not encrypted and credentials are never sent in clear
    /// unless `dangerous_allow_credentials_without_tls` is set.
    CredentialsWithoutTls,
    /// The server offers no AUTH at all (on port 587 many offer it only after
    /// STARTTLS).
    AuthNotOffered,
    /// The requested mechanism is not offered.
    MechanismNotOffered {
        /// The requested mechanism.
        mechanism: Mechanism,
        /// What the server offers.
        offered: Vec<Mechanism>,
    },
    /// None of the mechanisms these credentials allow is offered.
    NoCommonMechanism {
        /// What the server offers.
        offered: Vec<Mechanism>,
        /// Other mechanism names it offers.
        other: Vec<String>,
    },
    /// The credentials cannot be encoded.
    Sasl(SaslError),
    /// The envelope has no recipient.
    NoRecipients,
    /// The envelope needs an extension the server does not offer.
    ExtensionRequired {
        /// The extension keyword.
        extension: &'static str,
        /// Why it is needed.
        reason: &'static str,
    },
    /// The message is larger than the server's SIZE limit.
    MessageTooLarge {
        /// The message size.
        size: u64,
        /// The server's limit.
        limit: u64,
    },
    /// An argument was refused.
    Address(AddressError),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Failed(e) => write!(f, "connection failed: {e}"),
            CommandError::Closed => f.write_str("connection closed"),
            CommandError::NotReady { state } => write!(f, "command not possible now: {state}"),
            CommandError::AlreadyAuthenticated => f.write_str("already authenticated"),
            CommandError::CredentialsWithoutTls => f.write_str(
                "refusing to send credentials over an unencrypted connection \
                 (use TLS, or set dangerous_allow_credentials_without_tls)",
            ),
            CommandError::AuthNotOffered => f.write_str(
                "the server offers no AUTH mechanism here (many offer AUTH only after STARTTLS)",
            ),
            CommandError::MechanismNotOffered { mechanism, offered } => {
                write!(
                    f,
                    "the server does not offer {mechanism} (it offers {offered:?})"
                )
            }
            CommandError::NoCommonMechanism { offered, other } => write!(
                f,
                "no usable AUTH mechanism for these credentials (server offers {offered:?} {other:?})"
            ),
            CommandError::Sasl(e) => write!(f, "credentials refused: {e}"),
            CommandError::NoRecipients => f.write_str("the envelope has no recipient"),
            CommandError::ExtensionRequired { extension, reason } => {
                write!(
                    f,
                    "the server does not offer {extension}, needed for {reason}"
                )
            }
            CommandError::MessageTooLarge { size, limit } => write!(
                f,
                "the message ({size} octets) is larger than the server's limit ({limit} octets)"
            ),
            CommandError::Address(e) => write!(f, "invalid argument: {e}"),
        }
    }
}

impl std::error::Error for CommandError {}

impl CommandError {
    /// The SMTP extension the server lacks, when that is why the command
    /// was refused before anything was sent (a relay retries without the
    /// parameter, or tells its own client that no retry will help).
    #[must_use]
    pub fn missing_extension(&self) -> Option<&'static str> {
        match self {
            CommandError::ExtensionRequired { extension, .. } => Some(extension),
            _ => None,
        }
    }

    /// `true` when the same command may succeed later unchanged: only when
    /// the connection failed transiently. A missing extension, a message
    /// over SIZE or unusable credentials stay so.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            CommandError::Failed(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The stage of the chain the refused command belongs to.
    #[must_use]
    pub fn stage(&self) -> Stage {
        match self {
            CommandError::Failed(e) => e.stage(),
            CommandError::AlreadyAuthenticated
            | CommandError::CredentialsWithoutTls
            | CommandError::AuthNotOffered
            | CommandError::MechanismNotOffered { .. }
            | CommandError::NoCommonMechanism { .. }
            | CommandError::Sasl(_) => Stage::Auth,
            CommandError::NoRecipients
            | CommandError::ExtensionRequired { .. }
            | CommandError::MessageTooLarge { .. }
            | CommandError::Address(_) => Stage::Transaction,
            CommandError::Closed | CommandError::NotReady { .. } => Stage::Session,
        }
    }

    /// The fatal connection error this refusal reports, when it is one.
    pub fn into_fatal(self) -> Result<Error, CommandError> {
        match self {
            CommandError::Failed(e) => Ok(e),
            other => Err(other),
        }
    }
}

impl From<SaslError> for CommandError {
    fn from(e: SaslError) -> Self {
        CommandError::Sasl(e)
    }
}
