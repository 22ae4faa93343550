//! ggml tensor formats for hearth: block layouts, dequantization, reference quantizers and the
//! quantized dot products of llama.cpp's CPU backend, with run-time-dispatched SIMD kernels.
//!
//! # Matrix-vector products
//! A weight row is dotted with an activation vector that was first quantized into the weight
//! type's "vec-dot partner" format, as llama.cpp does (Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1 for
//! Q4_1/Q5_1, Q8_K for the K-quants and IQ4_XS, and F32/F16/BF16 for those weights):
//! ```
//! use hearth_quant::{Activation, GgmlType, matvec, quantize_matrix};
//! let (rows, cols) = (4, 64);
//! let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
//! let wq = quantize_matrix(GgmlType::Q4_0, &w, rows, cols)?;
//! let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.11).cos()).collect();
//! let act = Activation::new(GgmlType::Q4_0, &x)?;
//! let mut y = vec![0.0; rows];
//! matvec(&wq, &act, &mut y)?;
//! # Ok::<(), hearth_quant::QuantError>(())
//! ```
//!
//! # Numerics
//! - Dequantization and the weight quantizers (`quantize_row`) reproduce llama.cpp's
//!   `dequantize_row_*` and no-imatrix `quantize_row_*_ref` (what `llama-quantize` writes)
//!   operation for operation, without fused multiply-adds.
//! - Activations are quantized like llama.cpp's x86 build (`quantize_row_q8_0` rounds half to
//!   even with 127/amax, unlike the `_ref` quantizer).
//! - Every dot kernel, scalar included, reproduces the eight-lane accumulation of llama.cpp's
//!   AVX2 kernel for that type: exact integer sums per lane, the same FMAs in the same order, the
//!   same final reduction. So all our ISA levels return identical bits, the scalar path can stand
//!   in for any of them, and results are bit-identical to llama.cpp's x86 CPU backend (checked
//!   for every type against a locally compiled ggml; its AVX-512 builds run the same code for
//!   these quantized types). The few scalar `a += b * c` statements are taken as fused, as GCC
//!   compiles them; GCC tuned for AMD Zen leaves one unfused (the odd last block of an IQ4_NL
//!   row), a last-bit difference there.
//! - F32/F16/BF16 dots use ggml's AVX2 layout too; its AVX-512 build sums F32/F16 in 16-lane
//!   registers instead and can differ from us in the last bits.

pub mod amx;
mod common;
mod formats;
pub mod gemm;
pub mod gemm_k;
pub mod gemm_q4;
mod isa;
mod kquant;
pub mod packed;
#[cfg(target_arch = "x86_64")]
mod x86;

use common::{cast, cast_mut};
use formats::*;

pub use common::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
pub use half;
pub use hearth_gguf::{GgmlType, QK_K};
pub use isa::{Isa, active_isa, available_isas, detected_isa, max_isa, set_max_isa};

/// What went wrong in a call; nothing in this crate panics on bad lengths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error(
        "{op} is not implemented for {ty} tensors in hearth-quant; \
         re-quantize the model to one of the supported types (F32, F16, BF16, Q4_0, Q4_1, Q5_0, \
         Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS)"
    )]
    Unsupported { ty: GgmlType, op: &'static str },
    #[error("a {ty} row of {n} elements is not a whole number of {block}-element blocks")]
    PartialBlock {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{what} holds {got} {unit}; {expected} expected for {ty}")]
    Length {
        ty: GgmlType,
        what: &'static str,
        unit: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{rows} × {cols} does not fit in memory")]
    Overflow { rows: usize, cols: usize },
}

/// Bytes of a row of `n` elements of `ty`.
pub fn row_bytes(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    let block = ty.block_len();
    if !n.is_multiple_of(block) {
        return Err(QuantError::PartialBlock { ty, n, block });
    }
    (n / block)
        .checked_mul(ty.block_bytes())
        .ok_or(QuantError::Overflow { rows: 1, cols: n })
}

fn expect_len(
    ty: GgmlType,
    what: &'static str,
    unit: &'static str,
    got: usize,
    expected: usize,
) -> Result<(), QuantError> {
    if got == expected {
        Ok(())
    } else {
        Err(QuantError::Length {
            ty,
            what,
            unit,
            expected,
            got,
        })
    }
}

type DequantFn = fn(&[u8], &mut [f32]);
type QuantFn = fn(&[f32], &mut [u8]);
type DotFn = fn(Isa, &[u8], &[u8], usize) -> f32;

fn dequant_fn(ty: GgmlType) -> Option<DequantFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => fp32::dequantize,
        F16 => fp16::dequantize,
        BF16 => bf16::dequantize,
        Q4_0 => |s, d| q4_0::dequantize(cast(s), d),
        Q4_1 => |s, d| q4_1::dequantize(cast(s), d),
        Q5_0 => |s, d| q5_0::dequantize(cast(s), d),
        Q5_1 => |s, d| q5_1::dequantize(cast(s), d),
        Q8_0 => |s, d| q8_0::dequantize(cast(s), d),
        Q8_1 => |s, d| q8_1::dequantize(cast(s), d),
        Q8K => |s, d| q8_k::dequantize(cast(s), d),
        Q2K => |s, d| q2_k::dequantize(cast(s), d),
        Q3K => |s, d| q3_k::dequantize(cast(s), d),
        Q4K => |s, d| q4_k::dequantize(cast(s), d),
        Q5K => |s, d| q5_k::dequantize(cast(s), d),
        Q6K => |s, d| q6_k::dequantize(cast(s), d),
        Iq4Nl => |s, d| iq4_nl::dequantize(cast(s), d),
        Iq4Xs => |s, d| iq4_xs::dequantize(cast(s), d),
        _ => return None,
    })
}

