//! The streaming body encoder: what goes on the wire after `354` (DATA) or in
//! BDAT chunks.
//!
//! - Every bare LF and bare CR becomes CRLF: the output never contains a CR or
//!   LF that is not part of a CRLF pair, which closes the SMTP smuggling class
//!   (CVE-2023-51764/5/6).
//! - With dot-stuffing (DATA), a `.` at the start of any line is doubled,
//!   including the very first byte of the body.
//! - [`BodyEncoder::finish`] writes the terminator: `.\r\n` when the body ends
//!   with CRLF (or is empty), `\r\n.\r\n` otherwise. Without dot-stuffing (BDAT)
//!   it only completes a last line that has no line end.
//! - Lines over 998 octets (RFC 5321 §4.5.3.1.6) are refused or counted, by
//!   [`LongLines`]; NUL bytes by [`NulBytes`]; bytes of 0x80 and above are
//!   refused unless the body is declared 8-bit.
//!
//! Memory: the encoder holds three words of state; output goes to the caller's
//! buffer and is at most `2 × input + 5` bytes per call.
//!
//! Speed: clean runs are skipped 32 bytes at a time (a `min` reduction the
//! compiler vectorizes), a proper CRLF and a line start are handled inline, and
//! the output is copied with one `memcpy` per clean stretch; only bytes that
//! need a change (bare CR or LF, a leading dot, NUL, refused 8-bit) go through
//! the byte-by-byte path. [`reference_encode`] is the
//! plain byte-at-a-time algorithm, kept as the oracle for tests and fuzzing.

use std::fmt;

/// The longest line, in octets without CRLF, that RFC 5321 allows.
pub const MAX_LINE_LEN: u64 = 998;

/// What to do with a line longer than [`MAX_LINE_LEN`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LongLines {
    /// Refuse the body with [`BodyError::LineTooLong`] (default).
    #[default]
    Reject,
    /// Send it as is and count it in [`BodyStats::long_lines`] (many servers
    /// accept such lines; some truncate or reject them).
    Allow,
}

/// What to do with a NUL byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NulBytes {
    /// Refuse the body with [`BodyError::Nul`] (default; RFC 5321 text has no NUL).
    #[default]
    Reject,
    /// Send it as is (BINARYMIME, or servers known to accept it).
    Allow,
}

/// Settings of a [`BodyEncoder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BodyConfig {
    /// Double a leading `.` on every line and write the DATA terminator. `true`
    /// for DATA, `false` for BDAT.
    pub dot_stuffing: bool,
    /// Allow bytes of 0x80 and above (8BITMIME, BINARYMIME).
    pub eight_bit: bool,
    /// Policy for lines over 998 octets.
    pub long_lines: LongLines,
    /// Policy for NUL bytes.
    pub nul: NulBytes,
    /// Pass bytes through unchanged (BINARYMIME with BDAT): no line-end repair,
    /// no stuffing, no line or byte checks. Only valid without dot-stuffing.
    pub binary: bool,
}

impl Default for BodyConfig {
    fn default() -> Self {
        Self {
            dot_stuffing: true,
            eight_bit: true,
            long_lines: LongLines::Reject,
            nul: NulBytes::Reject,
            binary: false,
        }
    }
}

/// Counts collected while encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BodyStats {
    /// Bytes given to the encoder.
    pub input_bytes: u64,
    /// Bytes written, terminator included.
    pub output_bytes: u64,
    /// Lines, counting a last line without line end.
    pub lines: u64,
    /// Lines over 998 octets (only with [`LongLines::Allow`]).
    pub long_lines: u64,
    /// The longest line seen, in octets without line end.
    pub longest_line: u64,
    /// Bare CR or bare LF turned into CRLF.
    pub line_ends_fixed: u64,
    /// Dots doubled.
    pub dots_stuffed: u64,
    /// A byte of 0x80 or above was seen.
    pub eight_bit: bool,
    /// A NUL byte was seen (only with [`NulBytes::Allow`]).
    pub nul: bool,
}

