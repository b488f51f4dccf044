//! Command lines as a server reads them: pure parsing, no state.
//!
//! A line is what came before its LF, with one CR before the LF removed.
//! Verbs are case-insensitive (RFC 5321 §2.4). Parsing is tolerant where
//! widely deployed clients deviate without ambiguity (a space after
//! `MAIL FROM:`, a path without angle brackets) and strict where leniency
//! would change what is relayed (addresses are parsed as [`Mailbox`]).

use crate::address::{Mailbox, ReversePath};
use crate::command::BodyType;

/// One parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Helo(String),
    Ehlo(String),
    Mail(MailCommand),
    Rcpt(Mailbox),
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
}

/// `MAIL FROM` with the parameters this server understands.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MailCommand {
    pub from: ReversePath,
    pub size: Option<u64>,
    pub body: BodyType,
    pub smtputf8: bool,
}

/// Why a line is not a command this server takes; each maps to one reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineError {
    /// Not a known verb (`500 5.5.2`).
    Unknown,
    /// A known verb with bad arguments (`501 5.5.4`), with what was expected.
    Syntax(&'static str),
    /// An address that does not parse (`553 5.1.3` / `501 5.1.7`).
    Address { recipient: bool },
    /// A MAIL or RCPT parameter this server does not take (`555 5.5.4`).
    Parameter,
}

/// Parses one command line (without its line end).
pub(crate) fn parse(line: &[u8]) -> Result<Command, LineError> {
    let line = std::str::from_utf8(line).map_err(|_| LineError::Syntax("UTF-8 text"))?;
    let (verb, rest) = match line.find(' ') {
        Some(at) => (&line[..at], line[at + 1..].trim()),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_args = |command: Command| {
        if rest.is_empty() {
            Ok(command)
        } else {
            Err(LineError::Syntax("no argument"))
        }
    };
    match verb.as_str() {
        "HELO" | "EHLO" => {
            let name = rest.split(' ').next().unwrap_or_default();
            if name.is_empty() {
                return Err(LineError::Syntax("EHLO hostname"));
            }
            let name = name.to_owned();
            Ok(if verb == "EHLO" {
                Command::Ehlo(name)
            } else {
                Command::Helo(name)
            })
        }
        "MAIL" => mail(rest),
        "RCPT" => rcpt(rest),
        "DATA" => no_args(Command::Data),
        "BDAT" => bdat(rest),
        "RSET" => no_args(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_args(Command::StartTls),
        "AUTH" => {
            let mut parts = rest.split(' ').filter(|p| !p.is_empty());
            let mechanism = parts
                .next()
                .ok_or(LineError::Syntax("AUTH mechanism [initial-response]"))?
                .to_ascii_uppercase();
            let initial = parts.next().map(str::to_owned);
            if parts.next().is_some() {
                return Err(LineError::Syntax("AUTH mechanism [initial-response]"));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        _ => Err(LineError::Unknown),
    }
}

/// Splits `FROM:<path> params` after the keyword: the path (brackets
/// removed) and the parameter text.
fn path_and_params<'a>(rest: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest[keyword.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some((&inner[..end], inner[end + 1..].trim()))
    } else {
        // A bare path (no brackets): up to the first space.
        let end = rest.find(' ').unwrap_or(rest.len());
        Some((&rest[..end], rest[end..].trim()))
    }
}

/// `esmtp-param`s: `KEY` or `KEY=VALUE`, separated by spaces.
fn params(text: &str) -> impl Iterator<Item = (String, Option<&str>)> {
    text.split(' ')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (p.to_ascii_uppercase(), None),
        })
}

fn mail(rest: &str) -> Result<Command, LineError> {
    let (path, params_text) =
        path_and_params(rest, "FROM:").ok_or(LineError::Syntax("MAIL FROM:<address>"))?;
    let from = if path.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::Mailbox(
            Mailbox::parse(strip_source_route(path))
                .map_err(|_| LineError::Address { recipient: false })?,
        )
    };
    let mut mail = MailCommand {
        from,
        size: None,
        body: BodyType::SevenBit,
        smtputf8: false,
    };
    for (key, value) in params(params_text) {
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                mail.size = Some(v.parse().map_err(|_| LineError::Syntax("SIZE=<octets>"))?);
            }
            ("BODY", Some(v)) => {
                mail.body = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => BodyType::SevenBit,
                    "8BITMIME" => BodyType::EightBitMime,
                    "BINARYMIME" => BodyType::BinaryMime,
                    _ => return Err(LineError::Syntax("BODY=7BIT or BODY=8BITMIME")),
                };
            }
            ("SMTPUTF8", None) => mail.smtputf8 = true,
            // RFC 4954 §5: the authenticated identity a relaying client
            // asserts; a submission server may ignore it.
            ("AUTH", Some(_)) => {}
            _ => return Err(LineError::Parameter),
        }
    }
    Ok(Command::Mail(mail))
}

