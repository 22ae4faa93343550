//! The KV cache: per layer, K and V of every position as f16 (llama.cpp's default cache type),
//! cell `p` holding position `p` of the one sequence.

use crate::ops::attention::KvView;
use crate::ops::f16;

pub struct KvCache {
    n_ctx: usize,
    /// Halves per cell and layer: `n_head_kv * head_dim`.
    row: usize,
    layers: Vec<LayerCache>,
}

struct LayerCache {
    k: Vec<u16>,
    v: Vec<u16>,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, row: usize) -> KvCache {
        let layers = (0..n_layer)
            .map(|_| LayerCache {
                k: vec![0; n_ctx * row],
                v: vec![0; n_ctx * row],
            })
            .collect();
        KvCache { n_ctx, row, layers }
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes held (K and V of every layer).
    pub fn bytes(&self) -> usize {
        self.layers.len() * 2 * self.n_ctx * self.row * 2
    }

    /// Stores rows of K and V (`positions.len()` rows of `row` floats each), rounded to f16.
    pub fn write(&mut self, layer: usize, positions: &[usize], k: &[f32], v: &[f32]) {
        let row = self.row;
        let l = &mut self.layers[layer];
        for (i, &p) in positions.iter().enumerate() {
            f16::convert(&k[i * row..][..row], &mut l.k[p * row..][..row]);
            f16::convert(&v[i * row..][..row], &mut l.v[p * row..][..row]);
        }
    }

    /// The first `n_cells` cells of a layer.
    pub fn view(&self, layer: usize, n_cells: usize) -> KvView<'_> {
        let l = &self.layers[layer];
        KvView {
            k: &l.k[..n_cells * self.row],
            v: &l.v[..n_cells * self.row],
            n_cells,
        }
    }
}
