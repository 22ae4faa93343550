//! Session behaviour on the tiny synthetic models: batched prefill against token-by-token
//! decode, context limits, truncation, and load errors that name the file and the problem.

mod common;

use common::*;
use hearth_engine::{AttentionMode, EngineError, LoadOptions, Logits, Model, SessionOptions};
use hearth_gguf::{GgufFile, GgufWriter};

fn synth(name: &str) -> std::path::PathBuf {
    fixtures().join(format!("synthetic/{name}.gguf"))
}

fn prompt(n: usize) -> Vec<u32> {
    // Valid ids of the 1024-token vocabulary, BOS first.
    std::iter::once(1)
        .chain((1..n as u32).map(|i| 3 + (i * 37) % 1000))
        .collect()
}

/// Logits of a prompt evaluated as one batch agree with the same prompt fed one token per
/// call. The two take different kernels (as in llama.cpp, whose own spread between them is up to
/// 0.38 on the fixtures' shorter prompts): F16 weights agree closely; 8-bit activation
/// quantization amplifies last-bit differences on quantized ones.
#[test]
fn batched_prefill_matches_token_by_token_decode() {
    for (name, max, mean) in [
        ("synth-llama-f16", 0.05, 0.01),
        ("synth-gemma3-q4_k_m", 1.0, 0.2),
        ("synth-qwen3-q8_0", 1.0, 0.2),
    ] {
        let model = load(&synth(name));
        for mode in [AttentionMode::Flash, AttentionMode::Standard] {
            // 70 tokens: the flash kernel switches to its tiled form at 64 rows.
            let ids = prompt(70);
            let mut batch = model.session(session_opts(mode)).unwrap();
            let all = batch.eval(&ids, Logits::All).unwrap();
            assert_eq!(all.len(), ids.len());
            let mut step = model.session(session_opts(mode)).unwrap();
            let mut stats = LogitStats::default();
            for (p, &id) in ids.iter().enumerate() {
                let one = step.eval(&[id], Logits::Last).unwrap();
                let (a, b) = (all.row(p), one.last().unwrap());
                let top = top_k(a, 10);
                for &t in &top {
                    let d = (a[t as usize] - b[t as usize]).abs() as f64;
                    stats.max_diff = stats.max_diff.max(d);
                    stats.sum_diff += d;
                    stats.shared += 1;
                }
                let mut sorted: Vec<f32> = top.iter().map(|&t| a[t as usize]).collect();
                sorted.sort_by(|x, y| y.total_cmp(x));
                if sorted[0] - sorted[1] >= 0.75 {
                    assert_eq!(argmax(a), argmax(b), "{name} {mode:?} position {p}");
                }
            }
            assert_eq!(step.n_past(), ids.len());
            println!(
                "{name} {mode:?}: batch vs one-by-one max {:.4} mean {:.4}",
                stats.max_diff,
                stats.mean()
            );
            assert!(
                stats.max_diff < max && stats.mean() < mean,
                "{name} {mode:?}: {}",
                stats.summary()
            );
        }
    }
}

/// Passes of `n_ubatch` tokens give the same logits as one pass, within the same spread.
#[test]
fn long_prompts_split_into_ubatches() {
    let model = load(&synth("synth-qwen2-f16"));
    let ids = prompt(90);
    let run = |n_ubatch| {
        let mut s = model
            .session(SessionOptions {
                n_ubatch,
                ..session_opts(AttentionMode::Flash)
            })
            .unwrap();
        s.eval(&ids, Logits::Tail(5)).unwrap()
    };
    let (one, split) = (run(512), run(32));
    assert_eq!(one.indices(), &[85, 86, 87, 88, 89]);
    assert_eq!(split.indices(), one.indices());
    for i in 0..5 {
        let d = one
            .row(i)
            .iter()
            .zip(split.row(i))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 0.1, "row {i}: {d}");
    }
    assert_eq!(one.at(89).unwrap(), one.last().unwrap());
    assert!(one.at(3).is_none());
}

