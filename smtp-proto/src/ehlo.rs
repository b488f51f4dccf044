//! EHLO capabilities (RFC 5321 §4.1.1.1 and the extensions a submission client
//! uses).
//!
//! Keywords are matched case-insensitively. AUTH is read from both the standard
//! `AUTH x y` line and the old `AUTH=x y` form (and the legacy `X-EXPS` alias some
//! providers still send); the mechanisms of all such lines are merged.

use crate::reply::Reply;
use crate::sasl::Mechanism;

/// What the server advertised in its EHLO reply.
///
/// A HELO fallback yields [`Capabilities::none`]: no extension at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The domain (or first word) of the first EHLO line.
    pub server_name: String,
    /// `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// `8BITMIME` (RFC 6152).
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `SIZE` was advertised (RFC 1870).
    pub size: bool,
    /// The `SIZE` limit in octets, when a non-zero number was given (0 or no
    /// number means no fixed limit).
    pub max_size: Option<u64>,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhanced_status_codes: bool,
    /// `CHUNKING` (RFC 3030): BDAT.
    pub chunking: bool,
    /// `BINARYMIME` (RFC 3030).
    pub binary_mime: bool,
    /// `DSN` (RFC 3461).
    pub dsn: bool,
    /// `REQUIRETLS` (RFC 8689).
    pub requiretls: bool,
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// SASL mechanisms this crate implements that the server offers, in the
    /// server's order, without duplicates.
    pub auth: Vec<Mechanism>,
    /// Other SASL mechanism names the server offers (upper-cased), for diagnostics.
    pub auth_other: Vec<String>,
    /// `true` when an AUTH line was present, even an empty one (Dovecot sends an
    /// empty `250-AUTH` before TLS on non-local connections).
    pub auth_advertised: bool,
    /// Every other keyword line (upper-cased keyword, then its parameters as sent).
    pub other: Vec<String>,
}

impl Capabilities {
    /// No extensions: what a server that only speaks HELO offers.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads the capabilities from a positive EHLO reply. Unknown keywords are
    /// kept in [`Capabilities::other`]; malformed parameters of known keywords are
    /// treated as the keyword without parameters (`SIZE abc` means SIZE with no
    /// stated limit), never as an error: a submission should not fail over a
    /// cosmetic defect of an advertisement.
    #[must_use]
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities::default();
        let mut lines = reply.lines();
        if let Some(first) = lines.next() {
            let name = first.split(|&b| b == b' ').next().unwrap_or_default();
            caps.server_name = String::from_utf8_lossy(name).into_owned();
        }
        for line in lines {
            caps.add_line(line);
        }
        caps
    }

    fn add_line(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        // `AUTH=PLAIN LOGIN`: keyword and first parameter joined by '='.
        let (keyword, params) = match line.find([' ', '=']) {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => (line, ""),
        };
        let keyword = keyword.to_ascii_uppercase();
        match keyword.as_str() {
            "PIPELINING" => self.pipelining = true,
            "8BITMIME" => self.eight_bit_mime = true,
            "SMTPUTF8" => self.smtputf8 = true,
            "ENHANCEDSTATUSCODES" => self.enhanced_status_codes = true,
            "CHUNKING" => self.chunking = true,
            "BINARYMIME" => self.binary_mime = true,
            "DSN" => self.dsn = true,
            "REQUIRETLS" => self.requiretls = true,
            "STARTTLS" => self.starttls = true,
            "SIZE" => {
                self.size = true;
                self.max_size = params
                    .split_ascii_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|&n| n > 0);
            }
            "AUTH" | "X-EXPS" => {
                self.auth_advertised = true;
                for name in params.split_ascii_whitespace() {
                    let upper = name.to_ascii_uppercase();
                    match Mechanism::from_name(&upper) {
                        Some(m) if !self.auth.contains(&m) => self.auth.push(m),
                        Some(_) => {}
                        None if !self.auth_other.contains(&upper) => self.auth_other.push(upper),
                        None => {}
                    }
                }
            }
            "" => {}
            _ => {
                let mut entry = keyword;
                if !params.is_empty() {
                    entry.push(' ');
                    entry.push_str(params);
                }
                self.other.push(entry);
            }
        }
    }

    /// `true` when the server offers the mechanism.
    #[must_use]
    pub fn offers(&self, mechanism: Mechanism) -> bool {
        self.auth.contains(&mechanism)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::ReplyParser;

    fn caps(wire: &[u8]) -> Capabilities {
        let (_, reply) = ReplyParser::default().parse(wire).unwrap();
        Capabilities::from_ehlo(&reply.unwrap())
    }

    #[test]
    fn gmail() {
        let c = caps(b"250-smtp.gmail.com at your service, [223.233.111.241]\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n");
        assert_eq!(c.server_name, "smtp.gmail.com");
        assert_eq!(c.max_size, Some(35882577));
        assert!(c.eight_bit_mime && c.pipelining && c.chunking && c.smtputf8);
        assert!(c.enhanced_status_codes && !c.starttls && !c.dsn);
        assert_eq!(
            c.auth,
            vec![
                Mechanism::Login,
                Mechanism::Plain,
                Mechanism::XOAuth2,
                Mechanism::OAuthBearer
            ]
        );
        assert_eq!(c.auth_other, vec!["PLAIN-CLIENTTOKEN", "XOAUTH"]);
    }

    #[test]
    fn old_style_auth_and_case() {
        let c = caps(b"250-mail.example.com\r\n250-auth=login plain\r\n250-AUTH LOGIN PLAIN\r\n250-starttls\r\n250-size\r\n250 X-FOO bar\r\n");
        assert_eq!(c.auth, vec![Mechanism::Login, Mechanism::Plain]);
        assert!(c.starttls && c.size);
        assert_eq!(c.max_size, None);
        assert_eq!(c.other, vec!["X-FOO bar"]);
    }

    #[test]
    fn empty_auth_line_and_x_exps() {
        let c = caps(b"250-host\r\n250-AUTH\r\n250 STARTTLS\r\n");
        assert!(c.auth_advertised && c.auth.is_empty());
        let c = caps(b"250-host\n250-X-EXPS LOGIN PLAIN\n250 STARTTLS\n");
        assert_eq!(c.auth, vec![Mechanism::Login, Mechanism::Plain]);
    }
}
