//! The adapter registry: generations, a memory budget with least-recently-used eviction and
//! reload on demand, requests that keep the version they started with, and several adapters
//! in one request.

mod common;

use std::sync::Arc;

use common::*;
use hearth_engine::{AdapterOptions, Applied, AttentionMode, Logits, Model, Registry};
use hearth_gguf::{GgmlType, GgufFile};
use hearth_synth::{ALL_TARGETS, AdapterSpec};

fn base() -> std::path::PathBuf {
    fixtures().join("synthetic/synth-llama-f16.gguf")
}

/// A random rank-`rank` adapter for the tiny llama, written to a fresh file.
fn write_adapter(name: &str, rank: usize, seed: u64) -> std::path::PathBuf {
    let base = GgufFile::open(base()).unwrap();
    let spec = AdapterSpec {
        rank,
        alpha: rank as f32,
        targets: ALL_TARGETS.iter().map(|s| s.to_string()).collect(),
        output: false,
        ty: GgmlType::F16,
        gain: 0.5,
        seed,
    };
    let w = hearth_synth::synthesize_adapter(&base, &spec).unwrap();
    let dir = std::env::temp_dir().join(format!("hearth-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    w.write_to_path(&path).unwrap();
    path
}

fn logits(model: &Model, adapters: Vec<Applied>) -> Vec<f32> {
    let mut s = model.session(session_opts(AttentionMode::Flash)).unwrap();
    s.set_adapters(adapters).unwrap();
    let out = s.eval(&[1, 450, 496, 173, 701], Logits::Last).unwrap();
    out.last().unwrap().to_vec()
}

#[test]
fn registry_evicts_least_recently_used_and_reloads_on_demand() {
    let model = load(&base());
    let (a, b, c) = (
        write_adapter("a.gguf", 8, 1),
        write_adapter("b.gguf", 8, 2),
        write_adapter("c.gguf", 8, 3),
    );
    let size = std::fs::metadata(&a).unwrap().len();
    // Room for two adapters.
    let reg = Registry::new(&model, 2 * size + size / 2);
    let opts = AdapterOptions::default();
    assert_eq!(reg.load("a", &a, &opts).unwrap(), 1);
    assert_eq!(reg.load("b", &b, &opts).unwrap(), 2);
    let want_a = logits(&model, reg.applied(&[("a", 1.0)]).unwrap());
    // b is now the least recently used: loading c evicts it.
    assert_eq!(reg.load("c", &c, &opts).unwrap(), 3);
    let resident = |name: &str| reg.list().iter().find(|i| i.name == name).unwrap().resident;
    assert!(resident("a") && !resident("b") && resident("c"));
    assert!(reg.resident_bytes() <= 2 * size + size / 2);
    // Using b reloads it (same generation: same file) and evicts a.
    let (b_again, generation) = reg.get("b").unwrap();
    assert_eq!(generation, 2);
    assert!(!resident("a") && resident("b"));
    drop(b_again);
    // a comes back with the same outputs.
    assert_eq!(logits(&model, reg.applied(&[("a", 1.0)]).unwrap()), want_a);
    assert_ne!(logits(&model, Vec::new()), want_a);

    // Unknown and unloaded names are errors that list what is loaded.
    reg.unload("c").unwrap();
    let err = reg.get("c").unwrap_err().to_string();
    assert!(
        err.contains("no adapter named \"c\"") && err.contains("a, b"),
        "{err}"
    );
    assert!(reg.unload("c").is_err());
}

#[test]
fn a_request_keeps_the_version_it_started_with() {
    let model = load(&base());
    let (v1, v2) = (
        write_adapter("v1.gguf", 8, 11),
        write_adapter("v2.gguf", 8, 12),
    );
    let reg = Registry::new(&model, u64::MAX);
    let opts = AdapterOptions::default();
    let g1 = reg.load("tone", &v1, &opts).unwrap();
    let in_flight = reg.applied(&[("tone", 1.0)]).unwrap();
    let old = logits(&model, in_flight.clone());
    // A new version under the same name: a new generation for new requests...
    let g2 = reg.load("tone", &v2, &opts).unwrap();
    assert!(g2 > g1);
    let new = logits(&model, reg.applied(&[("tone", 1.0)]).unwrap());
    assert_ne!(new, old);
    // ...while the request in flight still computes with the old one, even after unloading.
    reg.unload("tone").unwrap();
    assert_eq!(logits(&model, in_flight), old);
}

#[test]
fn several_adapters_in_one_request_each_at_its_scale() {
    let model = load(&base());
    let (a, b) = (
        write_adapter("m1.gguf", 8, 21),
        write_adapter("m2.gguf", 16, 22),
    );
    let reg = Registry::new(&model, u64::MAX);
    let opts = AdapterOptions::default();
    reg.load("a", &a, &opts).unwrap();
    reg.load("b", &b, &opts).unwrap();
    let both = logits(&model, reg.applied(&[("a", 0.5), ("b", 1.0)]).unwrap());
    // At scale 0 an adapter is absent; the order of adapters changes only float rounding.
    let a_only = logits(&model, reg.applied(&[("a", 0.5), ("b", 0.0)]).unwrap());
    assert_eq!(a_only, logits(&model, reg.applied(&[("a", 0.5)]).unwrap()));
    assert_ne!(both, a_only);
    let swapped = logits(&model, reg.applied(&[("b", 1.0), ("a", 0.5)]).unwrap());
    for (x, y) in both.iter().zip(&swapped) {
        assert!((x - y).abs() < 0.05, "{x} {y}");
    }
    // The base is shared, never rewritten: no adapter gives the plain model's logits.
    let plain = logits(&model, Vec::new());
    let via_arc = Applied {
        adapter: Arc::clone(&reg.get("a").unwrap().0),
        scale: 0.0,
    };
    assert_eq!(logits(&model, vec![via_arc]), plain);
}

/// Five requests — four different adapters, one mixed with another, and none — decoded in one
/// batch (one row each, every row with its own cache and adapters) give each request exactly
/// what it gets alone.
#[test]
fn a_batch_with_different_adapters_per_row_equals_each_request_alone() {
    // Q8_0 weights: their products do not depend on the batch size.
    let model = load(&fixtures().join("synthetic/synth-llama-q8_0.gguf"));
    let reg = Registry::new(&model, u64::MAX);
    let opts = AdapterOptions::default();
    for (name, seed) in [("a", 31), ("b", 32), ("c", 33), ("d", 34)] {
        let path = write_adapter(&format!("batch-{name}.gguf"), 8, seed);
        reg.load(name, &path, &opts).unwrap();
    }
    type Request<'a> = (&'a [(&'a str, f32)], &'a [u32]);
    let requests: [Request; 5] = [
        (&[("a", 1.0)], &[1, 450, 496]),
        (&[("b", 0.5)], &[1, 17, 23, 99, 5]),
        (&[], &[1, 300]),
        (&[("c", 1.0)], &[1, 7, 8, 9]),
        (&[("d", 1.0), ("a", 0.25)], &[1, 42]),
    ];
    let start = |req: &Request| {
        let mut s = model.session(session_opts(AttentionMode::Flash)).unwrap();
        s.set_adapters(reg.applied(req.0).unwrap()).unwrap();
        let first = s.eval(req.1, Logits::Last).unwrap();
        let tok = argmax(first.last().unwrap());
        (s, tok)
    };
    let (mut batched, mut alone): (Vec<_>, Vec<_>) = (
        requests.iter().map(start).collect(),
        requests.iter().map(start).collect(),
    );
    for step in 0..6 {
        let mut items: Vec<(&mut hearth_engine::Session, u32)> =
            batched.iter_mut().map(|(s, t)| (s, *t)).collect();
        let rows = hearth_engine::decode_batch(&mut items).unwrap();
        for (i, row) in rows.iter().enumerate() {
            let (s, t) = &mut alone[i];
            let one = s.eval(&[*t], Logits::Last).unwrap();
            assert_eq!(
                row.as_slice(),
                one.last().unwrap(),
                "request {i}, step {step}"
            );
            *t = argmax(one.last().unwrap());
            batched[i].1 = argmax(row);
        }
    }
    for ((b, _), (a, _)) in batched.iter().zip(&alone) {
        assert_eq!(b.tokens(), a.tokens());
    }
    // Requests of different adapters do differ.
    assert_ne!(batched[0].0.tokens()[3..], batched[2].0.tokens()[3..]);
}

#[test]
fn bad_batches_change_no_session() {
    let model = load(&base());
    let mut s1 = model.session(session_opts(AttentionMode::Flash)).unwrap();
    let mut s2 = model.session(session_opts(AttentionMode::Flash)).unwrap();
    s1.eval(&[1, 2], Logits::Last).unwrap();
    let err = hearth_engine::decode_batch(&mut [(&mut s1, 5), (&mut s2, 1 << 30)]).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    assert_eq!((s1.n_past(), s2.n_past()), (2, 0));
    assert!(hearth_engine::decode_batch(&mut []).is_err());
}
