//! Qwen 3 (Yang et al., 2025).
//!
//! Llama's decoder with RMS norms on each head of Q and K before RoPE (`attn_{q,k}_norm`,
//! required here), no Q/K/V biases, and NEOX-paired RoPE.

use crate::error::Result;
use crate::model::{Hparams, LayerSpec, Loader};
use crate::models::Arch;
use crate::ops::rope::RopeMode;

pub(crate) const LAYER: LayerSpec = LayerSpec {
    qk_norm: true,
    post_norms: false,
};

pub(crate) fn hparams(ld: &Loader) -> Result<Hparams> {
    ld.common(Arch::Qwen3, RopeMode::Neox)
}
