//! The block path in AVX2, chosen at run time: `pulp` checks the CPU once and
//! runs [`BodyEncoder::clean_blocks_avx2`] compiled with the AVX2 feature, so
//! a build for the x86-64 baseline gets 32-lane compares where the machine
//! has them, with no `unsafe` in this crate.
//!
//! It does what [`BodyEncoder::clean_blocks`] does, with the masks built once
//! per byte class: each 64-byte block is loaded once (two vectors), and the
//! byte after each position is looked at by shifting the 64-bit masks, not by
//! loading the block again one byte later.

use std::arch::x86_64::__m256i;

use pulp::x86::V3;

use super::fast::{FAST_BLOCK, stuff_block};
use super::{BodyEncoder, MAX_LINE_LEN};

/// The double block of the AVX2 path.
const WIDE: usize = 2 * FAST_BLOCK;

/// The longest line that both starts and ends inside a double block, given
/// its LF positions (each LF has its CR right before it).
#[cold]
fn inner_longest_wide(mut lf: u128) -> u64 {
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

/// The AVX2 token when this CPU has it (checked once, then cached by `pulp`).
#[inline]
pub(super) fn detect() -> Option<V3> {
    V3::try_new()
}

impl BodyEncoder {
    /// [`BodyEncoder::clean_blocks`] for a CPU with AVX2; same contract, same
    /// result.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn clean_blocks_avx2<const STUFFING: bool>(
        &mut self,
        simd: V3,
        input: &[u8],
        mut i: usize,
        reject_high: bool,
        seen: &mut u64,
        out: &mut Vec<u8>,
        run: &mut usize,
    ) -> usize {
        let avx = simd.avx;
        let avx2 = simd.avx2;
        let cr_v = avx._mm256_set1_epi8(b'\r' as i8);
        let lf_v = avx._mm256_set1_epi8(b'\n' as i8);
        let dot_v = avx._mm256_set1_epi8(b'.' as i8);
        let zero = avx._mm256_setzero_si256();
        let mut seen_v = zero;
        let mask = |v: __m256i| u64::from(avx2._mm256_movemask_epi8(v) as u32);
        let eq = |a: __m256i, b: __m256i| avx2._mm256_cmpeq_epi8(a, b);
        if STUFFING && self.at_line_start && input.get(i) == Some(&b'.') {
            return i;
        }
        // Double blocks first: the per-block bookkeeping (line lengths, counts,
        // the loop itself) is paid once per 128 bytes. Each clean block is
        // copied out while it is in the cache, rather than by one `memcpy`
        // of the whole run at the end, which would read the input again.
        out.extend_from_slice(&input[*run..i]);
        *run = i;
        while let Some(block) = input.get(i..i + WIDE + 1) {
            let Some(chunks) = block.first_chunk::<WIDE>() else {
                break;
            };
            let (parts, _) = chunks.as_chunks::<32>();
            let next = block[WIDE];
            let h: [__m256i; 4] = std::array::from_fn(|k| pulp::cast(parts[k]));
            let wide_mask = |c: __m256i| {
                (0..4).fold(0u128, |m, k| m | u128::from(mask(eq(h[k], c))) << (32 * k))
            };
            let lf = wide_mask(lf_v);
            let cr = wide_mask(cr_v);
            let min = avx2._mm256_min_epu8(
                avx2._mm256_min_epu8(h[0], h[1]),
                avx2._mm256_min_epu8(h[2], h[3]),
            );
            let nul = mask(eq(min, zero));
            let or = avx2._mm256_or_si256(
                avx2._mm256_or_si256(h[0], h[1]),
                avx2._mm256_or_si256(h[2], h[3]),
            );
            let lf_after = (lf >> 1) | (u128::from(next == b'\n') << 127);
            let bad = (cr ^ lf_after) | (lf & 1) | (cr >> 127) | u128::from(nul);
            let refused_high = reject_high && mask(or) != 0;
            let dots = if STUFFING {
                lf & ((wide_mask(dot_v) >> 1) | (u128::from(next == b'.') << 127))
            } else {
                0
            };
            if (bad != 0) | refused_high {
                break;
            }
            let mut len = self.line_len;
            let mut longest = self.stats.longest_line;
            if lf != 0 {
                let first = u64::from(lf.trailing_zeros());
                let line = len + first - 1;
                if line > MAX_LINE_LEN {
                    break;
                }
                longest = longest.max(line);
                let last = 127 - u64::from(lf.leading_zeros());
                // Lines that start and end in the block are no longer than the
                // span between its first and last LF.
                if last > first + 2 && last - first - 2 > longest {
                    longest = longest.max(inner_longest_wide(lf));
                }
                len = u64::from(lf.leading_zeros());
            } else {
                len += WIDE as u64;
                if len > MAX_LINE_LEN {
                    break;
                }
            }
            if dots == 0 {
                out.extend_from_slice(chunks);
            } else {
                let (low, high) = (dots as u64, (dots >> 64) as u64);
                let mut n = 0;
                if low != 0 {
                    n += stuff_block(input, i, low, out, run);
                }
                if high != 0 {
                    n += stuff_block(input, i + 64, high, out, run);
                }
                self.stats.dots_stuffed += n;
                out.extend_from_slice(&input[*run..i + WIDE]);
            }
            *run = i + WIDE;
            self.line_len = len;
            self.stats.lines += u64::from(lf.count_ones());
            self.stats.longest_line = longest;
            self.at_line_start = (lf >> 127 != 0) & (dots >> 127 == 0);
            seen_v = avx2._mm256_or_si256(seen_v, or);
            i += WIDE;
        }
        while let Some(block) = input.get(i..i + FAST_BLOCK + 1) {
            let (Some(lo), Some(hi)) = (block.first_chunk::<32>(), block[32..].first_chunk::<32>())
            else {
                break;
            };
            let next = block[FAST_BLOCK];
            let h0: __m256i = pulp::cast(*lo);
            let h1: __m256i = pulp::cast(*hi);
            let lf = mask(eq(h0, lf_v)) | mask(eq(h1, lf_v)) << 32;
            let cr = mask(eq(h0, cr_v)) | mask(eq(h1, cr_v)) << 32;
            let nul = mask(eq(avx2._mm256_min_epu8(h0, h1), zero));
            let or = avx2._mm256_or_si256(h0, h1);
            // Bit k: the byte after position k is an LF (bit 63: the next
            // block's first byte).
            let lf_after = (lf >> 1) | (u64::from(next == b'\n') << 63);
            // A CR without LF after it or an LF after a non-CR; an LF first in
            // the block lost its CR; a CR last in the block splits its pair.
            let bad = (cr ^ lf_after) | (lf & 1) | (cr >> 63) | nul;
            let refused_high = reject_high && mask(or) != 0;
            let dots = if STUFFING {
                let dot = mask(eq(h0, dot_v)) | mask(eq(h1, dot_v)) << 32;
                lf & ((dot >> 1) | (u64::from(next == b'.') << 63))
            } else {
                0
            };
            if (bad != 0) | refused_high {
                break;
            }
            let mut len = self.line_len;
            let mut longest = self.stats.longest_line;
            if lf != 0 {
                let first_end = u64::from(lf.trailing_zeros()) - 1;
                let line = len + first_end;
                let inner = lf & (lf - 1);
                if line > MAX_LINE_LEN {
                    break;
                }
                longest = longest.max(line);
                if inner != 0 && longest < FAST_BLOCK as u64 {
                    longest = longest.max(super::fast::inner_longest(lf));
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
            seen_v = avx2._mm256_or_si256(seen_v, or);
            i += FAST_BLOCK;
        }
        if mask(seen_v) != 0 {
            *seen |= super::fast::HI;
        }
        i
    }
}