#[test]
fn a_prompt_that_does_not_fit_is_an_error_and_changes_nothing() {
    let model = load(&synth("synth-llama-q4_0"));
    let mut s = model
        .session(SessionOptions {
            n_ctx: 16,
            ..SessionOptions::default()
        })
        .unwrap();
    assert_eq!(s.n_ctx(), 16);
    s.eval(&prompt(10), Logits::None).unwrap();
    let err = s.eval(&prompt(7), Logits::Last).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::ContextFull {
                total: 17,
                n_ctx: 16,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("context size of 16"), "{err}");
    assert_eq!(s.n_past(), 10);
    s.eval(&prompt(6), Logits::Last).unwrap();
    assert_eq!(s.n_past(), 16);
    // The model's own limit caps what is asked for.
    let big = model
        .session(SessionOptions {
            n_ctx: 1 << 20,
            ..SessionOptions::default()
        })
        .unwrap();
    assert_eq!(big.n_ctx(), model.n_ctx_train());
    assert_eq!(SessionOptions::default().n_ctx, 4096);
}

#[test]
fn truncate_and_clear_rewind_the_cache() {
    let model = load(&synth("synth-gemma3-q8_0"));
    let opts = session_opts(AttentionMode::Flash);
    let ids = prompt(12);
    let mut fresh = model.session(opts.clone()).unwrap();
    fresh.eval(&ids[..8], Logits::None).unwrap();
    let want = fresh.eval(&ids[8..], Logits::All).unwrap();

    let mut s = model.session(opts).unwrap();
    s.eval(&ids[..8], Logits::None).unwrap();
    s.eval(&[5, 6, 7], Logits::Last).unwrap();
    s.truncate(8).unwrap();
    assert_eq!(s.n_past(), 8);
    let got = s.eval(&ids[8..], Logits::All).unwrap();
    assert_eq!(got.into_vec(), want.clone().into_vec());

    s.clear();
    assert_eq!(s.n_past(), 0);
    s.eval(&ids[..8], Logits::None).unwrap();
    assert_eq!(
        s.eval(&ids[8..], Logits::All).unwrap().into_vec(),
        want.into_vec()
    );
    assert!(matches!(
        s.truncate(100),
        Err(EngineError::BadTruncate { n: 100, n_past: 12 })
    ));
}

#[test]
fn bad_batches_are_errors() {
    let model = load(&synth("synth-qwen3-q4_0"));
    let mut s = model.session(SessionOptions::default()).unwrap();
    assert!(matches!(
        s.eval(&[], Logits::Last),
        Err(EngineError::EmptyBatch)
    ));
    let err = s.eval(&[1, 5000], Logits::Last).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::BadToken {
                id: 5000,
                index: 1,
                n_vocab: 1024
            }
        ),
        "{err}"
    );
    assert_eq!(s.n_past(), 0);
    assert!(s.eval(&[1], Logits::None).unwrap().is_empty());
}

