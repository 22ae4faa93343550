//! IQ4_XS: super-blocks of 256 IQ4_NL-table indices in eight sub-blocks of 32 with 6-bit scales
//! (low nibbles in `scales_l`, high pairs in `scales_h`, stored +32) under one f16 `d`.
//! Sub-block ib uses qs[16·ib..16·ib+16] in the Q4_0 nibble order. Dot partner Q8_K.

use crate::common::{Acc8, fp16, impl_block, lanes256};
use crate::formats::iq4_nl::quantize_iq4;
use crate::formats::q8_k::BlockQ8K;
use crate::isa::Isa;
use crate::kquant::KVALUES_IQ4NL;
use hearth_gguf::QK_K;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockIq4Xs {
    pub d: [u8; 2],
    pub scales_h: [u8; 2],
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}
impl_block!(BlockIq4Xs, 136);

impl BlockIq4Xs {
    /// The signed scale of sub-block `ib` (-32..32).
    #[inline]
    pub fn ls(&self, ib: usize) -> i32 {
        let h = u16::from_le_bytes(self.scales_h);
        let lo = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
        let hi = ((h >> (2 * ib)) & 3) as u8;
        (lo | (hi << 4)) as i32 - 32
    }
    #[inline]
    pub fn v(&self, e: usize) -> i32 {
        let (ib, r) = (e / 32, e % 32);
        let byte = self.qs[16 * ib + r % 16];
        KVALUES_IQ4NL[((byte >> (4 * (r / 16))) & 0xf) as usize] as i32
    }
}

pub(crate) fn dequantize(x: &[BlockIq4Xs], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16(b.d);
        for (e, o) in out.iter_mut().enumerate() {
            let dl = d * b.ls(e / 32) as f32;
            *o = dl * b.v(e) as f32;
        }
    }
}

/// `quantize_row_iq4_xs_ref` (= `quantize_iq4_xs` without an importance matrix).
pub(crate) fn quantize(x: &[f32], y: &mut [BlockIq4Xs]) {
    for (xs, b) in x.chunks_exact(QK_K).zip(y) {
        let mut h = 0u16;
        b.d = quantize_iq4(xs, 7, &mut b.qs, &mut h, &mut b.scales_l);
        b.scales_h = h.to_le_bytes();
    }
}

pub(crate) fn dot(isa: Isa, x: &[BlockIq4Xs], y: &[BlockQ8K]) -> f32 {
    match isa {
        // SAFETY (all arms): `isa` never exceeds the detected level.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Amx => unsafe { simd::dot_avx512vnni(x, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { simd::dot_avx512(x, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { simd::dot_avx2(x, y) },
        _ => dot_scalar(x, y),
    }
}

/// llama.cpp's AVX2 `ggml_vec_dot_iq4_xs_q8_K`, lane for lane.
pub(crate) fn dot_scalar(x: &[BlockIq4Xs], y: &[BlockQ8K]) -> f32 {
    let mut acc = Acc8::default();
    for (a, b) in x.iter().zip(y) {
        let ls: [i32; 8] = std::array::from_fn(|ib| a.ls(ib));
        acc.fma(
            fp16(a.d) * b.d(),
            lanes256(|e| a.v(e), &b.qs, |g| ls[g / 32]),
        );
    }
    acc.hsum()
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::BlockIq4Xs;
    use crate::formats::iq4_nl::lookup32;
    use crate::formats::q8_k::BlockQ8K;
    use crate::x86::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn sub_block(a: &BlockIq4Xs, ib: usize) -> __m256i {
        lookup32(a.qs[16 * ib..16 * ib + 16].try_into().unwrap())
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_avx2(x: &[BlockIq4Xs], y: &[BlockQ8K]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (a, b) in x.iter().zip(y) {
            let mut sumi = _mm256_setzero_si256();
            for ib in 0..8 {
                let p = dot_i8_avx2(sub_block(a, ib), ld256_at(&b.qs, 32 * ib));
                sumi = _mm256_add_epi32(sumi, _mm256_mullo_epi32(p, _mm256_set1_epi32(a.ls(ib))));
            }
            let d = _mm256_mul_ps(h2f8(a.d), _mm256_set1_ps(f32::from_le_bytes(b.d)));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_f32x8(acc)
    }

    macro_rules! dot512 {
        ($name:ident, $feat:literal, $scaled:ident) => {
            #[target_feature(enable = $feat)]
            pub(super) fn $name(x: &[BlockIq4Xs], y: &[BlockQ8K]) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for (a, b) in x.iter().zip(y) {
                    let mut sumi = _mm512_setzero_si512();
                    for p in 0..4 {
                        let q = join(sub_block(a, 2 * p), sub_block(a, 2 * p + 1));
                        let s = halves_epi32(a.ls(2 * p), a.ls(2 * p + 1));
                        sumi = _mm512_add_epi32(sumi, $scaled(q, ld512_at(&b.qs, 64 * p), s));
                    }
                    let d = _mm256_mul_ps(h2f8(a.d), _mm256_set1_ps(f32::from_le_bytes(b.d)));
                    acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(fold16(sumi)), acc);
                }
                hsum_f32x8(acc)
            }
        };
    }
    dot512!(
        dot_avx512,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
        scaled_i8i8_avx512
    );
    dot512!(
        dot_avx512vnni,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        scaled_i8i8_vnni
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil::Rng;
    use crate::common::{cast, cast_mut};
    use crate::formats::q8_k::tests::act;
    use crate::isa::available_isas;

    #[test]
    fn simd_matches_scalar_bit_for_bit() {
        let mut rng = Rng::new(22);
        for nb in [1, 2, 3, 5] {
            let raw = rng.blocks(nb, 136, &[0]);
            let a = act(&rng.floats(nb * QK_K, 1.0));
            let want = dot_scalar(cast(&raw), &a);
            for isa in available_isas() {
                assert_eq!(
                    dot(isa, cast(&raw), &a).to_bits(),
                    want.to_bits(),
                    "{isa} nb={nb}"
                );
            }
        }
    }

    #[test]
    fn round_trip_and_dot() {
        let mut rng = Rng::new(23);
        let (w, x) = (rng.floats(1024, 1.0), rng.floats(1024, 1.0));
        let mut wb = vec![0u8; 4 * 136];
        quantize(&w, cast_mut(&mut wb));
        let mut wd = vec![0f32; 1024];
        dequantize(cast(&wb), &mut wd);
        let err = crate::formats::rmse(&w, &wd);
        assert!(err < 0.082, "rmse {err}");
        let got = dot_scalar(cast(&wb), &act(&x));
        let h = crate::formats::q8_half_step(&x);
        crate::formats::assert_dot_close(got, &wd, &x, |_| h);
    }
}
