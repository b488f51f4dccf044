//! The envelope of a message, ESMTP parameters, and the command encoder.
//!
//! Commands are written only from validated values ([`Mailbox`], [`ClientName`],
//! [`EsmtpParam`], [`XText`]), so nothing a caller passes can add a line to the
//! command stream.

use std::fmt;

use crate::address::{AddressError, ClientName, Mailbox, ReversePath};
use crate::body::{BodyConfig, LongLines, NulBytes};
use crate::ehlo::Capabilities;
use crate::error::CommandError;

/// An ESMTP parameter of MAIL or RCPT (RFC 5321 §4.1.2 `esmtp-param`), for
/// extensions this crate does not model itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EsmtpParam {
    keyword: String,
    value: Option<String>,
}

impl EsmtpParam {
    /// `keyword` is letters, digits and `-` (not first); `value`, when given, is
    /// printable ASCII without `=` or space (`esmtp-value`).
    pub fn new(keyword: &str, value: Option<&str>) -> Result<EsmtpParam, AddressError> {
        let mut chars = keyword.chars();
        match chars.next() {
            Some(c) if c.is_ascii_alphanumeric() => {}
            Some(ch) => {
                return Err(AddressError::InvalidChar {
                    ch,
                    part: "ESMTP keyword",
                });
            }
            None => return Err(AddressError::Empty),
        }
        if let Some(ch) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(AddressError::InvalidChar {
                ch,
                part: "ESMTP keyword",
            });
        }
        if let Some(value) = value {
            if value.is_empty() {
                return Err(AddressError::Empty);
            }
            if let Some(ch) = value
                .chars()
                .find(|&c| !('!'..='~').contains(&c) || c == '=')
            {
                return Err(AddressError::InvalidChar {
                    ch,
                    part: "ESMTP value",
                });
            }
        }
        Ok(EsmtpParam {
            keyword: keyword.to_owned(),
            value: value.map(str::to_owned),
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(b' ');
        out.extend_from_slice(self.keyword.as_bytes());
        if let Some(v) = &self.value {
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
    }
}

/// A value sent as xtext (RFC 3461 §4): printable US-ASCII, encoded on the wire
/// with `+XX` for `+`, `=` and anything outside `!`..`~`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct XText(String);

impl XText {
    /// Accepts printable US-ASCII (space included) up to `max_len` octets.
    pub fn new(value: &str, max_len: usize) -> Result<XText, AddressError> {
        if value.is_empty() {
            return Err(AddressError::Empty);
        }
        if value.len() > max_len {
            return Err(AddressError::TooLong {
                part: "xtext value",
                limit: max_len,
            });
        }
        if let Some(ch) = value.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(AddressError::InvalidChar {
                ch,
                part: "xtext value",
            });
        }
        Ok(XText(value.to_owned()))
    }

    /// The decoded value.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Appends the xtext encoding of the value.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        xtext_encode(self.0.as_bytes(), out);
    }
}

impl fmt::Debug for XText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XText({:?})", self.0)
    }
}

/// Appends the xtext encoding of `bytes` (RFC 3461 §4).
pub fn xtext_encode(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'+', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// The declared content of the body (RFC 6152, RFC 3030).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyType {
    /// 7-bit text (no `BODY=` parameter). Bytes of 0x80 and above are refused by
    /// the body encoder.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`: 8-bit text lines; requires the server's 8BITMIME.
    EightBitMime,
    /// `BODY=BINARYMIME`: arbitrary bytes, sent only with BDAT; requires
    /// BINARYMIME and CHUNKING.
    BinaryMime,
}

/// What DSN to return for a recipient (RFC 3461 `NOTIFY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Notify {
    /// `NOTIFY=NEVER`.
    Never,
    /// Any combination of the three conditions; all `false` is not allowed.
    On {
        /// `SUCCESS`.
        success: bool,
        /// `FAILURE`.
        failure: bool,
        /// `DELAY`.
        delay: bool,
    },
}

