//! The tokenizer's inputs as plain data ([`VocabSpec`]), and reading/writing them as GGUF metadata.

use std::borrow::Cow;

use hearth_gguf::{Array, Metadata, keys};

use crate::error::TokenizerError;
use crate::vocab::{SpecialIds, TokenType};

/// Keys llama.cpp reads that `hearth_gguf::keys` does not name.
pub mod extra_keys {
    pub const FIM_PRE_ID: &str = "tokenizer.ggml.fim_pre_token_id";
    pub const FIM_SUF_ID: &str = "tokenizer.ggml.fim_suf_token_id";
    pub const FIM_MID_ID: &str = "tokenizer.ggml.fim_mid_token_id";
    pub const FIM_PAD_ID: &str = "tokenizer.ggml.fim_pad_token_id";
    pub const FIM_REP_ID: &str = "tokenizer.ggml.fim_rep_token_id";
    pub const FIM_SEP_ID: &str = "tokenizer.ggml.fim_sep_token_id";
    /// Deprecated names of the FIM ids; when present they override the new ones (as in llama.cpp).
    pub const PREFIX_ID: &str = "tokenizer.ggml.prefix_token_id";
    pub const SUFFIX_ID: &str = "tokenizer.ggml.suffix_token_id";
    pub const MIDDLE_ID: &str = "tokenizer.ggml.middle_token_id";
}

/// Everything a tokenizer is built from, as plain data: what the `tokenizer.ggml.*` keys hold.
/// Build one by hand (e.g. for a synthetic model), turn it into a [`crate::Tokenizer`] with
/// [`crate::Tokenizer::from_spec`], and write it into a GGUF with [`VocabSpec::write_metadata`].
/// `None` means "key absent": the loader then applies llama.cpp's default for the model type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VocabSpec {
    /// `tokenizer.ggml.model`: `"llama"` (SentencePiece) or `"gpt2"` (byte-level BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`: the BPE pre-tokenizer (ignored for `"llama"`).
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    /// SentencePiece merge scores (higher merges first).
    pub scores: Option<Vec<f32>>,
    pub token_types: Option<Vec<TokenType>>,
    /// BPE merges, `"left right"`, highest priority first. Required for `"gpt2"`.
    pub merges: Option<Vec<String>>,
    pub special: SpecialIds,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    /// `general.name`: llama.cpp sets per-token attributes by model name (Phi-3's specials strip
    /// the whitespace after them). Not written by [`VocabSpec::write_metadata`].
    pub model_name: Option<String>,
    /// `general.architecture` (used the same way). Not written by [`VocabSpec::write_metadata`].
    pub architecture: Option<String>,
}

/// A borrowed view of a [`VocabSpec`], so that loading from metadata copies nothing large.
pub(crate) struct Source<'a> {
    pub model: &'a str,
    pub pre: Option<&'a str>,
    pub tokens: &'a [String],
    pub scores: Option<Cow<'a, [f32]>>,
    pub types: Option<Cow<'a, [TokenType]>>,
    pub merges: Option<&'a [String]>,
    pub special: SpecialIds,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    pub model_name: Option<&'a str>,
    pub architecture: Option<&'a str>,
}

type IdField = fn(&mut SpecialIds) -> &mut Option<u32>;