fn rcpt(rest: &str) -> Result<Command, LineError> {
    let (path, params_text) =
        path_and_params(rest, "TO:").ok_or(LineError::Syntax("RCPT TO:<address>"))?;
    let mailbox = Mailbox::parse(strip_source_route(path))
        .map_err(|_| LineError::Address { recipient: true })?;
    if params(params_text).next().is_some() {
        return Err(LineError::Parameter);
    }
    Ok(Command::Rcpt(mailbox))
}

/// RFC 5321 §4.1.2: a source route (`@a,@b:user@c`) must be accepted and
/// ignored.
fn strip_source_route(path: &str) -> &str {
    match path.strip_prefix('@') {
        Some(route) => route.split_once(':').map_or(path, |(_, mailbox)| mailbox),
        None => path,
    }
}

fn bdat(rest: &str) -> Result<Command, LineError> {
    const SYNTAX: LineError = LineError::Syntax("BDAT <octets> [LAST]");
    let mut parts = rest.split(' ').filter(|p| !p.is_empty());
    let size = parts
        .next()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or(SYNTAX)?;
    let last = match parts.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(SYNTAX),
    };
    if parts.next().is_some() {
        return Err(SYNTAX);
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(s: &str) -> Mailbox {
        Mailbox::parse(s).expect("valid")
    }

    #[test]
    fn verbs_and_arguments() {
        assert_eq!(
            parse(b"ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(
            parse(b"HELO [192.0.2.1]"),
            Ok(Command::Helo("[192.0.2.1]".into()))
        );
        assert_eq!(parse(b"EHLO"), Err(LineError::Syntax("EHLO hostname")));
        assert_eq!(parse(b"DATA"), Ok(Command::Data));
        assert_eq!(parse(b"DATA x"), Err(LineError::Syntax("no argument")));
        assert_eq!(parse(b"noop anything"), Ok(Command::Noop));
        assert_eq!(parse(b"XYZZY"), Err(LineError::Unknown));
        assert_eq!(
            parse(b"BDAT 100 LAST"),
            Ok(Command::Bdat {
                size: 100,
                last: true
            })
        );
        assert_eq!(
            parse(b"BDAT 0 last"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(
            parse(b"BDAT 7"),
            Ok(Command::Bdat {
                size: 7,
                last: false
            })
        );
        assert!(parse(b"BDAT -1").is_err());
        assert!(parse(b"BDAT 99999999999999999999999").is_err());
        assert!(parse(b"BDAT 1 FIRST").is_err());
        assert_eq!(
            parse(b"AUTH plain AGEAYg=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGEAYg==".into())
            })
        );
        assert!(parse(b"\xff\xfe").is_err());
    }

    #[test]
    fn mail_forms() {
        let plain = |from: &str| {
            Ok(Command::Mail(MailCommand {
                from: ReversePath::Mailbox(mailbox(from)),
                size: None,
                body: BodyType::SevenBit,
                smtputf8: false,
            }))
        };
        assert_eq!(parse(b"MAIL FROM:<a@example.com>"), plain("a@example.com"));
        assert_eq!(parse(b"mail from: <a@example.com>"), plain("a@example.com"));
        assert_eq!(parse(b"MAIL FROM:a@example.com"), plain("a@example.com"));
        assert_eq!(
            parse(b"MAIL FROM:<@relay.example:a@example.com>"),
            plain("a@example.com")
        );
        assert_eq!(
            parse(b"MAIL FROM:<> SIZE=1000 BODY=8BITMIME SMTPUTF8 AUTH=<>"),
            Ok(Command::Mail(MailCommand {
                from: ReversePath::Null,
                size: Some(1000),
                body: BodyType::EightBitMime,
                smtputf8: true,
            }))
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@example.com> RET=HDRS"),
            Err(LineError::Parameter)
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@@example.com>"),
            Err(LineError::Address { recipient: false })
        );
        assert_eq!(
            parse(b"MAIL TO:<a@example.com>"),
            Err(LineError::Syntax("MAIL FROM:<address>"))
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@example.com"),
            Err(LineError::Syntax("MAIL FROM:<address>"))
        );
        assert!(parse(b"MAIL FROM:<a@example.com> SIZE=x").is_err());
    }

    #[test]
    fn rcpt_forms() {
        assert_eq!(
            parse(b"RCPT TO:<b@example.com>"),
            Ok(Command::Rcpt(mailbox("b@example.com")))
        );
        assert_eq!(
            parse(b"rcpt to: <b@example.com>"),
            Ok(Command::Rcpt(mailbox("b@example.com")))
        );
        assert_eq!(
            parse(b"RCPT TO:<b@example.com> NOTIFY=NEVER"),
            Err(LineError::Parameter)
        );
        assert_eq!(
            parse(b"RCPT TO:<>"),
            Err(LineError::Address { recipient: true })
        );
        assert_eq!(
            parse(b"RCPT <b@example.com>"),
            Err(LineError::Syntax("RCPT TO:<address>"))
        );
    }
}
