//! The API on small hand-made vocabularies: building from plain data and from metadata, errors
//! for bad metadata, special-token handling, decoding.

use hearth_gguf::{GgufError, GgufFile, GgufWriter, Metadata, keys};
use hearth_tokenizer::{
    DecodeOptions, SpecialIds, TokenType, Tokenizer, TokenizerError, TokenizerModel, VocabSpec,
};

/// A SentencePiece vocabulary: specials, all 256 byte tokens, then scored pieces.
fn spm_spec(pieces: &[(&str, f32, TokenType)]) -> VocabSpec {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut scores = vec![0.0; 3];
    let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(TokenType::Byte);
    }
    for &(text, score, ty) in pieces {
        tokens.push(text.to_string());
        scores.push(score);
        types.push(ty);
    }
    VocabSpec {
        model: "llama".into(),
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        ..VocabSpec::default()
    }
}

fn piece_ids(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&id| tok.token_text(id).unwrap().to_string())
        .collect()
}

#[test]
fn spm_merges_by_score_with_byte_fallback() {
    use TokenType::Normal;
    let spec = spm_spec(&[
        ("▁", -1.0, Normal),
        ("a", -1.0, Normal),
        ("b", -1.0, Normal),
        ("c", -1.0, Normal),
        ("ab", -2.0, Normal),
        ("bc", -1.5, Normal),
        ("▁a", -3.0, Normal),
    ]);
    let tok = Tokenizer::from_spec(&spec).unwrap();
    assert_eq!(tok.model(), TokenizerModel::Spm);
    assert_eq!(
        (tok.bos(), tok.eos(), tok.unk()),
        (Some(1), Some(2), Some(0))
    );
    assert!(tok.adds_bos());
    // "▁abc": "bc" (-1.5) beats "ab" (-2) and "▁a" (-3); then "▁a" merges.
    let ids = tok.encode("abc", true, false);
    assert_eq!(ids[0], 1);
    assert_eq!(piece_ids(&tok, &ids[1..]), ["▁a", "bc"]);
    // "é" is not a piece: its two UTF-8 bytes come out as byte tokens.
    let ids = tok.encode("é", false, false);
    assert_eq!(piece_ids(&tok, &ids), ["▁", "<0xC3>", "<0xA9>"]);
    assert_eq!(tok.decode(&ids, false), "é");
    // The prefix space is dropped again on decoding (llama.cpp's `remove_space`).
    assert_eq!(tok.decode(&tok.encode("a b", false, false), false), "a b");
}

#[test]
fn merging_never_produces_control_tokens() {
    use TokenType::{Control, Normal};
    let mut spec = spm_spec(&[
        ("a", -1.0, Normal),
        ("b", -1.0, Normal),
        ("ab", 10.0, Control),
    ]);
    spec.add_space_prefix = Some(false);
    let tok = Tokenizer::from_spec(&spec).unwrap();
    let ab = tok.token_id("ab").unwrap();
    assert_eq!(piece_ids(&tok, &tok.encode("ab", false, false)), ["a", "b"]);
    assert_eq!(tok.encode("ab", false, true), [ab]);
}

#[test]
fn user_defined_tokens_match_without_parse_special() {
    use TokenType::{Control, Normal, UserDefined};
    let mut spec = spm_spec(&[
        ("x", -1.0, Normal),
        ("  ", 0.0, UserDefined),
        ("\n", 0.0, UserDefined),
        ("<turn>", 0.0, Control),
    ]);
    spec.add_space_prefix = Some(false);
    let tok = Tokenizer::from_spec(&spec).unwrap();
    let ids = tok.encode("x  x\n<turn>", false, false);
    let pieces = piece_ids(&tok, &ids);
    assert_eq!(&pieces[..4], ["x", "  ", "x", "\n"]);
    assert!(!pieces.contains(&"<turn>".to_string()));
    let ids = tok.encode("x\n<turn>", false, true);
    assert_eq!(piece_ids(&tok, &ids), ["x", "\n", "<turn>"]);
}

