//! `hearth bench -m MODEL [-p 512] [-n 128] [-t N,...] [-r 5] [--ttft-prompt 32] [--json]`, in the
//! manner of llama.cpp's llama-bench (tools/llama-bench/llama-bench.cpp):
//!
//! - **pp N** (prefill): from an empty cache, N tokens evaluated as one batch (the session splits it
//!   into passes of `n_ubatch`, as llama.cpp does), logits for the last position only. The first
//!   token is BOS when the model adds one, the rest random ids in the vocabulary.
//! - **tg N** (decode): from an empty cache, N single-token evaluations; the first token is BOS
//!   when the model adds one, every following one a random id (no sampling, as llama-bench).
//! - One warm-up run before the timed repetitions (a full pp run; one decoded token for tg),
//!   then `-r` repetitions; rates are `tokens / seconds` per repetition, reported as mean and
//!   sample standard deviation (llama-bench's formulas).
//! - **TTFT**: from a fresh session, prefill of a `--ttft-prompt`-token prompt plus sampling the
//!   first token with the default sampler of `hearth run`; one warm-up, then `-r` repetitions.
//! - **Peak RSS**: VmHWM from /proc/self/status (Linux), reset before each model load where the
//!   kernel allows it (/proc/self/clear_refs), so it covers one thread count's load and tests.
//!
//! A model is loaded once per thread count. Random tokens come from a fixed-seed generator.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hearth_engine::{Logits, Model};
use hearth_sampling::{Sampler, SamplerParams};
use serde_json::{Value, json};

use crate::generate;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file, or a known model name (gemma3-270m).
    #[arg(short = 'm', long)]
    model: String,
    /// Prefill tests: prompt lengths, comma-separated (0 = none).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Decode tests: tokens generated, comma-separated (0 = none).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Thread counts, comma-separated (default: the available cores).
    #[arg(short = 't', long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Timed repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    /// Prompt length for the time-to-first-token measurement (0 = skip it).
    #[arg(long, default_value_t = 32)]
    ttft_prompt: usize,
    #[command(flatten)]
    session: super::common::SessionArgs,
    /// Print a JSON array, one object per test, with llama-bench's field names.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prompt,
    Gen,
    Ttft,
}

struct Test {
    kind: Kind,
    n: usize,
}

impl Test {
    fn name(&self) -> String {
        match self.kind {
            Kind::Prompt => format!("pp{}", self.n),
            Kind::Gen => format!("tg{}", self.n),
            Kind::Ttft => format!("ttft{}", self.n),
        }
    }
}

/// What llama-bench reports about the model.
struct ModelInfo {
    filename: String,
    desc: String,
    size: u64,
    n_params: u64,
    /// Parameters one token reads (fewer than `n_params` in a mixture of experts).
    n_params_active: u64,
    file_size: u64,
}

