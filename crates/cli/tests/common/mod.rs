//! Helpers shared by the CLI's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub fn hearth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .output()
        .expect("running hearth")
}

/// Runs hearth, requires success, and parses stdout as JSON.
pub fn stdout_json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "hearth failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("stdout is JSON")
}

pub fn hearth_json(args: &[&str]) -> Value {
    let o = hearth(args);
    assert!(
        o.status.success(),
        "hearth {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("hearth {args:?}: stdout is not JSON: {e}"))
}

/// A path under the repository's `tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

pub fn fixture_json(rel: &str) -> Value {
    let p = fixture(rel);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

/// The default model, as `scripts/fetch-model` caches it.
pub fn default_model() -> String {
    let home = std::env::var_os("HEARTH_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/hearth"));
    let p = home.join("models/gemma-3-270m-q4_k_m.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-model (scripts/test does)",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hearth-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}
