//! The generation issue's acceptance checks, through the `hearth` binary exactly as a user runs it,
//! against llama.cpp's references by the rules of PARITY.md (tolerances from how much llama.cpp
//! differs from itself across its own settings).

mod common;

use common::{default_model, fixture, fixture_json, hearth_json};
use serde_json::Value;

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// PARITY.md's logit rule for one prompt; returns (max diff, sum of diffs, count) for the caller's mean.
fn check_logits(model: &str, case: &Value, what: &str) -> (f64, f64, usize) {
    check_logits_with(model, &[], case, what)
}

/// [`check_logits`] with `extra` flags (adapters).
fn check_logits_with(model: &str, extra: &[&str], case: &Value, what: &str) -> (f64, f64, usize) {
    let prompt = case["prompt"].as_str().unwrap();
    let mut args = vec!["logits", "-m", model, "--raw", "--top", "10"];
    args.extend_from_slice(extra);
    args.push(prompt);
    let got = hearth_json(&args);
    let want = case["positions"].as_array().unwrap();
    let got = got.as_array().unwrap();
    assert_eq!(
        got.len(),
        want.len(),
        "{what} {prompt:?}: positions (input ids {})",
        case["input_ids"]
    );
    let (mut max, mut sum, mut n) = (0.0f64, 0.0, 0);
    for (pos, (g, w)) in got.iter().zip(want).enumerate() {
        let (gi, gl) = (ids(&g["ids"]), floats(&g["logits"]));
        let (wi, wl) = (ids(&w["top10_ids"]), floats(&w["top10_logits"]));
        for (k, id) in wi.iter().enumerate() {
            if let Some(j) = gi.iter().position(|x| x == id) {
                let d = (gl[j] - wl[k]).abs();
                max = max.max(d);
                sum += d;
                n += 1;
            }
        }
        if wl[0] - wl[1] >= 0.75 {
            assert_eq!(
                gi[0],
                wi[0],
                "{what} {prompt:?} position {pos}: top-1 differs where llama.cpp's gap is {}",
                wl[0] - wl[1]
            );
        }
    }
    assert!(max <= 2.0, "{what} {prompt:?}: max logit difference {max}");
    (max, sum, n)
}

/// PARITY.md's greedy rule: identical, or parting where llama.cpp's own top-2 gap is below 0.6.
fn check_greedy(model: &str, case: &Value, n: usize, what: &str) -> bool {
    check_greedy_with(model, &[], case, n, what)
}

/// [`check_greedy`] with `extra` flags (adapters).
fn check_greedy_with(model: &str, extra: &[&str], case: &Value, n: usize, what: &str) -> bool {
    let prompt = case["prompt"].as_str().unwrap();
    let n = n.to_string();
    let mut args = vec![
        "run",
        "-m",
        model,
        "--raw",
        "-n",
        &n,
        "--temp",
        "0",
        "--output-ids",
    ];
    args.extend_from_slice(extra);
    args.push(prompt);
    let got = ids(&hearth_json(&args));
    let want = ids(&case["output_ids"]);
    let gaps = floats(&case["step_top2_gap"]);
    match got.iter().zip(&want).position(|(a, b)| a != b) {
        None => {
            assert_eq!(
                got.len(),
                want.len(),
                "{what} {prompt:?}: lengths differ ({:?} vs {:?})",
                got,
                want
            );
            true
        }
        Some(step) => {
            assert!(
                gaps[step] < 0.6,
                "{what} {prompt:?}: differs at step {step} where llama.cpp's top-2 gap is {}: {got:?} vs {want:?}",
                gaps[step]
            );
            false
        }
    }
}

#[test]
fn gemma3_270m_logits_match_llama_cpp() {
    let model = default_model();
    let (mut max, mut sum, mut n) = (0.0f64, 0.0, 0);
    for case in fixture_json("gemma3-270m/logits_top10.json")["cases"]
        .as_array()
        .unwrap()
    {
        let (m, s, k) = check_logits(&model, case, "gemma3-270m");
        max = max.max(m);
        sum += s;
        n += k;
    }
    let mean = sum / n as f64;
    eprintln!(
        "gemma3-270m logits: max |Δ| {max:.4}, mean {mean:.4} over {n} shared top-10 entries"
    );
    assert!(mean <= 0.35, "mean logit difference {mean}");
}

#[test]
fn gemma3_270m_greedy_matches_llama_cpp() {
    let model = default_model();
    let cases = fixture_json("gemma3-270m/greedy.json");
    let cases = cases["cases"].as_array().unwrap();
    let same = cases
        .iter()
        .filter(|c| {
            check_greedy(
                &model,
                c,
                c["n_predict"].as_u64().unwrap() as usize,
                "gemma3-270m",
            )
        })
        .count();
    eprintln!("gemma3-270m greedy: {same}/{} identical", cases.len());
}

