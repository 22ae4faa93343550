//! Gemma 3 (SentencePiece, 262,144 tokens), loaded from the real model file's metadata.
//! Expected ids come from llama.cpp (`llama-tokenize` and `test-tokenizer-0`), committed under
//! `tests/fixtures/tokenizer/`.

mod common;

use std::sync::OnceLock;
use std::time::Instant;

use hearth_tokenizer::{DecodeOptions, EncodeOptions, TokenType, Tokenizer, TokenizerModel};

fn gemma() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = common::gemma_model();
        let t = Instant::now();
        let tok = Tokenizer::from_gguf_file(&path).expect("load the Gemma 3 tokenizer");
        println!(
            "gemma-3 tokenizer loaded in {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        tok
    })
}

struct Case {
    text: String,
    add_bos: bool,
    parse_special: bool,
    ids: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let path = common::fixture("gemma3_cases.json");
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&json).expect("gemma3_cases.json");
    v.as_array()
        .expect("an array of cases")
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("text").to_string(),
            add_bos: c["add_bos"].as_bool().expect("add_bos"),
            parse_special: c["parse_special"].as_bool().expect("parse_special"),
            ids: c["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|i| i.as_u64().expect("id") as u32)
                .collect(),
        })
        .collect()
}

#[test]
fn vocabulary_facts() {
    let tok = gemma();
    assert_eq!(tok.model(), TokenizerModel::Spm);
    assert_eq!(tok.n_vocab(), 262_144);
    assert_eq!(tok.bos(), Some(2));
    assert_eq!(tok.eos(), Some(1));
    assert!(tok.adds_bos() && !tok.adds_eos());
    let id = |t: &str| tok.token_id(t).unwrap();
    assert_eq!(id("<start_of_turn>"), 105);
    assert_eq!(tok.eot(), Some(106));
    assert_eq!(tok.token_type(105), Some(TokenType::Control));
    assert_eq!(tok.token_type(107), Some(TokenType::UserDefined));
    assert_eq!(tok.token_text(107), Some("\n"));
    assert!(tok.is_eog(1) && tok.is_eog(106));
    assert!(!tok.is_eog(105) && !tok.is_eog(2) && !tok.is_eog(107));
    assert_eq!(tok.token_text(262_144), None);
}

#[test]
fn llama_cpp_vectors() {
    let tok = gemma();
    let cases = common::read_vectors(
        &common::fixture("ggml-vocab-gemma-3.gguf.inp"),
        &common::fixture("ggml-vocab-gemma-3.gguf.out"),
    );
    assert_eq!(cases.len(), 58);
    let (passed, total) = common::score("gemma-3", tok, &cases);
    assert_eq!(passed, total);
}

#[test]
fn llama_tokenize_cases() {
    let tok = gemma();
    let cases = cases();
    assert_eq!(cases.len(), 160);
    let mut failed = 0;
    for c in &cases {
        let got = tok.encode(&c.text, c.add_bos, c.parse_special);
        if got != c.ids {
            failed += 1;
            eprintln!(
                "{:?} (add_bos {}, parse_special {})\n  want {:?}\n  got  {:?}",
                c.text, c.add_bos, c.parse_special, c.ids, got
            );
        }
    }
    println!(
        "gemma-3 llama-tokenize cases: {}/{}",
        cases.len() - failed,
        cases.len()
    );
    assert_eq!(failed, 0);
}

#[test]
fn control_tokens_only_when_asked() {
    let tok = gemma();
    let text = "<start_of_turn>user\nHi<end_of_turn>\n<start_of_image>";
    let parsed = tok.encode(text, false, true);
    assert_eq!(parsed[0], 105);
    assert!(parsed.contains(&106));
    let plain = tok.encode(text, false, false);
    assert!(plain.iter().all(|&id| !tok.is_control(id)), "{plain:?}");
    // User-defined tokens ("\n", `<start_of_image>`) are matched either way.
    let image = tok.token_id("<start_of_image>").unwrap();
    assert!(plain.contains(&107) && plain.contains(&image));
    // Per-call BOS/EOS.
    let opts = EncodeOptions {
        add_bos: false,
        add_eos: true,
        parse_special: false,
    };
    let ids = tok.encode_with("Hi", opts);
    assert_eq!(ids.last(), Some(&1));
    assert_ne!(ids[0], 2);
}

