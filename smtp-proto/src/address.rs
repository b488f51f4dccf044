//! Validated names that go on command lines: domains, address literals, mailboxes
//! and paths (RFC 5321 §4.1.2, RFC 6531 for UTF-8).
//!
//! Every type here is checked when it is built, so a CR, LF, NUL, control
//! character, `<`, `>` or space can never reach the wire through it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a domain, address or parameter was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    /// Empty input.
    Empty,
    /// No `@` separates local part and domain.
    MissingAt,
    /// A character that may not appear there (control, space, `<`, `>`, ...).
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Which part it was found in.
        part: &'static str,
    },
    /// A label or local part is malformed (empty label, leading or trailing
    /// hyphen or dot, two dots in a row, unterminated quote).
    Malformed {
        /// Which part, and what is wrong with it.
        what: &'static str,
    },
    /// A length limit of RFC 5321 §4.5.3.1 is exceeded.
    TooLong {
        /// Which part.
        part: &'static str,
        /// Its limit in octets.
        limit: usize,
    },
    /// An address literal is not an IPv4 or `IPv6:` address.
    BadLiteral,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::Empty => f.write_str("empty value"),
            AddressError::MissingAt => f.write_str("address has no '@'"),
            AddressError::InvalidChar { ch, part } => {
                write!(f, "character {ch:?} is not allowed in the {part}")
            }
            AddressError::Malformed { what } => write!(f, "malformed {what}"),
            AddressError::TooLong { part, limit } => {
                write!(f, "{part} is longer than {limit} octets")
            }
            AddressError::BadLiteral => {
                f.write_str("address literal must be [IPv4] or [IPv6:address]")
            }
        }
    }
}

impl std::error::Error for AddressError {}

/// A domain name: dot-separated labels of letters, digits and hyphens, or UTF-8
/// labels (which need SMTPUTF8 on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Domain(String);

