//! `hearth`: the command-line tool. One module per subcommand under `cmd/`.

mod cmd;
mod generate;
mod model_ref;
mod prompt;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "A private, offline runtime for small language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file's metadata and tensor table.
    Inspect(cmd::inspect::Args),
    /// Tokenize text with a model's tokenizer and print the token ids as JSON.
    Tokenize(cmd::tokenize::Args),
    /// Write a random-weight model with a real vocabulary, in llama.cpp's tensor layout.
    Synth(cmd::synth::Args),
    /// Write a random LoRA adapter of a given rank and targets for a base model.
    SynthAdapter(cmd::synth_adapter::Args),
    /// Inspect LoRA adapters.
    #[command(subcommand)]
    Adapter(cmd::adapter::Command),
    /// Generate text from a prompt (through the chat template unless --raw).
    Run(cmd::run::Args),
    /// Chat with a model in the terminal.
    Chat(cmd::chat::Args),
    /// Print the top next-token logits at every prompt position, as JSON.
    Logits(cmd::logits::Args),
    /// Perplexity of a text file, computed as llama.cpp's perplexity tool does.
    Perplexity(cmd::perplexity::Args),
    /// Prefill and decode speed, time to first token and peak memory, in the manner of llama-bench.
    Bench(cmd::bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Tokenize(a) => cmd::tokenize::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::SynthAdapter(a) => cmd::synth_adapter::run(a),
        Command::Adapter(c) => cmd::adapter::run(c),
        Command::Run(a) => cmd::run::run(a),
        Command::Chat(a) => cmd::chat::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Perplexity(a) => cmd::perplexity::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (e.g. `| head`) is not an error worth a message.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
