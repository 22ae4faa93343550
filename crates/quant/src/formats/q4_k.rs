//! Q4_K: super-blocks of 256 four-bit quants in eight sub-blocks of 32, each with a 6-bit scale
//! and 6-bit min (packed in 12 bytes) under f16 `d` and `dmin`: x = d·sc·q - dmin·m.
//! Byte i of 32-byte group j holds element 64j+i (low nibble) and 64j+32+i (high nibble).
//! Dot partner Q8_K.

use crate::common::{Acc8, f32_to_f16, fp16, impl_block, lanes256};
use crate::formats::q8_k::BlockQ8K;
use crate::isa::Isa;
use crate::kquant::{make_qkx2_quants, nearest_int, pack_scale_min_k4, scale_min_k4};
use hearth_gguf::QK_K;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ4K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}
impl_block!(BlockQ4K, 144);

impl BlockQ4K {
    #[inline]
    pub fn q(&self, e: usize) -> i32 {
        let byte = self.qs[32 * (e / 64) + e % 32];
        (if e % 64 < 32 { byte & 0xf } else { byte >> 4 }) as i32
    }
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K super-block, unpacked with
/// llama.cpp's word-wide masks (same values as `scale_min_k4`, far fewer operations).
#[inline]
pub(crate) fn scales_mins(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes(packed[4 * i..4 * i + 4].try_into().unwrap());
    let (w0, w1, w2) = (w(0), w(1), w(2));
    let sc_hi = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let mn_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    let join = |a: u32, b: u32| (a as u64 | (b as u64) << 32).to_le_bytes();
    (join(w0 & LOW6, sc_hi), join(w1 & LOW6, mn_hi))
}

pub(crate) fn dequantize(x: &[BlockQ4K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (fp16(b.d), fp16(b.dmin));
        let (sc, mn) = scales_mins(&b.scales);
        for (e, o) in out.iter_mut().enumerate() {
            let (dl, ml) = (d * sc[e / 32] as f32, min * mn[e / 32] as f32);
            *o = dl * b.q(e) as f32 - ml;
        }
    }
}

/// `quantize_row_q4_K_ref`: per sub-block (scale, min) by `make_qkx2_quants` with weights
/// `rms + |x|`, both quantized to 6 bits against the largest, then quants re-derived from them.
pub(crate) fn quantize(x: &[f32], y: &mut [BlockQ4K]) {
    for (xs, b) in x.chunks_exact(QK_K).zip(y) {
        let ScaleMin { scales, d, dmin, l } = quantize_scale_min(xs, 15, -1.0, 0.1, 20);
        (b.scales, b.d, b.dmin) = (scales, d, dmin);
        for j in 0..QK_K / 64 {
            for i in 0..32 {
                b.qs[32 * j + i] = l[64 * j + i] | (l[64 * j + 32 + i] << 4);
            }
        }
    }
}

/// The shared half of the Q4_K and Q5_K reference quantizers.
pub(crate) struct ScaleMin {
    pub scales: [u8; 12],
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    /// Quants 0..=nmax per element.
    pub l: [u8; QK_K],
}

pub(crate) fn quantize_scale_min(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> ScaleMin {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..QK_K / 32 {
        let xb = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xb.iter().fold(0.0, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|i| av_x + xb[i].abs());
        let lb = &mut l[32 * j..32 * j + 32];
        (scales[j], mins[j]) = make_qkx2_quants(
            nmax, xb, &weights, lb, &mut laux, rmin, rdelta, nstep, false,
        );
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let ls: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = f32_to_f16(max_scale / 63.0).to_le_bytes();
    let dmin = f32_to_f16(max_min / 63.0).to_le_bytes();
    for j in 0..QK_K / 32 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dl = fp16(d) * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = fp16(dmin) * m as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / dl).clamp(0, nmax) as u8;
        }
    }
    ScaleMin {
        scales: packed,
        d,
        dmin,
        l,
    }
}

