//! Llama (Touvron et al., 2023; Llama 3: Grattafiori et al., 2024).
//!
//! A pre-norm decoder: each block adds self-attention of the RMS-normed stream, then a SwiGLU
//! MLP of the RMS-normed stream, to the residual stream. Attention is grouped-query with RoPE on
//! adjacent pairs; Llama 3.1/3.2 stretch RoPE's low frequencies with per-frequency divisors
//! stored as `rope_freqs.weight`. The output head is `output.weight`, or the token embedding
//! when tied (Llama 3.2 1B/3B).
//!
//! Qwen 2 and Qwen 3 run this same loop (see their files): their differences are tensors the
//! blocks apply when present.

use crate::blocks::{Glu, Step};
use crate::error::Result;
use crate::model::{Hparams, LayerSpec, Loader};
use crate::models::Arch;
use crate::ops::{self, rope::RopeMode};

pub(crate) const LAYER: LayerSpec = LayerSpec {
    qk_norm: false,
    post_norms: false,
};

pub(crate) fn hparams(ld: &Loader) -> Result<Hparams> {
    let mut hp = ld.common(Arch::Llama, RopeMode::Normal)?;
    // Llama 3.1+ frequency factors, shared by every layer.
    if let Some(f) = ld.opt_vector("rope_freqs.weight", hp.head_dim / 2)? {
        for rope in &mut hp.rope {
            rope.freq_factors = Some(f.clone());
        }
    }
    Ok(hp)
}

/// The pre-norm decoder loop (Llama, Qwen 2, Qwen 3).
pub(crate) fn forward(step: &mut Step) -> Result<Vec<f32>> {
    let m = step.m;
    let last = m.layers.len() - 1;
    let mut x = step.embed(None)?;
    for (il, layer) in m.layers.iter().enumerate() {
        // x = x + Attention(RMSNorm(x))
        let h = step.norm(&x, &layer.attn_norm);
        let mut a = step.attention(il, layer, &h)?;
        if il == last {
            a = step.keep_out_rows(a);
            x = step.keep_out_rows(x);
        }
        ops::add_assign(&mut x, &a);
        step.give(h);
        step.give(a);
        // x = x + SwiGLU(RMSNorm(x))
        let h = step.norm(&x, &layer.ffn_norm);
        let f = step.ffn(il, layer, &h, Glu::Swiglu)?;
        ops::add_assign(&mut x, &f);
        step.give(h);
        step.give(f);
    }
    // logits = W_out · RMSNorm(x)
    let logits = step.logits(&x);
    step.give(x);
    logits
}
