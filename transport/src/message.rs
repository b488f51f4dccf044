//! The message to send: bytes in memory, or a stream read as it is sent.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_io::AsyncRead;
use std::borrow::Cow;

use postern_smtp::{Client, CommandError, ContentNeeds, Envelope};

use crate::error::Error;

/// An RFC 5322 message (headers, blank line, body) with any line ends; the
/// transport converts them to CRLF and dot-stuffs.
pub struct Message {
    source: Source,
    /// The stream starts with a `DKIM-Signature` field put there by
    /// [`Message::prepend`] (the first pass of a two-pass signature).
    signed: bool,
}

enum Source {
    Bytes(Arc<[u8]>),
    Reader(Pin<Box<dyn AsyncRead + Send>>),
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Bytes(b) => write!(f, "Message({} bytes)", b.len()),
            Source::Reader(_) => f.write_str("Message(stream)"),
        }
    }
}

impl Message {
    /// A message held in memory. It can be sent again on a fresh connection
    /// when a pooled one turns out to be dead.
    pub fn bytes(bytes: impl Into<Arc<[u8]>>) -> Self {
        Message {
            source: Source::Bytes(bytes.into()),
            signed: false,
        }
    }

    /// A message read from `reader` while it is sent, in chunks of
    /// [`READ_CHUNK`] bytes: memory stays constant whatever the size. A read
    /// error mid-message drops the connection (DATA cannot be cancelled).
    pub fn reader(reader: impl AsyncRead + Send + 'static) -> Self {
        Message {
            source: Source::Reader(Box::pin(reader)),
            signed: false,
        }
    }

    /// The message with `header` (one or more header fields, each ending in
    /// CRLF) put before it. For a streamed message this is the second pass
    /// of DKIM signing: the `DKIM-Signature` field from the first pass,
    /// then the same bytes again. A transport that signs
    /// (`TransportBuilder::dkim`, feature `dkim`) sends a stream that starts with
    /// a `DKIM-Signature` field as it is, and refuses any other stream.
    #[must_use]
    pub fn prepend(self, header: impl Into<Vec<u8>>) -> Message {
        let header = header.into();
        let signed = self.signed
            || header
                .get(..15)
                .is_some_and(|h| h.eq_ignore_ascii_case(b"DKIM-Signature:"));
        let source = match self.source {
            Source::Bytes(b) => {
                let mut joined = header;
                joined.extend_from_slice(&b);
                Source::Bytes(joined.into())
            }
            Source::Reader(inner) => Source::Reader(Box::pin(Prefixed {
                prefix: header,
                at: 0,
                inner,
            })),
        };
        Message { source, signed }
    }

    /// `true` for a stream that starts with a `DKIM-Signature` field put
    /// there by [`Message::prepend`].
    #[cfg(feature = "dkim")]
    pub(crate) fn is_signed_stream(&self) -> bool {
        self.signed && matches!(self.source, Source::Reader(_))
    }
}

/// A reader that yields `prefix`, then `inner`.
struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: Pin<Box<dyn AsyncRead + Send>>,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = buf.len().min(this.prefix.len() - this.at);
            buf[..n].copy_from_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(n));
        }
        this.inner.as_mut().poll_read(cx, buf)
    }
}

impl Message {
    /// The bytes of an in-memory message; `None` for a stream.
    #[must_use]
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.source {
            Source::Bytes(b) => Some(b),
            Source::Reader(_) => None,
        }
    }

    /// A second handle on a message in memory (the bytes are shared, not
    /// copied), for sending it again; `None` for a stream.
    pub(crate) fn share(&self) -> Option<Message> {
        match &self.source {
            Source::Bytes(b) => Some(Message {
                source: Source::Bytes(Arc::clone(b)),
                signed: self.signed,
            }),
            Source::Reader(_) => None,
        }
    }
}

