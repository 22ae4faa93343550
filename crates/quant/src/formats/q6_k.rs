//! Q6_K: super-blocks of 256 six-bit quants (q - 32) in sixteen sub-blocks of 16 with signed
//! 8-bit scales under one f16 `d`. Low nibbles in `ql`, high two bits in `qh`: within each
//! 128-element half, quarter t of element i comes from ql[i + 32·(t%2)] (nibble t/2) and bits
//! 2t..2t+2 of qh[i]. Dot partner Q8_K.

use crate::common::{Acc8, f32_to_f16, fp16, impl_block, lanes256};
use crate::formats::q8_k::BlockQ8K;
use crate::isa::Isa;
use crate::kquant::{GROUP_MAX_EPS, make_qx_quants, nearest_int};
use hearth_gguf::QK_K;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: [u8; 2],
}
impl_block!(BlockQ6K, 210);

impl BlockQ6K {
    /// Element `e` unsigned, 0..64 (the stored value; subtract 32 for the quant).
    #[inline]
    pub fn q(&self, e: usize) -> i32 {
        let (h, t, i) = (e / 128, (e % 128) / 32, e % 32);
        let byte = self.ql[64 * h + 32 * (t % 2) + i];
        let lo = if t < 2 { byte & 0xf } else { byte >> 4 };
        let hi = (self.qh[32 * h + i] >> (2 * t)) & 3;
        (lo | (hi << 4)) as i32
    }
}

pub(crate) fn dequantize(x: &[BlockQ6K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16(b.d);
        for (e, o) in out.iter_mut().enumerate() {
            *o = d * b.scales[e / 16] as f32 * (b.q(e) - 32) as f32;
        }
    }
}