impl Domain {
    /// Validates a domain (RFC 5321 `Domain`, RFC 6531 `sub-domain =/ U-label`).
    pub fn parse(s: &str) -> Result<Domain, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > 255 {
            return Err(AddressError::TooLong {
                part: "domain",
                limit: 255,
            });
        }
        for label in s.split('.') {
            if label.is_empty() {
                return Err(AddressError::Malformed {
                    what: "domain (empty label)",
                });
            }
            if label.len() > 63 {
                return Err(AddressError::TooLong {
                    part: "domain label",
                    limit: 63,
                });
            }
            if label.is_ascii() {
                if label.starts_with('-') || label.ends_with('-') {
                    return Err(AddressError::Malformed {
                        what: "domain (label starts or ends with '-')",
                    });
                }
                if let Some(ch) = label
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
                {
                    return Err(AddressError::InvalidChar { ch, part: "domain" });
                }
            } else if let Some(ch) = label.chars().find(|c| {
                c.is_control()
                    || c.is_whitespace()
                    || matches!(c, '@' | '<' | '>' | '[' | ']' | '\u{feff}')
            }) {
                return Err(AddressError::InvalidChar { ch, part: "domain" });
            }
        }
        Ok(Domain(s.to_owned()))
    }

    /// The domain as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `true` when the domain has non-ASCII labels.
    #[must_use]
    pub fn needs_smtputf8(&self) -> bool {
        !self.0.is_ascii()
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Writes an address literal: `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn write_literal(ip: &IpAddr, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match ip {
        IpAddr::V4(v4) => write!(f, "[{v4}]"),
        IpAddr::V6(v6) => write!(f, "[IPv6:{v6}]"),
    }
}

fn parse_literal(s: &str) -> Result<IpAddr, AddressError> {
    let inner = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(AddressError::BadLiteral)?;
    if inner.len() > 5 && inner[..5].eq_ignore_ascii_case("IPv6:") {
        return inner[5..]
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| AddressError::BadLiteral);
    }
    inner
        .parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|_| AddressError::BadLiteral)
}

/// The name the client gives in EHLO/HELO: a domain or an address literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientName {
    /// A fully qualified domain name.
    Domain(Domain),
    /// An address literal, for hosts without a name.
    Literal(IpAddr),
}

impl ClientName {
    /// Parses a domain or a bracketed address literal.
    pub fn parse(s: &str) -> Result<ClientName, AddressError> {
        if s.starts_with('[') {
            parse_literal(s).map(ClientName::Literal)
        } else {
            let domain = Domain::parse(s)?;
            if domain.needs_smtputf8() {
                // EHLO is sent before any extension is known: ASCII only.
                return Err(AddressError::Malformed {
                    what: "EHLO name (must be ASCII; use the A-label form)",
                });
            }
            Ok(ClientName::Domain(domain))
        }
    }
}

impl Default for ClientName {
    /// `[127.0.0.1]`: a valid name for a host that does not know its own, used
    /// when the caller gives none.
    fn default() -> Self {
        ClientName::Literal(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientName::Domain(d) => d.fmt(f),
            ClientName::Literal(ip) => write_literal(ip, f),
        }
    }
}

/// The domain part of a mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MailDomain {
    /// A domain name.
    Domain(Domain),
    /// An address literal (`user@[192.0.2.1]`).
    Literal(IpAddr),
}

impl fmt::Display for MailDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailDomain::Domain(d) => d.fmt(f),
            MailDomain::Literal(ip) => write_literal(ip, f),
        }
    }
}

/// A mailbox `local-part@domain` (RFC 5321 §4.1.2), UTF-8 allowed (RFC 6531).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mailbox {
    local: String,
    domain: MailDomain,
}

const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";

fn check_local_part(local: &str) -> Result<(), AddressError> {
    if local.is_empty() {
        return Err(AddressError::Malformed {
            what: "local part (empty)",
        });
    }
    if local.len() > 64 {
        return Err(AddressError::TooLong {
            part: "local part",
            limit: 64,
        });
    }
    if let Some(inner) = local.strip_prefix('"') {
        let Some(inner) = inner.strip_suffix('"') else {
            return Err(AddressError::Malformed {
                what: "local part (unterminated quoted string)",
            });
        };
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(q) if (' '..='~').contains(&q) => {}
                    _ => {
                        return Err(AddressError::Malformed {
                            what: "local part (bad quoted pair)",
                        });
                    }
                },
                '"' => {
                    return Err(AddressError::Malformed {
                        what: "local part (unescaped quote)",
                    });
                }
                c if (' '..='~').contains(&c) => {}
                c if !c.is_ascii() && !c.is_control() => {}
                ch => {
                    return Err(AddressError::InvalidChar {
                        ch,
                        part: "local part",
                    });
                }
            }
        }
        return Ok(());
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err(AddressError::Malformed {
                what: "local part (empty atom: leading, trailing or double dot)",
            });
        }
        if let Some(ch) = atom.chars().find(|&c| {
            !(c.is_ascii_alphanumeric()
                || ATEXT_SPECIALS.contains(c)
                || (!c.is_ascii() && !c.is_control() && !c.is_whitespace()))
        }) {
            return Err(AddressError::InvalidChar {
                ch,
                part: "local part",
            });
        }
    }
    Ok(())
}

/// A mailbox with an optional display name, as From, To, Cc and Reply-To
/// headers write it: `jane@example.com`, `<jane@example.com>`,
/// `Jane Doe <jane@example.com>` or `"Doe, Jane" <jane@example.com>`. The
/// name is for headers only; the envelope uses the [`Mailbox`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct NamedMailbox {
    /// The display name, without quotes.
    pub name: Option<String>,
    /// The address.
    pub mailbox: Mailbox,
}

impl NamedMailbox {
    /// Parses the forms above. A name with a control character (a line
    /// break would inject a header) is refused.
    pub fn parse(s: &str) -> Result<NamedMailbox, AddressError> {
        let s = s.trim();
        let Some(open) = s.rfind('<') else {
            return Ok(NamedMailbox {
                name: None,
                mailbox: Mailbox::parse(s)?,
            });
        };
        let Some(address) = s[open + 1..].strip_suffix('>') else {
            return Err(AddressError::Malformed {
                what: "address (no closing '>')",
            });
        };
        let raw = s[..open].trim();
        let name = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
            None => raw.to_owned(),
        };
        if name.chars().any(char::is_control) {
            return Err(AddressError::Malformed {
                what: "display name (control character)",
            });
        }
        Ok(NamedMailbox {
            name: Some(name).filter(|n| !n.is_empty()),
            mailbox: Mailbox::parse(address.trim())?,
        })
    }
}

impl From<Mailbox> for NamedMailbox {
    fn from(mailbox: Mailbox) -> Self {
        NamedMailbox {
            name: None,
            mailbox,
        }
    }
}

impl std::str::FromStr for NamedMailbox {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NamedMailbox::parse(s)
    }
}

impl fmt::Display for NamedMailbox {
    /// `"Name" <address>`, or the bare address without a name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(
                f,
                "\"{}\" <{}>",
                n.replace('\\', "\\\\").replace('"', "\\\""),
                self.mailbox
            ),
            None => write!(f, "{}", self.mailbox),
        }
    }
}

impl Mailbox {
    /// Parses `local@domain`; the local part may be a quoted string. Surrounding
    /// angle brackets are not accepted here (they belong to the path); a
    /// header form with a display name (`Jane Doe <jane@example.com>`) is
    /// read by [`NamedMailbox::parse`].
    pub fn parse(s: &str) -> Result<Mailbox, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.ends_with('>') && s.contains('<') && !s.starts_with('"') {
            return Err(AddressError::Malformed {
                what: "address (a display name and <...> are header syntax: use NamedMailbox::parse)",
            });
        }
        let at = s.rfind('@').ok_or(AddressError::MissingAt)?;
        let (local, domain) = (&s[..at], &s[at + 1..]);
        check_local_part(local)?;
        let domain = if domain.starts_with('[') {
            MailDomain::Literal(parse_literal(domain)?)
        } else {
            MailDomain::Domain(Domain::parse(domain)?)
        };
        // Path limit 256 octets includes the two angle brackets.
        if s.len() + 2 > 256 {
            return Err(AddressError::TooLong {
                part: "path",
                limit: 256,
            });
        }
        Ok(Mailbox {
            local: local.to_owned(),
            domain,
        })
    }

    /// The local part as given.
    #[must_use]
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The domain part.
    #[must_use]
    pub fn domain(&self) -> &MailDomain {
        &self.domain
    }

    /// `true` when the address has non-ASCII characters, so that MAIL must carry
    /// the SMTPUTF8 parameter.
    #[must_use]
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii()
            || matches!(&self.domain, MailDomain::Domain(d) if d.needs_smtputf8())
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl std::str::FromStr for Mailbox {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mailbox::parse(s)
    }
}

/// The reverse path of MAIL FROM: a mailbox, or the null path `<>` used for
/// bounces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`.
    Null,
    /// `<mailbox>`.
    Mailbox(Mailbox),
}