impl Message {
    /// The whole message in memory (a stream is read to its end).
    pub(crate) async fn read_all(self) -> io::Result<Vec<u8>> {
        match self.source {
            Source::Bytes(b) => Ok(b.to_vec()),
            Source::Reader(mut r) => {
                let mut out = Vec::new();
                let mut buf = vec![0u8; READ_CHUNK];
                loop {
                    let n = std::future::poll_fn(|cx| r.as_mut().poll_read(cx, &mut buf)).await;
                    match n {
                        Ok(0) => return Ok(out),
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// `envelope` with what this message's content needs declared
    /// (`BODY=8BITMIME` for 8-bit data, `SMTPUTF8` for UTF-8 headers), as
    /// the SMTP core judges it. A message in memory is scanned here; a
    /// stream is sent as its envelope declares (scan a file with
    /// [`postern_smtp::ContentScanner`] first).
    pub(crate) fn declared<'e>(&self, envelope: &'e Envelope) -> Cow<'e, Envelope> {
        let Source::Bytes(bytes) = &self.source else {
            return Cow::Borrowed(envelope);
        };
        let needs = ContentNeeds::of(bytes);
        if !envelope.undeclared(needs) {
            return Cow::Borrowed(envelope);
        }
        let mut owned = envelope.clone();
        owned.declare(needs);
        Cow::Owned(owned)
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Message::bytes(v)
    }
}

impl From<&[u8]> for Message {
    fn from(v: &[u8]) -> Self {
        Message::bytes(v)
    }
}

impl From<String> for Message {
    fn from(v: String) -> Self {
        Message::bytes(v.into_bytes())
    }
}

impl From<&str> for Message {
    fn from(v: &str) -> Self {
        Message::bytes(v.as_bytes())
    }
}

/// Bytes read from a streamed message at a time: 64 KiB.
pub const READ_CHUNK: usize = 64 * 1024;

/// Feeds a message into the client's body encoder.
pub(crate) struct Feed<'m> {
    message: &'m mut Message,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes taken from the source so far.
    consumed: u64,
    /// Set by `BodyWritable`; cleared after `finish_body`.
    active: bool,
    /// `finish_body` was called and not yet reported by [`Feed::take_ended`].
    ended: bool,
}

/// What one call of [`Feed::poll_feed`] did.
pub(crate) enum Fed {
    /// Bytes were handed to the client (or the body was finished).
    Progress,
    /// The client's transmit buffer is full, or the source has nothing yet.
    Idle,
}

/// Why feeding failed.
pub(crate) enum FeedError {
    Source(io::Error),
    Client(CommandError),
}

impl<'m> Feed<'m> {
    pub(crate) fn new(message: &'m mut Message) -> Self {
        let (end, eof, buf) = match &message.source {
            Source::Bytes(b) => (b.len(), true, Vec::new()),
            Source::Reader(_) => (0, false, vec![0; READ_CHUNK]),
        };
        Feed {
            message,
            buf,
            start: 0,
            end,
            eof,
            consumed: 0,
            active: false,
            ended: false,
        }
    }

    /// `true` when nothing was taken from the message yet.
    pub(crate) fn untouched(&self) -> bool {
        self.consumed == 0
    }

    /// `true` once after the body was ended (the final `.` or `BDAT LAST`
    /// handed to the client): the moment a batch may start the next
    /// transaction.
    pub(crate) fn take_ended(&mut self) -> bool {
        std::mem::take(&mut self.ended)
    }

    /// The client asked for the body ([`postern_smtp::Event::BodyWritable`]):
    /// feed it from now on.
    pub(crate) fn start(&mut self) {
        self.active = true;
    }

    /// After a send failed with `error`: rewinds the feed and returns `true`
    /// when the message may be sent again on a new connection without any
    /// risk of a duplicate. That is when the SMTP core says the session
    /// ended before any byte of the message went out (or the socket failed
    /// before any byte was taken from the message), and the message can be
    /// read again from its start.
    pub(crate) fn rewind_for_resend(&mut self, error: &Error) -> bool {
        let nothing_sent = self.consumed == 0
            && match error {
                Error::Io(_) => true,
                Error::Smtp(e) => e.ended_before_message(),
                _ => false,
            };
        if !nothing_sent {
            return false;
        }
        if let Source::Bytes(b) = &self.message.source {
            self.end = b.len();
        }
        self.start = 0;
        self.active = false;
        true
    }

    /// Moves message bytes into the client until its buffer is full or the
    /// source has nothing ready (then the source has registered `cx`); ends
    /// the body at end of stream.
    pub(crate) fn poll_feed(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut Client,
        now: std::time::Instant,
    ) -> Result<Fed, FeedError> {
        let mut progressed = false;
        while self.active {
            if self.start < self.end {
                let data = match &self.message.source {
                    Source::Bytes(b) => &b[self.start..self.end],
                    Source::Reader(_) => &self.buf[self.start..self.end],
                };
                let n = client.write_body(now, data).map_err(FeedError::Client)?;
                if n == 0 {
                    break;
                }
                self.start += n;
                if matches!(self.message.source, Source::Bytes(_)) {
                    self.consumed += n as u64;
                }
                progressed = true;
                continue;
            }
            if self.eof {
                client.finish_body(now).map_err(FeedError::Client)?;
                self.active = false;
                self.ended = true;
                progressed = true;
                break;
            }
            let Source::Reader(r) = &mut self.message.source else {
                break;
            };
            match r.as_mut().poll_read(cx, &mut self.buf) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(n)) => {
                    self.start = 0;
                    self.end = n;
                    self.consumed += n as u64;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Err(FeedError::Source(e)),
                Poll::Pending => break,
            }
        }
        Ok(if progressed { Fed::Progress } else { Fed::Idle })
    }
}
