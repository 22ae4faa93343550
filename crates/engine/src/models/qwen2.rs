//! Qwen 2 / Qwen 2.5 (Yang et al., 2024).
//!
//! Llama's decoder with two differences: Q, K and V projections carry biases
//! (`attn_{q,k,v}.bias`, added by the attention block when present) and RoPE rotates the two
//! halves of each head (NEOX pairing) with a base of 1e6 in the released models. An untied
//! head may carry `output.bias`.

use crate::error::Result;
use crate::model::{Hparams, LayerSpec, Loader};
use crate::models::Arch;
use crate::ops::rope::RopeMode;

pub(crate) const LAYER: LayerSpec = LayerSpec {
    qk_norm: false,
    post_norms: false,
};

pub(crate) fn hparams(ld: &Loader) -> Result<Hparams> {
    ld.common(Arch::Qwen2, RopeMode::Neox)
}
