//! The block path in AVX-512BW or AVX2, chosen at run time: `pulp` checks
//! the CPU once and runs [`BodyEncoder::clean_blocks_simd`] compiled with
//! those features, so a build for the x86-64 baseline gets 64- or 32-lane
//! compares where the machine has them, with no `unsafe` in this crate.
//!
//! It does what [`BodyEncoder::clean_blocks`] does, with one mask per byte
//! class: each block is loaded once, and the byte after each position is
//! looked at by shifting the masks, not by loading the block again one byte
//! later. Blocks are 128 bytes, then 64 for what is left, and each clean
//! block is copied out while it is in the cache rather than by one `memcpy`
//! of the whole run at the end, which would read the input again.

use std::arch::x86_64::{__m256i, __m512i};

use pulp::x86::{V3, V4};

use super::BodyEncoder;
use super::fast::{HI, stuff_block};

/// The instruction sets the block path can run in.
#[derive(Clone, Copy)]
pub(super) enum Simd {
    /// AVX-512BW: 64 lanes, compares straight into masks.
    V4(V4),
    /// AVX2: 32 lanes.
    V3(V3),
}

/// The widest instruction set this CPU has (checked once, then cached by
/// `pulp`), at most `cap` (for tests: 2 = any, 1 = AVX2 at most, 0 = none).
#[inline]
pub(super) fn detect(cap: u8) -> Option<Simd> {
    if cap >= 2
        && let Some(v4) = V4::try_new()
    {
        return Some(Simd::V4(v4));
    }
    V3::try_new().filter(|_| cap >= 1).map(Simd::V3)
}

/// One vector width: what the block loop needs of it.
trait Lanes: Copy {
    /// The vector.
    type V: Copy;
    /// Bytes per vector.
    const WIDTH: usize;
    /// Every lane `b`.
    fn splat(self, b: u8) -> Self::V;
    /// The vector at `block[at..at + WIDTH]`.
    fn load(self, block: &[u8], at: usize) -> Self::V;
    /// Bit k set where lane k of `a` equals that of `b`.
    fn eq(self, a: Self::V, b: Self::V) -> u64;
    /// Lane-wise minimum.
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise OR.
    fn or(self, a: Self::V, b: Self::V) -> Self::V;
    /// Bit k set where lane k has its high bit.
    fn high(self, a: Self::V) -> u64;
}

impl Lanes for V3 {
    type V = __m256i;
    const WIDTH: usize = 32;
    #[inline(always)]
    fn splat(self, b: u8) -> __m256i {
        self.avx._mm256_set1_epi8(b as i8)
    }
    #[inline(always)]
    fn load(self, block: &[u8], at: usize) -> __m256i {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&block[at..at + 32]);
        pulp::cast(bytes)
    }
    #[inline(always)]
    fn eq(self, a: __m256i, b: __m256i) -> u64 {
        self.high(self.avx2._mm256_cmpeq_epi8(a, b))
    }
    #[inline(always)]
    fn min(self, a: __m256i, b: __m256i) -> __m256i {
        self.avx2._mm256_min_epu8(a, b)
    }
    #[inline(always)]
    fn or(self, a: __m256i, b: __m256i) -> __m256i {
        self.avx2._mm256_or_si256(a, b)
    }
    #[inline(always)]
    fn high(self, a: __m256i) -> u64 {
        u64::from(self.avx2._mm256_movemask_epi8(a) as u32)
    }
}

