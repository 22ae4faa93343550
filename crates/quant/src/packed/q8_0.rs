//! Q8_0 matrices in groups of 16 rows (see [`crate::packed`]), in hearth's fast block order:
//! per 32-element block the exact integer `Σ w·y`, then `acc = fma(f32(isum), d_w · d_a, acc)`
//! (llama.cpp's `vec_dot` sums eight float lanes per block instead; the engine keeps that order
//! when asked for exact orders).
//!
//! Per group and per block, [`GROUP_BLOCK_BYTES`] (= 16 × 34, the original size): the quants
//! `[j 0..8][row 0..16][4 bytes]` stored as `w + 128` (unsigned, for `vpdpbusd`; the kernels
//! subtract `128 · Σ y`), then `d` of each row as f16.

use super::{Acts, Out, ROWS};
use crate::common::f16_to_f32;
use crate::isa::{Isa, active_isa};
use crate::{GgmlType, QuantError, row_bytes};

const QK: usize = 32;
const Q8_0_BYTES: usize = 34;
const D: usize = 64 * 8;
/// Bytes of one block of one group of 16 rows.
pub const GROUP_BLOCK_BYTES: usize = D + 2 * ROWS;

/// Bytes of a packed `rows × cols` Q8_0 matrix.
pub fn packed_bytes(rows: usize, cols: usize) -> Result<usize, QuantError> {
    row_bytes(GgmlType::Q8_0, cols)?;
    Ok(rows.div_ceil(ROWS) * (cols / QK) * GROUP_BLOCK_BYTES)
}

