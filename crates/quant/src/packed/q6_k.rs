//! Q6_K matrices in groups of 16 rows (see [`crate::packed`]), in the float order of llama.cpp's
//! tiled VNNI kernel (`ggml/src/ggml-cpu/tiled`, which it takes from 8 activation rows up):
//! per super-block the exact integer `isum = Σ_sub scale · Σ (q − 32)·y`, then
//! `acc = fma(f32(isum) · d_w, d_a, acc)`. For fewer rows llama.cpp takes `vec_dot`'s order
//! instead, so a packed Q6_K matrix is hearth's fast order for decode (the engine keeps the
//! original when asked for exact orders).
//!
//! Per group and per super-block, [`GROUP_SB_BYTES`] (= 16 × 210, the original size), in
//! GGUF's own split of the six bits:
//! - `ql`: `[half 0..2][part 0..2][j 0..8][row 0..16][4 bytes]`, byte `b` of row `r` being byte
//!   `64·half + 32·part + 4j + b` of that row's `ql` (low nibble: element
//!   `128·half + 32·part + 4j + b`, high nibble: the same + 64);
//! - `qh`: `[half][j][row][4 bytes]`, byte `32·half + 4j + b` of the row's `qh` (two bits each
//!   for elements `128·half + 4j + b` + 0, 32, 64, 96);
//! - the sixteen scales of each row, `[sub-block][row]` as i8, then `d` of each row as f16.

use super::{Acts, Out, ROWS};
use crate::gemm_k::dot_q6_k_tiled;
use crate::isa::{Isa, active_isa};
use crate::{GgmlType, QK_K, QuantError, row_bytes};

const Q6_K_BYTES: usize = 210;
const Q8_K_BYTES: usize = 292;
const QL: usize = 0;
const QH: usize = 2 * 2 * 8 * 64;
pub(crate) const SC: usize = QH + 2 * 8 * 64;
pub(crate) const D: usize = SC + 16 * ROWS;
/// Bytes of one super-block of one group of 16 rows.
pub const GROUP_SB_BYTES: usize = D + 2 * ROWS;

/// Bytes of a packed `rows × cols` Q6_K matrix.
pub fn packed_bytes(rows: usize, cols: usize) -> Result<usize, QuantError> {
    row_bytes(GgmlType::Q6K, cols)?;
    Ok(rows.div_ceil(ROWS) * (cols / QK_K) * GROUP_SB_BYTES)
}

#[inline]
pub(crate) fn ql_at(half: usize, part: usize, j: usize) -> usize {
    QL + ((half * 2 + part) * 8 + j) * 64
}

#[inline]
pub(crate) fn qh_at(half: usize, j: usize) -> usize {
    QH + (half * 8 + j) * 64
}

/// Packs up to `16 · groups` rows (`src`, `cols` elements each; the last group may be short)
/// into exactly `groups` packed groups (`dst`).
pub fn pack(src: &[u8], cols: usize, dst: &mut [u8]) -> Result<(), QuantError> {
    let rb = row_bytes(GgmlType::Q6K, cols)?;
    let gb = cols / QK_K * GROUP_SB_BYTES;
    super::start_pack(GgmlType::Q6K, src, rb, gb, dst)?;
    for (r, row) in src.chunks_exact(rb).enumerate() {
        let (g, lane) = (r / ROWS, r % ROWS);
        for (s, wb) in row.chunks_exact(Q6_K_BYTES).enumerate() {
            let p = &mut dst[g * gb + s * GROUP_SB_BYTES..][..GROUP_SB_BYTES];
            for (i, &byte) in wb[..128].iter().enumerate() {
                let (half, part, j, b) = (i / 64, (i % 64) / 32, (i % 32) / 4, i % 4);
                p[ql_at(half, part, j) + lane * 4 + b] = byte;
            }
            for (i, &byte) in wb[128..192].iter().enumerate() {
                let (half, j, b) = (i / 32, (i % 32) / 4, i % 4);
                p[qh_at(half, j) + lane * 4 + b] = byte;
            }
            for sub in 0..16 {
                p[SC + sub * ROWS + lane] = wb[192 + sub];
            }
            p[D + 2 * lane..D + 2 * lane + 2].copy_from_slice(&wb[208..210]);
        }
    }
    Ok(())
}

