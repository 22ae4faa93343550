//! The float order of llama.cpp's batched matrix kernels, for the weight types where it
//! differs from `vec_dot`'s.
//!
//! **Repacked Q4_0 and Q4_K.** On x86 with AVX2, llama.cpp copies Q4_0 and Q4_K matrices whose row count is a multiple of 8
//! into interleaved blocks at load (`ggml/src/ggml-cpu/repack.cpp`,
//! `ggml_repack_get_optimal_repack_type`) and multiplies them with `ggml_gemv/gemm_q4_0_8x8_q8_0`
//! and `ggml_gemv/gemm_q4_K_8x8_q8_K`. Those kernels sum each block's products as integers,
//! convert the block total to float once and accumulate `total * (d_w * d_a)` with one FMA per
//! block (for Q4_K, the mins go to a second accumulator subtracted at the end). The activation
//! quantization is the same as for `vec_dot`; only this float order differs from the `vec_dot`
//! kernels that `hearth-quant` reproduces, and on a model as sensitive as Gemma 3 270M that
//! last-bit difference flips 8-bit roundings downstream. So the engine sends these matrices
//! through the dots below, which read the plain GGUF block layout.
//!
//! **Tiled K-quants.** With 8 or more activation rows, llama.cpp multiplies K-quant matrices it
//! did not repack through `ggml/src/ggml-cpu/tiled` (`ggml_compute_forward_mul_mat_tiled`). Its
//! AVX512-VNNI microkernel sums a whole 256-element block as one integer, then adds
//! `(f32(isum) * d_w) * d_a` to the output, block after block. Q6_K (the K-quant of Q4_K_M
//! files besides Q4_K) is reproduced here; the other tiled types keep `vec_dot`'s order.
//!
//! **F16 and F32 weights** go through llamafile's tinyBLAS (AVX-512: 16 f32 lanes, lane
//! `k % 16`, one FMA per element, `_mm512_reduce_add_ps` at the end) for any batch size.

use hearth_quant::{GgmlType, f16_to_f32, gemm_k};

/// Which float order a matrix product follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// `hearth_quant::vec_dot` (ggml's `vec_dot` kernels).
    VecDot,
    /// The repacked kernels (Q4_0, Q4_K): GEMM for the activation rows in whole groups of 4,
    /// GEMV for the rest.
    Repacked,
    /// The tiled K-quant GEMM (Q6_K, 8+ rows).
    Tiled,
    /// llamafile's tinyBLAS (F16, F32).
    TinyBlas,
}

/// Activation rows from which llama.cpp takes the tiled path (`ggml_tiled_min_batch`).
pub const TILED_MIN_ROWS: usize = 8;

impl Order {
    /// The order llama.cpp's x86 build uses for a `rows × cols` matrix of `ty` times `n_tok`
    /// activation rows.
    pub fn choose(ty: GgmlType, rows: usize, cols: usize, n_tok: usize) -> Order {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4K if rows.is_multiple_of(8) => Order::Repacked,
            GgmlType::Q6K if n_tok >= TILED_MIN_ROWS => Order::Tiled,
            GgmlType::F16 | GgmlType::F32 if cols.is_multiple_of(16) => Order::TinyBlas,
            _ => Order::VecDot,
        }
    }
}

const Q4_0_BYTES: usize = 18;
const Q8_0_BYTES: usize = 34;

/// The batched kernel of `hearth_quant::gemm_k` for an order, where there is one.
pub fn k_order(order: Order, ty: GgmlType) -> Option<gemm_k::KOrder> {
    match (order, ty) {
        (Order::Repacked, GgmlType::Q4K) => Some(gemm_k::KOrder::Q4KRepacked),
        (Order::Tiled, GgmlType::Q6K) => Some(gemm_k::KOrder::Q6KTiled),
        _ => None,
    }
}

/// Whether activation row `t` of `n_tok` goes through the repacked GEMM (rows in whole groups
/// of 4) rather than the GEMV (`forward_mul_mat` in llama.cpp's `repack.cpp`).
pub fn in_gemm(t: usize, n_tok: usize) -> bool {
    t < n_tok - n_tok % 4
}

