//! SMTP replies and the incremental reply parser.
//!
//! A reply is one or more lines `NNN-text` ... `NNN text` (RFC 5321 §4.2). The
//! parser accepts CRLF and bare LF as line ends (real servers send bare LF), keeps
//! the text of every line as raw bytes (servers send Latin-1 and UTF-8), and parses
//! the enhanced status code (RFC 3463) of the first line without loss.
//!
//! The parser is incremental and bounded: it never rescans bytes it has seen, it
//! holds at most one partial line ([`ReplyLimits::max_line_len`]) plus the lines of
//! the reply being assembled ([`ReplyLimits::max_reply_bytes`]), and it stops at the
//! end of each reply so that the caller sees exactly which bytes followed it (the
//! STARTTLS injection check depends on that).

use std::fmt;

use postern_common::{SHOWN_CHARS, sanitize};

/// Limits of the reply parser. Every limit is checked as bytes arrive, so a server
/// that never sends a line end still cannot make the parser hold more than
/// `max_line_len + 1` bytes of a partial line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplyLimits {
    /// Longest line, excluding its line end. Default 4096; RFC 5321 §4.5.3.1.5
    /// requires at least 512.
    pub max_line_len: usize,
    /// Most lines in one reply. Default 256 (a large EHLO has about 40).
    pub max_lines: usize,
    /// Most bytes of text in one reply (all lines, without codes and line ends).
    /// Default 64 KiB.
    pub max_reply_bytes: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        Self {
            max_line_len: 4096,
            max_lines: 256,
            max_reply_bytes: 64 * 1024,
        }
    }
}

/// An enhanced mail system status code (RFC 3463): `class.subject.detail`.
///
/// Subject and detail have up to three digits each (`5.7.509` and `5.5.124` are
/// real), so they are kept as `u16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// Subject, 0..=999.
    pub subject: u16,
    /// Detail, 0..=999.
    pub detail: u16,
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl EnhancedCode {
    /// Parses `c.s.d` at the start of `text`, followed by a space or the end of
    /// the text. Returns the code and the number of bytes it took.
    pub fn parse_prefix(text: &[u8]) -> Option<(EnhancedCode, usize)> {
        fn number(text: &[u8], at: usize, max_digits: usize) -> Option<(u16, usize)> {
            let mut value: u16 = 0;
            let mut n = 0;
            while let Some(&b) = text.get(at + n) {
                if !b.is_ascii_digit() {
                    break;
                }
                if n == max_digits {
                    return None;
                }
                value = value * 10 + u16::from(b - b'0');
                n += 1;
            }
            (n > 0).then_some((value, at + n))
        }
        let (class, at) = number(text, 0, 1)?;
        if !matches!(class, 2 | 4 | 5) || text.get(at) != Some(&b'.') {
            return None;
        }
        let (subject, at) = number(text, at + 1, 3)?;
        if text.get(at) != Some(&b'.') {
            return None;
        }
        let (detail, at) = number(text, at + 1, 3)?;
        match text.get(at) {
            None | Some(b' ') => {}
            Some(_) => return None,
        }
        // `class` has one digit, so it fits u8.
        let class = class as u8;
        Some((
            EnhancedCode {
                class,
                subject,
                detail,
            },
            at,
        ))
    }
}

/// One complete SMTP reply.
///
/// The text of all lines is kept in one buffer; [`Reply::lines`] yields each
/// line's text (what follows `NNN-` / `NNN `), without its line end.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    code: u16,
    enhanced: Option<EnhancedCode>,
    /// Line texts joined by `\n` (which can never occur inside a line).
    text: ReplyText,
}

/// Reply text up to this many bytes is stored in the reply itself, with no
/// allocation: most replies in a mail transaction are one line of this size
/// or less (`250 2.1.5 Recipient <user@example.com> OK` has 38 bytes of
/// text). 54 is the most that keeps a [`Reply`] at 72 bytes.
const INLINE_TEXT: usize = 54;

/// The text of a reply: inline when short, else on the heap.
#[derive(Clone)]
enum ReplyText {
    Inline { len: u8, bytes: [u8; INLINE_TEXT] },
    Heap(Vec<u8>),
}

