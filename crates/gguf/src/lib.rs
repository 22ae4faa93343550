//! GGUF: the model file format of llama.cpp and the community.
pub mod types;
pub use types::{GgmlType, QK_K};