pub(crate) fn dot(isa: Isa, x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
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

/// The four-lane min accumulator of llama.cpp's AVX2 Q4_K kernel: lane k gets
/// dmin·(m[2k]·(b[4k]+b[4k+1]) + m[2k+1]·(b[4k+2]+b[4k+3])), fused.
pub(crate) fn mins_fma(acc_m: &mut [f32; 4], dmin: f32, mn: &[u8; 8], b: &BlockQ8K) {
    let q8s: [i32; 8] = std::array::from_fn(|m| b.bsum(2 * m) + b.bsum(2 * m + 1));
    let prod: [i32; 4] = std::array::from_fn(|k| {
        mn[2 * k] as i32 * q8s[2 * k] + mn[2 * k + 1] as i32 * q8s[2 * k + 1]
    });
    for (a, p) in acc_m.iter_mut().zip(prod) {
        *a = dmin.mul_add(p as f32, *a);
    }
}

/// llama.cpp's AVX2 `ggml_vec_dot_q4_K_q8_K`, lane for lane.
pub(crate) fn dot_scalar(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut acc = Acc8::default();
    let mut acc_m = [0f32; 4];
    for (a, b) in x.iter().zip(y) {
        let d = b.d() * fp16(a.d);
        let dmin = -b.d() * fp16(a.dmin);
        let (sc, mn) = scales_mins(&a.scales);
        mins_fma(&mut acc_m, dmin, &mn, b);
        acc.fma(d, lanes256(|e| a.q(e), &b.qs, |g| sc[g / 32] as i32));
    }
    acc.hsum() + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{BlockQ4K, scales_mins};
    use crate::formats::q8_k::BlockQ8K;
    use crate::x86::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_avx2(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
        let m4 = _mm256_set1_epi8(0xf);
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (a, b) in x.iter().zip(y) {
            let bd = f32::from_le_bytes(b.d);
            let d = _mm256_mul_ps(_mm256_set1_ps(bd), h2f8(a.d));
            let dmin = _mm_mul_ps(_mm_set1_ps(-bd), _mm256_castps256_ps128(h2f8(a.dmin)));
            let (sc, mn) = scales_mins(&a.scales);
            let prod = mins_prod_k4(&b.bsums, &mn);
            acc_m = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(prod), acc_m);
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q4 = ld256_at(&a.qs, 32 * j);
                let lo = _mm256_and_si256(q4, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
                let pl = _mm256_maddubs_epi16(lo, ld256_at(&b.qs, 64 * j));
                let ph = _mm256_maddubs_epi16(hi, ld256_at(&b.qs, 64 * j + 32));
                let pl = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * j] as i16), pl);
                let ph = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * j + 1] as i16), ph);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
            }
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_f32x8(acc) + hsum_f32x4(acc_m)
    }

    /// One 512-bit step per 64 elements (both nibbles of a 32-byte group), folded to the AVX2
    /// kernel's eight lanes before the per-super-block FMA.
    macro_rules! dot512 {
        ($name:ident, $feat:literal, $scaled:ident) => {
            #[target_feature(enable = $feat)]
            pub(super) fn $name(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
                let m4 = _mm256_set1_epi8(0xf);
                let mut acc = _mm256_setzero_ps();
                let mut acc_m = _mm_setzero_ps();
                for (a, b) in x.iter().zip(y) {
                    let bd = f32::from_le_bytes(b.d);
                    let d = _mm256_mul_ps(_mm256_set1_ps(bd), h2f8(a.d));
                    let dmin = _mm_mul_ps(_mm_set1_ps(-bd), _mm256_castps256_ps128(h2f8(a.dmin)));
                    let (sc, mn) = scales_mins(&a.scales);
                    let prod = mins_prod_k4(&b.bsums, &mn);
                    acc_m = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(prod), acc_m);
                    let mut sumi = _mm512_setzero_si512();
                    for j in 0..4 {
                        let q4 = ld256_at(&a.qs, 32 * j);
                        let lo = _mm256_and_si256(q4, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
                        let s = halves_epi32(sc[2 * j] as i32, sc[2 * j + 1] as i32);
                        let p = $scaled(join(lo, hi), ld512_at(&b.qs, 64 * j), s);
                        sumi = _mm512_add_epi32(sumi, p);
                    }
                    acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(fold16(sumi)), acc);
                }
                hsum_f32x8(acc) + hsum_f32x4(acc_m)
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
        let mut rng = Rng::new(44);
        for nb in [1, 2, 3, 5] {
            let raw = rng.blocks(nb, 144, &[0, 2]);
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
    fn word_unpack_equals_scale_min_k4() {
        let mut rng = Rng::new(46);
        for _ in 0..200 {
            let packed: [u8; 12] = rng.bytes(12).try_into().unwrap();
            let (sc, mn) = scales_mins(&packed);
            for j in 0..8 {
                assert_eq!((sc[j], mn[j]), scale_min_k4(j, &packed));
            }
        }
    }

    #[test]
    fn round_trip_and_dot() {
        let mut rng = Rng::new(45);
        let (w, x) = (rng.floats(1024, 1.0), rng.floats(1024, 1.0));
        let mut wb = vec![0u8; 4 * 144];
        quantize(&w, cast_mut(&mut wb));
        let mut wd = vec![0f32; 1024];
        dequantize(cast(&wb), &mut wd);
        let err = crate::formats::rmse(&w, &wd);
        assert!(err < 0.077, "rmse {err}");
        let got = dot_scalar(cast(&wb), &act(&x));
        let h = crate::formats::q8_half_step(&x);
        crate::formats::assert_dot_close(got, &wd, &x, |_| h);
    }
}
