//! DKIM signing (RFC 6376; Ed25519 keys per RFC 8463), feature `dkim`.
//!
//! The cryptography and canonicalization are `mail-auth`'s (the DKIM library
//! of the Stalwart mail server). This module only decides *what* is signed:
//! the message with its line ends made CRLF, exactly as the transport puts it
//! on the wire before dot-stuffing, so a verifier that undoes the
//! dot-stuffing sees the signed bytes.

use std::fmt;
use std::io;
use std::sync::Arc;

use base64::Engine as _;
use mail_auth::common::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter as _, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use postern_smtp::body::Canonicalizer;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;

/// The header fields signed by default, when present in the message: those
/// a reader sees and those that decide how the body is read.
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Sender",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// The largest header section [`Dkim::sign_read`] holds (1 MiB): the
/// signer needs the whole header section before the body.
pub const MAX_HEADER_SECTION: usize = 1024 * 1024;

/// Why a message could not be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DkimError {
    /// The private key could not be read: not PEM, or neither an RSA key
    /// (PKCS #1 or PKCS #8) nor an Ed25519 key (PKCS #8). Never holds key
    /// material.
    Key(String),
    /// The domain or selector is empty or holds characters a DNS name
    /// cannot.
    Name(String),
    /// The message has no `From` field, which a DKIM signature must cover.
    NoFrom,
    /// A line of the header section is neither a field (`Name: value`) nor
    /// the continuation of one; verifiers disagree on where such a header
    /// section ends, so no signature over it would verify everywhere.
    MalformedHeader {
        /// The line's number, from 1.
        line: usize,
    },
    /// The header section of a streamed message passed
    /// [`MAX_HEADER_SECTION`] bytes.
    HeaderTooLarge,
    /// The message is streamed: it cannot be signed on the way, because the
    /// signature goes before the body it covers. Sign it in a first pass
    /// with [`Dkim::sign_read`] and send it with [`crate::Message::prepend`].
    Streamed,
    /// Reading the message for signing failed.
    Read(String),
    /// The signing library failed.
    Sign(String),
}

impl fmt::Display for DkimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DkimError::Key(why) => write!(f, "DKIM key unusable: {why}"),
            DkimError::Name(why) => write!(f, "DKIM domain or selector invalid: {why}"),
            DkimError::NoFrom => f.write_str("DKIM: the message has no From field to sign"),
            DkimError::MalformedHeader { line } => write!(
                f,
                "DKIM: header line {line} is not a header field; the message cannot be signed"
            ),
            DkimError::HeaderTooLarge => write!(
                f,
                "DKIM: header section larger than {MAX_HEADER_SECTION} bytes"
            ),
            DkimError::Streamed => f.write_str(
                "DKIM: a streamed message cannot be signed while it is sent; \
                 sign it first with Dkim::sign_read and send it with Message::prepend",
            ),
            DkimError::Read(why) => write!(f, "DKIM: reading the message failed: {why}"),
            DkimError::Sign(why) => write!(f, "DKIM signing failed: {why}"),
        }
    }
}

impl std::error::Error for DkimError {}

/// A DKIM signer: a private key, the signing domain (`d=`) and the selector
/// (`s=`). Relaxed/relaxed canonicalization, `rsa-sha256` or
/// `ed25519-sha256` after the key.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use postern_transport::Dkim;
///
/// // openssl genpkey -algorithm ed25519 -out dkim.pem
/// let dkim = Dkim::from_pem_file("example.com", "mail2026", "dkim.pem")?;
/// // Publish this TXT record before sending signed mail:
/// println!("{} TXT \"{}\"", dkim.dns_name(), dkim.dns_record());
/// let signed = dkim.sign(b"From: a@example.com\nSubject: hi\n\nHello\n")?;
/// assert!(signed.starts_with(b"DKIM-Signature: v=1; a=ed25519-sha256;"));
/// # Ok(())
/// # }
/// ```
///
/// Give it to [`crate::TransportBuilder::dkim`] to sign every in-memory
/// message the transport sends. `Debug` shows the domain, selector and
/// algorithm, never the key.
#[derive(Clone)]
pub struct Dkim {
    key: SharedKey,
    domain: String,
    selector: String,
    headers: Vec<String>,
    algorithm: &'static str,
    record: String,
}

/// The private key, shared by the signer of every message.
#[derive(Clone)]
struct SharedKey(Arc<DkimKey>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

impl fmt::Debug for Dkim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dkim")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

fn check_label(what: &str, name: &str) -> Result<(), DkimError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(DkimError::Name(format!(
            "{what} {:?} is not a DNS name",
            postern_oauth::sanitize(name, 64)
        )))
    }
}