/// Packs up to `16 · groups` rows (`src`, `cols` elements each; the last group may be short)
/// into exactly `groups` packed groups (`dst`).
pub fn pack(src: &[u8], cols: usize, dst: &mut [u8]) -> Result<(), QuantError> {
    let rb = row_bytes(GgmlType::Q8_0, cols)?;
    let gb = cols / QK * GROUP_BLOCK_BYTES;
    super::start_pack(GgmlType::Q8_0, src, rb, gb, dst)?;
    for (r, row) in src.chunks_exact(rb).enumerate() {
        let (g, lane) = (r / ROWS, r % ROWS);
        for (b, wb) in row.chunks_exact(Q8_0_BYTES).enumerate() {
            let p = &mut dst[g * gb + b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
            for (e, &q) in wb[2..].iter().enumerate() {
                p[(e / 4) * 64 + lane * 4 + e % 4] = q ^ 0x80;
            }
            p[D + 2 * lane..D + 2 * lane + 2].copy_from_slice(&wb[..2]);
        }
    }
    Ok(())
}

/// Row `r` of a packed matrix (`cols` elements) back in GGUF's Q8_0 layout.
pub fn unpack_row(packed: &[u8], cols: usize, r: usize, out: &mut [u8]) -> Result<(), QuantError> {
    let nb = cols / QK;
    let gb = nb * GROUP_BLOCK_BYTES;
    let (g, lane) = (r / ROWS, r % ROWS);
    if row_bytes(GgmlType::Q8_0, cols)? != out.len() || packed.len() < (g + 1) * gb {
        return Err(QuantError::Length {
            ty: GgmlType::Q8_0,
            what: "the packed row",
            unit: "bytes",
            expected: (g + 1) * gb,
            got: packed.len(),
        });
    }
    for (b, wb) in out.chunks_exact_mut(Q8_0_BYTES).enumerate() {
        let p = &packed[g * gb + b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
        wb[..2].copy_from_slice(&p[D + 2 * lane..D + 2 * lane + 2]);
        for e in 0..QK {
            wb[2 + e] = p[(e / 4) * 64 + lane * 4 + e % 4] ^ 0x80;
        }
    }
    Ok(())
}

/// The block order on one GGUF Q8_0 row and one Q8_0 activation: per block the exact integer
/// `Σ w·y`, then `acc = fma(f32(isum), d_w · d_a, acc)`. The scalar twin of the kernels.
pub fn dot_block_order(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (wb, ab) in w.chunks_exact(Q8_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let isum: i32 = wb[2..]
            .iter()
            .zip(&ab[2..])
            .map(|(&x, &y)| x as i8 as i32 * y as i8 as i32)
            .sum();
        let d = f16_to_f32(u16::from_le_bytes([wb[0], wb[1]]))
            * f16_to_f32(u16::from_le_bytes([ab[0], ab[1]]));
        acc = (isum as f32).mul_add(d, acc);
    }
    acc
}

fn check(packed: &[u8], cols: usize, acts: usize, out: &Out) -> Result<usize, QuantError> {
    let ab = row_bytes(GgmlType::Q8_0, cols)?;
    let gb = cols / QK * GROUP_BLOCK_BYTES;
    super::check(GgmlType::Q8_0, packed.len(), gb, acts, ab, out)
}

/// `w[r] · acts[t]` for the `out.rows()` rows of the packed groups in `packed` and the
/// `out.n_tok()` Q8_0 activation rows of `acts`, into `out`. Single-threaded.
pub fn gemm(packed: &[u8], cols: usize, acts: &Acts, out: &mut Out) -> Result<(), QuantError> {
    gemm_isa(active_isa(), packed, cols, acts, out)
}

/// [`gemm`] at a given ISA level (capped by what the CPU has).
pub fn gemm_isa(
    isa: Isa,
    packed: &[u8],
    cols: usize,
    acts: &Acts,
    out: &mut Out,
) -> Result<(), QuantError> {
    let (acts, sums) = (acts.data(), acts.sums());
    check(packed, cols, acts.len(), out)?;
    let (ab, n_tok) = (row_bytes(GgmlType::Q8_0, cols)?, out.n_tok());
    let nb = cols / QK;
    let gb = nb * GROUP_BLOCK_BYTES;
    #[cfg(target_arch = "x86_64")]
    if isa.min(crate::isa::detected_isa()) >= Isa::Avx512Vnni {
        let prefetch = n_tok <= simd::T;
        super::drive::<{ simd::T }>(packed, gb, out, |group, t0, wide, lanes| {
            let nt = if wide { simd::T } else { 1 };
            let a = &acts[t0 * ab..(t0 + nt) * ab];
            let s = &sums[t0 * nb..(t0 + nt) * nb];
            // SAFETY: the CPU has AVX-512 VNNI (checked above); sizes were checked.
            unsafe {
                if wide {
                    simd::dot16::<{ simd::T }>(group, nb, a, s, prefetch, lanes)
                } else {
                    simd::dot16::<1>(group, nb, a, s, prefetch, lanes)
                }
            }
        });
        return Ok(());
    }
    let _ = isa;
    super::scalar_product(
        acts,
        ab,
        out,
        |r| {
            let mut row = vec![0u8; ab];
            unpack_row(packed, cols, r, &mut row)?;
            Ok(row)
        },
        |row, a, _| dot_block_order(row, a),
    )
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;
    use std::arch::x86_64::*;

    /// Tokens handled together.
    pub(super) const T: usize = 8;

    /// The 16 rows of one packed group · `nt` (≤ [`T`]) Q8_0 activations `a` (`sums[t·nb + b]
    /// = Σ y` of their blocks), lane = row, one output per token.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn dot16<const NT: usize>(
        group: &[u8],
        nb: usize,
        a: &[u8],
        sums: &[i32],
        prefetch: bool,
        out: &mut [[f32; ROWS]; T],
    ) {
        let nt = NT;
        assert!((1..=T).contains(&nt));
        assert!(group.len() >= nb * GROUP_BLOCK_BYTES && a.len() >= nt * nb * Q8_0_BYTES);
        assert!(sums.len() >= nt * nb);
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..nb {
            // SAFETY (raw loads below): `p` is one whole packed block and `y` one whole Q8_0
            // block of a token t < nt (asserted above); offsets stay inside them.
            let p = unsafe { group.as_ptr().add(b * GROUP_BLOCK_BYTES) };
            // A decode step streams through every weight once (a batch finds them in cache).
            if prefetch {
                crate::packed::prefetch_ahead(p, GROUP_BLOCK_BYTES, 16 * GROUP_BLOCK_BYTES);
            }
            let w: [__m512i; 8] =
                std::array::from_fn(|j| unsafe { _mm512_loadu_si512(p.add(j * 64).cast()) });
            let dw = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(D).cast())) };
            for (t, acc) in acc.iter_mut().enumerate().take(nt) {
                let y = unsafe { a.as_ptr().add((t * nb + b) * Q8_0_BYTES) };
                let ys = |k: usize| unsafe {
                    _mm512_set1_epi32((y.add(2 + k) as *const i32).read_unaligned())
                };
                // The weights are stored + 128: take 128 Σ y back off.
                let mut isum = _mm512_set1_epi32(-128 * sums[t * nb + b]);
                for (j, &wj) in w.iter().enumerate() {
                    isum = _mm512_dpbusd_epi32(isum, wj, ys(4 * j));
                }
                let da = f16_to_f32(u16::from_le_bytes(unsafe { *(y as *const [u8; 2]) }));
                let d = _mm512_mul_ps(dw, _mm512_set1_ps(da));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, *acc);
            }
        }
        for (o, acc) in out.iter_mut().zip(acc).take(nt) {
            // SAFETY: `o` holds 16 floats.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), acc) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Case;
    use super::*;

    #[test]
    fn packed_products_equal_the_block_order_and_stay_near_vec_dot() {
        for (rows, cols, n_tok) in [(16, 32, 1), (21, 640, 7), (40, 2048, 11)] {
            let c = Case::new(GgmlType::Q8_0, rows, cols, n_tok);
            let mut back = vec![0u8; c.row(0).len()];
            for r in 0..rows {
                unpack_row(&c.packed, cols, r, &mut back).unwrap();
                assert_eq!(back, c.row(r));
            }
            let pa = Acts::new(GgmlType::Q8_0, cols, c.acts.clone()).unwrap();
            c.check(
                |isa, out| gemm_isa(isa, &c.packed, cols, &pa, out).unwrap(),
                |row, a, _| dot_block_order(row, a),
            );
            for r in 0..rows {
                let (g, v) = (
                    dot_block_order(c.row(r), c.act(0)),
                    crate::vec_dot(GgmlType::Q8_0, c.row(r), c.act(0), cols).unwrap(),
                );
                assert!((g - v).abs() <= 1e-4 * v.abs().max(1.0), "{g} vs {v}");
            }
        }
        assert!(unpack_row(&[0u8; 10], 32, 0, &mut [0u8; 34]).is_err());
    }
}
