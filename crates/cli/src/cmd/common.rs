//! Flags shared by the generating commands.

use anyhow::{Context, Result, bail};
use std::sync::Arc;

use hearth_engine::{
    Adapter, AdapterOptions, Applied, AttentionMode, Binding, KvType, Model, SessionOptions,
};
use hearth_sampling::SamplerParams;

/// The model, context and thread flags.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A GGUF file, or a known model name (gemma3-270m).
    #[arg(short = 'm', long)]
    pub model: String,
    /// Context size in tokens (capped by the model's trained context).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx: usize,
    /// Threads for the forward pass (default: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// How attention and the KV cache are computed and stored, and the adapters applied.
#[derive(clap::Args, Clone, Debug)]
pub struct SessionArgs {
    /// Apply a LoRA adapter (llama.cpp's GGUF-LoRA) at SCALE (default 1.0); repeatable.
    #[arg(long = "adapter", value_name = "FILE[:SCALE]")]
    pub adapters: Vec<String>,
    /// Load adapters that record another base model (their shapes must still fit).
    #[arg(long)]
    pub force_adapter: bool,
    /// Element type of the K cache: f16, q8_0 or q4_0.
    #[arg(long = "cache-type-k", visible_alias = "ctk", default_value = "f16")]
    pub cache_type_k: KvType,
    /// Element type of the V cache: f16, q8_0 or q4_0 (quantized needs flash attention).
    #[arg(long = "cache-type-v", visible_alias = "ctv", default_value = "f16")]
    pub cache_type_v: KvType,
    /// Flash attention: on (llama.cpp's default on CPU) or off.
    #[arg(long = "flash-attn", visible_alias = "fa", default_value = "on",
          action = clap::ArgAction::Set, value_parser = parse_on_off)]
    pub flash_attn: bool,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "auto" | "1" | "true" => Ok(true),
        "off" | "0" | "false" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

impl SessionArgs {
    /// Session options with context size `n_ctx` and these settings, the adapters loaded and
    /// checked against `model`.
    pub fn options(&self, model: &Model, n_ctx: usize) -> Result<SessionOptions> {
        let adapters = load_adapters(&self.adapters, model, self.force_adapter)?;
        Ok(SessionOptions {
            adapters,
            n_ctx,
            attention: if self.flash_attn {
                AttentionMode::Flash
            } else {
                AttentionMode::Standard
            },
            cache_type_k: self.cache_type_k,
            cache_type_v: self.cache_type_v,
            ..SessionOptions::default()
        })
    }
}

/// `FILE[:SCALE]`: a suffix after the last `:` that reads as a number is the scale.
/// The adapters of `--adapter FILE[:SCALE]` specs, checked against `model` (warnings for
/// unbound or forced ones on stderr).
pub fn load_adapters(specs: &[String], model: &Model, force: bool) -> Result<Vec<Applied>> {
    let mut adapters = Vec::new();
    for spec in specs {
        let (file, scale) = parse_adapter(spec)?;
        let adapter = Adapter::load_with(file, model, &AdapterOptions { force })
            .with_context(|| format!("--adapter {spec}"))?;
        match adapter.binding() {
            Binding::Verified => {}
            Binding::Unrecorded => eprintln!(
                "warning: adapter {file} records no base model; only its architecture and \
                 shapes were checked against this one"
            ),
            Binding::Forced { recorded } => eprintln!(
                "warning: adapter {file} was made for another base model (SHA-256 \
                 {recorded}); loaded because of --force-adapter"
            ),
        }
        eprintln!(
            "hearth: adapter {} ({} matrices, {} parameters, alpha {}) at scale {scale}",
            file,
            adapter.n_matrices(),
            adapter.n_params(),
            adapter.alpha()
        );
        adapters.push(Applied {
            adapter: Arc::new(adapter),
            scale,
        });
    }
    Ok(adapters)
}

fn parse_adapter(spec: &str) -> Result<(&str, f32)> {
    let (file, scale) = match spec.rsplit_once(':') {
        Some((f, s)) if !f.is_empty() && s.trim().parse::<f32>().is_ok() => {
            (f, s.trim().parse::<f32>().unwrap())
        }
        _ => (spec, 1.0),
    };
    if file.is_empty() {
        bail!("--adapter {spec:?}: expected FILE[:SCALE]");
    }
    if !scale.is_finite() {
        bail!("--adapter {spec:?}: the scale must be a finite number");
    }
    Ok((file, scale))
}

/// Sampling flags, with llama.cpp's defaults.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1.0 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Minimum probability relative to the most likely token (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise repeated tokens (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties consider.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Random seed (same seed, same settings, same output).
    #[arg(long, default_value_t = 0xC0FFEE)]
    pub seed: u64,
    /// Add BIAS to token ID's logit: ID=BIAS or ID=-inf (repeatable).
    #[arg(long = "logit-bias", value_name = "ID=BIAS")]
    pub logit_bias: Vec<String>,
    /// Stop when this text is generated (repeatable; the text itself is not printed).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
}

impl SamplingArgs {
    pub fn params(&self) -> Result<SamplerParams> {
        let mut logit_bias = Vec::new();
        for b in &self.logit_bias {
            let (id, bias) = b
                .split_once('=')
                .with_context(|| format!("--logit-bias {b:?}: expected ID=BIAS"))?;
            let id: u32 = id
                .trim()
                .parse()
                .with_context(|| format!("--logit-bias {b:?}: bad token id"))?;
            let bias: f32 = match bias.trim() {
                "-inf" | "-infinity" => f32::NEG_INFINITY,
                s => s
                    .parse()
                    .with_context(|| format!("--logit-bias {b:?}: bad bias"))?,
            };
            logit_bias.push((id, bias));
        }
        let p = SamplerParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            penalty_last_n: self.repeat_last_n,
            logit_bias,
            seed: self.seed,
        };
        if let Err(e) = p.validate() {
            bail!("{e}");
        }
        Ok(p)
    }
}

/// The prompt from the argument, a file, or standard input (`-f -`).
pub fn read_text(arg: Option<&str>, file: Option<&std::path::Path>) -> Result<String> {
    use std::io::Read;
    match (arg, file) {
        (Some(t), _) => Ok(t.to_string()),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            Ok(s)
        }
        (None, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        }
        (None, None) => bail!("no prompt given: pass PROMPT or -f FILE"),
    }
}

/// A size line of `/proc/self/status` (`VmRSS`, `VmHWM`...) in bytes, where the system has it.
pub fn proc_status_bytes(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s
        .lines()
        .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