/// With no `<0xNN>` tokens, llama.cpp's byte fallback has nothing to use; we emit the unknown token.
#[test]
fn missing_byte_tokens_fall_back_to_unknown() {
    let spec = VocabSpec {
        model: "llama".into(),
        tokens: ["<unk>", "<s>", "</s>", "▁", "a"]
            .map(String::from)
            .to_vec(),
        scores: Some(vec![0.0; 5]),
        ..VocabSpec::default()
    };
    let tok = Tokenizer::from_spec(&spec).unwrap();
    assert_eq!(tok.encode("a€", false, false), [3, 4, 0, 0, 0]);
}

/// A byte-level BPE vocabulary: the 256 byte characters plus merged tokens.
fn bpe_spec(pre: &str, merges: &[&str], extra: &[(&str, TokenType)]) -> VocabSpec {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut types = vec![TokenType::Normal; 256];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(TokenType::Normal);
    }
    for &(t, ty) in extra {
        tokens.push(t.to_string());
        types.push(ty);
    }
    VocabSpec {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens,
        token_types: Some(types),
        merges: Some(merges.iter().map(|m| m.to_string()).collect()),
        ..VocabSpec::default()
    }
}

/// GPT-2's byte alphabet, written out independently of the crate.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

#[test]
fn bpe_merges_by_rank() {
    let spec = bpe_spec(
        "gpt-2",
        &["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or"],
        &[("<|endoftext|>", TokenType::Control)],
    );
    let tok = Tokenizer::from_spec(&spec).unwrap();
    assert_eq!(tok.model(), TokenizerModel::Bpe);
    assert_eq!(tok.n_merges(), 7);
    let ids = tok.encode("hello world!", false, false);
    assert_eq!(piece_ids(&tok, &ids), ["hello", "Ġwor", "l", "d", "!"]);
    assert_eq!(tok.decode(&ids, false), "hello world!");
    // `<|endoftext|>` was detected as end of generation; as text it stays text.
    let eot = tok.token_id("<|endoftext|>").unwrap();
    assert!(tok.is_eog(eot));
    assert!(!tok.encode("<|endoftext|>", false, false).contains(&eot));
    assert_eq!(tok.encode("<|endoftext|>", false, true), [eot]);
    // GPT-2 vocabularies default to id 11 for BOS/EOS and add neither.
    assert!(!tok.adds_bos() && !tok.adds_eos());
}

/// llama.cpp's `clean_spaces` post-processing applies to GPT-2 style vocabularies.
#[test]
fn detokenizer_cleans_spaces_like_llama_cpp() {
    let spec = bpe_spec("gpt-2", &[], &[]);
    let tok = Tokenizer::from_spec(&spec).unwrap();
    let ids = tok.encode("a , b ' c 's d 't", false, false);
    assert_eq!(tok.decode(&ids, false), "a, b'c's d 't");
    // qwen2 keeps the text as is.
    let tok = Tokenizer::from_spec(&bpe_spec("qwen2", &[], &[])).unwrap();
    let ids = tok.encode("a , b ' c", false, false);
    assert_eq!(tok.decode(&ids, false), "a , b ' c");
}

#[test]
fn remove_special_drops_added_bos_and_eos() {
    let mut spec = spm_spec(&[("▁a", -1.0, TokenType::Normal)]);
    spec.add_eos = Some(true);
    let tok = Tokenizer::from_spec(&spec).unwrap();
    let ids = tok.encode("a", true, false);
    assert_eq!(ids, [1, tok.token_id("▁a").unwrap(), 2]);
    let opts = DecodeOptions {
        remove_special: true,
        unparse_special: true,
    };
    // With the BOS removed, llama.cpp keeps the first piece's space.
    assert_eq!(tok.decode_with(&ids, opts), b" a");
    assert_eq!(tok.decode(&ids, true), "<s> a</s>");
    assert_eq!(tok.decode(&ids, false), " a");
}

