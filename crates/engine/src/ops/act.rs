//! Element-wise functions as ggml's CPU backend computes them: its vectorized `expf`
//! (`ggml_v_expf`, AVX-512 form) for SiLU and softmax, and GELU through a table indexed by the
//! input rounded to half (`GGML_GELU_FP16`).
//!
//! ggml applies its vector kernels to whole groups of 16 floats and finishes a row with the C
//! library's `expf`; the functions here split rows the same way.

use std::sync::LazyLock;

use super::f16;

const LANES: usize = 16;

/// `ggml_v_expf` (AVX-512), one lane: a degree-5 polynomial on the reduced argument, scaled by
/// `2^n`; `|n| > 192` gives 0 or infinity.
#[inline(always)]
pub fn v_expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r);
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),
        (-n).mul_add(f32::from_bits(0x3f31_7200), x),
    );
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010)
        .mul_add(b, f32::from_bits(0x3d2b_9f17))
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)),
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6).mul_add(b, 1.0));
    if n.abs() > 192.0 {
        // ggml's blend: zero where n <= 0, infinity elsewhere.
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // `_mm512_scalef_ps(j, n)`: exact in f64, one rounding to f32 (subnormals included).
    // 2^n built from its bits (|n| <= 192, a normal f64): the same value as `powi`.
    let scale = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    (j as f64 * scale) as f32
}

/// `ggml_v_silu`: `x / (1 + v_expf(-x))`.
#[inline(always)]
pub fn v_silu(x: f32) -> f32 {
    x / (1.0 + v_expf(0.0 - x))
}

/// `ggml_silu_f32`, the scalar tail: the C library's `expf`.
#[inline]
pub fn silu_scalar(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fma_dispatch! {
    /// `ggml_vec_swiglu_f32`: `out = silu(gate) * up`.
    pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) => swiglu_impl
}

#[inline(always)]
fn swiglu_impl(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = out.len();
    let nv = n / LANES * LANES;
    for i in 0..nv {
        out[i] = v_silu(gate[i]) * up[i];
    }
    for i in nv..n {
        out[i] = silu_scalar(gate[i]) * up[i];
    }
}

/// [`swiglu`] written over `gate` (each output depends on its own inputs only).
pub fn swiglu_in_place(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd::enabled() {
        // SAFETY: `enabled` checked AVX-512 F (the active ISA never exceeds the CPU's).
        unsafe { simd::swiglu_in_place(gate, up) };
        return;
    }
    swiglu_in_place_fma(gate, up);
}

fma_dispatch! {
    fn swiglu_in_place_fma(gate: &mut [f32], up: &[f32]) => swiglu_in_place_impl
}

#[inline(always)]
fn swiglu_in_place_impl(gate: &mut [f32], up: &[f32]) {
    let n = gate.len();
    let nv = n / LANES * LANES;
    for i in 0..nv {
        gate[i] = v_silu(gate[i]) * up[i];
    }
    for i in nv..n {
        gate[i] = silu_scalar(gate[i]) * up[i];
    }
}

/// `ggml_gelu_f32` (tanh approximation). GCC contracts `1 + a*x*x` into one FMA.
pub fn gelu_f32(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = (GELU_COEF_A * x).mul_add(x, 1.0);
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh())
}

/// `ggml_table_gelu_f16`: GELU of every half, rounded to half (and one zero entry past the end,
/// so a 32-bit gather at the last index stays inside).
static GELU_F16: LazyLock<Box<[u16]>> = LazyLock::new(|| {
    (0..=u16::MAX)
        .map(|h| f16::to_f16(gelu_f32(f16::to_f32(h))))
        .chain([0])
        .collect::<Vec<_>>()
        .into_boxed_slice()
});

/// `ggml_vec_gelu_f32` with `GGML_GELU_FP16`: the table at `half(x)`, exact outside ±10.
#[inline]
pub fn gelu(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        f16::to_f32(GELU_F16[f16::to_f16(x) as usize])
    }
}

/// `ggml_vec_geglu_f32`: `out = gelu(gate) * up`, GELU by the half table.
#[inline(always)]
pub fn geglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let table = &*GELU_F16;
    for ((o, &x), &g) in out.iter_mut().zip(gate).zip(up) {
        *o = geglu_one(table, x, g);
    }
}

