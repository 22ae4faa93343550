//! Batched products for Q4_K and Q6_K weights in the float orders of llama.cpp's batched x86
//! kernels (the engine's `gemm_order` explains which kernel uses which order and when):
//!
//! - [`KOrder::Q4KRepacked`]: `ggml_gemv/gemm_q4_K_8x8_q8_K`. Per super-block the integer sums
//!   `Σ sc·Σ q·y` and the min terms are exact; the GEMV adds them with one FMA per super-block,
//!   the GEMM (activation rows in whole groups of 4) with one per 64-element chunk.
//! - [`KOrder::Q6KTiled`]: the tiled VNNI microkernel: `acc += (f32(isum) · d_w) · d_a` per
//!   super-block.
//!
//! Integer sums are exact however they are computed, so [`gemm_k`] (weights unpacked once per
//! row and reused for a panel of tokens, `maddubs`/`madd` on AVX-512BW) matches the scalar
//! twins [`dot_q4_k_repacked`] / [`dot_q6_k_tiled`] bit for bit.

use crate::common::f16_to_f32;
use crate::isa::{Isa, active_isa};
use crate::{GgmlType, QK_K, QuantError, row_bytes};

/// Which llama.cpp kernel's order a K-quant batched product follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KOrder {
    Q4KRepacked,
    Q6KTiled,
}

impl KOrder {
    pub fn weight_type(self) -> GgmlType {
        match self {
            KOrder::Q4KRepacked => GgmlType::Q4K,
            KOrder::Q6KTiled => GgmlType::Q6K,
        }
    }
}

const Q4_K_BYTES: usize = 144;
const Q6_K_BYTES: usize = 210;
const Q8_K_BYTES: usize = 292;

#[inline(always)]
fn h(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

#[inline(always)]
fn f(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline(always)]
fn bsum(ab: &[u8], i: usize) -> i32 {
    i16::from_le_bytes([ab[260 + 2 * i], ab[261 + 2 * i]]) as i32
}

/// `get_scale_min_k4`: the 6-bit scale and min of sub-block `j`.
#[inline(always)]
fn scale_min(j: usize, q: &[u8]) -> (i32, i32) {
    if j < 4 {
        ((q[j] & 63) as i32, (q[j + 4] & 63) as i32)
    } else {
        (
            ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4)) as i32,
            ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as i32,
        )
    }
}

/// The two min terms of chunk `c` (sub-blocks 2c, 2c+1) of a Q4_K super-block.
#[inline(always)]
fn q4_k_pair_min(scales: &[u8], ab: &[u8], c: usize) -> i32 {
    let (_, m_lo) = scale_min(2 * c, scales);
    let (_, m_hi) = scale_min(2 * c + 1, scales);
    m_lo * (bsum(ab, 4 * c) + bsum(ab, 4 * c + 1))
        + m_hi * (bsum(ab, 4 * c + 2) + bsum(ab, 4 * c + 3))
}

/// The float steps of the repacked Q4_K kernels for one super-block, given its four chunk sums
/// `pair[c] = sc_lo·Σ lo·y + sc_hi·Σ hi·y`.
#[inline(always)]
fn q4_k_fold(wb: &[u8], ab: &[u8], pair: [i32; 4], gemm: bool, acc: &mut f32, acc_min: &mut f32) {
    let (d, dmin) = (h(wb, 0), h(wb, 2));
    let da = f(ab, 0);
    let scales = &wb[4..16];
    if gemm {
        for (c, &p) in pair.iter().enumerate() {
            *acc = (p as f32).mul_add(d * da, *acc);
            *acc_min = (q4_k_pair_min(scales, ab, c) as f32).mul_add(dmin * da, *acc_min);
        }
    } else {
        let isum: i32 = pair.iter().sum();
        let imin: i32 = (0..4).map(|c| q4_k_pair_min(scales, ab, c)).sum();
        *acc = (isum as f32).mul_add(d * da, *acc);
        *acc_min = (imin as f32).mul_add(dmin * da, *acc_min);
    }
}