/// Writes a copy of `src` with metadata and tensors edited, returns its path.
fn edited(
    src: &std::path::Path,
    out: &str,
    edit_meta: impl Fn(&str, &hearth_gguf::Value) -> Option<hearth_gguf::Value>,
    keep_tensor: impl Fn(&str) -> bool,
) -> std::path::PathBuf {
    let f = GgufFile::open(src).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata().iter() {
        if let Some(v) = edit_meta(k, v) {
            w.set(k, v);
        }
    }
    for t in &f.tensors {
        if keep_tensor(&t.name) {
            w.add_tensor(t.name.clone(), &t.dims, t.ty, f.tensor_data(t).to_vec())
                .unwrap();
        }
    }
    let dir = std::env::temp_dir().join(format!("hearth-engine-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(out);
    w.write_to_path(&path).unwrap();
    path
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let src = synth("synth-llama-f16");
    let opts = LoadOptions::default();

    let missing = std::path::Path::new("/nonexistent/model.gguf");
    let err = Model::load(missing, &opts).err().unwrap();
    assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");

    let arch = edited(
        &src,
        "arch.gguf",
        |k, v| {
            Some(if k == "general.architecture" {
                hearth_gguf::Value::String("mamba".into())
            } else {
                v.clone()
            })
        },
        |_| true,
    );
    let err = Model::load(&arch, &opts).err().unwrap().to_string();
    assert!(
        err.contains("arch.gguf") && err.contains("unsupported architecture \"mamba\""),
        "{err}"
    );

    let tensor = edited(
        &src,
        "tensor.gguf",
        |_, v| Some(v.clone()),
        |n| n != "blk.1.ffn_up.weight",
    );
    let err = Model::load(&tensor, &opts).err().unwrap().to_string();
    assert!(
        err.contains("tensor.gguf") && err.contains("\"blk.1.ffn_up.weight\" is missing"),
        "{err}"
    );

    let key = edited(
        &src,
        "key.gguf",
        |k, v| (k != "llama.embedding_length").then(|| v.clone()),
        |_| true,
    );
    let err = Model::load(&key, &opts).err().unwrap().to_string();
    assert!(err.contains("llama.embedding_length"), "{err}");

    let shape = edited(
        &src,
        "shape.gguf",
        |k, v| {
            Some(if k == "llama.feed_forward_length" {
                hearth_gguf::Value::U32(512)
            } else {
                v.clone()
            })
        },
        |_| true,
    );
    let err = Model::load(&shape, &opts).err().unwrap().to_string();
    assert!(
        err.contains("has shape [256, 256], expected [256, 512]"),
        "{err}"
    );
}

#[test]
fn hyperparameters_follow_llama_cpp() {
    let g = load(&synth("synth-gemma3-f16"));
    let hp = g.hparams();
    assert_eq!(
        (hp.n_embd, hp.n_head, hp.n_head_kv, hp.head_dim),
        (256, 4, 1, 64)
    );
    // Pattern 2: layer 0 local (window 8, base 10000), layer 1 global (base 1e6).
    assert_eq!(hp.window, vec![Some(8), None]);
    assert_eq!(hp.rope[0].freq_base, 10000.0);
    assert_eq!(hp.rope[1].freq_base, 1e6);
    assert_eq!(hp.q_scale, Some(0.125));
    assert_eq!(hp.kq_scale, 1.0);
    assert_eq!(hp.embd_scale, Some(16.0));
    let l = load(&synth("synth-llama-q8_0"));
    assert_eq!(
        l.hparams().rope[0].mode,
        hearth_engine::ops::rope::RopeMode::Normal
    );
    assert_eq!(l.hparams().rope[0].freq_base, 5e5);
    assert_eq!(l.hparams().kq_scale, 0.125);
    let q = load(&synth("synth-qwen2-q8_0"));
    assert_eq!(
        q.hparams().rope[0].mode,
        hearth_engine::ops::rope::RopeMode::Neox
    );
}

#[test]
fn the_default_model_has_the_expected_shape() {
    let model = load(&default_model_path());
    let hp = model.hparams();
    assert_eq!(hp.n_layer, 18);
    assert_eq!(hp.n_vocab, 262_144);
    assert_eq!(
        (hp.n_embd, hp.n_head, hp.n_head_kv, hp.head_dim),
        (640, 4, 1, 256)
    );
    // No pattern key: llama.cpp's default of 6, so layers 5, 11, 17 are global.
    let global: Vec<usize> = (0..18).filter(|&i| hp.window[i].is_none()).collect();
    assert_eq!(global, vec![5, 11, 17]);
    assert!(hp.window.iter().flatten().all(|&w| w == 512));
}

/// A request sharing a prefix with what is cached evaluates only the rest, and its logits are
/// those of evaluating the same split on a fresh session; a failed request keeps the cache.
#[test]
fn prefill_reuses_the_cached_prefix() {
    let model = load(&synth("synth-llama-q4_k_m"));
    let opts = session_opts(AttentionMode::Flash);
    let first = prompt(20);
    let mut second = first[..14].to_vec();
    second.extend([50, 60, 70, 80]);

    let mut s = model.session(opts.clone()).unwrap();
    let (_, reused) = s.prefill(&first, Logits::Last).unwrap();
    assert_eq!(reused, 0);
    let (got, reused) = s.prefill(&second, Logits::Last).unwrap();
    assert_eq!(reused, 14);
    assert_eq!(s.tokens(), &second[..]);

    let mut fresh = model.session(opts.clone()).unwrap();
    fresh.eval(&second[..14], Logits::None).unwrap();
    let want = fresh.eval(&second[14..], Logits::Last).unwrap();
    assert_eq!(got.into_vec(), want.into_vec());

    // The same prompt again: all but the last token are reused (its logits are needed).
    let (_, reused) = s.prefill(&second, Logits::Last).unwrap();
    assert_eq!(reused, second.len() - 1);

    // A request over the context is refused and leaves the cached tokens as they were.
    let too_long = prompt(opts.n_ctx + 1);
    assert!(matches!(
        s.prefill(&too_long, Logits::Last),
        Err(EngineError::ContextFull { .. })
    ));
    assert_eq!(s.tokens(), &second[..]);
    assert!(matches!(
        s.prefill(&[], Logits::Last),
        Err(EngineError::EmptyBatch)
    ));
}

/// Quantized K/V caches: the bytes their block sizes say, logits near the f16 cache's (only the
/// cached K and V are rounded more coarsely; this random-weight model magnifies that, Q4_0 most),
/// and a quantized V without flash attention is refused, as llama.cpp refuses it. (The kernels
/// are checked exactly in `ops::attention`'s tests.)
#[test]
fn quantized_kv_caches_stay_close_to_f16() {
    use hearth_engine::KvType;
    let model = load(&synth("synth-llama-q8_0"));
    let ids = prompt(70);
    let base = session_opts(AttentionMode::Flash);
    let mut f16 = model.session(base.clone()).unwrap();
    let want = f16.eval(&ids, Logits::All).unwrap();
    // Bytes per 32 elements.
    let block = |t: KvType| match t {
        KvType::F16 => 64.0,
        KvType::Q8_0 => 34.0,
        KvType::Q4_0 => 18.0,
    };
    for (k, v, max_diff) in [
        (KvType::Q8_0, KvType::Q8_0, 1.5),
        (KvType::Q4_0, KvType::Q4_0, 8.0),
        (KvType::Q8_0, KvType::F16, 1.5),
        (KvType::F16, KvType::Q4_0, 8.0),
    ] {
        let opts = SessionOptions {
            cache_type_k: k,
            cache_type_v: v,
            ..base.clone()
        };
        let mut s = model.session(opts.clone()).unwrap();
        let got = s.eval(&ids, Logits::All).unwrap();
        let mut worst = 0f32;
        for p in 0..ids.len() {
            let (a, b) = (want.row(p), got.row(p));
            for &t in &top_k(a, 10) {
                worst = worst.max((a[t as usize] - b[t as usize]).abs());
            }
        }
        println!("K {k} V {v}: max |Δ| over the top 10 {worst:.4}");
        assert!(worst < max_diff, "K {k} V {v}: {worst}");
        assert!(worst > 0.0, "K {k} V {v}: the cache type had no effect");
        let bytes = s.cache_bytes() as f64 / f16.cache_bytes() as f64;
        let want_ratio = (block(k) + block(v)) / 128.0;
        assert!((bytes - want_ratio).abs() < 1e-9, "K {k} V {v}: {bytes}");
        // Token by token agrees with the batch (both take the vector attention kernel here;
        // on CPUs with AMX the batch's products take bf16 tiles, which a 4-bit cache amplifies
        // to PARITY.md's bound, 2.0).
        let mut step = model.session(opts).unwrap();
        for (p, &id) in ids[..10].iter().enumerate() {
            let one = step.eval(&[id], Logits::Last).unwrap();
            let (a, b) = (got.row(p), one.last().unwrap());
            for &t in &top_k(a, 10) {
                let d = (a[t as usize] - b[t as usize]).abs();
                assert!(d < 2.0, "K {k} V {v} position {p}: {d}");
            }
        }
    }
    let err = model
        .session(SessionOptions {
            attention: AttentionMode::Standard,
            cache_type_v: KvType::Q8_0,
            ..base
        })
        .err()
        .expect("a quantized V cache needs flash attention");
    assert!(err.to_string().contains("needs flash attention"), "{err}");
}
