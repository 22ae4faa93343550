//! Tokenizers from GGUF metadata (SentencePiece and BPE), exact to llama.cpp.
//!
//! [`Tokenizer::from_gguf`] reads the `tokenizer.ggml.*` keys of a model file and encodes and
//! decodes the way llama.cpp (0.3.36, `llama-vocab.cpp`) does, token for token:
//!
//! 1. `special` cuts special tokens out of the text: user-defined tokens always (Gemma's
//!    `"\n"`, runs of spaces, ...), control tokens (`<start_of_turn>`) only with `parse_special`.
//! 2. Each remaining text fragment is encoded by the model's algorithm:
//!    - `llama`: `spm` merges characters by score, with `<0xNN>` byte fallback;
//!    - `gpt2`: `pretokenize` splits words per `tokenizer.ggml.pre`, and `bpe` merges by rank.
//!
//! Decoding reproduces `llama_token_to_piece` and `llama_detokenize`.

mod bpe;
mod decode;
mod error;
mod pretokenize;
mod rules;
mod spec;
mod special;
mod spm;
mod unicode;
#[rustfmt::skip]
mod unicode_data;
mod vocab;

use std::path::Path;

use hearth_gguf::{GgufFile, Metadata};

use crate::bpe::{BpeScratch, MergeTable};
use crate::pretokenize::{PreTokenizer, SplitScratch};
use crate::spec::Source;
use crate::special::{Fragment, SpecialMatcher};
use crate::spm::SpmScratch;

pub use crate::error::TokenizerError;
pub use crate::spec::{VocabSpec, extra_keys};
pub use crate::vocab::{SpecialIds, TokenAttrs, TokenType};

/// Which algorithm `tokenizer.ggml.model` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerModel {
    /// `llama`: SentencePiece-style merges by score.
    Spm,
    /// `gpt2`: byte-level BPE with merge ranks and a pre-tokenizer.
    Bpe,
}

/// Options for [`Tokenizer::encode_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    pub add_bos: bool,
    pub add_eos: bool,
    /// Match control tokens (`<start_of_turn>`) in the text. Leave off for user content, so that
    /// it can never forge markup; user-defined tokens are matched either way.
    pub parse_special: bool,
}

/// Options for [`Tokenizer::decode_with`] (llama.cpp `llama_detokenize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Drop a leading BOS and a trailing EOS when the model adds them.
    pub remove_special: bool,
    /// Render control tokens as their text (otherwise they render as nothing).
    pub unparse_special: bool,
}

enum Kind {
    Spm {
        /// `<0xNN>` (or the one-byte token) for each byte.
        byte_tokens: Box<[Option<u32>; 256]>,
    },
    Bpe {
        merges: MergeTable,
        pre: PreTokenizer,
        ignore_merges: bool,
    },
}

