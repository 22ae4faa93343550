//! `hearth perplexity -m MODEL -f FILE [-c 512]`, computed as llama.cpp's perplexity tool does:
//! the text (less one trailing newline) is tokenized once with BOS, cut into ⌊n/c⌋ non-overlapping
//! chunks whose first token is replaced by BOS, and positions c/2 … c−2 of each chunk score their
//! next token. PPL = exp(mean negative log-likelihood).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hearth_engine::Logits;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::logits::logsumexp;
use crate::generate;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file, or a known model name (gemma3-270m).
    #[arg(short = 'm', long)]
    model: String,
    /// The text to score.
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    session: super::common::SessionArgs,
    /// Score only the first N chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Print a JSON object instead of `ppl = X`.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    if text.ends_with('\n') {
        text.pop();
    }
    if a.ctx < 4 {
        bail!("-c {}: chunks must be at least 4 tokens", a.ctx);
    }
    let (model, tok) = generate::load(&a.model, a.threads)?;
    let tokens = tok.encode(&text, true, false);
    let n_ctx = a.ctx;
    let mut n_chunk = tokens.len() / n_ctx;
    if let Some(c) = a.chunks {
        n_chunk = n_chunk.min(c);
    }
    if n_chunk == 0 {
        bail!(
            "{} is {} tokens: it needs at least {n_ctx} for one chunk of -c {n_ctx}",
            a.file.display(),
            tokens.len()
        );
    }
    let mut session = model.session(a.session.options(&model, n_ctx)?)?;
    if session.n_ctx() < n_ctx {
        bail!(
            "-c {n_ctx} is longer than the model's context ({})",
            session.n_ctx()
        );
    }
    let first = n_ctx / 2;
    let bar = ProgressBar::new(n_chunk as u64).with_style(ProgressStyle::with_template(
        "perplexity [{bar:30}] {pos}/{len} chunks {elapsed} (eta {eta}) {msg}",
    )?);
    let start = Instant::now();
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunk);
    for i in 0..n_chunk {
        let mut chunk = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
        if let Some(bos) = tok.bos().filter(|_| tok.adds_bos()) {
            chunk[0] = bos;
        }
        session.clear();
        let out = session.eval(&chunk, Logits::Tail(n_ctx - first))?;
        for j in first..n_ctx - 1 {
            let row = out.at(j).context("missing logits")?;
            let target = tokens[i * n_ctx + j + 1] as usize;
            let v = logsumexp(row) - row[target] as f64;
            nll += v;
            nll2 += v * v;
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        bar.set_message(format!("ppl {ppl:.4}"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mean = nll / count as f64;
    let ppl = mean.exp();
    // llama.cpp's uncertainty: the standard error of the mean NLL, carried through exp.
    let var = (nll2 / count as f64 - mean * mean).max(0.0);
    let err = if count > 1 {
        ppl * (var / (count - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "hearth: {n_chunk} chunks of {n_ctx} tokens, {count} scored, in {secs:.1} s ({:.0} tokens/s)",
        (n_chunk * n_ctx) as f64 / secs
    );
    let mut out = std::io::stdout().lock();
    if a.json {
        let o = json!({"ppl": ppl, "ppl_stderr": err, "n_tokens": tokens.len(), "n_ctx": n_ctx,
                       "n_chunks": n_chunk, "n_scored": count, "running_ppl": running, "seconds": secs});
        writeln!(out, "{}", serde_json::to_string(&o)?)?;
    } else {
        writeln!(out, "ppl = {ppl:.4} +/- {err:.5}")?;
    }
    Ok(())
}
