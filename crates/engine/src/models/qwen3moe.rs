//! Qwen 3 MoE (Qwen3-30B-A3B and its family; Yang et al., 2025).
//!
//! Qwen 3's decoder (per-head Q/K norms, NEOX RoPE) whose every FFN is a mixture of experts:
//! `expert_count` gated MLPs of `expert_feed_forward_length`, of which the router picks
//! `expert_used_count` per token, weighted by its softmax renormalized over the chosen ones
//! ([`crate::blocks::Step::ffn`]).

use crate::error::Result;
use crate::model::{Hparams, LayerSpec, Loader};
use crate::models::Arch;
use crate::ops::rope::RopeMode;

pub(crate) const LAYER: LayerSpec = LayerSpec {
    qk_norm: true,
    post_norms: false,
};

pub(crate) fn hparams(ld: &Loader) -> Result<Hparams> {
    let hp = ld.common(Arch::Qwen3Moe, RopeMode::Neox)?;
    if hp.n_expert == 0 {
        return Err(ld.err("a qwen3moe model needs qwen3moe.expert_count (experts per layer)"));
    }
    Ok(hp)
}
