//! What a recognised failure tells an admin, in one shape for both cores.

use std::fmt;

/// A recognised failure (design §5): a stable id that tools match on, the
/// set-up step that is wrong, a one-line fix, and a link to the provider's
/// own page about the error when there is one.
///
/// Ids never change meaning. The SMTP core (`postern_smtp::diagnose`) and the
/// OAuth core (`postern_oauth::diagnose`, `postern_oauth::preflight`) both
/// return this type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Diagnosis {
    /// The stable id, e.g. `ms.secret.wrong` or `ms.smtp.auth_disabled`.
    pub id: &'static str,
    /// The set-up step that is wrong, in the admin's words ("client secret",
    /// "mailbox permission", ...).
    pub step: &'static str,
    /// What to do, in one line.
    pub fix: &'static str,
    /// Where the provider explains this error (an `error_uri`, or
    /// Microsoft's error page for an AADSTS code), when known.
    pub link: Option<String>,
}

impl Diagnosis {
    /// A diagnosis without a link (usable in constant tables).
    #[must_use]
    pub const fn new(id: &'static str, step: &'static str, fix: &'static str) -> Self {
        Diagnosis {
            id,
            step,
            fix,
            link: None,
        }
    }

    /// The same diagnosis with `link` set.
    #[must_use]
    pub fn with_link(mut self, link: impl Into<String>) -> Self {
        self.link = Some(link.into());
        self
    }
}

impl fmt::Display for Diagnosis {
    /// `id: fix` and the link, on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.id, self.fix)?;
        if let Some(link) = &self.link {
            write!(f, " ({link})")?;
        }
        Ok(())
    }
}

/// Where in the chain from configuration to delivery a failure happened. The
/// cores say it for their own errors; the transport and the command line
/// only map it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// The settings themselves.
    Config,
    /// The request to the token endpoint.
    Token,
    /// The claims of the access token (audience, roles, scopes).
    Claims,
    /// DNS and the TCP connection.
    Connect,
    /// The TLS handshake and the certificate.
    Tls,
    /// STARTTLS (offered, refused, injection).
    StartTls,
    /// The greeting and EHLO.
    Greeting,
    /// SMTP AUTH.
    Auth,
    /// MAIL FROM, RCPT TO and the message.
    Transaction,
    /// The SMTP session otherwise (a broken connection, a timeout).
    Session,
}

impl Stage {
    /// The stage as an admin reads it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Stage::Config => "configuration",
            Stage::Token => "token request",
            Stage::Claims => "token claims",
            Stage::Connect => "TCP connection",
            Stage::Tls => "TLS handshake and certificate",
            Stage::StartTls => "STARTTLS",
            Stage::Greeting => "SMTP greeting and EHLO",
            Stage::Auth => "SMTP AUTH",
            Stage::Transaction => "MAIL FROM / RCPT / DATA",
            Stage::Session => "SMTP session",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_id_fix_and_link() {
        let d = Diagnosis::new("ms.secret.wrong", "client secret", "use the Value")
            .with_link("https://login.microsoftonline.com/error?code=7000215");
        assert_eq!(
            d.to_string(),
            "ms.secret.wrong: use the Value (https://login.microsoftonline.com/error?code=7000215)"
        );
        assert_eq!(Stage::Auth.to_string(), "SMTP AUTH");
    }
}
