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
//! Speed: clean runs are skipped 32 bytes at a time (word-at-a-time arithmetic
//! that the compiler vectorizes), a proper CRLF and a line start are handled inline, and
//! the output is copied with one `memcpy` per clean stretch; only bytes that
//! need a change (bare CR or LF, a leading dot, NUL, refused 8-bit) go through
//! the byte-by-byte path. [`reference_encode`] is the
//! plain byte-at-a-time algorithm, kept as the oracle for tests and fuzzing.

use std::fmt;

use wide::u8x16;

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
/// Stuffs the dot-led lines of the block at `i`: for each, cuts the verbatim
/// run before the dot and writes the extra dot (the dot itself stays in the
/// run). Bit k of `dots`: the byte at `i + k + 1` (for k = 63, the next
/// block's first byte). Returns the count.
/// Kept out of line so the clean-block loop stays tight.
#[cold]
#[inline(never)]
fn stuff_block(input: &[u8], i: usize, dots: u64, out: &mut Vec<u8>, run: &mut usize) -> u64 {
    let mut stuff = |at: usize| {
        out.extend_from_slice(&input[*run..at]);
        out.push(b'.');
        *run = at;
    };
    let mut d = dots;
    while d != 0 {
        stuff(i + d.trailing_zeros() as usize + 1);
        d &= d - 1;
    }
    u64::from(dots.count_ones())
}

