//! Q8_0: blocks of 32 signed 8-bit quants with one f16 scale. A weight type, and the activation
//! partner of Q4_0, Q5_0, Q8_0 and IQ4_NL.

use crate::common::{Acc8, f32_to_f16, fp16, impl_block, lanes32};
use crate::isa::Isa;

pub(crate) const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [i8; QK],
}
impl_block!(BlockQ8_0, 34);

impl BlockQ8_0 {
    #[inline]
    pub fn d(&self) -> f32 {
        fp16(self.d)
    }
}

pub(crate) fn dequantize(x: &[BlockQ8_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d();
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// `quantize_row_q8_0_ref` (weights): d = amax/127, q = round-half-away(x · 1/d).
pub(crate) fn quantize(x: &[f32], y: &mut [BlockQ8_0]) {
    for (xb, b) in x.chunks_exact(QK).zip(y) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d).to_le_bytes();
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
    }
}

/// llama.cpp's x86 `quantize_row_q8_0` (activations): id = 127/amax, round half to even.
/// The reference quantizer above differs in both, which can move a quant by one.
pub(crate) fn quantize_act(x: &[f32], y: &mut [BlockQ8_0]) {
    for (xb, b) in x.chunks_exact(QK).zip(y) {
        let (d, id) = act_scale(xb);
        b.d = f32_to_f16(d).to_le_bytes();
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = act_round(v * id);
        }
    }
}

/// (d, 1/d) of an activation block as the x86 quantizer computes them.
#[inline]
pub(crate) fn act_scale(xb: &[f32]) -> (f32, f32) {
    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
    (amax / 127.0, if amax != 0.0 { 127.0 / amax } else { 0.0 })
}

/// Round half to even, then saturate to i8 (`cvtps_epi32` + `packs`).
#[inline]
pub(crate) fn act_round(v: f32) -> i8 {
    v.round_ties_even().clamp(-128.0, 127.0) as i8
}

/// Dot of Q8_0 weights with Q8_0 activations.
pub(crate) fn dot(isa: Isa, x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    match isa {
        // SAFETY (all arms): `isa` never exceeds the detected level.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { simd::dot_avx512vnni(x, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { simd::dot_avx512(x, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { simd::dot_avx2(x, y) },
        _ => dot_scalar(x, y),
    }
}

pub(crate) fn dot_scalar(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = Acc8::default();
    for (a, b) in x.iter().zip(y) {
        acc.fma(a.d() * b.d(), lanes32(|e| a.qs[e] as i32 * b.qs[e] as i32));
    }
    acc.hsum()
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::BlockQ8_0;
    use crate::x86::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn quants(b: &BlockQ8_0) -> __m256i {
        ld256i(&b.qs)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_avx2(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
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
        BlockQ8_0,
        quants
    );
    pairwise_dot!(
        dot_avx512vnni,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        dot_i8_vnni,
        BlockQ8_0,
        quants
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::common::testutil::Rng;
    use crate::common::{cast, cast_mut};
    use crate::isa::available_isas;

    /// Activations for dot tests, produced the way the forward pass will produce them.
    pub fn act(x: &[f32]) -> Vec<BlockQ8_0> {
        let mut bytes = vec![0u8; x.len() / QK * 34];
        quantize_act(x, cast_mut(&mut bytes));
        cast::<BlockQ8_0>(&bytes).to_vec()
    }

    #[test]
    fn simd_matches_scalar_bit_for_bit() {
        let mut rng = Rng::new(8);
        for nb in [1, 2, 3, 7, 20, 64] {
            let w = act(&rng.floats(nb * QK, 1.0));
            let raw = rng.blocks(nb, 34, &[0]); // weights over the full i8 range, -128 included
            let wr: &[BlockQ8_0] = cast(&raw);
            let a = act(&rng.floats(nb * QK, 1.0));
            for x in [&w[..], wr] {
                let want = dot_scalar(x, &a);
                for isa in available_isas() {
                    assert_eq!(dot(isa, x, &a).to_bits(), want.to_bits(), "{isa} nb={nb}");
                }
            }
        }
    }

    #[test]
    fn reference_quantizer_rounds_half_away_from_zero() {
        // With amax = 127 the scale is 1, so 63.5 and -62.5 sit on halves:
        // the reference rounds away from zero, the activation path to even.
        let mut x = [0f32; QK];
        x[0] = 127.0;
        x[1] = 63.5;
        x[2] = -62.5;
        let mut wb = vec![0u8; 34];
        quantize(&x, cast_mut(&mut wb));
        let w: &[BlockQ8_0] = cast(&wb);
        assert_eq!((w[0].qs[0], w[0].qs[1], w[0].qs[2]), (127, 64, -63));
        let a = act(&x);
        assert_eq!((a[0].qs[0], a[0].qs[1], a[0].qs[2]), (127, 64, -62));
    }

    #[test]
    fn dot_tracks_the_float_dot() {
        let mut rng = Rng::new(9);
        let (w, x) = (rng.floats(640, 1.0), rng.floats(640, 1.0));
        let mut wb = vec![0u8; 20 * 34];
        quantize(&w, cast_mut(&mut wb));
        let mut wd = vec![0f32; 640];
        dequantize(cast(&wb), &mut wd);
        let got = dot_scalar(cast(&wb), &act(&x));
        let h = crate::formats::q8_half_step(&x);
        crate::formats::assert_dot_close(got, &wd, &x, |_| h);
    }
}
