//! Q5_0 matrices in groups of 16 rows (see [`crate::packed`]). llama.cpp does not repack Q5_0
//! and sums its products in `vec_dot`'s order (eight float lanes per block); this form sums each
//! 32-element block as one exact integer and adds it with one FMA, `acc = fma(f32(isum),
//! d_w · d_a, acc)` — the order llama.cpp's repacked Q4_0 kernel uses, which rounds less. It is
//! hearth's fast order: results differ from llama.cpp's by float rounding only (the engine keeps
//! llama.cpp's order when asked for exact orders).
//!
//! Per group and per block, [`GROUP_BLOCK_BYTES`] (= 16 × 22, the original size): the low
//! nibbles `[j 0..4][row 0..16][4 bytes]` as in [`super::q4_0`] (byte `4j + b` of a row's `qs`:
//! element `4j + b` low, `16 + 4j + b` high), then per `j` two 64-bit masks of fifth bits (bit
//! `4·row + b` for element `4j + b`, then for element `16 + 4j + b`), then `d` of each row as f16.

use super::{Acts, Out, ROWS};
use crate::common::f16_to_f32;
use crate::isa::{Isa, active_isa};
use crate::{GgmlType, QuantError, row_bytes};

const QK: usize = 32;
const Q5_0_BYTES: usize = 22;
const Q8_0_BYTES: usize = 34;
pub(crate) const MASKS: usize = 64 * 4;
pub(crate) const D: usize = MASKS + 8 * 8;
/// Bytes of one block of one group of 16 rows.
pub const GROUP_BLOCK_BYTES: usize = D + 2 * ROWS;

/// Bytes of a packed `rows × cols` Q5_0 matrix.
pub fn packed_bytes(rows: usize, cols: usize) -> Result<usize, QuantError> {
    row_bytes(GgmlType::Q5_0, cols)?;
    Ok(rows.div_ceil(ROWS) * (cols / QK) * GROUP_BLOCK_BYTES)
}

