//! Logit and greedy parity with llama.cpp on the default model, Gemma 3 270M Q4_K_M
//! (`tests/fixtures/gemma3-270m`). Fails with a pointer to `scripts/fetch-model` when the model
//! has not been downloaded.

mod common;

use common::*;
use hearth_engine::AttentionMode;

#[test]
fn gemma3_270m_logits_match_llama_cpp() {
    let model = load(&default_model_path());
    let fixture = read_json(&fixtures().join("gemma3-270m/logits_top10.json"));
    let mut failures = Vec::new();
    for mode in [AttentionMode::Flash, AttentionMode::Standard] {
        let (on, off) = logit_parity(&model, &fixture["cases"], mode);
        println!(
            "gemma3-270m {mode:?}: vs fa-on ref {} | vs fa-off ref {}",
            on.summary(),
            off.summary()
        );
        let own = if mode == AttentionMode::Flash {
            &on
        } else {
            &off
        };
        if !own.passes() {
            failures.push(format!(
                "{mode:?}: {} {:?}",
                own.summary(),
                own.violation_notes
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn gemma3_270m_greedy_matches_llama_cpp() {
    let model = load(&default_model_path());
    let fixture = read_json(&fixtures().join("gemma3-270m/greedy.json"));
    // Flash attention on, as llama.cpp ran the default references (the fa-off pairing runs in
    // the logits test; greedy on this model costs a second per run).
    let (on, off) = greedy_parity(&model, &fixture["cases"], AttentionMode::Flash);
    println!(
        "gemma3-270m greedy (flash): vs fa-on ref {} | vs fa-off ref {}",
        on.summary(),
        off.summary()
    );
    assert!(on.failures.is_empty(), "{}", on.failures.join("\n"));
}