fn quant_fn(ty: GgmlType) -> Option<QuantFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => fp32::quantize,
        F16 => fp16::quantize,
        BF16 => bf16::quantize,
        Q4_0 => |s, d| q4_0::quantize(s, cast_mut(d)),
        Q4_1 => |s, d| q4_1::quantize(s, cast_mut(d)),
        Q5_0 => |s, d| q5_0::quantize(s, cast_mut(d)),
        Q5_1 => |s, d| q5_1::quantize(s, cast_mut(d)),
        Q8_0 => |s, d| q8_0::quantize(s, cast_mut(d)),
        Q8K => |s, d| q8_k::quantize(s, cast_mut(d)),
        Q2K => |s, d| q2_k::quantize(s, cast_mut(d)),
        Q3K => |s, d| q3_k::quantize(s, cast_mut(d)),
        Q4K => |s, d| q4_k::quantize(s, cast_mut(d)),
        Q5K => |s, d| q5_k::quantize(s, cast_mut(d)),
        Q6K => |s, d| q6_k::quantize(s, cast_mut(d)),
        Iq4Nl => |s, d| iq4_nl::quantize(s, cast_mut(d)),
        Iq4Xs => |s, d| iq4_xs::quantize(s, cast_mut(d)),
        _ => return None,
    })
}

/// Activation quantizers, keyed by the partner format.
fn act_quant_fn(format: GgmlType) -> QuantFn {
    use GgmlType::*;
    match format {
        Q8_0 => |s, d| q8_0::quantize_act(s, cast_mut(d)),
        Q8_1 => |s, d| q8_1::quantize_act(s, cast_mut(d)),
        Q8K => |s, d| q8_k::quantize(s, cast_mut(d)),
        F16 => fp16::quantize,
        BF16 => bf16::quantize,
        _ => fp32::quantize,
    }
}

fn dot_fn(ty: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => fp32::dot,
        F16 => fp16::dot,
        BF16 => bf16::dot,
        Q4_0 => |i, x, y, _| q4_0::dot(i, cast(x), cast(y)),
        Q4_1 => |_, x, y, _| q4_1::dot_scalar(cast(x), cast(y)),
        Q5_0 => |i, x, y, _| q5_0::dot(i, cast(x), cast(y)),
        Q5_1 => |_, x, y, _| q5_1::dot_scalar(cast(x), cast(y)),
        Q8_0 => |i, x, y, _| q8_0::dot(i, cast(x), cast(y)),
        Q2K => |_, x, y, _| q2_k::dot_scalar(cast(x), cast(y)),
        Q3K => |_, x, y, _| q3_k::dot_scalar(cast(x), cast(y)),
        Q4K => |i, x, y, _| q4_k::dot(i, cast(x), cast(y)),
        Q5K => |i, x, y, _| q5_k::dot(i, cast(x), cast(y)),
        Q6K => |i, x, y, _| q6_k::dot(i, cast(x), cast(y)),
        Iq4Nl => |i, x, y, _| iq4_nl::dot(i, cast(x), cast(y)),
        Iq4Xs => |i, x, y, _| iq4_xs::dot(i, cast(x), cast(y)),
        _ => return None,
    })
}

