//! The KV cache: per layer, K and V of every position, cell `p` holding position `p` of the one
//! sequence. Each of K and V is stored as f16 (llama.cpp's default) or quantized to Q8_0 or Q4_0
//! (`--cache-type-k/v`), one quantized row per KV head, as llama.cpp's `set_rows` writes them.

use std::fmt;
use std::str::FromStr;

use hearth_gguf::GgmlType;

use crate::error::{EngineError, Result};
use crate::ops::attention::KvView;
use crate::ops::f16;

/// The element type of the K or V cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    #[default]
    F16,
    Q8_0,
    Q4_0,
}

impl KvType {
    pub fn ggml(self) -> GgmlType {
        match self {
            KvType::F16 => GgmlType::F16,
            KvType::Q8_0 => GgmlType::Q8_0,
            KvType::Q4_0 => GgmlType::Q4_0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }

    /// Bytes of one head's row of `head_dim` elements, if `head_dim` fits the block size.
    pub fn head_bytes(self, head_dim: usize) -> Option<usize> {
        hearth_quant::row_bytes(self.ggml(), head_dim).ok()
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<KvType, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            "q4_0" => Ok(KvType::Q4_0),
            _ => Err(format!(
                "unknown KV cache type {s:?} (expected f16, q8_0 or q4_0)"
            )),
        }
    }
}

pub struct KvCache {
    n_ctx: usize,
    n_head_kv: usize,
    head_dim: usize,
    k_type: KvType,
    v_type: KvType,
    /// 16-bit units per cell of one layer (every KV head), for K and for V. Every row size is
    /// even (f16 and the 2-byte-scaled blocks), so `u16` storage keeps f16 rows aligned.
    k_units: usize,
    v_units: usize,
    layers: Vec<LayerCache>,
}

struct LayerCache {
    k: Vec<u16>,
    v: Vec<u16>,
}

impl KvCache {
    pub fn new(
        n_layer: usize,
        n_ctx: usize,
        n_head_kv: usize,
        head_dim: usize,
        k_type: KvType,
        v_type: KvType,
    ) -> Result<KvCache> {
        let units = |t: KvType, what: &str| {
            t.head_bytes(head_dim).map(|b| b / 2 * n_head_kv).ok_or_else(|| {
                EngineError::Options(format!(
                    "a {t} {what} cache needs the head size ({head_dim}) to be a multiple of {}",
                    t.ggml().block_len()
                ))
            })
        };
        let (k_units, v_units) = (units(k_type, "K")?, units(v_type, "V")?);
        let layers = (0..n_layer)
            .map(|_| LayerCache {
                k: vec![0; n_ctx * k_units],
                v: vec![0; n_ctx * v_units],
            })
            .collect();
        Ok(KvCache {
            n_ctx,
            n_head_kv,
            head_dim,
            k_type,
            v_type,
            k_units,
            v_units,
            layers,
        })
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes held (K and V of every layer).
    pub fn bytes(&self) -> usize {
        self.layers.len() * self.n_ctx * (self.k_units + self.v_units) * 2
    }

    /// Stores rows of K and V (`positions.len()` rows of `n_head_kv * head_dim` floats each).
    pub fn write(&mut self, layer: usize, positions: &[usize], k: &[f32], v: &[f32]) {
        let width = self.n_head_kv * self.head_dim;
        let (kt, vt, ku, vu) = (self.k_type, self.v_type, self.k_units, self.v_units);
        let l = &mut self.layers[layer];
        for (i, &p) in positions.iter().enumerate() {
            store(kt, &k[i * width..][..width], &mut l.k[p * ku..][..ku]);
            store(vt, &v[i * width..][..width], &mut l.v[p * vu..][..vu]);
        }
    }

    /// The first `n_cells` cells of a layer.
    pub fn view(&self, layer: usize, n_cells: usize) -> KvView<'_> {
        let l = &self.layers[layer];
        KvView {
            k: &l.k[..n_cells * self.k_units],
            v: &l.v[..n_cells * self.v_units],
            k_type: self.k_type,
            v_type: self.v_type,
            n_cells,
        }
    }
}

/// One cell's row (every head; rows of whole blocks, so per-head quantization is the same as
/// quantizing the concatenation).
fn store(ty: KvType, src: &[f32], dst: &mut [u16]) {
    match ty {
        KvType::F16 => f16::convert(src, dst),
        // `set_rows` converts with the CPU type's `from_float`: for Q8_0 that is the vectorized
        // activation quantizer (round half to even), for Q4_0 the reference one.
        KvType::Q8_0 => hearth_quant::quantize_act(GgmlType::Q8_0, src, as_bytes_mut(dst))
            .expect("row sizes checked when the cache was made"),
        KvType::Q4_0 => hearth_quant::quantize_row(GgmlType::Q4_0, src, as_bytes_mut(dst))
            .expect("row sizes checked when the cache was made"),
    }
}

pub(crate) fn as_bytes(x: &[u16]) -> &[u8] {
    // SAFETY: any u16 is two valid bytes; the length covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len() * 2) }
}

fn as_bytes_mut(x: &mut [u16]) -> &mut [u8] {
    // SAFETY: as above, and the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len() * 2) }
}