/// Packs up to `16 · groups` rows (`src`, `cols` elements each; the last group may be short)
/// into exactly `groups` packed groups (`dst`).
pub fn pack(src: &[u8], cols: usize, dst: &mut [u8]) -> Result<(), QuantError> {
    let rb = row_bytes(GgmlType::Q5_0, cols)?;
    let gb = cols / QK * GROUP_BLOCK_BYTES;
    super::start_pack(GgmlType::Q5_0, src, rb, gb, dst)?;
    for (r, row) in src.chunks_exact(rb).enumerate() {
        let (g, lane) = (r / ROWS, r % ROWS);
        for (b, wb) in row.chunks_exact(Q5_0_BYTES).enumerate() {
            let p = &mut dst[g * gb + b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
            for (i, &byte) in wb[6..22].iter().enumerate() {
                p[(i / 4) * 64 + lane * 4 + i % 4] = byte;
            }
            let qh = u32::from_le_bytes(wb[2..6].try_into().unwrap());
            for j in 0..4 {
                for half in 0..2 {
                    let at = MASKS + (2 * j + half) * 8;
                    let mut m = u64::from_le_bytes(p[at..at + 8].try_into().unwrap());
                    for bb in 0..4 {
                        let e = 16 * half + 4 * j + bb;
                        m |= (((qh >> e) & 1) as u64) << (4 * lane + bb);
                    }
                    p[at..at + 8].copy_from_slice(&m.to_le_bytes());
                }
            }
            p[D + 2 * lane..D + 2 * lane + 2].copy_from_slice(&wb[..2]);
        }
    }
    Ok(())
}

/// Row `lane` of a packed group back in GGUF's Q5_0 layout.
fn unpack_row(group: &[u8], nb: usize, lane: usize) -> Vec<u8> {
    let mut row = vec![0u8; nb * Q5_0_BYTES];
    for (b, wb) in row.chunks_exact_mut(Q5_0_BYTES).enumerate() {
        let p = &group[b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
        wb[..2].copy_from_slice(&p[D + 2 * lane..D + 2 * lane + 2]);
        let mut qh = 0u32;
        for j in 0..4 {
            for half in 0..2 {
                let at = MASKS + (2 * j + half) * 8;
                let m = u64::from_le_bytes(p[at..at + 8].try_into().unwrap());
                for bb in 0..4 {
                    qh |= (((m >> (4 * lane + bb)) & 1) as u32) << (16 * half + 4 * j + bb);
                }
            }
        }
        wb[2..6].copy_from_slice(&qh.to_le_bytes());
        for i in 0..16 {
            wb[6 + i] = p[(i / 4) * 64 + lane * 4 + i % 4];
        }
    }
    row
}

/// The block order on one GGUF Q5_0 row and one Q8_0 activation: per block the exact integer
/// `Σ (q − 16)·y`, then `acc = fma(f32(isum), d_w · d_a, acc)`. The scalar twin of the kernels.
pub fn dot_block_order(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (wb, ab) in w.chunks_exact(Q5_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let qh = u32::from_le_bytes(wb[2..6].try_into().unwrap());
        let mut isum = 0i32;
        for e in 0..QK {
            let nib = (wb[6 + e % 16] >> (4 * (e / 16))) & 0x0f;
            let q = (nib | ((((qh >> e) & 1) as u8) << 4)) as i32 - 16;
            isum += q * ab[2 + e] as i8 as i32;
        }
        let d = f16_to_f32(u16::from_le_bytes([wb[0], wb[1]]))
            * f16_to_f32(u16::from_le_bytes([ab[0], ab[1]]));
        acc = (isum as f32).mul_add(d, acc);
    }
    acc
}

fn check(packed: &[u8], cols: usize, acts: usize, out: &Out) -> Result<usize, QuantError> {
    let ab = row_bytes(GgmlType::Q8_0, cols)?;
    row_bytes(GgmlType::Q5_0, cols)?;
    let gb = cols / QK * GROUP_BLOCK_BYTES;
    super::check(GgmlType::Q5_0, packed.len(), gb, acts, ab, out)
}

/// `w[r] · acts[t]` for the `out.rows()` rows of the packed groups in `packed` and the
/// `out.n_tok()` Q8_0 activation rows in `acts`, into `out`. Single-threaded.
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
        let prefetch = n_tok <= super::nibbles::T;
        super::drive::<{ super::nibbles::T }>(packed, gb, out, |group, t0, wide, lanes| {
            let nt = if wide { super::nibbles::T } else { 1 };
            let a = &acts[t0 * ab..(t0 + nt) * ab];
            let ng = &sums[t0 * nb..(t0 + nt) * nb];
            // SAFETY: the CPU has AVX-512 VNNI (checked above); sizes were checked.
            unsafe {
                if wide {
                    super::nibbles::dot16::<{ super::nibbles::T }, true, GROUP_BLOCK_BYTES, MASKS, D>(
                        group, nb, a, ng, prefetch, lanes,
                    )
                } else {
                    super::nibbles::dot16::<1, true, GROUP_BLOCK_BYTES, MASKS, D>(
                        group, nb, a, ng, prefetch, lanes,
                    )
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
        |r| Ok(unpack_row(&packed[(r / ROWS) * gb..][..gb], nb, r % ROWS)),
        |row, a, _| dot_block_order(row, a),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::Case;
    use super::*;

    #[test]
    fn packed_products_equal_the_block_order_and_stay_near_vec_dot() {
        for (rows, cols, n_tok) in [(16, 32, 1), (21, 640, 7), (40, 2048, 11)] {
            let c = Case::new(GgmlType::Q5_0, rows, cols, n_tok);
            let gb = cols / QK * GROUP_BLOCK_BYTES;
            for r in 0..rows {
                let back = unpack_row(&c.packed[(r / ROWS) * gb..][..gb], cols / QK, r % ROWS);
                assert_eq!(back, c.row(r));
            }
            let pa = Acts::new(GgmlType::Q5_0, cols, c.acts.clone()).unwrap();
            c.check(
                |isa, out| gemm_isa(isa, &c.packed, cols, &pa, out).unwrap(),
                |row, a, _| dot_block_order(row, a),
            );
            for r in 0..rows {
                let (g, v) = (
                    dot_block_order(c.row(r), c.act(0)),
                    crate::vec_dot(GgmlType::Q5_0, c.row(r), c.act(0), cols).unwrap(),
                );
                assert!((g - v).abs() <= 1e-5 * v.abs().max(1.0), "{g} vs {v}");
            }
        }
    }
}
