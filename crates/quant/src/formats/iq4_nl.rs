//! IQ4_NL: blocks of 32 four-bit indices into a fixed non-linear table (`KVALUES_IQ4NL`) with one
//! f16 scale; dot partner Q8_0. Nibble layout as Q4_0. The quantizer (shared with IQ4_XS) lives
//! here too.

use crate::common::{Acc8, f32_to_f16, fp16, impl_block, lanes32};
use crate::formats::q8_0::BlockQ8_0;
use crate::isa::Isa;
use crate::kquant::{GROUP_MAX_EPS, KVALUES_IQ4NL, best_index_int8, nearest_int};

pub(crate) const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockIq4Nl {
    pub d: [u8; 2],
    pub qs: [u8; QK / 2],
}
impl_block!(BlockIq4Nl, 18);

impl BlockIq4Nl {
    #[inline]
    pub fn d(&self) -> f32 {
        fp16(self.d)
    }
    /// Element `e` as its table value.
    #[inline]
    pub fn v(&self, e: usize) -> i32 {
        KVALUES_IQ4NL[((self.qs[e % 16] >> (4 * (e / 16))) & 0xf) as usize] as i32
    }
}

pub(crate) fn dequantize(x: &[BlockIq4Nl], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d();
        for (e, o) in out.iter_mut().enumerate() {
            *o = d * b.v(e) as f32;
        }
    }
}

/// What `llama-quantize` writes for IQ4_NL without an importance matrix: `quantize_iq4_nl`
/// (ntry = 7; note `quantize_row_iq4_nl_ref` would use ntry = -1).
pub(crate) fn quantize(x: &[f32], y: &mut [BlockIq4Nl]) {
    for (xb, b) in x.chunks_exact(QK).zip(y) {
        b.d = quantize_iq4(xb, 7, &mut b.qs, &mut 0, &mut []);
    }
}

