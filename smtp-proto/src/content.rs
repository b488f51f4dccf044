//! What a message's bytes need from the server, decided before anything is
//! sent: 8-bit data needs `BODY=8BITMIME`, UTF-8 in the header section
//! (RFC 6532) needs `SMTPUTF8`. A message held in memory is scanned in one
//! pass; a file is scanned chunk by chunk before it is streamed (a file can
//! be read twice; a pipe cannot, so its sender declares it).

use crate::body::{BodyConfig, BodyEncoder, BodyStats};
use crate::command::{BodyType, Envelope};
use crate::error::{CommandError, Error};

/// The extensions a message's content needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[must_use]
#[non_exhaustive]
pub struct ContentNeeds {
    /// A byte of 0x80 or above somewhere: `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// A byte of 0x80 or above in the header section (UTF-8 headers,
    /// RFC 6532): `SMTPUTF8`.
    pub utf8_headers: bool,
}

impl ContentNeeds {
    /// Scans a whole message.
    pub fn of(message: &[u8]) -> ContentNeeds {
        let mut scan = ContentScanner::default();
        scan.push(message);
        scan.finish()
    }
}

/// An incremental [`ContentNeeds`] scan: feed chunks of any size with
/// [`ContentScanner::push`], then [`ContentScanner::finish`]. Holds three
/// flags of state; the result does not depend on how the input is cut.
#[derive(Clone, Debug)]
pub struct ContentScanner {
    needs: ContentNeeds,
    /// Still in the header section.
    in_headers: bool,
    /// The current header line has only a CR so far (or nothing).
    line_empty: bool,
}

impl Default for ContentScanner {
    fn default() -> Self {
        ContentScanner {
            needs: ContentNeeds::default(),
            in_headers: true,
            line_empty: true,
        }
    }
}

impl ContentScanner {
    /// Scans the next bytes of the message.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while self.in_headers {
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            bytes = rest;
            match b {
                // An empty line (CRLF or a bare LF) ends the header section.
                b'\n' if self.line_empty => self.in_headers = false,
                b'\n' => self.line_empty = true,
                b'\r' => {}
                _ => {
                    self.line_empty = false;
                    if b >= 0x80 {
                        self.needs.utf8_headers = true;
                        self.needs.eight_bit = true;
                    }
                }
            }
        }
        if !self.needs.eight_bit {
            self.needs.eight_bit = bytes.iter().any(|&b| b >= 0x80);
        }
    }

    /// The needs of everything pushed.
    pub fn finish(&self) -> ContentNeeds {
        self.needs
    }
}

impl Envelope {
    /// Declares what the content needs: `BODY=8BITMIME` for 8-bit data
    /// (unless a body type is already declared), `SMTPUTF8` for UTF-8
    /// headers. When the server does not offer what is declared, the send is
    /// refused before any command goes out.
    pub fn declare(&mut self, needs: ContentNeeds) {
        if needs.eight_bit && self.body == BodyType::SevenBit {
            self.body = BodyType::EightBitMime;
        }
        if needs.utf8_headers {
            self.smtputf8 = true;
        }
    }

    /// What `message` becomes after `DATA` for this envelope (line ends
    /// repaired, leading dots doubled, the terminator), with the checks the
    /// client applies before anything is sent: a recipient is needed, and a
    /// line over 998 octets, a NUL or 8-bit data the envelope does not
    /// declare makes the message unsendable (the same errors
    /// [`crate::Client::write_body`] gives). For stand-in transports in
    /// tests.
    pub fn data_wire(&self, message: &[u8]) -> Result<(Vec<u8>, BodyStats), CommandError> {
        if self.recipients.is_empty() {
            return Err(CommandError::NoRecipients);
        }
        let mut encoder = BodyEncoder::new(
            BodyConfig::default()
                .dot_stuffing(true)
                .eight_bit(self.body != BodyType::SevenBit || self.needs_smtputf8()),
        );
        let mut wire = Vec::with_capacity(message.len() + 5);
        encoder
            .encode(message, &mut wire)
            .and_then(|()| encoder.finish(&mut wire))
            .map(|stats| (wire, stats))
            .map_err(|e| CommandError::Failed(Error::Body(e)))
    }

    /// `true` when [`Envelope::declare`] would change this envelope.
    #[must_use]
    pub fn undeclared(&self, needs: ContentNeeds) -> bool {
        (needs.eight_bit && self.body == BodyType::SevenBit)
            || (needs.utf8_headers && !self.smtputf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_cut(message: &[u8]) -> ContentNeeds {
        let whole = ContentNeeds::of(message);
        for at in 0..=message.len() {
            let mut s = ContentScanner::default();
            s.push(&message[..at]);
            s.push(&message[at..]);
            assert_eq!(s.finish(), whole, "cut at {at}");
        }
        let mut s = ContentScanner::default();
        for b in message {
            s.push(std::slice::from_ref(b));
        }
        assert_eq!(s.finish(), whole, "byte by byte");
        whole
    }

    #[test]
    fn headers_and_body() {
        let ascii = scan_cut(b"Subject: hi\r\n\r\nhello\r\n");
        assert_eq!(ascii, ContentNeeds::default());
        let body = scan_cut("Subject: hi\r\n\r\nj\u{f6}ran\r\n".as_bytes());
        assert_eq!(
            body,
            ContentNeeds {
                eight_bit: true,
                utf8_headers: false
            }
        );
        let header = scan_cut("To: j\u{f6}ran@example.com\r\n\r\nhello\r\n".as_bytes());
        assert!(header.utf8_headers && header.eight_bit);
        // Bare LF line ends, and a folded header line.
        let lf = scan_cut("Subject: a\n b\u{e9}\n\nbody\n".as_bytes());
        assert!(lf.utf8_headers);
        // A message with no header section at all: the first line is empty.
        let none = scan_cut("\r\n\u{e9}t\u{e9}\r\n".as_bytes());
        assert!(none.eight_bit && !none.utf8_headers);
    }

    #[test]
    fn declaring_upgrades_only_what_is_needed() {
        let mut env = Envelope::new(
            crate::Mailbox::parse("a@example.com").unwrap_or_else(|e| panic!("{e}")),
            [],
        );
        let needs = ContentNeeds::of("To: j\u{f6}ran@example.com\r\n\r\nx\r\n".as_bytes());
        assert!(env.undeclared(needs));
        env.declare(needs);
        assert_eq!(env.body, BodyType::EightBitMime);
        assert!(env.smtputf8 && env.needs_smtputf8());
        assert!(!env.undeclared(needs));
        let mut binary = env.clone();
        binary.body = BodyType::BinaryMime;
        binary.declare(needs);
        assert_eq!(
            binary.body,
            BodyType::BinaryMime,
            "an explicit body type stays"
        );
    }
}
