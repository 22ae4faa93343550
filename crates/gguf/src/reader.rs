//! Parsing and validating a GGUF header from untrusted bytes.
//!
//! Every count and length read from the file is checked against the bytes that remain before
//! anything is allocated for it, so a hostile header cannot make us allocate more than the file's
//! own size, and no input makes the parser panic (see `fuzz/`).

use std::collections::HashMap;

use crate::error::{GgufError, Result};
use crate::types::GgmlType;
use crate::value::{Array, Value, ValueType};
use crate::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, Metadata, TensorInfo};

/// The parsed, validated header of a GGUF file: everything except the tensor data.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub(crate) tensor_index: HashMap<String, usize>,
    /// `general.alignment`, or 32.
    pub alignment: u64,
    /// Absolute file offset of the data section (tensor offsets are relative to it).
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        Ok(self
            .take(N as u64, what)?
            .try_into()
            .expect("take returned N bytes"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("the length of {}", what()))?;
        let start = self.pos as u64;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::BadUtf8 {
                what: what(),
                offset: start,
            }),
        }
    }

    /// Guards an allocation of `count` elements that each occupy at least `min_size` bytes.
    fn check_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<usize> {
        match count.checked_mul(min_size) {
            Some(total) if total <= self.remaining() => Ok(count as usize),
            _ => Err(GgufError::AbsurdCount {
                what: what(),
                count,
                available: self.remaining(),
            }),
        }
    }
}

