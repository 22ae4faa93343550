//! Matrix products with quantized weights over a batch of activation rows.
//!
//! As in ggml's `mul_mat`, each activation row is quantized once to the weight type's vec-dot
//! partner (Q8_0, Q8_1, Q8_K, F16...) and every output is one `vec_dot` of a weight row with it;
//! `hearth-quant` reproduces llama.cpp's x86 dot kernels, so the products match llama.cpp's.
//! Weight rows are split across threads; each thread walks its rows in small blocks and dots
//! every token against a block while it is in cache, so a prompt is one pass over the weights.

use hearth_quant::{Activation, GgmlType, Isa, QuantError};

use super::gemm_order::{self, Order};

use crate::error::Result;
use crate::threads::{SendPtr, Threads};

/// A weight matrix borrowed from the model file: `rows` rows of `cols` elements of `ty`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    /// The same rows repacked for their kernels (`hearth_quant::packed`), if the loader made them.
    pub packed: Option<&'a [u8]>,
    /// Batches may take hearth's fast orders (`LoadOptions::exact` off): on CPUs with AMX,
    /// prompts multiply packed Q4_0, Q5_0, Q4_K, Q6_K and Q8_0 weights on bf16 tiles.
    pub fast: bool,
}

impl MatRef<'_> {
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }
}

/// Weight rows dotted against every token while they are in cache.
const BLOCK: usize = 16;

/// `out[r] = w[r] · act` for consecutive rows, in the float order llama.cpp uses (`gemm`: the
/// activation is one of a group of 4 for the repacked kernels).
fn rows_dot(
    order: Order,
    rows: &[u8],
    act: &Activation,
    gemm: bool,
    out: &mut [f32],
) -> Result<(), QuantError> {
    if order == Order::VecDot {
        return hearth_quant::matvec(rows, act, out);
    }
    gemm_order::dot_rows(order, act.weight_type(), rows, act.as_bytes(), gemm, out);
    Ok(())
}

/// `out[t][r] = w[r] · x[t]` for the `n_tok = x.len() / w.cols` rows of `x`.
pub fn matmul(threads: &Threads, w: MatRef, x: &[f32], out: &mut [f32]) -> Result<()> {
    let n_tok = x.len() / w.cols;
    debug_assert_eq!(out.len(), n_tok * w.rows);
    if n_tok == 0 {
        return Ok(());
    }
    if let Some(packed) = w.packed {
        return packed_rows(threads, w, packed, x, n_tok, out);
    }
    let order = Order::choose(w.ty, w.rows, w.cols, n_tok);
    let rb = w.row_bytes();
    let rows_of = |r0: usize, n: usize| &w.data[r0 * rb..(r0 + n) * rb];
    if n_tok > 1 && order == Order::VecDot && hearth_quant::gemm::gemm_supported(w.ty) {
        // Each weight block unpacked once for every token; bit-identical to `vec_dot`.
        let q = quantize_rows(threads, w.ty, x, w.cols)?;
        let acts = hearth_quant::gemm::ActBatch::from_quantized(w.ty, w.cols, q)?;
        return by_rows(threads, w.rows, n_tok, BLOCK, out, |r0, piece| {
            hearth_quant::gemm::gemm(rows_of(r0, piece.len() / n_tok), &acts, piece)
        });
    }
    if n_tok > 1 && order == Order::Repacked && w.ty == GgmlType::Q4_0 {
        // The repacked kernels' order, 16 tokens per register (`hearth_quant::gemm_q4`).
        let q = quantize_rows(threads, w.ty, x, w.cols)?;
        let acts = hearth_quant::gemm_q4::Q4Acts::from_quantized(w.cols, q)?;
        return by_rows(threads, w.rows, n_tok, BLOCK, out, |r0, piece| {
            hearth_quant::gemm_q4::gemm_q4_0(rows_of(r0, piece.len() / n_tok), &acts, piece)
        });
    }
    if let Some(k) = gemm_order::k_order(order, w.ty).filter(|_| n_tok > 1) {
        // Q4_K and Q6_K in llama.cpp's batched orders (`hearth_quant::gemm_k`).
        let q = quantize_rows(threads, w.ty, x, w.cols)?;
        let acts = hearth_quant::gemm_k::KActs::from_quantized(w.cols, q)?;
        let n_gemm = n_tok - n_tok % 4;
        return by_rows(threads, w.rows, n_tok, BLOCK, out, |r0, piece| {
            let rows = rows_of(r0, piece.len() / n_tok);
            hearth_quant::gemm_k::gemm_k(k, rows, w.cols, &acts, n_gemm, piece)
        });
    }
    let mut acts = Vec::with_capacity(n_tok);
    for row in x.chunks_exact(w.cols) {
        acts.push(Activation::new(w.ty, row)?);
    }
    if n_tok == 1 {
        let act = &acts[0];
        return by_rows(threads, w.rows, 1, BLOCK, out, |r0, piece| {
            let rows = rows_of(r0, piece.len());
            match (order, w.ty) {
                // Sixteen rows per register (`BLOCK` is a multiple of 16).
                (Order::Repacked, GgmlType::Q4_0) => {
                    hearth_quant::gemm_q4::gemv_q4_0(rows, act.as_bytes(), piece)
                }
                (Order::Repacked, GgmlType::Q4K) => {
                    hearth_quant::gemm_k::gemv_q4_k(rows, w.cols, act.as_bytes(), piece)
                }
                _ => rows_dot(order, rows, act, false, piece),
            }
        });
    }
    by_rows(threads, w.rows, n_tok, BLOCK, out, |r0, piece| {
        let rows = piece.len() / n_tok;
        let mut tmp = [0f32; BLOCK];
        let mut b0 = 0;
        while b0 < rows {
            let nb = BLOCK.min(rows - b0);
            for (t, act) in acts.iter().enumerate() {
                let gemm = gemm_order::in_gemm(t, n_tok);
                rows_dot(order, rows_of(r0 + b0, nb), act, gemm, &mut tmp[..nb])?;
                for (i, &v) in tmp[..nb].iter().enumerate() {
                    piece[(b0 + i) * n_tok + t] = v;
                }
            }
            b0 += nb;
        }
        Ok(())
    })
}

