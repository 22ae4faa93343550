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
    #[cfg(target_arch = "x86_64")]
    if simd::enabled() {
        // SAFETY: `enabled` checked AVX-512 F and F16C.
        return unsafe { simd::convert(src, dst) };
    }
    convert_scalar(src, dst)
}

/// [`convert`], one element at a time.
#[inline(always)]
pub fn convert_scalar(src: &[f32], dst: &mut [u16]) {
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
    #[cfg(target_arch = "x86_64")]
    if simd::enabled() {
        // SAFETY: `enabled` checked AVX-512 F and F16C.
        return unsafe { simd::dot_ggml(x, y) };
    }
    dot_ggml_scalar(x, y)
}

/// [`dot_ggml`], one element at a time.
#[inline(always)]
pub fn dot_ggml_scalar(x: &[u16], y: &[u16]) -> f32 {
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
pub(crate) const FP16_STEP: usize = 128;

/// `ggml_vec_mad_f16`, `y += x * v`, as the reference build runs it (AVX512-FP16): whole steps of
/// 128 use native half arithmetic — `v` rounded to half, one rounding of `x*v + y` to half — and
/// the leftovers compute `y + x*v` in f32 (one FMA) and round to half.
#[inline(always)]
pub fn mad(y: &mut [u16], x: &[u16], v: f32) {
    #[cfg(target_arch = "x86_64")]
    if simd::enabled() {
        // SAFETY: `enabled` checked AVX-512 F and F16C.
        return unsafe { simd::mad(y, x, v) };
    }
    mad_scalar(y, x, v)
}

/// [`mad`], one element at a time.
#[inline(always)]
pub fn mad_scalar(y: &mut [u16], x: &[u16], v: f32) {
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
    #[cfg(target_arch = "x86_64")]
    if simd::enabled() {
        // SAFETY: `enabled` checked AVX-512 F and F16C.
        return unsafe { simd::scale(y, v) };
    }
    scale_scalar(y, v)
}

/// [`scale`], one element at a time.
#[inline(always)]
pub fn scale_scalar(y: &mut [u16], v: f32) {
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

/// AVX-512 twins of the half loops above, bit-identical: the conversions are exact, the FMAs
/// and products are the same operations lane by lane, and the roundings to half are the ones
/// `half` performs on a CPU with F16C (f64 → f32 to nearest, then `vcvtps2ph` to nearest).
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd {
    use super::{FP16_STEP, reduce16, table};
    use std::arch::x86_64::*;

    /// Whether the twins may run: AVX-512 allowed and F16C present (with it `half` rounds
    /// f64 through f32, as these twins do).
    #[inline(always)]
    pub fn enabled() -> bool {
        hearth_quant::active_isa() >= hearth_quant::Isa::Avx512
            && std::arch::is_x86_feature_detected!("f16c")
    }

    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT;

    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    #[inline]
    unsafe fn ld16(p: *const u16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable halves at `p`.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }

    /// `vcvtps2ph` to nearest, 16 at a time: the instruction `half` itself uses with F16C.
    ///
    /// # Safety
    /// AVX-512 F and F16C.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub unsafe fn convert(src: &[f32], dst: &mut [u16]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n` for both.
            unsafe {
                let h = _mm512_cvtps_ph::<RNE>(_mm512_loadu_ps(src.as_ptr().add(i)));
                _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), h);
            }
            i += 16;
        }
        super::convert_scalar(&src[i..n], &mut dst[i..n]);
    }

    /// # Safety
    /// AVX-512 F and F16C.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub unsafe fn dot_ggml(x: &[u16], y: &[u16]) -> f32 {
        let n = x.len().min(y.len());
        let np = n & !63;
        let (xp, yp) = (x.as_ptr(), y.as_ptr());
        let mut s = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i < np {
            for (j, acc) in s.iter_mut().enumerate() {
                // SAFETY: `i + 16 * j + 16 <= np <= n`.
                unsafe {
                    let a = ld16(xp.add(i + 16 * j));
                    let b = ld16(yp.add(i + 16 * j));
                    *acc = _mm512_fmadd_ps(a, b, *acc);
                }
            }
            i += 64;
        }
        let v = _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
        let mut lanes = [0f32; 16];
        // SAFETY: `lanes` holds 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
        let t = table();
        let mut sumf = reduce16(&lanes) as f64;
        for k in np..n {
            sumf += (t[x[k] as usize] * t[y[k] as usize]) as f64;
        }
        sumf as f32
    }

    /// The 16 lane sums of tinyBLAS's dot of `n` (a multiple of 16) halves (`BYTES` 2) or
    /// floats (4) at `w` and `a`: lane `k % 16` accumulates `w[k]·a[k]` with one FMA each.
    ///
    /// # Safety
    /// AVX-512 F and F16C; `n · BYTES` readable bytes at `w` and at `a`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub unsafe fn tinyblas_lanes<const BYTES: usize>(
        w: *const u8,
        a: *const u8,
        n: usize,
    ) -> [f32; 16] {
        let ld = |p: *const u8, k: usize| unsafe {
            if BYTES == 2 {
                ld16(p.cast::<u16>().add(k))
            } else {
                _mm512_loadu_ps(p.cast::<f32>().add(k))
            }
        };
        let mut acc = _mm512_setzero_ps();
        for k in (0..n).step_by(16) {
            acc = _mm512_fmadd_ps(ld(w, k), ld(a, k), acc);
        }
        let mut lanes = [0f32; 16];
        // SAFETY: `lanes` holds 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
        lanes
    }

    /// [`tinyblas_lanes`] of 16 rows (`rb` bytes apart) at once, each reduced as
    /// [`super::reduce16`] does (lanes `i + 8`, then `i + 4`, `i + 2`, `i + 1` added pairwise),
    /// with the 16 sums transposed into one register: `out[r]` is row r's dot.
    ///
    /// # Safety
    /// AVX-512 F and F16C; 16 rows of `n · BYTES` readable bytes at `w`, `rb` apart, and
    /// `n · BYTES` at `a`; `n` a multiple of 16.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub unsafe fn tinyblas_rows16<const BYTES: usize>(
        w: *const u8,
        rb: usize,
        a: *const u8,
        n: usize,
        out: &mut [f32; 16],
    ) {
        let ld = |p: *const u8, k: usize| unsafe {
            if BYTES == 2 {
                ld16(p.cast::<u16>().add(k))
            } else {
                _mm512_loadu_ps(p.cast::<f32>().add(k))
            }
        };
        let mut acc = [_mm512_setzero_ps(); 16];
        for k in (0..n).step_by(16) {
            let av = ld(a, k);
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(ld(w.wrapping_add(r * rb), k), av, *acc);
            }
        }
        // Lanes i + 8 (two rows per register), i + 4 (four), i + 2 and i + 1 (sixteen).
        let x: [__m512; 8] = std::array::from_fn(|j| {
            let (a, b) = (acc[2 * j], acc[2 * j + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(a, b),
                _mm512_shuffle_f32x4::<0xEE>(a, b),
            )
        });
        let y: [__m512; 4] = std::array::from_fn(|j| {
            let (a, b) = (x[2 * j], x[2 * j + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(a, b),
                _mm512_shuffle_f32x4::<0xDD>(a, b),
            )
        });
        let z: [__m512; 2] = std::array::from_fn(|j| {
            let (a, b) = (y[2 * j], y[2 * j + 1]);
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x44>(a, b),
                _mm512_shuffle_ps::<0xEE>(a, b),
            )
        });
        let f = _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(z[0], z[1]),
            _mm512_shuffle_ps::<0xDD>(z[0], z[1]),
        );
        // Lane 4k + j holds row 4j + k.
        let idx = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
        // SAFETY: `out` holds 16 floats.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), _mm512_permutexvar_ps(idx, f)) };
    }

    /// # Safety
    /// AVX-512 F and F16C.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub unsafe fn mad(y: &mut [u16], x: &[u16], v: f32) {
        let n = y.len().min(x.len());
        let np = n & !(FP16_STEP - 1);
        let t = table();
        // The f64 FMA of the scalar twin is exact, so one f32 FMA (the exact value rounded to
        // f32 once) gives the same f32, 16 lanes at a time.
        let vh = _mm512_set1_ps(t[super::to_f16(v) as usize]);
        let (yp, xp) = (y.as_mut_ptr(), x.as_ptr());
        let mut i = 0;
        while i < np {
            // SAFETY: `i + 16 <= np <= n` (`FP16_STEP` is a multiple of 16).
            unsafe {
                let r = _mm512_fmadd_ps(ld16(xp.add(i)), vh, ld16(yp.add(i)));
                _mm256_storeu_si256(yp.add(i).cast(), _mm512_cvtps_ph::<RNE>(r));
            }
            i += 16;
        }
        let vs = _mm512_set1_ps(v);
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`.
            unsafe {
                let r = _mm512_fmadd_ps(ld16(xp.add(i)), vs, ld16(yp.add(i)));
                _mm256_storeu_si256(yp.add(i).cast(), _mm512_cvtps_ph::<RNE>(r));
            }
            i += 16;
        }
        for k in i..n {
            y[k] = super::to_f16(t[x[k] as usize].mul_add(v, t[y[k] as usize]));
        }
    }

    /// # Safety
    /// AVX-512 F and F16C.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub unsafe fn scale(y: &mut [u16], v: f32) {
        let n = y.len();
        let np = n & !(FP16_STEP - 1);
        let t = table();
        // A product of two halves is exact in f32 as in the twin's f64.
        let vh = _mm512_set1_ps(t[super::to_f16(v) as usize]);
        let yp = y.as_mut_ptr();
        let mut i = 0;
        while i < np {
            // SAFETY: `i + 16 <= np <= n`.
            unsafe {
                let r = _mm512_mul_ps(ld16(yp.add(i)), vh);
                _mm256_storeu_si256(yp.add(i).cast(), _mm512_cvtps_ph::<RNE>(r));
            }
            i += 16;
        }
        let vs = _mm512_set1_ps(v);
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`.
            unsafe {
                let r = _mm512_mul_ps(ld16(yp.add(i)), vs);
                _mm256_storeu_si256(yp.add(i).cast(), _mm512_cvtps_ph::<RNE>(r));
            }
            i += 16;
        }
        for yi in y[i..].iter_mut() {
            *yi = super::to_f16(t[*yi as usize] * v);
        }
    }
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

    /// Halves of every magnitude and sign (subnormals, large values), with a few infinities.
    fn wild(n: usize, seed: u64) -> Vec<u16> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let h = (s >> 20) as u16;
                if h & 0x7c00 == 0x7c00 { h & 0xbfff } else { h }
            })
            .collect()
    }

    #[test]
    fn simd_twins_match_scalar_bit_for_bit() {
        for n in [1, 15, 16, 64, 100, 128, 200, 256, 300] {
            for seed in 0..40u64 {
                let (x, y0) = if seed % 2 == 0 {
                    (halves(n, seed as u32), halves(n, seed as u32 * 3 + 1))
                } else {
                    (wild(n, seed), wild(n, seed + 1000))
                };
                let d = dot_ggml(&x, &y0);
                let ds = dot_ggml_scalar(&x, &y0);
                assert!(d.to_bits() == ds.to_bits() || (d.is_nan() && ds.is_nan()));
                for v in [
                    0.3f32,
                    -1.7,
                    1e-3,
                    6.5e4,
                    3e-8,
                    (seed as f32 * 0.77).exp() - 5.0,
                ] {
                    let (mut a, mut b) = (y0.clone(), y0.clone());
                    mad(&mut a, &x, v);
                    mad_scalar(&mut b, &x, v);
                    assert_eq!(a, b, "mad n={n} seed={seed} v={v}");
                    scale(&mut a, v);
                    scale_scalar(&mut b, v);
                    assert_eq!(a, b, "scale n={n} seed={seed} v={v}");
                    // Rounding floats to halves, ties, overflow and tiny values included.
                    let f: Vec<f32> = x.iter().map(|&h| to_f32(h) * v * 1.0001).collect();
                    let (mut a, mut b) = (vec![0u16; n], vec![0u16; n]);
                    convert(&f, &mut a);
                    convert_scalar(&f, &mut b);
                    assert_eq!(a, b, "convert n={n} seed={seed} v={v}");
                }
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
