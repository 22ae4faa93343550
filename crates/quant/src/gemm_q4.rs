//! Batched Q4_0 products (many activation rows at once) in the float order of llama.cpp's
//! repacked Q4_0 kernels (`ggml_gemv/gemm_q4_0_8x8_q8_0` on x86): per 32-element block the
//! products are summed as one integer `isum`, and the row total is
//! `acc = fma(f32(isum), d_w * d_a, acc)`, block after block. The order is the same for the
//! GEMM and GEMV halves of that kernel, so every (row, token) pair follows it.
//!
//! Here sixteen tokens share one 512-bit register (lane `t` = token `t` of a group): each weight
//! block is unpacked once into unsigned nibbles `q + 8` and four of its bytes at a time are
//! broadcast against the matching four bytes of every token (`vpdpbusd`), starting from
//! `-8 · Σ y`, so the lane sums are the exact integer `isum`s and the FMA per block is the
//! scalar one: results are bit-identical to [`dot_scalar`]. [`gemm_q4_0_scalar`] is the twin.

use crate::common::cast;
use crate::formats::q4_0::BlockQ4_0;
use crate::formats::q8_0::BlockQ8_0;
use crate::isa::{Isa, active_isa};
use crate::{GgmlType, QuantError, row_bytes};

/// Tokens per group (one 512-bit register of i32/f32 lanes).
const G: usize = 16;

/// Activation rows quantized to Q8_0 (by `quantize_act(Q4_0, ..)`), `n` elements each, plus
/// their layout for the batched kernel.
#[derive(Clone, Debug)]
pub struct Q4Acts {
    n: usize,
    n_tok: usize,
    /// Row `t` at `t * row_bytes(Q8_0, n)`.
    data: Vec<u8>,
    /// Per group of 16 tokens and block: for k in 0..8, token t's bytes 4k..4k+4 at
    /// `k * 64 + t * 4` (512 bytes per block; missing tokens are zero).
    ys: Vec<u8>,
    /// Per group and block: `-8 · Σ y` for each token (16 lanes).
    neg: Vec<i32>,
    /// Per group and block: each token's scale (16 lanes, zero for missing tokens).
    da: Vec<f32>,
}

impl Q4Acts {
    /// From rows already quantized by `quantize_act(Q4_0, ..)` (`n` elements each, back to back).
    pub fn from_quantized(n: usize, data: Vec<u8>) -> Result<Q4Acts, QuantError> {
        let rb = row_bytes(GgmlType::Q8_0, n)?;
        let n_tok = data.len().checked_div(rb).unwrap_or(0);
        if n_tok * rb != data.len() {
            return Err(QuantError::Length {
                ty: GgmlType::Q8_0,
                what: "the activation rows",
                unit: "bytes",
                expected: n_tok * rb,
                got: data.len(),
            });
        }
        let nb = n / 32;
        let n_grp = n_tok.div_ceil(G);
        let mut ys = vec![0u8; n_grp * nb * 512];
        let mut neg = vec![0i32; n_grp * nb * G];
        let mut da = vec![0f32; n_grp * nb * G];
        for t in 0..n_tok {
            let (g, l) = (t / G, t % G);
            let row: &[BlockQ8_0] = cast(&data[t * rb..(t + 1) * rb]);
            for (b, blk) in row.iter().enumerate() {
                let at = (g * nb + b) * 512;
                let mut s = 0i32;
                for (e, &q) in blk.qs.iter().enumerate() {
                    ys[at + (e / 4) * 64 + l * 4 + e % 4] = q as u8;
                    s += q as i32;
                }
                neg[(g * nb + b) * G + l] = -8 * s;
                da[(g * nb + b) * G + l] = blk.d();
            }
        }
        Ok(Q4Acts {
            n,
            n_tok,
            data,
            ys,
            neg,
            da,
        })
    }