/// llama.cpp's `quantize_row_iq4_nl_impl` without importance weights, for one super-block of
/// 32 (IQ4_NL) or 256 (IQ4_XS, with 6-bit sub-block scales) elements. Writes the nibbles (and
/// the sub-block scales) and returns the f16 super-block scale.
pub(crate) fn quantize_iq4(
    x: &[f32],
    ntry: i32,
    q4: &mut [u8],
    scales_h: &mut u16,
    scales_l: &mut [u8],
) -> [u8; 2] {
    let values = &KVALUES_IQ4NL;
    let nblocks = x.len() / 32;
    let mut l = [0u8; 256];
    let mut scales = [0f32; 8];
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    // Σ w·q·x and Σ w·q² for the levels chosen at inverse scale `id`, with weights x².
    let sums = |xb: &[f32], id: f32| {
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for &v in xb {
            let q = values[best_index_int8(values, id * v) as usize] as f32;
            let w = v * v;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    for ib in 0..nblocks {
        let xb = &x[32 * ib..32 * ib + 32];
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let v0 = values[0] as f32;
        let d0 = if ntry > 0 { -max / v0 } else { max / v0 };
        let id = 1.0 / d0;
        for (lj, &v) in l[32 * ib..32 * ib + 32].iter_mut().zip(xb) {
            *lj = best_index_int8(values, id * v);
        }
        let (sumqx, sumq2) = sums(xb, id);
        let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -ntry..=ntry {
            let id = (itry + values[0] as i32) as f32 / max;
            let (sumqx, sumq2) = sums(xb, id);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }
    let dh;
    if nblocks > 1 {
        *scales_h = 0;
        let d = -max_scale / 32.0;
        dh = f32_to_f16(d).to_le_bytes();
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nblocks {
            let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * ls as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for j in 32 * ib..32 * ib + 32 {
                l[j] = best_index_int8(values, idl * x[j]);
            }
            let ls = (ls + 32) as u8;
            if ib % 2 == 0 {
                scales_l[ib / 2] = ls & 0xf;
            } else {
                scales_l[ib / 2] |= (ls & 0xf) << 4;
            }
            *scales_h |= ((ls >> 4) as u16) << (2 * (ib % 8));
        }
    } else {
        dh = f32_to_f16(scales[0]).to_le_bytes();
        if ntry > 0 {
            let id = if scales[0] != 0.0 {
                1.0 / scales[0]
            } else {
                0.0
            };
            for (lj, &v) in l.iter_mut().zip(x) {
                *lj = best_index_int8(values, id * v);
            }
        }
    }
    for i in 0..x.len() / 32 {
        for j in 0..16 {
            q4[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
    dh
}

pub(crate) fn dot(isa: Isa, x: &[BlockIq4Nl], y: &[BlockQ8_0]) -> f32 {
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

/// llama.cpp's AVX2 `ggml_vec_dot_iq4_nl_q8_0`: even and odd blocks in two accumulators, an odd
/// last block added in scalar (fused) after the horizontal sum.
pub(crate) fn dot_scalar(x: &[BlockIq4Nl], y: &[BlockQ8_0]) -> f32 {
    let (mut acc1, mut acc2) = (Acc8::default(), Acc8::default());
    for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        acc1.fma(
            b[0].d() * a[0].d(),
            lanes32(|e| a[0].v(e) * b[0].qs[e] as i32),
        );
        acc2.fma(
            b[1].d() * a[1].d(),
            lanes32(|e| a[1].v(e) * b[1].qs[e] as i32),
        );
    }
    let sumf = Acc8(std::array::from_fn(|l| acc1.0[l] + acc2.0[l])).hsum();
    tail(x, y, sumf)
}

fn tail(x: &[BlockIq4Nl], y: &[BlockQ8_0], sumf: f32) -> f32 {
    if x.len().is_multiple_of(2) {
        return sumf;
    }
    let (a, b) = (&x[x.len() - 1], &y[x.len() - 1]);
    let s: i32 = (0..QK).map(|e| a.v(e) * b.qs[e] as i32).sum();
    (b.d() * a.d()).mul_add(s as f32, sumf)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{BlockIq4Nl, tail};
    use crate::formats::q8_0::BlockQ8_0;
    use crate::kquant::KVALUES_IQ4NL;
    use crate::x86::*;
    use std::arch::x86_64::*;

    /// Table lookup of 16 packed nibbles: 32 signed values in element order.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn lookup32(qs: &[u8; 16]) -> __m256i {
        // SAFETY: the table has 16 bytes; unaligned load.
        let lut = unsafe { _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()) };
        let (q, m4) = (ld128(qs), _mm_set1_epi8(0xf));
        let lo = _mm_shuffle_epi8(lut, _mm_and_si128(q, m4));
        let hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16::<4>(q), m4));
        _mm256_set_m128i(hi, lo)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_avx2(x: &[BlockIq4Nl], y: &[BlockQ8_0]) -> f32 {
        let (mut acc1, mut acc2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
            let p1 = dot_i8_avx2(lookup32(&a[0].qs), ld256i(&b[0].qs));
            let p2 = dot_i8_avx2(lookup32(&a[1].qs), ld256i(&b[1].qs));
            let d1 = _mm256_mul_ps(h2f8(b[0].d), h2f8(a[0].d));
            let d2 = _mm256_mul_ps(h2f8(b[1].d), h2f8(a[1].d));
            acc1 = _mm256_fmadd_ps(d1, _mm256_cvtepi32_ps(p1), acc1);
            acc2 = _mm256_fmadd_ps(d2, _mm256_cvtepi32_ps(p2), acc2);
        }
        tail(x, y, hsum_f32x8(_mm256_add_ps(acc1, acc2)))
    }

    /// Both accumulators live in one 512-bit register: even blocks low, odd blocks high.
    macro_rules! dot512 {
        ($name:ident, $feat:literal, $dot:ident) => {
            #[target_feature(enable = $feat)]
            pub(super) fn $name(x: &[BlockIq4Nl], y: &[BlockQ8_0]) -> f32 {
                let mut acc = _mm512_setzero_ps();
                for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
                    let qx = join(lookup32(&a[0].qs), lookup32(&a[1].qs));
                    let p = $dot(qx, join(ld256i(&b[0].qs), ld256i(&b[1].qs)));
                    let d0 = _mm512_mul_ps(h2f16(b[0].d), h2f16(a[0].d));
                    let d1 = _mm512_mul_ps(h2f16(b[1].d), h2f16(a[1].d));
                    let d = _mm512_mask_blend_ps(0xff00, d0, d1);
                    acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc);
                }
                tail(x, y, hsum_f32x8(fold16_ps(acc)))
            }
        };
    }
    dot512!(
        dot_avx512,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
        dot_i8_avx512
    );
    dot512!(
        dot_avx512vnni,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        dot_i8_vnni
    );
}

#[cfg(target_arch = "x86_64")]
pub(crate) use simd::lookup32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil::Rng;
    use crate::common::{cast, cast_mut};
    use crate::formats::q8_0::tests::act;
    use crate::isa::available_isas;

    #[test]
    fn simd_matches_scalar_bit_for_bit() {
        let mut rng = Rng::new(20);
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
        let mut rng = Rng::new(21);
        let (w, x) = (rng.floats(1024, 1.0), rng.floats(1024, 1.0));
        let mut wb = vec![0u8; 32 * 18];
        quantize(&w, cast_mut(&mut wb));
        let mut wd = vec![0f32; 1024];
        dequantize(cast(&wb), &mut wd);
        let err = crate::formats::rmse(&w, &wd);
        assert!(err < 0.08, "rmse {err}");
        let got = dot_scalar(cast(&wb), &act(&x));
        let h = crate::formats::q8_half_step(&x);
        crate::formats::assert_dot_close(got, &wd, &x, |_| h);
    }
}
