//! The proxy's decisions as pure functions: which account a login names,
//! which senders an account may use, and what the local client is told
//! when upstream fails.

use postern_smtp::{BodyType, Mailbox, Reply, ReversePath};
use postern_transport::Error;

/// The index of the account for a local user name: the exact name, else
/// a catch-all for its domain (`@example.com`), else the catch-all `@`.
/// Names compare without regard to ASCII case.
pub fn find_account<A>(accounts: &[A], name_of: impl Fn(&A) -> &str, user: &str) -> Option<usize> {
    let named = |name: &str| {
        accounts
            .iter()
            .position(|a| name_of(a).eq_ignore_ascii_case(name))
    };
    let domain = user.rsplit_once('@').map(|(_, d)| format!("@{d}"));
    named(user)
        .or_else(|| named(domain.as_deref()?))
        .or_else(|| named("@"))
}

/// Whether `from` may be used by a client logged in as `user` on an
/// account with `aliases`: the login's own mailbox or an alias, compared
/// without regard to ASCII case. `Err` is the local refusal, saying why.
pub fn check_sender(user: &str, aliases: &[Mailbox], from: &ReversePath) -> Result<(), Reply> {
    let refuse = |text: String| {
        Err(Reply::new(550, &[text]).unwrap_or_else(|| {
            Reply::new(550, &["5.7.1 Sender not allowed"]).expect("a constant reply is valid")
        }))
    };
    let ReversePath::Mailbox(from) = from else {
        return refuse(format!(
            "5.7.1 The null sender is not allowed for {}",
            printable(user)
        ));
    };
    let address = from.to_string();
    if address.eq_ignore_ascii_case(user)
        || aliases
            .iter()
            .any(|a| a.to_string().eq_ignore_ascii_case(&address))
    {
        return Ok(());
    }
    refuse(format!(
        "5.7.1 {} may not send as <{}>: use its own address or a configured alias",
        printable(user),
        printable(&address)
    ))
}

/// The user name as it may appear in a reply: printable ASCII only.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(256)
        .collect()
}

/// The body type declared upstream for a local declaration: 8BITMIME for
/// 7-bit and 8-bit text (RFC 6152 lets a client declare 8BITMIME for 7-bit
/// text, and legacy clients send 8-bit text undeclared), BINARYMIME as is.
#[must_use]
pub fn upstream_body(local: BodyType) -> BodyType {
    match local {
        BodyType::SevenBit | BodyType::EightBitMime => BodyType::EightBitMime,
        other => other,
    }
}

/// The SMTP extension upstream lacks, when `error` says that is why the
/// envelope was not sent (the SMTP core's judgment).
#[must_use]
pub fn lacks_extension(error: &Error) -> Option<&'static str> {
    match error {
        Error::Command(c) => c.missing_extension(),
        _ => None,
    }
}

/// What the local client is told when the upstream step failed with
/// `error`: a 4xx (try again later) with an enhanced code and a short
/// reason, never a 2xx. A message whose end went upstream without a reply
/// may have been delivered: the text says so, since a retry may duplicate
/// it. The one permanent case: upstream lacks an extension the message
/// needs (SMTPUTF8 for UTF-8 headers or addresses, 8BITMIME, DSN), which
/// no retry fixes.
pub fn upstream_failure(error: &Error) -> Reply {
    use postern_common::Stage;
    if let Some(extension) = lacks_extension(error) {
        let (code, enhanced) = if extension == "SMTPUTF8" {
            (554, "5.6.9")
        } else {
            (555, "5.5.4")
        };
        let text =
            format!("{enhanced} Upstream does not offer {extension}, which this message needs");
        if let Some(reply) = Reply::new(code, &[text]) {
            return reply;
        }
    }
    let (enhanced, text) = match error {
        Error::Unconfirmed(_) => (
            "4.4.2",
            "Upstream connection lost after the message was sent; it may have been delivered",
        ),
        _ => match error.stage() {
            Stage::Token | Stage::Claims => {
                ("4.7.0", "Upstream token unavailable, try again later")
            }
            Stage::Auth => (
                "4.7.0",
                "Upstream refused the proxy's credentials, try again later",
            ),
            Stage::Connect | Stage::Tls | Stage::StartTls | Stage::Greeting => {
                ("4.4.1", "Upstream server unreachable, try again later")
            }
            Stage::Config => ("4.3.5", "Proxy upstream misconfigured"),
            _ => ("4.4.2", "Upstream connection failed, message not delivered"),
        },
    };
    Reply::new(451, &[format!("{enhanced} {text}")]).unwrap_or_else(|| {
        Reply::new(451, &["4.3.0 Try again later"]).expect("a constant reply is valid")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_smtp::CommandError;

    fn mb(s: &str) -> Mailbox {
        Mailbox::parse(s).expect("valid")
    }

    #[test]
    fn accounts_exact_then_domain_then_catch_all() {
        let accounts = ["app@example.com", "@example.com", "@"];
        let find = |u: &str| find_account(&accounts, |a| a, u).map(|i| accounts[i]);
        assert_eq!(find("APP@example.com"), Some("app@example.com"));
        assert_eq!(find("other@example.com"), Some("@example.com"));
        assert_eq!(find("x@elsewhere.org"), Some("@"));
        let strict = ["app@example.com"];
        assert_eq!(find_account(&strict, |a| a, "x@example.com"), None);
    }

    #[test]
    fn senders_are_the_login_or_an_alias() {
        let aliases = [mb("noreply@example.com")];
        let from = |s: &str| ReversePath::Mailbox(mb(s));
        assert!(check_sender("app@example.com", &aliases, &from("App@Example.com")).is_ok());
        assert!(check_sender("app@example.com", &aliases, &from("noreply@example.com")).is_ok());
        let refused = check_sender("app@example.com", &aliases, &from("ceo@example.com"))
            .expect_err("refused");
        assert_eq!(refused.code(), 550);
        assert!(
            refused
                .message()
                .contains("may not send as <ceo@example.com>")
        );
        assert!(check_sender("app@example.com", &aliases, &ReversePath::Null).is_err());
    }

    #[test]
    fn upstream_failures_are_transient_and_say_why() {
        let reply = upstream_failure(&Error::Io(std::io::ErrorKind::ConnectionReset.into()));
        assert_eq!(reply.code(), 451);
        let unconfirmed = upstream_failure(&Error::Unconfirmed(Box::new(Error::Io(
            std::io::ErrorKind::ConnectionReset.into(),
        ))));
        assert!(unconfirmed.message().contains("may have been delivered"));
        assert!(unconfirmed.is_transient());
        let missing =
            upstream_failure(&Error::Command(Box::new(CommandError::ExtensionRequired {
                extension: "SMTPUTF8",
                reason: "non-ASCII addresses",
            })));
        assert_eq!(missing.code(), 554);
        assert!(
            missing
                .message()
                .contains("Upstream does not offer SMTPUTF8")
        );
    }
}
