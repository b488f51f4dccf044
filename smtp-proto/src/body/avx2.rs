//! The block path in AVX2, chosen at run time: `pulp` checks the CPU once and
//! runs [`BodyEncoder::clean_blocks_avx2`] compiled with the AVX2 feature, so
//! a build for the x86-64 baseline gets 32-lane compares where the machine
//! has them, with no `unsafe` in this crate.
//!
//! It does what [`BodyEncoder::clean_blocks`] does, with the masks built once
//! per byte class: each block is loaded once, and the byte after each
//! position is looked at by shifting the masks, not by loading the block
//! again one byte later. Blocks are 128 bytes (four vectors), then 64 for
//! what is left, and each clean block is copied out while it is in the cache
//! rather than by one `memcpy` of the whole run at the end, which would read
//! the input again.

use std::arch::x86_64::__m256i;

use pulp::x86::V3;

use super::BodyEncoder;
use super::fast::{HI, stuff_block};

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
        i: usize,
        reject_high: bool,
        seen: &mut u64,
        out: &mut Vec<u8>,
        run: &mut usize,
    ) -> usize {
        if STUFFING && self.at_line_start && input.get(i) == Some(&b'.') {
            return i;
        }
        out.extend_from_slice(&input[*run..i]);
        *run = i;
        let mut seen_v = simd.avx._mm256_setzero_si256();
        let i = self.avx2_blocks::<STUFFING, 4>(simd, input, i, reject_high, &mut seen_v, out, run);
        let i = self.avx2_blocks::<STUFFING, 2>(simd, input, i, reject_high, &mut seen_v, out, run);
        if simd.avx2._mm256_movemask_epi8(seen_v) != 0 {
            *seen |= HI;
        }
        i
    }

    /// Blocks of `PARTS` vectors (128 or 64 bytes) from `i` while they are
    /// clean; each is copied to `out` (`run` follows). Returns where it
    /// stopped.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn avx2_blocks<const STUFFING: bool, const PARTS: usize>(
        &mut self,
        simd: V3,
        input: &[u8],
        mut i: usize,
        reject_high: bool,
        seen_v: &mut __m256i,
        out: &mut Vec<u8>,
        run: &mut usize,
    ) -> usize {
        let (avx, avx2) = (simd.avx, simd.avx2);
        let width = 32 * PARTS;
        let top = width as u32 - 1;
        let cr_v = avx._mm256_set1_epi8(b'\r' as i8);
        let lf_v = avx._mm256_set1_epi8(b'\n' as i8);
        let dot_v = avx._mm256_set1_epi8(b'.' as i8);
        let zero = avx._mm256_setzero_si256();
        let mask = |v: __m256i| u128::from(avx2._mm256_movemask_epi8(v) as u32);
        while let Some(block) = input.get(i..i + width + 1) {
            let (parts, _) = block[..width].as_chunks::<32>();
            let next = block[width];
            let h: [__m256i; PARTS] = std::array::from_fn(|k| pulp::cast(parts[k]));
            // Bit k of a class mask: byte `i + k` is of that class.
            let class = |c: __m256i| {
                (0..PARTS).fold(0u128, |m, k| {
                    m | mask(avx2._mm256_cmpeq_epi8(h[k], c)) << (32 * k)
                })
            };
            let lf = class(lf_v);
            let cr = class(cr_v);
            let min = h[1..].iter().fold(h[0], |m, &v| avx2._mm256_min_epu8(m, v));
            let or = h[1..].iter().fold(h[0], |m, &v| avx2._mm256_or_si256(m, v));
            // Bit k: the byte after position k is an LF (the top bit: the
            // next block's first byte).
            let lf_after = (lf >> 1) | (u128::from(next == b'\n') << top);
            // A CR without LF after it or an LF after a non-CR; an LF first in
            // the block lost its CR; a CR last in the block splits its pair; a
            // NUL.
            let bad =
                (cr ^ lf_after) | (lf & 1) | (cr >> top) | mask(avx2._mm256_cmpeq_epi8(min, zero));
            let refused_high = reject_high && mask(or) != 0;
            // Bit k: an LF at k with a dot after it, a line to stuff.
            let dots = if STUFFING {
                lf & ((class(dot_v) >> 1) | (u128::from(next == b'.') << top))
            } else {
                0
            };
            if (bad != 0) | refused_high || !self.block_lines(lf, width as u32) {
                break;
            }
            if dots == 0 {
                out.extend_from_slice(&block[..width]);
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
                out.extend_from_slice(&input[*run..i + width]);
            }
            *run = i + width;
            self.at_line_start = (lf >> top != 0) & (dots >> top == 0);
            *seen_v = avx2._mm256_or_si256(*seen_v, or);
            i += width;
        }
        i
    }
}
