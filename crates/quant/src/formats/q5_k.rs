//! Q5_K: Q4_K plus a fifth bit per quant: bit 2j (low nibbles) / 2j+1 (high nibbles) of
//! `qh[i]` for element i of 64-group j. x = d·sc·q - dmin·m with q in 0..32. Dot partner Q8_K.

use crate::common::{Acc8, fp16, impl_block, lanes256};
use crate::formats::q4_k::{ScaleMin, quantize_scale_min, scales_mins};
use crate::formats::q8_k::BlockQ8K;
use crate::isa::Isa;
use hearth_gguf::QK_K;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ5K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
impl_block!(BlockQ5K, 176);

impl BlockQ5K {
    #[inline]
    pub fn q(&self, e: usize) -> i32 {
        let (j, hi_half, i) = (e / 64, e % 64 >= 32, e % 32);
        let byte = self.qs[32 * j + i];
        let lo = if hi_half { byte >> 4 } else { byte & 0xf };
        let bit = (self.qh[i] >> (2 * j + hi_half as usize)) & 1;
        (lo + 16 * bit) as i32
    }
}

pub(crate) fn dequantize(x: &[BlockQ5K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (fp16(b.d), fp16(b.dmin));
        let (sc, mn) = scales_mins(&b.scales);
        for (e, o) in out.iter_mut().enumerate() {
            let (dl, ml) = (d * sc[e / 32] as f32, min * mn[e / 32] as f32);
            *o = dl * b.q(e) as f32 - ml;
        }
    }
}

/// `quantize_row_q5_K_ref` (as Q4_K with 31 levels and a finer scale search).
pub(crate) fn quantize(x: &[f32], y: &mut [BlockQ5K]) {
    for (xs, b) in x.chunks_exact(QK_K).zip(y) {
        let ScaleMin { scales, d, dmin, l } = quantize_scale_min(xs, 31, -0.5, 0.1, 15);
        (b.scales, b.d, b.dmin) = (scales, d, dmin);
        b.qh = [0; QK_K / 8];
        for j in 0..QK_K / 64 {
            for i in 0..32 {
                let (mut l1, mut l2) = (l[64 * j + i], l[64 * j + 32 + i]);
                if l1 > 15 {
                    l1 -= 16;
                    b.qh[i] |= 1 << (2 * j);
                }
                if l2 > 15 {
                    l2 -= 16;
                    b.qh[i] |= 2 << (2 * j);
                }
                b.qs[32 * j + i] = l1 | (l2 << 4);
            }
        }
    }
}

pub(crate) fn dot(isa: Isa, x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
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

/// llama.cpp's AVX2 `ggml_vec_dot_q5_K_q8_K`: lanes as Q4_K, but the min term is summed to
/// one integer per super-block and added (fused) into a scalar.
pub(crate) fn dot_scalar(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let mut acc = Acc8::default();
    let mut summs = 0f32;
    for (a, b) in x.iter().zip(y) {
        let d = b.d() * fp16(a.d);
        let dmin = -b.d() * fp16(a.dmin);
        let (sc, mn) = scales_mins(&a.scales);
        summs = dmin.mul_add(mins_sum(&mn, b) as f32, summs);
        acc.fma(d, lanes256(|e| a.q(e), &b.qs, |g| sc[g / 32] as i32));
    }
    acc.hsum() + summs
}

/// Σ_m mins[m]·(bsums[2m] + bsums[2m+1]).
fn mins_sum(mn: &[u8; 8], b: &BlockQ8K) -> i32 {
    (0..8)
        .map(|m| mn[m] as i32 * (b.bsum(2 * m) + b.bsum(2 * m + 1)))
        .sum()
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{BlockQ5K, mins_sum, scales_mins};
    use crate::common::fp16;
    use crate::formats::q8_k::BlockQ8K;
    use crate::x86::*;
    use std::arch::x86_64::*;

    /// Bit `bit` of every byte of `hbits`, moved to 0x10.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn high_bits(hbits: __m256i, bit: usize) -> __m256i {
        let b = _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(bit as i32));
        _mm256_slli_epi16::<4>(_mm256_and_si256(b, _mm256_set1_epi8(1)))
    }

    /// The 64 quants of group `j` as two 256-bit halves (low nibbles, high nibbles).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn quants(a: &BlockQ5K, hbits: __m256i, j: usize) -> (__m256i, __m256i) {
        let m4 = _mm256_set1_epi8(0xf);
        let q = ld256_at(&a.qs, 32 * j);
        let lo = _mm256_add_epi8(_mm256_and_si256(q, m4), high_bits(hbits, 2 * j));
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
        (lo, _mm256_add_epi8(hi, high_bits(hbits, 2 * j + 1)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_avx2(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0f32;
        for (a, b) in x.iter().zip(y) {
            let bd = f32::from_le_bytes(b.d);
            let d = _mm256_mul_ps(_mm256_set1_ps(bd), h2f8(a.d));
            let dmin = -bd * fp16(a.dmin);
            let (sc, mn) = scales_mins(&a.scales);
            summs = dmin.mul_add(mins_sum(&mn, b) as f32, summs);
            let hbits = ld256(&a.qh);
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let (lo, hi) = quants(a, hbits, j);
                let p0 = _mm256_maddubs_epi16(lo, ld256_at(&b.qs, 64 * j));
                let p1 = _mm256_maddubs_epi16(hi, ld256_at(&b.qs, 64 * j + 32));
                let p0 = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * j] as i16), p0);
                let p1 = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * j + 1] as i16), p1);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
            }
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_f32x8(acc) + summs
    }

    macro_rules! dot512 {
        ($name:ident, $feat:literal, $scaled:ident) => {
            #[target_feature(enable = $feat)]
            pub(super) fn $name(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let mut summs = 0f32;
                for (a, b) in x.iter().zip(y) {
                    let bd = f32::from_le_bytes(b.d);
                    let d = _mm256_mul_ps(_mm256_set1_ps(bd), h2f8(a.d));
                    let dmin = -bd * fp16(a.dmin);
                    let (sc, mn) = scales_mins(&a.scales);
                    summs = dmin.mul_add(mins_sum(&mn, b) as f32, summs);
                    let hbits = ld256(&a.qh);
                    let mut sumi = _mm512_setzero_si512();
                    for j in 0..4 {
                        let (lo, hi) = quants(a, hbits, j);
                        let s = halves_epi32(sc[2 * j] as i32, sc[2 * j + 1] as i32);
                        sumi = _mm512_add_epi32(
                            sumi,
                            $scaled(join(lo, hi), ld512_at(&b.qs, 64 * j), s),
                        );
                    }
                    acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(fold16(sumi)), acc);
                }
                hsum_f32x8(acc) + summs
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
        let mut rng = Rng::new(46);
        for nb in [1, 2, 3, 5] {
            let raw = rng.blocks(nb, 176, &[0, 2]);
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
        let mut rng = Rng::new(47);
        let (w, x) = (rng.floats(1024, 1.0), rng.floats(1024, 1.0));
        let mut wb = vec![0u8; 4 * 176];
        quantize(&w, cast_mut(&mut wb));
        let mut wd = vec![0f32; 1024];
        dequantize(cast(&wb), &mut wd);
        let err = crate::formats::rmse(&w, &wd);
        assert!(err < 0.039, "rmse {err}");
        let got = dot_scalar(cast(&wb), &act(&x));
        let h = crate::formats::q8_half_step(&x);
        crate::formats::assert_dot_close(got, &wd, &x, |_| h);
    }
}
