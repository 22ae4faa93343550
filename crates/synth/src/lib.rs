//! Synthetic models: random weights in the exact tensor layout llama.cpp expects for each
//! architecture, a real vocabulary copied from a GGUF file, and llama-quantize's per-tensor type
//! rules. Speed does not depend on weight values and parity can be checked on any weights, so tests
//! and benchmarks use these instead of downloads.
//!
//! Weights are N(0, (gain/√fan_in)²) with gains that keep activations in range and make logits
//! peaked (as the shared fixtures do); norm weights are scale·(1 + N(0, 0.1²)).

mod adapter;
mod config;
mod mix;
mod vocab;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use hearth_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, keys};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, StandardNormal};

pub use adapter::{ALL_TARGETS, AdapterSpec, synthesize_adapter};
pub use config::{Arch, Config, Preset};
pub use mix::{FileType, MixContext, Role, tensor_type};
pub use vocab::Vocab;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("quantizing {tensor} to {ty}: {message}")]
    Quant {
        tensor: String,
        ty: GgmlType,
        message: String,
    },
}

/// What to make.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub config: Config,
    pub file_type: FileType,
    pub seed: u64,
    /// Worker threads for generating and quantizing tensors.
    pub threads: usize,
    /// Every matrix in the file type's own type, instead of llama-quantize's mixture.
    pub pure: bool,
}

/// One tensor to generate: name, ggml shape, role, layer, and the normal's standard deviation
/// (or, for vectors, the scale around which norm weights scatter; `None` marks a bias).
struct Plan {
    name: String,
    dims: Vec<u64>,
    role: Role,
    layer: usize,
    init: Init,
}

#[derive(Clone, Copy)]
enum Init {
    /// N(0, std²).
    Normal(f32),
    /// scale·(1 + N(0, 0.1²)).
    Norm(f32),
}

fn plan(c: &Config, n_vocab: usize) -> Vec<Plan> {
    let (e, v) = (c.n_embd as u64, n_vocab as u64);
    let q = (c.n_head * c.head_dim) as u64;
    let kv = (c.n_head_kv * c.head_dim) as u64;
    let gemma = c.arch == Arch::Gemma3;
    let mut out = Vec::new();
    let mut add = |name: String, dims: Vec<u64>, role: Role, layer: usize, init: Init| {
        out.push(Plan {
            name,
            dims,
            role,
            layer,
            init,
        })
    };
    let mat = |gain: f32, fan_in: u64| Init::Normal(gain / (fan_in as f32).sqrt());

    add(
        "token_embd.weight".into(),
        vec![e, v],
        Role::TokenEmbd,
        0,
        Init::Normal(if gemma { 0.05 } else { 0.1 }),
    );
    add(
        "output_norm.weight".into(),
        vec![e],
        Role::Vector,
        0,
        Init::Norm(if gemma { 8.0 } else { 4.5 }),
    );
    if !c.tied {
        add(
            "output.weight".into(),
            vec![e, v],
            Role::Output,
            0,
            mat(1.0, e),
        );
    }
    for l in 0..c.n_layer {
        let n = |t: &str| format!("blk.{l}.{t}");
        add(
            n("attn_norm.weight"),
            vec![e],
            Role::Vector,
            l,
            Init::Norm(1.0),
        );
        add(n("attn_q.weight"), vec![e, q], Role::AttnQ, l, mat(1.0, e));
        add(n("attn_k.weight"), vec![e, kv], Role::AttnK, l, mat(1.0, e));
        add(n("attn_v.weight"), vec![e, kv], Role::AttnV, l, mat(1.0, e));
        if c.arch == Arch::Qwen2 {
            add(
                n("attn_q.bias"),
                vec![q],
                Role::Vector,
                l,
                Init::Normal(0.2),
            );
            add(
                n("attn_k.bias"),
                vec![kv],
                Role::Vector,
                l,
                Init::Normal(0.2),
            );
            add(
                n("attn_v.bias"),
                vec![kv],
                Role::Vector,
                l,
                Init::Normal(0.2),
            );
        }
        add(
            n("attn_output.weight"),
            vec![q, e],
            Role::AttnOutput,
            l,
            mat(1.5, q),
        );
        if matches!(c.arch, Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma3) {
            add(
                n("attn_q_norm.weight"),
                vec![c.head_dim as u64],
                Role::Vector,
                l,
                Init::Norm(1.0),
            );
            add(
                n("attn_k_norm.weight"),
                vec![c.head_dim as u64],
                Role::Vector,
                l,
                Init::Norm(1.0),
            );
        }
        if gemma {
            add(
                n("post_attention_norm.weight"),
                vec![e],
                Role::Vector,
                l,
                Init::Norm(4.0),
            );
        }
        add(
            n("ffn_norm.weight"),
            vec![e],
            Role::Vector,
            l,
            Init::Norm(1.0),
        );
        if c.is_moe() {
            let (x, f) = (c.n_expert as u64, c.n_ff_exp as u64);
            add(
                n("ffn_gate_inp.weight"),
                vec![e, x],
                Role::Router,
                l,
                mat(1.0, e),
            );
            add(
                n("ffn_gate_exps.weight"),
                vec![e, f, x],
                Role::FfnGate,
                l,
                mat(1.0, e),
            );
            add(
                n("ffn_up_exps.weight"),
                vec![e, f, x],
                Role::FfnUp,
                l,
                mat(1.0, e),
            );
            add(
                n("ffn_down_exps.weight"),
                vec![f, e, x],
                Role::FfnDown,
                l,
                mat(1.5, f),
            );
        } else {
            let f = c.n_ff as u64;
            add(
                n("ffn_gate.weight"),
                vec![e, f],
                Role::FfnGate,
                l,
                mat(1.0, e),
            );
            add(n("ffn_up.weight"), vec![e, f], Role::FfnUp, l, mat(1.0, e));
            add(
                n("ffn_down.weight"),
                vec![f, e],
                Role::FfnDown,
                l,
                mat(1.5, f),
            );
        }
        if gemma {
            add(
                n("post_ffw_norm.weight"),
                vec![e],
                Role::Vector,
                l,
                Init::Norm(4.0),
            );
        }
    }
    out
}

