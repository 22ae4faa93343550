//! Synthetic LoRA adapters: random A and B matrices of a given rank for chosen matrices of a
//! base model, in llama.cpp's GGUF-LoRA layout, for tests and benchmarks.
//!
//! A is N(0, 1/n_in) so that A·x keeps the scale of x; B is N(0, (gain/√r)²), so that at
//! `alpha = r` and scale 1 the update `B·A·x` is about `gain` times as large as x — a visible
//! but not overwhelming change (B = 0, PEFT's initialization, would change nothing).

use hearth_gguf::{GgmlType, GgufFile, GgufWriter};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, StandardNormal};

use crate::SynthError;

/// What adapter to make.
#[derive(Clone, Debug)]
pub struct AdapterSpec {
    pub rank: usize,
    /// `adapter.lora.alpha`; the update is scaled by alpha / rank.
    pub alpha: f32,
    /// GGUF names of the targeted matrices within a layer (`attn_q`, `ffn_down`, ...).
    pub targets: Vec<String>,
    /// Also adapt the output head (`output.weight`), when the base has one of its own.
    pub output: bool,
    /// F32, F16 or Q8_0 (llama.cpp's LoRA tensor types).
    pub ty: GgmlType,
    pub gain: f32,
    pub seed: u64,
}

/// The targets every architecture hearth runs has in each layer.
pub const ALL_TARGETS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// An adapter for `base` (its architecture and matrix shapes), not yet written.
pub fn synthesize_adapter(
    base: &GgufFile,
    spec: &AdapterSpec,
) -> Result<GgufWriter<'static>, SynthError> {
    let usage = |m: String| SynthError::Usage(m);
    if spec.rank == 0 {
        return Err(usage("the rank must be at least 1".into()));
    }
    if !matches!(spec.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0) {
        return Err(usage(format!(
            "{}: LoRA tensors are F32, F16 or Q8_0",
            spec.ty
        )));
    }
    for t in &spec.targets {
        if !ALL_TARGETS.contains(&t.as_str()) {
            return Err(usage(format!(
                "unknown target {t:?}; expected some of {}",
                ALL_TARGETS.join(", ")
            )));
        }
    }
    let arch = base.metadata().architecture()?.to_string();
    let mut w = GgufWriter::new();
    w.set("general.architecture", arch);
    w.set("general.type", "adapter".to_string());
    w.set(
        "general.name",
        format!("synthetic LoRA, rank {}", spec.rank),
    );
    w.set("adapter.type", "lora".to_string());
    w.set("adapter.lora.alpha", spec.alpha);
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let mut normal = |n: usize, std: f32| -> Vec<f32> {
        (0..n)
            .map(|_| std * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, &mut rng))
            .collect()
    };
    let mut n = 0;
    for t in &base.tensors {
        let wanted = match t.name.strip_suffix(".weight") {
            Some("output") => spec.output,
            Some(stem) => stem
                .strip_prefix("blk.")
                .and_then(|r| r.split_once('.'))
                .is_some_and(|(il, target)| {
                    il.parse::<usize>().is_ok() && spec.targets.iter().any(|x| x == target)
                }),
            None => false,
        };
        if !wanted {
            continue;
        }
        let [n_in, n_out] = t.dims[..] else {
            return Err(usage(format!("{} is not a matrix", t.name)));
        };
        let (n_in, n_out, r) = (n_in as usize, n_out as usize, spec.rank);
        let a = normal(r * n_in, 1.0 / (n_in as f32).sqrt());
        let b = normal(n_out * r, spec.gain / (r as f32).sqrt());
        let base_name = &t.name;
        for (suffix, data, cols, rows) in [("lora_a", a, n_in, r), ("lora_b", b, r, n_out)] {
            let bytes = encode(spec.ty, &data, cols).map_err(|message| SynthError::Quant {
                tensor: format!("{base_name}.{suffix}"),
                ty: spec.ty,
                message,
            })?;
            w.add_tensor(
                format!("{base_name}.{suffix}"),
                &[cols as u64, rows as u64],
                spec.ty,
                bytes,
            )?;
        }
        n += 1;
    }
    if n == 0 {
        return Err(usage(
            "the base model has none of the targeted matrices".to_string(),
        ));
    }
    Ok(w)
}

/// Rows of `cols` floats in `ty`.
fn encode(ty: GgmlType, data: &[f32], cols: usize) -> Result<Vec<u8>, String> {
    let rb = hearth_quant::row_bytes(ty, cols).map_err(|e| e.to_string())?;
    let mut out = vec![0u8; data.len() / cols * rb];
    for (src, dst) in data.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
        hearth_quant::quantize_row(ty, src, dst).map_err(|e| e.to_string())?;
    }
    Ok(out)
}
