//! Which ggml type each tensor gets for a file type such as Q4_K_M.
//!
//! These are llama-quantize's rules (src/llama-quant.cpp, no importance matrix) for the tensors our
//! architectures have, so that a synthetic Q4_K_M file has the same per-tensor types as one made by
//! `llama-quantize model-f16.gguf out.gguf Q4_K_M`.

use std::fmt;
use std::str::FromStr;

use hearth_gguf::GgmlType;

use crate::SynthError;

/// The `--type` of a synthetic model: llama.cpp's `general.file_type` mixtures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4KM,
    Q5KM,
    Q6K,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Iq4Nl,
    Iq4Xs,
}

impl FileType {
    pub const ALL: [FileType; 17] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q4KM,
        FileType::Q5KM,
        FileType::Q6K,
        FileType::Q2K,
        FileType::Q3K,
        FileType::Q4K,
        FileType::Q5K,
        FileType::Iq4Nl,
        FileType::Iq4Xs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::BF16 => "BF16",
            FileType::Q8_0 => "Q8_0",
            FileType::Q4_0 => "Q4_0",
            FileType::Q4_1 => "Q4_1",
            FileType::Q5_0 => "Q5_0",
            FileType::Q5_1 => "Q5_1",
            FileType::Q4KM => "Q4_K_M",
            FileType::Q5KM => "Q5_K_M",
            FileType::Q6K => "Q6_K",
            FileType::Q2K => "Q2_K",
            FileType::Q3K => "Q3_K_S",
            FileType::Q4K => "Q4_K_S",
            FileType::Q5K => "Q5_K_S",
            FileType::Iq4Nl => "IQ4_NL",
            FileType::Iq4Xs => "IQ4_XS",
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn id(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q4KM => 15,
            FileType::Q5KM => 17,
            FileType::Q6K => 18,
            FileType::Q2K => 10,
            FileType::Q3K => 11,
            FileType::Q4K => 14,
            FileType::Q5K => 16,
            FileType::Iq4Nl => 25,
            FileType::Iq4Xs => 30,
            FileType::BF16 => 32,
        }
    }

    /// The type of ordinary weight matrices.
    pub fn default_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q4KM => GgmlType::Q4K,
            FileType::Q5KM => GgmlType::Q5K,
            FileType::Q6K => GgmlType::Q6K,
            FileType::Q2K => GgmlType::Q2K,
            FileType::Q3K => GgmlType::Q3K,
            FileType::Q4K => GgmlType::Q4K,
            FileType::Q5K => GgmlType::Q5K,
            FileType::Iq4Nl => GgmlType::Iq4Nl,
            FileType::Iq4Xs => GgmlType::Iq4Xs,
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FileType {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<FileType, SynthError> {
        FileType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = FileType::ALL.iter().map(|t| t.name()).collect();
                SynthError::Usage(format!("unknown type {s:?} (one of {})", names.join(", ")))
            })
    }
}

/// What a tensor is, as far as the type rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Norm weights and biases: always F32.
    Vector,
    /// The MoE router: llama-quantize never quantizes it.
    Router,
    TokenEmbd,
    Output,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnGate,
    FfnUp,
    FfnDown,
}

/// Model facts the rules depend on.
pub struct MixContext {
    pub file_type: FileType,
    /// Every matrix in the file type's own type (llama-quantize's `--pure`).
    pub pure: bool,
    pub n_layer: usize,
    pub n_expert: usize,
    pub tied: bool,
}

/// llama.cpp's "give a few layers more bits" pattern: the first and last eighth, and every third in between.
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The type for a tensor of `role` in `layer` whose rows are `row_len` long.
pub fn tensor_type(ctx: &MixContext, role: Role, layer: usize, row_len: usize) -> GgmlType {
    let default = ctx.file_type.default_type();
    let ty = match role {
        Role::Vector | Role::Router => return GgmlType::F32,
        _ if !default.is_quantized() => return default,
        _ if ctx.pure => default,
        Role::Output => output_type(default, row_len),
        Role::TokenEmbd if ctx.tied => output_type(default, row_len),
        Role::TokenEmbd => default,
        Role::AttnV if ctx.n_expert == 8 => GgmlType::Q8_0,
        Role::AttnK if ctx.n_expert == 8 => GgmlType::Q8_0,
        Role::AttnV | Role::FfnDown
            if matches!(ctx.file_type, FileType::Q4KM | FileType::Q5KM)
                && use_more_bits(layer, ctx.n_layer) =>
        {
            GgmlType::Q6K
        }
        Role::AttnOutput if ctx.n_expert == 8 && ctx.file_type == FileType::Q4KM => GgmlType::Q5K,
        _ => default,
    };
    fallback(ty, row_len)
}

