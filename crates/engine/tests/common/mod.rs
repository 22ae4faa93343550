//! Parity checks against llama.cpp's reference fixtures, by the rules of PARITY.md:
//! - logits: over tokens in both top-10 lists, max |Δ| ≤ 2.0 and mean |Δ| ≤ 0.35; the top-1
//!   token equal wherever llama.cpp's top-2 gap is ≥ 0.75;
//! - greedy: identical ids, or the first difference at a step where llama.cpp's top-2 gap is
//!   below 0.6;
//! - mixtures of experts: up to 5% of positions may break the top-1 rule, single logits may
//!   differ by up to 6.0.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hearth_engine::{AttentionMode, LoadOptions, Logits, Model, SessionOptions};
use serde_json::Value;

pub const MAX_DIFF: f64 = 2.0;
pub const MEAN_DIFF: f64 = 0.35;
pub const TOP1_GAP: f64 = 0.75;
pub const GREEDY_GAP: f64 = 0.6;
pub const MOE_MAX_DIFF: f64 = 6.0;
pub const MOE_TOP1_SHARE: f64 = 0.05;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// The default model, as the CLI finds it; a clear failure when it was not fetched.
pub fn default_model_path() -> PathBuf {
    let home = std::env::var_os("HEARTH_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/hearth")
        });
    let path = home.join("models/gemma-3-270m-q4_k_m.gguf");
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model to download the default model",
        path.display()
    );
    path
}

pub fn load(path: &Path) -> Model {
    Model::load(path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn session_opts(mode: AttentionMode) -> SessionOptions {
    SessionOptions {
        n_ctx: 512,
        attention: mode,
        ..SessionOptions::default()
    }
}

/// Argmax, lowest id on ties.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Top `k` ids by logit, descending, ties by lower id.
pub fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(idx.len());
    idx.select_nth_unstable_by(k - 1, |&a, &b| {
        row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b))
    });
    idx.truncate(k);
    idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    idx
}

/// Logit agreement with one reference over many positions.
#[derive(Clone, Debug, Default)]
pub struct LogitStats {
    pub positions: usize,
    pub shared: usize,
    pub max_diff: f64,
    pub sum_diff: f64,
    pub top1_same: usize,
    /// Positions with a reference gap ≥ 0.75 whose top-1 differs.
    pub top1_violations: usize,
    pub violation_notes: Vec<String>,
}

impl LogitStats {
    pub fn mean(&self) -> f64 {
        if self.shared == 0 {
            0.0
        } else {
            self.sum_diff / self.shared as f64
        }
    }

    pub fn add_position(&mut self, ours: &[f32], reference: &Value, label: &str) {
        let ref_ids = ids(&reference["top10_ids"]);
        let ref_logits = floats(&reference["top10_logits"]);
        let our_top = top_k(ours, 10);
        self.positions += 1;
        for (id, &l) in ref_ids.iter().zip(&ref_logits) {
            if our_top.contains(id) {
                let d = (ours[*id as usize] as f64 - l).abs();
                self.shared += 1;
                self.sum_diff += d;
                self.max_diff = self.max_diff.max(d);
            }
        }
        let ours_top1 = argmax(ours);
        if ours_top1 == ref_ids[0] {
            self.top1_same += 1;
        } else if ref_logits[0] - ref_logits[1] >= TOP1_GAP {
            self.top1_violations += 1;
            self.violation_notes.push(format!(
                "{label}: top-1 {ours_top1} vs {} (gap {:.3})",
                ref_ids[0],
                ref_logits[0] - ref_logits[1]
            ));
        }
    }

    pub fn merge(&mut self, o: &LogitStats) {
        self.positions += o.positions;
        self.shared += o.shared;
        self.max_diff = self.max_diff.max(o.max_diff);
        self.sum_diff += o.sum_diff;
        self.top1_same += o.top1_same;
        self.top1_violations += o.top1_violations;
        self.violation_notes
            .extend(o.violation_notes.iter().cloned());
    }

    pub fn passes(&self) -> bool {
        self.max_diff <= MAX_DIFF && self.mean() <= MEAN_DIFF && self.top1_violations == 0
    }

    /// PARITY.md's rule for mixtures of experts, where a near-tied expert choice moves single
    /// logits: at most 5% of positions break the top-1 rule, single logits within 6.0.
    pub fn passes_moe(&self) -> bool {
        self.max_diff <= MOE_MAX_DIFF
            && self.mean() <= MEAN_DIFF
            && self.top1_violations as f64 <= MOE_TOP1_SHARE * self.positions as f64
    }

