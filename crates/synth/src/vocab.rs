//! Taking a real vocabulary from a GGUF file (a vocab-only file or any model), optionally cut to
//! its first `n` tokens so tiny models stay tiny.

use std::collections::HashSet;

use hearth_gguf::{Array, GgufFile, Metadata, Value, keys};

use crate::SynthError;

/// The `tokenizer.*` keys of a vocabulary source.
pub struct Vocab {
    pub entries: Vec<(String, Value)>,
    pub n_vocab: usize,
}

/// Special-token id keys that must point inside a truncated vocabulary.
const ID_KEYS: [&str; 9] = [
    keys::TOKENIZER_BOS_ID,
    keys::TOKENIZER_EOS_ID,
    keys::TOKENIZER_EOT_ID,
    keys::TOKENIZER_EOM_ID,
    keys::TOKENIZER_UNK_ID,
    keys::TOKENIZER_SEP_ID,
    keys::TOKENIZER_PAD_ID,
    keys::TOKENIZER_MASK_ID,
    "tokenizer.ggml.cls_token_id",
];

impl Vocab {
    pub fn from_file(file: &GgufFile, n_vocab: Option<usize>) -> Result<Vocab, SynthError> {
        let source = || {
            file.path()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        Self::from_metadata(file.metadata(), n_vocab).map_err(|e| match e {
            SynthError::Usage(m) => SynthError::Usage(format!("vocabulary {}: {m}", source())),
            e => e,
        })
    }

    pub fn from_metadata(m: &Metadata, n_vocab: Option<usize>) -> Result<Vocab, SynthError> {
        let tokens = m.strings(keys::TOKENIZER_TOKENS)?;
        let total = tokens.len();
        let n = n_vocab.unwrap_or(total);
        if n == 0 || n > total {
            return Err(SynthError::Usage(format!(
                "--n-vocab {n}: the vocabulary has {total} tokens"
            )));
        }
        let kept: HashSet<&str> = tokens[..n].iter().map(String::as_str).collect();
        let mut entries = Vec::new();
        for (k, v) in m.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
            let v = match (k, v) {
                (keys::TOKENIZER_MERGES, Value::Array(Array::String(merges))) if n < total => {
                    // A merge survives if both halves and the merged token are still in the vocabulary.
                    let keep = merges.iter().filter(|mg| {
                        mg.split_once(' ').is_some_and(|(a, b)| {
                            kept.contains(a)
                                && kept.contains(b)
                                && kept.contains(format!("{a}{b}").as_str())
                        })
                    });
                    Value::Array(Array::String(keep.cloned().collect()))
                }
                (_, Value::Array(a)) if a.len() == total && n < total => {
                    Value::Array(truncate(a, n))
                }
                (k, v) if ID_KEYS.contains(&k) && n < total => match v.as_u64() {
                    Some(id) if (id as usize) < n => v.clone(),
                    _ => continue,
                },
                _ => v.clone(),
            };
            entries.push((k.to_string(), v));
        }
        Ok(Vocab {
            entries,
            n_vocab: n,
        })
    }
}

fn truncate(a: &Array, n: usize) -> Array {
    match a {
        Array::String(v) => Array::String(v[..n].to_vec()),
        Array::F32(v) => Array::F32(v[..n].to_vec()),
        Array::I32(v) => Array::I32(v[..n].to_vec()),
        Array::U32(v) => Array::U32(v[..n].to_vec()),
        Array::U8(v) => Array::U8(v[..n].to_vec()),
        Array::I8(v) => Array::I8(v[..n].to_vec()),
        other => other.clone(),
    }
}
