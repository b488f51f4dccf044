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
//! Speed: clean text goes through a block path that checks 64 or 128 bytes
//! per step with vector compares and no branch per line: in AVX-512BW or
//! AVX2 where the CPU has them (chosen at run time through `pulp`, whose safe
//! wrappers keep `unsafe` out of this crate), otherwise in the vectors the
//! build targets (`wide`). Between blocks, clean runs are skipped 32 bytes at a time
//! (word-at-a-time arithmetic), a proper CRLF and a line start are handled
//! inline; only bytes that need a change (bare CR or LF, a leading dot, NUL,
//! refused 8-bit) go through the byte-by-byte path. [`reference_encode`] is
//! the plain byte-at-a-time algorithm, kept as the oracle for tests and
//! fuzzing.

use std::fmt;

mod bytes;
mod fast;
mod reference;
#[cfg(target_arch = "x86_64")]
mod simd;

use fast::{FAST_BLOCK, HI, find_hit};

pub use reference::{Canonicalizer, canonical, reference_encode};

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
#[non_exhaustive]
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
#[non_exhaustive]
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

    /// The block path: in AVX-512BW or AVX2 where the CPU has them (x86-64,
    /// checked at run time), else the portable one in the vectors the build
    /// targets.
    #[inline]
    fn blocks(
        &mut self,
        input: &[u8],
        i: usize,
        reject_high: bool,
        seen: &mut u64,
        out: &mut Vec<u8>,
        run: &mut usize,
    ) -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            #[cfg(test)]
            let cap = tests::simd_cap();
            #[cfg(not(test))]
            let cap = 2;
            if let Some(simd) = simd::detect(cap) {
                return if self.config.dot_stuffing {
                    self.clean_blocks_simd::<true>(simd, input, i, reject_high, seen, out, run)
                } else {
                    self.clean_blocks_simd::<false>(simd, input, i, reject_high, seen, out, run)
                };
            }
        }
        if self.config.dot_stuffing {
            self.clean_blocks::<true>(input, i, reject_high, seen, out, run)
        } else {
            self.clean_blocks::<false>(input, i, reject_high, seen, out, run)
        }
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
        let mut seen = 0u64;
        // Where the block path may be tried again after a block it refused.
        let mut fast_from = i;
        while i < input.len() {
            if i >= fast_from {
                let stop = self.blocks(input, i, reject_high, &mut seen, out, &mut run);
                fast_from = stop + FAST_BLOCK;
                if stop > i {
                    i = stop;
                    continue;
                }
            }
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
                break;
            }
            match input[j] {
                b'\r' if input.get(j + 1) == Some(&b'\n') => {
                    // The common case: a proper CRLF, copied as it is.
                    if self.line_len <= MAX_LINE_LEN {
                        self.stats.lines += 1;
                        self.stats.longest_line = self.stats.longest_line.max(self.line_len);
                        self.line_len = 0;
                    } else {
                        self.end_line()?;
                    }
                    self.at_line_start = true;
                    i = j + 2;
                }
                b'\r' | b'\n' | 0 | 0x80..=0xff => i = self.slow(input, j, j + 1, out, &mut run)?,
                _ => {
                    // Tab and other controls pass unchanged.
                    self.line_len += 1;
                    i = j + 1;
                }
            }
        }
        out.extend_from_slice(&input[run..]);
        if seen & HI != 0 {
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
}