impl ReplyText {
    fn as_slice(&self) -> &[u8] {
        match self {
            ReplyText::Inline { len, bytes } => &bytes[..usize::from(*len)],
            ReplyText::Heap(v) => v,
        }
    }

    /// Takes `v`, moving short text inline (the vector is then dropped).
    fn from_vec(v: Vec<u8>) -> Self {
        if v.len() <= INLINE_TEXT {
            ReplyText::from_parts(v.len(), [&v[..]].into_iter())
        } else {
            ReplyText::Heap(v)
        }
    }

    /// Joins `parts` with `\n`; `total` is the joined length, exactly.
    #[inline(always)]
    fn from_parts<'a>(total: usize, parts: impl Iterator<Item = &'a [u8]>) -> Self {
        if total <= INLINE_TEXT {
            let mut bytes = [0u8; INLINE_TEXT];
            let mut at = 0;
            for (i, part) in parts.enumerate() {
                if i > 0 {
                    bytes[at] = b'\n';
                    at += 1;
                }
                bytes[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            ReplyText::Inline {
                len: u8::try_from(at).unwrap_or(0),
                bytes,
            }
        } else {
            let mut v = Vec::with_capacity(total);
            for (i, part) in parts.enumerate() {
                if i > 0 {
                    v.push(b'\n');
                }
                v.extend_from_slice(part);
            }
            ReplyText::Heap(v)
        }
    }
}

impl PartialEq for ReplyText {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for ReplyText {}

impl std::hash::Hash for ReplyText {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl Reply {
    /// Builds a reply from its code and line texts. Used by tests and by callers
    /// that synthesise replies; the enhanced code is parsed as the parser would.
    ///
    /// Returns `None` when the code is not a valid reply code (200..=599 with a
    /// valid second digit) or a line contains CR or LF.
    pub fn new<L: AsRef<[u8]>>(code: u16, lines: &[L]) -> Option<Reply> {
        if !(200..600).contains(&code) {
            return None;
        }
        let mut text = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let line = line.as_ref();
            if line.iter().any(|&b| b == b'\r' || b == b'\n') {
                return None;
            }
            if i > 0 {
                text.push(b'\n');
            }
            text.extend_from_slice(line);
        }
        let enhanced = enhanced_for(code, &text);
        Some(Reply {
            code,
            enhanced,
            text: ReplyText::from_vec(text),
        })
    }

    /// The three-digit reply code.
    #[must_use]
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The class of the reply: the code's first digit (2, 3, 4 or 5).
    #[must_use]
    pub fn class(&self) -> u8 {
        (self.code / 100) as u8
    }

    /// `true` for 2xx.
    #[must_use]
    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// `true` for 3xx (more input expected: 334, 354).
    #[must_use]
    pub fn is_intermediate(&self) -> bool {
        self.class() == 3
    }

    /// `true` for 4xx: the same command may succeed later.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.class() == 4
    }

    /// `true` for 5xx.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        self.class() == 5
    }

    /// The enhanced status code of the first line, when it has one whose class
    /// equals the reply's class.
    #[must_use]
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    /// The text of each line, without code, separator and line end.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.text.as_slice().split(|&b| b == b'\n')
    }

    /// The number of lines.
    #[must_use]
    pub fn line_count(&self) -> usize {
        memchr::memchr_iter(b'\n', self.text.as_slice()).count() + 1
    }

    /// The text of the first line.
    #[must_use]
    pub fn first_line(&self) -> &[u8] {
        let text = self.text.as_slice();
        match memchr::memchr(b'\n', text) {
            Some(end) => &text[..end],
            None => text,
        }
    }

    /// [`Reply::message`] made safe for a terminal or a log (control, bidi
    /// and invisible format characters escaped, at most
    /// [`postern_common::SHOWN_CHARS`] characters): what to print.
    #[must_use]
    pub fn printable(&self) -> String {
        sanitize(&self.message(), SHOWN_CHARS)
    }

    /// All line texts joined with a space, as lossy UTF-8, with the enhanced code
    /// prefix of each line removed: the human message of the reply. It is the
    /// server's text as sent; print [`Reply::printable`] instead.
    #[must_use]
    pub fn message(&self) -> String {
        let mut out = String::new();
        for line in self.lines() {
            let line = match self.enhanced {
                Some(_) => match EnhancedCode::parse_prefix(line) {
                    Some((_, n)) => trim_start_spaces(&line[n..]),
                    None => line,
                },
                None => line,
            };
            if !out.is_empty() && !line.is_empty() {
                out.push(' ');
            }
            out.push_str(&String::from_utf8_lossy(line));
        }
        out
    }

    /// The raw text of all lines joined by `\n`.
    #[must_use]
    pub fn raw_text(&self) -> &[u8] {
        self.text.as_slice()
    }

    /// The reply with its text made safe to pass on to another SMTP client
    /// (a relay answering its own client with what upstream said): bytes
    /// outside printable ASCII removed, and each line cut to 400 bytes. Code
    /// and enhanced code are kept.
    #[must_use]
    pub fn relayable(&self) -> Reply {
        let lines: Vec<Vec<u8>> = self
            .lines()
            .map(|line| {
                line.iter()
                    .copied()
                    .filter(|b| (0x20..0x7f).contains(b))
                    .take(400)
                    .collect()
            })
            .collect();
        Reply::new(self.code, &lines).unwrap_or_else(|| self.clone())
    }

    /// Encodes the reply as CRLF-terminated wire lines (`250-a\r\n250 b\r\n`).
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        let mut lines = self.lines().peekable();
        while let Some(line) = lines.next() {
            out.extend_from_slice(&three_digits(self.code));
            out.push(if lines.peek().is_some() { b'-' } else { b' ' });
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn trim_start_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    s
}

