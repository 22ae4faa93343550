//! `hearth chat -m MODEL`: an interactive conversation in the terminal. Replies stream as they are
//! generated; the conversation goes through the model's chat template every turn, and the KV cache
//! keeps the shared prefix, so each turn only evaluates the new messages.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use hearth_chat::Message;

use super::common::{ModelArgs, SamplingArgs};
use crate::generate::{self, GenParams, Generator};
use crate::prompt;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 1024)]
    n_predict: usize,
    /// A system message that starts the conversation.
    #[arg(long)]
    system: Option<String>,
}

const HELP: &str =
    "commands: /clear (forget the conversation), /exit; end a line with \\ to continue it";

pub fn run(a: Args) -> Result<()> {
    let params = GenParams {
        n_predict: a.n_predict,
        sampler: a.sampling.params()?,
        stops: a.sampling.stop.clone(),
        ignore_eos: false,
    };
    let (model, tok) = generate::load(&a.model.model, a.model.threads)?;
    let template = prompt::template(&model, &tok)?;
    let mut generator = Generator::new(&model, a.model.session.options(&model, a.model.ctx)?)?;
    let start: Vec<Message> = a
        .system
        .iter()
        .map(|s| Message::system(s.as_str()))
        .collect();
    let mut messages = start.clone();
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("hearth: chatting with {} ({HELP})", model.path().display());
    }

    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let mut input = String::new();
        loop {
            let Some(line) = lines.next() else {
                return Ok(());
            };
            let line = line?;
            match line.strip_suffix('\\') {
                Some(more) => {
                    input.push_str(more);
                    input.push('\n');
                }
                None => {
                    input.push_str(&line);
                    break;
                }
            }
        }
        match input.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/clear" => {
                messages = start.clone();
                eprintln!("hearth: conversation cleared");
                continue;
            }
            "/help" => {
                eprintln!("{HELP}");
                continue;
            }
            _ => {}
        }
        messages.push(Message::user(input.as_str()));
        // Forget the oldest turns (keeping the system message) until the conversation fits.
        let ids = loop {
            let ids = prompt::chat(&tok, &template, &messages, true)?;
            if ids.len() + 1 < generator.n_ctx() || messages.len() <= start.len() + 1 {
                break ids;
            }
            messages.drain(start.len()..(start.len() + 2).min(messages.len() - 1));
            eprintln!(
                "hearth: the conversation is longer than the context; dropped the oldest turn"
            );
        };
        let mut out = std::io::stdout().lock();
        let result = match generator.generate(&tok, &ids, &params, &mut |s| {
            out.write_all(s.as_bytes())?;
            out.flush()?;
            Ok(())
        }) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e:#}");
                messages.pop();
                continue;
            }
        };
        writeln!(out)?;
        if interactive {
            eprintln!("{}", result.timings());
        }
        messages.push(Message::assistant(result.text.trim_end()));
    }
}
