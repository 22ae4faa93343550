//! Batched products (many activation rows at once) for the weight types whose dot partner is
//! Q8_0 and whose `vec_dot` keeps llama.cpp's eight-lane AVX2 order: Q5_0 and Q8_0.
//!
//! `vec_dot` unpacks a weight block for every token; here each weight block is unpacked once
//! (as unsigned bytes `q + offset`) and reused for every token. Two tokens share one 512-bit
//! register (lanes 0..8 the first, 8..16 the second), so every (row, token) pair keeps the eight
//! f32 lanes of the AVX2 kernel and receives the same per-block FMA in the same order: the
//! integer lane sums are exact (`Σ (q + off)·y − off·Σ y`), so the results are bit-identical to
//! [`crate::vec_dot`]. [`gemm_scalar`] is the plain twin (one `vec_dot` per pair).

use crate::common::cast;
use crate::formats::q5_0::BlockQ5_0;
use crate::formats::q8_0::BlockQ8_0;
use crate::isa::{Isa, active_isa};
use crate::{GgmlType, QuantError, row_bytes};

/// Whether [`gemm`] handles weights of `ty`.
pub fn gemm_supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q5_0 | GgmlType::Q8_0)
}

/// Activation rows quantized to Q8_0 (the dot partner of `weight`), `n` elements each.
#[derive(Clone, Debug)]
pub struct ActBatch {
    weight: GgmlType,
    n: usize,
    n_tok: usize,
    /// Row `t` at `t * row_bytes(Q8_0, n)`.
    data: Vec<u8>,
    /// Token pairs: the quants of tokens 2p and 2p+1 interleaved block by block (64 bytes per
    /// block; the last token of an odd count is paired with itself) ...
    pairs: Vec<u8>,
    /// ... and their scales expanded to 16 lanes (8 per token).
    pair_d: Vec<f32>,
}

impl ActBatch {
    /// Quantizes the `x.len() / n` rows of `x` for products with `weight` rows of `n` elements.
    pub fn new(weight: GgmlType, x: &[f32], n: usize) -> Result<ActBatch, QuantError> {
        if !gemm_supported(weight) {
            return Err(QuantError::Unsupported {
                ty: weight,
                op: "the batched product",
            });
        }
        let rb = row_bytes(GgmlType::Q8_0, n)?;
        let n_tok = x.len().checked_div(n).unwrap_or(0);
        let mut data = vec![0u8; rb * n_tok];
        for (row, dst) in x
            .chunks_exact(n.max(1))
            .zip(data.chunks_exact_mut(rb.max(1)))
        {
            crate::quantize_act(weight, row, dst)?;
        }
        ActBatch::from_quantized(weight, n, data)
    }

    /// From rows already quantized by `quantize_act(weight, ..)` (`n` elements each, back to
    /// back in `data`).
    pub fn from_quantized(
        weight: GgmlType,
        n: usize,
        data: Vec<u8>,
    ) -> Result<ActBatch, QuantError> {
        if !gemm_supported(weight) {
            return Err(QuantError::Unsupported {
                ty: weight,
                op: "the batched product",
            });
        }
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
        let n_pair = n_tok.div_ceil(2);
        let mut pairs = vec![0u8; n_pair * nb * 64];
        let mut pair_d = vec![0f32; n_pair * nb * 16];
        for p in 0..n_pair {
            let (ta, tb) = (2 * p, (2 * p + 1).min(n_tok - 1));
            let ra: &[BlockQ8_0] = cast(&data[ta * rb..(ta + 1) * rb]);
            let rb_: &[BlockQ8_0] = cast(&data[tb * rb..(tb + 1) * rb]);
            let y = &mut pairs[p * nb * 64..(p + 1) * nb * 64];
            let d = &mut pair_d[p * nb * 16..(p + 1) * nb * 16];
            for (b, (ba, bb)) in ra.iter().zip(rb_).enumerate() {
                for e in 0..32 {
                    y[b * 64 + e] = ba.qs[e] as u8;
                    y[b * 64 + 32 + e] = bb.qs[e] as u8;
                }
                d[b * 16..b * 16 + 8].fill(ba.d());
                d[b * 16 + 8..b * 16 + 16].fill(bb.d());
            }
        }
        Ok(ActBatch {
            weight,
            n,
            n_tok,
            data,
            pairs,
            pair_d,
        })
    }

    pub fn n_tok(&self) -> usize {
        self.n_tok
    }

    fn row(&self, t: usize) -> &[u8] {
        let rb = self.data.len() / self.n_tok.max(1);
        &self.data[t * rb..(t + 1) * rb]
    }
}

