//! Exit codes and the failures that lead to them.

use postern_tokio::{Error, Security, Stage};

/// What went wrong, by class; each class has its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Internal or unexpected failure: exit 1.
    Other = 1,
    /// Bad flags, configuration, or input files: exit 2.
    Usage = 2,
    /// DNS, TCP, TLS, or the SMTP session broke: exit 3.
    Connection = 3,
    /// The token request or SMTP AUTH failed: exit 4.
    Auth = 4,
    /// The server refused the message or some recipient: exit 5.
    Rejected = 5,
}

impl Class {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Other => "other",
            Class::Usage => "usage",
            Class::Connection => "connection",
            Class::Auth => "authentication",
            Class::Rejected => "rejected",
        }
    }
}

/// A failure to report and exit with.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) class: Class,
    pub(crate) message: String,
    pub(crate) error: Option<Error>,
}

pub(crate) fn usage(message: impl Into<String>) -> Failure {
    Failure {
        class: Class::Usage,
        message: message.into(),
        error: None,
    }
}

/// The class of a transport error. A command the SMTP core refused is
/// classed by the stage the core names for it.
pub(crate) fn classify(e: &Error) -> Class {
    match e {
        Error::Config(_) | Error::Message(_) => Class::Usage,
        Error::Auth(_) | Error::Token(_) => Class::Auth,
        Error::Rejected(_) => Class::Rejected,
        Error::Command(c) => match c.stage() {
            Stage::Auth => Class::Auth,
            Stage::Transaction => Class::Rejected,
            _ => Class::Connection,
        },
        Error::Shutdown => Class::Other,
        _ => Class::Connection,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            class: classify(&e),
            message: e.to_string(),
            error: Some(e),
        }
    }
}

/// A hint when the failure looks like the wrong TLS mode for the port: a
/// TLS handshake that meets plaintext (implicit TLS against a STARTTLS
/// port), or a greeting that never comes or is not SMTP (STARTTLS or
/// plaintext against an implicit-TLS port).
pub(crate) fn tls_hint(e: &Error, security: Security) -> Option<&'static str> {
    match (e, security) {
        (Error::Tls { .. }, Security::ImplicitTls) => Some(
            "the server may expect STARTTLS on this port: try --tls starttls (usually port 587)",
        ),
        (
            Error::Smtp(s),
            Security::StartTls | Security::StartTlsOpportunistic | Security::Plaintext,
        ) if s.stage() == Stage::Greeting => Some(
            "the server may expect TLS from the first byte on this port: try --tls implicit (usually port 465)",
        ),
        _ => None,
    }
}

/// `e` as a failure, with [`tls_hint`] appended to its message.
pub(crate) fn failure_with_hint(e: Error, security: Security) -> Failure {
    let hint = tls_hint(&e, security);
    let mut f = Failure::from(e);
    if let Some(h) = hint {
        f.message = format!("{} (hint: {h})", f.message);
    }
    f
}
