//! Errors that name the metadata key or value at fault.

use hearth_gguf::GgufError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TokenizerError {
    /// A key is missing or has the wrong type (the GGUF error names the key).
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),

    #[error(
        "tokenizer.ggml.model is {0:?}: hearth supports \"llama\" (SentencePiece) and \"gpt2\" (byte-level BPE)"
    )]
    UnsupportedModel(String),

    #[error(
        "tokenizer.ggml.pre is {0:?}, a pre-tokenizer llama.cpp does not know either; re-convert the model with a current llama.cpp"
    )]
    UnknownPre(String),

    #[error("tokenizer.ggml.pre is {name:?}: {why}")]
    UnsupportedPre { name: String, why: &'static str },

    #[error(
        "tokenizer.ggml.model is \"gpt2\" but the file has no tokenizer.ggml.merges; the BPE tokenizer needs them"
    )]
    MissingMerges,

    #[error("tokenizer.ggml.tokens is empty")]
    EmptyVocab,

    #[error("{key} has {len} entries but there are {n_tokens} tokens")]
    TooShort {
        key: &'static str,
        len: usize,
        n_tokens: usize,
    },

    #[error("tokenizer.ggml.tokens holds {text:?} twice, at ids {first} and {second}")]
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },

    #[error("tokenizer metadata: {0}")]
    Inconsistent(String),
}