fn check(weights: &[u8], acts: &ActBatch, out: &[f32]) -> Result<usize, QuantError> {
    let rb = row_bytes(acts.weight, acts.n)?;
    let rows = out.len().checked_div(acts.n_tok).unwrap_or(0);
    if rows * acts.n_tok != out.len() || weights.len() != rb * rows {
        return Err(QuantError::Length {
            ty: acts.weight,
            what: "the weight matrix",
            unit: "bytes",
            got: weights.len(),
            expected: rb * rows,
        });
    }
    Ok(rb)
}

/// `out[r * n_tok + t] = weights[r] · acts[t]` for the `out.len() / n_tok` consecutive rows in
/// `weights`, bit-identical to `vec_dot`. Single-threaded: callers split rows across threads.
pub fn gemm(weights: &[u8], acts: &ActBatch, out: &mut [f32]) -> Result<(), QuantError> {
    gemm_isa(active_isa(), weights, acts, out)
}

/// [`gemm`] at a given ISA level (capped by what the CPU has).
pub fn gemm_isa(
    isa: Isa,
    weights: &[u8],
    acts: &ActBatch,
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
    gemm_scalar(weights, acts, out)
}

/// The plain twin: one `vec_dot` per (row, token).
pub fn gemm_scalar(weights: &[u8], acts: &ActBatch, out: &mut [f32]) -> Result<(), QuantError> {
    let rb = check(weights, acts, out)?;
    let n_tok = acts.n_tok;
    if n_tok == 0 || rb == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let isa = active_isa();
    for (row, o) in weights.chunks_exact(rb).zip(out.chunks_exact_mut(n_tok)) {
        for (t, v) in o.iter_mut().enumerate() {
            let a: &[BlockQ8_0] = cast(acts.row(t));
            *v = match acts.weight {
                GgmlType::Q5_0 => crate::formats::q5_0::dot(isa, cast(row), a),
                _ => crate::formats::q8_0::dot(isa, cast(row), a),
            };
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;
    use crate::x86::*;
    use std::arch::x86_64::*;

    /// Weight rows unpacked together.
    const R: usize = 8;

    /// `NR` unpacked rows (`wq`: per row nb blocks of 64 bytes; `wd`: their scales) against one
    /// token pair (`yp`, `dp`): the pair's eight-lane accumulators per row.
    ///
    /// # Safety
    /// AVX-512 VNNI; `wq` holds `NR * nb * 64` bytes, `wd` `NR * nb` floats, `yp` `nb * 64`
    /// bytes and `dp` `nb * 16` floats.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn pair_rows<const NR: usize>(
        wq: &[u8],
        wd: &[f32],
        nb: usize,
        yp: &[u8],
        dp: &[f32],
        offv: __m512i,
    ) -> [__m512; NR] {
        debug_assert!(wq.len() >= NR * nb * 64 && wd.len() >= NR * nb);
        debug_assert!(yp.len() >= nb * 64 && dp.len() >= nb * 16);
        let (wq, wd, yp, dp) = (wq.as_ptr(), wd.as_ptr(), yp.as_ptr(), dp.as_ptr());
        let mut acc = [_mm512_setzero_ps(); NR];
        for b in 0..nb {
            // SAFETY: in bounds by the contract above.
            unsafe {
                let y = _mm512_loadu_si512(yp.add(b * 64).cast());
                let neg = _mm512_sub_epi32(
                    _mm512_setzero_si512(),
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), offv, y),
                );
                let da = _mm512_loadu_ps(dp.add(b * 16));
                for (i, a) in acc.iter_mut().enumerate() {
                    let w = _mm512_loadu_si512(wq.add((i * nb + b) * 64).cast());
                    let s = _mm512_dpbusd_epi32(neg, w, y);
                    let d = _mm512_mul_ps(_mm512_set1_ps(*wd.add(i * nb + b)), da);
                    *a = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), *a);
                }
            }
        }
        acc
    }

    /// Q5_0 quants + 16 as bytes 0..32 in element order.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn q5_0_unsigned(b: &BlockQ5_0) -> __m256i {
        let hi = bytes_from_bits32(u32::from_le_bytes(b.qh));
        _mm256_or_si256(
            nibbles32(&b.qs),
            _mm256_and_si256(hi, _mm256_set1_epi8(0x10)),
        )
    }

    /// Q8_0 quants + 128 as bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn q8_0_unsigned(b: &BlockQ8_0) -> __m256i {
        _mm256_xor_si256(ld256i(&b.qs), _mm256_set1_epi8(-128))
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn gemm_vnni(weights: &[u8], rb: usize, acts: &ActBatch, out: &mut [f32]) {
        let n_tok = acts.n_tok;
        let rows = out.len() / n_tok;
        let nb = acts.n / 32;
        let (off, wbytes) = match acts.weight {
            GgmlType::Q5_0 => (16i8, 22usize),
            _ => (-128i8, 34usize),
        };
        debug_assert_eq!(rb, nb * wbytes);
        let n_pair = n_tok.div_ceil(2);
        let (ys, ds) = (&acts.pairs, &acts.pair_d);
        let offv = _mm512_set1_epi8(off);
        // Unpacked weights of R rows: per block, the 32 unsigned quants twice (64 bytes).
        let mut wq = vec![0u8; R * nb * 64];
        let mut wd = vec![0f32; R * nb];
        let mut r0 = 0;
        while r0 < rows {
            let nr = R.min(rows - r0);
            for i in 0..nr {
                let row = &weights[(r0 + i) * rb..(r0 + i + 1) * rb];
                for b in 0..nb {
                    let blk = &row[b * wbytes..(b + 1) * wbytes];
                    let (q, d) = if wbytes == 22 {
                        let x: &BlockQ5_0 = &cast(blk)[0];
                        (q5_0_unsigned(x), x.d())
                    } else {
                        let x: &BlockQ8_0 = &cast(blk)[0];
                        (q8_0_unsigned(x), x.d())
                    };
                    let at = (i * nb + b) * 64;
                    let dst = &mut wq[at..at + 64];
                    // SAFETY: `dst` holds 64 writable bytes; unaligned stores.
                    unsafe {
                        _mm256_storeu_si256(dst.as_mut_ptr().cast(), q);
                        _mm256_storeu_si256(dst.as_mut_ptr().add(32).cast(), q);
                    }
                    wd[i * nb + b] = d;
                }
            }
            for p in 0..n_pair {
                let yp = &ys[p * nb * 64..(p + 1) * nb * 64];
                let dp = &ds[p * nb * 16..(p + 1) * nb * 16];
                let mut acc = [_mm512_setzero_ps(); R];
                // SAFETY: `wq`/`wd` hold R rows of nb blocks, `yp`/`dp` one pair's nb blocks.
                unsafe {
                    if nr == R {
                        acc = pair_rows::<R>(&wq, &wd, nb, yp, dp, offv);
                    } else {
                        for (i, a) in acc.iter_mut().enumerate().take(nr) {
                            *a =
                                pair_rows::<1>(&wq[i * nb * 64..], &wd[i * nb..], nb, yp, dp, offv)
                                    [0];
                        }
                    }
                }
                let (ta, tb) = (2 * p, 2 * p + 1);
                for (i, a) in acc.iter().enumerate().take(nr) {
                    let o = &mut out[(r0 + i) * n_tok..(r0 + i + 1) * n_tok];
                    o[ta] = hsum_f32x8(_mm512_castps512_ps256(*a));
                    if tb < n_tok {
                        let hi =
                            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*a)));
                        o[tb] = hsum_f32x8(hi);
                    }
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
        for ty in [GgmlType::Q5_0, GgmlType::Q8_0] {
            for (rows, cols, n_tok) in
                [(1, 32, 1), (5, 64, 3), (9, 320, 8), (7, 96, 5), (19, 64, 6)]
            {
                let w: Vec<f32> = (0..rows * cols)
                    .map(|i| (i as f32 * 0.37).sin() * 2.0)
                    .collect();
                let x: Vec<f32> = (0..n_tok * cols)
                    .map(|i| (i as f32 * 0.13).cos() * 3.0)
                    .collect();
                let wq = quantize_matrix(ty, &w, rows, cols).unwrap();
                let acts = ActBatch::new(ty, &x, cols).unwrap();
                let mut want = vec![0f32; rows * n_tok];
                gemm_scalar(&wq, &acts, &mut want).unwrap();
                let rb = wq.len() / rows;
                for r in 0..rows {
                    for t in 0..n_tok {
                        let a = crate::Activation::new(ty, &x[t * cols..(t + 1) * cols]).unwrap();
                        let v = a.dot(&wq[r * rb..(r + 1) * rb]).unwrap();
                        assert_eq!(v.to_bits(), want[r * n_tok + t].to_bits());
                    }
                }
                for isa in crate::available_isas() {
                    let mut got = vec![0f32; rows * n_tok];
                    gemm_isa(isa, &wq, &acts, &mut got).unwrap();
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(g.to_bits(), w.to_bits(), "{ty} {isa} {rows}x{cols}x{n_tok}");
                    }
                }
            }
        }
    }
}
