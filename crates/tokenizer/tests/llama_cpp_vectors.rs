//! llama.cpp's own tokenizer test vectors (`models/ggml-vocab-*.gguf.inp/.out`), fetched by
//! `scripts/fetch-test-assets`. Every family we support must match all of its vectors.

mod common;

use hearth_tokenizer::{DecodeOptions, Tokenizer, TokenizerError, TokenizerModel};

/// Encodes every vector and requires all to match; also checks that decoding gives the text back
/// where llama.cpp's detokenizer is lossless (no `clean_spaces` post-processing).
fn family(name: &str, model: TokenizerModel, lossless_decode: bool) {
    let (tok, cases) = common::load_family(name);
    assert_eq!(tok.model(), model);
    let (passed, total) = common::score(name, &tok, &cases);
    assert_eq!(
        passed, total,
        "{name}: {passed}/{total} vectors match llama.cpp"
    );
    if lossless_decode {
        for (text, ids) in &cases {
            let back = tok.decode_with(ids, DecodeOptions::default());
            assert_eq!(String::from_utf8_lossy(&back), *text, "{name}: decode");
        }
    }
}

#[test]
fn llama_spm() {
    family("llama-spm", TokenizerModel::Spm, true);
}

#[test]
fn phi_3() {
    family("phi-3", TokenizerModel::Spm, true);
}

#[test]
fn llama_bpe() {
    family("llama-bpe", TokenizerModel::Bpe, false);
}

#[test]
fn qwen2() {
    family("qwen2", TokenizerModel::Bpe, true);
}

#[test]
fn gpt_2() {
    family("gpt-2", TokenizerModel::Bpe, false);
}

#[test]
fn deepseek_llm() {
    family("deepseek-llm", TokenizerModel::Bpe, true);
}

#[test]
fn command_r() {
    family("command-r", TokenizerModel::Bpe, true);
}

#[test]
fn deepseek_coder() {
    family("deepseek-coder", TokenizerModel::Bpe, true);
}

#[test]
fn starcoder() {
    family("starcoder", TokenizerModel::Bpe, false);
}

#[test]
fn falcon() {
    family("falcon", TokenizerModel::Bpe, false);
}

#[test]
fn mpt() {
    family("mpt", TokenizerModel::Bpe, false);
}

#[test]
fn refact() {
    family("refact", TokenizerModel::Bpe, false);
}

#[test]
fn qwen35() {
    family("qwen35", TokenizerModel::Bpe, true);
}

/// BERT's WordPiece is not implemented: the error must say so and name the model.
#[test]
fn bert_bge_is_refused_clearly() {
    let err = Tokenizer::from_gguf_file(common::vocab_file("bert-bge")).unwrap_err();
    assert!(
        matches!(err, TokenizerError::UnsupportedModel(ref m) if m == "bert"),
        "{err}"
    );
    assert!(err.to_string().contains("\"bert\""), "{err}");
}

/// Specials and end-of-generation sets as llama.cpp computes them.
#[test]
fn special_ids_and_eog() {
    let (tok, _) = common::load_family("llama-bpe");
    let id = |t: &str| tok.token_id(t).unwrap();
    assert_eq!(tok.bos(), Some(id("<|begin_of_text|>")));
    assert!(tok.adds_bos(), "llama-bpe adds BOS by default");
    assert_eq!(tok.eot(), Some(id("<|eot_id|>")));
    // This Llama 3.0 vocabulary predates `<|eom_id|>`.
    assert_eq!(tok.eom(), None);
    assert_eq!(tok.eos(), Some(id("<|end_of_text|>")));
    for t in ["<|eot_id|>", "<|end_of_text|>"] {
        assert!(tok.is_eog(id(t)), "{t}");
    }
    assert!(!tok.is_eog(id("<|begin_of_text|>")));

    let (tok, _) = common::load_family("qwen2");
    let id = |t: &str| tok.token_id(t).unwrap();
    assert_eq!(tok.eot(), Some(id("<|im_end|>")));
    assert!(tok.is_eog(id("<|im_end|>")) && tok.is_eog(id("<|endoftext|>")));
    assert!(!tok.is_eog(id("<|im_start|>")));
    assert!(!tok.adds_bos());

    let (tok, _) = common::load_family("phi-3");
    let id = |t: &str| tok.token_id(t).unwrap();
    assert!(tok.is_eog(id("<|end|>")) && tok.is_eog(id("<|endoftext|>")));
    assert_eq!(tok.eos(), Some(id("<|endoftext|>")));
}

/// Random texts (mixed scripts, whitespace runs, contractions, special-token texts) with the ids
/// llama.cpp 0.3.36 gives for each of add_special × parse_special, in
/// `tests/fixtures/tokenizer/llama_cpp_random_cases.jsonl`.
#[test]
fn random_texts_match_llama_cpp() {
    let path = common::fixture("llama_cpp_random_cases.jsonl");
    let lines =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut by_vocab: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
    for line in lines.lines() {
        let case: serde_json::Value = serde_json::from_str(line).expect("a JSON case");
        let vocab = case["vocab"].as_str().expect("vocab").to_string();
        match by_vocab.iter_mut().find(|(v, _)| *v == vocab) {
            Some((_, cases)) => cases.push(case),
            None => by_vocab.push((vocab, vec![case])),
        }
    }
    assert_eq!(by_vocab.len(), 14);
    let mut failed = 0;
    for (vocab, cases) in &by_vocab {
        let tok = match vocab.as_str() {
            "gemma-3" => Tokenizer::from_gguf_file(common::gemma_model()),
            family => Tokenizer::from_gguf_file(common::vocab_file(family)),
        }
        .unwrap();
        for case in cases {
            let text = case["text"].as_str().expect("text");
            for (key, add_special, parse_special) in [
                ("00", false, false),
                ("01", false, true),
                ("10", true, false),
                ("11", true, true),
            ] {
                let want: Vec<u32> = case["ids"][key]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|v| v.as_u64().expect("id") as u32)
                    .collect();
                let got = tok.encode(text, add_special, parse_special);
                if got != want {
                    failed += 1;
                    eprintln!("{vocab} {key} {text:?}\n  want {want:?}\n  got  {got:?}");
                }
            }
        }
        println!("{vocab}: {} random texts", cases.len());
    }
    assert_eq!(failed, 0);
}
