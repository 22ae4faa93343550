//! Q5_1: Q4_1 with a fifth bit per quant (32-bit mask, bit e for element e); dot partner Q8_1.
//! Scalar kernel only.

use crate::common::{Acc8, f32_to_f16, fp16, impl_block, lanes32};
use crate::formats::q8_1::BlockQ8_1;

pub(crate) const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
impl_block!(BlockQ5_1, 24);

impl BlockQ5_1 {
    #[inline]
    pub fn q(&self, e: usize) -> i32 {
        let lo = (self.qs[e % 16] >> (4 * (e / 16))) & 0xf;
        let hi = ((u32::from_le_bytes(self.qh) >> e) & 1) as u8;
        (lo | (hi << 4)) as i32
    }
}

pub(crate) fn dequantize(x: &[BlockQ5_1], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let (d, m) = (fp16(b.d), fp16(b.m));
        for (e, o) in out.iter_mut().enumerate() {
            *o = b.q(e) as f32 * d + m;
        }
    }
}

/// `quantize_row_q5_1_ref`: d = (max-min)/31, q = trunc((x-min)/d + 0.5).
pub(crate) fn quantize(x: &[f32], y: &mut [BlockQ5_1]) {
    for (xb, b) in x.chunks_exact(QK).zip(y) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in xb {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d).to_le_bytes();
        b.m = f32_to_f16(min).to_le_bytes();
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = ((xb[j] - min) * id + 0.5) as u8;
            let q1 = ((xb[j + 16] - min) * id + 0.5) as u8;
            b.qs[j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + 16);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// llama.cpp's AVX2 `ggml_vec_dot_q5_1_q8_1`, lane for lane.
pub(crate) fn dot_scalar(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut acc = Acc8::default();
    let mut summs = 0f32;
    for (a, b) in x.iter().zip(y) {
        summs = fp16(a.m).mul_add(b.s(), summs);
        acc.fma(fp16(a.d) * b.d(), lanes32(|e| a.q(e) * b.qs[e] as i32));
    }
    acc.hsum() + summs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testutil::Rng;
    use crate::common::{cast, cast_mut};
    use crate::formats::q8_1::{BlockQ8_1, quantize_act};

    #[test]
    fn round_trip_and_dot() {
        let mut rng = Rng::new(43);
        let (w, x) = (rng.floats(1024, 1.0), rng.floats(1024, 1.0));
        let mut wb = vec![0u8; 32 * 24];
        quantize(&w, cast_mut(&mut wb));
        let mut wd = vec![0f32; 1024];
        dequantize(cast(&wb), &mut wd);
        let err = crate::formats::rmse(&w, &wd);
        assert!(err < 0.04, "rmse {err}");
        let mut ab = vec![0u8; 32 * 36];
        quantize_act(&x, cast_mut(&mut ab));
        let got = dot_scalar(cast(&wb), cast::<BlockQ8_1>(&ab));
        let h = crate::formats::q8_half_step(&x);
        crate::formats::assert_dot_close(got, &wd, &x, |_| h);
    }
}