#[test]
fn metadata_round_trip() {
    let mut spec = bpe_spec(
        "llama-bpe",
        &["a b", "ab c"],
        &[("<|eot_id|>", TokenType::Control)],
    );
    spec.special = SpecialIds {
        bos: Some(0),
        eos: Some(1),
        ..SpecialIds::default()
    };
    spec.add_bos = Some(false);
    let mut w = GgufWriter::new();
    w.set(keys::ARCHITECTURE, "llama");
    spec.write_metadata(&mut w.metadata);
    let mut bytes = Vec::new();
    w.write(&mut bytes).unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(
        VocabSpec::from_metadata(file.metadata()).unwrap().tokens,
        spec.tokens
    );
    let from_file = Tokenizer::from_gguf(file.metadata()).unwrap();
    let from_spec = Tokenizer::from_spec(&spec).unwrap();
    for text in ["abc abcab", "<|eot_id|>x", ""] {
        for parse in [false, true] {
            assert_eq!(
                from_file.encode(text, true, parse),
                from_spec.encode(text, true, parse)
            );
        }
    }
    assert_eq!(from_file.bos(), Some(0));
    assert!(!from_file.adds_bos());
    assert_eq!(from_file.eot(), from_file.token_id("<|eot_id|>"));
}

fn meta(f: impl FnOnce(&mut Metadata)) -> Metadata {
    let mut md = Metadata::new();
    spm_spec(&[]).write_metadata(&mut md);
    f(&mut md);
    md
}

#[test]
fn errors_name_the_key_or_value() {
    let err = |md: Metadata| Tokenizer::from_gguf(&md).unwrap_err();

    let e = err(meta(|md| {
        md.remove(keys::TOKENIZER_MODEL);
    }));
    assert!(e.to_string().contains(keys::TOKENIZER_MODEL), "{e}");

    let e = err(meta(|md| md.set(keys::TOKENIZER_MODEL, "t5")));
    assert!(
        matches!(e, TokenizerError::UnsupportedModel(ref m) if m == "t5"),
        "{e}"
    );

    let bpe = |pre: &str| {
        let mut md = Metadata::new();
        bpe_spec(pre, &[], &[]).write_metadata(&mut md);
        md
    };
    let e = err(bpe("no-such-pre"));
    assert!(e.to_string().contains("\"no-such-pre\""), "{e}");
    let e = err(bpe("kimi-k2"));
    assert!(matches!(e, TokenizerError::UnsupportedPre { .. }), "{e}");

    let mut md = bpe("gpt-2");
    md.remove(keys::TOKENIZER_MERGES);
    assert!(matches!(err(md), TokenizerError::MissingMerges));

    let e = err(meta(|md| md.set(keys::TOKENIZER_SCORES, vec![0.0f32; 5])));
    assert!(e.to_string().contains(keys::TOKENIZER_SCORES), "{e}");

    let e = err(meta(|md| md.set(keys::TOKENIZER_TOKEN_TYPE, vec![1i32; 5])));
    assert!(e.to_string().contains(keys::TOKENIZER_TOKEN_TYPE), "{e}");

    let e = err(meta(|md| md.set(keys::TOKENIZER_TOKENS, vec![1i32, 2])));
    assert!(
        matches!(e, TokenizerError::Metadata(GgufError::WrongType { ref key, .. }) if key == keys::TOKENIZER_TOKENS),
        "{e}"
    );

    let e = err(meta(|md| {
        md.set(keys::TOKENIZER_TOKENS, Vec::<String>::new())
    }));
    assert!(matches!(e, TokenizerError::EmptyVocab), "{e}");

    let e = err(meta(|md| {
        md.set(
            keys::TOKENIZER_TOKENS,
            vec!["a".to_string(), "a".to_string()],
        );
        md.remove(keys::TOKENIZER_SCORES);
        md.remove(keys::TOKENIZER_TOKEN_TYPE);
    }));
    assert!(
        matches!(
            e,
            TokenizerError::DuplicateToken {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{e}"
    );

    let e = err(meta(|md| md.set(keys::TOKENIZER_ADD_BOS, "yes")));
    assert!(e.to_string().contains(keys::TOKENIZER_ADD_BOS), "{e}");
}

#[test]
fn special_ids_out_of_range_are_ignored() {
    let md = meta(|md| {
        md.set(keys::TOKENIZER_BOS_ID, 1_000_000u32);
        md.set(keys::TOKENIZER_EOS_ID, -1i32);
        md.set(keys::TOKENIZER_PAD_ID, 2u32);
    });
    let tok = Tokenizer::from_gguf(&md).unwrap();
    // Out of range: the SentencePiece default stays; negative: no such key.
    assert_eq!(
        (tok.bos(), tok.eos(), tok.pad()),
        (Some(1), Some(2), Some(2))
    );
}
