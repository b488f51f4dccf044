//! The transport's error type.

use std::fmt;
use std::io;

use postern_oauth::FetchError;
use postern_smtp::diagnose::{Context, Diagnosis, diagnose};
use postern_smtp::{AuthFailure, CommandError, TransactionReport};

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
    /// Reading the message from its source failed; the connection was
    /// dropped because DATA cannot be cancelled.
    Message(io::Error),
    /// The transport was shut down.
    Shutdown,
}

impl Error {
    /// The diagnosis for an SMTP refusal this error carries, when postern
    /// recognises it (design §5): a stable id and a one-line fix.
    #[must_use]
    pub fn diagnosis(&self) -> Option<Diagnosis> {
        match self {
            Error::Auth(f) => diagnose(Context::Auth(f.mechanism), &f.reply),
            Error::Rejected(report) => {
                let context = if report.mail.as_ref().is_some_and(|r| !r.is_positive()) {
                    Context::Mail
                } else if report.message.is_some() || report.data.is_some() {
                    Context::Data
                } else {
                    Context::Rcpt
                };
                diagnose(context, report.decisive_reply()?)
            }
            _ => None,
        }
    }

    /// `true` when the same send may succeed later unchanged: a temporary
    /// (4xx) refusal, a timeout, a dropped connection, a token endpoint asking
    /// to retry.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::ConnectTimeout { .. } | Error::Io(_) => true,
            Error::Smtp(e) => !matches!(
                **e,
                postern_smtp::Error::StartTlsUnavailable
                    | postern_smtp::Error::StartTlsRefused { .. }
            ),
            Error::Auth(f) => f.reply.is_transient(),
            Error::Token(e) => match &**e {
                FetchError::OAuth(o) => o.retryable(),
                _ => true,
            },
            Error::Rejected(r) => r.decisive_reply().is_some_and(|r| r.is_transient()),
            _ => false,
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
                    failure.reply.message()
                )?;
                if let Some(challenge) = failure.challenge_text() {
                    write!(f, " (server said {challenge})")?;
                }
                Ok(())
            }
            Error::Token(e) => write!(f, "no access token: {e}"),
            Error::Rejected(report) => match report.decisive_reply() {
                Some(r) => write!(f, "message refused: {} {}", r.code(), r.message()),
                None => f.write_str("message refused"),
            },
            Error::Message(e) => write!(f, "reading the message failed: {e}"),
            Error::Shutdown => f.write_str("the transport was shut down"),
        }?;
        if let Some(d) = self.diagnosis() {
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
            _ => None,
        }
    }
}

impl From<CommandError> for Error {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Failed(e) => Error::Smtp(Box::new(e)),
            other => Error::Command(Box::new(other)),
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