impl Dkim {
    /// A signer for `domain` with `selector`, from a private key in PEM: an
    /// RSA key (`BEGIN RSA PRIVATE KEY` or `BEGIN PRIVATE KEY`, as made by
    /// `openssl genpkey -algorithm RSA`) or an Ed25519 key (`BEGIN PRIVATE
    /// KEY`, `openssl genpkey -algorithm ed25519`).
    pub fn from_pem(
        domain: impl Into<String>,
        selector: impl Into<String>,
        pem: &str,
    ) -> Result<Dkim, DkimError> {
        let (domain, selector) = (domain.into(), selector.into());
        check_label("domain", &domain)?;
        check_label("selector", &selector)?;
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| DkimError::Key("no PEM private key found".to_owned()))?;
        let (key, algorithm, record) = match &der {
            PrivateKeyDer::Pkcs8(p8) => {
                match Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der()) {
                    Ok(ed) => {
                        let record = format!(
                            "v=DKIM1; k=ed25519; p={}",
                            base64::engine::general_purpose::STANDARD.encode(ed.public_key())
                        );
                        (DkimKey::Ed25519(ed), "ed25519-sha256", record)
                    }
                    Err(_) => rsa_key(der.clone_key())?,
                }
            }
            PrivateKeyDer::Pkcs1(_) => rsa_key(der.clone_key())?,
            _ => {
                return Err(DkimError::Key(
                    "an EC (SEC1) key: DKIM signs with RSA or Ed25519".to_owned(),
                ));
            }
        };
        Ok(Dkim {
            key: SharedKey(Arc::new(key)),
            headers: DEFAULT_SIGNED_HEADERS
                .iter()
                .map(|&h| h.to_owned())
                .collect(),
            domain,
            selector,
            algorithm,
            record,
        })
    }

    /// [`Dkim::from_pem`] with the key read from a file.
    pub fn from_pem_file(
        domain: impl Into<String>,
        selector: impl Into<String>,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Dkim, DkimError> {
        let path = path.as_ref();
        let pem = std::fs::read_to_string(path)
            .map_err(|e| DkimError::Key(format!("cannot read {}: {e}", path.display())))?;
        Dkim::from_pem(domain, selector, &pem)
    }

    /// The header fields to sign, in place of [`DEFAULT_SIGNED_HEADERS`].
    /// `From` is always signed. Fields absent from a message are left out
    /// of its signature: a relay that adds a missing `Date` or
    /// `Message-ID` (Postfix does for local clients) must not break it.
    #[must_use]
    pub fn headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.headers = names.into_iter().map(Into::into).collect();
        if !self.headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
            self.headers.insert(0, "From".to_owned());
        }
        self
    }

    /// The signer for one message: the configured fields that its header
    /// section (CRLF line ends) holds.
    fn signer_for(&self, header_section: &[u8]) -> Result<DkimSigner<SharedKey, Done>, DkimError> {
        let present = field_names(header_section)?;
        let has = |name: &str| {
            present
                .iter()
                .any(|p| p.eq_ignore_ascii_case(name.as_bytes()))
        };
        if !has("From") {
            return Err(DkimError::NoFrom);
        }
        Ok(DkimSigner::from_key(self.key.clone())
            .domain(self.domain.clone())
            .selector(self.selector.clone())
            .headers(self.headers.iter().filter(|h| has(h)).cloned())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed))
    }

    /// `rsa-sha256` or `ed25519-sha256`.
    #[must_use]
    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }

    /// Where the public key is published: `selector._domainkey.domain`.
    #[must_use]
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record to publish at [`Dkim::dns_name`]
    /// (`v=DKIM1; k=rsa; p=...`, the RSA key as SubjectPublicKeyInfo).
    #[must_use]
    pub fn dns_record(&self) -> &str {
        &self.record
    }

    /// The `DKIM-Signature` header field (ending in CRLF) for `message`,
    /// whose line ends must already be CRLF.
    fn signature(&self, crlf_message: &[u8]) -> Result<String, DkimError> {
        let head = &crlf_message[..header_end(crlf_message).unwrap_or(crlf_message.len())];
        let signature = self
            .signer_for(head)?
            .sign(crlf_message)
            .map_err(|e| DkimError::Sign(e.to_string()))?;
        Ok(signature.to_header())
    }

    /// `message` (any line ends) signed: the `DKIM-Signature` field, then
    /// the message with its line ends made CRLF, as the transport sends it.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        let canonical = postern_smtp::body::canonical(message);
        let header = self.signature(&canonical)?;
        let mut out = Vec::with_capacity(header.len() + canonical.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&canonical);
        Ok(out)
    }

    /// The first pass over a streamed message: reads `reader` to its end in
    /// constant memory (the header section is held, up to
    /// [`MAX_HEADER_SECTION`]) and returns the `DKIM-Signature` field. Send
    /// the same bytes again with [`crate::Message::prepend`]:
    ///
    /// ```no_run
    /// # fn run(dkim: postern_transport::Dkim) -> Result<(), Box<dyn std::error::Error>> {
    /// let header = dkim.sign_read(std::fs::File::open("big.eml")?)?;
    /// // then, on the runtime: Message::reader(<big.eml opened again>).prepend(header)
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Blocking; on an async runtime, call it from a blocking task.
    pub fn sign_read(&self, mut reader: impl io::Read) -> Result<Vec<u8>, DkimError> {
        let mut read = |buf: &mut [u8]| loop {
            match reader.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other.map_err(|e| DkimError::Read(e.to_string())),
            }
        };
        let mut lines = Canonicalizer::new();
        let mut buf = vec![0u8; 64 * 1024];
        // The header section first (the signer needs its field names).
        let mut head = Vec::new();
        let mut eof = false;
        while header_end(&head).is_none() && !eof {
            let n = read(&mut buf)?;
            if n == 0 {
                lines.finish(&mut head);
                eof = true;
            } else {
                lines.push(&buf[..n], &mut head);
            }
            if header_end(&head).unwrap_or(head.len()) > MAX_HEADER_SECTION {
                return Err(DkimError::HeaderTooLarge);
            }
        }
        let end = header_end(&head).unwrap_or(head.len());
        let signer = self.signer_for(&head[..end])?;
        let mut stream = signer.sign_streaming();
        stream.write(&head);
        let mut canonical = Vec::with_capacity(buf.len() + 2);
        while !eof {
            canonical.clear();
            let n = read(&mut buf)?;
            if n == 0 {
                lines.finish(&mut canonical);
                eof = true;
            } else {
                lines.push(&buf[..n], &mut canonical);
            }
            stream.write(&canonical);
        }
        let signature = stream
            .finish()
            .map_err(|e| DkimError::Sign(e.to_string()))?;
        Ok(signature.to_header().into_bytes())
    }
}

