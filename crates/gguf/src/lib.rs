//! GGUF: the model file format of llama.cpp and the community (versions 2 and 3).
//!
//! - [`GgufFile::open`] memory-maps a file and validates its header; tensor data stays in the
//!   page cache and is borrowed with [`GgufFile::tensor_data`].
//! - [`GgufWriter`] writes files that llama.cpp loads.
//! - [`Metadata`] has typed accessors; [`keys`] names the keys the engine reads.
//!
//! No math lives here: block arithmetic is in `hearth-quant`.

mod error;
pub mod keys;
mod reader;
pub mod types;
mod value;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub use error::{GgufError, Result};
pub use reader::{Header, parse_header};
pub use types::{GgmlType, QK_K};
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// Arrays of arrays are legal; a bound keeps hostile files from exhausting the stack.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// llama.cpp rejects tensor names of 64 bytes or more (`GGML_MAX_NAME`).
pub const MAX_TENSOR_NAME: usize = 63;

/// Metadata key-value pairs in file order, with lookup by key.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key`, replacing an existing value in place (order is kept).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => self.push(key, value),
        }
    }

    pub(crate) fn push(&mut self, key: String, value: Value) {
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for (_, j) in self.index.iter_mut() {
            if *j > i {
                *j -= 1;
            }
        }
        Some(v)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| GgufError::WrongType {
                key: key.into(),
                expected,
                found: v.value_type().name(),
            }),
        }
    }

    fn required<T>(key: &str, v: Result<Option<T>>) -> Result<T> {
        v?.ok_or_else(|| GgufError::MissingKey(key.into()))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", Value::as_str)
    }
    pub fn str(&self, key: &str) -> Result<&str> {
        Self::required(key, self.opt_str(key))
    }
    /// Any non-negative integer type.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }
    pub fn u64(&self, key: &str) -> Result<u64> {
        Self::required(key, self.opt_u64(key))
    }
    /// Any integer type.
    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>> {
        self.typed(key, "an integer", Value::as_i64)
    }
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.typed(key, "a float", Value::as_f32)
    }
    pub fn f32(&self, key: &str) -> Result<f32> {
        Self::required(key, self.opt_f32(key))
    }
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", Value::as_bool)
    }
    pub fn opt_array(&self, key: &str) -> Result<Option<&Array>> {
        self.typed(key, "an array", Value::as_array)
    }
    pub fn array(&self, key: &str) -> Result<&Array> {
        Self::required(key, self.opt_array(key))
    }
    pub fn opt_strings(&self, key: &str) -> Result<Option<&[String]>> {
        self.typed(key, "an array of strings", |v| v.as_array()?.as_strings())
    }
    pub fn strings(&self, key: &str) -> Result<&[String]> {
        Self::required(key, self.opt_strings(key))
    }

    /// `general.architecture`, e.g. `gemma3`.
    pub fn architecture(&self) -> Result<&str> {
        self.str(keys::ARCHITECTURE)
    }

    /// An architecture-scoped key such as `gemma3.context_length` (`suffix` = `context_length`).
    pub fn arch_key(&self, suffix: &str) -> Result<String> {
        Ok(format!("{}.{suffix}", self.architecture()?))
    }

    pub fn arch_u64(&self, suffix: &str) -> Result<u64> {
        self.u64(&self.arch_key(suffix)?)
    }
    pub fn opt_arch_u64(&self, suffix: &str) -> Result<Option<u64>> {
        self.opt_u64(&self.arch_key(suffix)?)
    }
    pub fn opt_arch_f32(&self, suffix: &str) -> Result<Option<f32>> {
        self.opt_f32(&self.arch_key(suffix)?)
    }
}

