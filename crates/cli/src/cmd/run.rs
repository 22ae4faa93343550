//! `hearth run -m MODEL PROMPT`: generate a completion. Only the generated text goes to stdout
//! (or, with `--output-ids`, the generated token ids as a JSON array); timings go to stderr.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use hearth_chat::Message;

use super::common::{ModelArgs, SamplingArgs, read_text};
use crate::generate::{self, GenParams, Generator};
use crate::prompt;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    n_predict: usize,
    /// Feed the prompt as-is (completion mode): BOS as the model says, special-token text parsed.
    #[arg(long)]
    raw: bool,
    /// With --raw, keep special-token text in the prompt as plain text.
    #[arg(long)]
    no_parse_special: bool,
    /// A system message for the chat template (ignored with --raw).
    #[arg(long)]
    system: Option<String>,
    /// Print the prompt's token ids (and pieces) to stderr before generating.
    #[arg(long)]
    verbose_prompt: bool,
    /// Print the generated token ids as a JSON array instead of the text.
    #[arg(long)]
    output_ids: bool,
    /// Read the prompt from a file ("-" for standard input).
    #[arg(short = 'f', long, conflicts_with = "prompt")]
    file: Option<PathBuf>,
    prompt: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    let text = read_text(a.prompt.as_deref(), a.file.as_deref())?;
    let params = GenParams {
        n_predict: a.n_predict,
        sampler: a.sampling.params()?,
        stops: a.sampling.stop.clone(),
        ignore_eos: a.sampling.ignore_eos,
    };
    let (model, tok) = generate::load(&a.model.model, a.model.threads)?;
    let ids = if a.raw {
        prompt::raw(&tok, &text, !a.no_parse_special)
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(Message::system(s.as_str()));
        }
        msgs.push(Message::user(text.as_str()));
        prompt::chat(&tok, &prompt::template(&model, &tok)?, &msgs, true)?
    };
    if a.verbose_prompt {
        let pieces: Vec<String> = ids
            .iter()
            .map(|&t| String::from_utf8_lossy(&tok.token_to_piece(t, true)).into_owned())
            .collect();
        eprintln!("hearth: prompt ids: {}", serde_json::to_string(&ids)?);
        eprintln!("hearth: prompt pieces: {}", serde_json::to_string(&pieces)?);
    }
    let mut generator = Generator::new(&model, a.model.session.options(&model, a.model.ctx)?)?;
    let mut out = std::io::stdout().lock();
    let stream = !a.output_ids;
    let result = generator.generate(&tok, &ids, &params, &mut |s| {
        if stream {
            out.write_all(s.as_bytes())?;
            out.flush()?;
        }
        Ok(())
    })?;
    if a.output_ids {
        writeln!(out, "{}", serde_json::to_string(&result.ids)?)?;
    } else {
        writeln!(out)?;
    }
    eprintln!("{}", result.timings());
    // What the generation made resident: repacked weights, the experts it was routed to, the
    // KV cache (a mixture of experts stays below its file while experts go unused).
    if let Some(rss) = super::common::proc_status_bytes("VmRSS") {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        eprintln!(
            "hearth: resident memory {:.1} MiB (model file {:.1} MiB)",
            mib(rss),
            mib(model.gguf().file_size())
        );
    }
    Ok(())
}