/// Row `lane` of a packed group back in GGUF's Q6_K layout.
fn unpack_row(group: &[u8], nsb: usize, lane: usize) -> Vec<u8> {
    let mut row = vec![0u8; nsb * Q6_K_BYTES];
    for (s, wb) in row.chunks_exact_mut(Q6_K_BYTES).enumerate() {
        let p = &group[s * GROUP_SB_BYTES..][..GROUP_SB_BYTES];
        for (i, v) in wb[..128].iter_mut().enumerate() {
            let (half, part, j, b) = (i / 64, (i % 64) / 32, (i % 32) / 4, i % 4);
            *v = p[ql_at(half, part, j) + lane * 4 + b];
        }
        for (i, v) in wb[128..192].iter_mut().enumerate() {
            let (half, j, b) = (i / 32, (i % 32) / 4, i % 4);
            *v = p[qh_at(half, j) + lane * 4 + b];
        }
        for sub in 0..16 {
            wb[192 + sub] = p[SC + sub * ROWS + lane];
        }
        wb[208..210].copy_from_slice(&p[D + 2 * lane..D + 2 * lane + 2]);
    }
    row
}

/// Row `r` of a packed matrix (`cols` elements) back in GGUF's Q6_K layout (embedding lookups
/// of a tied head).
pub fn unpack_row_at(
    packed: &[u8],
    cols: usize,
    r: usize,
    out: &mut [u8],
) -> Result<(), QuantError> {
    let nsb = cols / QK_K;
    let gb = nsb * GROUP_SB_BYTES;
    let g = r / ROWS;
    if row_bytes(GgmlType::Q6K, cols)? != out.len() || packed.len() < (g + 1) * gb {
        return Err(QuantError::Length {
            ty: GgmlType::Q6K,
            what: "the packed row",
            unit: "bytes",
            expected: (g + 1) * gb,
            got: packed.len(),
        });
    }
    out.copy_from_slice(&unpack_row(&packed[g * gb..(g + 1) * gb], nsb, r % ROWS));
    Ok(())
}

fn check(packed: &[u8], cols: usize, acts: usize, out: &Out) -> Result<usize, QuantError> {
    let ab = row_bytes(GgmlType::Q8K, cols)?;
    row_bytes(GgmlType::Q6K, cols)?;
    let gb = cols / QK_K * GROUP_SB_BYTES;
    super::check(GgmlType::Q6K, packed.len(), gb, acts, ab, out)
}

