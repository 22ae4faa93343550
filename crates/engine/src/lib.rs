//! hearth's inference engine: the forward passes of `gemma3`, `llama`, `qwen2` and `qwen3`
//! GGUF models, computed the way llama.cpp's x86 CPU backend computes them, with an f16 (or
//! Q8_0/Q4_0) KV cache, batched prefill and reuse of a cached prompt prefix.
//!
//! ```no_run
//! use hearth_engine::{LoadOptions, Logits, Model, SessionOptions};
//! let model = Model::load("gemma-3-270m-q4_k_m.gguf", &LoadOptions::default())?;
//! let mut session = model.session(SessionOptions::default())?;
//! let logits = session.eval(&[2, 818, 5279], Logits::Last)?; // the prompt, one batch
//! let next = 3; // (sample from logits.last())
//! let logits = session.eval(&[next], Logits::Last)?; // then one token per call
//! # Ok::<(), hearth_engine::EngineError>(())
//! ```
//!
//! # The path of one request
//! 1. [`Model::load`] memory-maps the file (`hearth-gguf`), reads the hyperparameters of its
//!    architecture (`models/<arch>.rs`, on top of the shared keys in `model.rs`) and records
//!    where each weight lies in the map; norm weights and biases are decoded to f32, quantized
//!    matrices are never copied.
//! 2. [`Model::session`] allocates the KV cache for the context size (f16, or Q8_0/Q4_0 per
//!    [`SessionOptions`]).
//! 3. [`Session::eval`] checks the tokens against the vocabulary and the context, cuts a long
//!    prompt into passes of `n_ubatch` tokens and runs each pass as one batch through
//!    `models::forward`, which dispatches to the architecture's layer loop.
//! 4. The layer loop (`models/llama.rs`, `models/gemma3.rs`; Qwen reuses Llama's) is built from
//!    the blocks of `blocks.rs`: embedding lookup, RMS norm, self-attention (projections, Q/K
//!    norms, RoPE, cache write, attention over the cache, output projection), the gated MLP,
//!    and the head. Each block calls the kernels in `ops/`.
//! 5. The matrix products (`ops/matmul.rs`) quantize each activation row once and dot it with
//!    every weight row, through `hearth-quant` or, for the weight types where llama.cpp's batched
//!    kernels sum in another order, through `ops/gemm_order.rs`; threads split the weight rows
//!    (`threads.rs`). In the last layer only the rows whose logits are wanted go on through the
//!    MLP and the head.
//!
//! # Where llama.cpp's numerics are mirrored
//! - Matrix products: activations quantized to the weight type's vec-dot partner (Q8_0, Q8_1,
//!   Q8_K, F16, BF16, F32) and dotted by `hearth-quant`'s bit-exact copies of ggml's x86 `vec_dot`
//!   kernels (`ops/matmul.rs`), except where llama.cpp's x86 build takes another kernel with
//!   another float order (`ops/gemm_order.rs`): repacked Q4_0/Q4_K (GEMM for rows in groups of
//!   4, GEMV for the rest), the tiled Q6_K GEMM (8+ rows) and tinyBLAS for F16/F32. On 8-bit
//!   activations a last-bit difference flips roundings downstream, so these orders matter.
//! - RMS norm: squares summed in f64, mean rounded to f32 (`ops/norm.rs`).
//! - RoPE: theta by repeated f32 multiplication, C library `cosf`/`sinf`, frequency factors,
//!   linear and YaRN scaling, NORMAL vs NEOX pairing (`ops/rope.rs`).
//! - SiLU and softmax use ggml's vectorized `expf` on groups of 16 lanes with its reduction
//!   order; GELU reads the f16 table (`GGML_GELU_FP16`) (`ops/act.rs`).
//! - KV cache in f16 (round to nearest even), or Q8_0 (the vectorized quantizer) / Q4_0 (the
//!   reference one) as `set_rows` writes them; a quantized K is dotted with Q quantized to Q8_0,
//!   a quantized V accumulated in f32, and the tiled kernel is for f16 caches only (`kv_cache.rs`).
//! - Attention (`ops/attention.rs`), per llama.cpp's choice of kernel: flash attention with Q
//!   rounded to f16, `ggml_vec_dot_f16`'s lane layout and the V sum accumulated in f16 for
//!   batches under 64 tokens; the f32 tiled kernel for larger batches; and without flash
//!   attention, tinyBLAS's 16-lane F16 dots with Q and the softmax probabilities rounded to f16.
//!   The reference build ran on a CPU with AVX512-FP16, where the f16 accumulator's multiply-add
//!   and rescale are native half operations on whole steps of 128 (`ops/f16.rs`).
//! - Where ggml's C compiles `a*b + c` to an FMA (GCC contracts), the Rust uses `mul_add`; the
//!   hot kernels have twins compiled for AVX2+FMA, chosen at run time (`ops::fma_dispatch`), so
//!   that `mul_add` is one instruction there and a (slow, equal) library call elsewhere.
//!
//! # Repacked weights and the one place hearth leaves llama.cpp's order
//! At load, Q4_0 and Q4_K matrices are repacked into 16-row groups (`hearth_quant::packed`; one
//! float lane per row, `vpdpbusd` against broadcast activations) with llama.cpp's repacked float
//! order kept bit for bit, and the mapped originals are released. Q5_0 and Q8_0 are repacked
//! too and summed per block as one exact integer with one FMA (the order llama.cpp uses for its
//! repacked types, not for these): several times less float work than `vec_dot`'s eight lanes,
//! within PARITY.md's tolerances (Gemma 3 270M: max |Δ| 1.16, mean 0.18, perplexity -0.09%).
//! [`LoadOptions::exact`] (`HEARTH_EXACT=1`) keeps llama.cpp's order everywhere.
//!
//! Measured against the fixtures with exact orders: every quantized and F16 synthetic model
//! reproduces llama.cpp's logits to the printed 4 decimals in the matching attention mode;
//! Gemma 3 270M does so without flash attention (and its perplexity at `-c 512`, with and
//! without), and with flash attention at 80 of 102 positions: two prompts part from llama.cpp at
//! one position (an f16 rounding in the attention accumulator not yet pinned down) and stay
//! within 1.1 after it.

pub mod adapter;
mod blocks;
mod buffers;
mod error;
mod kv_cache;
mod model;
mod models;
pub mod ops;
mod session;
mod threads;

pub use adapter::registry::{AdapterInfo, Registry};
pub use adapter::{Adapter, AdapterOptions, Applied, Binding, Site, Target};
pub use error::{EngineError, Result};
pub use kv_cache::KvType;
pub use model::{Hparams, LoadOptions, Model};
pub use models::Arch;
pub use ops::attention::AttentionMode;
pub use session::{
    DEFAULT_N_CTX, DEFAULT_N_UBATCH, Logits, Output, Session, SessionOptions, decode_batch,
};
pub use threads::Threads;