/// Parses and validates the header; `bytes` is the whole file (tensor bounds are checked against it).
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    if bytes.len() < 24 {
        if bytes.len() >= 4 && bytes[..4] != GGUF_MAGIC {
            return Err(GgufError::BadMagic {
                found: bytes[..4].try_into().unwrap(),
            });
        }
        return Err(GgufError::TooShort {
            len: bytes.len() as u64,
        });
    }
    let mut c = Cursor { buf: bytes, pos: 0 };
    let magic: [u8; 4] = c.array(&|| "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32(&|| "version".into())?;
    if version & 0xffff == 0 && version != 0 {
        // A small version number read with the wrong byte order.
        return Err(GgufError::BigEndian);
    }
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;

    // A key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info 8 + 4 + 4 + 8.
    let n_kv = c.check_count(n_kv, 13, &|| "metadata count".into())?;
    let mut metadata = Metadata::default();
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let ty = c.u32(&|| format!("the value type of key {key:?}"))?;
        let ty = ValueType::from_id(ty).ok_or_else(|| GgufError::UnknownValueType {
            key: key.clone(),
            id: ty,
        })?;
        let value = read_value(&mut c, ty, &key, 0)?;
        if metadata.get(&key).is_some() {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.push(key, value);
    }

    let alignment = match metadata.get(crate::keys::ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => *a as u64,
        Some(v) => {
            return Err(GgufError::BadValue {
                key: crate::keys::ALIGNMENT.into(),
                problem: format!(
                    "must be a power of two stored as u32, found {} {v}",
                    v.value_type().name()
                ),
            });
        }
    };

    let n_tensors = c.check_count(n_tensors, 24, &|| "tensor count".into())?;
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut tensor_index = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("the name of tensor #{i}"))?;
        let n_dims = c.u32(&|| format!("the dimension count of tensor {name:?}"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadTensor {
                name,
                problem: format!("{n_dims} dimensions (at most {MAX_DIMS})"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {d} of tensor {name:?}"))?);
        }
        let ty_id = c.u32(&|| format!("the type of tensor {name:?}"))?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            id: ty_id,
        })?;
        let offset = c.u64(&|| format!("the data offset of tensor {name:?}"))?;
        let info = TensorInfo::new(name, dims, ty, offset)?;
        if info.offset % alignment != 0 {
            return Err(GgufError::BadTensor {
                name: info.name,
                problem: format!(
                    "data offset {offset} is not a multiple of the alignment {alignment}"
                ),
            });
        }
        if tensor_index.insert(info.name.clone(), i).is_some() {
            return Err(GgufError::DuplicateTensor(info.name));
        }
        tensors.push(info);
    }

    // The data section starts at the next multiple of the alignment.
    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    for t in &tensors {
        // Checked against the whole file, so that even a zero-byte tensor cannot point past its end.
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        if end.is_none_or(|e| e > file_len) {
            return Err(GgufError::BadTensor {
                name: t.name.clone(),
                problem: format!(
                    "data [{}, +{}) lies outside the data section of {} bytes (file truncated?)",
                    t.offset,
                    t.n_bytes,
                    file_len.saturating_sub(data_offset)
                ),
            });
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for w in by_offset.windows(2) {
        if w[0].offset + w[0].n_bytes > w[1].offset {
            return Err(GgufError::Overlap {
                a: w[0].name.clone(),
                b: w[1].name.clone(),
            });
        }
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}

fn read_value(c: &mut Cursor, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
    let what = || format!("the value of key {key:?}");
    Ok(match ty {
        ValueType::U8 => Value::U8(c.array::<1>(&what)?[0]),
        ValueType::I8 => Value::I8(c.array::<1>(&what)?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(&what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(&what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array(&what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(&what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(&what)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array(&what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(&what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(&what)?)),
        ValueType::Bool => {
            let b = c.array::<1>(&what)?[0];
            if b > 1 {
                return Err(GgufError::BadValue {
                    key: key.into(),
                    problem: format!("bool stored as {b}"),
                });
            }
            Value::Bool(b == 1)
        }
        ValueType::String => Value::String(c.string(&what)?),
        ValueType::Array => Value::Array(read_array(c, key, depth)?),
    })
}

fn read_array(c: &mut Cursor, key: &str, depth: usize) -> Result<Array> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::TooDeep {
            key: key.into(),
            max: MAX_ARRAY_DEPTH,
        });
    }
    let what = || format!("the array value of key {key:?}");
    let ty = c.u32(&what)?;
    let ty = ValueType::from_id(ty).ok_or_else(|| GgufError::UnknownValueType {
        key: key.into(),
        id: ty,
    })?;
    let count = c.u64(&what)?;
    // Strings take at least their 8-byte length, nested arrays their 4-byte type and 8-byte count.
    let min = match ty {
        ValueType::String => 8,
        ValueType::Array => 12,
        t => t.scalar_size().unwrap() as u64,
    };
    let n = c.check_count(count, min, &|| {
        format!("the element count of array {key:?}")
    })?;

    macro_rules! scalars {
        ($t:ty, $variant:ident) => {{
            const W: usize = std::mem::size_of::<$t>();
            let raw = c.take((n * W) as u64, &what)?;
            Array::$variant(
                raw.chunks_exact(W)
                    .map(|b| <$t>::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            )
        }};
    }
    Ok(match ty {
        ValueType::U8 => Array::U8(c.take(n as u64, &what)?.to_vec()),
        ValueType::I8 => Array::I8(c.take(n as u64, &what)?.iter().map(|&b| b as i8).collect()),
        ValueType::U16 => scalars!(u16, U16),
        ValueType::I16 => scalars!(i16, I16),
        ValueType::U32 => scalars!(u32, U32),
        ValueType::I32 => scalars!(i32, I32),
        ValueType::F32 => scalars!(f32, F32),
        ValueType::U64 => scalars!(u64, U64),
        ValueType::I64 => scalars!(i64, I64),
        ValueType::F64 => scalars!(f64, F64),
        ValueType::Bool => {
            let raw = c.take(n as u64, &what)?;
            if let Some(b) = raw.iter().find(|&&b| b > 1) {
                return Err(GgufError::BadValue {
                    key: key.into(),
                    problem: format!("bool stored as {b}"),
                });
            }
            Array::Bool(raw.iter().map(|&b| b == 1).collect())
        }
        ValueType::String => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(c.string(&|| format!("element {i} of array {key:?}"))?);
            }
            Array::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            Array::Array(v)
        }
    })
}
