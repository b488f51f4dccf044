//! The reference encoder: the plain byte-at-a-time algorithm, kept as the
//! oracle the fast encoder is tested and fuzzed against, and the canonical
//! form of a body.

use super::{BodyConfig, BodyError, BodyStats, LongLines, MAX_LINE_LEN, NulBytes};

/// The canonical form of a body: bare CR and bare LF made CRLF, a last line
/// ended. What un-stuffing the encoder's DATA output gives back (and the
/// BDAT output is), for checking an encoder against its input.
#[must_use]
pub fn canonical(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 2);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' if input.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// [`canonical`] in pieces: line ends made CRLF as the bytes arrive, for a
/// message streamed once to be signed (DKIM) and once to be sent. Holds one
/// byte of state (a CR that may be followed by LF); no buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Canonicalizer {
    pending_cr: bool,
    line_open: bool,
}

impl Canonicalizer {
    /// A canonicalizer at the start of a message.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the canonical form of `input` to `out`. A CR at the end of
    /// `input` is held until the next byte shows whether LF follows.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + 2);
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.line_open = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.line_open = false;
                }
                b => {
                    out.push(b);
                    self.line_open = true;
                }
            }
        }
    }

    /// Ends the message: a held CR becomes CRLF, an open last line is ended.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || self.line_open {
            out.extend_from_slice(b"\r\n");
        }
        *self = Self::default();
    }
}

/// The byte-at-a-time reference encoder: the whole body in, the exact wire bytes
/// out (terminator included with dot-stuffing). Slow and simple on purpose: the
/// oracle that [`BodyEncoder`](super::BodyEncoder) is tested and fuzzed against.
pub fn reference_encode(
    input: &[u8],
    config: BodyConfig,
) -> Result<(Vec<u8>, BodyStats), BodyError> {
    let mut stats = BodyStats {
        input_bytes: input.len() as u64,
        ..BodyStats::default()
    };
    if config.binary {
        stats.output_bytes = stats.input_bytes;
        return Ok((input.to_vec(), stats));
    }
    let mut out = Vec::with_capacity(input.len() + 5);
    let mut line_len: u64 = 0;
    let mut at_line_start = true;
    let end_line = |line_len: &mut u64, stats: &mut BodyStats| -> Result<(), BodyError> {
        if *line_len > MAX_LINE_LEN {
            if config.long_lines == LongLines::Reject {
                return Err(BodyError::LineTooLong {
                    line: stats.lines + 1,
                    len: *line_len,
                });
            }
            stats.long_lines += 1;
        }
        stats.longest_line = stats.longest_line.max(*line_len);
        stats.lines += 1;
        *line_len = 0;
        Ok(())
    };
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if at_line_start && b == b'.' && config.dot_stuffing {
            out.push(b'.');
            stats.dots_stuffed += 1;
        }
        at_line_start = false;
        match b {
            b'\r' | b'\n' => {
                end_line(&mut line_len, &mut stats)?;
                let crlf = b == b'\r' && input.get(i + 1) == Some(&b'\n');
                if !crlf {
                    stats.line_ends_fixed += 1;
                }
                out.extend_from_slice(b"\r\n");
                i += if crlf { 2 } else { 1 };
                at_line_start = true;
                continue;
            }
            0 if config.nul == NulBytes::Reject => return Err(BodyError::Nul { offset: i as u64 }),
            0 => stats.nul = true,
            0x80..=0xff if !config.eight_bit => {
                return Err(BodyError::EightBit { offset: i as u64 });
            }
            0x80..=0xff => stats.eight_bit = true,
            _ => {}
        }
        out.push(b);
        line_len += 1;
        i += 1;
    }
    if !at_line_start {
        end_line(&mut line_len, &mut stats)?;
        out.extend_from_slice(b"\r\n");
    }
    if config.dot_stuffing {
        out.extend_from_slice(b".\r\n");
    }
    stats.output_bytes = out.len() as u64;
    Ok((out, stats))
}
