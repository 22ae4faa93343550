//! Rough prefill and decode speed: `cargo run -p hearth-engine --release --example speed --
//! MODEL [THREADS] [PROMPT_TOKENS] [DECODE_TOKENS]` (the real benchmark is `hearth bench`).

use std::time::Instant;

use hearth_engine::{LoadOptions, Logits, Model, SessionOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: speed MODEL [THREADS] [PROMPT] [DECODE]")?;
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (threads, n_prompt, n_gen) = (arg(1, 2), arg(2, 128), arg(3, 64));
    let model = Model::load(
        path,
        &LoadOptions {
            threads,
            ..Default::default()
        },
    )?;
    let n_vocab = model.n_vocab() as u32;
    let prompt: Vec<u32> = (0..n_prompt as u32)
        .map(|i| 2 + (i * 7919) % (n_vocab - 2))
        .collect();
    for round in 0..2 {
        let mut s = model.session(SessionOptions::default())?;
        let t = Instant::now();
        let out = s.eval(&prompt, Logits::Last)?;
        let pp = t.elapsed().as_secs_f64();
        let mut next = out.last().map_or(0, argmax);
        let t = Instant::now();
        for _ in 0..n_gen {
            let out = s.eval(&[next], Logits::Last)?;
            next = out.last().map_or(0, argmax);
        }
        let tg = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {threads} threads, pp{n_prompt} {:.1} t/s ({:.1} ms), tg{n_gen} {:.1} t/s",
            n_prompt as f64 / pp,
            pp * 1e3,
            n_gen as f64 / tg
        );
    }
    Ok(())
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}