/// The block of [`BodyEncoder::clean_blocks`].
const FAST_BLOCK: usize = 64;
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The word of a block that starts at `at`.
#[inline(always)]
fn word(block: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&block[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// High bits of `w` flag bytes below 14 (CR, LF, NUL and other controls); the
/// lowest flag is exact, higher ones may be false (the borrow of the classic
/// "has less" trick), which only the lowest is used for.
#[inline(always)]
fn low_bytes(w: u64) -> u64 {
    w.wrapping_sub(LO * 14) & !w & HI
}

/// The longest line that both starts and ends inside a block, given the
/// block's LF positions (each LF has its CR right before it).
fn inner_longest(mut lf: u64) -> u64 {
    let mut longest = 0;
    let mut prev = lf.trailing_zeros();
    lf &= lf - 1;
    while lf != 0 {
        let k = lf.trailing_zeros();
        longest = longest.max(u64::from(k - prev - 2));
        prev = k;
        lf &= lf - 1;
    }
    longest
}

/// Finds the first byte at or after `i` that is below 14 or, with
/// `reject_high`, 0x80 and above. Returns its index (or `input.len()`) and the
/// OR of the bytes scanned (for the 8-bit count).
///
/// The block test is word-at-a-time arithmetic that the compiler turns into
/// vector instructions; only a block with a hit is searched word by word.
#[inline(always)]
fn find_hit(input: &[u8], mut i: usize, reject_high: bool) -> (usize, u64) {
    let high_mask = if reject_high { HI } else { 0 };
    let mut seen = 0u64;
    while let Some(block) = input.get(i..i + BLOCK) {
        let (mut low, mut or) = (0u64, 0u64);
        for at in (0..BLOCK).step_by(8) {
            let w = word(block, at);
            low |= w.wrapping_sub(LO * 14) & !w;
            or |= w;
        }
        seen |= or;
        if (low | (or & high_mask)) & HI != 0 {
            for at in (0..BLOCK).step_by(8) {
                let w = word(block, at);
                let hits = low_bytes(w) | (w & high_mask);
                if hits != 0 {
                    return (i + at + (hits.trailing_zeros() / 8) as usize, seen);
                }
            }
        }
        i += BLOCK;
    }
    for (k, &b) in input[i..].iter().enumerate() {
        seen |= u64::from(b);
        if b < 14 || (reject_high && b >= 0x80) {
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
        let mut seen = 0u64;
        // Where the block path may be tried again after a block it refused.
        let mut fast_from = i;
        while i < input.len() {
            if i >= fast_from {
                let stop = if self.config.dot_stuffing {
                    self.clean_blocks::<true>(input, i, reject_high, &mut seen, out, &mut run)
                } else {
                    self.clean_blocks::<false>(input, i, reject_high, &mut seen, out, &mut run)
                };
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

    /// The block path: takes 64-byte blocks of clean text (every CR and LF in a
    /// CRLF pair, no pair split by the block's end, no NUL, no refused 8-bit
    /// byte, no line over the limit) as they are, updating only the counts;
    /// the bytes stay in the verbatim run, which is cut only where a line
    /// starts with a dot to be stuffed (found from the same masks). Returns
    /// where it stopped: at the first block that is not clean, or when fewer
    /// than 65 bytes are left (the byte after a block is needed to see a CR's
    /// LF and a leading dot).
    ///
    /// Each block costs a fixed set of vector compares and no branch per line:
    /// pairs are checked by comparing the block with itself shifted by one
    /// byte; line lengths need only the first and last LF of the block, since a
    /// line inside a block is shorter than 64 octets (the exact longest line is
    /// tracked per line only while it is still below that).
    #[inline]
    fn clean_blocks<const STUFFING: bool>(
        &mut self,
        input: &[u8],
        mut i: usize,
        reject_high: bool,
        seen: &mut u64,
        out: &mut Vec<u8>,
        run: &mut usize,
    ) -> usize {
        let stuffing = STUFFING;
        let cr_v = u8x16::splat(b'\r');
        let lf_v = u8x16::splat(b'\n');
        let dot_v = u8x16::splat(b'.');
        let zero = u8x16::splat(0);
        let mut seen_v = zero;
        // A dot-led line starting at the first block is left to the byte
        // path; later ones are found from the block before (bit 63 below).
        if stuffing && self.at_line_start && input.get(i) == Some(&b'.') {
            return i;
        }
        while let Some(block) = input.get(i..i + FAST_BLOCK + 1) {
            let (Some(here), Some(next)) = (
                block.first_chunk::<FAST_BLOCK>(),
                block[1..].first_chunk::<FAST_BLOCK>(),
            ) else {
                break;
            };
            let (here, _) = here.as_chunks::<16>();
            let (next, _) = next.as_chunks::<16>();
            let part = |k: usize| {
                let (h, n) = (u8x16::new(here[k]), u8x16::new(next[k]));
                let is_lf = h.simd_eq(lf_v);
                // A CR without LF after it, an LF after a non-CR (seen from the
                // byte before it), a NUL.
                let bad = (h.simd_eq(cr_v) ^ n.simd_eq(lf_v)) | h.simd_eq(zero);
                // An LF with a dot after it: a line to stuff.
                let dots = if STUFFING {
                    is_lf & n.simd_eq(dot_v)
                } else {
                    zero
                };
                (u64::from(is_lf.to_bitmask()), bad, h, dots)
            };
            let (l0, b0, h0, d0) = part(0);
            let (l1, b1, h1, d1) = part(1);
            let (l2, b2, h2, d2) = part(2);
            let (l3, b3, h3, d3) = part(3);
            let lf = l0 | l1 << 16 | l2 << 32 | l3 << 48;
            let bad = (b0 | b1) | (b2 | b3);
            let or = (h0 | h1) | (h2 | h3);
            // The block's first byte is checked against the state: an LF there
            // lost its CR. 8-bit bytes are looked at per block only when they
            // are refused.
            let first = block[0];
            let split = block[FAST_BLOCK - 1] == b'\r';
            let refused_high = reject_high && or.to_bitmask() != 0;
            // Dot-led lines are rare: one combined test for them and for a
            // refusal, their positions only when there is one.
            let dv = (d0 | d1) | (d2 | d3);
            let mut dots = 0;
            if ((bad | dv).to_bitmask() != 0) | (first == b'\n') | split | refused_high {
                if (bad.to_bitmask() != 0) | (first == b'\n') | split | refused_high {
                    break;
                }
                let m = |d: u8x16| u64::from(d.to_bitmask());
                dots = m(d0) | m(d1) << 16 | m(d2) << 32 | m(d3) << 48;
            }
            let mut len = self.line_len;
            let mut longest = self.stats.longest_line;
            if lf != 0 {
                // The line that ends at the first LF began before the block.
                let first_end = u64::from(lf.trailing_zeros()) - 1;
                let line = len + first_end;
                let inner = lf & (lf - 1);
                if line > MAX_LINE_LEN {
                    break;
                }
                longest = longest.max(line);
                if inner != 0 && longest < FAST_BLOCK as u64 {
                    longest = longest.max(inner_longest(lf));
                }
                len = u64::from(lf.leading_zeros());
            } else {
                len += FAST_BLOCK as u64;
                if len > MAX_LINE_LEN {
                    break;
                }
            }
            if dots != 0 {
                self.stats.dots_stuffed += stuff_block(input, i, dots, out, run);
            }
            self.line_len = len;
            self.stats.lines += u64::from(lf.count_ones());
            self.stats.longest_line = longest;
            self.at_line_start = (lf >> 63 != 0) & (dots >> 63 == 0);
            seen_v |= or;
            i += FAST_BLOCK;
        }
        if seen_v.to_bitmask() != 0 {
            *seen |= HI;
        }
        i
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

/// The byte-at-a-time reference encoder: the whole body in, the exact wire bytes
/// out (terminator included with dot-stuffing). Slow and simple on purpose: the
/// oracle that [`BodyEncoder`] is tested and fuzzed against.
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn check(input: &[u8], config: BodyConfig) {
        let want = reference_encode(input, config);
        for chunk in [1, 2, 3, 7, 31, 32, 33, 64, 1000, input.len().max(1)] {
            assert_eq!(
                encode_chunks(input, config, chunk),
                want,
                "chunk {chunk} input {input:?}"
            );
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
        let seven = BodyConfig {
            eight_bit: false,
            ..BodyConfig::default()
        };
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
        let allow = BodyConfig {
            nul: NulBytes::Allow,
            ..BodyConfig::default()
        };
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
        for shift in 1..64 {
            let mut shifted = vec![b'x'; shift];
            shifted.extend_from_slice(b"\r\n");
            shifted.extend_from_slice(&text);
            check(&shifted, BodyConfig::default());
        }
    }
}