fma_dispatch! {
    /// `out[r] = dot(order, ty, rows[r], a, gemm)` for the consecutive weight rows in `rows`.
    pub fn dot_rows(
        order: Order,
        ty: GgmlType,
        rows: &[u8],
        a: &[u8],
        gemm: bool,
        out: &mut [f32],
    ) => dot_rows_impl
}

#[inline(always)]
fn dot_rows_impl(order: Order, ty: GgmlType, rows: &[u8], a: &[u8], gemm: bool, out: &mut [f32]) {
    let rb = rows.len() / out.len().max(1);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if order == Order::TinyBlas && super::f16::simd::enabled() {
        // 16 rows per call, their lane sums reduced together (a rank-16 LoRA's B has short rows).
        let bytes = if ty == GgmlType::F16 { 2 } else { 4 };
        let n = rb / bytes;
        if n.is_multiple_of(16) && a.len() >= rb {
            while done + 16 <= out.len() {
                let (w, o) = (rows[done * rb..].as_ptr(), &mut out[done..done + 16]);
                let o: &mut [f32; 16] = o.try_into().unwrap();
                // SAFETY: AVX-512 F and F16C checked; 16 whole rows of n elements from `w`,
                // and n elements of `a` (checked).
                unsafe {
                    if bytes == 2 {
                        super::f16::simd::tinyblas_rows16::<2>(w, rb, a.as_ptr(), n, o)
                    } else {
                        super::f16::simd::tinyblas_rows16::<4>(w, rb, a.as_ptr(), n, o)
                    }
                }
                done += 16;
            }
        }
    }
    for (o, row) in out[done..]
        .iter_mut()
        .zip(rows[done * rb..].chunks_exact(rb.max(1)))
    {
        *o = dot(order, ty, row, a, gemm);
    }
}

/// A dot of one weight row with a quantized activation (`vec_dot_type` format) in `order`
/// (`Repacked` or `Tiled`, for the types [`Order::choose`] gives them to); `gemm` says whether
/// the row is one of a group of 4 (see [`in_gemm`]).
#[inline(always)]
pub fn dot(order: Order, ty: GgmlType, w: &[u8], a: &[u8], gemm: bool) -> f32 {
    match (order, ty) {
        (Order::Repacked, GgmlType::Q4_0) => dot_q4_0(w, a),
        (Order::Repacked, GgmlType::Q4K) => gemm_k::dot_q4_k_repacked(w, a, gemm),
        (Order::Tiled, GgmlType::Q6K) => gemm_k::dot_q6_k_tiled(w, a),
        (Order::TinyBlas, GgmlType::F16) => dot_tinyblas::<2>(w, a),
        (Order::TinyBlas, GgmlType::F32) => dot_tinyblas::<4>(w, a),
        (order, ty) => unreachable!("no {order:?} kernel for {ty}"),
    }
}

