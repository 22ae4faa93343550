//! Q4_K matrices in groups of 16 rows (see [`crate::packed`]), in the float order of llama.cpp's
//! repacked Q4_K kernels (`ggml_gemv/gemm_q4_K_8x8_q8_K`, see [`crate::gemm_k`]).
//!
//! Per group of 16 rows and per 256-element super-block, [`GROUP_SB_BYTES`] bytes:
//! - the quants, `[chunk 0..4][j 0..8][row 0..16][4 bytes]`: byte `b` of row `r` is byte
//!   `32·chunk + 4j + b` of that row's `qs` (low nibble: element `64·chunk + 4j + b`, high
//!   nibble: element `64·chunk + 32 + 4j + b`), so one 64-byte load holds 4 elements of 16
//!   rows, ready for `vpdpbusd` against 4 broadcast activation bytes;
//! - the 6-bit scales and mins, `[sub-block 0..8][row]` as bytes;
//! - `d` and `dmin` of each row as f16.
//!
//! The packed matrix is as large as the original (2,368 bytes against 16 × 144), so the engine
//! can drop the mapped original from memory once the copy is made. Rows past the matrix's last
//! in its last group are zero.

use crate::gemm_k::dot_q4_k_repacked;
use crate::isa::{Isa, active_isa};
use crate::{GgmlType, QK_K, QuantError, row_bytes};

use super::{Acts, Out, ROWS};
const Q4_K_BYTES: usize = 144;
const Q8_K_BYTES: usize = 292;
const Q_BYTES: usize = QK_K / 2 * ROWS;
pub(crate) const SC: usize = Q_BYTES;
pub(crate) const MN: usize = SC + 8 * ROWS;
pub(crate) const D: usize = MN + 8 * ROWS;
pub(crate) const DMIN: usize = D + 2 * ROWS;
/// Bytes of one super-block of one group of 16 rows.
pub const GROUP_SB_BYTES: usize = DMIN + 2 * ROWS;

/// Bytes of a packed `rows × cols` Q4_K matrix.
pub fn packed_bytes(rows: usize, cols: usize) -> Result<usize, QuantError> {
    row_bytes(GgmlType::Q4K, cols)?;
    Ok(rows.div_ceil(ROWS) * (cols / QK_K) * GROUP_SB_BYTES)
}

/// Packs whole groups: `src` holds up to `16 · groups` rows of `cols` elements (the last group
/// may be short), `dst` exactly `groups` packed groups.
pub fn pack(src: &[u8], cols: usize, dst: &mut [u8]) -> Result<(), QuantError> {
    let rb = row_bytes(GgmlType::Q4K, cols)?;
    let nsb = cols / QK_K;
    let gb = nsb * GROUP_SB_BYTES;
    super::start_pack(GgmlType::Q4K, src, rb, gb, dst)?;
    for (r, row) in src.chunks_exact(rb).enumerate() {
        let (g, lane) = (r / ROWS, r % ROWS);
        for (s, wb) in row.chunks_exact(Q4_K_BYTES).enumerate() {
            let p = &mut dst[g * gb + s * GROUP_SB_BYTES..][..GROUP_SB_BYTES];
            for (i, &byte) in wb[16..144].iter().enumerate() {
                // i = 32·chunk + 4j + b.
                let (cj, b) = (i / 4, i % 4);
                p[cj * 64 + lane * 4 + b] = byte;
            }
            let scales = &wb[4..16];
            for sub in 0..8 {
                let (sc, mn) = scale_min(sub, scales);
                p[SC + sub * ROWS + lane] = sc;
                p[MN + sub * ROWS + lane] = mn;
            }
            p[D + 2 * lane..D + 2 * lane + 2].copy_from_slice(&wb[0..2]);
            p[DMIN + 2 * lane..DMIN + 2 * lane + 2].copy_from_slice(&wb[2..4]);
        }
    }
    Ok(())
}