fn three_digits(code: u16) -> [u8; 3] {
    [
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]
}

fn enhanced_for(code: u16, text: &[u8]) -> Option<EnhancedCode> {
    let first = match memchr::memchr(b'\n', text) {
        Some(end) => &text[..end],
        None => text,
    };
    enhanced_for_line(code, first)
}

/// [`enhanced_for`] for text known to be one line.
fn enhanced_for_line(code: u16, first: &[u8]) -> Option<EnhancedCode> {
    EnhancedCode::parse_prefix(first)
        .map(|(e, _)| e)
        .filter(|e| u16::from(e.class) == code / 100)
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("code", &self.code)
            .field("enhanced", &self.enhanced.map(|e| e.to_string()))
            // Peer text, so escaped for the log it may end up in.
            .field(
                "lines",
                &self
                    .lines()
                    .map(|l| sanitize(&String::from_utf8_lossy(l), SHOWN_CHARS))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl fmt::Display for Reply {
    /// `535 5.7.8 text` with all lines joined by spaces (lossy UTF-8), made
    /// safe for a terminal: control, bidi and invisible format characters
    /// escaped, at most [`postern_common::SHOWN_CHARS`] characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        for line in self.lines() {
            text.push(' ');
            text.push_str(&String::from_utf8_lossy(line));
        }
        write!(f, "{}{}", self.code, sanitize(&text, SHOWN_CHARS))
    }
}

/// Why bytes from the server are not a valid reply. Every variant is fatal for
/// the connection: the reply stream cannot be resynchronised.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line does not start with three digits followed by SP, `-` or the line
    /// end (`2500 OK`, `25O OK`, `hello`). Holds up to 64 bytes of the line.
    Malformed {
        /// The start of the offending line, lossy UTF-8.
        line: String,
    },
    /// A continuation line's code differs from the first line's.
    CodeMismatch {
        /// The code of the first line.
        first: u16,
        /// The code of the offending line.
        line: u16,
    },
    /// A line is longer than [`ReplyLimits::max_line_len`].
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// A reply has more lines than [`ReplyLimits::max_lines`].
    TooManyLines {
        /// The limit in force.
        limit: usize,
    },
    /// A reply has more text than [`ReplyLimits::max_reply_bytes`].
    ReplyTooLarge {
        /// The limit in force.
        limit: usize,
    },
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Malformed { line } => {
                write!(f, "malformed reply line \"{}\"", sanitize(line, 200))
            }
            ReplyError::CodeMismatch { first, line } => write!(
                f,
                "reply line has code {line} but the reply started with {first}"
            ),
            ReplyError::LineTooLong { limit } => {
                write!(f, "reply line longer than the limit of {limit} bytes")
            }
            ReplyError::TooManyLines { limit } => {
                write!(f, "reply has more than the limit of {limit} lines")
            }
            ReplyError::ReplyTooLarge { limit } => {
                write!(f, "reply text larger than the limit of {limit} bytes")
            }
        }
    }
}