/// Why the body cannot be sent. The transaction must be abandoned: the client
/// machine closes the connection rather than terminate a partial message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyError {
    /// A line is longer than 998 octets.
    LineTooLong {
        /// 1-based line number.
        line: u64,
        /// Its length so far, in octets without line end.
        len: u64,
    },
    /// A NUL byte.
    Nul {
        /// Offset in the body.
        offset: u64,
    },
    /// A byte of 0x80 or above in a body not declared 8-bit.
    EightBit {
        /// Offset in the body.
        offset: u64,
    },
    /// The encoder was used after it failed or finished.
    Finished,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::LineTooLong { line, len } => write!(
                f,
                "line {line} of the message is {len} octets long; SMTP allows at most 998 \
                 (wrap it, encode the part as quoted-printable or base64, or allow long lines)"
            ),
            BodyError::Nul { offset } => write!(f, "NUL byte at offset {offset} of the message"),
            BodyError::EightBit { offset } => write!(
                f,
                "8-bit byte at offset {offset} of a message declared 7-bit (declare BODY=8BITMIME)"
            ),
            BodyError::Finished => f.write_str("body encoder used after it failed or finished"),
        }
    }
}

impl std::error::Error for BodyError {}

/// The streaming encoder. Feed the message in chunks of any size with
/// [`BodyEncoder::encode`], then call [`BodyEncoder::finish`] once.
#[derive(Clone, Debug)]
pub struct BodyEncoder {
    config: BodyConfig,
    /// The output so far is empty or ends with CRLF: the next byte starts a line.
    at_line_start: bool,
    /// The last input byte was a CR whose LF may come in the next chunk. The CR is
    /// already written.
    pending_cr: bool,
    /// Octets of the current line so far, without line end.
    line_len: u64,
    stats: BodyStats,
    done: bool,
}

const BLOCK: usize = 32;
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// High bit set in exactly the bytes of `x` that are zero.
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Finds the first byte at or after `i` that the fast path cannot copy: CR, LF,
/// NUL, and (with `reject_high`) bytes of 0x80 and above. Returns its index (or
/// `input.len()`) and the OR of the bytes scanned (for the 8-bit count).
///
/// Clean 32-byte blocks are skipped with a `min`/`or` reduction that compiles
/// to vector instructions; only a block whose minimum is below 14 (or with a
/// high byte) is searched word by word.
#[inline(always)]
fn find_hit(input: &[u8], mut i: usize, reject_high: bool) -> (usize, u8) {
    let mut seen = 0u8;
    while let Some(block) = input.get(i..i + BLOCK) {
        let (min, or) = block
            .iter()
            .fold((u8::MAX, 0u8), |(min, or), &b| (min.min(b), or | b));
        seen |= or;
        if min < 14 || (reject_high && or >= 0x80) {
            for (k, word) in block.chunks_exact(8).enumerate() {
                let w = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
                let mut hits = zero_bytes(w ^ (LO * u64::from(b'\r'))) | zero_bytes(w ^ (LO * u64::from(b'\n'))) | zero_bytes(w);
                if reject_high {
                    hits |= w & HI;
                }
                if hits != 0 {
                    return (i + k * 8 + (hits.trailing_zeros() / 8) as usize, seen);
                }
            }
        }
        i += BLOCK;
    }
    for (k, &b) in input[i..].iter().enumerate() {
        seen |= b;
        if matches!(b, b'\r' | b'\n' | 0) || (reject_high && b >= 0x80) {
            return (i + k, seen);
        }
    }
    (input.len(), seen)
}

impl BodyEncoder {
    /// A new encoder at the start of a body.
    #[must_use]
    pub fn new(config: BodyConfig) -> Self {
        Self {
            config,
            at_line_start: true,
            pending_cr: false,
            line_len: 0,
            stats: BodyStats::default(),
            done: false,
        }
    }

