//! Shared pieces: the `Block` contract for viewing bytes as blocks, half-float bit conversions,
//! and the integer-lane / eight-float-lane helpers that make every dot-product twin round alike.
//!
//! llama.cpp's AVX2 dot products keep eight f32 accumulator lanes; lane `k` receives, per block
//! (or super-block), `d * (integer sum of the products of elements 4k..4k+3 of each 32-element
//! chunk)` through one FMA, and the lanes are summed at the end in a fixed tree. Integer sums
//! are exact whatever instructions compute them, so reproducing that lane split and the FMA order
//! in scalar code makes the scalar twin, our AVX2/AVX-512/VNNI kernels and llama.cpp's x86 build
//! agree to the bit.

/// A ggml block struct.
///
/// # Safety
/// Implementors are `repr(C)`, have alignment 1 and no padding, and every byte pattern is a valid
/// value (they are made only of `u8`/`i8` arrays). `cast`/`cast_mut` rely on this.
pub(crate) unsafe trait Block: Copy + 'static {}

macro_rules! impl_block {
    ($t:ty, $bytes:expr) => {
        // SAFETY: a repr(C) struct of byte arrays; size and alignment are checked just below.
        unsafe impl $crate::common::Block for $t {}
        const _: () =
            assert!(std::mem::size_of::<$t>() == $bytes && std::mem::align_of::<$t>() == 1);
    };
}
pub(crate) use impl_block;

/// Views `bytes` as blocks. Callers have already checked the length (a whole number of blocks).
pub(crate) fn cast<B: Block>(bytes: &[u8]) -> &[B] {
    let size = std::mem::size_of::<B>();
    assert_eq!(bytes.len() % size, 0, "caller checks lengths");
    // SAFETY: `Block` guarantees alignment 1 and that any bytes are a valid `B`; the length is a
    // whole number of blocks.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) }
}

/// Mutable twin of `cast`.
pub(crate) fn cast_mut<B: Block>(bytes: &mut [u8]) -> &mut [B] {
    let size = std::mem::size_of::<B>();
    assert_eq!(bytes.len() % size, 0, "caller checks lengths");
    // SAFETY: as in `cast`; the exclusive borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), bytes.len() / size) }
}

/// IEEE half (bits) to f32, exact.
#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// f32 to IEEE half bits, rounding to nearest even (ggml's `GGML_FP32_TO_FP16`).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// bfloat16 (bits) to f32, exact.
#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// f32 to bfloat16 bits the way ggml does: round to nearest even, NaNs forced quiet.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
}

/// A little-endian f16 field of a block, as f32.
#[inline]
pub(crate) fn fp16(b: [u8; 2]) -> f32 {
    f16_to_f32(u16::from_le_bytes(b))
}

/// Eight integer lanes of one 32-element chunk: lane `k` = Σ `prod(e)` for `e` in `4k..4k+4`
/// (what `maddubs`+`madd` or `vpdpbusd` leave in each i32 lane).
#[inline]
pub(crate) fn lanes32(prod: impl Fn(usize) -> i32) -> [i32; 8] {
    std::array::from_fn(|k| (4 * k..4 * k + 4).map(&prod).sum())
}

/// Eight integer lanes of a 256-element super-block: lane `k` adds, over the eight 32-element
/// chunks, `scale(g) * Σ q(e)·a(e)` for the group `g..g+4` at offset `4k` of each chunk.
/// Sub-block scales cover 16 or 32 elements, so one scale serves each group of four.
#[inline]
pub(crate) fn lanes256(
    q: impl Fn(usize) -> i32,
    a: &[i8; 256],
    scale: impl Fn(usize) -> i32,
) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for c in 0..8 {
        for (k, lane) in lanes.iter_mut().enumerate() {
            let g = 32 * c + 4 * k;
            let s: i32 = (g..g + 4).map(|e| q(e) * a[e] as i32).sum();
            *lane += scale(g) * s;
        }
    }
    lanes
}

/// Eight f32 lanes standing in for a `__m256` accumulator.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Acc8(pub [f32; 8]);

impl Acc8 {
    /// `acc = fma(d, lanes, acc)`, lane by lane (`_mm256_fmadd_ps(d, cvt(lanes), acc)`).
    #[inline]
    pub fn fma(&mut self, d: f32, lanes: [i32; 8]) {
        for (a, l) in self.0.iter_mut().zip(lanes) {
            *a = d.mul_add(l as f32, *a);
        }
    }

    /// llama.cpp's `hsum_float_8`: high half + low half, then pairs.
    #[inline]
    pub fn hsum(&self) -> f32 {
        let x = &self.0;
        let r = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
        (r[0] + r[2]) + (r[1] + r[3])
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Deterministic pseudo-random data for tests (no `rand` dependency needed).

    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
        }

        /// SplitMix64.
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        pub fn unit(&mut self) -> f32 {
            (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
        }

        /// Roughly normal (sum of uniforms), scaled.
        pub fn normal(&mut self, sigma: f32) -> f32 {
            let s: f32 = (0..4).map(|_| self.unit()).sum();
            (s - 2.0) * sigma * 1.732
        }

        pub fn floats(&mut self, n: usize, sigma: f32) -> Vec<f32> {
            (0..n).map(|_| self.normal(sigma)).collect()
        }

        pub fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next_u64() as u8).collect()
        }

        /// Random bytes for `nblocks` blocks of `block_bytes`, with every little-endian f16 at the
        /// given offsets replaced by a finite scale of moderate size.
        pub fn blocks(&mut self, nblocks: usize, block_bytes: usize, f16_at: &[usize]) -> Vec<u8> {
            let mut v = self.bytes(nblocks * block_bytes);
            for b in v.chunks_exact_mut(block_bytes) {
                for &o in f16_at {
                    let d =
                        (self.unit() + 0.05) * 0.02 * if self.unit() < 0.2 { -1.0 } else { 1.0 };
                    b[o..o + 2].copy_from_slice(&super::f32_to_f16(d).to_le_bytes());
                }
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_ggml() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // Halfway cases go to even.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        // NaN stays NaN and becomes quiet.
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(bf16_to_f32(0xc000), -2.0);
    }

    #[test]
    fn f16_round_trip() {
        for bits in [0u16, 0x3c00, 0x0001, 0x7bff, 0x8400] {
            assert_eq!(f32_to_f16(f16_to_f32(bits)), bits);
        }
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // overflow rounds to infinity
    }

    #[test]
    fn hsum_follows_the_avx_tree() {
        let acc = Acc8([1e8, 1.0, -1e8, 1.0, 0.5, 0.25, 0.125, 3.0]);
        let x = acc.0;
        let expect = ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]));
        assert_eq!(acc.hsum().to_bits(), expect.to_bits());
    }
}