impl std::error::Error for ReplyError {}

/// Incremental reply parser.
///
/// Feed it bytes with [`ReplyParser::parse`]; it consumes bytes up to the end of
/// the first complete reply and returns that reply, or consumes everything and
/// returns `None` when the reply is not complete yet. Call it again with the
/// unconsumed rest to get the next reply.
///
/// Memory: at most `max_line_len + 1` bytes of partial line plus
/// `max_reply_bytes` of reply text. After an error the parser must not be used
/// again (the client machine treats every error as fatal).
#[derive(Clone, Debug)]
pub struct ReplyParser {
    limits: ReplyLimits,
    /// Bytes of an incomplete line carried over from earlier input.
    partial: Vec<u8>,
    /// Code of the reply being assembled, once its first line is in.
    code: Option<u16>,
    /// Text of the lines so far, joined by `\n`.
    text: Vec<u8>,
    lines: usize,
}

impl ReplyParser {
    /// A parser with the given limits.
    #[must_use]
    pub fn new(limits: ReplyLimits) -> Self {
        Self {
            limits,
            partial: Vec::new(),
            code: None,
            text: Vec::new(),
            lines: 0,
        }
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> ReplyLimits {
        self.limits
    }

    /// `true` while part of a reply has been received but not all of it.
    #[must_use]
    pub fn is_mid_reply(&self) -> bool {
        !self.partial.is_empty() || self.code.is_some()
    }

    /// Consumes bytes of `input` up to the end of the first reply that completes.
    ///
    /// Returns how many bytes were consumed and the reply if one completed. When
    /// no reply completes, all of `input` is consumed.
    pub fn parse(&mut self, input: &[u8]) -> Result<(usize, Option<Reply>), ReplyError> {
        if !self.is_mid_reply()
            && let Some((used, reply)) = self.single_line(input).or_else(|| self.whole_reply(input))
        {
            return Ok((used, Some(reply)));
        }
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let Some(lf) = memchr::memchr(b'\n', rest) else {
                self.partial.extend_from_slice(rest);
                // A trailing CR may still turn out to be part of the CRLF.
                let carried = self.partial.len() - usize::from(self.partial.last() == Some(&b'\r'));
                if carried > self.limits.max_line_len {
                    return Err(ReplyError::LineTooLong {
                        limit: self.limits.max_line_len,
                    });
                }
                return Ok((input.len(), None));
            };
            let end = pos + lf + 1;
            let done = if self.partial.is_empty() {
                self.line(&input[pos..pos + lf])?
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..lf]);
                let done = self.line(&line);
                line.clear();
                self.partial = line;
                done?
            };
            pos = end;
            if let Some(reply) = done {
                return Ok((pos, Some(reply)));
            }
        }
        Ok((pos, None))
    }

    /// The fastest path, for the commonest reply: one valid line (`250 2.1.5
    /// Ok`), found with one search for its LF; its text is copied once. `None`
    /// (nothing consumed) for anything else.
    #[inline]
    fn single_line(&self, input: &[u8]) -> Option<(usize, Reply)> {
        // A continuation line (`250-`) leaves at once, before any search.
        if input.get(3) == Some(&b'-') {
            return None;
        }
        let lf = memchr::memchr(b'\n', input)?;
        let line = &input[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (code, text) = match line {
            [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', rest @ ..] => {
                let text = match rest {
                    [] => rest,
                    [b' ', text @ ..] => text,
                    _ => return None,
                };
                let code =
                    u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
                (code, text)
            }
            _ => return None,
        };
        if line.len() > self.limits.max_line_len || text.len() > self.limits.max_reply_bytes {
            return None;
        }
        Some((
            lf + 1,
            Reply {
                code,
                enhanced: enhanced_for_line(code, text),
                text: ReplyText::from_parts(text.len(), std::iter::once(text)),
            },
        ))
    }

    /// The fast path for a reply that lies whole in `input` and is valid: one
    /// pass checks the lines and measures the text, a second copies the text
    /// once into storage of the exact size. `None` (nothing consumed) for
    /// anything else, which the line-by-line path then handles, errors
    /// included.
    fn whole_reply(&self, input: &[u8]) -> Option<(usize, Reply)> {
        let limits = self.limits;
        let mut at = 0;
        let mut total = 0usize;
        let mut lines = 0usize;
        let mut code = None;
        let mut ends = LineEnds::new(input);
        let end = loop {
            let lf = ends.next()?;
            let line = &input[at..lf];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (this, last) = match line {
                [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', rest @ ..] => {
                    let last = match rest.first() {
                        None | Some(b' ') => true,
                        Some(b'-') => false,
                        Some(_) => return None,
                    };
                    let code =
                        u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
                    (code, last)
                }
                _ => return None,
            };
            if line.len() > limits.max_line_len || *code.get_or_insert(this) != this {
                return None;
            }
            lines += 1;
            total += line.len().saturating_sub(4) + usize::from(lines > 1);
            if lines > limits.max_lines || total > limits.max_reply_bytes {
                return None;
            }
            at = lf + 1;
            if last {
                break at;
            }
        };
        let code = code?;
        let mut start = 0;
        let parts = LineEnds::new(&input[..end]).map(|lf| {
            let line = &input[start..lf];
            start = lf + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            line.get(4..).unwrap_or_default()
        });
        // One-line replies were taken by `single_line`; this is the rest.
        let text = ReplyText::from_parts(total, parts);
        let enhanced = enhanced_for(code, text.as_slice());
        Some((
            end,
            Reply {
                code,
                enhanced,
                text,
            },
        ))
    }

    /// Handles one line without its LF. Returns the reply when this was its last line.
    fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let line = match line {
            [head @ .., b'\r'] => head,
            _ => line,
        };
        if line.len() > self.limits.max_line_len {
            return Err(ReplyError::LineTooLong {
                limit: self.limits.max_line_len,
            });
        }
        let malformed = || ReplyError::Malformed {
            line: String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned(),
        };
        let code = match line {
            [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(malformed()),
        };
        let (last, text) = match line.get(3) {
            None => (true, &line[3..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(malformed()),
        };
        match self.code {
            None => self.code = Some(code),
            Some(first) if first != code => {
                return Err(ReplyError::CodeMismatch { first, line: code });
            }
            Some(_) => self.text.push(b'\n'),
        }
        self.lines += 1;
        if self.lines > self.limits.max_lines {
            return Err(ReplyError::TooManyLines {
                limit: self.limits.max_lines,
            });
        }
        if self.text.len() + text.len() > self.limits.max_reply_bytes {
            return Err(ReplyError::ReplyTooLarge {
                limit: self.limits.max_reply_bytes,
            });
        }
        self.text.extend_from_slice(text);
        if !last {
            return Ok(None);
        }
        self.code = None;
        self.lines = 0;
        let enhanced = enhanced_for(code, &self.text);
        let text = ReplyText::from_vec(std::mem::take(&mut self.text));
        Ok(Some(Reply {
            code,
            enhanced,
            text,
        }))
    }
}

/// The positions of the LFs in a buffer, found 64 bytes at a time with
/// vector compares: replies are many short lines, where a search call per
/// line costs more than the line.
struct LineEnds<'a> {
    input: &'a [u8],
    /// Start of the block `mask` describes.
    base: usize,
    /// LFs of the current block not yet returned, bit k for `base + k`.
    mask: u64,
    /// Start of the next block to scan.
    next: usize,
}

impl<'a> LineEnds<'a> {
    fn new(input: &'a [u8]) -> Self {
        LineEnds {
            input,
            base: 0,
            mask: 0,
            next: 0,
        }
    }
}

/// Bit k set when `block[k]` is LF.
#[inline]
fn lf_mask(block: &[u8; 64]) -> u64 {
    let lf = wide::u8x16::splat(b'\n');
    let (parts, _) = block.as_chunks::<16>();
    let m = |k: usize| u64::from(wide::u8x16::new(parts[k]).simd_eq(lf).to_bitmask());
    m(0) | m(1) << 16 | m(2) << 32 | m(3) << 48
}

impl Iterator for LineEnds<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            let rest = self.input.get(self.next..).filter(|r| !r.is_empty())?;
            self.base = self.next;
            self.mask = match rest.first_chunk::<64>() {
                Some(block) => lf_mask(block),
                // The tail: the last 64 bytes, shifted, when there are
                // that many; else (short input) a plain search.
                None => match self.input.last_chunk::<64>() {
                    Some(block) => lf_mask(block) >> (64 - rest.len()),
                    None => memchr::memchr_iter(b'\n', rest).fold(0, |m, k| m | 1 << k),
                },
            };
            self.next += 64;
        }
        let k = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.base + k)
    }
}

