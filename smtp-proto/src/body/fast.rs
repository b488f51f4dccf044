//! The portable fast path of the encoder: clean text is checked 64 bytes at a time
//! with word and vector compares, copied with one `memcpy` per clean stretch,
//! and dot-led lines are stuffed from the same masks. Anything else is left
//! to the byte path (`bytes.rs`).

/// The vector the portable block path works in: 64 lanes where the build
/// targets AVX-512BW (`-C target-cpu=x86-64-v4`), 32 where it targets AVX2
/// (`x86-64-v3`), 16 otherwise (SSE2, NEON). `wide` picks the instructions at
/// compile time. On x86-64 this path runs only where the CPU lacks AVX2: the
/// AVX-512BW and AVX2 paths (`simd.rs`) are chosen at run time.
#[cfg(target_feature = "avx512bw")]
type Lanes = wide::u8x64;
#[cfg(all(target_feature = "avx2", not(target_feature = "avx512bw")))]
type Lanes = wide::u8x32;
#[cfg(not(target_feature = "avx2"))]
type Lanes = wide::u8x16;
/// The width of [`Lanes`].
const WIDTH: usize = if cfg!(target_feature = "avx512bw") {
    64
} else if cfg!(target_feature = "avx2") {
    32
} else {
    16
};
/// Vectors per block.
const PARTS: usize = FAST_BLOCK / WIDTH;

use super::{BodyEncoder, MAX_LINE_LEN};

const BLOCK: usize = 32;
/// Stuffs the dot-led lines of the block at `i`: for each, cuts the verbatim
/// run before the dot and writes the extra dot (the dot itself stays in the
/// run). Bit k of `dots`: the byte at `i + k + 1` (for k = 63, the next
/// block's first byte). Returns the count.
/// Kept out of line so the clean-block loop stays tight.
#[cold]
#[inline(never)]
pub(super) fn stuff_block(
    input: &[u8],
    i: usize,
    dots: u64,
    out: &mut Vec<u8>,
    run: &mut usize,
) -> u64 {
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
pub(super) const FAST_BLOCK: usize = 64;
const LO: u64 = 0x0101_0101_0101_0101;
pub(super) const HI: u64 = 0x8080_8080_8080_8080;

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
/// block's LF positions, bit k for byte k (each LF has its CR right before it).
#[cold]
fn inner_longest(mut lf: u128) -> u64 {
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
pub(super) fn find_hit(input: &[u8], mut i: usize, reject_high: bool) -> (usize, u64) {
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
    /// The line bookkeeping of a clean block of `width` bytes (64 or 128)
    /// whose LFs are `lf`, bit k for byte k, each with its CR before it:
    /// counts the lines, keeps the longest, and the length of the line left
    /// open. Returns `false`, changing nothing, when a line would pass the
    /// limit (the byte path then refuses or counts it).
    ///
    /// No branch per line: only the first and last LF are looked at, since a
    /// line between them is no longer than their distance; the lines are
    /// measured one by one only while that distance exceeds the longest line
    /// so far.
    #[inline(always)]
    pub(super) fn block_lines(&mut self, lf: u128, width: u32) -> bool {
        let mut longest = self.stats.longest_line;
        let len = if lf == 0 {
            let len = self.line_len + u64::from(width);
            if len > MAX_LINE_LEN {
                return false;
            }
            len
        } else {
            let first = u64::from(lf.trailing_zeros());
            // The line that ends at the first LF began before the block.
            let line = self.line_len + first - 1;
            if line > MAX_LINE_LEN {
                return false;
            }
            longest = longest.max(line);
            let last = 127 - u64::from(lf.leading_zeros());
            if last > first + 2 && last - first - 2 > longest {
                longest = longest.max(inner_longest(lf));
            }
            u64::from(width) - 1 - last
        };
        self.line_len = len;
        self.stats.lines += u64::from(lf.count_ones());
        self.stats.longest_line = longest;
        true
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
    pub(super) fn clean_blocks<const STUFFING: bool>(
        &mut self,
        input: &[u8],
        mut i: usize,
        reject_high: bool,
        seen: &mut u64,
        out: &mut Vec<u8>,
        run: &mut usize,
    ) -> usize {
        let stuffing = STUFFING;
        let cr_v = Lanes::splat(b'\r');
        let lf_v = Lanes::splat(b'\n');
        let dot_v = Lanes::splat(b'.');
        let zero = Lanes::splat(0);
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
            let (here, _) = here.as_chunks::<WIDTH>();
            let (next, _) = next.as_chunks::<WIDTH>();
            let part = |k: usize| {
                let (h, n) = (Lanes::new(here[k]), Lanes::new(next[k]));
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
            let (mut lf, mut bad, mut or, mut dv) = (0u64, zero, zero, zero);
            let mut each_dots = [zero; PARTS];
            for (k, d_k) in each_dots.iter_mut().enumerate() {
                let (l, b, h, d) = part(k);
                lf |= l << (k * WIDTH);
                bad |= b;
                or |= h;
                dv |= d;
                *d_k = d;
            }
            // The block's first byte is checked against the state: an LF there
            // lost its CR. 8-bit bytes are looked at per block only when they
            // are refused.
            let first = block[0];
            let split = block[FAST_BLOCK - 1] == b'\r';
            let refused_high = reject_high && or.to_bitmask() != 0;
            // Dot-led lines are rare: one combined test for them and for a
            // refusal, their positions only when there is one.
            let mut dots = 0;
            if ((bad | dv).to_bitmask() != 0) | (first == b'\n') | split | refused_high {
                if (bad.to_bitmask() != 0) | (first == b'\n') | split | refused_high {
                    break;
                }
                for (k, d) in each_dots.iter().enumerate() {
                    dots |= u64::from(d.to_bitmask()) << (k * WIDTH);
                }
            }
            if !self.block_lines(u128::from(lf), FAST_BLOCK as u32) {
                break;
            }
            if dots != 0 {
                self.stats.dots_stuffed += stuff_block(input, i, dots, out, run);
            }
            self.at_line_start = (lf >> 63 != 0) & (dots >> 63 == 0);
            seen_v |= or;
            i += FAST_BLOCK;
        }
        if seen_v.to_bitmask() != 0 {
            *seen |= HI;
        }
        i
    }
}