impl ReversePath {
    /// `true` when the path has non-ASCII characters.
    #[must_use]
    pub fn needs_smtputf8(&self) -> bool {
        matches!(self, ReversePath::Mailbox(m) if m.needs_smtputf8())
    }
}

impl From<Mailbox> for ReversePath {
    fn from(m: Mailbox) -> Self {
        ReversePath::Mailbox(m)
    }
}

impl fmt::Display for ReversePath {
    /// With the angle brackets: `<user@example.com>` or `<>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_mailboxes() {
        let n = NamedMailbox::parse("Jane Doe <jane@example.com>").unwrap();
        assert_eq!(n.name.as_deref(), Some("Jane Doe"));
        assert_eq!(n.mailbox.to_string(), "jane@example.com");
        let q = NamedMailbox::parse("\"Doe, \\\"J\\\"\" <jane@example.com>").unwrap();
        assert_eq!(q.name.as_deref(), Some("Doe, \"J\""));
        assert_eq!(NamedMailbox::parse(&q.to_string()).unwrap(), q, "{q}");
        assert_eq!(
            NamedMailbox::parse("<jane@example.com>").unwrap().name,
            None
        );
        assert_eq!(NamedMailbox::parse("jane@example.com").unwrap().name, None);
        assert!(NamedMailbox::parse("Evil\r\nBcc: x <jane@example.com>").is_err());
        assert!(NamedMailbox::parse("Jane <jane@example.com").is_err());
        let e = Mailbox::parse("Jane <jane@example.com>").unwrap_err();
        assert!(e.to_string().contains("NamedMailbox::parse"), "{e}");
    }

    #[test]
    fn mailboxes() {
        let m = Mailbox::parse("user.name+tag@example.com").unwrap();
        assert_eq!(m.to_string(), "user.name+tag@example.com");
        assert!(!m.needs_smtputf8());
        assert!(Mailbox::parse("\"a b@c\"@example.com").is_ok());
        assert!(Mailbox::parse("user@[192.0.2.1]").is_ok());
        assert_eq!(
            Mailbox::parse("user@[IPv6:2001:db8::1]")
                .unwrap()
                .to_string(),
            "user@[IPv6:2001:db8::1]"
        );
        let u = Mailbox::parse("用户@例子.广告").unwrap();
        assert!(u.needs_smtputf8());
        for bad in [
            "",
            "no-at",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@example.com>",
            "a>@example.com",
            "a@-example.com",
            "a@example..com",
            "a@example.com.",
            "a\r\n@example.com",
            "a@example.com\r\nRCPT TO:<x@y>",
            "a\0@example.com",
            "\"a\"b\"@example.com",
            "\"abc@example.com",
            "a@[300.1.1.1]",
            "a@[IPv6:zz]",
            "a@",
            "@example.com",
        ] {
            assert!(Mailbox::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(matches!(
            Mailbox::parse(&long_local),
            Err(AddressError::TooLong { limit: 64, .. })
        ));
    }

    #[test]
    fn client_names() {
        assert_eq!(
            ClientName::parse("mail.example.com").unwrap().to_string(),
            "mail.example.com"
        );
        assert_eq!(
            ClientName::parse("[10.0.0.1]").unwrap().to_string(),
            "[10.0.0.1]"
        );
        assert_eq!(
            ClientName::parse("[ipv6:::1]").unwrap().to_string(),
            "[IPv6:::1]"
        );
        assert!(ClientName::parse("例子.广告").is_err());
        assert!(ClientName::parse("bad name").is_err());
        assert!(ClientName::parse("").is_err());
        assert_eq!(ClientName::default().to_string(), "[127.0.0.1]");
    }
}
