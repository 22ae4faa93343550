//! Q2_K: super-blocks of 256 two-bit quants in sixteen sub-blocks of 16, each with a 4-bit scale
//! (low nibble) and 4-bit min (high nibble) under f16 `d` and `dmin`. Within each 128-element
//! half, quarter t of element i is bits 2t..2t+2 of qs[32·half + i]. Dot partner Q8_K.
//! Scalar kernel only.

use crate::common::{Acc8, f32_to_f16, fp16, impl_block, lanes256};
use crate::formats::q8_k::BlockQ8K;
use crate::kquant::{make_qkx2_quants, nearest_int};
use hearth_gguf::QK_K;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: [u8; 2],
    pub dmin: [u8; 2],
}
impl_block!(BlockQ2K, 84);

impl BlockQ2K {
    #[inline]
    pub fn q(&self, e: usize) -> i32 {
        ((self.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i32
    }
}

pub(crate) fn dequantize(x: &[BlockQ2K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (fp16(b.d), fp16(b.dmin));
        for (e, o) in out.iter_mut().enumerate() {
            let sc = b.scales[e / 16];
            let (dl, ml) = (d * (sc & 0xf) as f32, min * (sc >> 4) as f32);
            *o = dl * b.q(e) as f32 - ml;
        }
    }
}

/// `quantize_row_q2_K_ref`: (scale, min) per 16 by `make_qkx2_quants` (weights |x|, absolute
/// error), both to 4 bits against the largest, quants re-derived.
pub(crate) fn quantize(x: &[f32], y: &mut [BlockQ2K]) {
    for (xs, b) in x.chunks_exact(QK_K).zip(y) {
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..QK_K / 16 {
            let xb = &xs[16 * j..16 * j + 16];
            let weights: [f32; 16] = std::array::from_fn(|i| xb[i].abs());
            let lb = &mut l[16 * j..16 * j + 16];
            (scales[j], mins[j]) =
                make_qkx2_quants(3, xb, &weights, lb, &mut laux, -0.5, 0.1, 15, true);
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for (s, &v) in b.scales.iter_mut().zip(&scales) {
                *s = nearest_int(iscale * v) as u8;
            }
            b.d = f32_to_f16(max_scale / 15.0).to_le_bytes();
        } else {
            b.scales = [0; 16];
            b.d = f32_to_f16(0.0).to_le_bytes();
        }
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for (s, &v) in b.scales.iter_mut().zip(&mins) {
                *s |= (nearest_int(iscale * v) << 4) as u8;
            }
            b.dmin = f32_to_f16(max_min / 15.0).to_le_bytes();
        } else {
            b.dmin = f32_to_f16(0.0).to_le_bytes();
        }
        for j in 0..QK_K / 16 {
            let d = fp16(b.d) * (b.scales[j] & 0xf) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = fp16(b.dmin) * (b.scales[j] >> 4) as f32;
            for i in 16 * j..16 * j + 16 {
                l[i] = nearest_int((xs[i] + dm) / d).clamp(0, 3) as u8;
            }
        }
        for h in 0..2 {
            for i in 0..32 {
                let q = |t: usize| l[128 * h + 32 * t + i];
                b.qs[32 * h + i] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
            }
        }
    }
}

/// llama.cpp's AVX2 `ggml_vec_dot_q2_K_q8_K`: per super-block, first the mins
/// (dmin·(m[2k]·b[2k] + m[2k+1]·b[2k+1]) into lane k), then the scaled quants, both fused.
pub(crate) fn dot_scalar(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let mut acc = Acc8::default();
    for (a, b) in x.iter().zip(y) {
        let d = b.d() * fp16(a.d);
        let dmin = -b.d() * fp16(a.dmin);
        let m = |j: usize| (a.scales[j] >> 4) as i32;
        acc.fma(
            dmin,
            std::array::from_fn(|k| m(2 * k) * b.bsum(2 * k) + m(2 * k + 1) * b.bsum(2 * k + 1)),
        );
        acc.fma(
            d,
            lanes256(|e| a.q(e), &b.qs, |g| (a.scales[g / 16] & 0xf) as i32),
        );
    }
    acc.hsum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil::Rng;
    use crate::common::{cast, cast_mut};
    use crate::formats::q8_k::tests::act;

    #[test]
    fn round_trip_and_dot() {
        let mut rng = Rng::new(24);
        let (w, x) = (rng.floats(1024, 1.0), rng.floats(1024, 1.0));
        let mut wb = vec![0u8; 4 * 84];
        quantize(&w, cast_mut(&mut wb));
        let mut wd = vec![0f32; 1024];
        dequantize(cast(&wb), &mut wd);
        let err = crate::formats::rmse(&w, &wd);
        assert!(err < 0.33, "rmse {err}");
        let got = dot_scalar(cast(&wb), &act(&x));
        let h = crate::formats::q8_half_step(&x);
        crate::formats::assert_dot_close(got, &wd, &x, |_| h);
    }
}