/// `w[r] · acts[t]` for the `out.rows()` rows of the packed groups in `packed` and the
/// `out.n_tok()` Q8_K activation rows of `acts`, into `out`, in the tiled order.
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
    let acts = acts.data();
    check(packed, cols, acts.len(), out)?;
    let n_tok = out.n_tok();
    let nsb = cols / QK_K;
    let (ab, gb) = (nsb * Q8_K_BYTES, nsb * GROUP_SB_BYTES);
    #[cfg(target_arch = "x86_64")]
    if isa.min(crate::isa::detected_isa()) >= Isa::Avx512Vnni {
        let prefetch = n_tok <= simd::T;
        super::drive::<{ simd::T }>(packed, gb, out, |group, t0, wide, lanes| {
            let nt = if wide { simd::T } else { 1 };
            let a = &acts[t0 * ab..(t0 + nt) * ab];
            // SAFETY: the CPU has AVX-512 VNNI (checked above); sizes were checked.
            unsafe {
                if wide {
                    simd::dot16::<{ simd::T }>(group, nsb, a, prefetch, lanes)
                } else {
                    simd::dot16::<1>(group, nsb, a, prefetch, lanes)
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
        |row, a, _| dot_q6_k_tiled(row, a),
    )
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;
    use std::arch::x86_64::*;

    /// Tokens handled together (each unpacking of the weights serves them all).
    pub(super) const T: usize = 2;

    /// The 16 rows of one packed group · `nt` (≤ [`T`]) Q8_K activations `a`, lane = row.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn dot16<const NT: usize>(
        group: &[u8],
        nsb: usize,
        a: &[u8],
        prefetch: bool,
        out: &mut [[f32; ROWS]; T],
    ) {
        let nt = NT;
        assert!((1..=T).contains(&nt));
        assert!(group.len() >= nsb * GROUP_SB_BYTES && a.len() >= nt * nsb * Q8_K_BYTES);
        let m4 = _mm512_set1_epi8(0x0f);
        let m30 = _mm512_set1_epi8(0x30);
        let mut acc = [_mm512_setzero_ps(); T];
        for s in 0..nsb {
            // SAFETY (raw loads below): `p` is one whole packed super-block and `ab(t)` one
            // whole Q8_K block of a token t < nt (asserted above); offsets stay inside them.
            let p = unsafe { group.as_ptr().add(s * GROUP_SB_BYTES) };
            // Fetch two super-blocks ahead (5-7 KiB; one ahead was 6% slower at decode) while
            // this one computes: a decode step streams through every weight once (a batch
            // finds them in cache).
            if prefetch {
                crate::packed::prefetch_ahead(p, GROUP_SB_BYTES, 2 * GROUP_SB_BYTES);
            }
            let ab = |t: usize| unsafe { a.as_ptr().add((t * nsb + s) * Q8_K_BYTES) };
            let ld = |at: usize| unsafe { _mm512_loadu_si512(p.add(at).cast()) };
            let mut isum = [_mm512_setzero_si512(); T];
            for half in 0..2 {
                for jj in 0..2 {
                    // Sub-blocks 8·half + jj + {0, 2, 4, 6}: start from -32 Σ y of each.
                    let mut sub = [[_mm512_setzero_si512(); 4]; T];
                    for (t, sub) in sub.iter_mut().enumerate().take(nt) {
                        for (k, v) in sub.iter_mut().enumerate() {
                            let idx = 8 * half + jj + 2 * k;
                            let bs = unsafe {
                                (ab(t).add(260 + 2 * idx) as *const i16).read_unaligned()
                            };
                            *v = _mm512_set1_epi32(-32 * bs as i32);
                        }
                    }
                    for jm in 0..4 {
                        let j = 4 * jj + jm;
                        let (x0, x1, c) = (
                            ld(ql_at(half, 0, j)),
                            ld(ql_at(half, 1, j)),
                            ld(qh_at(half, j)),
                        );
                        // Elements 128·half + 4j + {0, 32, 64, 96} (+ b).
                        let v = [
                            _mm512_or_si512(
                                _mm512_and_si512(x0, m4),
                                _mm512_and_si512(_mm512_slli_epi16::<4>(c), m30),
                            ),
                            _mm512_or_si512(
                                _mm512_and_si512(x1, m4),
                                _mm512_and_si512(_mm512_slli_epi16::<2>(c), m30),
                            ),
                            _mm512_or_si512(
                                _mm512_and_si512(_mm512_srli_epi16::<4>(x0), m4),
                                _mm512_and_si512(c, m30),
                            ),
                            _mm512_or_si512(
                                _mm512_and_si512(_mm512_srli_epi16::<4>(x1), m4),
                                _mm512_and_si512(_mm512_srli_epi16::<2>(c), m30),
                            ),
                        ];
                        for (t, sub) in sub.iter_mut().enumerate().take(nt) {
                            let qa = unsafe { ab(t).add(4 + 128 * half + 4 * j) };
                            for (k, sv) in sub.iter_mut().enumerate() {
                                let y = unsafe {
                                    _mm512_set1_epi32(
                                        (qa.add(32 * k) as *const i32).read_unaligned(),
                                    )
                                };
                                *sv = _mm512_dpbusd_epi32(*sv, v[k], y);
                            }
                        }
                    }
                    for (t, sub) in sub.iter().enumerate().take(nt) {
                        for (k, &sv) in sub.iter().enumerate() {
                            let idx = 8 * half + jj + 2 * k;
                            let sc = unsafe {
                                _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(SC + idx * ROWS).cast()))
                            };
                            isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(sv, sc));
                        }
                    }
                }
            }
            let dw = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(D).cast())) };
            for (t, acc) in acc.iter_mut().enumerate().take(nt) {
                let da = f32::from_le_bytes(unsafe { *(ab(t) as *const [u8; 4]) });
                let x = _mm512_mul_ps(_mm512_cvtepi32_ps(isum[t]), dw);
                *acc = _mm512_fmadd_ps(x, _mm512_set1_ps(da), *acc);
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
    fn packed_products_equal_the_tiled_order_bit_for_bit() {
        for (rows, cols, n_tok) in [(16, 256, 1), (21, 512, 7), (40, 2048, 3)] {
            let c = Case::new(GgmlType::Q6K, rows, cols, n_tok);
            let gb = cols / QK_K * GROUP_SB_BYTES;
            let mut again = vec![0u8; c.row(0).len()];
            for r in 0..rows {
                let back = unpack_row(&c.packed[(r / ROWS) * gb..][..gb], cols / QK_K, r % ROWS);
                assert_eq!(back, c.row(r));
                unpack_row_at(&c.packed, cols, r, &mut again).unwrap();
                assert_eq!(again, back);
            }
            let pa = Acts::new(GgmlType::Q6K, cols, c.acts.clone()).unwrap();
            c.check(
                |isa, out| gemm_isa(isa, &c.packed, cols, &pa, out).unwrap(),
                |row, a, _| dot_q6_k_tiled(row, a),
            );
        }
    }
}
