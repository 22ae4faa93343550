//! Architectures and size presets of synthetic models.

use std::fmt;
use std::str::FromStr;

use crate::SynthError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

    /// The `general.architecture` string llama.cpp uses.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Gemma3 => "gemma3",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<Arch, SynthError> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                SynthError::Usage(format!(
                    "unknown architecture {s:?} (one of gemma3, llama, qwen2, qwen3, qwen3moe)"
                ))
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// The shape of the shared fixtures: 256 wide, 2 layers.
    Tiny,
    /// About a billion parameters in the shape of the family's ~1B release.
    OneB,
    /// Mixtral-style (llama only): the tiny shape with 8 experts of the model's FFN size, 2
    /// used per token, an untied head.
    Mixtral,
}

impl FromStr for Preset {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<Preset, SynthError> {
        match s {
            "tiny" => Ok(Preset::Tiny),
            "1b" | "1B" => Ok(Preset::OneB),
            "mixtral" => Ok(Preset::Mixtral),
            _ => Err(SynthError::Usage(format!(
                "unknown preset {s:?} (tiny, 1b, or mixtral for llama)"
            ))),
        }
    }
}

/// Hyperparameters of a synthetic model.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub ctx: usize,
    pub rope_base: f32,
    pub eps: f32,
    /// Output projection shares `token_embd`.
    pub tied: bool,
    /// Gemma 3: local attention window and one global layer every `swa_pattern` layers.
    pub sliding_window: usize,
    pub swa_pattern: usize,
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub n_ff_exp: usize,
}

impl Config {
    pub fn preset(arch: Arch, preset: Preset) -> Config {
        let base = Config {
            arch,
            n_embd: 256,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 64,
            n_ff: 256,
            ctx: 2048,
            rope_base: 1e6,
            eps: 1e-6,
            tied: true,
            sliding_window: 0,
            swa_pattern: 0,
            n_expert: 0,
            n_expert_used: 0,
            n_ff_exp: 0,
        };
        match (arch, preset) {
            (Arch::Llama, Preset::Tiny) => Config {
                rope_base: 5e5,
                eps: 1e-5,
                ..base
            },
            // Mixtral 8x7B's proportions (8 experts, 2 used, rope base 1e6) at the tiny size;
            // `validate` turns it down for the other architectures.
            (_, Preset::Mixtral) => Config {
                eps: 1e-5,
                tied: false,
                n_expert: 8,
                n_expert_used: 2,
                n_ff_exp: base.n_ff,
                ..base
            },
            (Arch::Qwen2 | Arch::Qwen3, Preset::Tiny) => base,
            (Arch::Gemma3, Preset::Tiny) => Config {
                n_head_kv: 1,
                sliding_window: 8,
                swa_pattern: 2,
                ..base
            },
            (Arch::Qwen3Moe, Preset::Tiny) => Config {
                tied: false,
                n_expert: 8,
                n_expert_used: 2,
                n_ff_exp: 128,
                ..base
            },
            // Llama 3.2 1B.
            (Arch::Llama, Preset::OneB) => Config {
                n_embd: 2048,
                n_layer: 16,
                n_head: 32,
                n_head_kv: 8,
                head_dim: 64,
                n_ff: 8192,
                ctx: 8192,
                rope_base: 5e5,
                eps: 1e-5,
                ..base
            },
            // Qwen2.5 1.5B.
            (Arch::Qwen2, Preset::OneB) => Config {
                n_embd: 1536,
                n_layer: 28,
                n_head: 12,
                n_head_kv: 2,
                head_dim: 128,
                n_ff: 8960,
                ctx: 8192,
                ..base
            },
            // Qwen3 1.7B.
            (Arch::Qwen3, Preset::OneB) => Config {
                n_embd: 2048,
                n_layer: 28,
                n_head: 16,
                n_head_kv: 8,
                head_dim: 128,
                n_ff: 6144,
                ctx: 8192,
                ..base
            },
            // Gemma 3 1B.
            (Arch::Gemma3, Preset::OneB) => Config {
                n_embd: 1152,
                n_layer: 26,
                n_head: 4,
                n_head_kv: 1,
                head_dim: 256,
                n_ff: 6912,
                ctx: 8192,
                sliding_window: 512,
                swa_pattern: 6,
                ..base
            },
            // A small Qwen3-MoE: 32 experts, 4 active.
            (Arch::Qwen3Moe, Preset::OneB) => Config {
                n_embd: 1024,
                n_layer: 8,
                n_head: 16,
                n_head_kv: 4,
                head_dim: 64,
                n_ff: 3072,
                ctx: 8192,
                tied: false,
                n_expert: 32,
                n_expert_used: 4,
                n_ff_exp: 768,
                ..base
            },
        }
    }

    pub fn is_moe(&self) -> bool {
        self.n_expert > 0
    }

    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::Usage(m));
        if self.n_layer == 0 || self.n_embd == 0 || self.n_head == 0 || self.head_dim == 0 {
            return bad("layers, width, heads and head size must be positive".into());
        }
        if self.n_head_kv == 0 || !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!(
                "{} query heads cannot share {} KV heads",
                self.n_head, self.n_head_kv
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head size {} must be even for RoPE", self.head_dim));
        }
        match self.arch {
            Arch::Llama | Arch::Qwen3Moe => {}
            _ if self.is_moe() => {
                return bad(format!(
                    "{} has no experts (llama takes them Mixtral-style, qwen3moe has its own)",
                    self.arch
                ));
            }
            _ => {}
        }
        if self.arch == Arch::Qwen3Moe && !self.is_moe() {
            return bad("qwen3moe needs experts (--experts)".into());
        }
        // llama.cpp gives a llama file's experts the model's FFN size.
        if self.arch == Arch::Llama && self.is_moe() && self.n_ff_exp != self.n_ff {
            return bad(format!(
                "llama's experts have the FFN size {}, not {}",
                self.n_ff, self.n_ff_exp
            ));
        }
        if self.is_moe()
            && (self.n_expert_used == 0 || self.n_expert_used > self.n_expert || self.n_ff_exp == 0)
        {
            return bad(format!(
                "{} of {} experts used with expert FFN {}",
                self.n_expert_used, self.n_expert, self.n_ff_exp
            ));
        }
        Ok(())
    }
}
