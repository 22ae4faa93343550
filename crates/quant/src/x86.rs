//! x86-64 building blocks shared by the per-type kernels.
//!
//! Three feature sets, one per `Isa` level above scalar (attribute strings must be literals, so
//! each function repeats its set):
//! - AVX2:        "avx2,fma,f16c"
//! - AVX-512:     "avx2,fma,f16c,avx512f,avx512bw,avx512vl"
//! - AVX-512 VNNI: the AVX-512 set plus "avx512vnni"
//!
//! The i8 dot helpers return, per i32 lane, the exact sum of four adjacent products. That is exact
//! only while no 16-bit pair sum saturates: true here because activations never hold -128 (our
//! quantizers emit -127..=127) and weight magnitudes stay ≤ 128.

use std::arch::x86_64::*;

/// llama.cpp's `hsum_float_8` (the tree `Acc8::hsum` mirrors).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn hsum_f32x8(x: __m256) -> f32 {
    let mut r = _mm_add_ps(_mm256_extractf128_ps::<1>(x), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// (m0 + m2) + (m1 + m3), the tail llama.cpp uses for its 4-lane min accumulators.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn hsum_f32x4(x: __m128) -> f32 {
    let r = _mm_add_ps(x, _mm_movehl_ps(x, x));
    _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn ld128(a: &[u8; 16]) -> __m128i {
    // SAFETY: the reference covers 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(a.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn ld256(a: &[u8; 32]) -> __m256i {
    // SAFETY: 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn ld256i(a: &[i8; 32]) -> __m256i {
    // SAFETY: 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
}

/// 32 bytes starting at `a[at]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn ld256_at<T: Copy>(a: &[T], at: usize) -> __m256i {
    assert!(size_of::<T>() == 1 && at + 32 <= a.len());
    // SAFETY: bounds checked just above; unaligned load of byte-sized elements.
    unsafe { _mm256_loadu_si256(a.as_ptr().add(at).cast()) }
}

/// 64 bytes starting at `a[at]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn ld512_at<T: Copy>(a: &[T], at: usize) -> __m512i {
    assert!(size_of::<T>() == 1 && at + 64 <= a.len());
    // SAFETY: bounds checked just above; unaligned load of byte-sized elements.
    unsafe { _mm512_loadu_si512(a.as_ptr().add(at).cast()) }
}

/// 16 packed nibbles to 32 bytes in element order: low nibbles first, then high nibbles.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn nibbles32(a: &[u8; 16]) -> __m256i {
    let t = ld128(a);
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16::<4>(t), t),
        _mm256_set1_epi8(0x0f),
    )
}

/// Bit `j` of `bits` to byte `j`: 0xFF where set, 0 elsewhere.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn bytes_from_bits32(bits: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let b = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
    let b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1))
}

/// Two 256-bit halves into one 512-bit register (`lo` in the low half).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn lo256(x: __m512i) -> __m256i {
    _mm512_castsi512_si256(x)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn hi256(x: __m512i) -> __m256i {
    _mm512_extracti64x4_epi64::<1>(x)
}

/// Folds 16 lanes onto 8 (integer, so exact): lane k + lane k+8.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn fold16(x: __m512i) -> __m256i {
    _mm256_add_epi32(lo256(x), hi256(x))
}

// ---- signed × signed i8, four products per i32 lane ----

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn dot_i8_avx2(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

/// `|x|` and `y` carrying the sign of `x`, so an unsigned×signed instruction gives `x·y`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
fn sign_split(x: __m512i, y: __m512i) -> (__m512i, __m512i) {
    let neg = _mm512_movepi8_mask(x);
    (
        _mm512_abs_epi8(x),
        _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y),
    )
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn dot_i8_avx512(x: __m512i, y: __m512i) -> __m512i {
    let (ax, sy) = sign_split(x, y);
    _mm512_madd_epi16(_mm512_maddubs_epi16(ax, sy), _mm512_set1_epi16(1))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(crate) fn dot_i8_vnni(x: __m512i, y: __m512i) -> __m512i {
    let (ax, sy) = sign_split(x, y);
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), ax, sy)
}

/// Low + high 256-bit halves of a float register (AVX-512F only; `extractf32x8` would need DQ).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn fold16_ps(x: __m512) -> __m256 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)));
    _mm256_add_ps(_mm512_castps512_ps256(x), hi)
}