/// `(field, key)` for every special id llama.cpp reads, in its order (later keys win).
fn id_keys() -> [(IdField, &'static str); 17] {
    use extra_keys::*;
    [
        (|s| &mut s.bos, keys::TOKENIZER_BOS_ID),
        (|s| &mut s.eos, keys::TOKENIZER_EOS_ID),
        (|s| &mut s.eot, keys::TOKENIZER_EOT_ID),
        (|s| &mut s.eom, keys::TOKENIZER_EOM_ID),
        (|s| &mut s.unk, keys::TOKENIZER_UNK_ID),
        (|s| &mut s.sep, keys::TOKENIZER_SEP_ID),
        (|s| &mut s.pad, keys::TOKENIZER_PAD_ID),
        (|s| &mut s.mask, keys::TOKENIZER_MASK_ID),
        (|s| &mut s.fim_pre, FIM_PRE_ID),
        (|s| &mut s.fim_suf, FIM_SUF_ID),
        (|s| &mut s.fim_mid, FIM_MID_ID),
        (|s| &mut s.fim_pad, FIM_PAD_ID),
        (|s| &mut s.fim_rep, FIM_REP_ID),
        (|s| &mut s.fim_sep, FIM_SEP_ID),
        (|s| &mut s.fim_pre, PREFIX_ID),
        (|s| &mut s.fim_suf, SUFFIX_ID),
        (|s| &mut s.fim_mid, MIDDLE_ID),
    ]
}

impl<'a> Source<'a> {
    pub fn from_metadata(md: &'a Metadata) -> Result<Source<'a>, TokenizerError> {
        let scores = match md.opt_array(keys::TOKENIZER_SCORES)? {
            None => None,
            Some(a) => Some(match a.as_f32s() {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(numbers(a, keys::TOKENIZER_SCORES)?),
            }),
        };
        let types = match md.opt_array(keys::TOKENIZER_TOKEN_TYPE)? {
            None => None,
            Some(a) => {
                let ints = a.to_i64s().ok_or_else(|| {
                    TokenizerError::Inconsistent(format!(
                        "{} is an array of {}, expected integers",
                        keys::TOKENIZER_TOKEN_TYPE,
                        a.elem_type().name()
                    ))
                })?;
                Some(Cow::Owned(
                    ints.into_iter().map(TokenType::from_i64).collect(),
                ))
            }
        };
        let mut special = SpecialIds::default();
        for (field, key) in id_keys() {
            // A negative id means "none"; ids past u32 are out of range and ignored later.
            if let Some(v) = md.opt_i64(key)?
                && v >= 0
            {
                *field(&mut special) = Some(u32::try_from(v).unwrap_or(u32::MAX));
            }
        }
        Ok(Source {
            model: md.str(keys::TOKENIZER_MODEL)?,
            pre: md.opt_str(keys::TOKENIZER_PRE)?,
            tokens: md.strings(keys::TOKENIZER_TOKENS)?,
            scores,
            types,
            merges: md.opt_strings(keys::TOKENIZER_MERGES)?,
            special,
            add_bos: md.opt_bool(keys::TOKENIZER_ADD_BOS)?,
            add_eos: md.opt_bool(keys::TOKENIZER_ADD_EOS)?,
            add_space_prefix: md.opt_bool(keys::TOKENIZER_ADD_SPACE_PREFIX)?,
            model_name: md.opt_str(keys::NAME)?,
            architecture: md.opt_str(keys::ARCHITECTURE)?,
        })
    }

    fn into_spec(self) -> VocabSpec {
        VocabSpec {
            model: self.model.to_string(),
            pre: self.pre.map(str::to_string),
            tokens: self.tokens.to_vec(),
            scores: self.scores.map(Cow::into_owned),
            token_types: self.types.map(Cow::into_owned),
            merges: self.merges.map(<[String]>::to_vec),
            special: self.special,
            add_bos: self.add_bos,
            add_eos: self.add_eos,
            add_space_prefix: self.add_space_prefix,
            model_name: self.model_name.map(str::to_string),
            architecture: self.architecture.map(str::to_string),
        }
    }
}

/// Scores stored as integers (llama.cpp accepts i32 scores too).
fn numbers(a: &Array, key: &str) -> Result<Vec<f32>, TokenizerError> {
    if let Array::F64(v) = a {
        return Ok(v.iter().map(|&x| x as f32).collect());
    }
    let ints = a.to_i64s().ok_or_else(|| {
        TokenizerError::Inconsistent(format!(
            "{key} is an array of {}, expected f32",
            a.elem_type().name()
        ))
    })?;
    Ok(ints.into_iter().map(|x| x as f32).collect())
}

impl VocabSpec {
    /// Reads the `tokenizer.ggml.*` keys (and `general.name`/`general.architecture`).
    pub fn from_metadata(md: &Metadata) -> Result<VocabSpec, TokenizerError> {
        Ok(Source::from_metadata(md)?.into_spec())
    }

    pub(crate) fn source(&self) -> Source<'_> {
        Source {
            model: &self.model,
            pre: self.pre.as_deref(),
            tokens: &self.tokens,
            scores: self.scores.as_deref().map(Cow::Borrowed),
            types: self.token_types.as_deref().map(Cow::Borrowed),
            merges: self.merges.as_deref(),
            special: self.special,
            add_bos: self.add_bos,
            add_eos: self.add_eos,
            add_space_prefix: self.add_space_prefix,
            model_name: self.model_name.as_deref(),
            architecture: self.architecture.as_deref(),
        }
    }

    /// Writes the `tokenizer.ggml.*` keys that are set, in the types llama.cpp expects
    /// (token types as i32, scores as f32, ids as u32).
    pub fn write_metadata(&self, md: &mut Metadata) {
        md.set(keys::TOKENIZER_MODEL, self.model.as_str());
        if let Some(pre) = &self.pre {
            md.set(keys::TOKENIZER_PRE, pre.as_str());
        }
        md.set(keys::TOKENIZER_TOKENS, self.tokens.clone());
        if let Some(scores) = &self.scores {
            md.set(keys::TOKENIZER_SCORES, scores.clone());
        }
        if let Some(types) = &self.token_types {
            let types: Vec<i32> = types.iter().map(|&t| t as i32).collect();
            md.set(keys::TOKENIZER_TOKEN_TYPE, types);
        }
        if let Some(merges) = &self.merges {
            md.set(keys::TOKENIZER_MERGES, merges.clone());
        }
        let mut special = self.special;
        // The deprecated FIM keys are not written: the current ones carry the same ids.
        for (field, key) in id_keys().into_iter().take(14) {
            if let Some(id) = *field(&mut special) {
                md.set(key, id);
            }
        }
        for (key, value) in [
            (keys::TOKENIZER_ADD_BOS, self.add_bos),
            (keys::TOKENIZER_ADD_EOS, self.add_eos),
            (keys::TOKENIZER_ADD_SPACE_PREFIX, self.add_space_prefix),
        ] {
            if let Some(v) = value {
                md.set(key, v);
            }
        }
    }
}
