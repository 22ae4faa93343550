//! End-to-end tests of the `hearth` binary: exit codes, output formats, and the default model.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;

#[test]
fn inspect_lists_every_tensor_of_the_default_model_like_gguf_py() {
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("gemma3-270m/tensors_gguf_py.json")).unwrap(),
    )
    .unwrap();
    let got = stdout_json(&hearth(&["inspect", "--json", &default_model()]));
    let (got, want) = (
        got["tensors"].as_array().unwrap(),
        want["tensors"].as_array().unwrap(),
    );
    assert_eq!(got.len(), 236);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["name"], w["name"]);
        assert_eq!(
            g["type"].as_str().unwrap().to_uppercase(),
            w["type"].as_str().unwrap().to_uppercase(),
            "{}",
            g["name"]
        );
        // gguf-py lists shapes in ggml order too.
        assert_eq!(g["shape"], w["shape"], "{}", g["name"]);
        assert_eq!(g["bytes"], w["bytes"], "{}", g["name"]);
    }
    // The name resolves to the same file, and the table form works.
    let o = hearth(&["inspect", "gemma3-270m"]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success());
    assert!(
        text.contains("gemma3.block_count")
            && text.contains("236 tensors")
            && text.contains("blk.17.ffn_down.weight")
    );
}

#[test]
fn inspect_reports_bad_files_with_exit_code_1() {
    let p = tmp("garbage.gguf");
    std::fs::write(&p, b"definitely not a model file").unwrap();
    let o = hearth(&["inspect", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("garbage.gguf") && err.contains("not a GGUF file"),
        "{err}"
    );

    let o = hearth(&["inspect", "/no/such/model.gguf"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such file"));

    // Usage errors are clap's exit code 2.
    assert_eq!(hearth(&["inspect"]).status.code(), Some(2));
}

#[test]
fn tokenize_prints_ids_and_pieces_like_llama_tokenize() {
    let m = default_model();
    assert_eq!(
        stdout_json(&hearth(&["tokenize", "-m", &m, "Hello world"])),
        serde_json::json!([2, 9259, 1902])
    );
    assert_eq!(
        stdout_json(&hearth(&[
            "tokenize",
            "-m",
            &m,
            "--no-bos",
            "--ids",
            "Hello world"
        ])),
        serde_json::json!([9259, 1902])
    );
    assert_eq!(
        stdout_json(&hearth(&[
            "tokenize",
            "-m",
            &m,
            "--no-bos",
            "--pieces",
            "Hello world"
        ])),
        serde_json::json!(["Hello", " world"])
    );
    // Control-token text stays text unless --parse-special.
    let plain = stdout_json(&hearth(&[
        "tokenize",
        "-m",
        &m,
        "--no-bos",
        "<start_of_turn>user",
    ]));
    let special = stdout_json(&hearth(&[
        "tokenize",
        "-m",
        &m,
        "--no-bos",
        "--parse-special",
        "<start_of_turn>user",
    ]));
    assert_eq!(special[0], 105);
    assert!(!plain.as_array().unwrap().contains(&Value::from(105)));
    let o = hearth(&["tokenize", "-m", &m]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn synth_writes_a_model_that_reads_back_and_tokenizes() {
    let out = tmp("synth-qwen3-q4km.gguf");
    let o = hearth(&[
        "synth",
        "--arch",
        "qwen3",
        "--preset",
        "tiny",
        "--type",
        "Q4_K_M",
        "--vocab",
        &default_model(),
        "--n-vocab",
        "4096",
        "--seed",
        "3",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info = stdout_json(&hearth(&["inspect", "--json", out.to_str().unwrap()]));
    assert_eq!(info["metadata"]["general.architecture"], "qwen3");
    assert_eq!(info["metadata"]["qwen3.block_count"], 2);
    let types: Vec<&str> = info["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"q4_K") && types.contains(&"q6_K") && types.contains(&"f32"));
    assert_eq!(info["tensors"][0]["shape"], serde_json::json!([256, 4096]));
    // The copied vocabulary tokenizes.
    let ids = stdout_json(&hearth(&["tokenize", "-m", out.to_str().unwrap(), "Hello"]));
    assert_eq!(ids[0], 2);

    let bad = hearth(&["synth", "--arch", "mamba", "-o", out.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
}

/// Mixtral-style experts in a llama file: the preset writes them with the model's FFN size and
/// no separate expert size (as Mixtral files are), `inspect` and `bench` count the parameters a
/// token reads, the model runs, and experts on an architecture without them are refused.
#[test]
fn synth_mixtral_preset_and_active_parameters() {
    let out = tmp("synth-mixtral.gguf");
    let path = out.to_str().unwrap();
    let o = hearth(&[
        "synth",
        "--arch",
        "llama",
        "--preset",
        "mixtral",
        "--type",
        "Q8_0",
        "--vocab",
        &default_model(),
        "--n-vocab",
        "1024",
        "-o",
        path,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info = stdout_json(&hearth(&["inspect", "--json", path]));
    let md = &info["metadata"];
    assert_eq!(
        (
            md["llama.expert_count"].as_u64(),
            md["llama.expert_used_count"].as_u64()
        ),
        (Some(8), Some(2))
    );
    assert!(md.get("llama.expert_feed_forward_length").is_none());
    let names: Vec<&str> = info["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"blk.1.ffn_down_exps.weight") && !names.contains(&"blk.0.ffn_up.weight")
    );
    // 8 experts of 3 × 256 × 256 in each of 2 layers, of which a token reads 2.
    let experts = 2 * 8 * 3 * 256 * 256u64;
    let (total, active) = (
        info["totals"]["parameters"].as_u64().unwrap(),
        info["totals"]["active_parameters"].as_u64().unwrap(),
    );
    assert_eq!(total - active, experts / 8 * 6);
    let rows = stdout_json(&hearth(&[
        "bench",
        "-m",
        path,
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "1",
        "--ttft-prompt",
        "0",
        "--json",
    ]));
    assert_eq!(rows[0]["model_n_params"].as_u64(), Some(total));
    assert_eq!(rows[0]["model_n_params_active"].as_u64(), Some(active));
    let text = String::from_utf8(hearth(&["inspect", path]).stdout).unwrap();
    assert!(text.contains("active per token"), "{text}");
    let o = hearth(&[
        "run", "-m", path, "--raw", "-n", "4", "--temp", "0", "Hello",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let bad = hearth(&[
        "synth", "--arch", "qwen3", "--preset", "mixtral", "-o", path,
    ]);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no experts"));
}

/// Asserts that a run failed with exit code 1 and an error that mentions `want`.
fn fails_with(o: &Output, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{want}: {err}");
    assert!(err.contains(want), "{want}: {err}");
}

/// A fixture's path as a string (for command lines).
fn fixture_str(rel: &str) -> String {
    fixture(rel).to_str().unwrap().to_string()
}

fn stderr_line(o: &Output, prefix: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    err.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {err}"))
        .to_string()
}

#[test]
fn run_wraps_the_prompt_in_the_chat_template_and_never_parses_user_text_as_control_tokens() {
    let m = default_model();
    let o = hearth(&[
        "run",
        "-m",
        &m,
        "-n",
        "4",
        "--temp",
        "0",
        "--verbose-prompt",
        "Say <end_of_turn> hi",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ids: Vec<u32> = serde_json::from_str(&stderr_line(&o, "hearth: prompt ids: ")).unwrap();
    // <bos> <start_of_turn> user \n ... <end_of_turn> \n <start_of_turn> model \n: exactly one 106 (the
    // template's own), two 105s, and one BOS.
    assert_eq!(ids[0], 2);
    assert_eq!(ids.iter().filter(|&&t| t == 106).count(), 1, "{ids:?}");
    assert_eq!(ids.iter().filter(|&&t| t == 105).count(), 2, "{ids:?}");
    assert_eq!(ids.iter().filter(|&&t| t == 2).count(), 1, "{ids:?}");
    let pieces: Vec<String> =
        serde_json::from_str(&stderr_line(&o, "hearth: prompt pieces: ")).unwrap();
    assert_eq!(
        pieces.concat(),
        "<bos><start_of_turn>user\nSay <end_of_turn> hi<end_of_turn>\n<start_of_turn>model\n"
    );

    // --raw parses special-token text unless told not to.
    let o = hearth(&[
        "run",
        "-m",
        &m,
        "--raw",
        "-n",
        "1",
        "--verbose-prompt",
        "<start_of_turn>user",
    ]);
    let ids: Vec<u32> = serde_json::from_str(&stderr_line(&o, "hearth: prompt ids: ")).unwrap();
    assert_eq!(&ids[..2], &[2, 105]);
    let o = hearth(&[
        "run",
        "-m",
        &m,
        "--raw",
        "--no-parse-special",
        "-n",
        "1",
        "--verbose-prompt",
        "<start_of_turn>user",
    ]);
    let ids: Vec<u32> = serde_json::from_str(&stderr_line(&o, "hearth: prompt ids: ")).unwrap();
    assert!(!ids.contains(&105));
}

#[test]
fn run_is_reproducible_with_a_seed_and_stops_at_stop_strings() {
    let m = default_model();
    let sample = |seed: &str| {
        let o = hearth(&[
            "run",
            "-m",
            &m,
            "--raw",
            "-n",
            "12",
            "--temp",
            "1.0",
            "--seed",
            seed,
            "--output-ids",
            "Once upon a time",
        ]);
        stdout_json(&o)
    };
    assert_eq!(sample("5"), sample("5"));
    assert_ne!(sample("5"), sample("6"));
    let o = hearth(&[
        "run",
        "-m",
        &m,
        "--raw",
        "-n",
        "32",
        "--temp",
        "0",
        "--stop",
        "France.",
        "The capital of France is",
    ]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.trim_end(), " the capital of the country of");
}

#[test]
fn generation_errors_are_clear() {
    let m = default_model();
    let long = "word ".repeat(100);
    let o = hearth(&["run", "-m", &m, "--raw", "-c", "32", &long]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("context") && err.contains("-c"), "{err}");

    let o = hearth(&["run", "-m", &m, "--top-p", "1.5", "hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("top-p"));

    // A model of an architecture the engine does not run names it: a synthetic llama whose
    // `general.architecture` value is rewritten in place (same length).
    let llama = std::fs::read(fixture("synthetic/synth-llama-q4_0.gguf")).unwrap();
    let key = b"general.architecture";
    let at = llama
        .windows(key.len())
        .position(|w| w == key)
        .expect("the key is in the file")
        + key.len();
    // u32 type (string), u64 length 5, then the value.
    assert_eq!(&llama[at + 12..at + 17], b"llama");
    let mut other = llama.clone();
    other[at + 12..at + 17].copy_from_slice(b"falcn");
    let odd = tmp("odd-arch.gguf");
    std::fs::write(&odd, other).unwrap();
    let o = hearth(&["run", "-m", odd.to_str().unwrap(), "hi"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("falcn") && err.contains("odd-arch.gguf"),
        "{err}"
    );

    // A file that is not a model.
    let p = tmp("notes.txt");
    std::fs::write(&p, "hello").unwrap();
    let o = hearth(&["run", "-m", p.to_str().unwrap(), "hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a GGUF file"));
}

#[test]
fn chat_answers_each_line_and_keeps_the_conversation() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["chat", "-m", &default_model(), "-n", "8", "--temp", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello!\nWhat did I just say?\n/exit\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.lines().filter(|l| !l.trim().is_empty()).count() >= 2,
        "{out:?}"
    );
}

#[test]
fn bench_prints_llama_bench_fields_with_positive_rates() {
    let m = fixture("synthetic/synth-llama-q4_0.gguf");
    let m = m.to_str().unwrap();
    let args = [
        "bench", "-m", m, "-p", "16", "-n", "4", "-r", "2", "-t", "1",
    ];
    let v = stdout_json(&hearth(&[&args[..], &["--json"]].concat()));
    let rows = v.as_array().expect("a JSON array");
    let tests: Vec<&str> = rows.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["pp16", "tg4", "ttft32"]);
    for r in rows {
        for k in [
            "model_filename",
            "model_type",
            "model_size",
            "model_n_params",
            "n_threads",
            "n_prompt",
            "n_gen",
            "test_time",
            "avg_ns",
            "stddev_ns",
            "avg_ts",
            "stddev_ts",
            "samples_ns",
            "samples_ts",
            "peak_rss_bytes",
        ] {
            assert!(r.get(k).is_some(), "{k} missing from {r}");
        }
        assert_eq!(r["n_threads"], 1);
        assert!(r["model_size"].as_u64().unwrap() > 0);
        assert!(r["model_n_params"].as_u64().unwrap() > 0);
        assert!(r["avg_ns"].as_u64().unwrap() > 0);
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0);
        assert!(r["stddev_ts"].as_f64().unwrap() >= 0.0);
        let ts = r["samples_ts"].as_array().unwrap();
        assert_eq!(ts.len(), 2, "one sample per repetition, warm-up left out");
        assert_eq!(r["samples_ns"].as_array().unwrap().len(), 2);
        assert!(ts.iter().all(|x| x.as_f64().unwrap() > 0.0));
        let t = r["test_time"].as_str().unwrap();
        assert!(
            t.len() == 20 && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
        if cfg!(target_os = "linux") {
            assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0);
        }
    }
    assert_eq!(
        (rows[0]["n_prompt"].as_u64(), rows[0]["n_gen"].as_u64()),
        (Some(16), Some(0))
    );
    assert_eq!(
        (rows[1]["n_prompt"].as_u64(), rows[1]["n_gen"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(rows[2]["n_prompt"], 32);
    assert!(rows[2]["ttft_ms"].as_f64().unwrap() > 0.0);

    // The table: llama-bench's columns, one row per pp/tg test, then TTFT and peak memory.
    let o = hearth(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let header = out.lines().next().unwrap();
    for col in ["model", "size", "params", "threads", "test", "t/s"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(out.lines().any(|l| l.contains(" pp16 |")), "{out}");
    assert!(out.lines().any(|l| l.contains(" tg4 |")), "{out}");
    assert!(
        out.contains("time to first token (32-token prompt"),
        "{out}"
    );
    assert!(out.contains("peak resident memory"), "{out}");
}

#[test]
fn bench_rejects_bad_arguments() {
    let m = fixture("synthetic/synth-llama-q4_0.gguf");
    let m = m.to_str().unwrap();
    let o = hearth(&["bench", "-m", m, "-p", "abc"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("abc"));

    let o = hearth(&["bench", "-m", m, "-r", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("-r 0"));

    let o = hearth(&["bench", "-m", m, "-t", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("-t 0"));

    let o = hearth(&["bench", "-m", m, "-p", "0", "-n", "0", "--ttft-prompt", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to measure"));

    let o = hearth(&["bench", "-m", m, "-p", "100000", "-n", "0", "-r", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("context"));

    let missing = tmp("no-such-model.gguf");
    let o = hearth(&["bench", "-m", missing.to_str().unwrap(), "-r", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-model.gguf"));
}

/// `--cache-type-k/v` (`--ctk/--ctv`) and `--flash-attn` are accepted by the generating commands;
/// a quantized V without flash attention and unknown types are clear errors.
#[test]
fn kv_cache_types_and_flash_attention_flags() {
    let m = fixture("synthetic/synth-llama-q8_0.gguf");
    let m = m.to_str().unwrap();
    for (k, v) in [("q8_0", "q8_0"), ("q4_0", "f16"), ("f16", "q4_0")] {
        let o = hearth(&[
            "run", "-m", m, "--raw", "-n", "4", "--temp", "0", "--ctk", k, "--ctv", v, "hello",
        ]);
        assert!(
            o.status.success(),
            "{k}/{v}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = hearth(&[
        "run", "-m", m, "--raw", "-n", "4", "--ctv", "q8_0", "--fa", "off", "hi",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("needs flash attention"), "{err}");
    let o = hearth(&["run", "-m", m, "--raw", "-n", "4", "--fa", "off", "hi"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = hearth(&["run", "-m", m, "--cache-type-k", "q5_1", "hi"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("expected f16, q8_0 or q4_0"), "{err}");
}

/// Adapter files that do not fit: another architecture, a base model given as an adapter, a
/// truncated file, a missing file, a bad scale. Each is exit code 1 with a message that says why.
#[test]
fn adapter_errors_are_clear() {
    let llama = fixture("synthetic/synth-llama-f16.gguf");
    let gemma = fixture("synthetic/synth-gemma3-f16.gguf");
    let lora = fixture("adapters/lora-synth-llama-r8.gguf");
    let (llama, gemma, lora) = (
        llama.to_str().unwrap(),
        gemma.to_str().unwrap(),
        lora.to_str().unwrap(),
    );
    let cut = tmp("cut-lora.gguf");
    let bytes = std::fs::read(lora).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let bad_scale = format!("{lora}:nan");
    for (model, adapter, want) in [
        (gemma, lora, "for a llama model, the base model is gemma3"),
        (llama, gemma, "not an adapter"),
        (llama, cut.to_str().unwrap(), "cut-lora.gguf"),
        (llama, "/nonexistent/lora.gguf", "/nonexistent/lora.gguf"),
        (llama, bad_scale.as_str(), "finite"),
    ] {
        let o = hearth(&["logits", "-m", model, "--raw", "--adapter", adapter, "hi"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{adapter}: {err}");
        assert!(err.contains(want), "{adapter}: {err}");
    }
}

#[test]
fn adapters_are_bound_to_their_base() {
    let base = &fixture_str("synthetic/synth-llama-f16.gguf");
    let other = &fixture_str("synthetic/synth-llama-q8_0.gguf");
    let lora = &fixture_str("adapters/lora-synth-llama-r8.gguf");
    let made = tmp("bound-lora.gguf");
    let made = made.to_str().unwrap();
    let o = hearth(&[
        "synth-adapter",
        "-m",
        base,
        "-r",
        "4",
        "--gain",
        "0.5",
        "-o",
        made,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The file records its base, and fits it.
    let o = hearth(&["adapter", "inspect", made, "-m", base, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sha = doc["base_sha256"].as_str().unwrap();
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{doc}"
    );
    assert_eq!(doc["fits"]["ok"], true, "{doc}");
    assert_eq!(doc["matrices"], 7 * 2, "{doc}");

    // On its base: no warning, and the logits move.
    let plain = hearth(&["logits", "-m", base, "--raw", "hello world"]);
    let o = hearth(&[
        "logits",
        "-m",
        base,
        "--raw",
        "--adapter",
        made,
        "hello world",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("warning"), "{err}");
    assert_ne!(o.stdout, plain.stdout);

    // On another base of the same shapes: refused, unless forced (with a warning).
    let o = hearth(&["logits", "-m", other, "--raw", "--adapter", made, "hi"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("made for another base model") && err.contains(sha),
        "{err}"
    );
    let o = hearth(&[
        "logits",
        "-m",
        other,
        "--raw",
        "--adapter",
        made,
        "--force-adapter",
        "hi",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("--force-adapter"),
        "{err}"
    );

    // llama.cpp's files record no base: a warning.
    let o = hearth(&["logits", "-m", base, "--raw", "--adapter", lora, "hi"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("records no base model"),
        "{err}"
    );

    // A changed byte in the tensors breaks the manifest.
    let mut bytes = std::fs::read(made).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x40;
    let bad = tmp("edited-lora.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let o = hearth(&[
        "logits",
        "-m",
        base,
        "--raw",
        "--adapter",
        bad.to_str().unwrap(),
        "hi",
    ]);
    fails_with(&o, "manifest");

    // Unknown targets and ranks are usage errors.
    for (flag, value, want) in [
        ("--targets", "attn_x", "unknown target"),
        ("-r", "0", "rank"),
    ] {
        let o = hearth(&["synth-adapter", "-m", base, flag, value, "-o", made]);
        fails_with(&o, want);
    }
}

/// Writes a PEFT adapter (adapter_config.json + adapter_model.safetensors) holding the tensors
/// of a GGUF-LoRA for a Llama base: the inverse of llama.cpp's conversion (module names, and
/// the q/k rotary permutation undone on lora_B's rows), with `config` as the config.
fn peft_from_gguf(
    gguf: &std::path::Path,
    n_head: usize,
    n_head_kv: usize,
    config: &Value,
    dir: &std::path::Path,
) {
    let file = hearth_gguf::GgufFile::open(gguf).unwrap();
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for t in &file.tensors {
        let start = (file.data_offset + t.offset) as usize;
        let mut bytes = file.bytes()[start..start + t.n_bytes as usize].to_vec();
        let (base, which) = match t.name.strip_suffix(".lora_a") {
            Some(b) => (b, "lora_A"),
            None => (t.name.strip_suffix(".lora_b").unwrap(), "lora_B"),
        };
        let stem = base.strip_suffix(".weight").unwrap();
        let (il, target) = stem.strip_prefix("blk.").unwrap().split_once('.').unwrap();
        let module = match target {
            "attn_q" => "self_attn.q_proj",
            "attn_k" => "self_attn.k_proj",
            "attn_v" => "self_attn.v_proj",
            "attn_output" => "self_attn.o_proj",
            "ffn_gate" => "mlp.gate_proj",
            "ffn_up" => "mlp.up_proj",
            "ffn_down" => "mlp.down_proj",
            other => panic!("{other}"),
        };
        let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
        let heads = match target {
            "attn_q" => n_head,
            "attn_k" => n_head_kv,
            _ => 0,
        };
        if which == "lora_B" && heads > 0 {
            // GGUF row h·2half + 2j + i came from HF row h·2half + i·half + j.
            let (rb, half) = (bytes.len() / rows, rows / heads / 2);
            let mut hf = vec![0u8; bytes.len()];
            for h in 0..heads {
                for i in 0..2 {
                    for j in 0..half {
                        let (g, o) = (h * 2 * half + 2 * j + i, h * 2 * half + i * half + j);
                        hf[o * rb..(o + 1) * rb].copy_from_slice(&bytes[g * rb..(g + 1) * rb]);
                    }
                }
            }
            bytes = hf;
        }
        let name = format!("base_model.model.model.layers.{il}.{module}.{which}.weight");
        header.insert(
            name,
            serde_json::json!({"dtype": "F16", "shape": [rows, cols],
                               "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(&bytes);
    }
    let head = serde_json::to_vec(&Value::Object(header)).unwrap();
    let mut st = (head.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(&head);
    st.extend_from_slice(&data);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), st).unwrap();
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
}

#[test]
fn peft_adapters_convert_to_the_same_gguf_and_logits() {
    let base = fixture("synthetic/synth-llama-f16.gguf");
    let lora = fixture("adapters/lora-synth-llama-r8.gguf");
    let md = hearth_gguf::GgufFile::open(&base).unwrap();
    let heads = |k: &str| md.metadata().opt_u64(k).unwrap().unwrap() as usize;
    let (n_head, n_head_kv) = (
        heads("llama.attention.head_count"),
        heads("llama.attention.head_count_kv"),
    );
    let alpha = hearth_gguf::GgufFile::open(&lora)
        .unwrap()
        .metadata()
        .opt_f32("adapter.lora.alpha")
        .unwrap()
        .unwrap();
    let all = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ];
    let config = serde_json::json!({"peft_type": "LORA", "r": 8, "lora_alpha": alpha,
        "target_modules": all, "use_rslora": false, "bias": "none"});
    let dir = tmp("peft-llama");
    peft_from_gguf(&lora, n_head, n_head_kv, &config, &dir);
    let (base_s, dir_s) = (base.to_str().unwrap(), dir.to_str().unwrap());

    // Converted: the very tensors llama.cpp's converter wrote, and the base recorded.
    let out = tmp("peft-llama.gguf");
    let o = hearth(&[
        "adapter",
        "convert",
        dir_s,
        "-m",
        base_s,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (want, got) = (
        hearth_gguf::GgufFile::open(&lora).unwrap(),
        hearth_gguf::GgufFile::open(&out).unwrap(),
    );
    assert_eq!(got.tensors.len(), want.tensors.len());
    for t in &want.tensors {
        let g = got.tensors.iter().find(|g| g.name == t.name).unwrap();
        let bytes = |f: &hearth_gguf::GgufFile, t: &hearth_gguf::TensorInfo| {
            let s = (f.data_offset + t.offset) as usize;
            f.bytes()[s..s + t.n_bytes as usize].to_vec()
        };
        assert_eq!((&g.dims, g.ty), (&t.dims, t.ty), "{}", t.name);
        assert!(bytes(&got, g) == bytes(&want, t), "{}", t.name);
    }
    assert!(
        got.metadata()
            .opt_str("adapter.hearth.base_sha256")
            .unwrap()
            .is_some()
    );

    // Loaded directly, converted, or llama.cpp's file: the same logits.
    let run = |adapter: &str| {
        let o = hearth(&[
            "logits",
            "-m",
            base_s,
            "--raw",
            "--adapter",
            &format!("{adapter}:0.5"),
            "Once upon a time",
        ]);
        assert!(
            o.status.success(),
            "{adapter}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    let reference = run(lora.to_str().unwrap());
    assert_eq!(run(dir_s), reference);
    assert_eq!(run(out.to_str().unwrap()), reference);

    // rsLoRA scales by alpha/√r: the same update as alpha·√r/r.
    let rs = serde_json::json!({"peft_type": "LORA", "r": 8, "lora_alpha": alpha / 8f32.sqrt(),
        "target_modules": all, "use_rslora": true});
    let rs_dir = tmp("peft-llama-rslora");
    peft_from_gguf(&lora, n_head, n_head_kv, &rs, &rs_dir);
    let rs_logits: Value = serde_json::from_slice(&run(rs_dir.to_str().unwrap())).unwrap();
    let ref_logits: Value = serde_json::from_slice(&reference).unwrap();
    let (a, b) = (&rs_logits[0]["logits"], &ref_logits[0]["logits"]);
    for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
        assert!(
            (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-3,
            "{a} {b}"
        );
    }

    // Clear errors: a module hearth cannot adapt, a target list that misses a module, a rank
    // that does not fit, a corrupt weights file.
    for (i, (config, want)) in [
        (serde_json::json!({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "embed_tokens"]}), "embed_tokens"),
        (serde_json::json!({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}), "not in target_modules"),
        (serde_json::json!({"r": 4, "lora_alpha": 16, "target_modules": all}), "do not fit"),
        (serde_json::json!({"r": 8, "lora_alpha": 16, "use_dora": true}), "use_dora"),
    ]
    .into_iter()
    .enumerate()
    {
        let d = tmp(&format!("peft-bad-{i}"));
        peft_from_gguf(&lora, n_head, n_head_kv, &config, &d);
        let o = hearth(&["logits", "-m", base_s, "--raw", "--adapter", d.to_str().unwrap(), "hi"]);
        fails_with(&o, want);
    }
    let cut = tmp("peft-cut");
    peft_from_gguf(&lora, n_head, n_head_kv, &config, &cut);
    let st = cut.join("adapter_model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let o = hearth(&[
        "adapter",
        "convert",
        cut.to_str().unwrap(),
        "-m",
        base_s,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn merged_models_give_the_adapter_runs_outputs() {
    let base = &fixture_str("synthetic/synth-llama-f16.gguf");
    let gemma = &fixture_str("synthetic/synth-gemma3-f16.gguf");
    let lora = &fixture_str("adapters/lora-synth-llama-r8.gguf");
    let merged = tmp("merged-llama.gguf");
    let merged = merged.to_str().unwrap();
    let spec = format!("{lora}:0.5");
    let o = hearth(&[
        "adapter",
        "merge",
        "-m",
        base,
        "--adapter",
        &spec,
        "-o",
        merged,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("records no base model"),
        "{err}"
    );
    // W + s·(alpha/r)·B·A in the base's F16: the adapter run's logits up to F16 rounding (the
    // fixture's llama.cpp merge agrees to 0.032).
    let prompt = "Once upon a time";
    let parse = |o: Output| -> Value {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let with = parse(hearth(&[
        "logits",
        "-m",
        base,
        "--raw",
        "--adapter",
        &spec,
        prompt,
    ]));
    let plain = parse(hearth(&["logits", "-m", base, "--raw", prompt]));
    let got = parse(hearth(&["logits", "-m", merged, "--raw", prompt]));
    let mut worst = 0f64;
    let mut moved = 0f64;
    for ((g, w), p) in got
        .as_array()
        .unwrap()
        .iter()
        .zip(with.as_array().unwrap())
        .zip(plain.as_array().unwrap())
    {
        for (id, wl) in w["ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(w["logits"].as_array().unwrap())
        {
            let find = |v: &Value| {
                v["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .position(|x| x == id)
                    .map(|i| v["logits"][i].as_f64().unwrap())
            };
            if let Some(gl) = find(g) {
                worst = worst.max((gl - wl.as_f64().unwrap()).abs());
            }
            if let Some(pl) = find(p) {
                moved = moved.max((pl - wl.as_f64().unwrap()).abs());
            }
        }
    }
    assert!(worst < 0.05, "merged vs adapter run: {worst}");
    assert!(moved > 0.5, "the adapter should change the logits: {moved}");

    for (model, adapter, want) in [
        (gemma, spec.as_str(), "for a llama model"),
        (base, base, "not an adapter"),
    ] {
        let o = hearth(&[
            "adapter",
            "merge",
            "-m",
            model,
            "--adapter",
            adapter,
            "-o",
            merged,
        ]);
        fails_with(&o, want);
    }
}