/// A vocabulary with its encoder and decoder.
pub struct Tokenizer {
    vocab: vocab::Vocab,
    kind: Kind,
    ids: SpecialIds,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    /// End-of-generation ids, sorted.
    eog: Vec<u32>,
    specials: SpecialMatcher,
    pre_name: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model())
            .field("pre", &self.pre_name)
            .field("n_vocab", &self.n_vocab())
            .field("special", &self.ids)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from a model's metadata (only the `tokenizer.*` and `general.*` keys
    /// are read, so a full model file or a vocab-only file both work).
    pub fn from_gguf(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        Self::build(Source::from_metadata(md)?)
    }

    /// Opens a GGUF file and builds the tokenizer from its metadata.
    pub fn from_gguf_file(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let file = GgufFile::open(path)?;
        Self::from_gguf(file.metadata())
    }

    /// Builds the tokenizer from plain data (see [`VocabSpec`]).
    pub fn from_spec(spec: &VocabSpec) -> Result<Tokenizer, TokenizerError> {
        Self::build(spec.source())
    }

    /// llama.cpp's `llama_vocab::impl::load`, for the `llama` and `gpt2` models.
    fn build(src: Source<'_>) -> Result<Tokenizer, TokenizerError> {
        let spm = match src.model {
            "llama" => true,
            "gpt2" => false,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        // Per-model defaults, before the metadata overrides them.
        let mut ids = SpecialIds::default();
        let (mut add_bos, mut add_space_prefix, clean_spaces);
        let mut bpe_parts = None;
        if spm {
            (ids.bos, ids.eos, ids.unk) = (Some(1), Some(2), Some(0));
            add_bos = true;
            add_space_prefix = true;
            clean_spaces = false;
        } else {
            let merges = src.merges.ok_or(TokenizerError::MissingMerges)?;
            let pre_name = src.pre.unwrap_or("");
            let cfg = pretokenize::config(pre_name)?;
            (ids.bos, ids.eos) = (Some(11), Some(11));
            if cfg.no_default_bos {
                ids.bos = None;
            }
            add_bos = cfg.add_bos;
            add_space_prefix = false;
            clean_spaces = cfg.clean_spaces;
            bpe_parts = Some((
                merges,
                PreTokenizer::new(pre_name, cfg.stages)?,
                cfg.ignore_merges,
            ));
        }
        if let Some(v) = src.add_space_prefix {
            add_space_prefix = v;
        }

        let mut vocab = vocab::Vocab::new(src.tokens, src.scores.as_deref(), src.types.as_deref())?;
        let n = vocab.len() as u32;
        // Defaults outside the vocabulary are disabled; metadata ids outside it are ignored.
        let mut given = src.special;
        for (slot, from_md) in ids_mut(&mut ids).into_iter().zip(ids_mut(&mut given)) {
            if slot.is_some_and(|id| id >= n) {
                *slot = None;
            }
            if let Some(id) = *from_md
                && id < n
            {
                *slot = Some(id);
            }
        }
        if let Some(v) = src.add_bos {
            add_bos = v;
        }
        let add_eos = src.add_eos.unwrap_or(false);

        let eog = rules::detect_special_tokens(&mut vocab, &mut ids);
        let specials = SpecialMatcher::new(&vocab);
        rules::apply_model_rules(&mut vocab, &specials, &src);

        let kind = match bpe_parts {
            None => {
                let mut byte_tokens = Box::new([None; 256]);
                for (b, slot) in byte_tokens.iter_mut().enumerate() {
                    // llama.cpp `byte_to_token`: `<0xNN>`, else the byte as a one-byte token.
                    // Where neither exists llama.cpp throws; we fall back to the unknown token.
                    *slot = vocab
                        .find(format!("<0x{b:02X}>").as_bytes())
                        .or_else(|| vocab.find(&[b as u8]))
                        .or(ids.unk);
                }
                Kind::Spm { byte_tokens }
            }
            Some((merges, pre, ignore_merges)) => Kind::Bpe {
                merges: MergeTable::new(merges),
                pre,
                ignore_merges,
            },
        };
        Ok(Tokenizer {
            vocab,
            kind,
            ids,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            eog,
            specials,
            pre_name: src.pre.map(str::to_string),
        })
    }

    /// Encodes `text`. `add_special` adds BOS/EOS as the model's metadata asks; `parse_special`
    /// matches control tokens in the text (see [`EncodeOptions::parse_special`]).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.encode_with(
            text,
            EncodeOptions {
                add_bos: add_special && self.add_bos,
                add_eos: add_special && self.add_eos,
                parse_special,
            },
        )
    }

    /// Encodes `text` with BOS/EOS chosen by the caller. A BOS or EOS the vocabulary does not
    /// have is left out.
    pub fn encode_with(&self, text: &str, opts: EncodeOptions) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if opts.add_bos
            && let Some(bos) = self.ids.bos
        {
            out.push(bos);
        }
        let mut fragments = Vec::new();
        self.specials
            .partition(&self.vocab, text, opts.parse_special, &mut fragments);
        match &self.kind {
            Kind::Spm { byte_tokens } => {
                let mut scratch = SpmScratch::default();
                let mut buf = String::new();
                // llama.cpp adds the space prefix to the first fragment and to any fragment that
                // follows a special token.
                let mut prev_special = true;
                for fragment in &fragments {
                    match fragment {
                        Fragment::Token(id) => {
                            out.push(*id);
                            prev_special = true;
                        }
                        Fragment::Text(range) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('▁');
                            }
                            for c in text[range.clone()].chars() {
                                buf.push(if c == ' ' { '▁' } else { c });
                            }
                            spm::encode(&self.vocab, byte_tokens, &buf, &mut scratch, &mut out);
                            prev_special = false;
                        }
                    }
                }
            }
            Kind::Bpe {
                merges,
                pre,
                ignore_merges,
            } => {
                let mut split = SplitScratch::default();
                let mut scratch = BpeScratch::default();
                let mut words = Vec::new();
                let mut encoded = String::new();
                for fragment in &fragments {
                    match fragment {
                        Fragment::Token(id) => out.push(*id),
                        Fragment::Text(range) => {
                            let piece = &text[range.clone()];
                            words.clear();
                            pre.split(piece, &mut split, &mut words);
                            for word in &words {
                                encoded.clear();
                                encoded.extend(
                                    piece.as_bytes()[word.clone()]
                                        .iter()
                                        .map(|&b| unicode::byte_to_char(b)),
                                );
                                bpe::encode_word(
                                    &self.vocab,
                                    merges,
                                    *ignore_merges,
                                    &encoded,
                                    &mut scratch,
                                    &mut out,
                                );
                            }
                        }
                    }
                }
            }
        }
        if opts.add_eos
            && let Some(eos) = self.ids.eos
        {
            out.push(eos);
        }
        out
    }

    /// The bytes a token stands for (llama.cpp `llama_token_to_piece` with `lstrip = 0`). A piece
    /// can be part of a UTF-8 sequence (byte tokens). Control and unknown tokens render as their
    /// text only with `special`; an id outside the vocabulary renders as nothing.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_piece(id, special, false, &mut out);
        out
    }

    fn append_piece(&self, id: u32, special: bool, strip_space: bool, out: &mut Vec<u8>) {
        if id as usize >= self.vocab.len() {
            return;
        }
        let attrs = self.vocab.attrs(id);
        if !special && attrs.has(TokenAttrs::UNKNOWN | TokenAttrs::CONTROL) {
            return;
        }
        let start = out.len();
        let text = self.vocab.text(id);
        if attrs.has(TokenAttrs::UNKNOWN | TokenAttrs::CONTROL | TokenAttrs::USER_DEFINED) {
            out.extend_from_slice(text.as_bytes());
        } else if attrs.has(TokenAttrs::NORMAL) {
            match self.kind {
                Kind::Spm { .. } => {
                    let mut buf = [0u8; 4];
                    for c in text.chars() {
                        let c = if c == '▁' { ' ' } else { c };
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
                Kind::Bpe { .. } => decode::decode_byte_level(text, out),
            }
        } else if attrs.is_byte() {
            out.push(decode::byte_of_byte_token(text));
        }
        // `lstrip`: llama.cpp drops at most one leading space here.
        if strip_space && out.get(start) == Some(&b' ') {
            out.remove(start);
        }
    }

    /// Decodes to text (invalid UTF-8 from partial byte sequences becomes U+FFFD). `special`
    /// renders control tokens as their text, like llama.cpp's `common_detokenize(..., special)`.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let opts = DecodeOptions {
            remove_special: false,
            unparse_special: special,
        };
        String::from_utf8_lossy(&self.decode_with(ids, opts)).into_owned()
    }

    /// Decodes to bytes (llama.cpp `llama_detokenize`).
    pub fn decode_with(&self, ids: &[u32], opts: DecodeOptions) -> Vec<u8> {
        let mut ids = ids;
        // SentencePiece's prefix space comes off the first piece, unless a BOS is removed.
        let mut strip_space = self.add_space_prefix;
        if opts.remove_special
            && self.add_bos
            && ids.first().is_some_and(|&f| Some(f) == self.ids.bos)
        {
            strip_space = false;
            ids = &ids[1..];
        }
        if opts.remove_special
            && self.add_eos
            && ids.last().is_some_and(|&l| Some(l) == self.ids.eos)
        {
            ids = &ids[..ids.len() - 1];
        }
        let mut out = Vec::new();
        for &id in ids {
            self.append_piece(id, opts.unparse_special, strip_space, &mut out);
            strip_space = false;
        }
        if self.clean_spaces {
            decode::clean_up_spaces(&mut out);
        }
        out
    }

    pub fn model(&self) -> TokenizerModel {
        match self.kind {
            Kind::Spm { .. } => TokenizerModel::Spm,
            Kind::Bpe { .. } => TokenizerModel::Bpe,
        }
    }

    /// `tokenizer.ggml.pre` as given in the metadata.
    pub fn pre(&self) -> Option<&str> {
        self.pre_name.as_deref()
    }

    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    /// BPE merges (0 for SentencePiece).
    pub fn n_merges(&self) -> usize {
        match &self.kind {
            Kind::Spm { .. } => 0,
            Kind::Bpe { merges, .. } => merges.len(),
        }
    }

    pub fn token_text(&self, id: u32) -> Option<&str> {
        (id < self.vocab.len() as u32).then(|| self.vocab.text(id))
    }

    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        (id < self.vocab.len() as u32).then(|| self.vocab.token_type(id))
    }

    /// Attributes after llama.cpp's load-time rules (see [`TokenAttrs`]).
    pub fn token_attrs(&self, id: u32) -> Option<TokenAttrs> {
        (id < self.vocab.len() as u32).then(|| self.vocab.attrs(id))
    }

    pub fn token_score(&self, id: u32) -> Option<f32> {
        (id < self.vocab.len() as u32).then(|| self.vocab.score(id))
    }

    /// The token whose text is exactly `text`, of any type.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.find(text.as_bytes())
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.token_attrs(id).is_some_and(|a| a.is_control())
    }

    pub fn special_ids(&self) -> &SpecialIds {
        &self.ids
    }
    pub fn bos(&self) -> Option<u32> {
        self.ids.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.ids.eos
    }
    pub fn eot(&self) -> Option<u32> {
        self.ids.eot
    }
    pub fn eom(&self) -> Option<u32> {
        self.ids.eom
    }
    pub fn unk(&self) -> Option<u32> {
        self.ids.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.ids.pad
    }

    /// Whether `encode(.., add_special = true, ..)` adds a BOS / an EOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }
    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether generation stops at `id` (EOS, EOT, EOM and tokens such as `<end_of_turn>`,
    /// `<|im_end|>`, `<|eot_id|>`, as llama.cpp's `llama_vocab_is_eog`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Special tokens in the order the partitioner tries them (longest text first).
    pub fn special_tokens(&self) -> &[u32] {
        self.specials.order()
    }
}

fn ids_mut(ids: &mut SpecialIds) -> [&mut Option<u32>; 14] {
    let SpecialIds {
        bos,
        eos,
        eot,
        eom,
        unk,
        sep,
        pad,
        mask,
        fim_pre,
        fim_suf,
        fim_mid,
        fim_pad,
        fim_rep,
        fim_sep,
    } = ids;
    [
        bos, eos, eot, eom, unk, sep, pad, mask, fim_pre, fim_suf, fim_mid, fim_pad, fim_rep,
        fim_sep,
    ]
}