    /// Quantizes the `x.len() / n` rows of `x` for products with Q4_0 rows of `n` elements.
    pub fn new(x: &[f32], n: usize) -> Result<Q4Acts, QuantError> {
        let rb = row_bytes(GgmlType::Q8_0, n)?;
        let n_tok = x.len().checked_div(n).unwrap_or(0);
        let mut data = vec![0u8; rb * n_tok];
        for (row, dst) in x
            .chunks_exact(n.max(1))
            .zip(data.chunks_exact_mut(rb.max(1)))
        {
            crate::quantize_act(GgmlType::Q4_0, row, dst)?;
        }
        Q4Acts::from_quantized(n, data)
    }

    pub fn n_tok(&self) -> usize {
        self.n_tok
    }

    fn row(&self, t: usize) -> &[u8] {
        let rb = self.data.len() / self.n_tok.max(1);
        &self.data[t * rb..(t + 1) * rb]
    }
}

/// The repacked-kernel dot of one Q4_0 row with one Q8_0 row (both in GGUF block layout):
/// per block `acc = fma(f32(isum), d_w * d_a, acc)`.
#[inline]
pub fn dot_scalar(w: &[u8], a: &[u8]) -> f32 {
    let w: &[BlockQ4_0] = cast(w);
    let a: &[BlockQ8_0] = cast(a);
    let mut acc = 0f32;
    for (wb, ab) in w.iter().zip(a) {
        let mut isum = 0i32;
        for j in 0..16 {
            let lo = (wb.qs[j] & 0x0f) as i32 - 8;
            let hi = (wb.qs[j] >> 4) as i32 - 8;
            isum += lo * ab.qs[j] as i32 + hi * ab.qs[j + 16] as i32;
        }
        acc = (isum as f32).mul_add(wb.d() * ab.d(), acc);
    }
    acc
}

fn check(weights: &[u8], acts: &Q4Acts, out: &[f32]) -> Result<usize, QuantError> {
    let rb = row_bytes(GgmlType::Q4_0, acts.n)?;
    let rows = out.len().checked_div(acts.n_tok).unwrap_or(0);
    if rows * acts.n_tok != out.len() || weights.len() != rb * rows {
        return Err(QuantError::Length {
            ty: GgmlType::Q4_0,
            what: "the weight matrix",
            unit: "bytes",
            got: weights.len(),
            expected: rb * rows,
        });
    }
    Ok(rb)
}

/// `out[r * n_tok + t] = dot_scalar(weights[r], acts[t])` for the `out.len() / n_tok`
/// consecutive Q4_0 rows in `weights`. Single-threaded: callers split rows across threads.
pub fn gemm_q4_0(weights: &[u8], acts: &Q4Acts, out: &mut [f32]) -> Result<(), QuantError> {
    gemm_q4_0_isa(active_isa(), weights, acts, out)
}

