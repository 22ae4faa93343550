//! Test assets: located where the project's fetch scripts put them. A missing asset fails the
//! test with the script to run; nothing is skipped silently.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hearth_tokenizer::Tokenizer;

pub fn hearth_home() -> PathBuf {
    match std::env::var_os("HEARTH_HOME") {
        Some(h) => PathBuf::from(h),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is not set (or set HEARTH_HOME)");
            PathBuf::from(home).join(".cache/hearth")
        }
    }
}

fn require(path: PathBuf, script: &str) -> PathBuf {
    assert!(
        path.is_file(),
        "test asset {} is missing: run `{script}` (it honours HEARTH_HOME)",
        path.display()
    );
    path
}

/// `ggml-vocab-<family>.gguf` from llama.cpp's test vocabularies.
pub fn vocab_file(family: &str) -> PathBuf {
    let dir = hearth_home().join("test-assets/llama.cpp-0.3.36/vocab");
    let path = dir.join(format!("ggml-vocab-{family}.gguf"));
    for p in [path.clone(), with_ext(&path, "inp"), with_ext(&path, "out")] {
        require(p, "scripts/fetch-test-assets");
    }
    path
}

/// The Gemma 3 270M model (its vocabulary is read from the metadata only).
pub fn gemma_model() -> PathBuf {
    require(
        hearth_home().join("models/gemma-3-270m-q4_k_m.gguf"),
        "scripts/fetch-model",
    )
}

/// `tests/fixtures/tokenizer/` of the workspace.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tokenizer")
        .join(name)
}

fn with_ext(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Reads `<vocab>.inp`/`.out` as llama.cpp's `test-tokenizer-0` does: inputs are separated by
/// `"\n__ggml_vocab_test__\n"`, outputs are one line of space-separated ids per input.
pub fn read_vectors(inp: &Path, out: &Path) -> Vec<(String, Vec<u32>)> {
    let raw = std::fs::read_to_string(inp).unwrap_or_else(|e| panic!("{}: {e}", inp.display()));
    let expected =
        std::fs::read_to_string(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos..].find(SEP) {
            Some(i) => {
                inputs.push(raw[pos..pos + i].to_string());
                pos += i + SEP.len();
            }
            None => {
                inputs.push(raw[pos..].to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = expected
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{}: inputs and outputs differ in count",
        inp.display()
    );
    inputs.into_iter().zip(outputs).collect()
}

/// Encodes every vector (add_special = false, parse_special = false); returns (passed, total) and
/// prints the failures.
pub fn score(name: &str, tok: &Tokenizer, cases: &[(String, Vec<u32>)]) -> (usize, usize) {
    let mut passed = 0;
    for (text, want) in cases {
        let got = tok.encode(text, false, false);
        if &got == want {
            passed += 1;
        } else {
            eprintln!("{name}: {text:?}\n  want {want:?}\n  got  {got:?}");
        }
    }
    println!("{name}: {passed}/{} vectors", cases.len());
    (passed, cases.len())
}

pub fn load_family(family: &str) -> (Tokenizer, Vec<(String, Vec<u32>)>) {
    let path = vocab_file(family);
    let tok = Tokenizer::from_gguf_file(&path).unwrap_or_else(|e| panic!("{family}: {e}"));
    let cases = read_vectors(&with_ext(&path, "inp"), &with_ext(&path, "out"));
    (tok, cases)
}
