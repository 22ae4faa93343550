//! The shared transformer blocks, written once: token embedding, self-attention with the KV
//! cache, the gated MLP and the output head. An architecture file strings them together.
//!
//! A [`Step`] is one forward pass over a batch: consecutive tokens of one sequence (a prompt),
//! or one token of each of several sequences (a batched decode step, [`Seq`]); every
//! activation is a row-major `n_tokens × width` matrix of f32.

use crate::adapter::{Applied, Site, Target};
use crate::buffers::Buffers;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::model::{Ffn, Layer, Matrix, Model, Moe};
use crate::ops::attention::{self, Heads, Kernel};
use crate::ops::{self, act, matmul, norm, rope};
use crate::threads::Threads;

/// Low-rank updates below this many multiply-adds run on the calling thread.
const LORA_SERIAL_MACS: usize = 1 << 20;

/// The gated activation of the MLP: `down(act(gate(x)) * up(x))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Glu {
    /// SiLU gate (Llama, Qwen).
    Swiglu,
    /// GELU gate, tanh approximation (Gemma).
    Geglu,
}

/// One sequence of a [`Step`]: its KV cache, its rows of the batch, its attention kernel and
/// its adapters. A prompt is a step of one sequence; a batched decode step has one row per
/// sequence, each with its own cache and adapters (the weights are read once for all).
pub(crate) struct Seq<'a> {
    pub cache: &'a mut KvCache,
    pub rows: std::ops::Range<usize>,
    pub kernel: Kernel,
    /// LoRA adapters added to the products they target, on this sequence's rows.
    pub adapters: &'a [Applied],
}

pub(crate) struct Step<'a> {
    pub m: &'a Model,
    pub seqs: Vec<Seq<'a>>,
    pub tokens: &'a [u32],
    /// Position of each token (= its KV cell in its sequence's cache).
    pub positions: Vec<usize>,
    /// Batch rows whose logits are wanted, ascending.
    pub out_rows: &'a [usize],
    /// Where activation buffers come from and go back to (see [`Buffers`]).
    pub bufs: &'a Buffers,
    /// The cos/sin of every position of the step, per distinct rotation (Gemma 3 has two:
    /// local and global layers), made once for all the layers that share it.
    pub rope_caches: Vec<(rope::Rope, std::sync::Arc<[f32]>)>,
}