/// [`geglu`] written over `gate`.
pub fn geglu_in_place(gate: &mut [f32], up: &[f32]) {
    let table = &*GELU_F16;
    #[cfg(target_arch = "x86_64")]
    if hearth_quant::active_isa() >= hearth_quant::Isa::Avx512
        && std::arch::is_x86_feature_detected!("f16c")
    {
        // SAFETY: AVX-512 F/BW/VL (the active ISA never exceeds the CPU's) and F16C detected.
        unsafe { simd::geglu_in_place_avx512(table, gate, up) };
        return;
    }
    geglu_in_place_scalar(table, gate, up);
}

fn geglu_in_place_scalar(table: &[u16], gate: &mut [f32], up: &[f32]) {
    for (x, &g) in gate.iter_mut().zip(up) {
        *x = geglu_one(table, *x, g);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Whether the AVX-512 forms below may run.
    #[inline(always)]
    pub(super) fn enabled() -> bool {
        hearth_quant::active_isa() >= hearth_quant::Isa::Avx512
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn c(bits: u32) -> __m512 {
        _mm512_set1_ps(f32::from_bits(bits))
    }

    /// `ggml_v_expf` itself, 16 lanes: bit for bit [`super::v_expf`] in each lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub(super) fn v_expf(x: __m512) -> __m512 {
        let r = c(0x4b40_0000);
        let z = _mm512_fmadd_ps(x, c(0x3fb8_aa3b), r);
        let n = _mm512_sub_ps(z, r);
        let b = _mm512_fnmadd_ps(n, c(0x35bf_be8e), _mm512_fnmadd_ps(n, c(0x3f31_7200), x));
        let big = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), _mm512_set1_ps(192.0));
        let u = _mm512_mul_ps(b, b);
        let j = _mm512_fmadd_ps(
            _mm512_fmadd_ps(
                _mm512_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
                u,
                _mm512_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
            ),
            u,
            _mm512_fmadd_ps(c(0x3f7f_fff6), b, _mm512_set1_ps(1.0)),
        );
        let res = _mm512_scalef_ps(j, n);
        if big == 0 {
            return res;
        }
        let zero = _mm512_setzero_ps();
        let low = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, zero);
        let alt = _mm512_mask_blend_ps(low, _mm512_set1_ps(f32::INFINITY), zero);
        _mm512_mask_blend_ps(big, res, alt)
    }

    /// [`super::f16::reduce16`] in registers: halves, quarters, then pairs.
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f")]
    fn reduce_add(v: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        let t = _mm256_add_ps(hi, lo);
        let q = _mm_add_ps(_mm256_extractf128_ps::<1>(t), _mm256_castps256_ps128(t));
        let p = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)))
    }

    /// [`super::exp_sum`] with the vector `expf` in registers.
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub(super) fn exp_sum(x: &mut [f32], max: f32) -> f64 {
        let n = x.len();
        let nv = n / 16 * 16;
        let m = _mm512_set1_ps(max);
        let mut sum = 0f64;
        for i in (0..nv).step_by(16) {
            // SAFETY: i + 16 <= n.
            unsafe {
                let e = v_expf(_mm512_sub_ps(_mm512_loadu_ps(x.as_ptr().add(i)), m));
                _mm512_storeu_ps(x.as_mut_ptr().add(i), e);
                sum += reduce_add(e) as f64;
            }
        }
        sum + super::exp_sum_tail(&mut x[nv..], max)
    }

    /// [`super::max`] 16 lanes at a time (NaN skipped as there).
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub(super) fn max(x: &[f32]) -> f32 {
        let nv = x.len() / 16 * 16;
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..nv).step_by(16) {
            // SAFETY: i + 16 <= len; `max_ps` returns its second operand when the first is NaN.
            m = _mm512_max_ps(unsafe { _mm512_loadu_ps(x.as_ptr().add(i)) }, m);
        }
        super::max_scalar(&x[nv..], _mm512_reduce_max_ps(m))
    }

    /// [`super::swiglu_in_place`] 16 at a time.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub(super) fn swiglu_in_place(gate: &mut [f32], up: &[f32]) {
        let n = gate.len().min(up.len());
        let nv = n / 16 * 16;
        let one = _mm512_set1_ps(1.0);
        for i in (0..nv).step_by(16) {
            // SAFETY: i + 16 <= n for both slices.
            unsafe {
                let x = _mm512_loadu_ps(gate.as_ptr().add(i));
                let e = v_expf(_mm512_sub_ps(_mm512_setzero_ps(), x));
                let silu = _mm512_div_ps(x, _mm512_add_ps(one, e));
                let y = _mm512_mul_ps(silu, _mm512_loadu_ps(up.as_ptr().add(i)));
                _mm512_storeu_ps(gate.as_mut_ptr().add(i), y);
            }
        }
        for i in nv..n {
            gate[i] = super::silu_scalar(gate[i]) * up[i];
        }
    }

    /// [`super::geglu_in_place`] 16 at a time: the half conversion (round to nearest even, as
    /// the scalar), a 32-bit gather from the table (padded by one entry), the same blends at ±10.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) fn geglu_in_place_avx512(table: &[u16], gate: &mut [f32], up: &[f32]) {
        assert_eq!(table.len(), 65537);
        let n = gate.len().min(up.len());
        let nv = n / 16 * 16;
        let (lo, hi) = (_mm512_set1_ps(-10.0), _mm512_set1_ps(10.0));
        for i in (0..nv).step_by(16) {
            // SAFETY: i + 16 <= n for both slices; every gathered index is a half (< 65536),
            // and 4 bytes at 2 * index stay inside the padded table.
            unsafe {
                let x = _mm512_loadu_ps(gate.as_ptr().add(i));
                let g = _mm512_loadu_ps(up.as_ptr().add(i));
                let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
                let idx = _mm512_cvtepu16_epi32(h);
                let t = _mm512_i32gather_epi32::<2>(idx, table.as_ptr().cast());
                let gel = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(t));
                let mut y = _mm512_mul_ps(gel, g);
                y = _mm512_mask_mul_ps(y, _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, hi), x, g);
                y = _mm512_mask_mov_ps(
                    y,
                    _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, lo),
                    _mm512_setzero_ps(),
                );
                _mm512_storeu_ps(gate.as_mut_ptr().add(i), y);
            }
        }
        super::geglu_in_place_scalar(table, &mut gate[nv..n], &up[nv..n]);
    }
}

