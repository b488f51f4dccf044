//! SASL for SMTP AUTH (RFC 4954): PLAIN (RFC 4616), LOGIN, XOAUTH2 (Google and
//! Microsoft) and OAUTHBEARER (RFC 7628).
//!
//! This module builds the client responses; the exchange itself (SASL-IR or
//! two-step, error challenges, cancel) runs in the client machine.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
pub use postern_common::Secret;

/// Bytes that hold a secret (an encoded SASL response). `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretBytes(pub(crate) Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted {} bytes]", self.0.len())
    }
}

/// A SASL mechanism this crate implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// `PLAIN` (RFC 4616): one response with authzid, user and password.
    Plain,
    /// `LOGIN`: user and password as answers to two prompts.
    Login,
    /// `XOAUTH2` (Google, Microsoft): a bearer token.
    XOAuth2,
    /// `OAUTHBEARER` (RFC 7628): a bearer token with GS2 header, host and port.
    OAuthBearer,
}

impl Mechanism {
    /// The mechanism name as on the wire.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Looks a name up (case-insensitive).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Mechanism> {
        [
            Mechanism::Plain,
            Mechanism::Login,
            Mechanism::XOAuth2,
            Mechanism::OAuthBearer,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// `true` for the bearer-token mechanisms.
    #[must_use]
    pub fn uses_token(self) -> bool {
        matches!(self, Mechanism::XOAuth2 | Mechanism::OAuthBearer)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the client authenticates with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// A user name and password, for PLAIN and LOGIN.
    Password {
        /// The authentication identity.
        user: String,
        /// The password.
        password: Secret,
        /// PLAIN's authorization identity (act as this user), usually `None`.
        authzid: Option<String>,
    },
    /// An OAuth2 bearer token for a mailbox, for XOAUTH2 and OAUTHBEARER.
    Bearer {
        /// The mailbox (or user) the token is for.
        user: String,
        /// The access token.
        token: Secret,
    },
}

impl Credentials {
    /// Password credentials without authorization identity.
    #[must_use]
    pub fn password(user: impl Into<String>, password: impl Into<Secret>) -> Self {
        Credentials::Password {
            user: user.into(),
            password: password.into(),
            authzid: None,
        }
    }

    /// Bearer-token credentials.
    #[must_use]
    pub fn bearer(user: impl Into<String>, token: impl Into<Secret>) -> Self {
        Credentials::Bearer {
            user: user.into(),
            token: token.into(),
        }
    }

    /// The mechanisms these credentials can be used with, best first.
    #[must_use]
    pub fn mechanisms(&self) -> &'static [Mechanism] {
        match self {
            // PLAIN takes one round trip, LOGIN two.
            Credentials::Password { .. } => &[Mechanism::Plain, Mechanism::Login],
            // OAUTHBEARER is the standard; XOAUTH2 is what Microsoft 365 offers.
            Credentials::Bearer { .. } => &[Mechanism::OAuthBearer, Mechanism::XOAuth2],
        }
    }

    /// The user name.
    #[must_use]
    pub fn user(&self) -> &str {
        match self {
            Credentials::Password { user, .. } | Credentials::Bearer { user, .. } => user,
        }
    }
}

/// Why credentials cannot be encoded for a mechanism. The messages name the
/// field and position, never the secret's content.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslError {
    /// The mechanism does not take this kind of credentials.
    WrongCredentials {
        /// The mechanism.
        mechanism: Mechanism,
    },
    /// A field contains a byte the mechanism uses as a separator or that cannot
    /// be part of it (NUL for PLAIN, `\x01` for the token mechanisms, a line
    /// break or space in a token).
    ForbiddenByte {
        /// `"user"`, `"password"`, `"token"`, `"authzid"` or `"host"`.
        field: &'static str,
        /// The byte.
        byte: u8,
        /// Its position in the field.
        position: usize,
    },
    /// A field is empty.
    Empty {
        /// Which field.
        field: &'static str,
    },
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaslError::WrongCredentials { mechanism } => {
                write!(f, "{mechanism} cannot be used with these credentials")
            }
            SaslError::ForbiddenByte {
                field,
                byte,
                position,
            } => {
                write!(
                    f,
                    "the {field} contains byte 0x{byte:02x} at position {position}"
                )?;
                if matches!(byte, b'\r' | b'\n') {
                    f.write_str(
                        " (a line break: was it read from a file with a trailing newline?)",
                    )?;
                }
                Ok(())
            }
            SaslError::Empty { field } => write!(f, "the {field} is empty"),
        }
    }
}

impl std::error::Error for SaslError {}

fn forbid(field: &'static str, value: &str, bad: impl Fn(u8) -> bool) -> Result<(), SaslError> {
    match value.bytes().position(&bad) {
        Some(position) => Err(SaslError::ForbiddenByte {
            field,
            byte: value.as_bytes()[position],
            position,
        }),
        None => Ok(()),
    }
}

