//! Q3_K: super-blocks of 256 three-bit quants: two low bits packed as in Q2_K, the third in
//! `hmask` (bit 4·half + t of hmask[i]; a clear bit means -4), sixteen signed 6-bit scales
//! (stored +32, packed in 12 bytes) under one f16 `d`. Dot partner Q8_K. Scalar kernel only.

use crate::common::{Acc8, f32_to_f16, fp16, impl_block, lanes256};
use crate::formats::q8_k::BlockQ8K;
use crate::kquant::{make_q3_quants, nearest_int};
use hearth_gguf::QK_K;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}
impl_block!(BlockQ3K, 110);

impl BlockQ3K {
    /// Element `e` as a signed quant in -4..4.
    #[inline]
    pub fn q(&self, e: usize) -> i32 {
        let (h, t, i) = (e / 128, (e % 128) / 32, e % 32);
        let lo = ((self.qs[32 * h + i] >> (2 * t)) & 3) as i32;
        let set = self.hmask[i] & (1 << (4 * h + t)) != 0;
        lo - if set { 0 } else { 4 }
    }

    /// Sub-block scale `j` (-32..32).
    #[inline]
    pub fn scale(&self, j: usize) -> i32 {
        let s = &self.scales;
        let lo = if j < 8 { s[j] & 0xf } else { s[j - 8] >> 4 };
        let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (lo | (hi << 4)) as i32 - 32
    }
}

pub(crate) fn dequantize(x: &[BlockQ3K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16(b.d);
        for (e, o) in out.iter_mut().enumerate() {
            let dl = d * b.scale(e / 16) as f32;
            *o = dl * b.q(e) as f32;
        }
    }
}

/// `quantize_row_q3_K_ref`: per-16 scales by `make_q3_quants`, to signed 6 bits against the
/// largest magnitude, quants re-derived from the rounded scales.
pub(crate) fn quantize(x: &[f32], y: &mut [BlockQ3K]) {
    for (xs, b) in x.chunks_exact(QK_K).zip(y) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut amax) = (0f32, 0f32);
        for j in 0..QK_K / 16 {
            scales[j] = make_q3_quants(4, &xs[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            if scales[j].abs() > amax {
                amax = scales[j].abs();
                max_scale = scales[j];
            }
        }
        b.scales = [0; 12];
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                let v = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    b.scales[j] = v & 0xf;
                } else {
                    b.scales[j - 8] |= (v & 0xf) << 4;
                }
                b.scales[j % 4 + 8] |= (v >> 4) << (2 * (j / 4));
            }
            b.d = f32_to_f16(1.0 / iscale).to_le_bytes();
        } else {
            b.d = f32_to_f16(0.0).to_le_bytes();
        }
        for j in 0..QK_K / 16 {
            let d = fp16(b.d) * b.scale(j) as f32;
            if d == 0.0 {
                continue;
            }
            for i in 16 * j..16 * j + 16 {
                l[i] = (nearest_int(xs[i] / d).clamp(-4, 3) + 4) as i8;
            }
        }
        b.hmask = [0; 32];
        for (j, lj) in l.iter_mut().enumerate() {
            if *lj > 3 {
                b.hmask[j % 32] |= 1 << (j / 32);
                *lj -= 4;
            }
        }
        for h in 0..2 {
            for i in 0..32 {
                let q = |t: usize| l[128 * h + 32 * t + i] as u8;
                b.qs[32 * h + i] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
            }
        }
    }
}

/// llama.cpp's AVX2 `ggml_vec_dot_q3_K_q8_K`, lane for lane.
pub(crate) fn dot_scalar(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    let mut acc = Acc8::default();
    for (a, b) in x.iter().zip(y) {
        let sc: [i32; 16] = std::array::from_fn(|j| a.scale(j));
        acc.fma(
            b.d() * fp16(a.d),
            lanes256(|e| a.q(e), &b.qs, |g| sc[g / 16]),
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
        let mut rng = Rng::new(25);
        let (w, x) = (rng.floats(1024, 1.0), rng.floats(1024, 1.0));
        let mut wb = vec![0u8; 4 * 110];
        quantize(&w, cast_mut(&mut wb));
        let mut wd = vec![0f32; 1024];
        dequantize(cast(&wb), &mut wd);
        let err = crate::formats::rmse(&w, &wd);
        assert!(err < 0.16, "rmse {err}");
        let got = dot_scalar(cast(&wb), &act(&x));
        let h = crate::formats::q8_half_step(&x);
        crate::formats::assert_dot_close(got, &wd, &x, |_| h);
    }
}
