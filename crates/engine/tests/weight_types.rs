//! Every weight type works in every matrix: a tiny model whose matrices are all of one type
//! (llama-quantize's `--pure`) must give the logits of the same model with those matrices
//! dequantized to F32 — the only difference left is the 8-bit quantization of activations that
//! llama.cpp's dot products (and ours) use.

use hearth_engine::{LoadOptions, Logits, Model, SessionOptions};
use hearth_gguf::{GgmlType, GgufFile, GgufWriter, Metadata};
use hearth_synth::{Arch, Config, FileType, Preset, SynthOptions, Vocab};

fn vocab() -> Vocab {
    let n = 512;
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    tokens.extend((0..256).map(|b| format!("<0x{b:02X}>")));
    tokens.extend((tokens.len()..n).map(|i| format!("▁w{i}")));
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
    m.set("tokenizer.ggml.scores", vec![0f32; n]);
    m.set("tokenizer.ggml.token_type", types);
    m.set("tokenizer.ggml.bos_token_id", 1u32);
    m.set("tokenizer.ggml.eos_token_id", 2u32);
    Vocab::from_metadata(&m, None).unwrap()
}

fn synth(arch: Arch, ty: FileType, dir: &std::path::Path) -> std::path::PathBuf {
    let opts = SynthOptions {
        config: Config::preset(arch, Preset::Tiny),
        file_type: ty,
        seed: 11,
        threads: 1,
        pure: true,
    };
    let path = dir.join(format!("{arch}-{ty}.gguf"));
    hearth_synth::synthesize(&opts, &vocab(), &|_, _| {})
        .unwrap()
        .write_to_path(&path)
        .unwrap();
    path
}

/// A copy of `path` with every quantized or half-precision tensor dequantized to F32.
fn dequantized_copy(path: &std::path::Path) -> std::path::PathBuf {
    let f = GgufFile::open(path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata().iter() {
        w.set(k, v.clone());
    }
    for t in &f.tensors {
        let mut x = vec![0f32; t.n_elements as usize];
        let (row, data) = (t.row_len() as usize, f.tensor_data(t));
        let row_bytes = hearth_quant::row_bytes(t.ty, row).unwrap();
        for (src, dst) in data.chunks(row_bytes).zip(x.chunks_mut(row)) {
            hearth_quant::dequantize_row(t.ty, src, dst).unwrap();
        }
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.add_tensor(t.name.clone(), &t.dims, GgmlType::F32, bytes)
            .unwrap();
    }
    let out = path.with_extension("f32.gguf");
    w.write_to_path(&out).unwrap();
    out
}

fn logits(path: &std::path::Path) -> Vec<f32> {
    let model = Model::load(
        path,
        &LoadOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let tokens: Vec<u32> = [1]
        .into_iter()
        .chain((0..24).map(|i| 260 + (i * 37) % 250))
        .collect();
    let mut s = model
        .session(SessionOptions {
            n_ctx: 64,
            ..Default::default()
        })
        .unwrap();
    s.eval(&tokens, Logits::All).unwrap().into_vec()
}

/// Correlation of centred logit rows, averaged over positions, and top-1 agreement.
fn compare(a: &[f32], b: &[f32], n_vocab: usize) -> (f64, f64) {
    let (mut corr, mut top1, mut n) = (0.0, 0, 0);
    for (x, y) in a.chunks(n_vocab).zip(b.chunks(n_vocab)) {
        let mx = x.iter().sum::<f32>() / x.len() as f32;
        let my = y.iter().sum::<f32>() / y.len() as f32;
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for (p, q) in x.iter().zip(y) {
            let (p, q) = ((p - mx) as f64, (q - my) as f64);
            xy += p * q;
            xx += p * p;
            yy += q * q;
        }
        corr += xy / (xx * yy).sqrt();
        let am = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0
        };
        top1 += (am(x) == am(y)) as usize;
        n += 1;
    }
    (corr / n as f64, top1 as f64 / n as f64)
}

#[test]
fn every_weight_type_matches_its_dequantized_twin() {
    let dir = std::env::temp_dir().join(format!("hearth-weight-types-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let types = [
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q6K,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q5K,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q4K,
        FileType::Iq4Nl,
        FileType::Iq4Xs,
        FileType::Q3K,
        FileType::Q2K,
    ];
    for arch in [Arch::Llama, Arch::Gemma3] {
        for ty in types {
            let q = synth(arch, ty, &dir);
            let (corr, top1) = compare(&logits(&dequantized_copy(&q)), &logits(&q), 512);
            eprintln!(
                "{arch} {ty}: correlation with its dequantized twin {corr:.5}, top-1 agreement {top1:.2}"
            );
            // Measured ≥ 0.9996 for every type; a wrong block layout or dot product gives ≈ 0.
            assert!(corr >= 0.999, "{arch} {ty}: correlation {corr}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