    /// The settings in force.
    #[must_use]
    pub fn config(&self) -> BodyConfig {
        self.config
    }

    /// Counts so far.
    #[must_use]
    pub fn stats(&self) -> BodyStats {
        self.stats
    }

    /// Encodes the next chunk of the message, appending to `out`.
    ///
    /// On error nothing of this chunk is left in `out` (it is truncated to its
    /// length at entry) and the encoder refuses further input.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        if self.done {
            return Err(BodyError::Finished);
        }
        let start_len = out.len();
        if self.config.binary {
            out.extend_from_slice(input);
            self.stats.input_bytes += input.len() as u64;
            self.stats.output_bytes += input.len() as u64;
            return Ok(());
        }
        out.reserve(input.len() + input.len() / 16 + 8);
        match self.encode_inner(input, out) {
            Ok(()) => {
                self.stats.input_bytes += input.len() as u64;
                self.stats.output_bytes += (out.len() - start_len) as u64;
                Ok(())
            }
            Err(e) => {
                out.truncate(start_len);
                self.done = true;
                Err(e)
            }
        }
    }

    /// Ends the body: completes a pending line end and writes the terminator
    /// (with dot-stuffing). Returns the final counts.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<BodyStats, BodyError> {
        if self.done {
            return Err(BodyError::Finished);
        }
        self.done = true;
        if self.config.binary {
            return Ok(self.stats);
        }
        let start_len = out.len();
        if self.pending_cr {
            // A bare CR at the very end becomes CRLF.
            out.push(b'\n');
            self.pending_cr = false;
            self.at_line_start = true;
            self.stats.line_ends_fixed += 1;
        } else if !self.at_line_start {
            self.end_line()?;
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
        }
        if self.config.dot_stuffing {
            out.extend_from_slice(b".\r\n");
        }
        self.stats.output_bytes += (out.len() - start_len) as u64;
        Ok(self.stats)
    }

    /// Ends the current line: checks its length and counts it.
    #[inline]
    fn end_line(&mut self) -> Result<(), BodyError> {
        let len = self.line_len;
        if len > MAX_LINE_LEN {
            match self.config.long_lines {
                LongLines::Reject => {
                    return Err(BodyError::LineTooLong {
                        line: self.stats.lines + 1,
                        len,
                    });
                }
                LongLines::Allow => self.stats.long_lines += 1,
            }
        }
        self.stats.longest_line = self.stats.longest_line.max(len);
        self.stats.lines += 1;
        self.line_len = 0;
        Ok(())
    }

    fn encode_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        let mut i = 0;
        // `input[run..i]` is copied verbatim at the next flush.
        let mut run = 0;
        if self.pending_cr && !input.is_empty() {
            self.pending_cr = false;
            self.at_line_start = true;
            if input[0] == b'\n' {
                i = 1;
            } else {
                out.push(b'\n');
                self.stats.line_ends_fixed += 1;
            }
        }
        let reject_high = !self.config.eight_bit;
        let mut seen = 0u8;
        while i < input.len() {
            if self.at_line_start {
                self.at_line_start = false;
                if self.config.dot_stuffing && input[i] == b'.' {
                    out.extend_from_slice(&input[run..i]);
                    out.push(b'.');
                    run = i;
                    self.stats.dots_stuffed += 1;
                }
            }
            let (j, or) = find_hit(input, i, reject_high);
            seen |= or;
            self.line_len += (j - i) as u64;
            if j == input.len() {
                i = j;
                break;
            }
            if input[j] == b'\r' && input.get(j + 1) == Some(&b'\n') {
                // The common case: a proper CRLF, copied as it is.
                self.end_line()?;
                self.at_line_start = true;
                i = j + 2;
                continue;
            }
            i = self.slow(input, j, j + 1, out, &mut run)?;
        }
        out.extend_from_slice(&input[run..]);
        if seen >= 0x80 {
            self.stats.eight_bit = true;
        }
        if self.line_len > MAX_LINE_LEN && self.config.long_lines == LongLines::Reject {
            return Err(BodyError::LineTooLong {
                line: self.stats.lines + 1,
                len: self.line_len,
            });
        }
        Ok(())
    }

    /// The byte-by-byte path over `input[i..end]` (it may go one byte past `end`
    /// to complete a CRLF pair). Returns the position where it stopped.
    fn slow(
        &mut self,
        input: &[u8],
        mut i: usize,
        end: usize,
        out: &mut Vec<u8>,
        run: &mut usize,
    ) -> Result<usize, BodyError> {
        let offset = self.stats.input_bytes;
        while i < end {
            let b = input[i];
            if self.at_line_start {
                self.at_line_start = false;
                if b == b'.' && self.config.dot_stuffing {
                    out.extend_from_slice(&input[*run..i]);
                    out.push(b'.');
                    *run = i;
                    self.stats.dots_stuffed += 1;
                }
            }
            match b {
                b'\r' => {
                    self.end_line()?;
                    match input.get(i + 1) {
                        Some(b'\n') => i += 2,
                        Some(_) => {
                            out.extend_from_slice(&input[*run..=i]);
                            out.push(b'\n');
                            i += 1;
                            *run = i;
                            self.stats.line_ends_fixed += 1;
                        }
                        None => {
                            // The LF may come in the next chunk.
                            self.pending_cr = true;
                            return Ok(i + 1);
                        }
                    }
                    self.at_line_start = true;
                    continue;
                }
                b'\n' => {
                    self.end_line()?;
                    out.extend_from_slice(&input[*run..i]);
                    out.push(b'\r');
                    *run = i;
                    self.stats.line_ends_fixed += 1;
                    self.at_line_start = true;
                    i += 1;
                    continue;
                }
                0 => {
                    if self.config.nul == NulBytes::Reject {
                        return Err(BodyError::Nul {
                            offset: offset + i as u64,
                        });
                    }
                    self.stats.nul = true;
                }
                0x80..=0xff => {
                    if !self.config.eight_bit {
                        return Err(BodyError::EightBit {
                            offset: offset + i as u64,
                        });
                    }
                    self.stats.eight_bit = true;
                }
                _ => {}
            }
            self.line_len += 1;
            i += 1;
        }
        Ok(i)
    }
}