/// Where a tensor lives and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (the fastest-varying dimension).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data, relative to the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Validates the shape against the type (whole blocks per row, no overflow).
    pub fn new(name: String, dims: Vec<u64>, ty: GgmlType, offset: u64) -> Result<TensorInfo> {
        let bad = |problem: String| GgufError::BadTensor {
            name: name.clone(),
            problem,
        };
        if dims.len() > MAX_DIMS {
            return Err(bad(format!(
                "{} dimensions (at most {MAX_DIMS})",
                dims.len()
            )));
        }
        // ggml stores element counts as int64.
        let mut n_elements: u64 = 1;
        for &d in &dims {
            n_elements = n_elements
                .checked_mul(d)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| bad(format!("shape {dims:?} overflows the element count")))?;
        }
        let row = dims.first().copied().unwrap_or(1);
        let row_bytes = ty.row_bytes(row).ok_or_else(|| {
            bad(format!(
                "row length {row} is not a multiple of the {ty} block size {}",
                ty.block_len()
            ))
        })?;
        let n_rows = n_elements.checked_div(row).unwrap_or(0);
        let n_bytes = row_bytes
            .checked_mul(n_rows)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| bad(format!("shape {dims:?} overflows the byte size")))?;
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_elements,
            n_bytes,
        })
    }

    /// Rows of `dims[0]` elements.
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
}

enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// A GGUF file with a validated header; tensor data is borrowed from the mapping.
pub struct GgufFile {
    backing: Backing,
    path: Option<PathBuf>,
    pub header: Header,
}

impl std::ops::Deref for GgufFile {
    type Target = Header;
    fn deref(&self) -> &Header {
        &self.header
    }
}

/// [`GgufFile::parameter_counts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParameterCounts {
    pub total: u64,
    /// Read for one token: every parameter but those of the experts it is not routed to.
    pub active: u64,
}

impl GgufFile {
    /// Memory-maps `path` read-only and validates its header.
    ///
    /// The mapping assumes the file is not truncated while open (as llama.cpp does).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(io(std::io::Error::other("is a directory, not a GGUF file")));
        }
        let backing = if meta.len() == 0 {
            Backing::Owned(Vec::new())
        } else {
            // SAFETY: read-only private mapping; we never hand out references that outlive `self`.
            Backing::Mmap(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        let bytes: &[u8] = match &backing {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        };
        let header = parse_header(bytes).map_err(|e| e.in_file(path))?;
        Ok(GgufFile {
            backing,
            path: Some(path.to_owned()),
            header,
        })
    }

    /// Parses an in-memory file.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        let header = parse_header(&bytes)?;
        Ok(GgufFile {
            backing: Backing::Owned(bytes),
            path: None,
            header,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }

    /// Tells the kernel this process no longer needs the mapped pages that lie wholly inside
    /// `start..start + len` (a tensor whose data was copied elsewhere): they leave the resident
    /// set and are read from the file again if touched. No effect on an in-memory file.
    pub fn release(&self, start: usize, len: usize) {
        #[cfg(unix)]
        if let Backing::Mmap(m) = &self.backing {
            const PAGE: usize = 4096;
            let first = start.div_ceil(PAGE) * PAGE;
            let end = (start + len).min(m.len()) / PAGE * PAGE;
            if end > first {
                // SAFETY: the mapping is private and read-only, so dropping its pages loses
                // nothing: a later read faults them back in from the file.
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, end - first)
                };
            }
        }
        #[cfg(not(unix))]
        let _ = (start, len);
    }

    pub fn file_size(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// The parameters of every tensor, and of those the ones one token's forward pass reads:
    /// in a mixture of experts (`{arch}.expert_count` experts in `*_exps` tensors) a token reads
    /// `{arch}.expert_used_count` of them.
    pub fn parameter_counts(&self) -> ParameterCounts {
        let total: u64 = self.tensors.iter().map(|t| t.n_elements).sum();
        let m = self.metadata();
        let count = m.opt_arch_u64(keys::arch::EXPERT_COUNT).ok().flatten();
        let used = m.opt_arch_u64(keys::arch::EXPERT_USED_COUNT).ok().flatten();
        let (Some(n), Some(k)) = (count, used) else {
            return ParameterCounts {
                total,
                active: total,
            };
        };
        let experts: u64 = self
            .tensors
            .iter()
            .filter(|t| t.name.ends_with("_exps.weight"))
            .map(|t| t.n_elements)
            .sum();
        let idle = experts - experts / n.max(1) * k.min(n);
        ParameterCounts {
            total,
            active: total - idle,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// Like [`Header::tensor`] (reached through `Deref`), with an error that names the missing tensor.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name)
            .ok_or_else(|| GgufError::MissingTensor(name.into()))
    }

    /// The raw bytes of a tensor of this file (bounds were validated when the file was opened).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.header.data_offset + t.offset) as usize;
        &self.bytes()[start..start + t.n_bytes as usize]
    }
}

impl Header {
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

#[cfg(test)]
mod tests;
