//! Prints the top-10 logits at every position of a prompt given as token ids:
//! `cargo run -p hearth-engine --release --example top10 -- MODEL [fa|nofa] ID...`
//! (a probe for comparing with llama.cpp position by position).

use hearth_engine::{AttentionMode, LoadOptions, Logits, Model, SessionOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, mode, ids @ ..] = args.as_slice() else {
        return Err("usage: top10 MODEL fa|nofa ID...".into());
    };
    let attention = if mode == "nofa" {
        AttentionMode::Standard
    } else {
        AttentionMode::Flash
    };
    let ids: Vec<u32> = ids.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let model = Model::load(path, &LoadOptions::default())?;
    let mut s = model.session(SessionOptions {
        attention,
        n_ctx: 512,
        ..SessionOptions::default()
    })?;
    let out = s.eval(&ids, Logits::All)?;
    for (p, row) in out.rows().enumerate() {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let top: Vec<String> = idx[..10]
            .iter()
            .map(|&i| format!("{i}={:.4}", row[i]))
            .collect();
        println!("{p}: {}", top.join(" "));
    }
    Ok(())
}