/// The byte-at-a-time reference encoder: the whole body in, the exact wire bytes
/// out (terminator included with dot-stuffing). Slow and simple on purpose: the
/// oracle that [`BodyEncoder`] is tested and fuzzed against.
pub fn reference_encode(input: &[u8], config: BodyConfig) -> Result<(Vec<u8>, BodyStats), BodyError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_chunks(input: &[u8], config: BodyConfig, chunk: usize) -> Result<(Vec<u8>, BodyStats), BodyError> {
        let mut enc = BodyEncoder::new(config);
        let mut out = Vec::new();
        for part in input.chunks(chunk.max(1)) {
            enc.encode(part, &mut out)?;
        }
        let stats = enc.finish(&mut out)?;
        Ok((out, stats))
    }

    fn check(input: &[u8], config: BodyConfig) {
        let want = reference_encode(input, config);
        for chunk in [1, 2, 3, 7, 31, 32, 33, 64, 1000, input.len().max(1)] {
            assert_eq!(encode_chunks(input, config, chunk), want, "chunk {chunk} input {input:?}");
        }
    }

    #[test]
    fn examples() {
        let dot = BodyConfig::default();
        assert_eq!(reference_encode(b"", dot).unwrap().0, b".\r\n");
        assert_eq!(reference_encode(b"a", dot).unwrap().0, b"a\r\n.\r\n");
        assert_eq!(reference_encode(b".a\r\n", dot).unwrap().0, b"..a\r\n.\r\n");
        assert_eq!(reference_encode(b"a\n.\r\n", dot).unwrap().0, b"a\r\n..\r\n.\r\n");
        assert_eq!(reference_encode(b"a\r.b\rc", dot).unwrap().0, b"a\r\n..b\r\nc\r\n.\r\n");
        assert_eq!(reference_encode(b"a\r", dot).unwrap().0, b"a\r\n.\r\n");
        assert_eq!(reference_encode(b"a\r\n", dot).unwrap().0, b"a\r\n.\r\n");
        // SMTP smuggling: <LF>.<CR><LF> and <CR>.<CR> cannot survive.
        assert_eq!(
            reference_encode(b"x\n.\r\nMAIL FROM:<a@b>\r\n", dot).unwrap().0,
            b"x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n"
        );
        let bdat = BodyConfig {
            dot_stuffing: false,
            ..dot
        };
        assert_eq!(reference_encode(b".a\nb", bdat).unwrap().0, b".a\r\nb\r\n");
        assert_eq!(reference_encode(b"", bdat).unwrap().0, b"");
        for input in [
            &b""[..],
            b".",
            b"\r",
            b"\n",
            b"\r\n",
            b"\n\r",
            b".\r\n.\r\n",
            b"a\r\r\n\n.b",
            b"\r\n.\r\n",
        ] {
            check(input, dot);
            check(input, bdat);
        }
    }

    #[test]
    fn long_text_across_blocks() {
        let mut text = Vec::new();
        for n in 0..300u32 {
            let width = (n * 7 % 90) as usize;
            text.extend(std::iter::repeat_n(b'a' + (n % 26) as u8, width));
            match n % 9 {
                0 => text.extend_from_slice(b"\n"),
                1 => text.extend_from_slice(b"\r"),
                2 => text.extend_from_slice(b"\r\n."),
                3 => text.extend_from_slice(b"\r\n\xc3\xa9"),
                _ => text.extend_from_slice(b"\r\n"),
            }
        }
        check(&text, BodyConfig::default());
        check(
            &text,
            BodyConfig {
                dot_stuffing: false,
                ..BodyConfig::default()
            },
        );
    }

    #[test]
    fn line_limits() {
        let ok = [b'x'; 998];
        check(&ok, BodyConfig::default());
        let mut long = vec![b'y'; 999];
        long.extend_from_slice(b"\r\nshort\r\n");
        assert_eq!(
            reference_encode(&long, BodyConfig::default()),
            Err(BodyError::LineTooLong { line: 1, len: 999 })
        );
        check(&long, BodyConfig::default());
        let allow = BodyConfig {
            long_lines: LongLines::Allow,
            ..BodyConfig::default()
        };
        let (_, stats) = reference_encode(&long, allow).unwrap();
        assert_eq!((stats.long_lines, stats.longest_line, stats.lines), (1, 999, 2));
        check(&long, allow);
        // A long line with no line end at all is refused while streaming.
        let mut enc = BodyEncoder::new(BodyConfig::default());
        let mut out = Vec::new();
        assert!(enc.encode(&[b'z'; 2000], &mut out).is_err());
        assert!(out.is_empty());
        assert_eq!(enc.encode(b"a", &mut out), Err(BodyError::Finished));
    }

    #[test]
    fn nul_and_eight_bit() {
        let seven = BodyConfig {
            eight_bit: false,
            ..BodyConfig::default()
        };
        let input = b"Gr\xc3\xbc\xc3\x9fe aus dem Stra\xc3\x9fenverkehr, lorem ipsum dolor sit amet\r\n";
        assert_eq!(reference_encode(input, seven), Err(BodyError::EightBit { offset: 2 }));
        check(input, seven);
        check(input, BodyConfig::default());
        let nul = b"0123456789012345678901234567890123456789\0\r\n";
        assert_eq!(reference_encode(nul, BodyConfig::default()), Err(BodyError::Nul { offset: 40 }));
        check(nul, BodyConfig::default());
        let allow = BodyConfig {
            nul: NulBytes::Allow,
            ..BodyConfig::default()
        };
        assert!(reference_encode(nul, allow).unwrap().1.nul);
        check(nul, allow);
    }
}
