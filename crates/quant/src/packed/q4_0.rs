//! Q4_0 matrices in groups of 16 rows (see [`crate::packed`]), in the float order of llama.cpp's
//! repacked Q4_0 kernels (`ggml_gemv/gemm_q4_0_8x8_q8_0`, see [`crate::gemm_q4`]): per block
//! `isum = Σ (q − 8)·y` exactly, then `acc = fma(f32(isum), d_w · d_a, acc)`, block after block.
//!
//! Per group and per 32-element block, [`GROUP_BLOCK_BYTES`] (= 16 × 18, the original size):
//! the quants `[j 0..4][row 0..16][4 bytes]` (byte `b` of row `r` is byte `4j + b` of that
//! row's `qs`: low nibble element `4j + b`, high nibble element `16 + 4j + b`), then `d` of each
//! row as f16.

use super::{Acts, Out, ROWS};
use crate::gemm_q4::dot_scalar;
use crate::isa::{Isa, active_isa};
use crate::{GgmlType, QuantError, row_bytes};

const QK: usize = 32;
const Q4_0_BYTES: usize = 18;
const D: usize = 64 * 4;
/// Bytes of one block of one group of 16 rows.
pub const GROUP_BLOCK_BYTES: usize = D + 2 * ROWS;

/// Bytes of a packed `rows × cols` Q4_0 matrix.
pub fn packed_bytes(rows: usize, cols: usize) -> Result<usize, QuantError> {
    row_bytes(GgmlType::Q4_0, cols)?;
    Ok(rows.div_ceil(ROWS) * (cols / QK) * GROUP_BLOCK_BYTES)
}

/// Packs up to `16 · groups` rows (`src`, `cols` elements each; the last group may be short)
/// into exactly `groups` packed groups (`dst`).
pub fn pack(src: &[u8], cols: usize, dst: &mut [u8]) -> Result<(), QuantError> {
    let rb = row_bytes(GgmlType::Q4_0, cols)?;
    let gb = cols / QK * GROUP_BLOCK_BYTES;
    super::start_pack(GgmlType::Q4_0, src, rb, gb, dst)?;
    for (r, row) in src.chunks_exact(rb).enumerate() {
        let (g, lane) = (r / ROWS, r % ROWS);
        for (b, wb) in row.chunks_exact(Q4_0_BYTES).enumerate() {
            let p = &mut dst[g * gb + b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
            for (i, &byte) in wb[2..].iter().enumerate() {
                p[(i / 4) * 64 + lane * 4 + i % 4] = byte;
            }
            p[D + 2 * lane..D + 2 * lane + 2].copy_from_slice(&wb[..2]);
        }
    }
    Ok(())
}

/// Row `lane` of a packed group back in GGUF's Q4_0 layout.
fn unpack_row(group: &[u8], nb: usize, lane: usize) -> Vec<u8> {
    let mut row = vec![0u8; nb * Q4_0_BYTES];
    for (b, wb) in row.chunks_exact_mut(Q4_0_BYTES).enumerate() {
        let p = &group[b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
        wb[..2].copy_from_slice(&p[D + 2 * lane..D + 2 * lane + 2]);
        for i in 0..16 {
            wb[2 + i] = p[(i / 4) * 64 + lane * 4 + i % 4];
        }
    }
    row
}

fn check(packed: &[u8], cols: usize, acts: usize, out: &Out) -> Result<usize, QuantError> {
    let ab = row_bytes(GgmlType::Q8_0, cols)?;
    row_bytes(GgmlType::Q4_0, cols)?;
    let gb = cols / QK * GROUP_BLOCK_BYTES;
    super::check(GgmlType::Q4_0, packed.len(), gb, acts, ab, out)
}

/// `w[r] · acts[t]` for the `out.rows()` rows of the packed groups in `packed` and the
/// `out.n_tok()` Q8_0 activation rows in `acts`, into `out` (one token is the GEMV).
/// Single-threaded.
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
                    super::nibbles::dot16::<{ super::nibbles::T }, false, GROUP_BLOCK_BYTES, 0, D>(
                        group, nb, a, ng, prefetch, lanes,
                    )
                } else {
                    super::nibbles::dot16::<1, false, GROUP_BLOCK_BYTES, 0, D>(
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
        |row, a, _| dot_scalar(row, a),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::Case;
    use super::*;

    #[test]
    fn packed_products_equal_the_repacked_order_bit_for_bit() {
        // 11 tokens: one block of 8 sharing each weight load, then 3 alone.
        // 200 × 4096 with 70 tokens: several runs of groups and two passes of tokens.
        for (rows, cols, n_tok) in [(16, 32, 1), (21, 512, 7), (40, 2048, 11), (200, 4096, 70)] {
            let c = Case::new(GgmlType::Q4_0, rows, cols, n_tok);
            let gb = cols / QK * GROUP_BLOCK_BYTES;
            for r in 0..rows {
                let back = unpack_row(&c.packed[(r / ROWS) * gb..][..gb], cols / QK, r % ROWS);
                assert_eq!(back, c.row(r));
            }
            let pa = Acts::new(GgmlType::Q4_0, cols, c.acts.clone()).unwrap();
            c.check(
                |isa, out| gemm_isa(isa, &c.packed, cols, &pa, out).unwrap(),
                |row, a, _| dot_scalar(row, a),
            );
        }
        let mut one = [0f32; 1];
        let mut out = Out::token_major(&mut one, 1).unwrap();
        let a = Acts::new(GgmlType::Q4_0, 32, vec![0u8; 34]).unwrap();
        assert!(gemm(&[0u8; 10], 32, &a, &mut out).is_err());
    }
}
