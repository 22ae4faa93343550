//! Gemma 3 (Gemma Team, 2025).
//!
//! A decoder whose blocks normalize both before and after each sublayer ("sandwich" norms):
//! `x = x + RMSNorm(Attention(RMSNorm(x)))`, then `x = x + RMSNorm(GeGLU(RMSNorm(x)))`.
//! Token embeddings are scaled by √n_embd. Attention is multi/grouped-query with per-head RMS
//! norms on Q and K, NEOX-paired RoPE, and Q scaled by 1/√head_dim (1/√(n_embd/n_head) for the
//! 27B model) instead of scaling the scores. Layers alternate local and global attention: in
//! each group of `sliding_window_pattern` layers (6 when the key is absent) all but the last
//! attend only to the last `sliding_window` positions and use RoPE base `rope.freq_base_swa`
//! (10 000 when absent); the last uses the global base (1e6). The head is tied to the
//! embeddings.

use hearth_gguf::keys::arch as key;

use crate::blocks::{Glu, Step};
use crate::error::Result;
use crate::model::{Hparams, LayerSpec, Loader};
use crate::models::Arch;
use crate::ops::{self, rope::RopeMode};

pub(crate) const LAYER: LayerSpec = LayerSpec {
    qk_norm: true,
    post_norms: true,
};

/// llama.cpp's default `sliding_window_pattern` for Gemma 3.
const DEFAULT_SWA_PATTERN: usize = 6;
/// llama.cpp's default RoPE base of the sliding-window layers.
const DEFAULT_FREQ_BASE_SWA: f32 = 10000.0;

pub(crate) fn hparams(ld: &Loader) -> Result<Hparams> {
    let mut hp = ld.common(Arch::Gemma3, RopeMode::Neox)?;
    let n_swa = ld.opt_u(key::SLIDING_WINDOW)?.unwrap_or(0);
    if n_swa > 0 {
        let is_swa = swa_layers(ld, hp.n_layer)?;
        let base_swa = ld
            .opt_f(key::ROPE_FREQ_BASE_SWA)?
            .unwrap_or(DEFAULT_FREQ_BASE_SWA);
        for (il, &swa) in is_swa.iter().enumerate() {
            if swa {
                hp.window[il] = Some(n_swa);
                // Local layers: their own base, no scaling (`rope_freq_scale_train_swa` = 1).
                let mut rope = hp.rope[il].clone();
                rope.freq_base = base_swa;
                rope.freq_scale = 1.0;
                hp.rope[il] = rope;
            }
        }
    }
    // The 27B model scales by the query width per head, the others by the head size.
    let q_scale = if hp.n_layer == 62 {
        1.0 / ((hp.n_embd / hp.n_head) as f32).sqrt()
    } else {
        1.0 / (hp.head_dim as f32).sqrt()
    };
    hp.q_scale = Some(q_scale);
    hp.kq_scale = 1.0;
    hp.embd_scale = Some((hp.n_embd as f32).sqrt());
    hp.final_softcap = ld.opt_f("final_logit_softcapping")?.filter(|&c| c != 0.0);
    Ok(hp)
}

/// Which layers slide: an explicit per-layer array, or a period `n` whose last layer is global
/// (`llama_hparams::set_swa_pattern`, `il % n < n - 1`).
fn swa_layers(ld: &Loader, n_layer: usize) -> Result<Vec<bool>> {
    let name = ld.arch_key(key::SLIDING_WINDOW_PATTERN);
    if let Some(arr) = ld.file.metadata().get(&name).and_then(|v| v.as_array()) {
        let flags: Vec<bool> = match arr {
            hearth_gguf::Array::Bool(b) => b.clone(),
            other => other
                .to_i64s()
                .ok_or_else(|| ld.err(format!("{name}: expected an array of bools")))?
                .into_iter()
                .map(|v| v != 0)
                .collect(),
        };
        if flags.len() < n_layer {
            return Err(ld.err(format!(
                "{name} has {} entries for {n_layer} layers",
                flags.len()
            )));
        }
        return Ok(flags[..n_layer].to_vec());
    }
    let n = ld
        .opt_u(key::SLIDING_WINDOW_PATTERN)?
        .unwrap_or(DEFAULT_SWA_PATTERN);
    Ok((0..n_layer).map(|il| n == 0 || il % n < n - 1).collect())
}

pub(crate) fn forward(step: &mut Step) -> Result<Vec<f32>> {
    let m = step.m;
    let last = m.layers.len() - 1;
    let mut x = step.embed(m.hparams().embd_scale)?;
    for (il, layer) in m.layers.iter().enumerate() {
        // x = x + RMSNorm_post(Attention(RMSNorm(x)))
        let h = step.norm(&x, &layer.attn_norm);
        let mut a = step.attention(il, layer, &h)?;
        if il == last {
            a = step.keep_out_rows(a);
            x = step.keep_out_rows(x);
        }
        let mut a_normed = step.norm(&a, post(&layer.attn_post_norm));
        ops::add_assign(&mut a_normed, &x);
        for v in [h, a, std::mem::replace(&mut x, a_normed)] {
            step.give(v);
        }
        // x = x + RMSNorm_post(GeGLU(RMSNorm(x)))
        let h = step.norm(&x, &layer.ffn_norm);
        let f = step.ffn(il, layer, &h, Glu::Geglu)?;
        let mut f_normed = step.norm(&f, post(&layer.ffn_post_norm));
        ops::add_assign(&mut f_normed, &x);
        for v in [h, f, std::mem::replace(&mut x, f_normed)] {
            step.give(v);
        }
    }
    // logits = W_embᵀ · RMSNorm(x)
    let logits = step.logits(&x);
    step.give(x);
    logits
}

/// Post-norms are required for Gemma 3 (checked at load).
fn post(w: &Option<Vec<f32>>) -> &[f32] {
    w.as_deref().expect("gemma3 layers load their post-norms")
}
