//! The transport's error type.

use std::fmt;
use std::io;

use postern_oauth::FetchError;
use postern_smtp::{AuthFailure, CommandError, Diagnosis, Reply, Stage, TransactionReport};

/// Why a send (or opening a connection) failed.
///
/// `Display` is one line an admin can act on; no variant holds or prints a
/// secret.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (bad host name, unreadable CA file,
    /// credentials over plaintext without the dangerous option, ...).
    Config(String),
    /// DNS resolution or the TCP connection failed.
    Connect {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The cause.
        source: io::Error,
    },
    /// The TCP connection (or the implicit-TLS handshake) did not complete in
    /// time.
    ConnectTimeout {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
    /// The TLS handshake failed; certificate problems (unknown issuer,
    /// expired, wrong name) land here.
    Tls {
        /// The host whose certificate was checked.
        host: String,
        /// The cause (a `rustls::Error` inside).
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    Io(io::Error),
    /// The SMTP session failed: a timeout (with its phase), a malformed reply,
    /// the server closing, STARTTLS unavailable, bytes injected after
    /// STARTTLS.
    Smtp(Box<postern_smtp::Error>),
    /// The SMTP client refused a command: a mechanism the server does not
    /// offer, an extension the envelope needs, a message over SIZE.
    Command(Box<CommandError>),
    /// AUTH failed. For token mechanisms the transport has already fetched a
    /// fresh token and tried once more when that could help.
    Auth(Box<AuthFailure>),
    /// No access token could be obtained from the token endpoint.
    Token(Box<FetchError>),
    /// The server refused the message for every recipient, or refused MAIL
    /// FROM or the message itself. The report holds every reply.
    Rejected(Box<TransactionReport>),
    /// The message went out whole (the final `.` or `BDAT ... LAST`), then
    /// the connection failed before the server's reply: the message **may
    /// have been delivered**. The transport never sends it again on its
    /// own; resending may deliver it twice. The cause is inside.
    Unconfirmed(Box<Error>),
    /// The server refused a command outside a transaction (a NOOP on an
    /// idle connection); its reply.
    Reply(Box<Reply>),
    /// Reading the message from its source failed; the connection was
    /// dropped because DATA cannot be cancelled.
    Message(io::Error),
    /// The transport was shut down.
    Shutdown,
    /// A shared limit of the mailbox stops this message: nothing was sent.
    /// Try again after `until_unix_ms`.
    LimitReached {
        /// When the limit's window rolls over (Unix milliseconds).
        until_unix_ms: u64,
        /// Which limit.
        what: &'static str,
    },
    /// The message could not be DKIM-signed; nothing was sent.
    #[cfg(feature = "dkim")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dkim")))]
    Dkim(crate::dkim::DkimError),
}

impl Error {
    /// The diagnosis for a failure postern recognises (design §5): a stable
    /// id, the set-up step, a one-line fix and a link. The cores decide; this
    /// only asks the one that holds the failure.
    #[must_use]
    pub fn diagnosis(&self) -> Option<Diagnosis> {
        match self {
            Error::Auth(f) => f.diagnosis(),
            Error::Rejected(report) => report.diagnosis(),
            Error::Token(e) => e.diagnosis(),
            _ => None,
        }
    }

    /// Where the provider explains the failure: the token endpoint's
    /// `error_uri`, or Microsoft's error page for the AADSTS code, also when
    /// postern has no diagnosis for it.
    #[must_use]
    pub fn link(&self) -> Option<String> {
        match self {
            Error::Token(e) => e.link(),
            _ => self.diagnosis().and_then(|d| d.link),
        }
    }

    /// `true` when the message may have been delivered although the send
    /// failed ([`Error::Unconfirmed`]): check before sending it again.
    #[must_use]
    pub fn may_have_been_delivered(&self) -> bool {
        matches!(self, Error::Unconfirmed(_))
    }

    /// `true` when the same send may succeed later unchanged: a temporary
    /// (4xx) refusal, a timeout, a dropped connection, a token endpoint asking
    /// to retry. Each core judges its own failures.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::ConnectTimeout { .. } | Error::Io(_) => true,
            Error::Smtp(e) => e.is_transient(),
            Error::Command(e) => e.is_transient(),
            Error::Auth(f) => f.is_transient(),
            Error::Token(e) => e.is_transient(),
            Error::Rejected(r) => r.is_transient(),
            Error::Reply(r) => r.is_transient(),
            // A resend may deliver twice: not a plain retry.
            Error::Unconfirmed(_) => false,
            Error::Config(_) | Error::Tls { .. } | Error::Message(_) | Error::Shutdown => false,
            // Later, after the window rolls over.
            Error::LimitReached { .. } => true,
            #[cfg(feature = "dkim")]
            Error::Dkim(_) => false,
        }
    }

    /// The stage of the chain that failed, for "which step is wrong".
    #[must_use]
    pub fn stage(&self) -> Stage {
        match self {
            Error::Config(_) => Stage::Config,
            #[cfg(feature = "dkim")]
            Error::Dkim(_) => Stage::Config,
            Error::Connect { .. } | Error::ConnectTimeout { .. } => Stage::Connect,
            Error::Tls { .. } => Stage::Tls,
            Error::Io(_) | Error::Reply(_) | Error::Shutdown => Stage::Session,
            Error::Smtp(e) => e.stage(),
            Error::Command(e) => e.stage(),
            Error::Auth(_) => Stage::Auth,
            Error::Token(_) => Stage::Token,
            Error::Rejected(_) | Error::Message(_) | Error::Unconfirmed(_) => Stage::Transaction,
            Error::LimitReached { .. } => Stage::Transaction,
        }
    }

    /// What the server's refusal says about the mailbox's sending limits
    /// ([`postern_smtp::limits::classify`]), when the error carries one.
    #[must_use]
    pub fn limit_signal(&self) -> Option<postern_smtp::limits::LimitSignal> {
        match self {
            Error::Rejected(r) => r.limit_signal(),
            Error::Smtp(e) => e.limit_signal(),
            Error::Reply(r) => postern_smtp::limits::classify(r),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) => write!(f, "configuration: {m}"),
            Error::Connect { host, port, source } => {
                write!(f, "cannot connect to {host}:{port}: {source}")
            }
            Error::ConnectTimeout { host, port } => {
                write!(f, "connecting to {host}:{port} timed out")
            }
            Error::Tls { host, source } => {
                write!(f, "TLS handshake with {host} failed: {source}")
            }
            Error::Io(e) => write!(f, "connection failed: {e}"),
            Error::Smtp(e) => write!(f, "SMTP session failed: {e}"),
            Error::Command(e) => write!(f, "SMTP command refused by the client: {e}"),
            Error::Auth(failure) => {
                write!(
                    f,
                    "authentication with {} failed: {} {}",
                    failure.mechanism.name(),
                    failure.reply.code(),
                    failure.reply.printable()
                )?;
                if let Some(challenge) = failure.challenge_text() {
                    write!(f, " (server said {challenge})")?;
                }
                Ok(())
            }
            Error::Token(e) => write!(f, "no access token: {e}"),
            Error::Rejected(report) => match report.decisive_reply() {
                Some(r) => write!(f, "message refused: {} {}", r.code(), r.printable()),
                None => f.write_str("message refused"),
            },
            Error::Reply(r) => write!(f, "the server refused: {} {}", r.code(), r.printable()),
            Error::Message(e) => write!(f, "reading the message failed: {e}"),
            Error::Unconfirmed(cause) => write!(
                f,
                "the message was sent but the server's reply never came, so it may have been \
                 delivered; check before sending it again ({cause})"
            ),
            Error::Shutdown => f.write_str("the transport was shut down"),
            Error::LimitReached {
                until_unix_ms,
                what,
            } => write!(
                f,
                "not sent: {what} is reached until {} (Unix time, seconds)",
                until_unix_ms / 1000
            ),
            #[cfg(feature = "dkim")]
            Error::Dkim(e) => write!(f, "{e}"),
        }?;
        // A token error's own text already names its diagnosis.
        if let Some(d) = self
            .diagnosis()
            .filter(|_| !matches!(self, Error::Token(_)))
        {
            write!(f, " [{}: {}]", d.id, d.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. } | Error::Tls { source, .. } => Some(source),
            Error::Io(e) | Error::Message(e) => Some(e),
            Error::Smtp(e) => Some(&**e),
            Error::Command(e) => Some(&**e),
            Error::Token(e) => Some(&**e),
            Error::Unconfirmed(e) => Some(&**e),
            #[cfg(feature = "dkim")]
            Error::Dkim(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CommandError> for Error {
    fn from(e: CommandError) -> Self {
        match e.into_fatal() {
            Ok(fatal) => Error::Smtp(Box::new(fatal)),
            Err(command) => Error::Command(Box::new(command)),
        }
    }
}

impl From<postern_smtp::Error> for Error {
    fn from(e: postern_smtp::Error) -> Self {
        Error::Smtp(Box::new(e))
    }
}

impl From<FetchError> for Error {
    fn from(e: FetchError) -> Self {
        Error::Token(Box::new(e))
    }
}

impl From<AuthFailure> for Error {
    fn from(e: AuthFailure) -> Self {
        Error::Auth(Box::new(e))
    }
}