fn non_empty(field: &'static str, value: &str) -> Result<(), SaslError> {
    if value.is_empty() {
        Err(SaslError::Empty { field })
    } else {
        Ok(())
    }
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn check_token(token: &str) -> Result<(), SaslError> {
    non_empty("token", token)?;
    let body_end = token.trim_end_matches('=').len();
    forbid("token", &token[..body_end], |b| {
        !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
    })
}

/// The server identity OAUTHBEARER puts in its message (RFC 7628 §3.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerIdentity {
    /// The host name the client connected to.
    pub host: Option<String>,
    /// The port.
    pub port: Option<u16>,
}

impl ServerIdentity {
    /// The server `host`:`port` the client connected to.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        ServerIdentity {
            host: Some(host.into()),
            port: Some(port),
        }
    }
}

/// The SASL responses for one authentication, in order (not base64-encoded).
/// PLAIN, XOAUTH2 and OAUTHBEARER have one; LOGIN has two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Responses {
    pub(crate) first: SecretBytes,
    pub(crate) second: Option<SecretBytes>,
}

/// Builds the response(s) of `mechanism` for `credentials`.
pub(crate) fn responses(
    mechanism: Mechanism,
    credentials: &Credentials,
    server: &ServerIdentity,
) -> Result<Responses, SaslError> {
    let one = |bytes: Vec<u8>| Responses {
        first: SecretBytes(bytes),
        second: None,
    };
    match (mechanism, credentials) {
        (
            Mechanism::Plain,
            Credentials::Password {
                user,
                password,
                authzid,
            },
        ) => {
            non_empty("user", user)?;
            forbid("user", user, |b| b == 0)?;
            forbid("password", password.expose(), |b| b == 0)?;
            let authzid = authzid.as_deref().unwrap_or("");
            forbid("authzid", authzid, |b| b == 0)?;
            let mut r =
                Vec::with_capacity(authzid.len() + user.len() + password.expose().len() + 2);
            r.extend_from_slice(authzid.as_bytes());
            r.push(0);
            r.extend_from_slice(user.as_bytes());
            r.push(0);
            r.extend_from_slice(password.expose().as_bytes());
            Ok(one(r))
        }
        (Mechanism::Login, Credentials::Password { user, password, .. }) => {
            non_empty("user", user)?;
            Ok(Responses {
                first: SecretBytes(user.as_bytes().to_vec()),
                second: Some(SecretBytes(password.expose().as_bytes().to_vec())),
            })
        }
        (Mechanism::XOAuth2, Credentials::Bearer { user, token }) => {
            non_empty("user", user)?;
            forbid("user", user, |b| b == 1 || b < 0x20)?;
            check_token(token.expose())?;
            let mut r = Vec::with_capacity(user.len() + token.expose().len() + 20);
            r.extend_from_slice(b"user=");
            r.extend_from_slice(user.as_bytes());
            r.extend_from_slice(b"\x01auth=Bearer ");
            r.extend_from_slice(token.expose().as_bytes());
            r.extend_from_slice(b"\x01\x01");
            Ok(one(r))
        }
        (Mechanism::OAuthBearer, Credentials::Bearer { user, token }) => {
            forbid("user", user, |b| b == 1 || b < 0x20)?;
            check_token(token.expose())?;
            let mut r = Vec::with_capacity(user.len() + token.expose().len() + 64);
            r.extend_from_slice(b"n,");
            if !user.is_empty() {
                r.extend_from_slice(b"a=");
                for &b in user.as_bytes() {
                    match b {
                        b',' => r.extend_from_slice(b"=2C"),
                        b'=' => r.extend_from_slice(b"=3D"),
                        _ => r.push(b),
                    }
                }
            }
            r.extend_from_slice(b",\x01");
            if let Some(host) = &server.host {
                forbid("host", host, |b| b < 0x21 || b == 0x7f)?;
                r.extend_from_slice(b"host=");
                r.extend_from_slice(host.as_bytes());
                r.push(1);
            }
            if let Some(port) = server.port {
                r.extend_from_slice(format!("port={port}\x01").as_bytes());
            }
            r.extend_from_slice(b"auth=Bearer ");
            r.extend_from_slice(token.expose().as_bytes());
            r.extend_from_slice(b"\x01\x01");
            Ok(one(r))
        }
        (mechanism, _) => Err(SaslError::WrongCredentials { mechanism }),
    }
}

/// The base64 initial response of `mechanism` for `credentials`, as it goes on
/// the AUTH line or after the first `334` (for LOGIN: the user name). Useful
/// for other protocols that carry the same SASL messages (IMAP, POP3).
pub fn initial_response(
    mechanism: Mechanism,
    credentials: &Credentials,
    server: &ServerIdentity,
) -> Result<Secret, SaslError> {
    let r = responses(mechanism, credentials, server)?;
    let mut out = Vec::new();
    encode_response(&r.first.0, &mut out);
    // Base64 is ASCII.
    Ok(Secret::new(String::from_utf8_lossy(&out).into_owned()))
}