/// [`gemm_q4_0`] at a given ISA level (capped by what the CPU has).
pub fn gemm_q4_0_isa(
    isa: Isa,
    weights: &[u8],
    acts: &Q4Acts,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let rb = check(weights, acts, out)?;
    if acts.n_tok == 0 || rb == 0 {
        out.fill(0.0);
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if isa.min(crate::isa::detected_isa()) >= Isa::Avx512Vnni {
        // SAFETY: the CPU has AVX-512 VNNI (checked just above); lengths were checked.
        unsafe { simd::gemm_vnni(weights, rb, acts, out) };
        return Ok(());
    }
    let _ = isa;
    gemm_q4_0_scalar(weights, acts, out)
}

/// The plain twin: one [`dot_scalar`] per (row, token).
pub fn gemm_q4_0_scalar(weights: &[u8], acts: &Q4Acts, out: &mut [f32]) -> Result<(), QuantError> {
    let rb = check(weights, acts, out)?;
    let n_tok = acts.n_tok;
    if n_tok == 0 || rb == 0 {
        out.fill(0.0);
        return Ok(());
    }
    for (row, o) in weights.chunks_exact(rb).zip(out.chunks_exact_mut(n_tok)) {
        for (t, v) in o.iter_mut().enumerate() {
            *v = dot_scalar(row, acts.row(t));
        }
    }
    Ok(())
}

/// `out[r] = dot_scalar(weights[r], act)` for the `out.len()` consecutive Q4_0 rows in
/// `weights` and one Q8_0 activation row `act` (GGUF block layout, `n` elements), bit-identical
/// to [`dot_scalar`]. Single-threaded: callers split rows across threads.
pub fn gemv_q4_0(weights: &[u8], act: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    gemv_q4_0_isa(active_isa(), weights, act, out)
}

/// [`gemv_q4_0`] at a given ISA level (capped by what the CPU has).
pub fn gemv_q4_0_isa(
    isa: Isa,
    weights: &[u8],
    act: &[u8],
    out: &mut [f32],
) -> Result<(), QuantError> {
    let nb = act.len() / 34;
    let rb = nb * 18;
    if nb * 34 != act.len() || weights.len() != rb * out.len() {
        return Err(QuantError::Length {
            ty: GgmlType::Q4_0,
            what: "the weight matrix",
            unit: "bytes",
            got: weights.len(),
            expected: rb * out.len(),
        });
    }
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if isa.min(crate::isa::detected_isa()) >= Isa::Avx512Vnni && rb > 0 {
        done = out.len() - out.len() % 16;
        // SAFETY: the CPU has AVX-512 VNNI (checked just above); lengths were checked.
        unsafe { simd::gemv_vnni(&weights[..done * rb], rb, act, &mut out[..done]) };
    }
    let _ = isa;
    for (o, row) in out[done..]
        .iter_mut()
        .zip(weights[done * rb..].chunks_exact(rb.max(1)))
    {
        *o = dot_scalar(row, act);
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;
    use std::arch::x86_64::*;

    /// Sixteen rows at a time. Each row's 16 quant bytes of a block fill one 128-bit lane
    /// (rows 4z..4z+4 in register z), are dotted with the broadcast activation bytes, and the
    /// four dword sums per lane are folded so that lane `4l + m` holds the block's integer sum of
    /// row `l + 4m`; the scales are folded the same way and the result permuted back.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn gemv_vnni(weights: &[u8], rb: usize, act: &[u8], out: &mut [f32]) {
        let m4 = _mm512_set1_epi8(0x0f);
        let back = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let blocks: &[BlockQ8_0] = cast(act);
        // Per activation block: -8 Σ y and the scale.
        let pre: Vec<(i32, f32)> = blocks
            .iter()
            .map(|b| (-8 * b.qs.iter().map(|&q| q as i32).sum::<i32>(), b.d()))
            .collect();
        let m16 = _mm512_set1_epi32(0xffff);
        for (g, o) in out.chunks_exact_mut(16).enumerate() {
            let group = &weights[g * 16 * rb..(g + 1) * 16 * rb];
            let base = group.as_ptr();
            let mut acc = _mm512_setzero_ps();
            for (b, (ab, &(neg, da))) in blocks.iter().zip(&pre).enumerate() {
                let y = ab.qs.as_ptr();
                // SAFETY: every load lies inside block b of one of the 16 rows (bytes 0..18 of
                // an 18-byte block); `y` holds 32 bytes.
                unsafe {
                    let ylo = _mm512_broadcast_i32x4(_mm_loadu_si128(y.cast()));
                    let yhi = _mm512_broadcast_i32x4(_mm_loadu_si128(y.add(16).cast()));
                    let four = |off: usize, z: usize| {
                        let q = |r: usize| _mm_loadu_si128(base.add(r * rb + b * 18 + off).cast());
                        let x = _mm512_castsi128_si512(q(4 * z));
                        let x = _mm512_inserti32x4::<1>(x, q(4 * z + 1));
                        let x = _mm512_inserti32x4::<2>(x, q(4 * z + 2));
                        _mm512_inserti32x4::<3>(x, q(4 * z + 3))
                    };
                    // The scales: dword 0 of each lane (rows 4z + l) folded to lane 4l + z.
                    let hd = [four(0, 0), four(0, 1), four(0, 2), four(0, 3)];
                    let dw = _mm512_unpacklo_epi64(
                        _mm512_unpacklo_epi32(hd[0], hd[1]),
                        _mm512_unpacklo_epi32(hd[2], hd[3]),
                    );
                    let dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_and_si512(dw, m16)));
                    let mut s = [_mm512_setzero_si512(); 4];
                    for (z, sz) in s.iter_mut().enumerate() {
                        let x = four(2, z);
                        let lo = _mm512_and_si512(x, m4);
                        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4);
                        let t = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, ylo);
                        *sz = _mm512_dpbusd_epi32(t, hi, yhi);
                    }
                    let ab2 = _mm512_add_epi32(
                        _mm512_unpacklo_epi32(s[0], s[1]),
                        _mm512_unpackhi_epi32(s[0], s[1]),
                    );
                    let cd = _mm512_add_epi32(
                        _mm512_unpacklo_epi32(s[2], s[3]),
                        _mm512_unpackhi_epi32(s[2], s[3]),
                    );
                    let r = _mm512_add_epi32(
                        _mm512_unpacklo_epi64(ab2, cd),
                        _mm512_unpackhi_epi64(ab2, cd),
                    );
                    let r = _mm512_add_epi32(r, _mm512_set1_epi32(neg));
                    let d = _mm512_mul_ps(dw, _mm512_set1_ps(da));
                    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(r), d, acc);
                }
            }
            let acc = _mm512_permutexvar_ps(back, acc);
            // SAFETY: `o` holds 16 floats.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), acc) };
        }
    }

    /// Weight rows unpacked together.
    const R: usize = 8;

    /// `NR` unpacked rows (`wq`: per row nb blocks of 32 unsigned quants; `wd`: their scales)
    /// against one group of 16 tokens: the accumulators per row, lane = token.
    ///
    /// # Safety
    /// AVX-512 VNNI; `wq` holds `NR * nb * 32` bytes, `wd` `NR * nb` floats, `ys` `nb * 512`
    /// bytes and `neg`, `da` `nb * 16` values each.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn group_rows<const NR: usize>(
        wq: &[u8],
        wd: &[f32],
        nb: usize,
        ys: &[u8],
        neg: &[i32],
        da: &[f32],
    ) -> [__m512; NR] {
        debug_assert!(wq.len() >= NR * nb * 32 && wd.len() >= NR * nb);
        debug_assert!(ys.len() >= nb * 512 && neg.len() >= nb * 16 && da.len() >= nb * 16);
        let (wq, wd, ys, neg, da) = (
            wq.as_ptr(),
            wd.as_ptr(),
            ys.as_ptr(),
            neg.as_ptr(),
            da.as_ptr(),
        );
        let mut acc = [_mm512_setzero_ps(); NR];
        for b in 0..nb {
            // SAFETY: in bounds by the contract above.
            unsafe {
                let n0 = _mm512_loadu_si512(neg.add(b * 16).cast());
                let mut is = [n0; NR];
                for k in 0..8 {
                    let y = _mm512_loadu_si512(ys.add(b * 512 + k * 64).cast());
                    for (i, s) in is.iter_mut().enumerate() {
                        let w = wq
                            .add((i * nb + b) * 32 + k * 4)
                            .cast::<i32>()
                            .read_unaligned();
                        *s = _mm512_dpbusd_epi32(*s, _mm512_set1_epi32(w), y);
                    }
                }
                let dav = _mm512_loadu_ps(da.add(b * 16));
                for (i, a) in acc.iter_mut().enumerate() {
                    let d = _mm512_mul_ps(_mm512_set1_ps(*wd.add(i * nb + b)), dav);
                    *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[i]), d, *a);
                }
            }
        }
        acc
    }

    /// A Q4_0 block's quants + 8 as bytes 0..32 in element order.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn q4_0_unsigned(b: &BlockQ4_0) -> __m256i {
        crate::x86::nibbles32(&b.qs)
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn gemm_vnni(weights: &[u8], rb: usize, acts: &Q4Acts, out: &mut [f32]) {
        let n_tok = acts.n_tok;
        let rows = out.len() / n_tok;
        let nb = acts.n / 32;
        debug_assert_eq!(rb, nb * 18);
        let n_grp = n_tok.div_ceil(G);
        let mut wq = vec![0u8; R * nb * 32];
        let mut wd = vec![0f32; R * nb];
        let mut r0 = 0;
        while r0 < rows {
            let nr = R.min(rows - r0);
            for i in 0..nr {
                let row: &[BlockQ4_0] = cast(&weights[(r0 + i) * rb..(r0 + i + 1) * rb]);
                for (b, x) in row.iter().enumerate() {
                    let at = (i * nb + b) * 32;
                    let q = q4_0_unsigned(x);
                    // SAFETY: `wq[at..at + 32]` is in bounds; unaligned store.
                    unsafe { _mm256_storeu_si256(wq.as_mut_ptr().add(at).cast(), q) };
                    wd[i * nb + b] = x.d();
                }
            }
            for g in 0..n_grp {
                let ys = &acts.ys[g * nb * 512..(g + 1) * nb * 512];
                let neg = &acts.neg[g * nb * G..(g + 1) * nb * G];
                let da = &acts.da[g * nb * G..(g + 1) * nb * G];
                let mut acc = [_mm512_setzero_ps(); R];
                // SAFETY: `wq`/`wd` hold R rows of nb blocks; `ys`, `neg`, `da` one group's.
                unsafe {
                    if nr == R {
                        acc = group_rows::<R>(&wq, &wd, nb, ys, neg, da);
                    } else {
                        for (i, a) in acc.iter_mut().enumerate().take(nr) {
                            *a =
                                group_rows::<1>(&wq[i * nb * 32..], &wd[i * nb..], nb, ys, neg, da)
                                    [0];
                        }
                    }
                }
                let t0 = g * G;
                let nt = G.min(n_tok - t0);
                let mut lanes = [0f32; G];
                for (i, a) in acc.iter().enumerate().take(nr) {
                    // SAFETY: `lanes` holds 16 floats.
                    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *a) };
                    let o = &mut out[(r0 + i) * n_tok + t0..(r0 + i) * n_tok + t0 + nt];
                    o.copy_from_slice(&lanes[..nt]);
                }
            }
            r0 += nr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize_matrix;

    #[test]
    fn simd_matches_scalar_bit_for_bit() {
        for (rows, cols, n_tok) in [
            (1, 32, 1),
            (5, 64, 3),
            (9, 320, 8),
            (8, 96, 16),
            (19, 64, 17),
            (16, 128, 37),
            (48, 96, 2),
            (35, 64, 1),
        ] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| (i as f32 * 0.37).sin() * 2.0)
                .collect();
            let x: Vec<f32> = (0..n_tok * cols)
                .map(|i| (i as f32 * 0.13).cos() * 3.0)
                .collect();
            let wq = quantize_matrix(GgmlType::Q4_0, &w, rows, cols).unwrap();
            let acts = Q4Acts::new(&x, cols).unwrap();
            let mut want = vec![0f32; rows * n_tok];
            gemm_q4_0_scalar(&wq, &acts, &mut want).unwrap();
            let rb = wq.len() / rows;
            for r in 0..rows {
                for t in 0..n_tok {
                    let a = crate::Activation::new(GgmlType::Q4_0, &x[t * cols..(t + 1) * cols])
                        .unwrap();
                    let v = dot_scalar(&wq[r * rb..(r + 1) * rb], a.as_bytes());
                    assert_eq!(v.to_bits(), want[r * n_tok + t].to_bits());
                    // Same products as vec_dot, only the float order differs.
                    let vd = a.dot(&wq[r * rb..(r + 1) * rb]).unwrap();
                    assert!((v - vd).abs() <= 1e-4 * vd.abs().max(1.0), "{v} vs {vd}");
                }
            }
            for t in 0..n_tok {
                for isa in crate::available_isas() {
                    let mut got = vec![0f32; rows];
                    gemv_q4_0_isa(isa, &wq, acts.row(t), &mut got).unwrap();
                    for (r, g) in got.iter().enumerate() {
                        assert_eq!(g.to_bits(), want[r * n_tok + t].to_bits(), "gemv {isa}");
                    }
                }
            }
            for isa in crate::available_isas() {
                let mut got = vec![0f32; rows * n_tok];
                gemm_q4_0_isa(isa, &wq, &acts, &mut got).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.to_bits(), w.to_bits(), "{isa} {rows}x{cols}x{n_tok}");
                }
            }
        }
    }
}
