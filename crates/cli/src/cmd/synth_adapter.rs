//! `hearth synth-adapter`: a random LoRA adapter of a given rank and targets for a base model,
//! bound to that base (see `hearth_engine::adapter::binding`), for tests and benchmarks.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hearth_engine::adapter::binding;
use hearth_gguf::{GgmlType, GgufFile};
use hearth_synth::{ALL_TARGETS, AdapterSpec};

use crate::model_ref;

#[derive(clap::Args)]
pub struct Args {
    /// The base model (a GGUF file or a known model name).
    #[arg(short = 'm', long)]
    model: String,
    #[arg(short = 'r', long, default_value_t = 16)]
    rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank); default: the rank.
    #[arg(long)]
    alpha: Option<f32>,
    /// all, attn, mlp, or a comma-separated list of attn_q, attn_k, attn_v, attn_output,
    /// ffn_gate, ffn_up, ffn_down.
    #[arg(long, default_value = "all")]
    targets: String,
    /// Also adapt the output head (when the model has one of its own).
    #[arg(long)]
    output_head: bool,
    /// F16, F32 or Q8_0.
    #[arg(long = "type", default_value = "F16")]
    ty: String,
    /// Size of the update relative to the input at scale 1 and alpha = rank.
    #[arg(long, default_value_t = 0.1)]
    gain: f32,
    #[arg(long, default_value_t = 20261205)]
    seed: u64,
    #[arg(short = 'o', long)]
    output: PathBuf,
}

/// `all`, `attn`, `mlp` or a list of target names.
pub fn parse_targets(s: &str) -> Result<Vec<String>> {
    let list: Vec<&str> = match s {
        "all" => ALL_TARGETS.to_vec(),
        "attn" => ALL_TARGETS[..4].to_vec(),
        "mlp" => ALL_TARGETS[4..].to_vec(),
        _ => s.split(',').map(str::trim).collect(),
    };
    for t in &list {
        if !ALL_TARGETS.contains(t) {
            bail!(
                "unknown target {t:?}: expected all, attn, mlp or some of {}",
                ALL_TARGETS.join(", ")
            );
        }
    }
    Ok(list.into_iter().map(String::from).collect())
}

pub fn run(a: Args) -> Result<()> {
    let ty = match a.ty.to_ascii_uppercase().as_str() {
        "F16" => GgmlType::F16,
        "F32" => GgmlType::F32,
        "Q8_0" => GgmlType::Q8_0,
        other => bail!("--type {other}: expected F16, F32 or Q8_0"),
    };
    if !a.gain.is_finite() || a.alpha.is_some_and(|x| !x.is_finite()) {
        bail!("--gain and --alpha must be finite numbers");
    }
    let path = model_ref::resolve(&a.model)?;
    let base = GgufFile::open(&path)?;
    let spec = AdapterSpec {
        rank: a.rank,
        alpha: a.alpha.unwrap_or(a.rank as f32),
        targets: parse_targets(&a.targets)?,
        output: a.output_head,
        ty,
        gain: a.gain,
        seed: a.seed,
    };
    let mut w = hearth_synth::synthesize_adapter(&base, &spec)?;
    let sha = binding::sha256_file(&path)
        .with_context(|| format!("hashing the base model {}", path.display()))?;
    binding::stamp(&mut w, &sha).map_err(anyhow::Error::msg)?;
    let (n, params) = w
        .tensors()
        .fold((0, 0), |(n, p), (t, _)| (n + 1, p + t.n_elements));
    w.write_to_path(&a.output)?;
    eprintln!(
        "wrote {} (rank {}, alpha {}, {} matrices, {params} parameters, for base {} = sha256 {sha})",
        a.output.display(),
        spec.rank,
        spec.alpha,
        n / 2,
        path.display()
    );
    Ok(())
}