/// How much of the message a DSN returns (RFC 3461 `RET`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DsnReturn {
    /// `RET=FULL`.
    Full,
    /// `RET=HDRS`.
    Headers,
}

/// One recipient with its per-recipient parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recipient {
    /// The forward path.
    pub mailbox: Mailbox,
    /// DSN `NOTIFY`; needs the server's DSN.
    pub notify: Option<Notify>,
    /// DSN `ORCPT=rfc822;...`; needs the server's DSN.
    pub original_recipient: Option<Mailbox>,
    /// Other parameters, passed as given.
    pub extra: Vec<EsmtpParam>,
}

impl From<Mailbox> for Recipient {
    fn from(mailbox: Mailbox) -> Self {
        Recipient {
            mailbox,
            notify: None,
            original_recipient: None,
            extra: Vec::new(),
        }
    }
}

/// The envelope of one message: reverse path, recipients and MAIL parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// `MAIL FROM`.
    pub from: ReversePath,
    /// `RCPT TO`, in order. Must not be empty.
    pub recipients: Vec<Recipient>,
    /// The size of the message in octets, when known: sent as `SIZE=` when the
    /// server advertises SIZE, and checked against its limit before sending.
    pub size: Option<u64>,
    /// The declared body type.
    pub body: BodyType,
    /// Ask for SMTPUTF8 even when no address needs it (a message with UTF-8
    /// headers needs it). It is added automatically for non-ASCII addresses.
    pub smtputf8: bool,
    /// DSN `RET`; needs the server's DSN.
    pub dsn_return: Option<DsnReturn>,
    /// DSN `ENVID`; needs the server's DSN.
    pub dsn_envelope_id: Option<XText>,
    /// `REQUIRETLS` (RFC 8689); needs the server's REQUIRETLS and TLS.
    pub require_tls: bool,
    /// Other MAIL parameters, passed as given.
    pub extra: Vec<EsmtpParam>,
}

impl Envelope {
    /// An envelope with default parameters.
    #[must_use]
    pub fn new(
        from: impl Into<ReversePath>,
        recipients: impl IntoIterator<Item = Mailbox>,
    ) -> Self {
        Envelope {
            from: from.into(),
            recipients: recipients.into_iter().map(Recipient::from).collect(),
            size: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            dsn_return: None,
            dsn_envelope_id: None,
            require_tls: false,
            extra: Vec::new(),
        }
    }

    /// `true` when MAIL must carry `SMTPUTF8`.
    #[must_use]
    pub fn needs_smtputf8(&self) -> bool {
        self.smtputf8
            || self.from.needs_smtputf8()
            || self.recipients.iter().any(|r| r.mailbox.needs_smtputf8())
    }

    /// `true` when any DSN parameter is requested.
    #[must_use]
    pub fn uses_dsn(&self) -> bool {
        self.dsn_return.is_some()
            || self.dsn_envelope_id.is_some()
            || self
                .recipients
                .iter()
                .any(|r| r.notify.is_some() || r.original_recipient.is_some())
    }
}

/// Appends `EHLO name\r\n`.
pub fn write_ehlo(out: &mut Vec<u8>, name: &ClientName) {
    out.extend_from_slice(format!("EHLO {name}\r\n").as_bytes());
}

/// Appends `HELO name\r\n`.
pub fn write_helo(out: &mut Vec<u8>, name: &ClientName) {
    out.extend_from_slice(format!("HELO {name}\r\n").as_bytes());
}

/// How one transaction goes on the wire, decided from the envelope and the
/// server's capabilities before anything is sent: a missing extension is a
/// [`CommandError`] here, never a refusal from the server later.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// MAIL, every RCPT and DATA go out as one group.
    pub(crate) pipelining: bool,
    /// The body goes in BDAT chunks instead of DATA.
    pub(crate) chunking: bool,
    /// The MAIL FROM parameters.
    pub(crate) params: MailParams,
    /// The body encoder's settings.
    pub(crate) body: BodyConfig,
}

