//! An incremental, bounded HTTP/1.1 response parser for token endpoint
//! replies: head by `httparse`, body by `Content-Length`, `chunked`, or read
//! to the end of the stream. Interim `1xx` responses are skipped.
//!
//! Feed it every byte read with [`ResponseParser::push`]; it returns the
//! response once complete. At end of stream call [`ResponseParser::finish`]
//! (which completes a close-delimited body, and is an error otherwise).

use std::fmt;

/// Limits of a [`ResponseParser`]. Every buffer it holds is within them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Bytes of the status line and headers; default 16 KiB.
    pub max_head: usize,
    /// Number of header fields; default 64.
    pub max_headers: usize,
    /// Bytes of the body after de-chunking; default 256 KiB (Entra responses
    /// with ID tokens reach several KiB).
    pub max_body: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 16 * 1024,
            max_headers: 64,
            max_body: 256 * 1024,
        }
    }
}

/// A complete response.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked). It may hold tokens: never log it whole.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with `status`, `headers` and `body` (no reason phrase):
    /// for a transport of the caller's own, or for tests.
    #[must_use]
    pub fn new(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        HttpResponse {
            status,
            reason: String::new(),
            headers,
            body,
        }
    }
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("reason", &self.reason)
            .field("headers", &self.headers.len())
            .field(
                "body",
                &format_args!("[{} bytes, redacted]", self.body.len()),
            )
            .finish()
    }
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a response could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// The status line or headers are malformed.
    Head(String),
    /// The head is over [`HttpLimits::max_head`] or has too many fields.
    HeadTooLarge,
    /// The body is over [`HttpLimits::max_body`] (or says it will be).
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A bad `Content-Length` or chunk size line.
    Framing(&'static str),
    /// The stream ended before the response was complete.
    Truncated,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Head(e) => write!(f, "malformed HTTP response head: {e}"),
            HttpError::HeadTooLarge => f.write_str("HTTP response head too large"),
            HttpError::BodyTooLarge { limit } => write!(f, "HTTP response body over {limit} bytes"),
            HttpError::Framing(e) => write!(f, "bad HTTP body framing: {e}"),
            HttpError::Truncated => {
                f.write_str("the connection closed before the HTTP response was complete")
            }
        }
    }
}

impl std::error::Error for HttpError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading a size line.
    Size,
    /// Reading `n` more data bytes.
    Data(usize),
    /// Reading the CRLF after data.
    DataEnd,
    /// Reading trailer lines until an empty one.
    Trailer,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Body {
    Length(usize),
    Chunked(Chunk),
    Close,
}

#[derive(Debug)]
enum State {
    Head,
    Body(Body),
    Done,
    Failed(HttpError),
}

/// The incremental parser. One response per parser.
#[derive(Debug)]
pub struct ResponseParser {
    limits: HttpLimits,
    state: State,
    /// Unparsed bytes: the head so far, or a partial chunk line.
    buf: Vec<u8>,
    /// Where to resume looking for the end of the head.
    scanned: usize,
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    interim: u8,
}

/// Interim (`1xx`) responses skipped before the final one.
const MAX_INTERIM: u8 = 4;

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new(HttpLimits::default())
    }
}

impl ResponseParser {
    /// A parser with these limits.
    #[must_use]
    pub fn new(limits: HttpLimits) -> Self {
        ResponseParser {
            limits,
            state: State::Head,
            buf: Vec::new(),
            scanned: 0,
            status: 0,
            reason: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            interim: 0,
        }
    }

    /// Feeds bytes read from the connection. Returns the response when it is
    /// complete (bytes after it are ignored: requests use `Connection: close`).
    /// An error is sticky.
    pub fn push(&mut self, data: &[u8]) -> Result<Option<HttpResponse>, HttpError> {
        match &mut self.state {
            State::Failed(e) => Err(e.clone()),
            State::Done => Ok(None),
            State::Head => {
                let room = (self.limits.max_head + 4).saturating_sub(self.buf.len());
                let take = data.len().min(room);
                self.buf.extend_from_slice(&data[..take]);
                let data = &data[take..];
                match self.parse_head() {
                    Err(e) => Err(self.fail(e)),
                    Ok(None) if self.buf.len() >= self.limits.max_head => {
                        Err(self.fail(HttpError::HeadTooLarge))
                    }
                    Ok(None) => Ok(None),
                    Ok(Some(rest)) => {
                        // The bytes after the head belong to the body (or
                        // to the next head, after an interim response).
                        let mut joined = self.buf.split_off(self.buf.len() - rest);
                        self.buf.clear();
                        self.scanned = 0;
                        joined.extend_from_slice(data);
                        if let State::Done = self.state {
                            return Ok(Some(self.take()));
                        }
                        if joined.is_empty() {
                            return Ok(None);
                        }
                        // At most one level deep per interim response,
                        // and those are capped.
                        self.push(&joined)
                    }
                }
            }
            State::Body(_) => self.push_body(data),
        }
    }