/// `ggml_gemv_q4_K_8x8_q8_K` (or, with `gemm`, `ggml_gemm_q4_K_8x8_q8_K`) for one weight row
/// `w` (Q4_K) and one activation `a` (Q8_K).
///
/// Always inlined, so that a caller compiled with FMA gets its `mul_add`s as instructions.
#[inline(always)]
pub fn dot_q4_k_repacked(w: &[u8], a: &[u8], gemm: bool) -> f32 {
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (wb, ab) in w.chunks_exact(Q4_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let scales = &wb[4..16];
        let qs = &wb[16..144];
        let q8 = &ab[4..260];
        let mut pair = [0i32; 4];
        for (c, p) in pair.iter_mut().enumerate() {
            let q = &qs[32 * c..32 * c + 32];
            let (q8_lo, q8_hi) = (&q8[64 * c..64 * c + 32], &q8[64 * c + 32..64 * c + 64]);
            let (sc_lo, _) = scale_min(2 * c, scales);
            let (sc_hi, _) = scale_min(2 * c + 1, scales);
            let (mut lo, mut hi) = (0i32, 0i32);
            for ((&qv, &a), &b) in q.iter().zip(q8_lo).zip(q8_hi) {
                lo += (qv & 0x0f) as i32 * a as i8 as i32;
                hi += (qv >> 4) as i32 * b as i8 as i32;
            }
            *p = sc_lo * lo + sc_hi * hi;
        }
        q4_k_fold(wb, ab, pair, gemm, &mut acc, &mut acc_min);
    }
    acc - acc_min
}