/// Decodes one row of `ty` (`src`, exactly `row_bytes(ty, dst.len())` bytes) into `dst`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let f = dequant_fn(ty).ok_or(QuantError::Unsupported {
        ty,
        op: "dequantization",
    })?;
    expect_len(
        ty,
        "the source row",
        "bytes",
        src.len(),
        row_bytes(ty, dst.len())?,
    )?;
    f(src, dst);
    Ok(())
}

/// Encodes `src` as one row of `ty` into `dst` (`row_bytes(ty, src.len())` bytes) with
/// llama.cpp's reference quantizer for that type (no importance matrix).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let f = quant_fn(ty).ok_or(QuantError::Unsupported {
        ty,
        op: "quantization",
    })?;
    expect_len(
        ty,
        "the destination row",
        "bytes",
        dst.len(),
        row_bytes(ty, src.len())?,
    )?;
    f(src, dst);
    Ok(())
}

/// Quantizes a row-major `rows × cols` matrix row by row (rows stay independent, as in GGUF).
pub fn quantize_matrix(
    ty: GgmlType,
    src: &[f32],
    rows: usize,
    cols: usize,
) -> Result<Vec<u8>, QuantError> {
    let n = rows
        .checked_mul(cols)
        .ok_or(QuantError::Overflow { rows, cols })?;
    expect_len(ty, "the source matrix", "elements", src.len(), n)?;
    let rb = row_bytes(ty, cols)?;
    let total = rb
        .checked_mul(rows)
        .ok_or(QuantError::Overflow { rows, cols })?;
    let mut out = vec![0u8; total];
    if rb > 0 {
        for (s, d) in src.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
            quantize_row(ty, s, d)?;
        }
    }
    Ok(out)
}

/// The format llama.cpp quantizes activations to before dotting them with `weight` rows.
pub fn vec_dot_type(weight: GgmlType) -> Result<GgmlType, QuantError> {
    use GgmlType::*;
    Ok(match weight {
        F32 => F32,
        F16 => F16,
        BF16 => BF16,
        Q4_0 | Q5_0 | Q8_0 | Iq4Nl => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2K | Q3K | Q4K | Q5K | Q6K | Iq4Xs => Q8K,
        ty => {
            return Err(QuantError::Unsupported {
                ty,
                op: "the dot product",
            });
        }
    })
}

/// Quantizes activation `x` into `dst`, in `vec_dot_type(weight)` format
/// (`row_bytes(vec_dot_type(weight), x.len())` bytes).
pub fn quantize_act(weight: GgmlType, x: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let format = vec_dot_type(weight)?;
    expect_len(
        format,
        "the activation buffer",
        "bytes",
        dst.len(),
        row_bytes(format, x.len())?,
    )?;
    act_quant_fn(format)(x, dst);
    Ok(())
}

/// Dot product of one `weight`-typed row of `n` elements with an activation prepared by
/// `quantize_act(weight, ..)`, computed as llama.cpp's CPU backend does. (The SIMD kernels rely
/// on what `quantize_act` guarantees: 8-bit activation quants never hold -128.)
pub fn vec_dot(
    weight: GgmlType,
    weight_row: &[u8],
    act: &[u8],
    n: usize,
) -> Result<f32, QuantError> {
    let f = dot_fn(weight).ok_or(QuantError::Unsupported {
        ty: weight,
        op: "the dot product",
    })?;
    expect_len(
        weight,
        "the weight row",
        "bytes",
        weight_row.len(),
        row_bytes(weight, n)?,
    )?;
    let format = vec_dot_type(weight)?;
    expect_len(
        format,
        "the activation",
        "bytes",
        act.len(),
        row_bytes(format, n)?,
    )?;
    Ok(f(active_isa(), weight_row, act, n))
}

/// An activation vector quantized for dot products with rows of one weight type.
#[derive(Clone, Debug)]
pub struct Activation {
    weight: GgmlType,
    format: GgmlType,
    n: usize,
    data: Vec<u8>,
}

impl Activation {
    /// Quantizes `x` for dots with `weight` rows.
    pub fn new(weight: GgmlType, x: &[f32]) -> Result<Activation, QuantError> {
        let format = vec_dot_type(weight)?;
        let mut act = Activation {
            weight,
            format,
            n: 0,
            data: Vec::new(),
        };
        act.set(x)?;
        Ok(act)
    }

