//! Half floats as ggml's CPU backend uses them in attention: the KV cache, Q rounded for the KQ
//! dot, and the F16 accumulator of flash attention.
//!
//! Products of two halves are exact in f32, so only the order of the additions matters; each dot
//! below names the llama.cpp kernel whose order it reproduces (x86, AVX-512 build without
//! AVX512-FP16, as the fixtures were made).

use std::sync::LazyLock;

pub use hearth_quant::f32_to_f16 as to_f16;

/// Every half as f32 (ggml's `ggml_table_f32_f16`), 256 KiB.
static F16_TO_F32: LazyLock<Box<[f32]>> = LazyLock::new(|| {
    (0..=u16::MAX)
        .map(hearth_quant::f16_to_f32)
        .collect::<Vec<_>>()
        .into_boxed_slice()
});

/// Half (bits) to f32, exact.
#[inline(always)]
pub fn to_f32(h: u16) -> f32 {
    F16_TO_F32[h as usize]
}

/// The table itself, for loops that convert many values.
#[inline]
pub fn table() -> &'static [f32] {
    &F16_TO_F32
}

/// Rounds `src` to halves (nearest even).
#[inline(always)]
pub fn convert(src: &[f32], dst: &mut [u16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = to_f16(s);
    }
}

/// `_mm512_reduce_add_ps` as GCC expands it: halves, quarters, then pairs.
#[inline(always)]
pub fn reduce16(v: &[f32; 16]) -> f32 {
    let mut t = [0f32; 8];
    for i in 0..8 {
        t[i] = v[8 + i] + v[i];
    }
    let q = [t[4] + t[0], t[5] + t[1], t[6] + t[2], t[7] + t[3]];
    let p = [q[0] + q[2], q[1] + q[3]];
    p[0] + p[1]
}

/// `ggml_vec_dot_f16`: four 16-lane accumulators over steps of 64, folded 0+2, 1+3, then 0+1,
/// reduced, and the tail added in f64. Used by flash attention for `K · Q`.
#[inline(always)]
pub fn dot_ggml(x: &[u16], y: &[u16]) -> f32 {
    let n = x.len().min(y.len());
    let np = n & !63;
    let t = table();
    let mut sum = [[0f32; 16]; 4];
    let mut i = 0;
    while i < np {
        for (j, acc) in sum.iter_mut().enumerate() {
            let base = i + 16 * j;
            for l in 0..16 {
                acc[l] = t[x[base + l] as usize].mul_add(t[y[base + l] as usize], acc[l]);
            }
        }
        i += 64;
    }
    let mut v = [0f32; 16];
    for l in 0..16 {
        v[l] = (sum[0][l] + sum[2][l]) + (sum[1][l] + sum[3][l]);
    }
    let mut sumf = reduce16(&v) as f64;
    for k in np..n {
        sumf += (t[x[k] as usize] * t[y[k] as usize]) as f64;
    }
    sumf as f32
}

/// One 16-lane accumulator, lane `i % 16`, reduced at the end: llamafile's tinyBLAS for F16 ×
/// F16, which computes the `KQ` and `KQV` products of attention without flash attention.
/// `x` and `y` are read through `get`, so strided operands need no copy.
pub struct Lanes16 {
    acc: [f32; 16],
}

impl Lanes16 {
    #[inline]
    pub fn new() -> Self {
        Lanes16 { acc: [0.0; 16] }
    }

    /// Adds `a * b` at index `i` of the dot product.
    #[inline(always)]
    pub fn add(&mut self, i: usize, a: f32, b: f32) {
        let l = &mut self.acc[i & 15];
        *l = a.mul_add(b, *l);
    }

    #[inline]
    pub fn sum(&self) -> f32 {
        reduce16(&self.acc)
    }
}

impl Default for Lanes16 {
    fn default() -> Self {
        Self::new()
    }
}