/// The 256 stored (unsigned, 0..64) six-bit values of a Q6_K super-block in element order.
#[inline(always)]
fn q6_k_unpack(wb: &[u8], q: &mut [u8]) {
    let (ql, qh) = (&wb[..128], &wb[128..192]);
    for half in 0..2 {
        let (ql, qh) = (
            &ql[64 * half..64 * half + 64],
            &qh[32 * half..32 * half + 32],
        );
        let out = &mut q[128 * half..128 * half + 128];
        for l in 0..32 {
            out[l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
            out[l + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
            out[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            out[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
}

/// The tiled VNNI microkernel for Q6_K, one weight row with one Q8_K activation: per block,
/// `isum = Σ_s scale_s · Σ (q6 − 32)·q8` exactly, then `acc += (f32(isum) · d_w) · d_a`.
///
/// Always inlined, as [`dot_q4_k_repacked`].
#[inline(always)]
pub fn dot_q6_k_tiled(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f32;
    let mut q = [0u8; QK_K];
    for (wb, ab) in w.chunks_exact(Q6_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        q6_k_unpack(wb, &mut q);
        let sc = &wb[192..208];
        let q8 = &ab[4..260];
        let mut isum = 0i32;
        for ((qs, q8s), &scale) in q.chunks_exact(16).zip(q8.chunks_exact(16)).zip(sc) {
            let mut sub = 0i32;
            for (&a, &b) in qs.iter().zip(q8s) {
                sub += (a as i32 - 32) * b as i8 as i32;
            }
            isum += sub * scale as i8 as i32;
        }
        acc = (isum as f32 * h(wb, 208)).mul_add(f(ab, 0), acc);
    }
    acc
}

/// Q8_K activation rows (from `quantize_act` for Q4_K/Q6_K weights) with, for the tokens taken
/// 16 at a time, their scales and pairwise bsums laid out token-minor.
#[derive(Clone, Debug)]
pub struct KActs {
    data: Vec<u8>,
    n_tok: usize,
    /// Tokens with token-minor data: `n_tok` rounded down to 16.
    n_all: usize,
    /// `d_a` of super-block `s` of token `t` at `s * n_all + t`.
    das: Vec<f32>,
    /// `bsum(2k) + bsum(2k + 1)` of super-block `s` at `(s * 8 + k) * n_all + t`.
    bss: Vec<i32>,
}

impl KActs {
    /// From rows quantized to Q8_K, `n` elements each, back to back.
    pub fn from_quantized(n: usize, data: Vec<u8>) -> Result<KActs, QuantError> {
        let ab = row_bytes(GgmlType::Q8K, n)?;
        let n_tok = data.len().checked_div(ab).unwrap_or(0);
        if n_tok * ab != data.len() {
            return Err(QuantError::Length {
                ty: GgmlType::Q8K,
                what: "the activation rows",
                unit: "bytes",
                expected: n_tok * ab,
                got: data.len(),
            });
        }
        let nsb = n / QK_K;
        let n_all = n_tok / 16 * 16;
        let mut das = vec![0f32; nsb * n_all];
        let mut bss = vec![0i32; nsb * 8 * n_all];
        for t in 0..n_all {
            for s in 0..nsb {
                let abk = &data[t * ab + s * Q8_K_BYTES..t * ab + (s + 1) * Q8_K_BYTES];
                das[s * n_all + t] = f(abk, 0);
                for k in 0..8 {
                    bss[(s * 8 + k) * n_all + t] = bsum(abk, 2 * k) + bsum(abk, 2 * k + 1);
                }
            }
        }
        Ok(KActs {
            data,
            n_tok,
            n_all,
            das,
            bss,
        })
    }

    /// The Q8_K rows, one per token.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn n_tok(&self) -> usize {
        self.n_tok
    }
}

/// `out[r * n_tok + t] = w[r] · acts[t]` in `order` for the `out.len() / n_tok` rows in
/// `weights` (each `n` elements); tokens `t < n_gemm` take the GEMM variant of the Q4_K order.
/// Single-threaded.
pub fn gemm_k(
    order: KOrder,
    weights: &[u8],
    n: usize,
    acts: &KActs,
    n_gemm: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    gemm_k_isa(active_isa(), order, weights, n, acts, n_gemm, out)
}

/// [`gemm_k`] at a given ISA level (capped by what the CPU has).
pub fn gemm_k_isa(
    isa: Isa,
    order: KOrder,
    weights: &[u8],
    n: usize,
    acts: &KActs,
    n_gemm: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let ty = order.weight_type();
    let rb = row_bytes(ty, n)?;
    let ab = row_bytes(GgmlType::Q8K, n)?;
    let n_tok = acts.n_tok;
    let rows = out.len().checked_div(n_tok).unwrap_or(0);
    if rows * n_tok != out.len() || weights.len() != rb * rows || acts.data.len() != ab * n_tok {
        return Err(QuantError::Length {
            ty,
            what: "the weight matrix or activations",
            unit: "bytes",
            expected: rb * rows,
            got: weights.len(),
        });
    }
    if n_tok == 0 || rb == 0 {
        out.fill(0.0);
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if isa.min(crate::isa::detected_isa()) >= Isa::Avx512 {
        // SAFETY: the CPU has AVX-512 F/BW/VL (checked just above); lengths were checked.
        unsafe { simd::gemm_k_avx512(order, weights, rb, acts, ab, n_gemm, out) };
        return Ok(());
    }
    let _ = isa;
    gemm_k_scalar(order, weights, rb, &acts.data, ab, n_tok, n_gemm, out);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn gemm_k_scalar(
    order: KOrder,
    weights: &[u8],
    rb: usize,
    acts: &[u8],
    ab: usize,
    n_tok: usize,
    n_gemm: usize,
    out: &mut [f32],
) {
    for (row, o) in weights.chunks_exact(rb).zip(out.chunks_exact_mut(n_tok)) {
        for (t, v) in o.iter_mut().enumerate() {
            let a = &acts[t * ab..(t + 1) * ab];
            *v = match order {
                KOrder::Q4KRepacked => dot_q4_k_repacked(row, a, t < n_gemm),
                KOrder::Q6KTiled => dot_q6_k_tiled(row, a),
            };
        }
    }
}

/// `out[r] = w[r] · a` in the order of `ggml_gemv_q4_K_8x8_q8_K` (one activation row, `a` in
/// Q8_K) for the `out.len()` Q4_K rows of `n` elements in `weights`: the decode-step product.
/// Single-threaded.
pub fn gemv_q4_k(weights: &[u8], n: usize, a: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    gemv_q4_k_isa(active_isa(), weights, n, a, out)
}

/// [`gemv_q4_k`] at a given ISA level (capped by what the CPU has).
pub fn gemv_q4_k_isa(
    isa: Isa,
    weights: &[u8],
    n: usize,
    a: &[u8],
    out: &mut [f32],
) -> Result<(), QuantError> {
    let rb = row_bytes(GgmlType::Q4K, n)?;
    let ab = row_bytes(GgmlType::Q8K, n)?;
    if weights.len() != rb * out.len() || a.len() != ab {
        return Err(QuantError::Length {
            ty: GgmlType::Q4K,
            what: "the weight rows or the activation",
            unit: "bytes",
            expected: rb * out.len(),
            got: weights.len(),
        });
    }
    if rb == 0 {
        out.fill(0.0);
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    {
        let isa = isa.min(crate::isa::detected_isa());
        // SAFETY (both): the CPU has the features of `isa` (capped just above); lengths checked.
        if isa >= Isa::Avx512Vnni {
            unsafe { simd::gemv_q4_k_vnni(weights, rb, a, out) };
            return Ok(());
        }
        if isa >= Isa::Avx512 {
            unsafe { simd::gemv_q4_k_avx512(weights, rb, a, out) };
            return Ok(());
        }
    }
    let _ = isa;
    for (row, o) in weights.chunks_exact(rb).zip(out.iter_mut()) {
        *o = dot_q4_k_repacked(row, a, false);
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;
    use std::arch::x86_64::*;

    /// Four Q4_K rows per step (sharing the activation loads): each super-block's `Σ sc·Σ q·y`
    /// summed exactly in a 512-bit register per row (64 elements per step, both nibbles of a
    /// 32-byte group) and the four reduced together, the min terms from the activation's bsum
    /// pairs, then per row the GEMV's two FMAs per super-block, in block order.
    macro_rules! gemv_q4_k {
        ($name:ident, $feat:literal, $scaled:ident) => {
            #[target_feature(enable = $feat)]
            pub(super) fn $name(weights: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
                let m4 = _mm256_set1_epi8(0xf);
                // Per activation super-block: d_a and bsum(2k) + bsum(2k + 1).
                let pre: Vec<(f32, [i32; 8])> = a
                    .chunks_exact(Q8_K_BYTES)
                    .map(|ab| {
                        let q8s = std::array::from_fn(|k| bsum(ab, 2 * k) + bsum(ab, 2 * k + 1));
                        (f(ab, 0), q8s)
                    })
                    .collect();
                let sumi = |wb: &[u8], y: &[__m512i; 4]| {
                    let packed: &[u8; 12] = wb[4..16].try_into().unwrap();
                    let (sc, mn) = crate::formats::q4_k::scales_mins(packed);
                    let mut acc = _mm512_setzero_si512();
                    for (j, &yj) in y.iter().enumerate() {
                        let q4 = crate::x86::ld256_at(&wb[16..], 32 * j);
                        let lo = _mm256_and_si256(q4, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
                        let sv = crate::x86::halves_epi32(sc[2 * j] as i32, sc[2 * j + 1] as i32);
                        let p = crate::x86::$scaled(crate::x86::join(lo, hi), yj, sv);
                        acc = _mm512_add_epi32(acc, p);
                    }
                    (acc, mn)
                };
                let fold = |wb: &[u8],
                            isum: i32,
                            mn: [u8; 8],
                            da: f32,
                            q8s: &[i32; 8],
                            acc: &mut (f32, f32)| {
                    let imin: i32 = mn.iter().zip(q8s).map(|(&m, &q)| m as i32 * q).sum();
                    let (d, dmin) = (h(wb, 0), h(wb, 2));
                    acc.0 = (isum as f32).mul_add(d * da, acc.0);
                    acc.1 = (imin as f32).mul_add(dmin * da, acc.1);
                };
                let mut groups = weights.chunks_exact(4 * rb);
                let mut outs = out.chunks_exact_mut(4);
                for (rows, o) in (&mut groups).zip(&mut outs) {
                    let mut acc = [(0f32, 0f32); 4];
                    for (s, (da, q8s)) in pre.iter().enumerate() {
                        let ab = &a[s * Q8_K_BYTES + 4..s * Q8_K_BYTES + 260];
                        let y: [__m512i; 4] =
                            std::array::from_fn(|j| crate::x86::ld512_at(ab, 64 * j));
                        let wb = |r: usize| {
                            &rows[r * rb + s * Q4_K_BYTES..r * rb + (s + 1) * Q4_K_BYTES]
                        };
                        let (s0, m0) = sumi(wb(0), &y);
                        let (s1, m1) = sumi(wb(1), &y);
                        let (s2, m2) = sumi(wb(2), &y);
                        let (s3, m3) = sumi(wb(3), &y);
                        let isum = reduce4(s0, s1, s2, s3);
                        for (r, mn) in [m0, m1, m2, m3].into_iter().enumerate() {
                            fold(wb(r), isum[r], mn, *da, q8s, &mut acc[r]);
                        }
                    }
                    for (o, (acc, acc_min)) in o.iter_mut().zip(acc) {
                        *o = acc - acc_min;
                    }
                }
                for (row, o) in groups
                    .remainder()
                    .chunks_exact(rb)
                    .zip(outs.into_remainder())
                {
                    let mut acc = (0f32, 0f32);
                    for (s, (da, q8s)) in pre.iter().enumerate() {
                        let ab = &a[s * Q8_K_BYTES + 4..s * Q8_K_BYTES + 260];
                        let y: [__m512i; 4] =
                            std::array::from_fn(|j| crate::x86::ld512_at(ab, 64 * j));
                        let wb = &row[s * Q4_K_BYTES..(s + 1) * Q4_K_BYTES];
                        let (s0, mn) = sumi(wb, &y);
                        fold(wb, _mm512_reduce_add_epi32(s0), mn, *da, q8s, &mut acc);
                    }
                    *o = acc.0 - acc.1;
                }
            }
        };
    }
    gemv_q4_k!(
        gemv_q4_k_avx512,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
        scaled_u8i8_avx512
    );
    gemv_q4_k!(
        gemv_q4_k_vnni,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        scaled_u8i8_vnni
    );

    /// Tokens whose activations stay in cache while a panel of weight rows is swept.
    const PANEL: usize = 64;

    /// Four vectors of 16 i32 lanes to their four lane totals (exact).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    fn reduce4(v0: __m512i, v1: __m512i, v2: __m512i, v3: __m512i) -> [i32; 4] {
        let s01 = _mm512_add_epi32(_mm512_unpacklo_epi32(v0, v1), _mm512_unpackhi_epi32(v0, v1));
        let s23 = _mm512_add_epi32(_mm512_unpacklo_epi32(v2, v3), _mm512_unpackhi_epi32(v2, v3));
        // Per 128-bit lane: [v0, v1, v2, v3] partial sums.
        let s = _mm512_add_epi32(
            _mm512_unpacklo_epi64(s01, s23),
            _mm512_unpackhi_epi64(s01, s23),
        );
        let h = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s));
        let q = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
        let mut r = [0i32; 4];
        // SAFETY: 16 writable bytes.
        unsafe { _mm_storeu_si128(r.as_mut_ptr().cast(), q) };
        r
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    fn ld(a: &[u8], at: usize) -> __m512i {
        assert!(at + 64 <= a.len());
        // SAFETY: bounds checked just above; unaligned load.
        unsafe { _mm512_loadu_si512(a.as_ptr().add(at).cast()) }
    }

    /// Σ over lanes-of-4 of (u8 w × i8 y) times the per-lane i16 scales in `s`, as 16 i32 lanes.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    fn scaled(w: __m512i, y: __m512i, s: __m512i) -> __m512i {
        _mm512_madd_epi16(_mm512_maddubs_epi16(w, y), s)
    }

    /// `scale` in both i16 halves of an i32 lane.
    fn dup16(scale: i32) -> i32 {
        (scale & 0xffff) | (scale << 16)
    }

    /// Sixteen vectors of 16 i32 lanes to one vector of their totals (lane j: Σ of `v[j]`).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    fn reduce16(v: &[__m512i; 16]) -> __m512i {
        let l1 = |a: __m512i, b: __m512i| {
            _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
        };
        let l2 = |a: __m512i, b: __m512i| {
            _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
        };
        // Per 128-bit lane k of c[g]: partial sums of tokens 4g..4g+4.
        let mut c = [_mm512_setzero_si512(); 4];
        for (g, cg) in c.iter_mut().enumerate() {
            let v = &v[4 * g..4 * g + 4];
            *cg = l2(l1(v[0], v[1]), l1(v[2], v[3]));
        }
        let l3 = |a: __m512i, b: __m512i| {
            _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_i32x4::<0b11_10_11_10>(a, b),
            )
        };
        let (e01, e23) = (l3(c[0], c[1]), l3(c[2], c[3]));
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b10_00_10_00>(e01, e23),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(e01, e23),
        )
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) fn gemm_k_avx512(
        order: KOrder,
        weights: &[u8],
        rb: usize,
        kacts: &KActs,
        ab: usize,
        n_gemm: usize,
        out: &mut [f32],
    ) {
        let (acts, n_tok, n_all) = (&kacts.data[..], kacts.n_tok, kacts.n_all);
        let (das, bss) = (&kacts.das[..], &kacts.bss[..]);
        let rows = out.len() / n_tok;
        let nsb = ab / Q8_K_BYTES;
        let wbytes = rb / nsb;
        // Tokens taken 16 at a time (one per float lane, each lane doing the scalar steps);
        // the rest (and for Q4_K the GEMV-order tail) one at a time.
        let n_vec = match order {
            KOrder::Q4KRepacked => n_gemm.min(n_tok),
            KOrder::Q6KTiled => n_tok,
        } / 16
            * 16;
        debug_assert!(n_vec <= n_all);
        // The rows unpacked once (every token panel reuses them): per super-block 256 unsigned
        // quants in element order (4 chunks of 64), the i16 scale of every i32 lane of each
        // chunk (4 × 16 lanes), and for Q6_K the sixteen scales as i16.
        let mut wq_all = vec![0u8; rows * nsb * QK_K];
        let mut ws_all = vec![0i32; rows * nsb * 64];
        let mut ws6_all = vec![0i16; rows * nsb * 16];
        for r in 0..rows {
            let row = &weights[r * rb..(r + 1) * rb];
            let wq = &mut wq_all[r * nsb * QK_K..(r + 1) * nsb * QK_K];
            let ws = &mut ws_all[r * nsb * 64..(r + 1) * nsb * 64];
            let ws6 = &mut ws6_all[r * nsb * 16..(r + 1) * nsb * 16];
            for (s, wb) in row.chunks_exact(wbytes).enumerate() {
                let q = &mut wq[s * QK_K..(s + 1) * QK_K];
                let sc = &mut ws[s * 64..(s + 1) * 64];
                match order {
                    KOrder::Q4KRepacked => {
                        let (scales, qs) = (&wb[4..16], &wb[16..144]);
                        for c in 0..4 {
                            for i in 0..32 {
                                q[64 * c + i] = qs[32 * c + i] & 0x0f;
                                q[64 * c + 32 + i] = qs[32 * c + i] >> 4;
                            }
                            let (lo, _) = scale_min(2 * c, scales);
                            let (hi, _) = scale_min(2 * c + 1, scales);
                            sc[16 * c..16 * c + 8].fill(dup16(lo));
                            sc[16 * c + 8..16 * c + 16].fill(dup16(hi));
                        }
                    }
                    KOrder::Q6KTiled => {
                        q6_k_unpack(wb, q);
                        for (l, v) in sc.iter_mut().enumerate() {
                            *v = dup16(wb[192 + l / 4] as i8 as i32);
                        }
                        for (j, v) in ws6[s * 16..(s + 1) * 16].iter_mut().enumerate() {
                            *v = wb[192 + j] as i8 as i16;
                        }
                    }
                }
            }
        }
        let mut t0 = 0;
        while t0 < n_tok {
            let nt = PANEL.min(n_tok - t0);
            for r in 0..rows {
                let row = &weights[r * rb..(r + 1) * rb];
                let wq = &wq_all[r * nsb * QK_K..(r + 1) * nsb * QK_K];
                let ws = &ws_all[r * nsb * 64..(r + 1) * nsb * 64];
                let ws6 = &ws6_all[r * nsb * 16..(r + 1) * nsb * 16];
                let o = &mut out[r * n_tok..(r + 1) * n_tok];
                let mut t = t0;
                while t < t0 + nt {
                    if t + 16 <= n_vec && t + 16 <= t0 + nt {
                        let v = tokens16(
                            order, row, wbytes, acts, ab, t, n_all, wq, ws, ws6, das, bss,
                        );
                        // SAFETY: `o` holds n_tok >= t + 16 floats.
                        unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(t), v) };
                        t += 16;
                        continue;
                    }
                    let a = &acts[t * ab..(t + 1) * ab];
                    let (mut acc, mut acc_min) = (0f32, 0f32);
                    for s in 0..nsb {
                        let abk = &a[s * Q8_K_BYTES..(s + 1) * Q8_K_BYTES];
                        let wbk = &row[s * wbytes..(s + 1) * wbytes];
                        let v = |c: usize| {
                            // SAFETY: `ws` holds nsb * 64 i32.
                            let sv = unsafe {
                                _mm512_loadu_si512(ws.as_ptr().add(s * 64 + 16 * c).cast())
                            };
                            scaled(ld(wq, s * QK_K + 64 * c), ld(abk, 4 + 64 * c), sv)
                        };
                        let (v0, v1, v2, v3) = (v(0), v(1), v(2), v(3));
                        match order {
                            KOrder::Q4KRepacked => {
                                let pair = reduce4(v0, v1, v2, v3);
                                q4_k_fold(wbk, abk, pair, t < n_gemm, &mut acc, &mut acc_min);
                            }
                            KOrder::Q6KTiled => {
                                let tot = _mm512_add_epi32(
                                    _mm512_add_epi32(v0, v1),
                                    _mm512_add_epi32(v2, v3),
                                );
                                let mut isum = _mm512_reduce_add_epi32(tot);
                                let mut corr = 0i32;
                                for j in 0..16 {
                                    corr += wbk[192 + j] as i8 as i32 * bsum(abk, j);
                                }
                                isum -= 32 * corr;
                                acc = (isum as f32 * h(wbk, 208)).mul_add(f(abk, 0), acc);
                            }
                        }
                    }
                    o[t] = acc - acc_min;
                    t += 1;
                }
            }
            t0 += nt;
        }
    }

    /// Tokens `t0..t0 + 16` against one unpacked row: lane j carries token `t0 + j` through
    /// exactly the scalar kernel's float steps.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    fn tokens16(
        order: KOrder,
        row: &[u8],
        wbytes: usize,
        acts: &[u8],
        ab: usize,
        t0: usize,
        stride: usize,
        wq: &[u8],
        ws: &[i32],
        ws6: &[i16],
        das: &[f32],
        bss: &[i32],
    ) -> __m512 {
        let nsb = ab / Q8_K_BYTES;
        let (mut acc, mut acc_min) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut v = [_mm512_setzero_si512(); 16];
        for s in 0..nsb {
            let wbk = &row[s * wbytes..(s + 1) * wbytes];
            let at = |j: usize| (t0 + j) * ab + s * Q8_K_BYTES;
            // SAFETY (loads below): `das` and `bss` hold nsb (× 8) × stride entries and
            // t0 + 16 <= stride; `ws` holds nsb × 64 i32, `ws6` nsb × 16 i16.
            let da = unsafe { _mm512_loadu_ps(das.as_ptr().add(s * stride + t0)) };
            let sv =
                |c: usize| unsafe { _mm512_loadu_si512(ws.as_ptr().add(s * 64 + 16 * c).cast()) };
            match order {
                KOrder::Q6KTiled => {
                    let (s0, s1, s2, s3) = (sv(0), sv(1), sv(2), sv(3));
                    let (w0, w1, w2, w3) = (
                        ld(wq, s * QK_K),
                        ld(wq, s * QK_K + 64),
                        ld(wq, s * QK_K + 128),
                        ld(wq, s * QK_K + 192),
                    );
                    let sc6 = unsafe { _mm256_loadu_si256(ws6.as_ptr().add(s * 16).cast()) };
                    for (j, vj) in v.iter_mut().enumerate() {
                        let a = at(j);
                        let tot = _mm512_add_epi32(
                            _mm512_add_epi32(
                                scaled(w0, ld(acts, a + 4), s0),
                                scaled(w1, ld(acts, a + 68), s1),
                            ),
                            _mm512_add_epi32(
                                scaled(w2, ld(acts, a + 132), s2),
                                scaled(w3, ld(acts, a + 196), s3),
                            ),
                        );
                        assert!(a + 292 <= acts.len());
                        // SAFETY: bounds checked just above (bsums at a + 260..a + 292).
                        let bs = unsafe { _mm256_loadu_si256(acts.as_ptr().add(a + 260).cast()) };
                        let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bs, sc6));
                        *vj = _mm512_sub_epi32(tot, _mm512_zextsi256_si512(corr));
                    }
                    let isum = _mm512_cvtepi32_ps(reduce16(&v));
                    let d = _mm512_set1_ps(h(wbk, 208));
                    acc = _mm512_fmadd_ps(_mm512_mul_ps(isum, d), da, acc);
                }
                KOrder::Q4KRepacked => {
                    let scales = &wbk[4..16];
                    let dd = _mm512_mul_ps(_mm512_set1_ps(h(wbk, 0)), da);
                    let dm = _mm512_mul_ps(_mm512_set1_ps(h(wbk, 2)), da);
                    for c in 0..4 {
                        let (w, sc) = (ld(wq, s * QK_K + 64 * c), sv(c));
                        for (j, vj) in v.iter_mut().enumerate() {
                            *vj = scaled(w, ld(acts, at(j) + 4 + 64 * c), sc);
                        }
                        let pair = _mm512_cvtepi32_ps(reduce16(&v));
                        acc = _mm512_fmadd_ps(pair, dd, acc);
                        let (_, m_lo) = scale_min(2 * c, scales);
                        let (_, m_hi) = scale_min(2 * c + 1, scales);
                        let b = |k: usize| unsafe {
                            _mm512_loadu_si512(bss.as_ptr().add((s * 8 + k) * stride + t0).cast())
                        };
                        let pm = _mm512_add_epi32(
                            _mm512_mullo_epi32(_mm512_set1_epi32(m_lo), b(2 * c)),
                            _mm512_mullo_epi32(_mm512_set1_epi32(m_hi), b(2 * c + 1)),
                        );
                        acc_min = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pm), dm, acc_min);
                    }
                }
            }
        }
        _mm512_sub_ps(acc, acc_min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize_matrix;

    #[test]
    fn gemv_q4_k_matches_the_scalar_order_at_every_isa() {
        for (rows, cols) in [(1, 256), (7, 512), (16, 2048)] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| (i as f32 * 0.37).sin() * 2.0)
                .collect();
            let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.13).cos() * 3.0).collect();
            let wq = quantize_matrix(GgmlType::Q4K, &w, rows, cols).unwrap();
            let mut a = vec![0u8; row_bytes(GgmlType::Q8K, cols).unwrap()];
            crate::quantize_act(GgmlType::Q4K, &x, &mut a).unwrap();
            let rb = wq.len() / rows;
            let want: Vec<f32> = wq
                .chunks_exact(rb)
                .map(|r| dot_q4_k_repacked(r, &a, false))
                .collect();
            for isa in crate::available_isas() {
                let mut got = vec![0f32; rows];
                gemv_q4_k_isa(isa, &wq, cols, &a, &mut got).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.to_bits(), w.to_bits(), "{isa} {rows}x{cols}");
                }
            }
        }
        let mut out = [0f32; 2];
        assert!(gemv_q4_k(&[0u8; 144], 256, &[0u8; 292], &mut out).is_err());
    }

    #[test]
    fn simd_matches_scalar_bit_for_bit() {
        for order in [KOrder::Q4KRepacked, KOrder::Q6KTiled] {
            let ty = order.weight_type();
            for (rows, cols, n_tok) in [(1, 256, 1), (3, 512, 9), (8, 768, 37), (5, 512, 70)] {
                let w: Vec<f32> = (0..rows * cols)
                    .map(|i| (i as f32 * 0.37).sin() * 2.0)
                    .collect();
                let x: Vec<f32> = (0..n_tok * cols)
                    .map(|i| (i as f32 * 0.13).cos() * 3.0)
                    .collect();
                let wq = quantize_matrix(ty, &w, rows, cols).unwrap();
                let ab = row_bytes(GgmlType::Q8K, cols).unwrap();
                let mut acts = vec![0u8; n_tok * ab];
                for (row, dst) in x.chunks_exact(cols).zip(acts.chunks_exact_mut(ab)) {
                    crate::quantize_act(ty, row, dst).unwrap();
                }
                let n_gemm = n_tok - n_tok % 4;
                let rb = wq.len() / rows;
                let mut want = vec![0f32; rows * n_tok];
                gemm_k_scalar(order, &wq, rb, &acts, ab, n_tok, n_gemm, &mut want);
                let kacts = KActs::from_quantized(cols, acts.clone()).unwrap();
                for isa in crate::available_isas() {
                    let mut got = vec![0f32; rows * n_tok];
                    gemm_k_isa(isa, order, &wq, cols, &kacts, n_gemm, &mut got).unwrap();
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(
                            g.to_bits(),
                            w.to_bits(),
                            "{order:?} {isa} {rows}x{cols}x{n_tok}"
                        );
                    }
                }
                // Within rounding of vec_dot.
                let a = crate::Activation::new(ty, &x[..cols]).unwrap();
                let v = a.dot(&wq[..rb]).unwrap();
                assert!((v - want[0]).abs() <= 1e-5 * v.abs().max(1.0), "{order:?}");
            }
        }
    }
}
