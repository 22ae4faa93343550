//! Errors that name what is wrong with a file, where, and (when it helps) what to do.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A parse error with the file it happened in.
    #[error("{path}: {kind}")]
    InFile { path: PathBuf, kind: Box<GgufError> },

    #[error("not a GGUF file: the first four bytes are {found:?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("file is {len} bytes: too short for a GGUF header (24 bytes)")]
    TooShort { len: u64 },
    #[error(
        "GGUF version {0} is not supported (hearth reads versions 2 and 3; re-convert the model with a current llama.cpp)"
    )]
    UnsupportedVersion(u32),
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error("truncated at byte {offset}: need {needed} bytes for {what}, only {available} remain")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("{what} is {count}, more than the {available} bytes left in the file can hold")]
    AbsurdCount {
        what: String,
        count: u64,
        available: u64,
    },
    #[error("{what} at byte {offset} is not valid UTF-8")]
    BadUtf8 { what: String, offset: u64 },
    #[error("metadata key {key:?}: unknown value type id {id}")]
    UnknownValueType { key: String, id: u32 },
    #[error("metadata key {key:?}: arrays nested deeper than {max} levels")]
    TooDeep { key: String, max: usize },
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    #[error("metadata key {key:?}: {problem}")]
    BadValue { key: String, problem: String },
    #[error("tensor {0:?} appears twice")]
    DuplicateTensor(String),
    #[error("tensor {name:?}: unknown or retired ggml type id {id}")]
    UnknownTensorType { name: String, id: u32 },
    #[error("tensor {name:?}: {problem}")]
    BadTensor { name: String, problem: String },
    #[error("tensors {a:?} and {b:?} overlap in the data section")]
    Overlap { a: String, b: String },

    #[error("missing metadata key {0:?}")]
    MissingKey(String),
    #[error("metadata key {key:?} is {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("no tensor named {0:?}")]
    MissingTensor(String),

    #[error("writer: {0}")]
    Write(String),
}

impl GgufError {
    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> GgufError {
        match self {
            e @ (GgufError::Io { .. } | GgufError::InFile { .. }) => e,
            e => GgufError::InFile {
                path: path.into(),
                kind: Box::new(e),
            },
        }
    }

    /// The error without the file name wrapper.
    pub fn kind(&self) -> &GgufError {
        match self {
            GgufError::InFile { kind, .. } => kind,
            e => e,
        }
    }
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