impl Step<'_> {
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Returns an activation buffer that is no longer needed.
    pub fn give(&self, v: Vec<f32>) {
        self.bufs.give(v);
    }

    fn matmul(&self, w: &Matrix, x: &[f32]) -> Result<Vec<f32>> {
        let n = x.len() / w.cols;
        let mut out = self.bufs.take(n * w.rows);
        matmul::matmul(&self.m.threads, w.view(self.m.bytes()), x, &mut out)?;
        Ok(out)
    }

    /// `W·x (+ each adapter's update) (+ b)`, `W` being the matrix at `site`.
    fn linear(&self, site: Site, w: &Matrix, b: Option<&Vec<f32>>, x: &[f32]) -> Result<Vec<f32>> {
        let mut y = self.matmul(w, x)?;
        self.finish(site, b, x, &mut y)?;
        Ok(y)
    }

    /// What follows the product `y = W·x` of the matrix at `site`: each adapter's update, then
    /// the bias.
    fn finish(&self, site: Site, b: Option<&Vec<f32>>, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.lora(site, x, y)?;
        if let Some(b) = b {
            ops::add_bias(y, b);
        }
        Ok(())
    }

    /// [`linear`](Self::linear) with the matrix of `layer` (number `il`) that `t` names.
    fn project(&self, il: usize, layer: &Layer, t: Target, x: &[f32]) -> Result<Vec<f32>> {
        let (w, b) = dense(layer, t)?;
        self.linear(Site::Layer(il, t), w, b, x)
    }

    /// [`project`](Self::project) for several matrices of `layer` that multiply the same `x`,
    /// in one pass over the threads ([`matmul::matmul_many`]).
    fn project_many<const N: usize>(
        &self,
        il: usize,
        layer: &Layer,
        targets: [Target; N],
        x: &[f32],
    ) -> Result<[Vec<f32>; N]> {
        let mats = targets
            .iter()
            .map(|&t| dense(layer, t))
            .collect::<Result<Vec<_>>>()?;
        let n = x.len() / mats[0].0.cols;
        let bytes = self.m.bytes();
        let ws: [_; N] = std::array::from_fn(|i| mats[i].0.view(bytes));
        let mut ys = ws.map(|w| self.bufs.take(n * w.rows));
        let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| &mut y[..]).collect();
        matmul::matmul_many(&self.m.threads, &ws, x, &mut outs)?;
        for ((t, y), (_, b)) in targets.into_iter().zip(ys.iter_mut()).zip(&mats) {
            self.finish(Site::Layer(il, t), *b, x, y)?;
        }
        Ok(ys)
    }

    /// `y += s·(alpha/r)·B·(A·x)` for each adapter that targets `site`, on the rows of the
    /// sequences that apply it, in llama.cpp's order (`build_lora_mm`: A·x, then B·, then the
    /// scale, then the add; before the bias).
    fn lora(&self, site: Site, x: &[f32], y: &mut [f32]) -> Result<()> {
        let n_all = self.n_tokens().max(1);
        let (x_w, y_w) = (x.len() / n_all, y.len() / n_all);
        for seq in &self.seqs {
            let xs = &x[seq.rows.start * x_w..seq.rows.end * x_w];
            let ys = &mut y[seq.rows.start * y_w..seq.rows.end * y_w];
            self.lora_rows(seq.adapters, site, xs, ys)?;
        }
        Ok(())
    }

    fn lora_rows(&self, adapters: &[Applied], site: Site, x: &[f32], y: &mut [f32]) -> Result<()> {
        for applied in adapters {
            let adapter = &applied.adapter;
            let Some(l) = adapter.get(site) else {
                continue;
            };
            let bytes = adapter.bytes();
            let n = x.len() / l.a.cols;
            // A decode step's low-rank products are a few µs of work each, less than waking
            // the pool costs (rank 16 on every matrix of Gemma 3 270M: 126 sites per token).
            let threads = if n * l.rank * (l.a.cols + l.b.rows) < LORA_SERIAL_MACS {
                Threads::serial()
            } else {
                &self.m.threads
            };
            let mut ax = self.bufs.take(n * l.rank);
            matmul::matmul(threads, l.a.view(bytes), x, &mut ax)?;
            let mut bax = self.bufs.take(n * l.b.rows);
            matmul::matmul(threads, l.b.view(bytes), &ax, &mut bax)?;
            let f = adapter.factor(applied.scale, l.rank);
            for (y, z) in y.iter_mut().zip(&bax) {
                *y += *z * f;
            }
            self.give(ax);
            self.give(bax);
        }
        Ok(())
    }

    /// Rows of the token embedding matrix (`ggml_get_rows`: dequantized), times `scale`.
    pub fn embed(&self, scale: Option<f32>) -> Result<Vec<f32>> {
        let m = self.m;
        let e = m.tok_embd.view(m.bytes());
        let rb = e.row_bytes();
        let mut x = self.bufs.take(self.n_tokens() * e.cols);
        let mut packed_row = vec![0u8; if e.packed.is_some() { rb } else { 0 }];
        for (row, &id) in x.chunks_exact_mut(e.cols).zip(self.tokens) {
            let id = id as usize;
            let bytes = match e.packed {
                // Packed only when shared with a tied head (Q8_0, Q6_K).
                Some(p) => {
                    hearth_quant::packed::unpack_row(e.ty, p, e.cols, id, &mut packed_row)?;
                    &packed_row[..]
                }
                None => &e.data[id * rb..(id + 1) * rb],
            };
            hearth_quant::dequantize_row(e.ty, bytes, row)?;
        }
        if let Some(s) = scale {
            ops::scale(&mut x, s);
        }
        Ok(x)
    }

    /// RMS norm of every row with weight `w`.
    pub fn norm(&self, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut out = self.bufs.take(x.len());
        let (n, eps) = (w.len(), self.m.hp.rms_eps);
        self.m.threads.chunks(&mut out, n, 1, |t0, piece| {
            norm::rms_norm_rows(&x[t0 * n..t0 * n + piece.len()], w, eps, piece);
        });
        out
    }

    /// Multi-head self-attention of layer `il` on normed input `x`, including the output
    /// projection: Q/K/V projections (+ bias), per-head Q/K norms when the layer has them, RoPE,
    /// the Q scale, the cache write, attention over the cache, `W_o`.
    pub fn attention(&mut self, il: usize, layer: &Layer, x: &[f32]) -> Result<Vec<f32>> {
        let hp = &self.m.hp;
        let (hd, eps) = (hp.head_dim, hp.rms_eps);
        let [mut q, mut k, v] =
            self.project_many(il, layer, [Target::AttnQ, Target::AttnK, Target::AttnV], x)?;
        // Per token: the head norms, then RoPE (tokens split across threads).
        let rope = &hp.rope[il];
        let cache = self.rope_cache(rope);
        let nd = rope.n_dims;
        let norm_rope = |x: &mut Vec<f32>, width: usize, w: Option<&Vec<f32>>| {
            self.m.threads.chunks(x, width, 1, |t0, piece| {
                for (i, row) in piece.chunks_exact_mut(width).enumerate() {
                    if let Some(w) = w {
                        row.chunks_exact_mut(hd)
                            .for_each(|h| norm::rms_norm_in_place(h, w, eps));
                    }
                    rope::rotate(rope, &cache[(t0 + i) * nd..][..nd], row, hd);
                }
            });
        };
        norm_rope(&mut q, hp.n_head * hd, layer.q_norm.as_ref());
        norm_rope(&mut k, hp.n_head_kv * hd, layer.k_norm.as_ref());
        if let Some(s) = hp.q_scale {
            ops::scale(&mut q, s);
        }
        let heads = Heads {
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            head_dim: hd,
            scale: hp.kq_scale,
            window: hp.window[il],
        };
        let (qw, kvw) = (hp.n_head * hd, hp.n_head_kv * hd);
        let mut out = self.bufs.take(q.len());
        // Each sequence writes its rows into its cache and attends over it.
        for seq in &mut self.seqs {
            let r = seq.rows.clone();
            let positions = &self.positions[r.clone()];
            let (kr, vr) = (
                &k[r.start * kvw..r.end * kvw],
                &v[r.start * kvw..r.end * kvw],
            );
            seq.cache.write(il, positions, kr, vr);
            let n_cells = positions.last().map_or(0, |&p| p + 1);
            attention::attend(
                &self.m.threads,
                seq.kernel,
                heads,
                &q[r.start * qw..r.end * qw],
                positions,
                seq.cache.view(il, n_cells),
                &mut out[r.start * qw..r.end * qw],
            );
        }
        for v in [q, k, v] {
            self.give(v);
        }
        let y = self.project(il, layer, Target::AttnOutput, &out);
        self.give(out);
        y
    }

    /// [`rope::Rope::cache`] of every position of the step for `rope`, computed on first use.
    fn rope_cache(&mut self, rope: &rope::Rope) -> std::sync::Arc<[f32]> {
        if let Some((_, c)) = self.rope_caches.iter().find(|(r, _)| r == rope) {
            return c.clone();
        }
        let nd = rope.n_dims;
        let mut c = vec![0f32; self.positions.len() * nd];
        let positions = &self.positions;
        self.m.threads.chunks(&mut c, nd, 1, |t0, piece| {
            for (i, cell) in piece.chunks_exact_mut(nd).enumerate() {
                rope.cache(positions[t0 + i] as i32, cell);
            }
        });
        let c: std::sync::Arc<[f32]> = c.into();
        self.rope_caches.push((rope.clone(), c.clone()));
        c
    }

    /// The feed-forward network of layer `il` on normed input `x`: its gated MLP, or its
    /// experts.
    pub fn ffn(&self, il: usize, layer: &Layer, x: &[f32], glu: Glu) -> Result<Vec<f32>> {
        match &layer.ffn {
            Ffn::Dense { .. } => self.mlp(il, layer, x, glu),
            Ffn::Moe(moe) => self.moe(moe, x, glu),
        }
    }

    /// The gated MLP on normed input `x`. The gate's buffer takes `act(gate) * up` in place and
    /// `up` is freed before the down projection, so a long batch holds two `n_ff`-wide buffers
    /// at most.
    fn mlp(&self, il: usize, layer: &Layer, x: &[f32], glu: Glu) -> Result<Vec<f32>> {
        let [up, mut h] = self.project_many(il, layer, [Target::FfnUp, Target::FfnGate], x)?;
        self.glu(glu, &mut h, &up, dense(layer, Target::FfnUp)?.0.rows);
        self.give(up);
        let y = self.project(il, layer, Target::FfnDown, &h);
        self.give(h);
        y
    }

    /// `gate = act(gate) * up` for rows of `n_ff` (tokens split across threads).
    fn glu(&self, glu: Glu, gate: &mut [f32], up: &[f32], n_ff: usize) {
        self.m.threads.chunks(gate, n_ff, 1, |t0, piece| {
            let u = &up[t0 * n_ff..t0 * n_ff + piece.len()];
            for (g, u) in piece.chunks_exact_mut(n_ff).zip(u.chunks_exact(n_ff)) {
                match glu {
                    Glu::Swiglu => act::swiglu_in_place(g, u),
                    Glu::Geglu => act::geglu_in_place(g, u),
                }
            }
        });
    }

    /// A mixture of experts on normed input `x`, as llama.cpp's `build_moe_ffn` computes it:
    /// the router's softmax over every expert, the `n_used` most probable (ties to the lower
    /// index), their probabilities renormalized to sum to one, each chosen expert's gated MLP
    /// scaled by its weight, and the scaled outputs added in the order of the choice. Each
    /// expert runs once per step, over the tokens routed to it.
    fn moe(&self, moe: &Moe, x: &[f32], glu: Glu) -> Result<Vec<f32>> {
        let n_embd = moe.router.cols;
        let n_tok = x.len() / n_embd;
        let (n_exp, k) = (moe.gate.len(), moe.n_used);
        let mut probs = self.matmul(&moe.router, x)?;
        let mut chosen = vec![(0usize, 0f32); n_tok * k];
        for (p, pick) in probs
            .chunks_exact_mut(n_exp)
            .zip(chosen.chunks_exact_mut(k))
        {
            route(p, pick);
        }
        self.give(probs);
        // Each expert's (token, choice) pairs; experts serving the same tokens (every chosen
        // expert of a one-token step) share one pass for their gates and ups.
        let mut routed: Vec<Vec<usize>> = vec![Vec::new(); n_exp];
        for (i, &(e, _)) in chosen.iter().enumerate() {
            routed[e].push(i);
        }
        let toks = |e: usize| routed[e].iter().map(|&i| i / k);
        let mut used: Vec<usize> = (0..n_exp).filter(|&e| !routed[e].is_empty()).collect();
        used.sort_by(|&a, &b| toks(a).cmp(toks(b)));
        // The output of every (token, choice), then their sum in choice order.
        let mut parts = self.bufs.take(n_tok * k * n_embd);
        let bytes = self.m.bytes();
        for group in used.chunk_by(|&a, &b| toks(a).eq(toks(b))) {
            let rows = &routed[group[0]];
            let mut xs = self.bufs.take(rows.len() * n_embd);
            for (row, &i) in xs.chunks_exact_mut(n_embd).zip(rows) {
                let t = i / k;
                row.copy_from_slice(&x[t * n_embd..(t + 1) * n_embd]);
            }
            for &e in group {
                for m in [&moe.gate[e], &moe.up[e], &moe.down[e]] {
                    m.prepare(self.m.gguf(), &self.m.threads);
                }
            }
            // [gate, up] of each expert of the group.
            let ws: Vec<_> = group
                .iter()
                .flat_map(|&e| [moe.gate[e].view(bytes), moe.up[e].view(bytes)])
                .collect();
            let mut ys: Vec<Vec<f32>> = ws
                .iter()
                .map(|w| self.bufs.take(rows.len() * w.rows))
                .collect();
            let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| &mut y[..]).collect();
            matmul::matmul_many(&self.m.threads, &ws, &xs, &mut outs)?;
            self.give(xs);
            let mut ys = ys.into_iter();
            let mut hs = Vec::with_capacity(group.len());
            for &e in group {
                let (mut g, u) = (ys.next().expect("a gate"), ys.next().expect("an up"));
                self.glu(glu, &mut g, &u, moe.gate[e].rows);
                self.give(u);
                hs.push(g);
            }
            // The group's down projections, also in one pass.
            let downs: Vec<_> = group.iter().map(|&e| moe.down[e].view(bytes)).collect();
            let mut ds: Vec<Vec<f32>> = downs
                .iter()
                .map(|w| self.bufs.take(rows.len() * w.rows))
                .collect();
            let ins: Vec<&[f32]> = hs.iter().map(|h| &h[..]).collect();
            let mut outs: Vec<&mut [f32]> = ds.iter_mut().map(|d| &mut d[..]).collect();
            matmul::matmul_each(&self.m.threads, &downs, &ins, &mut outs)?;
            for ((&e, d), h) in group.iter().zip(ds).zip(hs) {
                for (row, &i) in d.chunks_exact(n_embd).zip(&routed[e]) {
                    let w = chosen[i].1;
                    let dst = &mut parts[i * n_embd..(i + 1) * n_embd];
                    for (o, &v) in dst.iter_mut().zip(row) {
                        *o = v * w;
                    }
                }
                self.give(d);
                self.give(h);
            }
        }
        let mut out = self.bufs.take(n_tok * n_embd);
        for (o, p) in out
            .chunks_exact_mut(n_embd)
            .zip(parts.chunks_exact(k * n_embd))
        {
            o.copy_from_slice(&p[..n_embd]);
            for part in p.chunks_exact(n_embd).skip(1) {
                ops::add_assign(o, part);
            }
        }
        self.give(parts);
        Ok(out)
    }

    /// Keeps only the rows whose logits are wanted (llama.cpp does this in the last layer,
    /// after attention, so the last MLP and the head run on those rows only).
    pub fn keep_out_rows(&self, x: Vec<f32>) -> Vec<f32> {
        let width = x.len() / self.n_tokens().max(1);
        if self.out_rows.len() == self.n_tokens() {
            return x;
        }
        let kept = ops::select_rows(&x, width, self.out_rows);
        self.give(x);
        kept
    }

    /// Final norm and the output projection of the kept rows (+ bias, + soft-capping).
    pub fn logits(&self, x: &[f32]) -> Result<Vec<f32>> {
        let m = self.m;
        if x.is_empty() {
            return Ok(Vec::new());
        }
        let h = self.norm(x, &m.output_norm);
        let logits = self.linear(Site::Output, &m.output, m.output_b.as_ref(), &h);
        self.give(h);
        let mut logits = logits?;
        if let Some(c) = m.hp.final_softcap {
            for v in &mut logits {
                *v = (*v * (1.0 / c)).tanh() * c;
            }
        }
        Ok(logits)
    }
}

