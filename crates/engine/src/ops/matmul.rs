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
    if w.packed.is_some() {
        return packed_rows(threads, &[w], &[x], n_tok, &mut [out]);
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

/// `outs[i] = ws[i] · x` for matrices that multiply the same activations (a layer's Q, K and V;
/// its gate and up): where all are packed and take the same kind of kernel, the activations are
/// prepared once per format and the rows of all the matrices are split across the threads in
/// one pass (one wake-up of the pool instead of one per matrix, and balanced over the sum);
/// otherwise one product after another. The same results as [`matmul`] on each.
pub fn matmul_many(
    threads: &Threads,
    ws: &[MatRef],
    x: &[f32],
    outs: &mut [&mut [f32]],
) -> Result<()> {
    assert_eq!(ws.len(), outs.len());
    let Some(first) = ws.first() else {
        return Ok(());
    };
    let n_tok = x.len() / first.cols;
    let same_kernels = n_tok > 0
        && ws
            .iter()
            .all(|w| w.packed.is_some() && w.cols == first.cols)
        && ws
            .iter()
            .all(|w| takes_tiles(w, n_tok) == takes_tiles(first, n_tok));
    if !same_kernels {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            matmul(threads, *w, x, out)?;
        }
        return Ok(());
    }
    packed_rows(threads, ws, &vec![x; ws.len()], n_tok, outs)
}

/// `outs[i] = ws[i] · xs[i]`: products of the same shape of input (the down projections of a
/// decode step's experts), in one pass over the threads where all are packed and take the same
/// kind of kernel; otherwise one product after another. The same results as [`matmul`] on each.
pub fn matmul_each(
    threads: &Threads,
    ws: &[MatRef],
    xs: &[&[f32]],
    outs: &mut [&mut [f32]],
) -> Result<()> {
    assert!(ws.len() == xs.len() && ws.len() == outs.len());
    let Some(first) = ws.first() else {
        return Ok(());
    };
    let n_tok = xs[0].len() / first.cols;
    let same_kernels = n_tok > 0
        && ws.iter().zip(xs).all(|(w, x)| {
            w.packed.is_some()
                && w.cols == first.cols
                && x.len() == xs[0].len()
                && takes_tiles(w, n_tok) == takes_tiles(first, n_tok)
        });
    if !same_kernels {
        for ((w, x), out) in ws.iter().zip(xs).zip(outs.iter_mut()) {
            matmul(threads, *w, x, out)?;
        }
        return Ok(());
    }
    packed_rows(threads, ws, xs, n_tok, outs)
}

/// Whether a product of `n_tok` tokens with `w` runs on AMX's bf16 tiles.
fn takes_tiles(w: &MatRef, n_tok: usize) -> bool {
    w.fast
        && n_tok >= AMX_MIN_TOKENS
        && hearth_quant::active_isa() >= Isa::Amx
        && hearth_quant::packed::amx_bf16::supported(w.ty)
}

/// Activations prepared for the packed kernels of one partner format.
enum Prepared {
    Tiles(hearth_quant::packed::amx_bf16::Bf16Acts),
    Ints(hearth_quant::packed::Acts),
}

