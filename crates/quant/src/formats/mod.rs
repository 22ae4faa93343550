//! One module per ggml format: block layout, scalar dequantize/quantize/dot and, for the hot
//! types, the SIMD kernels beside their scalar twin, with the tests that hold them together.

pub(crate) mod bf16;
pub(crate) mod fp16;
pub(crate) mod fp32;
pub(crate) mod iq4_nl;
pub(crate) mod iq4_xs;
pub(crate) mod q2_k;
pub(crate) mod q3_k;
pub(crate) mod q4_0;
pub(crate) mod q4_1;
pub(crate) mod q4_k;
pub(crate) mod q5_0;
pub(crate) mod q5_1;
pub(crate) mod q5_k;
pub(crate) mod q6_k;
pub(crate) mod q8_0;
pub(crate) mod q8_1;
pub(crate) mod q8_k;

/// Root-mean-square difference (tests use it for quantizer round trips).
#[cfg(test)]
pub(crate) fn rmse(a: &[f32], b: &[f32]) -> f32 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    (s / a.len() as f64).sqrt() as f32
}

/// Asserts a quantized dot is within five standard deviations of the activation rounding
/// noise of the exact dot `w·x` (`half_step(i)`: the largest rounding error of element i).
#[cfg(test)]
pub(crate) fn assert_dot_close(got: f32, w: &[f32], x: &[f32], half_step: impl Fn(usize) -> f64) {
    let exact: f64 = w.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum();
    let var: f64 = w
        .iter()
        .enumerate()
        .map(|(i, a)| (*a as f64 * half_step(i)).powi(2) / 3.0)
        .sum();
    let tol = 5.0 * var.sqrt() + 1e-4 * (1.0 + exact.abs());
    assert!(
        (got as f64 - exact).abs() < tol,
        "{got} vs {exact} (tolerance {tol})"
    );
}

/// Half a quantization step of 8-bit activations scaled to the largest |x|.
#[cfg(test)]
pub(crate) fn q8_half_step(x: &[f32]) -> f64 {
    x.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 254.0
}