/// Base64 of a SASL response as sent on the wire; an empty response is `=`
/// (RFC 4954 §4).
/// Appends the AUTH command for `mechanism` to `out`. The initial response
/// goes on the AUTH line when the line stays within the 512-octet command
/// limit (RFC 4954 §4); otherwise (a JWT access token) it waits for the
/// server's `334`, and so does LOGIN's. Returns `true` when the initial
/// response was sent. `scratch` is a reusable buffer, left empty.
pub(crate) fn write_auth(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    mechanism: Mechanism,
    responses: &Responses,
) -> bool {
    let name = mechanism.name().as_bytes();
    out.extend_from_slice(b"AUTH ");
    out.extend_from_slice(name);
    if mechanism == Mechanism::Login {
        out.extend_from_slice(b"\r\n");
        return false;
    }
    scratch.clear();
    encode_response(&responses.first.0, scratch);
    // "AUTH " + name + " " + response + CRLF within 512 octets.
    let fits = 5 + name.len() + 1 + scratch.len() + 2 <= 512;
    if fits {
        out.push(b' ');
        out.extend_from_slice(scratch);
    }
    out.extend_from_slice(b"\r\n");
    scratch.clear();
    fits
}

pub(crate) fn encode_response(raw: &[u8], out: &mut Vec<u8>) {
    if raw.is_empty() {
        out.push(b'=');
    } else {
        let start = out.len();
        out.resize(start + base64::encoded_len(raw.len(), true).unwrap_or(0), 0);
        let n = STANDARD.encode_slice(raw, &mut out[start..]).unwrap_or(0);
        out.truncate(start + n);
    }
}

/// Decodes the text of a `334` challenge. Servers add spaces or send non-base64
/// prompts (`334 OAUTHBEARER supported`): those yield `None`.
#[must_use]
pub fn decode_challenge(text: &[u8]) -> Option<Vec<u8>> {
    let text = text.trim_ascii();
    if text.is_empty() {
        return Some(Vec::new());
    }
    STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(mechanism: Mechanism, creds: &Credentials, server: &ServerIdentity) -> String {
        let r = responses(mechanism, creds, server).unwrap();
        let mut out = Vec::new();
        encode_response(&r.first.0, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_and_login() {
        let c = Credentials::password("tim", "tanstaaftanstaaf");
        assert_eq!(
            b64(Mechanism::Plain, &c, &ServerIdentity::default()),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
        );
        let r = responses(Mechanism::Login, &c, &ServerIdentity::default()).unwrap();
        assert_eq!(r.first.0, b"tim");
        assert_eq!(r.second.unwrap().0, b"tanstaaftanstaaf");
        let nul = Credentials::password("a", "b\0c");
        assert_eq!(
            responses(Mechanism::Plain, &nul, &ServerIdentity::default()),
            Err(SaslError::ForbiddenByte {
                field: "password",
                byte: 0,
                position: 1
            })
        );
        assert!(matches!(
            responses(Mechanism::XOAuth2, &c, &ServerIdentity::default()),
            Err(SaslError::WrongCredentials { .. })
        ));
    }

    #[test]
    fn token_validation_never_leaks() {
        let c = Credentials::bearer("u@example.com", "abc\n");
        let err = responses(Mechanism::XOAuth2, &c, &ServerIdentity::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("0x0a") && text.contains("trailing newline"),
            "{text}"
        );
        assert!(!text.contains("abc"));
        let c = Credentials::bearer("u\x01@example.com", "abc");
        assert!(responses(Mechanism::OAuthBearer, &c, &ServerIdentity::default()).is_err());
        let c = Credentials::bearer("u@example.com", "ab\x01c");
        assert!(responses(Mechanism::XOAuth2, &c, &ServerIdentity::default()).is_err());
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "[redacted]");
        assert!(!format!("{c:?}").contains("ab"));
    }

    #[test]
    fn oauthbearer_escapes_user() {
        let c = Credentials::bearer("a,b=c", "tok");
        let r = responses(
            Mechanism::OAuthBearer,
            &c,
            &ServerIdentity {
                host: Some("h".into()),
                port: Some(587),
            },
        )
        .unwrap();
        assert_eq!(
            r.first.0,
            b"n,a=a=2Cb=3Dc,\x01host=h\x01port=587\x01auth=Bearer tok\x01\x01"
        );
        let anon = Credentials::bearer("", "tok");
        let r = responses(Mechanism::OAuthBearer, &anon, &ServerIdentity::default()).unwrap();
        assert_eq!(r.first.0, b"n,,\x01auth=Bearer tok\x01\x01");
    }

    #[test]
    fn challenges() {
        assert_eq!(decode_challenge(b"VXNlcm5hbWU6").unwrap(), b"Username:");
        assert_eq!(decode_challenge(b"").unwrap(), b"");
        assert_eq!(decode_challenge(b"OAUTHBEARER supported"), None);
        let mut out = Vec::new();
        encode_response(b"", &mut out);
        assert_eq!(out, b"=");
    }
}