/// Splits the `rows` rows of a product over `n_tok` tokens across threads (pieces of a
/// multiple of `align` rows): `f(first_row, piece)` fills `piece`, its rows' outputs row-major
/// (`[row][token]`). A batch goes through a reused scratch and one tiled transpose into
/// token-major `out`; for one token the two layouts are the same, so pieces write `out`
/// directly. Returns the first error a piece reports.
fn by_rows(
    threads: &Threads,
    rows: usize,
    n_tok: usize,
    align: usize,
    out: &mut [f32],
    f: impl Fn(usize, &mut [f32]) -> Result<(), QuantError> + Sync + Send,
) -> Result<()> {
    let err = std::sync::Mutex::new(None);
    let run = |r0: usize, piece: &mut [f32]| {
        if let Err(e) = f(r0, piece) {
            *err.lock().unwrap() = Some(e);
        }
    };
    if n_tok == 1 {
        threads.chunks(out, 1, align, run);
    } else {
        let mut out_t = scratch(rows * n_tok);
        threads.chunks(&mut out_t, n_tok, align, run);
        transpose(threads, &out_t, n_tok, rows, out);
        give_back(out_t);
    }
    match err.into_inner().unwrap() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// A matrix repacked in 16-row groups (`hearth_quant::packed`: llama.cpp's repacked orders
/// for Q4_0/Q4_K, the tiled one for Q6_K, hearth's block order for Q5_0/Q8_0).
fn packed_rows(
    threads: &Threads,
    w: MatRef,
    packed: &[u8],
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
) -> Result<()> {
    use hearth_quant::packed::{self, ROWS, amx_bf16, q4_0, q4_k, q5_0, q6_k, q8_0};
    let gb = packed::packed_bytes(w.ty, ROWS, w.cols)?;
    let isa = hearth_quant::active_isa();
    if w.fast && n_tok >= AMX_MIN_TOKENS && isa >= Isa::Amx && amx_bf16::supported(w.ty) {
        let acts = amx_bf16::Bf16Acts::quantized_like(w.ty, x, w.cols, |n, fill| {
            threads.ranges(n, 1, fill)
        })?;
        return each_range(threads, w, packed, gb, n_tok, out, |g, o| {
            amx_bf16::product(isa, w.ty, g, w.cols, &acts, o)
        });
    }
    let acts = packed::Acts::new(w.ty, w.cols, quantize_rows(threads, w.ty, x, w.cols)?)?;
    let n_gemm = if n_tok > 1 { n_tok - n_tok % 4 } else { 0 };
    if out.len() != n_tok * w.rows {
        return Err(QuantError::Length {
            ty: GgmlType::F32,
            what: "the output",
            unit: "floats",
            expected: n_tok * w.rows,
            got: out.len(),
        }
        .into());
    }
    each_range(threads, w, packed, gb, n_tok, out, |g, o| match w.ty {
        GgmlType::Q4K => q4_k::gemm(g, w.cols, &acts, n_gemm, o),
        GgmlType::Q5_0 => q5_0::gemm(g, w.cols, &acts, o),
        GgmlType::Q8_0 => q8_0::gemm(g, w.cols, &acts, o),
        GgmlType::Q6K => q6_k::gemm(g, w.cols, &acts, o),
        _ => q4_0::gemm(g, w.cols, &acts, o),
    })
}

/// Prompts of at least this many tokens take the AMX tiles: each product dequantizes its
/// weights to bf16 once, which few tokens do not repay (measured on Gemma 3 270M, 2 threads:
/// VNNI wins at 16 tokens, tiles win from 32 on: pp32 760-870 t/s against 540-680).
const AMX_MIN_TOKENS: usize = 32;

/// Runs `product(groups, out)` on each thread's range of 16-row groups of a packed matrix
/// (`gb` bytes per group), each writing its rows of the token-major `out` in place.
fn each_range(
    threads: &Threads,
    w: MatRef,
    packed: &[u8],
    gb: usize,
    n_tok: usize,
    out: &mut [f32],
    product: impl Fn(&[u8], &mut hearth_quant::packed::Out) -> Result<(), QuantError> + Sync,
) -> Result<()> {
    use hearth_quant::packed::{Out, ROWS};
    // The kernels write through strides, so each thread writes its column range of the
    // token-major output in place: no row-major scratch and transpose.
    let err = std::sync::Mutex::new(None);
    let base = SendPtr(out.as_mut_ptr());
    threads.ranges(w.rows, ROWS, |r0, n| {
        let g = &packed[r0 / ROWS * gb..(r0 + n).div_ceil(ROWS) * gb];
        let base = &base;
        // SAFETY: (t, r0 + r) for t < n_tok, r < n lies inside `out` (length checked above);
        // the ranges handed to the threads are disjoint and `out` stays borrowed until all
        // are done.
        let o = &mut unsafe { Out::from_raw(base.0.add(r0), w.rows, 1, n, n_tok) };
        if let Err(e) = product(g, o) {
            *err.lock().unwrap() = Some(e);
        }
    });
    match err.into_inner().unwrap() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

thread_local! {
    /// The row-major scratch of the batched products, kept between calls: a fresh 16 MB
    /// allocation per product costs page faults and zeroing (~7% of a 512-token prefill).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of `n` floats (contents unspecified: every product overwrites all of it).
fn scratch(n: usize) -> Vec<f32> {
    let mut v = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    v.resize(n, 0.0);
    v
}

fn give_back(v: Vec<f32>) {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if v.capacity() > s.capacity() {
            *s = v;
        }
    });
}

/// `out[t * rows + r] = out_t[r * n_tok + t]`, tokens split across threads, rows in tiles so
/// the rows being read stay in cache while every token of the piece is written.
fn transpose(threads: &Threads, out_t: &[f32], n_tok: usize, rows: usize, out: &mut [f32]) {
    const TILE: usize = 16;
    threads.chunks(out, rows, 4, |t0, piece| {
        let nt = piece.len() / rows;
        let mut r0 = 0;
        while r0 < rows {
            let nr = TILE.min(rows - r0);
            for t in 0..nt {
                let dst = &mut piece[t * rows + r0..t * rows + r0 + nr];
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = out_t[(r0 + i) * n_tok + t0 + t];
                }
            }
            r0 += nr;
        }
    });
}