/// The dense matrix (and bias) of `layer` that `t` names; a mixture of experts has none for the
/// FFN targets (its callers take the expert path first).
fn dense(layer: &Layer, t: Target) -> Result<(&Matrix, Option<&Vec<f32>>)> {
    layer.matrix(t).ok_or_else(|| {
        crate::error::EngineError::Options(format!(
            "the layer has experts, not one {} matrix",
            t.name()
        ))
    })
}

/// The router of one token: `p` (the router's logits of every expert) becomes their softmax
/// (`ggml_soft_max`: the vector `expf`, the f64 sum inverted then rounded to f32), and `pick`
/// the `pick.len()` most probable experts, best first (ties to the lower index, as ggml's
/// argsort), each with its probability divided by the chosen ones' sum (f64, rounded to f32,
/// at least 2⁻¹⁴).
fn route(p: &mut [f32], pick: &mut [(usize, f32)]) {
    let max = act::max(p);
    let inv = (1.0 / act::exp_sum(p, max)) as f32;
    p.iter_mut().for_each(|v| *v *= inv);
    let mut order: Vec<usize> = (0..p.len()).collect();
    // Stable: equal probabilities keep the lower index first.
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let best = &order[..pick.len()];
    let sum = (best.iter().map(|&e| p[e] as f64).sum::<f64>() as f32).max(6.103_515_6e-5);
    for (slot, &e) in pick.iter_mut().zip(best) {
        *slot = (e, p[e] / sum);
    }
}