pub fn run(a: Args) -> Result<()> {
    if a.reps == 0 {
        bail!("-r 0: at least one repetition is needed");
    }
    let mut tests: Vec<Test> = Vec::new();
    for &n in a.n_prompt.iter().filter(|&&n| n > 0) {
        tests.push(Test {
            kind: Kind::Prompt,
            n,
        });
    }
    for &n in a.n_gen.iter().filter(|&&n| n > 0) {
        tests.push(Test { kind: Kind::Gen, n });
    }
    if a.ttft_prompt > 0 {
        tests.push(Test {
            kind: Kind::Ttft,
            n: a.ttft_prompt,
        });
    }
    if tests.is_empty() {
        bail!("nothing to measure: every -p and -n is 0 and --ttft-prompt is 0");
    }
    let threads = if a.threads.is_empty() {
        vec![std::thread::available_parallelism().map_or(1, |n| n.get())]
    } else {
        a.threads.clone()
    };
    if threads.contains(&0) {
        bail!("-t 0: thread counts must be at least 1");
    }
    // Room for the longest test (a TTFT prompt plus its first sampled token).
    let n_ctx = tests
        .iter()
        .map(|t| if t.kind == Kind::Ttft { t.n + 1 } else { t.n })
        .max()
        .unwrap_or(1);

    let mut rows: Vec<Value> = Vec::new();
    let mut out = std::io::stdout().lock();
    let mut header_done = false;
    let mut notes: Vec<String> = Vec::new();
    // (total, active) parameters of the model.
    let mut params: Option<(u64, u64)> = None;
    for &nt in &threads {
        reset_peak_rss();
        let (model, tok) = generate::load(&a.model, nt)?;
        let info = model_info(&model);
        params = Some((info.n_params, info.n_params_active));
        let bos = tok.bos().filter(|_| tok.adds_bos());
        let opts = a.session.options(&model, n_ctx)?;
        let mut session = model.session(opts.clone())?;
        if session.n_ctx() < n_ctx {
            bail!(
                "a test needs {n_ctx} tokens of context but the model's is {}",
                session.n_ctx()
            );
        }
        if !a.json && !header_done {
            writeln!(
                out,
                "| {:<30} | {:>10} | {:>10} | {:>7} | {:>15} | {:>20} |",
                "model", "size", "params", "threads", "test", "t/s"
            )?;
            writeln!(
                out,
                "| {:-<30} | {:->9}: | {:->9}: | {:->6}: | {:->14}: | {:->19}: |",
                "", "", "", "", "", ""
            )?;
            header_done = true;
        }
        let adapter_times = if opts.adapters.is_empty() {
            None
        } else {
            Some(adapter_times(
                &model,
                &mut session,
                &opts.adapters,
                a.session.force_adapter,
            )?)
        };
        if let Some((switch_us, load_ms)) = adapter_times {
            notes.push(format!(
                "adapter switch ({nt} threads): {switch_us:.1} µs per change of a session's \
                 adapters (the base stays loaded); opening and checking the adapter file(s): \
                 {load_ms:.2} ms"
            ));
        }
        let mut rng = Rng(0x5eed_0000 + nt as u64);
        let mut ttft_line = None;
        for t in &tests {
            let test_time = rfc3339_now();
            eprintln!(
                "hearth: bench {} at {nt} threads: warm-up + {} runs",
                t.name(),
                a.reps
            );
            let mut samples_ns: Vec<u64> = Vec::with_capacity(a.reps);
            for rep in 0..=a.reps {
                let ns = match t.kind {
                    Kind::Prompt => {
                        let toks = random_tokens(&mut rng, bos, model.n_vocab(), t.n);
                        session.clear();
                        let start = Instant::now();
                        session.eval(&toks, Logits::Last)?;
                        start.elapsed()
                    }
                    Kind::Gen => {
                        // llama-bench's warm-up decodes a single token.
                        let n = if rep == 0 { 1 } else { t.n };
                        session.clear();
                        let start = Instant::now();
                        let mut token = bos.unwrap_or_else(|| rng.below(model.n_vocab()));
                        for _ in 0..n {
                            session.eval(&[token], Logits::Last)?;
                            token = rng.below(model.n_vocab());
                        }
                        start.elapsed()
                    }
                    Kind::Ttft => {
                        let toks = random_tokens(&mut rng, bos, model.n_vocab(), t.n);
                        let mut fresh = model.session(opts.clone())?;
                        let mut sampler = Sampler::new(SamplerParams::default());
                        let start = Instant::now();
                        let o = fresh.eval(&toks, Logits::Last)?;
                        let mut logits = o.last().context("no logits")?.to_vec();
                        let first = sampler.sample(&mut logits);
                        let d = start.elapsed();
                        std::hint::black_box(first);
                        d
                    }
                }
                .as_nanos() as u64;
                if rep > 0 {
                    samples_ns.push(ns.max(1));
                }
            }
            let n_tokens = t.n as f64;
            let samples_ts: Vec<f64> = samples_ns
                .iter()
                .map(|&ns| 1e9 * n_tokens / ns as f64)
                .collect();
            let ns_f: Vec<f64> = samples_ns.iter().map(|&x| x as f64).collect();
            let (avg_ns, stddev_ns) = (mean(&ns_f), stdev(&ns_f));
            let (avg_ts, stddev_ts) = (mean(&samples_ts), stdev(&samples_ts));
            let peak = peak_rss_bytes();
            let (n_prompt, n_gen) = match t.kind {
                Kind::Prompt | Kind::Ttft => (t.n, 0),
                Kind::Gen => (0, t.n),
            };
            let mut row = json!({
                "model_filename": info.filename,
                "model_type": info.desc,
                "model_size": info.size,
                "model_n_params": info.n_params,
                "model_n_params_active": info.n_params_active,
                "n_threads": nt,
                "type_k": a.session.cache_type_k.name(),
                "type_v": a.session.cache_type_v.name(),
                "flash_attn": a.session.flash_attn,
                "adapters": a.session.adapters,
                "n_prompt": n_prompt,
                "n_gen": n_gen,
                "test": t.name(),
                "test_time": test_time,
                "avg_ns": avg_ns.round() as u64,
                "stddev_ns": stddev_ns.round() as u64,
                "avg_ts": avg_ts,
                "stddev_ts": stddev_ts,
                "samples_ns": samples_ns,
                "samples_ts": samples_ts,
                "peak_rss_bytes": peak,
            });
            if let Some((switch_us, load_ms)) = adapter_times {
                row["adapter_switch_us"] = json!(switch_us);
                row["adapter_load_ms"] = json!(load_ms);
            }
            if t.kind == Kind::Ttft {
                row["ttft_ms"] = json!(avg_ns / 1e6);
                row["ttft_stddev_ms"] = json!(stddev_ns / 1e6);
                ttft_line = Some(format!(
                    "time to first token ({}-token prompt, {nt} threads): {:.2} ± {:.2} ms",
                    t.n,
                    avg_ns / 1e6,
                    stddev_ns / 1e6
                ));
            } else if !a.json {
                writeln!(
                    out,
                    "| {:<30} | {:>10} | {:>10} | {:>7} | {:>15} | {:>20} |",
                    info.desc,
                    size_str(info.size),
                    params_str(info.n_params),
                    nt,
                    t.name(),
                    format!("{avg_ts:.2} ± {stddev_ts:.2}")
                )?;
                out.flush()?;
            }
            rows.push(row);
        }
        notes.extend(ttft_line);
        let peak = match peak_rss_bytes() {
            Some(b) => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
            None => "n/a".to_string(),
        };
        notes.push(format!(
            "peak resident memory ({nt} threads): {peak} (model file {:.1} MiB, KV cache {:.1} MiB)",
            info.file_size as f64 / (1024.0 * 1024.0),
            session.cache_bytes() as f64 / (1024.0 * 1024.0)
        ));
    }
    if let Some((total, active)) = params.filter(|(t, a)| t != a) {
        notes.push(format!(
            "mixture of experts: {} parameters, {} active per token",
            params_str(total),
            params_str(active)
        ));
    }
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        // Below the table, as llama-bench prints its build line.
        writeln!(out)?;
        for l in notes {
            writeln!(out, "{l}")?;
        }
    }
    Ok(())
}

