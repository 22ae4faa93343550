//! `hearth tokenize -m FILE TEXT`: token ids (or pieces) as a JSON array.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hearth_gguf::GgufFile;
use hearth_tokenizer::Tokenizer;

use crate::model_ref;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file (a vocab-only file is enough) or a known model name.
    #[arg(short = 'm', long)]
    model: String,
    /// Do not add the BOS token even if the model asks for it.
    #[arg(long)]
    no_bos: bool,
    /// Parse control-token text such as <start_of_turn> into control tokens.
    #[arg(long)]
    parse_special: bool,
    /// Print token ids (the default).
    #[arg(long, conflicts_with = "pieces")]
    ids: bool,
    /// Print the text of each token instead of its id.
    #[arg(long)]
    pieces: bool,
    /// Read the text from a file ("-" for standard input) instead of the argument.
    #[arg(short = 'f', long, conflicts_with = "text")]
    file: Option<PathBuf>,
    /// The text to tokenize.
    text: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.clone(),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            s
        }
        (None, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        (None, None) => bail!("no text given: pass TEXT or -f FILE"),
    };
    let path = model_ref::resolve(&a.model)?;
    let file = GgufFile::open(&path)?;
    let tok = Tokenizer::from_gguf(file.metadata())
        .with_context(|| format!("{}: building the tokenizer", path.display()))?;
    let ids = tok.encode(&text, !a.no_bos, a.parse_special);

    let out = if a.pieces {
        let pieces: Vec<String> = ids
            .iter()
            .map(|&id| String::from_utf8_lossy(&tok.token_to_piece(id, true)).into_owned())
            .collect();
        serde_json::to_string(&pieces)?
    } else {
        serde_json::to_string(&ids)?
    };
    writeln!(std::io::stdout().lock(), "{out}")?;
    Ok(())
}