impl Default for ReplyParser {
    fn default() -> Self {
        Self::new(ReplyLimits::default())
    }
}

/// Parses exactly one reply from `input`, returning it and the number of bytes it
/// took. Returns `Ok(None)` when `input` ends before the reply does.
pub fn parse_one(input: &[u8], limits: ReplyLimits) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut parser = ReplyParser::new(limits);
    match parser.parse(input)? {
        (n, Some(reply)) => Ok(Some((reply, n))),
        (_, None) => Ok(None),
    }
}

postern_common::setters!(ReplyLimits {
    max_line_len: usize,
    max_lines: usize,
    max_reply_bytes: usize
});

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut p = ReplyParser::default();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let (n, r) = p.parse(&input[pos..])?;
            pos += n;
            out.extend(r);
        }
        Ok(out)
    }

    #[test]
    fn multiline_and_enhanced() {
        let r = parse_all(b"250-a\r\n250-b\n250 2.1.0 ok\r\n").unwrap();
        assert_eq!(r.len(), 1);
        let lines: Vec<&[u8]> = r[0].lines().collect();
        assert_eq!(lines, vec![&b"a"[..], b"b", b"2.1.0 ok"]);
        // Enhanced code is read from the first line only.
        assert_eq!(r[0].enhanced(), None);
        let r = parse_all(b"550 5.7.509 Access denied\r\n").unwrap();
        assert_eq!(
            r[0].enhanced(),
            Some(EnhancedCode {
                class: 5,
                subject: 7,
                detail: 509
            })
        );
        assert_eq!(r[0].message(), "Access denied");
    }

    #[test]
    fn enhanced_class_must_match() {
        let r = parse_all(b"250 5.1.1 odd\r\n").unwrap();
        assert_eq!(r[0].enhanced(), None);
        let r = parse_all(b"550 5.1.1.1 odd\r\n").unwrap();
        assert_eq!(r[0].enhanced(), None);
        let r = parse_all(b"550 5.1234.1 odd\r\n").unwrap();
        assert_eq!(r[0].enhanced(), None);
        let r = parse_all(b"550 5.1.1\r\n").unwrap();
        assert_eq!(
            r[0].enhanced().map(|e| e.to_string()).as_deref(),
            Some("5.1.1")
        );
    }

    #[test]
    fn rejects_bad_codes() {
        assert!(matches!(
            parse_all(b"2500 OK\r\n"),
            Err(ReplyError::Malformed { .. })
        ));
        assert!(matches!(
            parse_all(b"25O OK\r\n"),
            Err(ReplyError::Malformed { .. })
        ));
        assert!(matches!(
            parse_all(b"650 x\r\n"),
            Err(ReplyError::Malformed { .. })
        ));
        assert!(matches!(
            parse_all(b"25\r\n"),
            Err(ReplyError::Malformed { .. })
        ));
        assert!(matches!(
            parse_all(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeMismatch {
                first: 250,
                line: 251
            })
        ));
    }

    #[test]
    fn limits_are_enforced_before_line_end() {
        let limits = ReplyLimits {
            max_line_len: 10,
            max_lines: 2,
            max_reply_bytes: 12,
        };
        let mut p = ReplyParser::new(limits);
        assert!(p.parse(b"250 12345").unwrap().1.is_none());
        // Exactly at the limit, with the CR held back: still fine.
        assert!(p.parse(b"6\r").unwrap().1.is_none());
        assert!(matches!(
            p.parse(b"x"),
            Err(ReplyError::LineTooLong { limit: 10 })
        ));

        let mut p = ReplyParser::new(limits);
        assert!(matches!(
            p.parse(b"250-a\r\n250-b\r\n250 c\r\n"),
            Err(ReplyError::TooManyLines { limit: 2 })
        ));
        let mut p = ReplyParser::new(limits.max_line_len(100));
        assert!(matches!(
            p.parse(b"250-abcdef\r\n250 abcdefg\r\n"),
            Err(ReplyError::ReplyTooLarge { limit: 12 })
        ));
    }

    #[test]
    fn stops_after_each_reply() {
        let input = b"250 a\r\n251 b\r\n";
        let mut p = ReplyParser::default();
        let (n, r) = p.parse(input).unwrap();
        assert_eq!(n, 7);
        assert_eq!(r.unwrap().code(), 250);
        assert!(!p.is_mid_reply());
    }

    #[test]
    fn wire_round_trip() {
        let r = Reply::new(250, &["a", "SIZE 10", ""]).unwrap();
        let mut wire = Vec::new();
        r.write_wire(&mut wire);
        assert_eq!(wire, b"250-a\r\n250-SIZE 10\r\n250 \r\n");
        assert_eq!(parse_all(&wire).unwrap(), vec![r]);
        assert!(Reply::new(250, &["a\r\nb"]).is_none());
        assert!(Reply::new(199, &["a"]).is_none());
    }

    /// Byte by byte, every reply goes through the line path; whole, through
    /// the fast path. Both must give the same replies, at text lengths around
    /// the inline limit, with many lines, and with a reply ending inside the
    /// last partial 64-byte block of a longer input.
    #[test]
    fn fast_path_matches_line_path() {
        // The inline text fits the size the storage was chosen for.
        assert!(std::mem::size_of::<Reply>() <= 72);
        let mut input = Vec::new();
        for len in [
            0,
            1,
            INLINE_TEXT - 1,
            INLINE_TEXT,
            INLINE_TEXT + 1,
            63,
            64,
            65,
            200,
        ] {
            input.extend_from_slice(b"250 ");
            input.extend(std::iter::repeat_n(b'x', len));
            input.extend_from_slice(b"\r\n");
            input.extend_from_slice(b"451-4.3.0 a\r\n451-\r\n451 4.3.0 ");
            input.extend(std::iter::repeat_n(b'y', len));
            input.extend_from_slice(b"\n");
        }
        for n in 0..70 {
            input.extend_from_slice(format!("250-EXT{n}\r\n").as_bytes());
        }
        input.extend_from_slice(b"250 END\r\n354 go\r\n221\r\n");
        let whole = parse_all(&input).unwrap();
        assert_eq!(whole.len(), 9 * 2 + 3);
        let mut p = ReplyParser::default();
        let mut one_by_one = Vec::new();
        for b in &input {
            let (n, r) = p.parse(std::slice::from_ref(b)).unwrap();
            assert_eq!(n, 1);
            one_by_one.extend(r);
        }
        assert_eq!(whole, one_by_one);
        assert_eq!(whole[1].lines().count(), 3);
        assert_eq!(whole[20].raw_text(), b"");
        assert_eq!(
            whole[1].enhanced().map(|e| e.to_string()).as_deref(),
            Some("4.3.0")
        );
        assert_eq!(whole[18].line_count(), 71);
        // Each short input alone, too (no 64-byte block to shift from).
        for r in &whole {
            let mut wire = Vec::new();
            r.write_wire(&mut wire);
            assert_eq!(&parse_all(&wire).unwrap(), std::slice::from_ref(r));
        }
    }
}
