use std::collections::BTreeMap;

use hearth_gguf::{Array, Metadata, Value};
use serde_json::Value as Json;

use super::*;

/// A small SentencePiece-style vocabulary: unk, bos, eos, 256 byte tokens, then words.
fn test_vocab(n: usize) -> Vocab {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    tokens.extend((0..256).map(|b| format!("<0x{b:02X}>")));
    let mut i = 0;
    while tokens.len() < n {
        tokens.push(format!("▁w{i}"));
        i += 1;
    }
    let types: Vec<i32> = (0..n)
        .map(|i| {
            if i < 3 {
                3
            } else if i < 259 {
                6
            } else {
                1
            }
        })
        .collect();
    let mut m = Metadata::new();
    m.set("tokenizer.ggml.model", "llama");
    m.set("tokenizer.ggml.tokens", tokens);
    m.set(
        "tokenizer.ggml.scores",
        (0..n).map(|i| -(i as f32)).collect::<Vec<_>>(),
    );
    m.set("tokenizer.ggml.token_type", types);
    m.set("tokenizer.ggml.bos_token_id", 1u32);
    m.set("tokenizer.ggml.eos_token_id", 2u32);
    m.set("tokenizer.ggml.unknown_token_id", 0u32);
    m.set("tokenizer.ggml.add_bos_token", true);
    Vocab::from_metadata(&m, None).unwrap()
}

fn layouts() -> BTreeMap<String, Json> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/synth/llama_cpp_layouts.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// gguf-py's name for a value type.
fn py_type_name(t: hearth_gguf::ValueType) -> String {
    use hearth_gguf::ValueType::*;
    match t {
        F32 => "FLOAT32".into(),
        F64 => "FLOAT64".into(),
        Bool | String | Array => t.name().to_uppercase(),
        U8 | U16 | U32 | U64 => format!("UINT{}", &t.name()[1..]),
        I8 | I16 | I32 | I64 => format!("INT{}", &t.name()[1..]),
    }
}

fn type_name(t: GgmlType) -> String {
    t.name().to_uppercase()
}

/// Tensor names, shapes and types, and hyperparameter keys, as llama.cpp's own tools wrote them for
/// the shared fixtures (gguf-py for F16, llama-quantize for the rest).
#[test]
fn tiny_models_match_llama_cpp_layouts() {
    let vocab = test_vocab(1024);
    for (name, want) in layouts() {
        let (arch, ty) = name.split_once('-').unwrap();
        let opts = SynthOptions {
            config: Config::preset(arch.parse().unwrap(), Preset::Tiny),
            file_type: ty.parse().unwrap(),
            seed: 1,
            threads: 2,
            pure: false,
        };
        let w = synthesize(&opts, &vocab, &|_, _| {}).unwrap();
        let mut bytes = Vec::new();
        w.write(&mut bytes).unwrap();
        let f = GgufFile::from_bytes(bytes).unwrap();

        let got: Vec<(String, Vec<u64>, String)> = f
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.dims.clone(), type_name(t.ty)))
            .collect();
        let mut expected: Vec<(String, Vec<u64>, String)> = want["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let dims = t[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect();
                (
                    t[0].as_str().unwrap().to_string(),
                    dims,
                    t[2].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        expected.sort();
        assert_eq!(
            got_sorted, expected,
            "{name}: tensors differ from llama.cpp's"
        );

        for (k, v) in want["kv"].as_object().unwrap() {
            let ours = f
                .metadata()
                .get(k)
                .unwrap_or_else(|| panic!("{name}: key {k} missing"));
            assert_eq!(
                py_type_name(ours.value_type()),
                v[0].as_str().unwrap(),
                "{name}: type of {k}"
            );
            let same = match ours {
                Value::String(s) => v[1].as_str() == Some(s),
                Value::F32(x) => (v[1].as_f64().unwrap() as f32) == *x,
                other => other.as_u64() == v[1].as_u64(),
            };
            assert!(same, "{name}: {k} = {ours}, llama.cpp has {}", v[1]);
        }
    }
}

#[test]
fn weights_are_deterministic_in_the_seed() {
    let vocab = test_vocab(300);
    let mk = |seed| {
        let opts = SynthOptions {
            config: Config::preset(Arch::Llama, Preset::Tiny),
            file_type: FileType::Q8_0,
            seed,
            threads: 2,
            pure: false,
        };
        let mut b = Vec::new();
        synthesize(&opts, &vocab, &|_, _| {})
            .unwrap()
            .write(&mut b)
            .unwrap();
        b
    };
    assert_eq!(mk(7), mk(7));
    assert_ne!(mk(7), mk(8));
}

#[test]
fn vocab_truncation_keeps_ids_and_merges_consistent() {
    let mut m = Metadata::new();
    let tokens: Vec<String> = ["a", "b", "ab", "c", "abc", "<eos>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    m.set("tokenizer.ggml.model", "gpt2");
    m.set("tokenizer.ggml.tokens", tokens);
    m.set("tokenizer.ggml.token_type", vec![1i32, 1, 1, 1, 1, 3]);
    m.set(
        "tokenizer.ggml.merges",
        vec!["a b".to_string(), "ab c".to_string()],
    );
    m.set("tokenizer.ggml.bos_token_id", 0u32);
    m.set("tokenizer.ggml.eos_token_id", 5u32);
    let v = Vocab::from_metadata(&m, Some(4)).unwrap();
    let get = |k: &str| {
        v.entries
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("tokenizer.ggml.merges"),
        Some(Value::Array(Array::String(vec!["a b".into()])))
    );
    assert_eq!(
        get("tokenizer.ggml.token_type")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert!(get("tokenizer.ggml.eos_token_id").is_none());
    assert!(get("tokenizer.ggml.bos_token_id").is_some());
    assert!(Vocab::from_metadata(&m, Some(7)).is_err());
    assert!(Vocab::from_metadata(&m, Some(0)).is_err());
}

#[test]
fn bad_configs_are_usage_errors() {
    let mut c = Config::preset(Arch::Llama, Preset::Tiny);
    c.n_head_kv = 3;
    let opts = SynthOptions {
        config: c,
        file_type: FileType::F16,
        seed: 1,
        threads: 1,
        pure: false,
    };
    assert!(matches!(
        synthesize(&opts, &test_vocab(300), &|_, _| {}),
        Err(SynthError::Usage(_))
    ));
    assert!("mamba".parse::<Arch>().is_err());
    assert!("Q3_K_XL".parse::<FileType>().is_err());
    assert_eq!("q4_k_m".parse::<FileType>().unwrap(), FileType::Q4KM);
}
