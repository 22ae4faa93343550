//! Q8_K: 256 signed 8-bit quants with an f32 scale and per-16 sums, the activation partner of the
//! K-quants and IQ4_XS. `bsums` let the dot apply sub-block mins without touching the quants.

use crate::common::impl_block;
use crate::kquant::nearest_int;
use hearth_gguf::QK_K;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ8K {
    pub d: [u8; 4],
    pub qs: [i8; QK_K],
    /// 16 little-endian i16: Σ of each group of 16 quants.
    pub bsums: [u8; 32],
}
impl_block!(BlockQ8K, 292);

impl BlockQ8K {
    #[inline]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
    #[inline]
    pub fn bsum(&self, j: usize) -> i32 {
        i16::from_le_bytes([self.bsums[2 * j], self.bsums[2 * j + 1]]) as i32
    }
}

pub(crate) fn dequantize(x: &[BlockQ8K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d();
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = d * q as f32;
        }
    }
}

/// `quantize_row_q8_K_ref` (llama.cpp's x86 build uses it for activations too): the scale
/// maps the signed largest value to -127; rounding is to nearest even.
pub(crate) fn quantize(x: &[f32], y: &mut [BlockQ8K]) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::active_isa() >= crate::isa::Isa::Avx512 {
        // SAFETY: the active level never exceeds what the CPU has.
        return unsafe { quantize_avx512(x, y) };
    }
    quantize_scalar(x, y)
}

/// `quantize` 16 floats at a time: the same signed maximum (the first element of largest
/// magnitude), scale, round-half-even quants and sums. Blocks holding NaN or infinity take the
/// scalar path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
fn quantize_avx512(x: &[f32], y: &mut [BlockQ8K]) {
    use std::arch::x86_64::*;
    for (xb, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        // SAFETY: `xb` holds 256 floats, `b.qs` 256 writable bytes.
        unsafe {
            let ld = |c: usize| _mm512_loadu_ps(xb.as_ptr().add(16 * c));
            let (mut m, mut nan) = (_mm512_setzero_ps(), 0u16);
            for c in 0..16 {
                let v = ld(c);
                // `max(|v|, m)` keeps `m` where |v| is NaN, as the scalar `>` does.
                m = _mm512_max_ps(_mm512_abs_ps(v), m);
                nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            }
            let amax = _mm512_reduce_max_ps(m);
            if nan != 0 || !amax.is_finite() || amax == 0.0 {
                quantize_scalar(xb, std::slice::from_mut(b));
                continue;
            }
            let mut max = 0f32;
            for c in 0..16 {
                let k =
                    _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(ld(c)), _mm512_set1_ps(amax));
                if k != 0 {
                    max = xb[16 * c + k.trailing_zeros() as usize];
                    break;
                }
            }
            let iscale = -127.0 / max;
            let s = _mm512_set1_ps(iscale);
            for c in 0..16 {
                let q = _mm512_min_epi32(
                    _mm512_cvtps_epi32(_mm512_mul_ps(s, ld(c))),
                    _mm512_set1_epi32(127),
                );
                _mm_storeu_si128(
                    b.qs.as_mut_ptr().add(16 * c).cast(),
                    _mm512_cvtepi32_epi8(q),
                );
                let sum = _mm512_reduce_add_epi32(q) as i16;
                b.bsums[2 * c..2 * c + 2].copy_from_slice(&sum.to_le_bytes());
            }
            b.d = (1.0 / iscale).to_le_bytes();
        }
    }
}

/// The plain twin of `quantize`.
pub(crate) fn quantize_scalar(x: &[f32], y: &mut [BlockQ8K]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(y) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            b.d = [0; 4];
            b.qs = [0; QK_K];
            b.bsums = [0; 32];
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for j in 0..16 {
            let s: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
            b.bsums[2 * j..2 * j + 2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        b.d = (1.0 / iscale).to_le_bytes();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::common::{cast, cast_mut};

    #[test]
    fn simd_quantize_matches_scalar() {
        let mut x: Vec<f32> = (0..256 * 12)
            .map(|i| ((i as f32) * 0.377).cos() * (1.0 + (i % 5) as f32 * 2.0))
            .collect();
        x[256..512].fill(0.0);
        x[600] = f32::NAN;
        x[800] = -f32::INFINITY;
        // Ties of magnitude: the first one sets the sign.
        x[1024 + 10] = -50.0;
        x[1024 + 20] = 50.0;
        x[1280 + 7] = 60.0;
        x[1280 + 9] = -60.0;
        let mut want = vec![0u8; 12 * 292];
        let mut got = vec![0u8; 12 * 292];
        quantize_scalar(&x, cast_mut(&mut want));
        quantize(&x, cast_mut(&mut got));
        assert_eq!(want, got);
    }

    /// Activations for dot tests.
    pub fn act(x: &[f32]) -> Vec<BlockQ8K> {
        let mut bytes = vec![0u8; x.len() / QK_K * 292];
        quantize(x, cast_mut(&mut bytes));
        cast::<BlockQ8K>(&bytes).to_vec()
    }

    #[test]
    fn quants_stay_in_range_and_bsums_add_up() {
        let mut rng = crate::common::testutil::Rng::new(15);
        let x = rng.floats(512, 1.0);
        let a = act(&x);
        for b in &a {
            assert!(b.qs.iter().all(|&q| q != -128));
            for j in 0..16 {
                let s: i32 = b.qs[16 * j..16 * (j + 1)].iter().map(|&q| q as i32).sum();
                assert_eq!(b.bsum(j), s);
            }
        }
        let mut back = vec![0f32; 512];
        dequantize(&a, &mut back);
        for (u, v) in x.iter().zip(&back) {
            assert!((u - v).abs() <= a[0].d().abs().max(a[1].d().abs()) * 0.5 + 1e-6);
        }
    }
}
