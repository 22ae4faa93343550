//! `hearth synth`: a random-weight model with a real vocabulary, for tests and benchmarks.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use hearth_gguf::GgufFile;
use hearth_synth::{Arch, Config, FileType, Preset, SynthOptions, Vocab};
use indicatif::{ProgressBar, ProgressStyle};

use crate::model_ref;

#[derive(clap::Args)]
pub struct Args {
    /// gemma3, llama, qwen2, qwen3 or qwen3moe.
    #[arg(long)]
    arch: Arch,
    /// tiny (256 wide, 2 layers), 1b (the family's ~1B shape) or mixtral (llama: the tiny
    /// shape with 8 experts, 2 used per token).
    #[arg(long, default_value = "tiny")]
    preset: Preset,
    /// F16, BF16, F32, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_M, Q5_K_M, Q6_K, Q2_K, Q3_K_S, Q4_K_S, Q5_K_S, IQ4_NL or IQ4_XS.
    #[arg(long = "type", default_value = "F16")]
    file_type: FileType,
    /// A GGUF file whose tokenizer.* keys are copied (a vocab-only file or any model).
    #[arg(long, default_value = "gemma3-270m")]
    vocab: String,
    /// Keep only the first N tokens of the vocabulary.
    #[arg(long)]
    n_vocab: Option<usize>,
    #[arg(long, default_value_t = 20261125)]
    seed: u64,
    /// Every matrix in the type itself (llama-quantize's --pure), e.g. `--type IQ4_XS --pure`.
    #[arg(long)]
    pure: bool,
    /// Override the preset's layer count.
    #[arg(long)]
    layers: Option<usize>,
    /// Override the preset's context length.
    #[arg(long)]
    ctx: Option<usize>,
    /// Override the preset's expert count (MoE; on llama, Mixtral-style experts).
    #[arg(long)]
    experts: Option<usize>,
    /// Override the preset's used-expert count (MoE).
    #[arg(long)]
    experts_used: Option<usize>,
    /// Instead of the mixture of experts, the dense model a token of it costs as much as: the
    /// used experts' FFN as one (qwen3moe becomes qwen3, llama stays llama).
    #[arg(long)]
    dense: bool,
    #[arg(short = 't', long, default_value_t = std::thread::available_parallelism().map_or(1, |n| n.get()))]
    threads: usize,
    #[arg(short = 'o', long)]
    output: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let mut config = Config::preset(a.arch, a.preset);
    if let Some(n) = a.layers {
        config.n_layer = n;
    }
    if let Some(n) = a.ctx {
        config.ctx = n;
    }
    if let Some(n) = a.experts {
        config.n_expert = n;
        // Mixtral-style: a llama file's experts have the model's FFN size.
        if a.arch == Arch::Llama {
            config.n_ff_exp = config.n_ff;
        }
    }
    if let Some(n) = a.experts_used {
        config.n_expert_used = n;
    }
    if a.dense {
        if !config.is_moe() {
            anyhow::bail!("--dense needs a mixture of experts (qwen3moe, or llama with experts)");
        }
        config.n_ff = config.n_expert_used * config.n_ff_exp;
        config.n_expert = 0;
        config.n_expert_used = 0;
        config.n_ff_exp = 0;
        if config.arch == Arch::Qwen3Moe {
            config.arch = Arch::Qwen3;
        }
    }
    let vocab_path = model_ref::resolve(&a.vocab)?;
    let vocab = Vocab::from_file(&GgufFile::open(&vocab_path)?, a.n_vocab)?;
    let opts = SynthOptions {
        config,
        file_type: a.file_type,
        seed: a.seed,
        threads: a.threads,
        pure: a.pure,
    };

    let start = Instant::now();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} tensors {elapsed}")?
            .progress_chars("=> "),
    );
    bar.set_message(format!(
        "synth {} {} {}",
        opts.config.arch,
        a.file_type,
        a.output.display()
    ));
    let w = hearth_synth::synthesize(&opts, &vocab, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    w.write_to_path(&a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    let bytes = std::fs::metadata(&a.output)?.len();
    eprintln!(
        "wrote {} ({} {}, {} layers, vocab {} from {}, {:.1} MB) in {:.1}s",
        a.output.display(),
        opts.config.arch,
        a.file_type,
        opts.config.n_layer,
        vocab.n_vocab,
        vocab_path.display(),
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