    /// The stream ended. Completes a close-delimited body; anything else
    /// unfinished is [`HttpError::Truncated`].
    pub fn finish(&mut self) -> Result<HttpResponse, HttpError> {
        match &self.state {
            State::Body(Body::Close) => {
                self.state = State::Done;
                Ok(self.take())
            }
            State::Failed(e) => Err(e.clone()),
            _ => Err(self.fail(HttpError::Truncated)),
        }
    }

    fn fail(&mut self, e: HttpError) -> HttpError {
        self.state = State::Failed(e.clone());
        self.buf = Vec::new();
        self.body = Vec::new();
        e
    }

    fn take(&mut self) -> HttpResponse {
        HttpResponse {
            status: self.status,
            reason: std::mem::take(&mut self.reason),
            headers: std::mem::take(&mut self.headers),
            body: std::mem::take(&mut self.body),
        }
    }

    /// Looks for the end of the head in `buf`; parses it when found. Returns
    /// how many bytes of `buf` follow the head.
    fn parse_head(&mut self) -> Result<Option<usize>, HttpError> {
        let from = self.scanned.saturating_sub(3);
        let Some(pos) = self.buf[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
            self.scanned = self.buf.len();
            return Ok(None);
        };
        let end = from + pos + 4;
        if end > self.limits.max_head {
            return Err(HttpError::HeadTooLarge);
        }
        let mut fields = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut resp = httparse::Response::new(&mut fields);
        match resp.parse(&self.buf[..end]) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(HttpError::Head("incomplete head".into())),
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
            Err(e) => return Err(HttpError::Head(e.to_string())),
        }
        let status = resp.code.unwrap_or(0);
        self.status = status;
        self.reason = resp.reason.unwrap_or("").to_owned();
        self.headers = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let rest = self.buf.len() - end;
        if (100..200).contains(&status) {
            self.interim += 1;
            if self.interim > MAX_INTERIM {
                return Err(HttpError::Framing("too many interim (1xx) responses"));
            }
            self.state = State::Head;
            self.headers.clear();
            return Ok(Some(rest));
        }
        let chunked = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
            .any(|(_, v)| {
                v.to_ascii_lowercase()
                    .split(',')
                    .any(|t| t.trim() == "chunked")
            });
        let lengths: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim())
            .collect();
        let body = if status == 204 || status == 304 {
            None
        } else if chunked {
            Some(Body::Chunked(Chunk::Size))
        } else if let Some(first) = lengths.first() {
            if lengths.iter().any(|l| l != first) {
                return Err(HttpError::Framing("conflicting Content-Length headers"));
            }
            let n: usize = first
                .parse()
                .ok()
                .filter(|_| first.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(HttpError::Framing("Content-Length is not a number"))?;
            if n > self.limits.max_body {
                return Err(HttpError::BodyTooLarge {
                    limit: self.limits.max_body,
                });
            }
            (n > 0).then_some(Body::Length(n))
        } else {
            Some(Body::Close)
        };
        self.state = match body {
            Some(b) => State::Body(b),
            None => State::Done,
        };
        Ok(Some(rest))
    }

    fn push_body(&mut self, mut data: &[u8]) -> Result<Option<HttpResponse>, HttpError> {
        let max = self.limits.max_body;
        while !data.is_empty() {
            let State::Body(body) = &mut self.state else {
                break;
            };
            match body {
                Body::Close => {
                    if self.body.len() + data.len() > max {
                        return Err(self.fail(HttpError::BodyTooLarge { limit: max }));
                    }
                    self.body.extend_from_slice(data);
                    data = &[];
                }
                Body::Length(n) => {
                    let take = data.len().min(*n);
                    self.body.extend_from_slice(&data[..take]);
                    *n -= take;
                    data = &data[take..];
                    if *n == 0 {
                        self.state = State::Done;
                    }
                }
                Body::Chunked(Chunk::Data(n)) => {
                    let take = data.len().min(*n);
                    self.body.extend_from_slice(&data[..take]);
                    *n -= take;
                    data = &data[take..];
                    if *n == 0 {
                        *body = Body::Chunked(Chunk::DataEnd);
                    }
                }
                Body::Chunked(step) => {
                    // A line: size, the CRLF after data, or a trailer.
                    let step = *step;
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        self.buf.extend_from_slice(data);
                        if self.buf.len() > 1024 {
                            return Err(self.fail(HttpError::Framing("chunk line too long")));
                        }
                        break;
                    };
                    self.buf.extend_from_slice(&data[..=nl]);
                    data = &data[nl + 1..];
                    if self.buf.len() > 1024 {
                        return Err(self.fail(HttpError::Framing("chunk line too long")));
                    }
                    let line = std::mem::take(&mut self.buf);
                    let line = line.strip_suffix(b"\n").unwrap_or(&line);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let next = match step {
                        Chunk::DataEnd if line.is_empty() => Chunk::Size,
                        Chunk::DataEnd => {
                            return Err(self.fail(HttpError::Framing("no CRLF after chunk data")));
                        }
                        Chunk::Trailer if line.is_empty() => {
                            self.state = State::Done;
                            break;
                        }
                        Chunk::Trailer => Chunk::Trailer,
                        Chunk::Size | Chunk::Data(_) => {
                            let size =
                                parse_chunk_size(line).ok_or(HttpError::Framing("bad chunk size"));
                            let size = match size {
                                Ok(s) => s,
                                Err(e) => return Err(self.fail(e)),
                            };
                            if size > max.saturating_sub(self.body.len()) {
                                return Err(self.fail(HttpError::BodyTooLarge { limit: max }));
                            }
                            if size == 0 {
                                Chunk::Trailer
                            } else {
                                Chunk::Data(size)
                            }
                        }
                    };
                    self.state = State::Body(Body::Chunked(next));
                }
            }
        }
        if let State::Done = self.state {
            return Ok(Some(self.take()));
        }
        Ok(None)
    }
}

