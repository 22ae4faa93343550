//! BF16: bfloat16; dot partner BF16 (activations rounded the ggml way).
//!
//! The dot follows ggml's AVX2 `ggml_vec_dot_bf16`: four 8-lane accumulators over 32-element
//! steps, combined as (c1+c3)+(c2+c4), `hsum_float_8`, a double-precision tail. Products of two
//! bfloat16 values are exact in f32, so the separate multiply and add round like an FMA would.

use super::fp32::steps;
use crate::common::{Acc8, bf16_to_f32, f32_to_bf16};
use crate::isa::Isa;

#[inline]
fn get(x: &[u8], i: usize) -> f32 {
    bf16_to_f32(u16::from_le_bytes([x[2 * i], x[2 * i + 1]]))
}

pub(crate) fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (i, d) in dst.iter_mut().enumerate() {
        *d = get(src, i);
    }
}

pub(crate) fn quantize(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&f32_to_bf16(*s).to_le_bytes());
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
                *a += get(x, e) * get(y, e);
            }
        }
    });
    let c = Acc8(std::array::from_fn(|l| {
        (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l])
    }));
    tail(c.hsum(), x, y, np, n)
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
    use crate::x86::hsum_f32x8;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn ld8(x: &[u8], i: usize) -> __m256 {
        assert!(2 * (i + 8) <= x.len());
        // SAFETY: bounds checked above; unaligned load.
        let h = unsafe { _mm_loadu_si128(x.as_ptr().add(2 * i).cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    fn ld16(x: &[u8], i: usize) -> __m512 {
        assert!(2 * (i + 16) <= x.len());
        // SAFETY: bounds checked above; unaligned load.
        let h = unsafe { _mm256_loadu_si256(x.as_ptr().add(2 * i).cast()) };
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn dot_avx2(x: &[u8], y: &[u8], n: usize) -> f32 {
        let np = n & !31;
        let mut c = [_mm256_setzero_ps(); 4];
        for i in (0..np).step_by(32) {
            for (j, cj) in c.iter_mut().enumerate() {
                *cj = _mm256_add_ps(_mm256_mul_ps(ld8(x, i + 8 * j), ld8(y, i + 8 * j)), *cj);
            }
        }
        let s = _mm256_add_ps(_mm256_add_ps(c[0], c[2]), _mm256_add_ps(c[1], c[3]));
        super::tail(hsum_f32x8(s), x, y, np, n)
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(crate) fn dot_avx512(x: &[u8], y: &[u8], n: usize) -> f32 {
        let np = n & !31;
        let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in (0..np).step_by(32) {
            a = _mm512_add_ps(_mm512_mul_ps(ld16(x, i), ld16(y, i)), a);
            b = _mm512_add_ps(_mm512_mul_ps(ld16(x, i + 16), ld16(y, i + 16)), b);
        }
        let s = _mm512_add_ps(a, b);
        let s = crate::x86::fold16_ps(s);
        super::tail(hsum_f32x8(s), x, y, np, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil::Rng;
    use crate::isa::available_isas;

    #[test]
    fn simd_matches_scalar_bit_for_bit() {
        let mut rng = Rng::new(4);
        for n in [0, 1, 31, 32, 33, 64, 100, 640, 2051] {
            let mut x = vec![0u8; 2 * n];
            let mut y = vec![0u8; 2 * n];
            quantize(&rng.floats(n, 3.0), &mut x);
            quantize(&rng.floats(n, 3.0), &mut y);
            let want = dot_scalar(&x, &y, n);
            for isa in available_isas() {
                assert_eq!(dot(isa, &x, &y, n).to_bits(), want.to_bits(), "{isa} n={n}");
            }
        }
    }
}
