//! F32: little-endian floats; dot partner F32.
//!
//! Float dots follow ggml's AVX2 `ggml_vec_dot_f32` layout: four 8-lane accumulators over
//! 32-element steps, reduced by `GGML_F32x8_REDUCE`, then a scalar tail. (llama.cpp's AVX-512
//! build uses 16-lane registers instead; we keep one layout on every level so all our kernels
//! agree to the bit, and our AVX-512 kernel packs the same four accumulators into two registers.)

use crate::isa::Isa;

/// Four accumulators of eight lanes, as `sum[0..4]` in ggml's vec.cpp.
pub(crate) type Acc4x8 = [[f32; 8]; 4];

/// Runs `step(acc, i)` for every 32-element step below `n & !31`; returns the accumulators and
/// where the scalar tail starts.
#[inline]
pub(crate) fn steps(n: usize, mut step: impl FnMut(&mut Acc4x8, usize)) -> (Acc4x8, usize) {
    let np = n & !31;
    let mut acc = [[0f32; 8]; 4];
    for i in (0..np).step_by(32) {
        step(&mut acc, i);
    }
    (acc, np)
}

/// `GGML_F32x8_REDUCE`: sum[0]+=sum[2], sum[1]+=sum[3], sum[0]+=sum[1], then halves and two
/// horizontal adds.
pub(crate) fn reduce_hadd(acc: &Acc4x8) -> f32 {
    let s: [f32; 8] = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    let t: [f32; 4] = std::array::from_fn(|l| s[l] + s[l + 4]);
    (t[0] + t[1]) + (t[2] + t[3])
}

#[inline]
pub(crate) fn get(x: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([x[4 * i], x[4 * i + 1], x[4 * i + 2], x[4 * i + 3]])
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

pub(crate) fn quantize(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

/// Dot of two F32 rows of `n` elements (byte slices of `4n`).
pub(crate) fn dot(isa: Isa, x: &[u8], y: &[u8], n: usize) -> f32 {
    match isa {
        // SAFETY: `isa` never exceeds the detected level, so the CPU has these features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni | Isa::Amx => unsafe { dot_avx512(x, y, n) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { dot_avx2(x, y, n) },
        _ => dot_scalar(x, y, n),
    }
}

pub(crate) fn dot_scalar(x: &[u8], y: &[u8], n: usize) -> f32 {
    let (acc, np) = steps(n, |acc, i| {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (l, a) in lanes.iter_mut().enumerate() {
                let e = i + 8 * j + l;
                *a = get(x, e).mul_add(get(y, e), *a);
            }
        }
    });
    tail(reduce_hadd(&acc), x, y, np, n)
}

/// The scalar leftovers; `sumf += x*y` is assumed contracted to an FMA as compilers do for it.
fn tail(mut sumf: f32, x: &[u8], y: &[u8], from: usize, n: usize) -> f32 {
    for i in from..n {
        sumf = get(x, i).mul_add(get(y, i), sumf);
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
pub(crate) use simd::*;

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// The AVX tail of `GGML_F32x8_REDUCE` on an already-combined register.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn reduce8_hadd(s: __m256) -> f32 {
        let t0 = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let t1 = _mm_hadd_ps(t0, t0);
        _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn ld8(x: &[u8], i: usize) -> __m256 {
        assert!(4 * (i + 8) <= x.len());
        // SAFETY: bounds checked above; unaligned load.
        unsafe { _mm256_loadu_ps(x.as_ptr().add(4 * i).cast()) }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    fn ld16(x: &[u8], i: usize) -> __m512 {
        assert!(4 * (i + 16) <= x.len());
        // SAFETY: bounds checked above; unaligned load.
        unsafe { _mm512_loadu_ps(x.as_ptr().add(4 * i).cast()) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn dot_avx2(x: &[u8], y: &[u8], n: usize) -> f32 {
        let np = n & !31;
        let mut s = [_mm256_setzero_ps(); 4];
        for i in (0..np).step_by(32) {
            for (j, sj) in s.iter_mut().enumerate() {
                *sj = _mm256_fmadd_ps(ld8(x, i + 8 * j), ld8(y, i + 8 * j), *sj);
            }
        }
        let s = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
        super::tail(reduce8_hadd(s), x, y, np, n)
    }

    /// Accumulators 0|1 and 2|3 packed into two 512-bit registers.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(crate) fn dot_avx512(x: &[u8], y: &[u8], n: usize) -> f32 {
        let np = n & !31;
        let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in (0..np).step_by(32) {
            a = _mm512_fmadd_ps(ld16(x, i), ld16(y, i), a);
            b = _mm512_fmadd_ps(ld16(x, i + 16), ld16(y, i + 16), b);
        }
        let s = _mm512_add_ps(a, b); // [s0+s2 | s1+s3]
        let s = crate::x86::fold16_ps(s);
        super::tail(reduce8_hadd(s), x, y, np, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil::Rng;
    use crate::isa::available_isas;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    #[test]
    fn simd_matches_scalar_bit_for_bit() {
        let mut rng = Rng::new(1);
        for n in [0, 1, 31, 32, 33, 64, 100, 640, 2051] {
            let (x, y) = (bytes(&rng.floats(n, 1.0)), bytes(&rng.floats(n, 1.0)));
            let want = dot_scalar(&x, &y, n);
            for isa in available_isas() {
                assert_eq!(dot(isa, &x, &y, n).to_bits(), want.to_bits(), "{isa} n={n}");
            }
        }
    }

    #[test]
    fn dot_is_close_to_f64_reference() {
        let mut rng = Rng::new(2);
        let (x, y) = (rng.floats(1000, 1.0), rng.floats(1000, 1.0));
        let exact: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        let got = dot_scalar(&bytes(&x), &bytes(&y), 1000) as f64;
        assert!((got - exact).abs() < 1e-4, "{got} vs {exact}");
    }
}