/// The median time of switching a session between no adapter and `adapters` (one change),
/// in µs, and the time to open and check the adapter files again (the base's hash is cached),
/// in ms.
fn adapter_times(
    model: &Model,
    session: &mut hearth_engine::Session,
    adapters: &[hearth_engine::Applied],
    force: bool,
) -> Result<(f64, f64)> {
    let mut samples = Vec::new();
    for _ in 0..50 {
        for set in [Vec::new(), adapters.to_vec()] {
            let t = Instant::now();
            session.set_adapters(set)?;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    let t = Instant::now();
    for ap in adapters {
        let opts = hearth_engine::AdapterOptions { force };
        hearth_engine::Adapter::load_with(ap.adapter.path(), model, &opts)?;
    }
    Ok((samples[samples.len() / 2], t.elapsed().as_secs_f64() * 1e3))
}

fn random_tokens(rng: &mut Rng, bos: Option<u32>, n_vocab: usize, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| match bos {
            Some(b) if i == 0 => b,
            _ => rng.below(n_vocab),
        })
        .collect()
}

/// splitmix64: a fixed-seed source of token ids (llama-bench uses `std::rand() % n_vocab`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> u32 {
        (self.next() % n.max(1) as u64) as u32
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample standard deviation, 0 for fewer than two samples (llama-bench's `stdev`).
fn stdev(v: &[f64]) -> f64 {
    if v.len() <= 1 {
        return 0.0;
    }
    let m = mean(v);
    let ss: f64 = v.iter().map(|x| (x - m) * (x - m)).sum();
    (ss / (v.len() - 1) as f64).sqrt()
}

fn model_info(model: &Model) -> ModelInfo {
    let f = model.gguf();
    let size: u64 = f.tensors.iter().map(|t| t.n_bytes).sum();
    let counts = f.parameter_counts();
    let n_params = counts.total;
    let ftype = f
        .metadata()
        .opt_u64(hearth_gguf::keys::FILE_TYPE)
        .ok()
        .flatten()
        .map_or("?", ftype_name);
    let params = if n_params >= 1_000_000_000 {
        format!("{:.1}B", n_params as f64 / 1e9)
    } else {
        format!("{}M", (n_params as f64 / 1e6).round())
    };
    ModelInfo {
        filename: model.path().display().to_string(),
        file_size: f.file_size(),
        desc: format!("{} {params} {ftype}", model.architecture().name()),
        size,
        n_params,
        n_params_active: counts.active,
    }
}

/// llama.cpp's names for `general.file_type` (`llama_model_ftype_name`).
fn ftype_name(id: u64) -> &'static str {
    match id {
        0 => "all F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K - Medium",
        11 => "Q3_K - Small",
        12 => "Q3_K - Medium",
        13 => "Q3_K - Large",
        14 => "Q4_K - Small",
        15 => "Q4_K - Medium",
        16 => "Q5_K - Small",
        17 => "Q5_K - Medium",
        18 => "Q6_K",
        25 => "IQ4_NL - 4.5 bpw",
        30 => "IQ4_XS - 4.25 bpw",
        32 => "BF16",
        _ => "?",
    }
}

fn size_str(b: u64) -> String {
    if b < 1024 * 1024 * 1024 {
        format!("{:.2} MiB", b as f64 / 1024.0 / 1024.0)
    } else {
        format!("{:.2} GiB", b as f64 / 1024.0 / 1024.0 / 1024.0)
    }
}

fn params_str(n: u64) -> String {
    if n < 1_000_000_000 {
        format!("{:.2} M", n as f64 / 1e6)
    } else {
        format!("{:.2} B", n as f64 / 1e9)
    }
}

/// Peak resident set size (VmHWM) in bytes, where the system reports it.
fn peak_rss_bytes() -> Option<u64> {
    super::common::proc_status_bytes("VmHWM")
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0); a no-op where that is not possible.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The current UTC time as llama-bench writes `test_time` (`%FT%TZ`).
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