/// The rows of `x` (`cols` each) quantized for `ty` weights by `quantize_act`, back to back,
/// tokens split across threads.
fn quantize_rows(threads: &Threads, ty: GgmlType, x: &[f32], cols: usize) -> Result<Vec<u8>> {
    let rb = hearth_quant::row_bytes(hearth_quant::vec_dot_type(ty)?, cols)?;
    let n_tok = x.len() / cols;
    let mut q = vec![0u8; rb * n_tok];
    let err = std::sync::Mutex::new(None);
    threads.chunks(&mut q, rb, 1, |t0, piece| {
        let rows = &x[t0 * cols..(t0 + piece.len() / rb) * cols];
        for (row, dst) in rows.chunks_exact(cols).zip(piece.chunks_exact_mut(rb)) {
            if let Err(e) = hearth_quant::quantize_act(ty, row, dst) {
                *err.lock().unwrap() = Some(e);
            }
        }
    });
    match err.into_inner().unwrap() {
        Some(e) => Err(e.into()),
        None => Ok(q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_quant::quantize_matrix;

    #[test]
    fn batched_equals_row_by_row_for_every_partner_format() {
        let threads = Threads::new(2).unwrap();
        for (rows, n_tok) in [(37, 5), (40, 5), (40, 19)] {
            check_batched(&threads, rows, 256, n_tok);
        }
    }

    /// Packed matrices over two threads, each writing its rows of the token-major output in
    /// place: a batch equals its tokens one at a time (these orders do not depend on the batch;
    /// Q4_K's GEMM order does, so it is left out) — and with the fast orders, where prompts take
    /// AMX's bf16 tiles on CPUs that have them, it stays within bf16's rounding of them.
    #[test]
    fn packed_batches_write_every_row_of_every_token() {
        let threads = Threads::new(2).unwrap();
        let (rows, cols, n_tok) = (296, 512, 70);
        let (w, x) = inputs(rows, cols, n_tok);
        let tys = [
            GgmlType::Q4K,
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q6K,
        ];
        for (ty, fast) in tys.into_iter().flat_map(|t| [(t, false), (t, true)]) {
            if ty == GgmlType::Q4K && !fast {
                continue;
            }
            let data = quantize_matrix(ty, &w, rows, cols).unwrap();
            let mut packed = vec![0u8; hearth_quant::packed::packed_bytes(ty, rows, cols).unwrap()];
            hearth_quant::packed::pack(ty, &data, cols, &mut packed).unwrap();
            let m = MatRef {
                ty,
                rows,
                cols,
                data: &data,
                packed: Some(&packed),
                fast,
            };
            let tiles = fast
                && hearth_quant::active_isa() >= Isa::Amx
                && hearth_quant::packed::amx_bf16::supported(ty);
            let mut out = vec![f32::NAN; n_tok * rows];
            matmul(&threads, m, &x, &mut out).unwrap();
            let mut sq = [0f64; 2];
            for t in 0..n_tok {
                let mut one = vec![0f32; rows];
                matmul(&threads, m, &x[t * cols..(t + 1) * cols], &mut one).unwrap();
                let batch = &out[t * rows..(t + 1) * rows];
                if tiles {
                    // bf16 activations and weights instead of 8-bit activations: as close to
                    // the exact product of the dequantized rows, on the whole.
                    let xt = &x[t * cols..(t + 1) * cols];
                    let rb = data.len() / rows;
                    for (r, (b, o)) in batch.iter().zip(&one).enumerate() {
                        let mut wr = vec![0f32; cols];
                        hearth_quant::dequantize_row(ty, &data[r * rb..(r + 1) * rb], &mut wr)
                            .unwrap();
                        let exact: f64 =
                            wr.iter().zip(xt).map(|(a, b)| *a as f64 * *b as f64).sum();
                        let norm: f64 = wr
                            .iter()
                            .zip(xt)
                            .map(|(a, b)| (*a as f64 * *b as f64).abs())
                            .sum();
                        assert!(
                            (*b as f64 - exact).abs() <= norm / 256.0,
                            "{ty} t{t} r{r}: {b} vs {exact}"
                        );
                        sq[0] += (*b as f64 - exact).powi(2);
                        sq[1] += (*o as f64 - exact).powi(2);
                    }
                } else {
                    assert_eq!(batch, &one[..], "{ty} token {t}");
                }
            }
            assert!(sq[0] <= 2.0 * sq[1], "{ty}: squared errors {sq:?}");
        }
    }

    /// A `rows × cols` weight matrix and `n_tok` activation rows.
    fn inputs(rows: usize, cols: usize, n_tok: usize) -> (Vec<f32>, Vec<f32>) {
        let w = (0..rows * cols).map(|i| (i as f32 * 0.013).sin()).collect();
        let x = (0..n_tok * cols).map(|i| (i as f32 * 0.29).cos()).collect();
        (w, x)
    }

    fn check_batched(threads: &Threads, rows: usize, cols: usize, n_tok: usize) {
        let (w, x) = inputs(rows, cols, n_tok);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q8_0,
            GgmlType::Q5_0,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q4K,
            GgmlType::Q6K,
        ] {
            // K-quant orders depend on the batch size (repacked GEMM/GEMV, tiled from 8 rows).
            let batch_order = rows.is_multiple_of(8) || n_tok >= 8;
            if batch_order && matches!(ty, GgmlType::Q4K | GgmlType::Q6K) {
                continue;
            }
            let data = quantize_matrix(ty, &w, rows, cols).unwrap();
            let m = MatRef {
                ty,
                rows,
                cols,
                data: &data,
                packed: None,
                fast: false,
            };
            let mut out = vec![0f32; n_tok * rows];
            matmul(threads, m, &x, &mut out).unwrap();
            for t in 0..n_tok {
                let xr = &x[t * cols..(t + 1) * cols];
                let mut one = vec![0f32; rows];
                matmul(threads, m, xr, &mut one).unwrap();
                assert_eq!(&out[t * rows..(t + 1) * rows], &one[..], "{ty} token {t}");
                // Against the dequantized row: only the activation's rounding remains.
                let rb = data.len() / rows;
                let mut w3 = vec![0f32; cols];
                hearth_quant::dequantize_row(ty, &data[3 * rb..4 * rb], &mut w3).unwrap();
                let exact: f32 = w3.iter().zip(xr).map(|(a, b)| a * b).sum();
                assert!((one[3] - exact).abs() < 0.05 * (1.0 + exact.abs()), "{ty}");
            }
        }
    }
}