impl Plan {
    /// The plan for `envelope` on a connection with `caps` (`tls`: whether
    /// it is encrypted). `use_chunking`, `long_lines` and `nul` are the
    /// client's settings.
    pub(crate) fn new(
        envelope: &Envelope,
        caps: &Capabilities,
        tls: bool,
        use_chunking: bool,
        long_lines: LongLines,
        nul: NulBytes,
        open: bool,
    ) -> Result<Plan, CommandError> {
        if envelope.recipients.is_empty() && !open {
            return Err(CommandError::NoRecipients);
        }
        let require = |ok: bool, extension: &'static str, reason: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(CommandError::ExtensionRequired { extension, reason })
            }
        };
        let smtputf8 = envelope.needs_smtputf8();
        require(
            !smtputf8 || caps.smtputf8,
            "SMTPUTF8",
            "non-ASCII addresses",
        )?;
        let binary = envelope.body == BodyType::BinaryMime;
        match envelope.body {
            BodyType::EightBitMime => require(caps.eight_bit_mime, "8BITMIME", "an 8-bit body")?,
            BodyType::BinaryMime => {
                require(caps.binary_mime, "BINARYMIME", "a binary body")?;
                require(caps.chunking, "CHUNKING", "a binary body")?;
                require(
                    caps.pipelining,
                    "PIPELINING",
                    "a binary body sent with BDAT",
                )?;
            }
            _ => {}
        }
        require(
            !envelope.uses_dsn() || caps.dsn,
            "DSN",
            "delivery status notification parameters",
        )?;
        if envelope.require_tls {
            require(caps.requiretls, "REQUIRETLS", "REQUIRETLS")?;
            require(tls, "TLS", "REQUIRETLS")?;
        }
        let size = match (caps.size, envelope.size, caps.max_size) {
            (true, Some(size), Some(limit)) if size > limit => {
                return Err(CommandError::MessageTooLarge { size, limit });
            }
            (true, size, _) => size,
            (false, _, _) => None,
        };
        let chunking = binary || (use_chunking && caps.chunking && caps.pipelining);
        Ok(Plan {
            pipelining: caps.pipelining,
            chunking,
            params: MailParams {
                size,
                body: Some(envelope.body).filter(|b| *b != BodyType::SevenBit),
                smtputf8,
            },
            body: BodyConfig {
                dot_stuffing: !chunking,
                // UTF-8 headers are 8-bit data too (RFC 6531 §3.1).
                eight_bit: envelope.body != BodyType::SevenBit || smtputf8,
                binary,
                long_lines,
                nul,
            },
        })
    }
}

/// The MAIL parameters decided by the client from envelope and capabilities.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MailParams {
    pub(crate) size: Option<u64>,
    pub(crate) body: Option<BodyType>,
    pub(crate) smtputf8: bool,
}

