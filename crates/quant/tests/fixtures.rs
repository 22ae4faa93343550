//! Dequantization against gguf-py on real model rows and reference blocks
//! (`tests/fixtures/quant`, written by `make_fixtures.py`), quantizers against gguf-py's, and
//! dots on real rows agreeing across ISA levels.

use hearth_quant::*;
use serde_json::Value;
use std::path::PathBuf;

struct Fixture {
    name: String,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    blocks: Vec<u8>,
    expected: Vec<f32>,
    source: Option<Vec<f32>>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant")
}

fn read(file: &str) -> Vec<u8> {
    let path = dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with crates/quant/tests/make_fixtures.py",
            path.display()
        )
    })
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn fixtures() -> Vec<Fixture> {
    let index: Value = serde_json::from_slice(&read("index.json")).expect("index.json is JSON");
    let list = index.as_array().expect("index.json is a list");
    list.iter()
        .map(|e| {
            let s = |k: &str| {
                e[k].as_str()
                    .unwrap_or_else(|| panic!("{k} in {e}"))
                    .to_string()
            };
            let u = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k} in {e}")) as usize;
            Fixture {
                name: s("name"),
                ty: GgmlType::from_name(&s("type")).expect("known type"),
                rows: u("rows"),
                cols: u("cols"),
                blocks: read(&s("blocks")),
                expected: floats(&read(&s("dequantized"))),
                source: e["source"].as_str().map(|f| floats(&read(f))),
            }
        })
        .collect()
}

#[test]
fn fixtures_cover_every_format() {
    use GgmlType::*;
    let types: Vec<GgmlType> = fixtures().iter().map(|f| f.ty).collect();
    for ty in [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K, Iq4Nl, Iq4Xs,
    ] {
        assert!(types.contains(&ty), "no fixture for {ty}");
    }
}

/// Same operations in the same order as gguf-py's numpy code, so the floats are identical.
#[test]
fn dequantization_matches_gguf_py_exactly() {
    for f in fixtures() {
        let rb = row_bytes(f.ty, f.cols).unwrap();
        assert_eq!(f.blocks.len(), rb * f.rows, "{}", f.name);
        let mut row = vec![0f32; f.cols];
        for r in 0..f.rows {
            dequantize_row(f.ty, &f.blocks[r * rb..(r + 1) * rb], &mut row).unwrap();
            let want = &f.expected[r * f.cols..(r + 1) * f.cols];
            for (i, (g, w)) in row.iter().zip(want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{} row {r} element {i}: {g} vs {w}",
                    f.name
                );
            }
        }
    }
}

#[test]
fn quantizers_match_gguf_py_bytes() {
    let mut checked = 0;
    for f in fixtures() {
        let Some(src) = &f.source else { continue };
        let ours = quantize_matrix(f.ty, src, f.rows, f.cols).unwrap();
        assert!(
            ours == f.blocks,
            "{}: our {} quantizer differs from gguf-py's",
            f.name,
            f.ty
        );
        checked += 1;
    }
    assert!(checked >= 7);
}

/// Dots on real rows: the same bits on every ISA level, close to the float dot.
#[test]
fn real_row_dots_agree_across_isas() {
    for f in fixtures() {
        let x: Vec<f32> = (0..f.cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let act = Activation::new(f.ty, &x).unwrap();
        let mut outs = Vec::new();
        for isa in available_isas() {
            set_max_isa(isa);
            let mut out = vec![0f32; f.rows];
            matvec(&f.blocks, &act, &mut out).unwrap();
            outs.push((isa, out));
        }
        set_max_isa(Isa::Amx);
        let (_, first) = &outs[0];
        for (isa, out) in &outs {
            let same = out
                .iter()
                .zip(first)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{} on {isa}: {out:?} vs scalar {first:?}", f.name);
        }
        for (r, got) in first.iter().enumerate() {
            let w = &f.expected[r * f.cols..(r + 1) * f.cols];
            let exact: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
            let norm: f64 = w.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            // 8-bit activations round each |x| ≤ 1 by at most 1/254.
            let tol = 5.0 * norm / 254.0 / 3f64.sqrt() + 1e-4 * exact.abs();
            assert!(
                (*got as f64 - exact).abs() <= tol,
                "{} row {r}: {got} vs {exact}",
                f.name
            );
        }
    }
}
