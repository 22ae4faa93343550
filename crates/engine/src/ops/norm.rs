//! RMS normalization, as `ggml_compute_forward_rms_norm_f32` (fused with the weight multiply).

/// `out = x / sqrt(mean(x²) + eps) * w` over one row: squares in f32, summed in f64, the mean
/// rounded to f32, then `x * scale * w` left to right.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let scale = rms_scale(x, eps);
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = xi * scale * wi;
    }
}

/// In place, for Q/K heads.
pub fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let scale = rms_scale(x, eps);
    for (xi, &wi) in x.iter_mut().zip(w) {
        *xi = *xi * scale * wi;
    }
}

/// `1 / sqrt(mean + eps)`.
///
/// The squares are summed in eight f64 lanes instead of one running sum (ggml's order): a
/// chain of dependent f64 adds took ~1 µs per 640-wide row, a few percent of a short prompt.
/// The f64 sums of f32 squares differ in their last bits at most, which the rounding of the
/// mean to f32 absorbs except with odds of about 2⁻²⁹ per row.
pub fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let mut lanes = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += (v * v) as f64;
        }
    }
    let mut sum = lanes.iter().sum::<f64>();
    for &v in chunks.remainder() {
        sum += (v * v) as f64;
    }
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

avx512_dispatch! {
    /// Every row of a row-major `rows × w.len()` matrix.
    pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) => rms_norm_rows_impl
}

#[inline(always)]
fn rms_norm_rows_impl(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        rms_norm(xr, w, eps, or);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition() {
        let x: Vec<f32> = (0..640).map(|i| (i as f32 * 0.013).sin() * 5.0).collect();
        let w: Vec<f32> = (0..640)
            .map(|i| 1.0 + (i as f32 * 0.7).cos() * 0.1)
            .collect();
        let mut out = vec![0.0; 640];
        rms_norm(&x, &w, 1e-6, &mut out);
        let ms: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / 640.0;
        let s = 1.0 / (ms + 1e-6).sqrt();
        for i in 0..640 {
            let want = x[i] as f64 * s * w[i] as f64;
            assert!(
                (out[i] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{i}"
            );
        }
        let mut y = x.clone();
        rms_norm_in_place(&mut y, &w, 1e-6);
        assert_eq!(y, out);
    }

    /// The lane sums give ggml's sequential f64 sum's scale on ordinary rows.
    #[test]
    fn lane_sums_give_the_sequential_scale() {
        for r in 0..2000 {
            let n = 64 + r % 700;
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7 + r * 13) as f32 * 0.0137).sin() * (1.0 + (r % 17) as f32))
                .collect();
            let mut sum = 0f64;
            for &v in &x {
                sum += (v * v) as f64;
            }
            let want = 1.0 / ((sum / n as f64) as f32 + 1e-6).sqrt();
            assert_eq!(rms_scale(&x, 1e-6).to_bits(), want.to_bits(), "row {r}");
        }
    }

    #[test]
    fn zero_row_stays_finite() {
        let mut out = [1.0f32; 4];
        rms_norm(&[0.0; 4], &[1.0; 4], 1e-5, &mut out);
        assert_eq!(out, [0.0; 4]);
    }
}