    /// Re-quantizes from `x`, reusing the buffer.
    pub fn set(&mut self, x: &[f32]) -> Result<(), QuantError> {
        let len = row_bytes(self.format, x.len())?;
        self.data.resize(len, 0);
        act_quant_fn(self.format)(x, &mut self.data);
        self.n = x.len();
        Ok(())
    }

    /// The weight type this activation pairs with.
    pub fn weight_type(&self) -> GgmlType {
        self.weight
    }

    /// The format the activation is stored in (`vec_dot_type(weight_type())`).
    pub fn format(&self) -> GgmlType {
        self.format
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The encoded activation, as `vec_dot` takes it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// Dot product with one weight row.
    pub fn dot(&self, weight_row: &[u8]) -> Result<f32, QuantError> {
        vec_dot(self.weight, weight_row, &self.data, self.n)
    }
}

/// `out[r] = weights[r] · act` for the `out.len()` consecutive rows in `weights`
/// (row-major, `act.weight_type()` rows of `act.len()` elements). Single-threaded: callers
/// split rows across threads.
pub fn matvec(weights: &[u8], act: &Activation, out: &mut [f32]) -> Result<(), QuantError> {
    let ty = act.weight;
    let f = dot_fn(ty).ok_or(QuantError::Unsupported {
        ty,
        op: "the dot product",
    })?;
    let rb = row_bytes(ty, act.n)?;
    let rows = out.len();
    let total = rb
        .checked_mul(rows)
        .ok_or(QuantError::Overflow { rows, cols: act.n })?;
    expect_len(ty, "the weight matrix", "bytes", weights.len(), total)?;
    if rb == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let isa = active_isa();
    for (o, row) in out.iter_mut().zip(weights.chunks_exact(rb)) {
        *o = f(isa, row, &act.data, act.n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil::Rng;
    use GgmlType::*;

    const WEIGHTS: [GgmlType; 15] = [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K, Iq4Nl, Iq4Xs,
    ];

    #[test]
    fn block_structs_match_ggml_geometry() {
        use std::mem::size_of;
        let sizes = [
            (Q4_0, size_of::<q4_0::BlockQ4_0>()),
            (Q4_1, size_of::<q4_1::BlockQ4_1>()),
            (Q5_0, size_of::<q5_0::BlockQ5_0>()),
            (Q5_1, size_of::<q5_1::BlockQ5_1>()),
            (Q8_0, size_of::<q8_0::BlockQ8_0>()),
            (Q8_1, size_of::<q8_1::BlockQ8_1>()),
            (Q8K, size_of::<q8_k::BlockQ8K>()),
            (Q2K, size_of::<q2_k::BlockQ2K>()),
            (Q3K, size_of::<q3_k::BlockQ3K>()),
            (Q4K, size_of::<q4_k::BlockQ4K>()),
            (Q5K, size_of::<q5_k::BlockQ5K>()),
            (Q6K, size_of::<q6_k::BlockQ6K>()),
            (Iq4Nl, size_of::<iq4_nl::BlockIq4Nl>()),
            (Iq4Xs, size_of::<iq4_xs::BlockIq4Xs>()),
        ];
        for (ty, size) in sizes {
            assert_eq!(size, ty.block_bytes(), "{ty}");
        }
    }

    /// dot(w, quantize_act(x)) tracks the float dot of the dequantized row with x.
    #[test]
    fn vec_dot_tracks_float_dot_for_every_type() {
        let mut rng = Rng::new(7);
        let n = 512;
        for ty in WEIGHTS {
            let w = rng.floats(n, 1.0);
            let x = rng.floats(n, 1.0);
            let mut wq = vec![0u8; row_bytes(ty, n).unwrap()];
            quantize_row(ty, &w, &mut wq).unwrap();
            let mut wd = vec![0f32; n];
            dequantize_row(ty, &wq, &mut wd).unwrap();
            let act = Activation::new(ty, &x).unwrap();
            let got = act.dot(&wq).unwrap();
            // The largest rounding error of each activation element in its partner format.
            let q8 = crate::formats::q8_half_step(&x);
            let half_step = |i: usize| match act.format() {
                F32 => 0.0,
                F16 => x[i].abs() as f64 / 2048.0,
                BF16 => x[i].abs() as f64 / 256.0,
                _ => q8,
            };
            crate::formats::assert_dot_close(got, &wd, &x, half_step);
        }
    }

    #[test]
    fn matvec_equals_row_dots_on_every_isa() {
        let mut rng = Rng::new(11);
        let (rows, cols) = (5, 512);
        for ty in WEIGHTS {
            let w = rng.floats(rows * cols, 0.5);
            let wq = quantize_matrix(ty, &w, rows, cols).unwrap();
            let act = Activation::new(ty, &rng.floats(cols, 1.0)).unwrap();
            let mut out = vec![0f32; rows];
            matvec(&wq, &act, &mut out).unwrap();
            let rb = row_bytes(ty, cols).unwrap();
            for (r, o) in out.iter().enumerate() {
                let row = &wq[r * rb..(r + 1) * rb];
                let f = dot_fn(ty).unwrap();
                for isa in available_isas() {
                    let v = f(isa, row, act.as_bytes(), cols);
                    assert_eq!(v.to_bits(), o.to_bits(), "{ty} row {r} {isa}");
                }
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors_not_panics() {
        let mut out = vec![0f32; 32];
        for ty in WEIGHTS {
            let rb = row_bytes(ty, 256).unwrap();
            let bytes = vec![0u8; rb + 1];
            let mut f = vec![0f32; 256];
            assert!(matches!(
                dequantize_row(ty, &bytes, &mut f),
                Err(QuantError::Length { .. })
            ));
            assert!(dequantize_row(ty, &bytes[..rb - 1], &mut f).is_err());
            assert!(quantize_row(ty, &f, &mut vec![0u8; rb - 1]).is_err());
            let act = Activation::new(ty, &f).unwrap();
            assert!(act.dot(&bytes).is_err());
            assert!(vec_dot(ty, &bytes[..rb], &act.as_bytes()[1..], 256).is_err());
            assert!(matvec(&bytes, &act, &mut out).is_err());
            if ty.block_len() > 1 {
                assert!(matches!(
                    dequantize_row(ty, &bytes, &mut f[..255]),
                    Err(QuantError::PartialBlock { .. })
                ));
                assert!(Activation::new(ty, &f[..250]).is_err());
                assert!(quantize_matrix(ty, &f, 2, 128).is_err() == (128 % ty.block_len() != 0));
            }
        }
        assert!(quantize_matrix(Q8_0, &[0.0; 10], 3, 4).is_err());
        assert!(quantize_matrix(Q8_0, &[], usize::MAX, 2).is_err());
        assert!(matches!(
            dequantize_row(Iq2Xxs, &[], &mut []),
            Err(QuantError::Unsupported { .. })
        ));
        assert!(vec_dot_type(I32).is_err());
    }

    #[test]
    fn non_finite_inputs_do_not_panic() {
        let mut x = vec![1.0f32; 256];
        x[3] = f32::NAN;
        x[100] = f32::INFINITY;
        x[200] = f32::NEG_INFINITY;
        for ty in WEIGHTS {
            let q = quantize_matrix(ty, &x, 1, 256).unwrap();
            let mut back = vec![0f32; 256];
            dequantize_row(ty, &q, &mut back).unwrap();
            let _ = Activation::new(ty, &x).unwrap().dot(&q).unwrap();
        }
    }

    #[test]
    fn empty_rows_are_fine() {
        let act = Activation::new(Q4K, &[]).unwrap();
        assert!(act.is_empty());
        assert_eq!(act.dot(&[]).unwrap(), 0.0);
        let mut out = [1.0f32; 3];
        matvec(&[], &act, &mut out).unwrap();
        assert_eq!(out, [0.0; 3]);
    }

    #[test]
    fn capping_the_isa_keeps_results() {
        let mut rng = Rng::new(12);
        let x = rng.floats(256, 1.0);
        let wq = quantize_matrix(Q4K, &rng.floats(256, 1.0), 1, 256).unwrap();
        let act = Activation::new(Q4K, &x).unwrap();
        let best = act.dot(&wq).unwrap();
        set_max_isa(Isa::Scalar);
        assert_eq!(active_isa(), Isa::Scalar);
        let scalar = act.dot(&wq).unwrap();
        set_max_isa(Isa::Amx);
        assert_eq!(active_isa(), detected_isa());
        assert_eq!(best.to_bits(), scalar.to_bits());
    }
}