impl Lanes for V4 {
    type V = __m512i;
    const WIDTH: usize = 64;
    #[inline(always)]
    fn splat(self, b: u8) -> __m512i {
        self.avx512f._mm512_set1_epi8(b as i8)
    }
    #[inline(always)]
    fn load(self, block: &[u8], at: usize) -> __m512i {
        let mut bytes = [0u8; 64];
        bytes.copy_from_slice(&block[at..at + 64]);
        pulp::cast(bytes)
    }
    #[inline(always)]
    fn eq(self, a: __m512i, b: __m512i) -> u64 {
        self.avx512bw._mm512_cmpeq_epi8_mask(a, b)
    }
    #[inline(always)]
    fn min(self, a: __m512i, b: __m512i) -> __m512i {
        self.avx512bw._mm512_min_epu8(a, b)
    }
    #[inline(always)]
    fn or(self, a: __m512i, b: __m512i) -> __m512i {
        self.avx512f._mm512_or_si512(a, b)
    }
    #[inline(always)]
    fn high(self, a: __m512i) -> u64 {
        self.avx512bw._mm512_movepi8_mask(a)
    }
}

impl BodyEncoder {
    /// [`BodyEncoder::clean_blocks`] in the given instruction set; same
    /// contract, same result.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn clean_blocks_simd<const STUFFING: bool>(
        &mut self,
        simd: Simd,
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
        match simd {
            Simd::V4(v4) => v4.vectorize(|| {
                self.lanes_blocks::<STUFFING, V4>(v4, input, i, reject_high, seen, out, run)
            }),
            Simd::V3(v3) => v3.vectorize(|| {
                self.lanes_blocks::<STUFFING, V3>(v3, input, i, reject_high, seen, out, run)
            }),
        }
    }

    /// 128-byte blocks, then 64-byte ones.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn lanes_blocks<const STUFFING: bool, L: Lanes>(
        &mut self,
        lanes: L,
        input: &[u8],
        i: usize,
        reject_high: bool,
        seen: &mut u64,
        out: &mut Vec<u8>,
        run: &mut usize,
    ) -> usize {
        let mut seen_v = lanes.splat(0);
        let i =
            self.blocks_of::<STUFFING, L>(lanes, 128, input, i, reject_high, &mut seen_v, out, run);
        let i =
            self.blocks_of::<STUFFING, L>(lanes, 64, input, i, reject_high, &mut seen_v, out, run);
        if lanes.high(seen_v) != 0 {
            *seen |= HI;
        }
        i
    }

    /// Blocks of `width` bytes (64 or 128) from `i` while they are clean;
    /// each is copied to `out` (`run` follows). Returns where it stopped.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn blocks_of<const STUFFING: bool, L: Lanes>(
        &mut self,
        lanes: L,
        width: usize,
        input: &[u8],
        mut i: usize,
        reject_high: bool,
        seen_v: &mut L::V,
        out: &mut Vec<u8>,
        run: &mut usize,
    ) -> usize {
        let top = width as u32 - 1;
        let parts = width / L::WIDTH;
        let (cr_v, lf_v, dot_v, zero) = (
            lanes.splat(b'\r'),
            lanes.splat(b'\n'),
            lanes.splat(b'.'),
            lanes.splat(0),
        );
        while let Some(block) = input.get(i..i + width + 1) {
            let next = block[width];
            let h = |k: usize| lanes.load(block, k * L::WIDTH);
            // Bit k of a class mask: byte `i + k` is of that class.
            let class = |c: L::V| {
                (0..parts).fold(0u128, |m, k| {
                    m | u128::from(lanes.eq(h(k), c)) << (k * L::WIDTH)
                })
            };
            let lf = class(lf_v);
            let cr = class(cr_v);
            let min = (1..parts).fold(h(0), |m, k| lanes.min(m, h(k)));
            let or = (1..parts).fold(h(0), |m, k| lanes.or(m, h(k)));
            // Bit k: the byte after position k is an LF (the top bit: the
            // next block's first byte).
            let lf_after = (lf >> 1) | (u128::from(next == b'\n') << top);
            // A CR without LF after it or an LF after a non-CR; an LF first in
            // the block lost its CR; a CR last in the block splits its pair; a
            // NUL.
            let nul = u128::from(lanes.eq(min, zero));
            let bad = (cr ^ lf_after) | (lf & 1) | (cr >> top) | nul;
            let refused_high = reject_high && lanes.high(or) != 0;
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
            *seen_v = lanes.or(*seen_v, or);
            i += width;
        }
        i
    }
}