    pub fn summary(&self) -> String {
        format!(
            "max {:.4} mean {:.4} top1 {}/{}{}",
            self.max_diff,
            self.mean(),
            self.top1_same,
            self.positions,
            if self.top1_violations > 0 {
                format!(" ({} VIOLATIONS)", self.top1_violations)
            } else {
                String::new()
            }
        )
    }
}

/// Runs every `logits` case of a fixture in one session mode; returns the stats against the
/// flash-attention-on and -off references.
pub fn logit_parity(model: &Model, cases: &Value, mode: AttentionMode) -> (LogitStats, LogitStats) {
    let (mut on, mut off) = (LogitStats::default(), LogitStats::default());
    for (ci, case) in cases.as_array().expect("cases").iter().enumerate() {
        let input = ids(&case["input_ids"]);
        let mut s = model.session(session_opts(mode)).expect("session");
        let out = s.eval(&input, Logits::All).expect("eval");
        for (p, row) in out.rows().enumerate() {
            let label = format!("case {ci} pos {p}");
            on.add_position(row, &case["positions"][p], &label);
            off.add_position(row, &case["positions_fa_off"][p], &label);
        }
    }
    (on, off)
}

/// Greedy generation as llama-simple does it: the prompt in one batch, then one token per call,
/// argmax with the lowest id on ties, stopping before an end-of-generation token.
pub fn greedy(
    model: &Model,
    prompt: &[u32],
    n: usize,
    eog: &[u32],
    mode: AttentionMode,
) -> Vec<u32> {
    let mut s = model.session(session_opts(mode)).expect("session");
    let mut out = Vec::new();
    let mut logits = s.eval(prompt, Logits::Last).expect("prompt");
    while out.len() < n {
        let next = argmax(logits.last().expect("a row"));
        if eog.contains(&next) {
            break;
        }
        out.push(next);
        if out.len() == n {
            break;
        }
        logits = s.eval(&[next], Logits::Last).expect("decode");
    }
    out
}

/// Greedy agreement with one reference.
#[derive(Clone, Debug, Default)]
pub struct GreedyStats {
    pub runs: usize,
    pub identical: usize,
    /// Runs that part at a step where llama.cpp's own gap is below 0.6 (allowed).
    pub near_tie: usize,
    pub failures: Vec<String>,
}

impl GreedyStats {
    pub fn add(&mut self, ours: &[u32], reference: &[u32], gaps: &[f64], label: &str) {
        self.runs += 1;
        match ours.iter().zip(reference).position(|(a, b)| a != b) {
            None if ours.len() == reference.len() => self.identical += 1,
            first => {
                let step = first.unwrap_or(ours.len().min(reference.len()));
                let gap = gaps.get(step).copied().unwrap_or(0.0);
                if gap < GREEDY_GAP {
                    self.near_tie += 1;
                } else {
                    self.failures.push(format!(
                        "{label}: first difference at step {step} (llama.cpp gap {gap:.3}); \
                         ours {ours:?}, reference {reference:?}"
                    ));
                }
            }
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "identical {}/{}, near-tie splits {}, failures {}",
            self.identical,
            self.runs,
            self.near_tie,
            self.failures.len()
        )
    }
}

/// End-of-generation ids: the metadata's EOS (and EOT when present), plus Gemma's
/// `<end_of_turn>` (106), which llama.cpp's vocabulary marks as EOG.
pub fn eog_ids(model: &Model) -> Vec<u32> {
    let meta = model.gguf().metadata();
    let mut eog = Vec::new();
    for key in [
        hearth_gguf::keys::TOKENIZER_EOS_ID,
        hearth_gguf::keys::TOKENIZER_EOT_ID,
    ] {
        if let Ok(Some(id)) = meta.opt_u64(key) {
            eog.push(id as u32);
        }
    }
    if model.architecture() == hearth_engine::Arch::Gemma3 {
        eog.push(106);
    }
    eog
}

/// Greedy runs of a fixture's `greedy` cases in one mode, against both references.
pub fn greedy_parity(
    model: &Model,
    cases: &Value,
    mode: AttentionMode,
) -> (GreedyStats, GreedyStats) {
    let eog = eog_ids(model);
    let (mut on, mut off) = (GreedyStats::default(), GreedyStats::default());
    for (ci, case) in cases.as_array().expect("cases").iter().enumerate() {
        let prompt = ids(&case["prompt_ids"]);
        let n = case["n_predict"].as_u64().expect("n_predict") as usize;
        let ours = greedy(model, &prompt, n, &eog, mode);
        let label = format!("case {ci}");
        on.add(
            &ours,
            &ids(&case["output_ids"]),
            &floats(&case["step_top2_gap"]),
            &label,
        );
        off.add(
            &ours,
            &ids(&case["output_ids_fa_off"]),
            &floats(&case["step_top2_gap_fa_off"]),
            &label,
        );
    }
    (on, off)
}
