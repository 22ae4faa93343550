//! One file per architecture: its hyperparameters, then its layer loop built from the shared
//! blocks in [`crate::blocks`]. Architectures that differ from another only by the presence of
//! some tensors (biases, Q/K norms) reuse its loop: the tensors are the flags.

pub(crate) mod gemma3;
pub(crate) mod llama;
pub(crate) mod qwen2;
pub(crate) mod qwen3;
pub(crate) mod qwen3moe;

use crate::blocks::Step;
use crate::error::Result;
use crate::model::{Hparams, LayerSpec, Loader};

/// The architectures hearth runs (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Qwen3Moe,
    Gemma3,
}

impl Arch {
    pub const ALL: [Arch; 5] = [
        Arch::Gemma3,
        Arch::Llama,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Qwen3Moe,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Gemma3 => "gemma3",
        }
    }

    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub(crate) fn hparams(arch: Arch, ld: &Loader) -> Result<Hparams> {
    match arch {
        Arch::Llama => llama::hparams(ld),
        Arch::Qwen2 => qwen2::hparams(ld),
        Arch::Qwen3 => qwen3::hparams(ld),
        Arch::Qwen3Moe => qwen3moe::hparams(ld),
        Arch::Gemma3 => gemma3::hparams(ld),
    }
}

pub(crate) fn layer_spec(arch: Arch) -> LayerSpec {
    match arch {
        Arch::Llama => llama::LAYER,
        Arch::Qwen2 => qwen2::LAYER,
        Arch::Qwen3 => qwen3::LAYER,
        Arch::Qwen3Moe => qwen3moe::LAYER,
        Arch::Gemma3 => gemma3::LAYER,
    }
}

/// Runs the step's batch through the model; returns the logits of the step's output rows.
pub(crate) fn forward(step: &mut Step) -> Result<Vec<f32>> {
    match step.m.hparams().arch {
        Arch::Llama | Arch::Qwen2 | Arch::Qwen3 | Arch::Qwen3Moe => llama::forward(step),
        Arch::Gemma3 => gemma3::forward(step),
    }
}