/// A little-endian f16 block field as f32 in every lane (F16C; same value as `common::fp16`).
/// Broadcast from memory on purpose: a scalar `cvtsi32_si128` route gets lowered to a `vpinsrw`
/// into whatever register is free, often the accumulator, chaining each block onto the last FMA.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn h2f8(b: [u8; 2]) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(b)))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn h2f16(b: [u8; 2]) -> __m512 {
    _mm512_cvtph_ps(_mm256_set1_epi16(i16::from_le_bytes(b)))
}

/// A dot over 32-element blocks against Q8_0 on AVX-512: integer work for two blocks per
/// 512-bit step, then one FMA per block, in block order, into the AVX2 kernel's eight lanes.
/// `$quants(&block) -> __m256i` gives a weight block's 32 signed quants in element order.
macro_rules! pairwise_dot {
    ($name:ident, $feat:literal, $dot:ident, $bx:ty, $quants:ident) => {
        #[target_feature(enable = $feat)]
        pub(crate) fn $name(x: &[$bx], y: &[$crate::formats::q8_0::BlockQ8_0]) -> f32 {
            use std::arch::x86_64::*;
            use $crate::x86::*;
            let mut acc = _mm256_setzero_ps();
            let mut xs = x.chunks_exact(2);
            for (a, b) in (&mut xs).zip(y.chunks_exact(2)) {
                let qx = join($quants(&a[0]), $quants(&a[1]));
                let p = $dot(qx, join(ld256i(&b[0].qs), ld256i(&b[1].qs)));
                let d0 = _mm256_mul_ps(h2f8(a[0].d), h2f8(b[0].d));
                let d1 = _mm256_mul_ps(h2f8(a[1].d), h2f8(b[1].d));
                acc = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(lo256(p)), acc);
                acc = _mm256_fmadd_ps(d1, _mm256_cvtepi32_ps(hi256(p)), acc);
            }
            if let ([a], Some(b)) = (xs.remainder(), y.get(x.len().wrapping_sub(1))) {
                let p = dot_i8_avx2($quants(a), ld256i(&b.qs));
                let d = _mm256_mul_ps(h2f8(a.d), h2f8(b.d));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_f32x8(acc)
        }
    };
}
pub(crate) use pairwise_dot;

/// Per i32 lane: (Σ of four u8×i8 products) × `s[lane]`, via `maddubs` and a 16-bit `madd`
/// (each scale duplicated into both 16-bit halves of its lane).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn scaled_u8i8_avx512(ux: __m512i, y: __m512i, s: __m512i) -> __m512i {
    let s16 = _mm512_or_si512(
        _mm512_and_si512(s, _mm512_set1_epi32(0xffff)),
        _mm512_slli_epi32::<16>(s),
    );
    _mm512_madd_epi16(s16, _mm512_maddubs_epi16(ux, y))
}

/// The VNNI twin of `scaled_u8i8_avx512`: `vpdpbusd`, then a 32-bit multiply by the scale.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(crate) fn scaled_u8i8_vnni(ux: __m512i, y: __m512i, s: __m512i) -> __m512i {
    _mm512_mullo_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ux, y), s)
}

/// Scale `lo` in lanes 0..8, `hi` in lanes 8..16.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn halves_epi32(lo: i32, hi: i32) -> __m512i {
    _mm512_mask_blend_epi32(0xff00, _mm512_set1_epi32(lo), _mm512_set1_epi32(hi))
}

/// The K-quant "mins" term of llama.cpp's AVX2 Q4_K kernel: bsums summed in pairs, times the
/// eight 6-bit mins, as four i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn mins_prod_k4(bsums: &[u8; 32], mins: &[u8; 8]) -> __m128i {
    let q8 = ld256(bsums);
    let q8s = _mm_hadd_epi16(
        _mm256_castsi256_si128(q8),
        _mm256_extracti128_si256::<1>(q8),
    );
    let m = _mm_cvtepu8_epi16(_mm_set_epi64x(0, i64::from_le_bytes(*mins)));
    _mm_madd_epi16(m, q8s)
}

/// Signed twin of `scaled_u8i8_avx512` (weights moved to |x| with their sign put on `y`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn scaled_i8i8_avx512(x: __m512i, y: __m512i, s: __m512i) -> __m512i {
    let (ax, sy) = sign_split(x, y);
    scaled_u8i8_avx512(ax, sy, s)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(crate) fn scaled_i8i8_vnni(x: __m512i, y: __m512i, s: __m512i) -> __m512i {
    let (ax, sy) = sign_split(x, y);
    scaled_u8i8_vnni(ax, sy, s)
}
