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
const Q8_0_BYTES: usize = 34;
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
    let rows = check(packed, cols, acts.len(), out)?;
    let (ab, n_tok) = (row_bytes(GgmlType::Q8_0, cols)?, out.n_tok());
    let nb = cols / QK;
    let gb = nb * GROUP_BLOCK_BYTES;
    #[cfg(target_arch = "x86_64")]
    if isa.min(crate::isa::detected_isa()) >= Isa::Avx512Vnni {
        let prefetch = n_tok <= simd::T;
        super::drive::<{ simd::T }>(packed, gb, out, |group, t0, wide, lanes| {
            let nt = if wide { simd::T } else { 1 };
            let a = &acts[t0 * ab..(t0 + nt) * ab];
            let ng = &sums[t0 * nb..(t0 + nt) * nb];
            // SAFETY: the CPU has AVX-512 VNNI (checked above); sizes were checked.
            unsafe {
                if wide {
                    simd::dot16::<{ simd::T }>(group, nb, a, ng, prefetch, lanes)
                } else {
                    simd::dot16::<1>(group, nb, a, ng, prefetch, lanes)
                }
            }
        });
        return Ok(());
    }
    let _ = isa;
    for r in 0..rows {
        let row = unpack_row(&packed[(r / ROWS) * gb..][..gb], nb, r % ROWS);
        for (t, a) in acts.chunks_exact(ab).enumerate() {
            out.put(t, r, &[dot_scalar(&row, a)]);
        }
    }
    Ok(())
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
        let m4 = _mm512_set1_epi8(0x0f);
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..nb {
            // SAFETY (raw loads below): `p` is one whole packed block and `y(t)` one whole Q8_0
            // block of token t < nt (asserted above); offsets stay inside them.
            let p = unsafe { group.as_ptr().add(b * GROUP_BLOCK_BYTES) };
            // Fetch 16 blocks (5-9 KiB) ahead while this one computes: a decode step streams
            // through every weight once (a batch finds them in cache).
            for line in (0..GROUP_BLOCK_BYTES).step_by(64).filter(|_| prefetch) {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(16 * GROUP_BLOCK_BYTES + line).cast());
            }
            let mut lo = [_mm512_setzero_si512(); 4];
            let mut hi = [_mm512_setzero_si512(); 4];
            for j in 0..4 {
                let x = unsafe { _mm512_loadu_si512(p.add(j * 64).cast()) };
                lo[j] = _mm512_and_si512(x, m4);
                hi[j] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4);
            }
            let dw = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(D).cast())) };
            for (t, acc) in acc.iter_mut().enumerate().take(nt) {
                let y = unsafe { a.as_ptr().add((t * nb + b) * Q8_0_BYTES) };
                let ys = |k: usize| unsafe {
                    _mm512_set1_epi32((y.add(2 + k) as *const i32).read_unaligned())
                };
                // The offset of the unsigned values: -8 Σ y.
                let mut isum = _mm512_set1_epi32(-8 * sums[t * nb + b]);
                for j in 0..4 {
                    isum = _mm512_dpbusd_epi32(isum, lo[j], ys(4 * j));
                    isum = _mm512_dpbusd_epi32(isum, hi[j], ys(16 + 4 * j));
                }
                let da = crate::common::f16_to_f32(u16::from_le_bytes(unsafe {
                    *(y as *const [u8; 2])
                }));
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
    fn packed_products_equal_the_repacked_order_bit_for_bit() {
        // 11 tokens: one block of 8 sharing each weight load, then 3 alone.
        for (rows, cols, n_tok) in [(16, 32, 1), (21, 512, 7), (40, 2048, 11)] {
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