/// `get_scale_min_k4`.
fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Row `lane` of a packed group back in GGUF's Q4_K layout (scales re-encoded).
fn unpack_row(group: &[u8], nsb: usize, lane: usize) -> Vec<u8> {
    let mut row = vec![0u8; nsb * Q4_K_BYTES];
    for (s, wb) in row.chunks_exact_mut(Q4_K_BYTES).enumerate() {
        let p = &group[s * GROUP_SB_BYTES..][..GROUP_SB_BYTES];
        wb[0..2].copy_from_slice(&p[D + 2 * lane..D + 2 * lane + 2]);
        wb[2..4].copy_from_slice(&p[DMIN + 2 * lane..DMIN + 2 * lane + 2]);
        let sc: [u8; 8] = std::array::from_fn(|j| p[SC + j * ROWS + lane]);
        let mn: [u8; 8] = std::array::from_fn(|j| p[MN + j * ROWS + lane]);
        for j in 0..4 {
            wb[4 + j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            wb[8 + j] = mn[j] | ((mn[j + 4] >> 4) << 6);
            wb[12 + j] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
        }
        for i in 0..128 {
            wb[16 + i] = p[(i / 4) * 64 + lane * 4 + i % 4];
        }
    }
    row
}

fn check(packed: &[u8], cols: usize, acts: usize, out: &Out) -> Result<usize, QuantError> {
    let ab = row_bytes(GgmlType::Q8K, cols)?;
    let gb = cols / QK_K * GROUP_SB_BYTES;
    super::check(GgmlType::Q4K, packed.len(), gb, acts, ab, out)
}

/// `w[r] · acts[t]` for the `out.rows()` rows of the packed groups in `packed` and the
/// `out.n_tok()` Q8_K activation rows in `acts`, into `out`; tokens `t < n_gemm` take the
/// GEMM's float order, the rest the GEMV's (a decode step is one token, `n_gemm` 0).
/// Single-threaded.
pub fn gemm(
    packed: &[u8],
    cols: usize,
    acts: &Acts,
    n_gemm: usize,
    out: &mut Out,
) -> Result<(), QuantError> {
    gemm_isa(active_isa(), packed, cols, acts, n_gemm, out)
}

/// [`gemm`] at a given ISA level (capped by what the CPU has).
pub fn gemm_isa(
    isa: Isa,
    packed: &[u8],
    cols: usize,
    acts: &Acts,
    n_gemm: usize,
    out: &mut Out,
) -> Result<(), QuantError> {
    let (acts, sums) = (acts.data(), acts.sums());
    check(packed, cols, acts.len(), out)?;
    let nsb = cols / QK_K;
    let (ab, gb) = (nsb * Q8_K_BYTES, nsb * GROUP_SB_BYTES);
    #[cfg(target_arch = "x86_64")]
    if isa.min(crate::isa::detected_isa()) >= Isa::Avx512Vnni {
        let prefetch = out.n_tok() == 1;
        // Blocks of T (2) tokens start at even tokens, so they never straddle `n_gemm` (a
        // multiple of 4): a block is all GEMM order or all GEMV order.
        super::drive::<{ simd::T }>(packed, gb, out, |group, t0, wide, lanes| {
            let nt = if wide { simd::T } else { 1 };
            let a = &acts[t0 * ab..(t0 + nt) * ab];
            let q8 = &sums[t0 * nsb * 8..(t0 + nt) * nsb * 8];
            let gemm = t0 < n_gemm;
            // SAFETY: the CPU has AVX-512 VNNI (checked above); sizes were checked.
            unsafe {
                if wide {
                    simd::dot16::<{ simd::T }>(group, nsb, a, q8, gemm, prefetch, lanes)
                } else {
                    simd::dot16::<1>(group, nsb, a, q8, gemm, prefetch, lanes)
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
        |r| Ok(unpack_row(&packed[(r / ROWS) * gb..][..gb], nsb, r % ROWS)),
        |row, a, t| dot_q4_k_repacked(row, a, t < n_gemm),
    )
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;
    use std::arch::x86_64::*;

    /// Tokens handled together (each load and unpacking of the weights serves them all).
    pub(super) const T: usize = 2;

    /// The 16 rows of one packed group · `nt` (≤ [`T`]) Q8_K activations `a` (with their
    /// `q8s`, 8 per super-block), lane = row; `gemm` picks the GEMM's float order (one FMA per
    /// 64-element chunk) over the GEMV's (one per super-block). The integer sums are exact, so
    /// each lane equals [`dot_q4_k_repacked`] on its row.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn dot16<const NT: usize>(
        group: &[u8],
        nsb: usize,
        a: &[u8],
        q8s: &[i32],
        gemm: bool,
        prefetch: bool,
        out: &mut [[f32; ROWS]; T],
    ) {
        let nt = NT;
        assert!((1..=T).contains(&nt));
        assert!(group.len() >= nsb * GROUP_SB_BYTES && a.len() >= nt * nsb * Q8_K_BYTES);
        assert!(q8s.len() >= nt * nsb * 8);
        let m4 = _mm512_set1_epi8(0x0f);
        let mut acc = [_mm512_setzero_ps(); NT];
        let mut acc_min = [_mm512_setzero_ps(); NT];
        for s in 0..nsb {
            // SAFETY (every raw load below): `p` is one whole packed super-block and `ab(t)`
            // one whole Q8_K block of a token t < nt (asserted above); offsets stay inside.
            let p = unsafe { group.as_ptr().add(s * GROUP_SB_BYTES) };
            // Fetch two super-blocks ahead (5-7 KiB; one ahead was 6% slower at decode) while
            // this one computes: a decode step streams through every weight once (a batch
            // finds them in cache).
            if prefetch {
                crate::packed::prefetch_ahead(p, GROUP_SB_BYTES, 2 * GROUP_SB_BYTES);
            }
            let ab = |t: usize| unsafe { a.as_ptr().add((t * nsb + s) * Q8_K_BYTES) };
            let half = |at: usize| unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(at).cast())) };
            let (d, dmin) = (half(D), half(DMIN));
            let bytes16 =
                |at: usize| unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(at).cast())) };
            let mut isum = [_mm512_setzero_si512(); NT];
            let mut imin = [_mm512_setzero_si512(); NT];
            let mut dd = [_mm512_setzero_ps(); NT];
            let mut dm = [_mm512_setzero_ps(); NT];
            for t in 0..nt {
                let da = _mm512_set1_ps(f32::from_le_bytes(unsafe { *(ab(t) as *const [u8; 4]) }));
                dd[t] = _mm512_mul_ps(d, da);
                dm[t] = _mm512_mul_ps(dmin, da);
            }
            for c in 0..4 {
                let mut lo = [_mm512_setzero_si512(); NT];
                let mut hi = [_mm512_setzero_si512(); NT];
                for j in 0..8 {
                    let x = unsafe { _mm512_loadu_si512(p.add((c * 8 + j) * 64).cast()) };
                    let l = _mm512_and_si512(x, m4);
                    let h = _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4);
                    for t in 0..nt {
                        let qa = unsafe { ab(t).add(4) };
                        let y = |k: usize| unsafe {
                            _mm512_set1_epi32((qa.add(k) as *const i32).read_unaligned())
                        };
                        lo[t] = _mm512_dpbusd_epi32(lo[t], l, y(64 * c + 4 * j));
                        hi[t] = _mm512_dpbusd_epi32(hi[t], h, y(64 * c + 32 + 4 * j));
                    }
                }
                let (sub_lo, sub_hi) = (2 * c * ROWS, (2 * c + 1) * ROWS);
                let (sc_lo, sc_hi) = (bytes16(SC + sub_lo), bytes16(SC + sub_hi));
                let (mn_lo, mn_hi) = (bytes16(MN + sub_lo), bytes16(MN + sub_hi));
                for t in 0..nt {
                    let q8 = &q8s[(t * nsb + s) * 8..][..8];
                    let pair = _mm512_add_epi32(
                        _mm512_mullo_epi32(lo[t], sc_lo),
                        _mm512_mullo_epi32(hi[t], sc_hi),
                    );
                    let pmin = _mm512_add_epi32(
                        _mm512_mullo_epi32(mn_lo, _mm512_set1_epi32(q8[2 * c])),
                        _mm512_mullo_epi32(mn_hi, _mm512_set1_epi32(q8[2 * c + 1])),
                    );
                    if gemm {
                        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pair), dd[t], acc[t]);
                        acc_min[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pmin), dm[t], acc_min[t]);
                    } else {
                        isum[t] = _mm512_add_epi32(isum[t], pair);
                        imin[t] = _mm512_add_epi32(imin[t], pmin);
                    }
                }
            }
            if !gemm {
                for t in 0..nt {
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), dd[t], acc[t]);
                    acc_min[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin[t]), dm[t], acc_min[t]);
                }
            }
        }
        for t in 0..nt {
            // SAFETY: `out[t]` holds 16 floats.
            unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), _mm512_sub_ps(acc[t], acc_min[t])) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Case;
    use super::*;

    /// Every ISA, GEMV and GEMM (both orders: 9 tokens = 8 in the GEMM order + 1 in the
    /// GEMV's), equal bit for bit to the scalar order on the original rows, including a short
    /// last group, and several runs of groups and passes of tokens (200 × 4096, 70 tokens);
    /// the packing round-trips.
    #[test]
    fn packed_products_equal_the_repacked_order_bit_for_bit() {
        for (rows, cols, n_tok) in [(16, 256, 1), (21, 512, 7), (40, 2048, 9), (200, 4096, 70)] {
            let c = Case::new(GgmlType::Q4K, rows, cols, n_tok);
            let gb = cols / QK_K * GROUP_SB_BYTES;
            for r in 0..rows {
                let back = unpack_row(&c.packed[(r / ROWS) * gb..][..gb], cols / QK_K, r % ROWS);
                assert_eq!(back, c.row(r), "row {r}");
            }
            let n_gemm = if n_tok > 1 { n_tok - n_tok % 4 } else { 0 };
            let pa = Acts::new(GgmlType::Q4K, cols, c.acts.clone()).unwrap();
            c.check(
                |isa, out| gemm_isa(isa, &c.packed, cols, &pa, n_gemm, out).unwrap(),
                |row, a, t| dot_q4_k_repacked(row, a, t < n_gemm),
            );
        }
        let mut one = [0f32; 1];
        let mut out = Out::token_major(&mut one, 1).unwrap();
        let a = Acts::new(GgmlType::Q4K, 256, vec![0u8; 292]).unwrap();
        assert!(gemm(&[0u8; 10], 256, &a, 0, &mut out).is_err());
    }
}