/// A chunk size line: hex digits, optionally `;extensions`. At most 16 hex
/// digits (no overflow).
fn parse_chunk_size(line: &[u8]) -> Option<usize> {
    let hex = line.split(|b| *b == b';').next()?.trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    let mut n: usize = 0;
    for &b in hex {
        let d = char::from(b).to_digit(16)?;
        n = n.checked_mul(16)?.checked_add(d as usize)?;
    }
    Some(n)
}

postern_common::setters!(HttpLimits {
    max_head: usize,
    max_headers: usize,
    max_body: usize
});

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(raw: &[u8]) -> Result<HttpResponse, HttpError> {
        let mut p = ResponseParser::default();
        match p.push(raw)? {
            Some(r) => Ok(r),
            None => p.finish(),
        }
    }

    fn parse_bytewise(raw: &[u8]) -> Result<HttpResponse, HttpError> {
        let mut p = ResponseParser::default();
        for b in raw {
            if let Some(r) = p.push(std::slice::from_ref(b))? {
                return Ok(r);
            }
        }
        p.finish()
    }

    #[test]
    fn framings() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nT: 1\r\n\r\n", b"hello"),
            (b"HTTP/1.1 200 OK\r\n\r\nhello", b"hello"),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
            (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", b""),
        ];
        for (raw, body) in cases {
            let a = parse_all(raw).unwrap();
            assert_eq!(a.body, body);
            assert_eq!(parse_bytewise(raw).unwrap(), a);
        }
    }

    #[test]
    fn bounds() {
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
        assert_eq!(
            parse_all(big),
            Err(HttpError::BodyTooLarge { limit: 256 * 1024 })
        );
        let mut p = ResponseParser::default();
        p.push(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let chunk = b"1000\r\n"
            .iter()
            .chain([b'x'; 4096].iter())
            .chain(b"\r\n")
            .copied()
            .collect::<Vec<u8>>();
        let mut err = None;
        for _ in 0..1000 {
            if let Err(e) = p.push(&chunk) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(HttpError::BodyTooLarge { limit: 256 * 1024 }));
        let overflow =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n";
        assert!(matches!(parse_all(overflow), Err(HttpError::Framing(_))));
        let mut flood = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..100 {
            flood.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        flood.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&flood), Err(HttpError::HeadTooLarge));
        let mut p = ResponseParser::default();
        let endless = [b'a'; 1024];
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = p.push(&endless) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(HttpError::HeadTooLarge));
        assert_eq!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"),
            Err(HttpError::Truncated)
        );
        assert!(matches!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(HttpError::Framing(_))
        ));
        assert!(matches!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"),
            Err(HttpError::Framing(_))
        ));
    }
}