#[inline(always)]
fn geglu_one(table: &[u16], x: f32, g: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x * g
    } else {
        f16::to_f32(table[f16::to_f16(x) as usize]) * g
    }
}

/// `ggml_vec_soft_max_f32`: `y = exp(x - max)` (vector `expf` on groups of 16, sums of each group
/// by `_mm512_reduce_add_ps`, accumulated in f64), returns the sum.
#[inline(always)]
pub fn exp_sum(x: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if simd::enabled() {
        // SAFETY: `enabled` checked AVX-512 F.
        return unsafe { simd::exp_sum(x, max) };
    }
    exp_sum_scalar(x, max)
}

#[inline(always)]
fn exp_sum_scalar(x: &mut [f32], max: f32) -> f64 {
    let nv = x.len() / LANES * LANES;
    let mut sum = 0f64;
    for chunk in x[..nv].chunks_exact_mut(LANES) {
        let mut v = [0f32; LANES];
        for (vi, xi) in v.iter_mut().zip(chunk.iter_mut()) {
            *xi = v_expf(*xi - max);
            *vi = *xi;
        }
        sum += f16::reduce16(&v) as f64;
    }
    sum + exp_sum_tail(&mut x[nv..], max)
}

/// The last `len % 16` elements of [`exp_sum`]: the C library's `expf`.
#[inline(always)]
fn exp_sum_tail(x: &mut [f32], max: f32) -> f64 {
    let mut sum = 0f64;
    for xi in x {
        let e = (*xi - max).exp();
        sum += e as f64;
        *xi = e;
    }
    sum
}

/// `ggml_vec_max_f32`.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd::enabled() {
        // SAFETY: `enabled` checked AVX-512 F.
        return unsafe { simd::max(x) };
    }
    max_scalar(x, f32::NEG_INFINITY)
}

