//! Errors that name the file, the tensor or the key, and what to do about them.

use std::path::PathBuf;

use hearth_gguf::GgufError;
use hearth_quant::QuantError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    /// The file could not be opened or is not a valid GGUF file.
    #[error("{0}")]
    Gguf(#[from] GgufError),

    /// Something about the model in `path` that hearth cannot run.
    #[error("{path}: {problem}")]
    Model { path: PathBuf, problem: String },

    #[error(
        "the prompt does not fit the context: {n_past} tokens are cached and {n_new} more would \
         make {total}, over the context size of {n_ctx}; start a new session, shorten the prompt \
         or ask for a larger context (up to the model's {n_ctx_train})"
    )]
    ContextFull {
        n_past: usize,
        n_new: usize,
        total: usize,
        n_ctx: usize,
        n_ctx_train: usize,
    },

    #[error("token id {id} at batch index {index} is outside the vocabulary of {n_vocab} tokens")]
    BadToken {
        id: u32,
        index: usize,
        n_vocab: usize,
    },

    #[error("eval was called with no tokens")]
    EmptyBatch,

    #[error("cannot truncate to {n} tokens: only {n_past} are cached")]
    BadTruncate { n: usize, n_past: usize },

    #[error("{0}")]
    Quant(#[from] QuantError),

    /// The operating system refused memory or a mapping.
    #[error("{0}")]
    Io(String),

    /// Session options that cannot work together or with this model.
    #[error("{0}")]
    Options(String),

    #[error("could not start the thread pool: {0}")]
    ThreadPool(String),
}

impl EngineError {
    pub(crate) fn model(path: &std::path::Path, problem: impl Into<String>) -> EngineError {
        EngineError::Model {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