fn set_hparams(w: &mut GgufWriter, c: &Config, ft: FileType, n_vocab: usize, seed: u64) {
    let a = c.arch.name();
    let k = |s: &str| format!("{a}.{s}");
    w.set(keys::ARCHITECTURE, a)
        .set(keys::GENERAL_TYPE, "model")
        .set(
            keys::NAME,
            format!("synthetic {a} (random weights, seed {seed})"),
        )
        .set(keys::FILE_TYPE, ft.id());
    if ft.default_type().is_quantized() {
        w.set(keys::QUANTIZATION_VERSION, 2u32);
    }
    w.set(k("context_length"), c.ctx as u32)
        .set(k("embedding_length"), c.n_embd as u32)
        .set(k("block_count"), c.n_layer as u32)
        .set(k("feed_forward_length"), c.n_ff as u32)
        .set(k("attention.head_count"), c.n_head as u32)
        .set(k("attention.head_count_kv"), c.n_head_kv as u32)
        .set(k("attention.key_length"), c.head_dim as u32)
        .set(k("attention.value_length"), c.head_dim as u32)
        .set(k("rope.dimension_count"), c.head_dim as u32)
        .set(k("rope.freq_base"), c.rope_base)
        .set(k("attention.layer_norm_rms_epsilon"), c.eps)
        .set(k("vocab_size"), n_vocab as u32);
    if c.sliding_window > 0 {
        w.set(k("attention.sliding_window"), c.sliding_window as u32)
            .set(k("attention.sliding_window_pattern"), c.swa_pattern as u32);
    }
    if c.is_moe() {
        w.set(k("expert_count"), c.n_expert as u32)
            .set(k("expert_used_count"), c.n_expert_used as u32);
        // Mixtral-style llama files have no separate expert size (llama.cpp uses n_ff).
        if c.arch != Arch::Llama {
            w.set(k("expert_feed_forward_length"), c.n_ff_exp as u32);
        }
    }
}

/// Random values for one tensor, deterministic in (seed, tensor index) so tensors can be made in parallel.
fn values(p: &Plan, seed: u64, index: usize) -> Vec<f32> {
    let n: u64 = p.dims.iter().product();
    let mut rng =
        SmallRng::seed_from_u64(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut z = || -> f32 { StandardNormal.sample(&mut rng) };
    match p.init {
        Init::Normal(std) => (0..n).map(|_| std * z()).collect(),
        Init::Norm(scale) => (0..n).map(|_| scale * (1.0 + 0.1 * z())).collect(),
    }
}

fn encode(name: &str, ty: GgmlType, x: &[f32], row_len: usize) -> Result<Vec<u8>, SynthError> {
    hearth_quant::quantize_matrix(ty, x, x.len() / row_len, row_len).map_err(|e| {
        SynthError::Quant {
            tensor: name.into(),
            ty,
            message: e.to_string(),
        }
    })
}

/// Builds the whole model in memory. `progress` is called after each tensor with (done, total).
pub fn synthesize(
    opts: &SynthOptions,
    vocab: &Vocab,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<GgufWriter<'static>, SynthError> {
    let c = &opts.config;
    c.validate()?;
    let plans = plan(c, vocab.n_vocab);
    let mix = MixContext {
        file_type: opts.file_type,
        pure: opts.pure,
        n_layer: c.n_layer,
        n_expert: c.n_expert,
        tied: c.tied,
    };

    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    type Made = Result<(GgmlType, Vec<u8>), SynthError>;
    let results: Mutex<Vec<Option<Made>>> = Mutex::new((0..plans.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = plans.get(i) else { break };
                    let row = p.dims[0] as usize;
                    let ty = tensor_type(&mix, p.role, p.layer, row);
                    let r = encode(&p.name, ty, &values(p, opts.seed, i), row).map(|b| (ty, b));
                    let failed = r.is_err();
                    results.lock().unwrap()[i] = Some(r);
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, plans.len());
                    if failed {
                        break;
                    }
                }
            });
        }
    });

    let mut w = GgufWriter::new();
    set_hparams(&mut w, c, opts.file_type, vocab.n_vocab, opts.seed);
    for (k, v) in &vocab.entries {
        w.set(k.clone(), v.clone());
    }
    let mut made = Vec::with_capacity(plans.len());
    for r in results.into_inner().unwrap() {
        match r {
            Some(Ok(t)) => made.push(t),
            Some(Err(e)) => return Err(e),
            // Workers stop after a failure, which is reported above.
            None => {}
        }
    }
    for (p, (ty, bytes)) in plans.iter().zip(made) {
        w.add_tensor(p.name.clone(), &p.dims, ty, bytes)?;
    }
    Ok(w)
}

/// Reads the vocabulary from `vocab_path`, builds the model and writes it to `out`.
pub fn write_model(
    opts: &SynthOptions,
    vocab_path: &Path,
    n_vocab: Option<usize>,
    out: &Path,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(), SynthError> {
    let vocab = Vocab::from_file(&GgufFile::open(vocab_path)?, n_vocab)?;
    synthesize(opts, &vocab, progress)?.write_to_path(out)?;
    Ok(())
}

#[cfg(test)]
mod tests;