/// Matrices repacked in 16-row groups (`hearth_quant::packed`: llama.cpp's repacked orders
/// for Q4_0/Q4_K, the tiled one for Q6_K, hearth's block order for Q5_0/Q8_0), all with the
/// same columns and all on tiles or all not ([`takes_tiles`]); `outs[i]` token-major.
fn packed_rows(
    threads: &Threads,
    ws: &[MatRef],
    xs: &[&[f32]],
    n_tok: usize,
    outs: &mut [&mut [f32]],
) -> Result<()> {
    use hearth_quant::packed::{self, Out, ROWS, amx_bf16, q4_0, q4_k, q5_0, q6_k, q8_0};
    let isa = hearth_quant::active_isa();
    let tiles = takes_tiles(&ws[0], n_tok);
    let cols = ws[0].cols;
    // One preparation per input and partner format (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_K for
    // Q4_K/Q6_K).
    let mut preps: Vec<((GgmlType, usize), Prepared)> = Vec::new();
    let mut which = Vec::with_capacity(ws.len());
    for (w, &x) in ws.iter().zip(xs) {
        let format = (hearth_quant::vec_dot_type(w.ty)?, x.as_ptr() as usize);
        let i = match preps.iter().position(|(f, _)| *f == format) {
            Some(i) => i,
            None => {
                let prep = if tiles {
                    Prepared::Tiles(amx_bf16::Bf16Acts::quantized_like(
                        w.ty,
                        x,
                        cols,
                        |n, fill| threads.ranges(n, 1, fill),
                    )?)
                } else {
                    let q = quantize_rows(threads, w.ty, x, cols)?;
                    Prepared::Ints(packed::Acts::new(w.ty, cols, q)?)
                };
                preps.push((format, prep));
                preps.len() - 1
            }
        };
        which.push(i);
    }
    // Each matrix's groups, numbered across all of them.
    let mut first_group = Vec::with_capacity(ws.len() + 1);
    let mut n_groups = 0;
    for (w, out) in ws.iter().zip(outs.iter()) {
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
        first_group.push(n_groups);
        n_groups += w.rows.div_ceil(ROWS);
    }
    first_group.push(n_groups);
    let gbs = ws
        .iter()
        .map(|w| packed::packed_bytes(w.ty, ROWS, w.cols))
        .collect::<Result<Vec<_>, _>>()?;
    let n_gemm = if n_tok > 1 { n_tok - n_tok % 4 } else { 0 };
    let bases: Vec<SendPtr<f32>> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
    let err = std::sync::Mutex::new(None);
    // The kernels write through strides, so each thread writes its column range of each
    // token-major output in place: no row-major scratch and transpose.
    // The pool hands out long runs of groups first (a thread's packed rows stream in runs its
    // prefetches stay ahead of), shorter ones last. The tile kernel takes groups in pairs.
    let align = if tiles { 2 } else { 1 };
    threads.ranges(n_groups, align, |a, n| {
        let bases = &bases;
        for (i, w) in ws.iter().enumerate() {
            let (lo, hi) = (first_group[i].max(a), first_group[i + 1].min(a + n));
            if lo >= hi {
                continue;
            }
            let (g0, g1) = (lo - first_group[i], hi - first_group[i]);
            let (r0, r1) = (g0 * ROWS, (g1 * ROWS).min(w.rows));
            let packed = w.packed.expect("checked by the callers");
            let g = &packed[g0 * gbs[i]..g1 * gbs[i]];
            // SAFETY: (t, r) for t < n_tok, r0 <= r < r1 lies inside output i (length checked
            // above); the group ranges handed to the threads are disjoint and the outputs stay
            // borrowed until all are done.
            let o = &mut unsafe { Out::from_raw(bases[i].0.add(r0), w.rows, 1, r1 - r0, n_tok) };
            let done = match &preps[which[i]].1 {
                Prepared::Tiles(acts) => amx_bf16::product(isa, w.ty, g, w.cols, acts, o),
                Prepared::Ints(acts) => match w.ty {
                    GgmlType::Q4K => q4_k::gemm(g, w.cols, acts, n_gemm, o),
                    GgmlType::Q5_0 => q5_0::gemm(g, w.cols, acts, o),
                    GgmlType::Q8_0 => q8_0::gemm(g, w.cols, acts, o),
                    GgmlType::Q6K => q6_k::gemm(g, w.cols, acts, o),
                    _ => q4_0::gemm(g, w.cols, acts, o),
                },
            };
            if let Err(e) = done {
                *err.lock().unwrap() = Some(e);
            }
        }
    });
    match err.into_inner().unwrap() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Prompts of at least this many tokens take the AMX tiles: each product dequantizes its
/// weights to bf16 once, which few tokens do not repay (measured on Gemma 3 270M, 2 threads:
/// VNNI wins at 16 tokens, tiles win from 32 on: pp32 760-870 t/s against 540-680).
const AMX_MIN_TOKENS: usize = 32;

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
            let tiles = fast
                && hearth_quant::active_isa() >= Isa::Amx
                && hearth_quant::packed::amx_bf16::supported(ty);
            // Without tiles (no AMX, or `HEARTH_ISA` below it) Q4_K takes its batch-dependent
            // GEMM order either way.
            if ty == GgmlType::Q4K && !tiles {
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