fn output_type(default: GgmlType, row_len: usize) -> GgmlType {
    if !row_len.is_multiple_of(default.block_len()) {
        GgmlType::Q8_0
    } else if default != GgmlType::Q8_0 {
        GgmlType::Q6K
    } else {
        default
    }
}

/// Rows that are not a whole number of 256-element super-blocks fall back to a 32-block type.
fn fallback(ty: GgmlType, row_len: usize) -> GgmlType {
    if row_len.is_multiple_of(ty.block_len()) {
        return ty;
    }
    let alt = match ty {
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        t => t,
    };
    if row_len.is_multiple_of(alt.block_len()) {
        alt
    } else {
        GgmlType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-tensor types llama-quantize chose for the shared fixtures (synth-*-q4_k_m.json).
    #[test]
    fn q4_k_m_matches_llama_quantize_on_the_fixture_shapes() {
        let dense = MixContext {
            file_type: FileType::Q4KM,
            pure: false,
            n_layer: 2,
            n_expert: 0,
            tied: true,
        };
        assert_eq!(tensor_type(&dense, Role::TokenEmbd, 0, 256), GgmlType::Q6K);
        assert_eq!(tensor_type(&dense, Role::AttnV, 0, 256), GgmlType::Q4K);
        assert_eq!(tensor_type(&dense, Role::AttnV, 1, 256), GgmlType::Q6K);
        assert_eq!(tensor_type(&dense, Role::FfnDown, 1, 256), GgmlType::Q6K);
        assert_eq!(tensor_type(&dense, Role::FfnGate, 1, 256), GgmlType::Q4K);
        assert_eq!(tensor_type(&dense, Role::Vector, 1, 256), GgmlType::F32);

        let moe = MixContext {
            file_type: FileType::Q4KM,
            pure: false,
            n_layer: 2,
            n_expert: 8,
            tied: false,
        };
        assert_eq!(tensor_type(&moe, Role::Output, 0, 256), GgmlType::Q6K);
        assert_eq!(tensor_type(&moe, Role::TokenEmbd, 0, 256), GgmlType::Q4K);
        assert_eq!(tensor_type(&moe, Role::AttnK, 0, 256), GgmlType::Q8_0);
        assert_eq!(tensor_type(&moe, Role::AttnV, 1, 256), GgmlType::Q8_0);
        assert_eq!(tensor_type(&moe, Role::AttnOutput, 0, 256), GgmlType::Q5K);
        assert_eq!(tensor_type(&moe, Role::FfnDown, 0, 128), GgmlType::Q5_0);
        assert_eq!(tensor_type(&moe, Role::FfnDown, 1, 128), GgmlType::Q8_0);
        assert_eq!(tensor_type(&moe, Role::Router, 1, 256), GgmlType::F32);

        let q40 = MixContext {
            file_type: FileType::Q4_0,
            pure: false,
            n_layer: 2,
            n_expert: 0,
            tied: true,
        };
        assert_eq!(tensor_type(&q40, Role::TokenEmbd, 0, 256), GgmlType::Q6K);
        assert_eq!(tensor_type(&q40, Role::FfnDown, 1, 256), GgmlType::Q4_0);
        let q80 = MixContext {
            file_type: FileType::Q8_0,
            ..q40
        };
        assert_eq!(tensor_type(&q80, Role::TokenEmbd, 0, 256), GgmlType::Q8_0);
        let f16 = MixContext {
            file_type: FileType::F16,
            pure: false,
            n_layer: 2,
            n_expert: 0,
            tied: true,
        };
        assert_eq!(tensor_type(&f16, Role::TokenEmbd, 0, 256), GgmlType::F16);
    }

    #[test]
    fn gemma_270m_widths_fall_back_like_the_real_file() {
        // Gemma 3 270M: 640-wide rows cannot hold K-quant super-blocks.
        let ctx = MixContext {
            file_type: FileType::Q4KM,
            pure: false,
            n_layer: 18,
            n_expert: 0,
            tied: true,
        };
        assert_eq!(tensor_type(&ctx, Role::TokenEmbd, 0, 640), GgmlType::Q8_0);
        assert_eq!(tensor_type(&ctx, Role::AttnQ, 0, 640), GgmlType::Q5_0);
        assert_eq!(tensor_type(&ctx, Role::AttnV, 0, 640), GgmlType::Q8_0);
        assert_eq!(tensor_type(&ctx, Role::AttnOutput, 0, 1024), GgmlType::Q4K);
        assert_eq!(tensor_type(&ctx, Role::FfnDown, 0, 2048), GgmlType::Q6K);
    }
}