postern_common::setters!(BodyConfig {
    dot_stuffing: bool,
    eight_bit: bool,
    long_lines: LongLines,
    nul: NulBytes,
    binary: bool
});

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Set by a test to cap the block path's instruction set on this
        /// thread: 2 = the widest the CPU has, 1 = AVX2 at most, 0 = the
        /// portable path.
        static SIMD_CAP: Cell<u8> = const { Cell::new(2) };
    }

    /// The cap this thread's test set.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) fn simd_cap() -> u8 {
        SIMD_CAP.with(Cell::get)
    }

    fn encode_chunks(
        input: &[u8],
        config: BodyConfig,
        chunk: usize,
    ) -> Result<(Vec<u8>, BodyStats), BodyError> {
        let mut enc = BodyEncoder::new(config);
        let mut out = Vec::new();
        for part in input.chunks(chunk.max(1)) {
            enc.encode(part, &mut out)?;
        }
        let stats = enc.finish(&mut out)?;
        Ok((out, stats))
    }

    /// The encoder gives what the reference gives, at every chunk size, on
    /// every block path this CPU can run (AVX-512BW, AVX2, portable).
    fn check(input: &[u8], config: BodyConfig) {
        let want = reference_encode(input, config);
        for cap in [2, 1, 0] {
            SIMD_CAP.with(|p| p.set(cap));
            for chunk in [
                1,
                2,
                3,
                7,
                31,
                32,
                33,
                64,
                127,
                128,
                129,
                1000,
                input.len().max(1),
            ] {
                assert_eq!(
                    encode_chunks(input, config, chunk),
                    want,
                    "instruction cap {cap} chunk {chunk} input {input:?}"
                );
            }
        }
        SIMD_CAP.with(|p| p.set(2));
    }

    /// Random bodies of clean and broken lines (a small xorshift generator, so
    /// the cases are the same on every run): the two block paths and the
    /// reference agree under every setting.
    #[test]
    fn block_paths_agree_on_random_bodies() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for case in 0..300 {
            let mut text = Vec::new();
            for _ in 0..next(60) {
                if next(8) == 0 {
                    text.push(b'.');
                }
                let width = match next(20) {
                    0 => 990 + next(20),
                    1..=3 => next(4),
                    _ => next(130),
                };
                text.extend((0..width).map(|k| match next(400) {
                    0 => 0,
                    1 => 0xc3,
                    2 => b'\r',
                    3 => b'\n',
                    _ => b'a' + (k % 26) as u8,
                }));
                text.extend_from_slice(
                    [&b"\r\n"[..], b"\r\n", b"\r\n", b"\n", b"\r", b""][next(6) as usize],
                );
            }
            let config = BodyConfig::default()
                .dot_stuffing(case % 2 == 0)
                .eight_bit(case % 3 != 0)
                .long_lines(if case % 5 == 0 {
                    LongLines::Allow
                } else {
                    LongLines::Reject
                })
                .nul(if case % 7 == 0 {
                    NulBytes::Allow
                } else {
                    NulBytes::Reject
                });
            check(&text, config);
        }
    }

    #[test]
    fn examples() {
        let dot = BodyConfig::default();
        assert_eq!(reference_encode(b"", dot).unwrap().0, b".\r\n");
        assert_eq!(reference_encode(b"a", dot).unwrap().0, b"a\r\n.\r\n");
        assert_eq!(reference_encode(b".a\r\n", dot).unwrap().0, b"..a\r\n.\r\n");
        assert_eq!(
            reference_encode(b"a\n.\r\n", dot).unwrap().0,
            b"a\r\n..\r\n.\r\n"
        );
        assert_eq!(
            reference_encode(b"a\r.b\rc", dot).unwrap().0,
            b"a\r\n..b\r\nc\r\n.\r\n"
        );
        assert_eq!(reference_encode(b"a\r", dot).unwrap().0, b"a\r\n.\r\n");
        assert_eq!(reference_encode(b"a\r\n", dot).unwrap().0, b"a\r\n.\r\n");
        // SMTP smuggling: <LF>.<CR><LF> and <CR>.<CR> cannot survive.
        assert_eq!(
            reference_encode(b"x\n.\r\nMAIL FROM:<a@b>\r\n", dot)
                .unwrap()
                .0,
            b"x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n"
        );
        let bdat = dot.dot_stuffing(false);
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
        check(&text, BodyConfig::default().dot_stuffing(false));
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
        let allow = BodyConfig::default().long_lines(LongLines::Allow);
        let (_, stats) = reference_encode(&long, allow).unwrap();
        assert_eq!(
            (stats.long_lines, stats.longest_line, stats.lines),
            (1, 999, 2)
        );
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
        let seven = BodyConfig::default().eight_bit(false);
        let input =
            b"Gr\xc3\xbc\xc3\x9fe aus dem Stra\xc3\x9fenverkehr, lorem ipsum dolor sit amet\r\n";
        assert_eq!(
            reference_encode(input, seven),
            Err(BodyError::EightBit { offset: 2 })
        );
        check(input, seven);
        check(input, BodyConfig::default());
        let nul = b"0123456789012345678901234567890123456789\0\r\n";
        assert_eq!(
            reference_encode(nul, BodyConfig::default()),
            Err(BodyError::Nul { offset: 40 })
        );
        check(nul, BodyConfig::default());
        let allow = BodyConfig::default().nul(NulBytes::Allow);
        assert!(reference_encode(nul, allow).unwrap().1.nul);
        check(nul, allow);
    }

    #[test]
    fn short_lines_keep_exact_counts_in_the_block_path() {
        // Lines shorter than a block: the longest is found inside blocks.
        let mut text = Vec::new();
        for n in 0..400u32 {
            let width = (n * 13 % 41) as usize;
            text.extend(std::iter::repeat_n(b'a' + (n % 26) as u8, width));
            text.extend_from_slice(b"\r\n");
        }
        let (_, stats) = reference_encode(&text, BodyConfig::default()).unwrap();
        assert_eq!(stats.longest_line, 40);
        assert_eq!(stats.lines, 400);
        check(&text, BodyConfig::default());
        // The longest line is in the middle of a block, after shorter ones.
        let mut text = b"ab\r\n".repeat(40);
        text.splice(20..20, b"0123456789012345678901234567\r\n".iter().copied());
        check(&text, BodyConfig::default());
    }

    #[test]
    fn dots_stuffed_inside_blocks() {
        // Dot-led lines of every width from 0 to 70, so a dot falls at every
        // position of a block, including the byte just after one (bit 63)
        // and a block's first byte.
        let mut text = Vec::new();
        for width in 0..=70usize {
            text.push(b'.');
            text.extend(std::iter::repeat_n(b'a' + (width % 26) as u8, width));
            text.extend_from_slice(b"\r\n");
            if width % 3 == 0 {
                text.extend_from_slice(b"plain line\r\n");
            }
        }
        let (out, stats) = reference_encode(&text, BodyConfig::default()).unwrap();
        assert_eq!(stats.dots_stuffed, 71);
        assert!(out.starts_with(b"..\r\nplain line\r\n..b\r\n"));
        check(&text, BodyConfig::default());
        // Every position of a double block (the x86-64 paths take 128 bytes).
        for shift in 1..128 {
            let mut shifted = vec![b'x'; shift];
            shifted.extend_from_slice(b"\r\n");
            shifted.extend_from_slice(&text);
            check(&shifted, BodyConfig::default());
        }
    }
}
