//! Q8_1: Q8_0 plus `s = d·Σq` (f16), the activation partner of Q4_1 and Q5_1 so their min term
//! costs one multiply per block.

use crate::common::{f32_to_f16, fp16, impl_block};
use crate::formats::q8_0::{act_round, act_scale};

pub(crate) const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ8_1 {
    pub d: [u8; 2],
    pub s: [u8; 2],
    pub qs: [i8; QK],
}
impl_block!(BlockQ8_1, 36);

impl BlockQ8_1 {
    #[inline]
    pub fn d(&self) -> f32 {
        fp16(self.d)
    }
    #[inline]
    pub fn s(&self) -> f32 {
        fp16(self.s)
    }
}

pub(crate) fn dequantize(x: &[BlockQ8_1], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d();
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// llama.cpp's x86 `quantize_row_q8_1`: the Q8_0 activation rounding, and `s` from the f32 `d`.
pub(crate) fn quantize_act(x: &[f32], y: &mut [BlockQ8_1]) {
    for (xb, b) in x.chunks_exact(QK).zip(y) {
        let (d, id) = act_scale(xb);
        b.d = f32_to_f16(d).to_le_bytes();
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = act_round(v * id);
            sum += *q as i32;
        }
        b.s = f32_to_f16(d * sum as f32).to_le_bytes();
    }
}
