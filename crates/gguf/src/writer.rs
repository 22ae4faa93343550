//! Writing GGUF v3 files in the layout llama.cpp expects: tensors in order, each at an offset that
//! is a multiple of the alignment, contiguous apart from padding.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{GgufError, Result};
use crate::types::GgmlType;
use crate::value::{Array, Value};
use crate::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, MAX_TENSOR_NAME, Metadata, TensorInfo, keys};

struct PendingTensor<'a> {
    info: TensorInfo,
    data: Cow<'a, [u8]>,
}

/// Collects metadata and tensors, then writes a file.
pub struct GgufWriter<'a> {
    pub metadata: Metadata,
    tensors: Vec<PendingTensor<'a>>,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> GgufWriter<'a> {
    pub fn new() -> Self {
        GgufWriter {
            metadata: Metadata::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets a metadata value (replacing an earlier one with the same key).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.metadata.set(key, value);
        self
    }

    fn alignment(&self) -> Result<u64> {
        match self.metadata.get(keys::ALIGNMENT) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => Ok(*a as u64),
            Some(_) => Err(GgufError::Write(format!(
                "{} must be a power-of-two u32",
                keys::ALIGNMENT
            ))),
        }
    }

    /// Adds a tensor; `dims` in ggml order (`dims[0]` = row length). `data` must be exactly the
    /// tensor's size in `ty`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<&mut Self> {
        let name = name.into();
        let data = data.into();
        if name.len() > MAX_TENSOR_NAME {
            return Err(GgufError::Write(format!(
                "tensor name {name:?} is longer than {MAX_TENSOR_NAME} bytes"
            )));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(GgufError::Write(format!(
                "tensor {name:?}: {} dimensions (1 to {MAX_DIMS})",
                dims.len()
            )));
        }
        if self.tensors.iter().any(|t| t.info.name == name) {
            return Err(GgufError::DuplicateTensor(name));
        }
        let info = TensorInfo::new(name, dims.to_vec(), ty, 0)?;
        if info.n_bytes != data.len() as u64 {
            return Err(GgufError::Write(format!(
                "tensor {:?}: {} bytes of data for shape {:?} in {ty}, expected {}",
                info.name,
                data.len(),
                info.dims,
                info.n_bytes
            )));
        }
        self.tensors.push(PendingTensor { info, data });
        Ok(self)
    }

    /// The tensors added so far, in order: their descriptions and data.
    pub fn tensors(&self) -> impl Iterator<Item = (&TensorInfo, &[u8])> {
        self.tensors.iter().map(|t| (&t.info, &t.data[..]))
    }

    /// Writes the file to `w`.
    pub fn write(&self, w: &mut impl Write) -> Result<()> {
        let io = |e: std::io::Error| GgufError::Write(e.to_string());
        let alignment = self.alignment()?;
        let mut head = Vec::new();
        head.extend_from_slice(&GGUF_MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in self.metadata.iter() {
            put_str(&mut head, k);
            head.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut head, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut head, &t.info.name);
            head.extend_from_slice(&(t.info.dims.len() as u32).to_le_bytes());
            for d in &t.info.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.info.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.info.n_bytes).div_ceil(alignment) * alignment;
        }
        let pad = |len: u64| vec![0u8; (len.div_ceil(alignment) * alignment - len) as usize];
        head.extend(pad(head.len() as u64));
        w.write_all(&head).map_err(io)?;
        for t in &self.tensors {
            w.write_all(&t.data).map_err(io)?;
            w.write_all(&pad(t.data.len() as u64)).map_err(io)?;
        }
        w.flush().map_err(io)
    }

    /// Writes to `path` through a temporary file in the same directory, so a failed write never
    /// leaves a half-written model under the final name.
    pub fn write_to_path(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension(format!(
            "{}tmp",
            path.extension()
                .map(|e| format!("{}.", e.to_string_lossy()))
                .unwrap_or_default()
        ));
        let result = (|| {
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io)?);
            self.write(&mut w)?;
            w.into_inner()
                .map_err(|e| io(e.into_error()))?
                .sync_all()
                .map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|x| put_array(out, x)),
    }
}
