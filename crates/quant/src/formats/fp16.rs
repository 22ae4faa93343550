//! F16: IEEE half floats; dot partner F16 (activations rounded to nearest even).
//!
//! The dot follows ggml's AVX2 `ggml_vec_dot_f16`: the F32 layout (see `fp32`), reduced to a
//! double, plus a double-precision tail. Products of two halves are exact in f32, so fused and
//! unfused accumulation agree.

use super::fp32::{reduce_hadd, steps};
use crate::common::{f16_to_f32, f32_to_f16};
use crate::isa::Isa;

#[inline]
fn get(x: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([x[2 * i], x[2 * i + 1]]))
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (i, d) in dst.iter_mut().enumerate() {
        *d = get(src, i);
    }
}

pub(crate) fn quantize(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&f32_to_f16(*s).to_le_bytes());
    }
}

pub(crate) fn dot(isa: Isa, x: &[u8], y: &[u8], n: usize) -> f32 {
    match isa {
        // SAFETY: `isa` never exceeds the detected level.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni | Isa::Amx => unsafe { simd::dot_avx512(x, y, n) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { simd::dot_avx2(x, y, n) },
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

fn tail(head: f32, x: &[u8], y: &[u8], from: usize, n: usize) -> f32 {
    let mut sumf = head as f64;
    for i in from..n {
        sumf += (get(x, i) * get(y, i)) as f64;
    }
    sumf as f32
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::super::fp32::reduce8_hadd;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn ld8(x: &[u8], i: usize) -> __m256 {
        assert!(2 * (i + 8) <= x.len());
        // SAFETY: bounds checked above; unaligned load.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(x.as_ptr().add(2 * i).cast()) })
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    fn ld16(x: &[u8], i: usize) -> __m512 {
        assert!(2 * (i + 16) <= x.len());
        // SAFETY: bounds checked above; unaligned load.
        _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(x.as_ptr().add(2 * i).cast()) })
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

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(crate) fn dot_avx512(x: &[u8], y: &[u8], n: usize) -> f32 {
        let np = n & !31;
        let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in (0..np).step_by(32) {
            a = _mm512_fmadd_ps(ld16(x, i), ld16(y, i), a);
            b = _mm512_fmadd_ps(ld16(x, i + 16), ld16(y, i + 16), b);
        }
        let s = _mm512_add_ps(a, b);
        let s = crate::x86::fold16_ps(s);
        super::tail(reduce8_hadd(s), x, y, np, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil::Rng;
    use crate::isa::available_isas;

    fn halves(rng: &mut Rng, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; 2 * n];
        quantize(&rng.floats(n, 2.0), &mut v);
        v
    }

    #[test]
    fn simd_matches_scalar_bit_for_bit() {
        let mut rng = Rng::new(3);
        for n in [0, 1, 31, 32, 33, 64, 100, 640, 2051] {
            let (x, y) = (halves(&mut rng, n), halves(&mut rng, n));
            let want = dot_scalar(&x, &y, n);
            for isa in available_isas() {
                assert_eq!(dot(isa, &x, &y, n).to_bits(), want.to_bits(), "{isa} n={n}");
            }
        }
    }

    #[test]
    fn quantize_dequantize_is_f16_rounding() {
        let src = [1.0f32, -2.5, 1e-8, 65504.0, 0.333_333_34];
        let mut b = vec![0u8; 10];
        quantize(&src, &mut b);
        let mut back = [0f32; 5];
        dequantize(&b, &mut back);
        for (s, r) in src.iter().zip(back) {
            assert_eq!(r, half::f16::from_f32(*s).to_f32());
        }
    }
}
