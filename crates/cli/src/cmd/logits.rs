//! `hearth logits -m MODEL --top K PROMPT`: the top-K next-token logits at every prompt position, as
//! a JSON array of `{"ids": [...], "logits": [...]}` (descending; ties by lower id).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use hearth_chat::Message;
use hearth_engine::Logits;
use serde_json::json;

use super::common::{ModelArgs, read_text};
use crate::generate;
use crate::prompt;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// How many of the highest logits to print per position.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Feed the prompt as-is (completion mode): BOS as the model says, special-token text parsed.
    #[arg(long)]
    raw: bool,
    /// With --raw, keep special-token text in the prompt as plain text.
    #[arg(long)]
    no_parse_special: bool,
    /// Also print each position's log-sum-exp over the whole vocabulary (log-probability = logit - lse).
    #[arg(long)]
    logsumexp: bool,
    #[arg(short = 'f', long, conflicts_with = "prompt")]
    file: Option<PathBuf>,
    prompt: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    let text = read_text(a.prompt.as_deref(), a.file.as_deref())?;
    if a.top == 0 {
        bail!("--top must be at least 1");
    }
    let (model, tok) = generate::load(&a.model.model, a.model.threads)?;
    let ids = if a.raw {
        prompt::raw(&tok, &text, !a.no_parse_special)
    } else {
        prompt::chat(
            &tok,
            &prompt::template(&model, &tok)?,
            &[Message::user(text.as_str())],
            true,
        )?
    };
    if ids.is_empty() {
        bail!("the prompt is empty (no tokens to score)");
    }
    let mut session = model.session(
        a.model
            .session
            .options(&model, a.model.ctx.max(ids.len()))?,
    )?;
    if ids.len() > session.n_ctx() {
        bail!(
            "the prompt is {} tokens but the model's context is {}",
            ids.len(),
            session.n_ctx()
        );
    }
    let out = session.eval(&ids, Logits::All)?;
    let rows: Vec<_> = out
        .rows()
        .map(|row| {
            let mut order: Vec<u32> = (0..row.len() as u32).collect();
            let k = a.top.min(row.len());
            let cmp =
                |x: &u32, y: &u32| row[*y as usize].total_cmp(&row[*x as usize]).then(x.cmp(y));
            order.select_nth_unstable_by(k - 1, cmp);
            order.truncate(k);
            order.sort_unstable_by(cmp);
            let logits: Vec<f32> = order.iter().map(|&i| row[i as usize]).collect();
            let mut o = json!({"ids": order, "logits": logits});
            if a.logsumexp {
                o["logsumexp"] = json!(logsumexp(row));
            }
            o
        })
        .collect();
    writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string(&rows)?
    )?;
    Ok(())
}

/// log Σ exp(x), in f64.
pub fn logsumexp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
}