/// Appends `MAIL FROM:<path> params\r\n`.
pub(crate) fn write_mail(out: &mut Vec<u8>, env: &Envelope, params: MailParams) {
    out.extend_from_slice(b"MAIL FROM:");
    out.extend_from_slice(env.from.to_string().as_bytes());
    if let Some(size) = params.size {
        out.extend_from_slice(format!(" SIZE={size}").as_bytes());
    }
    match params.body {
        Some(BodyType::EightBitMime) => out.extend_from_slice(b" BODY=8BITMIME"),
        Some(BodyType::BinaryMime) => out.extend_from_slice(b" BODY=BINARYMIME"),
        _ => {}
    }
    if params.smtputf8 {
        out.extend_from_slice(b" SMTPUTF8");
    }
    match env.dsn_return {
        Some(DsnReturn::Full) => out.extend_from_slice(b" RET=FULL"),
        Some(DsnReturn::Headers) => out.extend_from_slice(b" RET=HDRS"),
        None => {}
    }
    if let Some(id) = &env.dsn_envelope_id {
        out.extend_from_slice(b" ENVID=");
        id.encode_into(out);
    }
    if env.require_tls {
        out.extend_from_slice(b" REQUIRETLS");
    }
    for p in &env.extra {
        p.write(out);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `RCPT TO:<path> params\r\n`.
pub(crate) fn write_rcpt(out: &mut Vec<u8>, rcpt: &Recipient) {
    out.extend_from_slice(format!("RCPT TO:<{}>", rcpt.mailbox).as_bytes());
    match rcpt.notify {
        Some(Notify::Never) => out.extend_from_slice(b" NOTIFY=NEVER"),
        Some(Notify::On {
            success,
            failure,
            delay,
        }) => {
            out.extend_from_slice(b" NOTIFY=");
            let mut first = true;
            for (on, name) in [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")] {
                if on {
                    if !first {
                        out.push(b',');
                    }
                    out.extend_from_slice(name.as_bytes());
                    first = false;
                }
            }
        }
        None => {}
    }
    if let Some(orcpt) = &rcpt.original_recipient {
        out.extend_from_slice(b" ORCPT=rfc822;");
        xtext_encode(orcpt.to_string().as_bytes(), out);
    }
    for p in &rcpt.extra {
        p.write(out);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `BDAT n[ LAST]\r\n`.
pub(crate) fn write_bdat(out: &mut Vec<u8>, len: usize, last: bool) {
    out.extend_from_slice(format!("BDAT {len}{}\r\n", if last { " LAST" } else { "" }).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(s: &str) -> Mailbox {
        Mailbox::parse(s).unwrap()
    }

    #[test]
    fn xtext() {
        let mut out = Vec::new();
        xtext_encode(b"a+b=c d\x01~", &mut out);
        assert_eq!(out, b"a+2Bb+3Dc+20d+01~");
        assert!(XText::new("ok id", 100).is_ok());
        assert!(XText::new("bad\r\n", 100).is_err());
        assert!(XText::new(&"x".repeat(101), 100).is_err());
    }

    #[test]
    fn params_are_validated() {
        assert!(EsmtpParam::new("MT-PRIORITY", Some("3")).is_ok());
        assert!(EsmtpParam::new("X", Some("a b")).is_err());
        assert!(EsmtpParam::new("X", Some("a=b")).is_err());
        assert!(EsmtpParam::new("X\r\n", None).is_err());
        assert!(EsmtpParam::new("-X", None).is_err());
        assert!(EsmtpParam::new("X", Some("\u{e9}")).is_err());
    }

    #[test]
    fn mail_and_rcpt_lines() {
        let mut env = Envelope::new(mb("a@example.com"), [mb("b@example.org")]);
        env.dsn_return = Some(DsnReturn::Headers);
        env.dsn_envelope_id = Some(XText::new("id+1", 100).unwrap());
        env.extra
            .push(EsmtpParam::new("MT-PRIORITY", Some("3")).unwrap());
        let mut out = Vec::new();
        write_mail(
            &mut out,
            &env,
            MailParams {
                size: Some(1234),
                body: Some(BodyType::EightBitMime),
                smtputf8: true,
            },
        );
        assert_eq!(
            out,
            b"MAIL FROM:<a@example.com> SIZE=1234 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1 MT-PRIORITY=3\r\n"
        );
        let mut r = Recipient::from(mb("b@example.org"));
        r.notify = Some(Notify::On {
            success: true,
            failure: true,
            delay: false,
        });
        r.original_recipient = Some(mb("b+x@example.org"));
        out.clear();
        write_rcpt(&mut out, &r);
        assert_eq!(
            out,
            b"RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.org\r\n"
        );
        let null = Envelope::new(ReversePath::Null, [mb("b@example.org")]);
        out.clear();
        write_mail(&mut out, &null, MailParams::default());
        assert_eq!(out, b"MAIL FROM:<>\r\n");
    }
}
