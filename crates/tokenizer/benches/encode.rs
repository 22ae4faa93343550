//! Encoding throughput on 1 MB texts with the Gemma 3 and Llama 3 (llama-bpe) vocabularies.
//!
//!     cargo bench -p hearth-tokenizer
//!
//! Needs `scripts/fetch-model` and `scripts/fetch-test-assets` (it says so if they are missing).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use hearth_tokenizer::Tokenizer;

const SIZE: usize = 1 << 20;

fn repeat_to_size(unit: &str) -> String {
    let mut s = String::with_capacity(SIZE + unit.len());
    while s.len() < SIZE {
        s.push_str(unit);
    }
    s
}

fn english() -> String {
    repeat_to_size(
        "The quick brown fox jumps over the lazy dog. It wasn't the first time; \
         the dog had seen 1,234 foxes since 2019, and they're all alike.\n\
         Tokenizers split text into pieces, merge them by score or rank, and \
         map every piece to an id. Speed matters when prompts are long!\n\n",
    )
}

fn unicode_mix() -> String {
    repeat_to_size(
        "Привет, мир! Как дела? 你好，世界！今天天气很好。こんにちは世界、カタカナ。\
         안녕하세요 세계. مرحبا بالعالم. नमस्ते दुनिया। Γειά σου Κόσμε. \
         😀😃😄 👩‍👩‍👧‍👦 🇫🇷 ∑_{i=1}^{n} x_i² ≤ ∞, √2 ≈ 1.414 — «quotes» ‘and’ “more”.\n",
    )
}

fn code() -> String {
    repeat_to_size(
        "fn main() {\n    let xs: Vec<u32> = (0..10).collect();\n    for x in &xs {\n        \
         if x % 2 == 0 {\n            println!(\"{x} is even\");\n        }\n    }\n}\n\n",
    )
}

/// Best of a few runs (the machine is shared).
fn time(f: impl Fn() -> usize) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut n = 0;
    for _ in 0..3 {
        let t = Instant::now();
        n = f();
        best = best.min(t.elapsed());
    }
    (best, n)
}

fn bench(name: &str, tok: &Tokenizer, texts: &[(&str, String)]) {
    for (label, text) in texts {
        let (d, n) = time(|| tok.encode(text, false, false).len());
        let mbs = text.len() as f64 / 1e6 / d.as_secs_f64();
        println!(
            "{name:10} {label:8} {:7.2} MB in {:7.1} ms = {mbs:6.1} MB/s, {n} tokens",
            text.len() as f64 / 1e6,
            d.as_secs_f64() * 1e3
        );
    }
}

/// Stress cases: long space runs (Gemma's 30 overlapping space tokens) and one huge word.
fn spaces() -> String {
    repeat_to_size(&format!("x{}", " ".repeat(1023)))
}

fn one_word() -> String {
    repeat_to_size("abcdefghijklmnopqrstuvwxyz")
}

fn main() {
    let texts = [
        ("english", english()),
        ("unicode", unicode_mix()),
        ("code", code()),
        ("spaces", spaces()),
        ("one-word", one_word()),
    ];
    let t = Instant::now();
    let gemma = Tokenizer::from_gguf_file(common::gemma_model()).expect("Gemma 3 tokenizer");
    println!("gemma-3 load: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    let llama =
        Tokenizer::from_gguf_file(common::vocab_file("llama-bpe")).expect("llama-bpe tokenizer");
    println!("llama-bpe load: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    bench("gemma-3", &gemma, &texts);
    bench("llama-bpe", &llama, &texts);
}