#[inline(always)]
fn h(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// `gemv_q4_b32_8x8_q8_0_lut_avx`: per 32-element block, `acc += isum * (d_w * d_a)`.
#[inline(always)]
fn dot_q4_0(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f32;
    for (wb, ab) in w.chunks_exact(Q4_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let (qs, q8) = (&wb[2..18], &ab[2..34]);
        let mut isum = 0i32;
        for j in 0..16 {
            let lo = (qs[j] & 0x0f) as i32 - 8;
            let hi = (qs[j] >> 4) as i32 - 8;
            isum += lo * q8[j] as i8 as i32 + hi * q8[j + 16] as i8 as i32;
        }
        acc = (isum as f32).mul_add(h(wb, 0) * h(ab, 0), acc);
    }
    acc
}

/// tinyBLAS on AVX-512: lane `k % 16` accumulates `w[k] * a[k]` with one FMA each, the lanes
/// are summed by `_mm512_reduce_add_ps`. `BYTES` = 2 for F16 (both operands half), 4 for F32.
#[inline(always)]
fn dot_tinyblas<const BYTES: usize>(w: &[u8], a: &[u8]) -> f32 {
    let n = w.len().min(a.len()) / BYTES;
    #[cfg(target_arch = "x86_64")]
    if n.is_multiple_of(16) && super::f16::simd::enabled() {
        // SAFETY: AVX-512 F and F16C checked; n · BYTES bytes of each operand.
        let lanes = unsafe { super::f16::simd::tinyblas_lanes::<BYTES>(w.as_ptr(), a.as_ptr(), n) };
        return super::f16::reduce16(&lanes);
    }
    dot_tinyblas_scalar::<BYTES>(w, a)
}

/// The scalar twin of [`dot_tinyblas`].
#[inline(always)]
fn dot_tinyblas_scalar<const BYTES: usize>(w: &[u8], a: &[u8]) -> f32 {
    let t = super::f16::table();
    let get = |b: &[u8], k: usize| -> f32 {
        let j = k * BYTES;
        if BYTES == 2 {
            t[u16::from_le_bytes([b[j], b[j + 1]]) as usize]
        } else {
            f32::from_le_bytes([b[j], b[j + 1], b[j + 2], b[j + 3]])
        }
    };
    let n = w.len().min(a.len()) / BYTES;
    let mut acc = [0f32; 16];
    let mut k = 0;
    while k < n {
        let l = k & 15;
        acc[l] = get(w, k).mul_add(get(a, k), acc[l]);
        k += 1;
    }
    super::f16::reduce16(&acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_quant::{Activation, quantize_matrix};

    /// The SIMD tinyBLAS dots (one row, or 16 reduced together) equal the scalar twin bit for
    /// bit (F16 and F32, short rows as a rank-16 LoRA's and long ones).
    #[test]
    fn tinyblas_dot_equals_its_scalar_twin() {
        for n in [16, 64, 640] {
            let rows = 37;
            let w: Vec<f32> = (0..rows * n).map(|i| (i as f32 * 0.37).sin()).collect();
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 3.0).collect();
            for ty in [GgmlType::F16, GgmlType::F32] {
                let wq = quantize_matrix(ty, &w, rows, n).unwrap();
                let xq = quantize_matrix(ty, &x, 1, n).unwrap();
                let mut got = vec![0f32; rows];
                dot_rows(Order::TinyBlas, ty, &wq, &xq, false, &mut got);
                let rb = wq.len() / rows;
                for (r, g) in got.iter().enumerate() {
                    let row = &wq[r * rb..(r + 1) * rb];
                    let want = if ty == GgmlType::F16 {
                        dot_tinyblas_scalar::<2>(row, &xq)
                    } else {
                        dot_tinyblas_scalar::<4>(row, &xq)
                    };
                    assert_eq!(g.to_bits(), want.to_bits(), "{ty} n{n} r{r}");
                }
            }
            let w: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 3.0).collect();
            let half = |v: &[f32]| -> Vec<u8> {
                v.iter()
                    .flat_map(|&f| hearth_quant::f32_to_f16(f).to_le_bytes())
                    .collect()
            };
            let full = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|f| f.to_le_bytes()).collect() };
            let (wh, xh, wf, xf) = (half(&w), half(&x), full(&w), full(&x));
            assert_eq!(
                dot_tinyblas::<2>(&wh, &xh).to_bits(),
                dot_tinyblas_scalar::<2>(&wh, &xh).to_bits()
            );
            assert_eq!(
                dot_tinyblas::<4>(&wf, &xf).to_bits(),
                dot_tinyblas_scalar::<4>(&wf, &xf).to_bits()
            );
        }
    }

    #[test]
    fn llama_orders_stay_within_rounding_of_vec_dot() {
        let n = 512;
        let w: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 3.0).collect();
        for (order, ty) in [
            (Order::Repacked, GgmlType::Q4_0),
            (Order::Repacked, GgmlType::Q4K),
            (Order::Tiled, GgmlType::Q6K),
            (Order::TinyBlas, GgmlType::F16),
            (Order::TinyBlas, GgmlType::F32),
        ] {
            let wq = quantize_matrix(ty, &w, 1, n).unwrap();
            let act = Activation::new(ty, &x).unwrap();
            let want = act.dot(&wq).unwrap();
            for gemm in [false, true] {
                let got = dot(order, ty, &wq, act.as_bytes(), gemm);
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{ty}: {got} vs {want}"
                );
            }
        }
    }
}