/// No text encoded with parse_special = false contains a control token (other than the BOS).
#[test]
fn user_text_never_becomes_markup() {
    let tok = gemma();
    for c in cases() {
        let ids = tok.encode(&c.text, false, false);
        assert!(
            ids.iter().all(|&id| !tok.is_control(id)),
            "{:?}: {ids:?}",
            c.text
        );
    }
}

#[test]
fn decode_round_trips() {
    let tok = gemma();
    for c in cases() {
        let ids = tok.encode(&c.text, c.add_bos, c.parse_special);
        // Drop the added BOS; parsed markup renders only with `unparse_special`.
        let opts = DecodeOptions {
            remove_special: c.add_bos,
            unparse_special: c.parse_special,
        };
        let back = tok.decode_with(&ids, opts);
        assert_eq!(String::from_utf8_lossy(&back), c.text, "{ids:?}");
        if !c.add_bos {
            assert_eq!(tok.decode(&ids, c.parse_special), c.text);
        }
    }
}

#[test]
fn pieces() {
    let tok = gemma();
    let byte = tok.token_id("<0xE2>").unwrap();
    assert_eq!(tok.token_type(byte), Some(TokenType::Byte));
    assert_eq!(tok.token_to_piece(byte, false), [0xE2]);
    let the = tok.token_id("▁the").unwrap();
    assert_eq!(tok.token_to_piece(the, false), b" the");
    assert_eq!(tok.token_to_piece(106, false), b"");
    assert_eq!(tok.token_to_piece(106, true), b"<end_of_turn>");
    assert_eq!(tok.token_to_piece(107, false), b"\n");
    // A character outside the vocabulary comes back through byte tokens.
    let ids = tok.encode("\u{10FFFD}", false, false);
    assert!(
        ids.len() == 4
            && ids
                .iter()
                .all(|&id| tok.token_type(id) == Some(TokenType::Byte))
    );
    assert_eq!(tok.decode(&ids, false), "\u{10FFFD}");
}

/// The plain-data path gives the same tokenizer: metadata → `VocabSpec` → metadata → tokenizer.
#[test]
fn spec_round_trip_on_the_real_vocabulary() {
    let file = hearth_gguf::GgufFile::open(common::gemma_model()).unwrap();
    let spec = hearth_tokenizer::VocabSpec::from_metadata(file.metadata()).unwrap();
    assert_eq!(spec.tokens.len(), 262_144);
    assert_eq!(spec.model_name.as_deref(), Some("Gemma 3 270m"));
    let mut md = hearth_gguf::Metadata::new();
    spec.write_metadata(&mut md);
    let rebuilt = Tokenizer::from_gguf(&md).unwrap();
    let from_spec = Tokenizer::from_spec(&spec).unwrap();
    let tok = gemma();
    for c in cases().iter().step_by(3) {
        let want = tok.encode(&c.text, c.add_bos, c.parse_special);
        assert_eq!(rebuilt.encode(&c.text, c.add_bos, c.parse_special), want);
        assert_eq!(from_spec.encode(&c.text, c.add_bos, c.parse_special), want);
    }
    assert_eq!(rebuilt.eog_ids(), tok.eog_ids());
    assert_eq!(rebuilt.special_ids(), tok.special_ids());
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    let tok = gemma();
    let want = tok.encode("Hello from a thread", true, false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| assert_eq!(tok.encode("Hello from a thread", true, false), want));
        }
    });
}