#[inline(always)]
fn max_scalar(x: &[f32], from: f32) -> f32 {
    x.iter().fold(from, |m, &v| if v > m { v } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_expf_is_close_to_expf() {
        let mut x = -100.0f32;
        while x < 88.0 {
            let (got, want) = (v_expf(x), x.exp());
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON * want.max(f32::MIN_POSITIVE),
                "{x}: {got} vs {want}"
            );
            x += 0.173;
        }
        assert_eq!(v_expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(v_expf(0.0), 1.0);
        assert_eq!(v_expf(200.0), f32::INFINITY);
        assert!(v_expf(f32::NAN).is_nan());
    }

    #[test]
    fn silu_and_gelu_match_their_formulas() {
        for i in -80..80 {
            let x = i as f32 * 0.1;
            let silu = x / (1.0 + (-x as f64).exp() as f32);
            assert!((v_silu(x) - silu).abs() < 1e-5, "silu {x}");
            let g = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / 2f64.sqrt()));
            // The tanh approximation and the half table together stay within 2e-3 of exact GELU.
            assert!(
                (gelu(x) as f64 - g).abs() < 2e-3 + 1e-3 * g.abs(),
                "gelu {x}"
            );
        }
        assert_eq!(gelu(-11.0), 0.0);
        assert_eq!(gelu(12.0), 12.0);
    }

    // Abramowitz–Stegun 7.1.26 is too coarse; use the series for the test's small range.
    fn libm_erf(x: f64) -> f64 {
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0;
        while term.abs() > 1e-17 && n < 200 {
            sum += term / (2 * n + 1) as f64;
            n += 1;
            term *= -x * x / n as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// Inputs for the vector twins: a sweep over exp's whole range, its edges, specials.
    fn wild() -> Vec<f32> {
        let mut x: Vec<f32> = (0..40_000).map(|i| -200.0 + i as f32 * 0.0071).collect();
        x.extend((0..4000).map(|i| f32::from_bits(0x9000_0000u32.wrapping_add(i * 0x0001_3579))));
        x.extend([
            0.0,
            -0.0,
            88.72,
            88.73,
            -87.33,
            -103.97,
            -104.0,
            133.0,
            -133.0,
            1e-30,
            -1e-30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN,
            3.0,
        ]);
        x
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_softmax_and_swiglu_equal_the_scalar_twins() {
        if !simd::enabled() {
            return;
        }
        let x = wild();
        for chunk in x.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: `enabled` checked AVX-512 F.
            unsafe {
                let v = simd::v_expf(std::arch::x86_64::_mm512_loadu_ps(chunk.as_ptr()));
                std::arch::x86_64::_mm512_storeu_ps(got.as_mut_ptr(), v);
            }
            for (g, &xi) in got.iter().zip(chunk) {
                assert_eq!(g.to_bits(), v_expf(xi).to_bits(), "expf({xi})");
            }
        }
        let finite: Vec<f32> = x.iter().copied().filter(|v| v.is_finite()).collect();
        for len in [0, 5, 16, 64, 77, 1000] {
            let row: Vec<f32> = finite
                .iter()
                .step_by(37)
                .take(len)
                .map(|v| v % 50.0)
                .collect();
            // SAFETY: as above.
            let m = unsafe { simd::max(&row) };
            assert_eq!(m, max_scalar(&row, f32::NEG_INFINITY));
            let (mut a, mut b) = (row.clone(), row.clone());
            // SAFETY: as above.
            let sa = unsafe { simd::exp_sum(&mut a, m) };
            assert_eq!(sa.to_bits(), exp_sum_scalar(&mut b, m).to_bits());
            assert_eq!(a, b);
        }
        let up: Vec<f32> = (0..x.len())
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let (mut a, mut b) = (x.clone(), x.clone());
        // SAFETY: as above.
        unsafe { simd::swiglu_in_place(&mut a, &up) };
        swiglu_in_place_impl(&mut b, &up);
        for ((ga, gb), xi) in a.iter().zip(&b).zip(&x) {
            assert!(
                ga.to_bits() == gb.to_bits() || ga.is_nan() && gb.is_nan(),
                "{xi}"
            );
        }
    }

    #[test]
    fn exp_sum_is_a_softmax_denominator() {
        let mut x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
        x[5] = f32::NEG_INFINITY;
        let m = max(&x);
        let want: f64 = x.iter().map(|&v| ((v - m) as f64).exp()).sum();
        let got = exp_sum(&mut x, m);
        assert!((got - want).abs() < 1e-5 * want);
        assert_eq!(x[5], 0.0);
    }

    /// The vector GEGLU equals the scalar one bit for bit on every half, around ±10 and on
    /// a tail that is not a multiple of 16.
    #[test]
    fn geglu_in_place_simd_equals_scalar() {
        let mut xs: Vec<f32> = (0..=u16::MAX).map(f16::to_f32).collect();
        xs.extend([
            -10.0, -9.999, -10.001, 10.0, 9.999, 10.001, 1e30, -1e30, 0.1234567, 3.3,
        ]);
        let up: Vec<f32> = (0..xs.len())
            .map(|i| ((i as f32) * 0.37).sin() * 3.0)
            .collect();
        let table = &*GELU_F16;
        let mut want = xs.clone();
        geglu_in_place_scalar(table, &mut want, &up);
        let mut got = xs.clone();
        geglu_in_place(&mut got, &up);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{i}: {g} vs {w}"
            );
        }
    }
}