#[test]
fn synthetic_models_match_llama_cpp_through_the_cli() {
    for arch in ["gemma3", "llama", "qwen2", "qwen3"] {
        for ty in ["f16", "q8_0", "q4_0", "q4_k_m"] {
            let name = format!("synth-{arch}-{ty}");
            let model = path_of(&format!("synthetic/{name}.gguf"));
            let f = fixture_json(&format!("synthetic/{name}.json"));
            let (mut sum, mut n) = (0.0, 0);
            for case in f["logits"].as_array().unwrap() {
                let (_, s, k) = check_logits(&model, case, &name);
                sum += s;
                n += k;
            }
            assert!(
                sum / n as f64 <= 0.35,
                "{name}: mean logit difference {}",
                sum / n as f64
            );
            for case in f["greedy"].as_array().unwrap() {
                check_greedy(
                    &model,
                    case,
                    case["n_predict"].as_u64().unwrap() as usize,
                    &name,
                );
            }
        }
    }
}

/// The whole text at -c 512: the final perplexity within PARITY.md's 1% of llama.cpp's, and
/// the running value after each chunk within 1.5% (after the first chunks it averages only a few
/// hundred tokens: on CPUs with AMX, where prompts take bf16 tiles, the first chunk's is 1.2%
/// below llama.cpp's, the final one 0.4%).
#[test]
fn gemma3_270m_perplexity_matches_llama_cpp_running_values() {
    let want = fixture_json("gemma3-270m/perplexity.json");
    let run = want["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["n_ctx"] == 512 && r["flash_attn"].as_str().unwrap().starts_with("auto"))
        .unwrap();
    let got = hearth_json(&[
        "perplexity",
        "-m",
        &default_model(),
        "-f",
        &path_of("gemma3-270m/perplexity_text.txt"),
        "-c",
        "512",
        "--json",
    ]);
    assert_eq!(got["n_tokens"], want["n_tokens_with_bos"]);
    let (g, w) = (got["ppl"].as_f64().unwrap(), run["ppl"].as_f64().unwrap());
    assert!((g / w - 1.0).abs() < 0.01, "ppl {g} vs llama.cpp {w}");
    let (g, w) = (
        floats(&got["running_ppl"]),
        floats(&run["running_ppl_after_each_chunk"]),
    );
    for (i, (g, w)) in g.iter().zip(&w).enumerate() {
        assert!(
            (g / w - 1.0).abs() < 0.015,
            "after chunk {}: ppl {g} vs llama.cpp {w}",
            i + 1
        );
    }
}

fn path_of(rel: &str) -> String {
    fixture(rel).to_string_lossy().into_owned()
}

/// The adapters issue's parity checks: llama.cpp's `--lora-scaled` references at scales 0, 0.5
/// and 1.0, through `hearth logits --adapter` and `hearth run --adapter --output-ids`.
fn check_adapter(adapter: &str, base_of: impl Fn(&str) -> String) {
    let f = fixture_json(&format!("adapters/{adapter}.json"));
    let file = path_of(&format!("adapters/{adapter}.gguf"));
    for (base, cases) in f["on_bases"].as_object().unwrap() {
        let model = base_of(base);
        for (scale, c) in cases["scales"].as_object().unwrap() {
            let spec = format!("{file}:{scale}");
            let extra = ["--adapter", spec.as_str()];
            let what = format!("{adapter} on {base} at {scale}");
            let (mut max, mut sum, mut n) = (0.0f64, 0.0, 0);
            for case in c["logits"].as_array().unwrap() {
                let (m, s, k) = check_logits_with(&model, &extra, case, &what);
                max = max.max(m);
                sum += s;
                n += k;
            }
            let mean = sum / n as f64;
            eprintln!("{what}: logits max |Δ| {max:.4}, mean {mean:.4} over {n}");
            assert!(mean <= 0.35, "{what}: mean logit difference {mean}");
            let greedy = c["greedy"].as_array().unwrap();
            let same = greedy
                .iter()
                .filter(|g| {
                    let n = g["n_predict"].as_u64().unwrap() as usize;
                    check_greedy_with(&model, &extra, g, n, &what)
                })
                .count();
            eprintln!("{what}: greedy {same}/{} identical", greedy.len());
        }
    }
}

#[test]
fn lora_adapter_on_synthetic_llama_matches_llama_cpp() {
    check_adapter("lora-synth-llama-r8", |base| {
        path_of(&format!("synthetic/{base}"))
    });
}

#[test]
fn lora_adapter_on_gemma3_270m_matches_llama_cpp() {
    check_adapter("lora-gemma3-270m-r16", |_| default_model());
}