/// `quantize_row_q6_K_ref`: per 16-group scale by `make_qx_quants` (weights x²), scales to
/// signed 8 bits against the largest magnitude, quants re-derived from the rounded scales.
pub(crate) fn quantize(x: &[f32], y: &mut [BlockQ6K]) {
    for (xs, b) in x.chunks_exact(QK_K).zip(y) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..QK_K / 16 {
            let s = make_qx_quants(
                32,
                &xs[16 * ib..16 * ib + 16],
                &mut l[16 * ib..16 * ib + 16],
            );
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *b = BlockQ6K {
                ql: [0; 128],
                qh: [0; 64],
                scales: [0; 16],
                d: [0; 2],
            };
            continue;
        }
        let iscale = -128.0 / max_scale;
        b.d = f32_to_f16(1.0 / iscale).to_le_bytes();
        for (s, &v) in b.scales.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let d = fp16(b.d) * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for i in 16 * j..16 * j + 16 {
                l[i] = (nearest_int(xs[i] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        let l: [u8; QK_K] = l.map(|v| v as u8);
        for h in 0..2 {
            let (lq, lh) = (
                &mut b.ql[64 * h..64 * h + 64],
                &mut b.qh[32 * h..32 * h + 32],
            );
            for i in 0..32 {
                let q = |t: usize| l[128 * h + 32 * t + i];
                lq[i] = (q(0) & 0xf) | ((q(2) & 0xf) << 4);
                lq[i + 32] = (q(1) & 0xf) | ((q(3) & 0xf) << 4);
                lh[i] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
    }
}

pub(crate) fn dot(isa: Isa, x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
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

/// llama.cpp's AVX2 `ggml_vec_dot_q6_K_q8_K`: unsigned quants times scales in eight lanes, the
/// -32 offset taken off per lane as 32·(b[2k]·s[2k] + b[2k+1]·s[2k+1]).
pub(crate) fn dot_scalar(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut acc = Acc8::default();
    for (a, b) in x.iter().zip(y) {
        let d = b.d() * fp16(a.d);
        let sc = |j: usize| a.scales[j] as i32;
        let mut sumi = lanes256(|e| a.q(e), &b.qs, |g| sc(g / 16));
        for (k, s) in sumi.iter_mut().enumerate() {
            *s -= 32 * (b.bsum(2 * k) * sc(2 * k) + b.bsum(2 * k + 1) * sc(2 * k + 1));
        }
        acc.fma(d, sumi);
    }
    acc.hsum()
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::BlockQ6K;
    use crate::formats::q8_k::BlockQ8K;
    use crate::x86::*;
    use std::arch::x86_64::*;

    /// 32·(bsums · scales) pairwise into eight lanes, as llama.cpp subtracts it.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn offset_lanes(a: &BlockQ6K, b: &BlockQ8K) -> __m256i {
        // SAFETY: 16 readable bytes; unaligned load.
        let sc = unsafe { _mm_loadu_si128(a.scales.as_ptr().cast()) };
        let m = _mm256_madd_epi16(ld256(&b.bsums), _mm256_cvtepi8_epi16(sc));
        _mm256_slli_epi32::<5>(m)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_avx2(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
        let (m3, m15) = (_mm256_set1_epi8(3), _mm256_set1_epi8(15));
        let mut acc = _mm256_setzero_ps();
        for (a, b) in x.iter().zip(y) {
            let d = _mm256_mul_ps(_mm256_set1_ps(f32::from_le_bytes(b.d)), h2f8(a.d));
            let mut sumi = _mm256_setzero_si256();
            for h in 0..2 {
                let q1 = ld256_at(&a.ql, 64 * h);
                let q2 = ld256_at(&a.ql, 64 * h + 32);
                let qh = ld256_at(&a.qh, 32 * h);
                let hi = [
                    _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m3)),
                    _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(12))),
                    _mm256_and_si256(qh, _mm256_set1_epi8(48)),
                    _mm256_srli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(-64))),
                ];
                let lo = [
                    _mm256_and_si256(q1, m15),
                    _mm256_and_si256(q2, m15),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q1), m15),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q2), m15),
                ];
                for t in 0..4 {
                    let q = _mm256_or_si256(lo[t], hi[t]);
                    let p = _mm256_maddubs_epi16(q, ld256_at(&b.qs, 128 * h + 32 * t));
                    let s = 8 * h + 2 * t;
                    let scale = _mm256_set_m128i(
                        _mm_set1_epi16(a.scales[s + 1] as i16),
                        _mm_set1_epi16(a.scales[s] as i16),
                    );
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p));
                }
            }
            let sumi = _mm256_sub_epi32(sumi, offset_lanes(a, b));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_f32x8(acc)
    }

    /// Per 128-element half, two 512-bit steps of 64 quants each; lane L of a step covers
    /// sub-block 4·step + L/4 of the half, so its scale comes from a permute of all sixteen.
    macro_rules! dot512 {
        ($name:ident, $feat:literal, $scaled:ident) => {
            #[target_feature(enable = $feat)]
            pub(super) fn $name(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
                let (m3, m15) = (_mm512_set1_epi8(3), _mm512_set1_epi8(15));
                let quarter = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
                let mut acc = _mm256_setzero_ps();
                for (a, b) in x.iter().zip(y) {
                    let d = _mm256_mul_ps(_mm256_set1_ps(f32::from_le_bytes(b.d)), h2f8(a.d));
                    // SAFETY: 16 readable bytes; unaligned load.
                    let sc = unsafe { _mm_loadu_si128(a.scales.as_ptr().cast()) };
                    let scales = _mm512_cvtepi8_epi32(sc);
                    let mut sumi = _mm512_setzero_si512();
                    for h in 0..2 {
                        let ql = ld512_at(&a.ql, 64 * h);
                        let qh = ld256_at(&a.qh, 32 * h);
                        let hi_a = join(qh, _mm256_srli_epi16::<2>(qh));
                        let hi_b = join(_mm256_srli_epi16::<4>(qh), _mm256_srli_epi16::<6>(qh));
                        for (step, (lo, hi)) in [(ql, hi_a), (_mm512_srli_epi16::<4>(ql), hi_b)]
                            .into_iter()
                            .enumerate()
                        {
                            let hi = _mm512_slli_epi16::<4>(_mm512_and_si512(hi, m3));
                            let q = _mm512_or_si512(_mm512_and_si512(lo, m15), hi);
                            let base = _mm512_set1_epi32((8 * h + 4 * step) as i32);
                            let s =
                                _mm512_permutexvar_epi32(_mm512_add_epi32(base, quarter), scales);
                            let q8 = ld512_at(&b.qs, 128 * h + 64 * step);
                            sumi = _mm512_add_epi32(sumi, $scaled(q, q8, s));
                        }
                    }
                    let sumi = _mm256_sub_epi32(fold16(sumi), offset_lanes(a, b));
                    acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
                }
                hsum_f32x8(acc)
            }
        };
    }
    dot512!(
        dot_avx512,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
        scaled_u8i8_avx512
    );
    dot512!(
        dot_avx512vnni,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        scaled_u8i8_vnni
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
        let mut rng = Rng::new(48);
        for nb in [1, 2, 3, 5] {
            let raw = rng.blocks(nb, 210, &[208]);
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
        let mut rng = Rng::new(49);
        let (w, x) = (rng.floats(1024, 1.0), rng.floats(1024, 1.0));
        let mut wb = vec![0u8; 4 * 210];
        quantize(&w, cast_mut(&mut wb));
        let mut wd = vec![0f32; 1024];
        dequantize(cast(&wb), &mut wd);
        let err = crate::formats::rmse(&w, &wd);
        assert!(err < 0.019, "rmse {err}");
        let got = dot_scalar(cast(&wb), &act(&x));
        let h = crate::formats::q8_half_step(&x);
        crate::formats::assert_dot_close(got, &wd, &x, |_| h);
    }
}
