//! Q4_0: blocks of 32 four-bit quants (q - 8) with one f16 scale; dot partner Q8_0.
//! Nibble j of byte i: low nibbles hold elements 0..16, high nibbles 16..32.

use crate::common::{Acc8, f32_to_f16, fp16, impl_block, lanes32};
use crate::formats::q8_0::BlockQ8_0;
use crate::isa::Isa;

pub(crate) const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; QK / 2],
}
impl_block!(BlockQ4_0, 18);

impl BlockQ4_0 {
    #[inline]
    pub fn d(&self) -> f32 {
        fp16(self.d)
    }
    /// Element `e` as a signed quant in -8..8.
    #[inline]
    pub fn q(&self, e: usize) -> i32 {
        ((self.qs[e % 16] >> (4 * (e / 16))) & 0xf) as i32 - 8
    }
}

pub(crate) fn dequantize(x: &[BlockQ4_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d();
        for (e, o) in out.iter_mut().enumerate() {
            *o = b.q(e) as f32 * d;
        }
    }
}

/// `quantize_row_q4_0_ref`: d = max/-8 for the signed largest value, q = min(15, trunc(x/d + 8.5)).
pub(crate) fn quantize(x: &[f32], y: &mut [BlockQ4_0]) {
    for (xb, b) in x.chunks_exact(QK).zip(y) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d).to_le_bytes();
        for j in 0..QK / 2 {
            let q0 = ((xb[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((xb[j + 16] * id + 8.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

pub(crate) fn dot(isa: Isa, x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
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

/// llama.cpp's AVX2 `ggml_vec_dot_q4_0_q8_0`, lane for lane.
pub(crate) fn dot_scalar(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = Acc8::default();
    for (a, b) in x.iter().zip(y) {
        acc.fma(a.d() * b.d(), lanes32(|e| a.q(e) * b.qs[e] as i32));
    }
    acc.hsum()
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::BlockQ4_0;
    use crate::formats::q8_0::BlockQ8_0;
    use crate::x86::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn quants(b: &BlockQ4_0) -> __m256i {
        _mm256_sub_epi8(nibbles32(&b.qs), _mm256_set1_epi8(8))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_avx2(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (a, b) in x.iter().zip(y) {
            let p = dot_i8_avx2(quants(a), ld256i(&b.qs));
            let d = _mm256_mul_ps(h2f8(a.d), h2f8(b.d));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
        }
        hsum_f32x8(acc)
    }

    pairwise_dot!(
        dot_avx512,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
        dot_i8_avx512,
        BlockQ4_0,
        quants
    );
    pairwise_dot!(
        dot_avx512vnni,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        dot_i8_vnni,
        BlockQ4_0,
        quants
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil::Rng;
    use crate::common::{cast, cast_mut};
    use crate::formats::q8_0::tests::act;
    use crate::isa::available_isas;

    #[test]
    fn simd_matches_scalar_bit_for_bit() {
        let mut rng = Rng::new(40);
        for nb in [1, 2, 3, 7, 20, 64] {
            let raw = rng.blocks(nb, 18, &[0]);
            let a = act(&rng.floats(nb * QK, 1.0));
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
        let mut rng = Rng::new(41);
        let (w, x) = (rng.floats(1024, 1.0), rng.floats(1024, 1.0));
        let mut wb = vec![0u8; 32 * 18];
        quantize(&w, cast_mut(&mut wb));
        let mut wd = vec![0f32; 1024];
        dequantize(cast(&wb), &mut wd);
        let err = crate::formats::rmse(&w, &wd);
        assert!(err < 0.087, "rmse {err}");
        let got = dot_scalar(cast(&wb), &act(&x));
        let h = crate::formats::q8_half_step(&x);
        crate::formats::assert_dot_close(got, &wd, &x, |_| h);
    }
}