/// Where the header section of a CRLF message ends (after its blank line);
/// `None` while no blank line has come.
fn header_end(message: &[u8]) -> Option<usize> {
    if message.starts_with(b"\r\n") {
        return Some(2);
    }
    memchr::memmem::find(message, b"\r\n\r\n").map(|at| at + 4)
}

/// The names of the fields in a header section (CRLF line ends, the blank
/// line included or not). A field name is printable ASCII without `:`
/// (RFC 5322 §3.6.8); a continuation line starts with white space.
fn field_names(head: &[u8]) -> Result<Vec<&[u8]>, DkimError> {
    let mut names = Vec::new();
    for (i, line) in head.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if i == 0 {
                return Err(DkimError::MalformedHeader { line: 1 });
            }
            continue;
        }
        let name = line
            .iter()
            .position(|&b| b == b':')
            .map(|colon| line[..colon].trim_ascii_end())
            .filter(|name| !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b)))
            .ok_or(DkimError::MalformedHeader { line: i + 1 })?;
        names.push(name);
    }
    Ok(names)
}

fn rsa_key(der: PrivateKeyDer<'static>) -> Result<(DkimKey, &'static str, String), DkimError> {
    let rsa = RsaKey::<Sha256>::from_key_der(der)
        .map_err(|e| DkimError::Key(format!("not an RSA or Ed25519 key ({e})")))?;
    let spki = rsa_spki(&rsa.public_key());
    let record = format!(
        "v=DKIM1; k=rsa; p={}",
        base64::engine::general_purpose::STANDARD.encode(spki)
    );
    Ok((DkimKey::Rsa(rsa), "rsa-sha256", record))
}

/// Wraps a PKCS #1 `RSAPublicKey` in a SubjectPublicKeyInfo, the form
/// `opendkim-genkey` publishes and every verifier reads.
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    fn der_len(len: usize, out: &mut Vec<u8>) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    // SEQUENCE { OID rsaEncryption, NULL }
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x03];
    der_len(pkcs1.len() + 1, &mut bit_string);
    bit_string.push(0);
    bit_string.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_len(ALGORITHM.len() + bit_string.len(), &mut out);
    out.extend_from_slice(ALGORITHM);
    out.extend_from_slice(&bit_string);
    out
}

#[cfg(test)]
mod tests {
    use super::rsa_spki;

    #[test]
    fn spki_lengths() {
        // A 2048-bit key's PKCS #1 form is 270 bytes: long-form lengths.
        let spki = rsa_spki(&[0x30; 270]);
        assert_eq!(&spki[..4], &[0x30, 0x82, 0x01, 0x22]);
        assert_eq!(spki.len(), 4 + 0x122);
        let small = rsa_spki(&[0x30; 10]);
        assert_eq!(small[1] as usize, small.len() - 2);
    }
}
