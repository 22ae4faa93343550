//! Perplexity the way llama.cpp's `llama-perplexity` computes it (non-overlapping chunks of
//! `n_ctx` tokens, BOS first, the second half of each chunk scored), to check the long-batch
//! path against `tests/fixtures/gemma3-270m/perplexity.json`:
//! `cargo run -p hearth-engine --release --example perplexity -- MODEL TEXT [N_CTX] [fa|nofa]`.

use hearth_engine::{AttentionMode, LoadOptions, Logits, Model, SessionOptions};
use hearth_tokenizer::{EncodeOptions, Tokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_path, text_path, rest @ ..] = args.as_slice() else {
        return Err("usage: perplexity MODEL TEXT [N_CTX] [fa|nofa]".into());
    };
    let n_ctx: usize = rest.first().map_or(Ok(512), |s| s.parse())?;
    let attention = match rest.get(1).map(String::as_str) {
        Some("nofa") => AttentionMode::Standard,
        _ => AttentionMode::Flash,
    };
    let model = Model::load(model_path, &LoadOptions::default())?;
    let tok = Tokenizer::from_gguf(model.gguf().metadata())?;
    let mut text = std::fs::read_to_string(text_path)?;
    if text.ends_with('\n') {
        text.pop(); // llama.cpp's -f drops one trailing newline
    }
    let opts = EncodeOptions {
        add_bos: true,
        add_eos: false,
        parse_special: false,
    };
    let ids = tok.encode_with(&text, opts);
    let bos = tok.bos().ok_or("the model has no BOS token")?;
    let n_chunks = ids.len() / n_ctx;
    let first = n_ctx / 2;
    let mut session = model.session(SessionOptions {
        n_ctx,
        attention,
        ..SessionOptions::default()
    })?;
    let (mut nll, mut count) = (0f64, 0usize);
    for c in 0..n_chunks {
        let mut chunk = ids[c * n_ctx..(c + 1) * n_ctx].to_vec();
        chunk[0] = bos;
        session.clear();
        let out = session.eval(&chunk, Logits::Tail(n_ctx - first))?;
        for (i, &index) in out.indices().iter().enumerate() {
            if index + 1 >= n_ctx {
                continue;
            }
            let row = out.row(i);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            nll += lse - row[chunk[index + 1] as usize] as f64;
            count += 1;
        }
        println!("[{}] {:.4}", c + 1, (nll / count as f64).exp());
    }
    println!(
        "ppl = {:.4} ({} tokens, {n_chunks} chunks of {n_ctx}, {count} scored)",
        (nll / count as f64).exp(),
        ids.len()
    );
    Ok(())
}
