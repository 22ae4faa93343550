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
    #[cfg(target_arch = "x86_64")]
    if crate::isa::active_isa() >= Isa::Avx512 {
        // SAFETY: the active level never exceeds what the CPU has.
        return unsafe { simd::quantize_act_avx512(x, y) };
    }
    quantize_act_scalar(x, y)
}

/// The plain twin of `quantize_act` (and its fallback for blocks holding NaN or infinity).
pub(crate) fn quantize_act_scalar(x: &[f32], y: &mut [BlockQ8_0]) {
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
    // Adding and removing 1.5·2^23 rounds to nearest even below 2^22 (what `round_ties_even`
    // gives, without the libm call a baseline x86-64 build makes); larger values saturate
    // whatever their rounding, and NaN stays NaN (0 after the cast).
    const MAGIC: f32 = 12_582_912.0;
    let r = if v.abs() < 4_194_304.0 {
        (v + MAGIC) - MAGIC
    } else {
        v
    };
    r.clamp(-128.0, 127.0) as i8
}

/// Dot of Q8_0 weights with Q8_0 activations.
pub(crate) fn dot(isa: Isa, x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
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

    /// `quantize_act` 32 floats at a time: the same amax, scale and round-half-even quants
    /// (`cvtps_epi32` under the default rounding mode, then signed saturation).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) fn quantize_act_avx512(x: &[f32], y: &mut [BlockQ8_0]) {
        for (xb, b) in x.chunks_exact(super::QK).zip(y.iter_mut()) {
            // SAFETY: `xb` holds 32 floats; `b.qs` 32 writable bytes.
            unsafe {
                let v0 = _mm512_loadu_ps(xb.as_ptr());
                let v1 = _mm512_loadu_ps(xb.as_ptr().add(16));
                // `max(|v|, m)` keeps `m` where |v| is NaN, as `f32::max` does.
                let m = _mm512_max_ps(
                    _mm512_abs_ps(v1),
                    _mm512_max_ps(_mm512_abs_ps(v0), _mm512_setzero_ps()),
                );
                let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v0, v0)
                    | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v1, v1);
                let amax = _mm512_reduce_max_ps(m);
                if nan != 0 || !amax.is_finite() {
                    super::quantize_act_scalar(xb, std::slice::from_mut(b));
                    continue;
                }
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                b.d = crate::common::f32_to_f16(d).to_le_bytes();
                let s = _mm512_set1_ps(id);
                let q0 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, s)));
                let q1 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, s)));
                _mm_storeu_si128(b.qs.as_mut_ptr().cast(), q0);
                _mm_storeu_si128(b.qs.as_mut_ptr().add(16).cast(), q1);
            }
        }
    }

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

#[cfg(test)]
mod round_tests {
    #[test]
    fn simd_quantize_act_matches_scalar() {
        use crate::common::cast_mut;
        let mut x: Vec<f32> = (0..32 * 40)
            .map(|i| ((i as f32) * 0.731).sin() * (1.0 + (i % 7) as f32 * 3.0))
            .collect();
        x[40..72].fill(0.0);
        x[100] = f32::NAN;
        x[200] = f32::INFINITY;
        x[300] = 1e30;
        // Exact halves after scaling: amax 127 makes id 1.
        for (i, v) in x[320..352].iter_mut().enumerate() {
            *v = i as f32 - 15.5;
        }
        x[351] = 127.0;
        let mut want = vec![0u8; 40 * 34];
        let mut got = vec![0u8; 40 * 34];
        super::quantize_act_scalar(&x, cast_mut(&mut want));
        super::quantize_act(&x, cast_mut(&mut got));
        assert_eq!(want, got);
    }

    #[test]
    fn act_round_is_round_half_even() {
        for i in -300_000..300_000 {
            let v = i as f32 * 0.001_25;
            let want = v.round_ties_even().clamp(-128.0, 127.0) as i8;
            assert_eq!(super::act_round(v), want, "{v}");
        }
        for v in [
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            1e9,
            -1e9,
            0.5,
            -0.5,
            1.5,
            2.5,
        ] {
            assert_eq!(
                super::act_round(v),
                v.round_ties_even().clamp(-128.0, 127.0) as i8
            );
        }
    }
}
