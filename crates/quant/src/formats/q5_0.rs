//! Q5_0: blocks of 32 five-bit quants (q - 16): low nibbles as in Q4_0, the fifth bits in a
//! 32-bit mask (bit e for element e). One f16 scale; dot partner Q8_0.

use crate::common::{Acc8, f32_to_f16, fp16, impl_block, lanes32};
use crate::formats::q8_0::BlockQ8_0;
use crate::isa::Isa;

pub(crate) const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ5_0 {
    pub d: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
impl_block!(BlockQ5_0, 22);

impl BlockQ5_0 {
    #[inline]
    pub fn d(&self) -> f32 {
        fp16(self.d)
    }
    /// Element `e` as a signed quant in -16..16.
    #[inline]
    pub fn q(&self, e: usize) -> i32 {
        let lo = (self.qs[e % 16] >> (4 * (e / 16))) & 0xf;
        let hi = ((u32::from_le_bytes(self.qh) >> e) & 1) as u8;
        (lo | (hi << 4)) as i32 - 16
    }
}

pub(crate) fn dequantize(x: &[BlockQ5_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d();
        for (e, o) in out.iter_mut().enumerate() {
            *o = b.q(e) as f32 * d;
        }
    }
}

/// `quantize_row_q5_0_ref`: d = max/-16, q = min(31, trunc(x/d + 16.5)).
pub(crate) fn quantize(x: &[f32], y: &mut [BlockQ5_0]) {
    for (xb, b) in x.chunks_exact(QK).zip(y) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d).to_le_bytes();
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = ((xb[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((xb[j + 16] * id + 16.5) as i8).min(31) as u8;
            b.qs[j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + 16);
        }
        b.qh = qh.to_le_bytes();
    }
}

pub(crate) fn dot(isa: Isa, x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
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

/// llama.cpp's AVX2 `ggml_vec_dot_q5_0_q8_0`, lane for lane.
pub(crate) fn dot_scalar(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = Acc8::default();
    for (a, b) in x.iter().zip(y) {
        acc.fma(a.d() * b.d(), lanes32(|e| a.q(e) * b.qs[e] as i32));
    }
    acc.hsum()
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::BlockQ5_0;
    use crate::formats::q8_0::BlockQ8_0;
    use crate::x86::*;
    use std::arch::x86_64::*;

    /// Nibbles, with 0xF0 or-ed in where the fifth bit is clear: (q | h<<4) - 16 as i8.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn quants(b: &BlockQ5_0) -> __m256i {
        let hi = bytes_from_bits32(u32::from_le_bytes(b.qh));
        _mm256_or_si256(
            nibbles32(&b.qs),
            _mm256_andnot_si256(hi, _mm256_set1_epi8(0xf0u8 as i8)),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_avx2(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
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
        BlockQ5_0,
        quants
    );
    pairwise_dot!(
        dot_avx512vnni,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        dot_i8_vnni,
        BlockQ5_0,
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
        let mut rng = Rng::new(50);
        for nb in [1, 2, 3, 7, 20, 64] {
            let raw = rng.blocks(nb, 22, &[0]);
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
        let mut rng = Rng::new(51);
        let (w, x) = (rng.floats(1024, 1.0), rng.floats(1024, 1.0));
        let mut wb = vec![0u8; 32 * 22];
        quantize(&w, cast_mut(&mut wb));
        let mut wd = vec![0f32; 1024];
        dequantize(cast(&wb), &mut wd);
        let err = crate::formats::rmse(&w, &wd);
        assert!(err < 0.046, "rmse {err}");
        let got = dot_scalar(cast(&wb), &act(&x));
        let h = crate::formats::q8_half_step(&x);
        crate::formats::assert_dot_close(got, &wd, &x, |_| h);
    }
}