/// tinyBLAS F16 dot of two contiguous half rows.
#[inline(always)]
pub fn dot_lanes16(x: &[u16], y: &[u16]) -> f32 {
    let t = table();
    let mut acc = Lanes16::new();
    for (i, (&a, &b)) in x.iter().zip(y).enumerate() {
        acc.add(i, t[a as usize], t[b as usize]);
    }
    acc.sum()
}

/// Elements per step of ggml's half-precision vector loops when the CPU has AVX512-FP16
/// (`GGML_F16_STEP` = 128 halves); the rest of a row takes the f32 scalar path.
const FP16_STEP: usize = 128;

/// `ggml_vec_mad_f16`, `y += x * v`, as the reference build runs it (AVX512-FP16): whole steps of
/// 128 use native half arithmetic — `v` rounded to half, one rounding of `x*v + y` to half — and
/// the leftovers compute `y + x*v` in f32 (one FMA) and round to half.
#[inline(always)]
pub fn mad(y: &mut [u16], x: &[u16], v: f32) {
    let t = table();
    let np = y.len().min(x.len()) & !(FP16_STEP - 1);
    let vh = t[to_f16(v) as usize] as f64;
    for (yi, &xi) in y[..np].iter_mut().zip(&x[..np]) {
        *yi = f64_to_f16((t[xi as usize] as f64).mul_add(vh, t[*yi as usize] as f64));
    }
    for (yi, &xi) in y[np..].iter_mut().zip(&x[np..]) {
        *yi = to_f16(t[xi as usize].mul_add(v, t[*yi as usize]));
    }
}

/// `ggml_vec_scale_f16`, `y *= v`: native half multiply on whole steps of 128 (`v` rounded to
/// half first), f32 multiply and rounding for the leftovers.
#[inline(always)]
pub fn scale(y: &mut [u16], v: f32) {
    let t = table();
    let np = y.len() & !(FP16_STEP - 1);
    let vh = t[to_f16(v) as usize] as f64;
    for yi in y[..np].iter_mut() {
        *yi = f64_to_f16(t[*yi as usize] as f64 * vh);
    }
    for yi in y[np..].iter_mut() {
        *yi = to_f16(t[*yi as usize] * v);
    }
}

/// f64 to half with one rounding (a product or FMA of halves is exact in f64 for the ranges
/// here, so this is the correctly rounded half result).
#[inline]
fn f64_to_f16(x: f64) -> u16 {
    hearth_quant::half::f16::from_f64(x).to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halves(n: usize, seed: u32) -> Vec<u16> {
        (0..n)
            .map(|i| to_f16(((i as f32 + seed as f32) * 0.37).sin()))
            .collect()
    }

    #[test]
    fn conversions_round_trip_every_finite_half() {
        for h in 0..=u16::MAX {
            let f = to_f32(h);
            if f.is_finite() {
                assert_eq!(to_f16(f), h, "{h:#06x}");
            }
        }
        assert_eq!(to_f16(1.0 + 1.0 / 4096.0), to_f16(1.0), "ties to even");
    }

    #[test]
    fn dots_agree_with_f64_reference() {
        for n in [16, 64, 100, 256] {
            let (x, y) = (halves(n, 1), halves(n, 7));
            let exact: f64 = x
                .iter()
                .zip(&y)
                .map(|(&a, &b)| to_f32(a) as f64 * to_f32(b) as f64)
                .sum();
            for got in [dot_ggml(&x, &y), dot_lanes16(&x, &y)] {
                assert!(
                    (got as f64 - exact).abs() < 1e-4 * n as f64,
                    "{n}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn reduce16_sums() {
        let v: [f32; 16] = std::array::from_fn(|i| i as f32);
        assert_eq!(reduce16(&v), 120.0);
    }

    #[test]
    fn mad_and_scale_round_once() {
        let mut y = vec![to_f16(1.0); 4];
        mad(&mut y, &[to_f16(2.0); 4], 0.5);
        assert!(y.iter().all(|&h| to_f32(h) == 2.0));
        scale(&mut y, 0.25);
        assert!(y.iter().all(|&h| to_f32(h) == 0.5));
    }
}
