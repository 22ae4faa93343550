//! Causal self-attention over the f16 KV cache, with grouped/multi-query heads and an optional
//! sliding window, in the three ways llama.cpp's CPU backend computes it:
//!
//! - [`Kernel::FlashVec`] — flash attention with fewer than 64 query rows (decode, short
//!   prompts; `ggml_compute_forward_flash_attn_ext_f16_one_chunk`): Q rounded to f16, `K·Q` by
//!   `ggml_vec_dot_f16`, online softmax with the C library's `expf`, and the weighted sum of V
//!   accumulated **in f16**.
//! - [`Kernel::FlashTiled`] — flash attention with 64 or more query rows (long prompts;
//!   `ggml_compute_forward_flash_attn_ext_tiled`): f32 Q, K and V widened to f32, tiles of 64 KV
//!   cells, softmax with ggml's vector `expf`, f32 accumulation.
//! - [`Kernel::Standard`] — flash attention off: `KQ = K·half(Q)` and `KQV = V·half(P)` by
//!   tinyBLAS (16 lanes), softmax in f32 with the vector `expf`.
//!
//! Cell `c` of the cache holds position `c`. Query `t` at position `p` sees cells `c <= p`, and
//! with a window `w` only those with `p - c < w` (llama.cpp's `LLAMA_SWA_TYPE_STANDARD`).

use hearth_gguf::GgmlType;

use super::{act, f16};
use crate::kv_cache::{KvType, as_bytes};
use crate::threads::{SendPtr, Threads};

/// Flash attention on (llama.cpp's default on CPU) or off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionMode {
    #[default]
    Flash,
    Standard,
}

/// The kernel llama.cpp would run for a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    FlashVec,
    FlashTiled,
    Standard,
}

/// Query rows from which flash attention switches to the tiled kernel (`GGML_FA_TILE_Q`).
pub const TILE_Q: usize = 64;
/// KV cells per tile of the tiled kernel (`GGML_FA_TILE_KV`).
pub const TILE_KV: usize = 64;

impl Kernel {
    /// llama.cpp takes the tiled kernel only for an f16 K and V cache.
    pub fn choose(mode: AttentionMode, n_tokens: usize, k: KvType, v: KvType) -> Kernel {
        match mode {
            AttentionMode::Standard => Kernel::Standard,
            AttentionMode::Flash if n_tokens >= TILE_Q && k == KvType::F16 && v == KvType::F16 => {
                Kernel::FlashTiled
            }
            AttentionMode::Flash => Kernel::FlashVec,
        }
    }
}

/// Head layout and scale of one attention layer.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Multiplies `K·Q` before the softmax.
    pub scale: f32,
    /// Sliding window in positions, if this layer has one.
    pub window: Option<usize>,
}

/// One layer's cache: `n_cells` cells of `n_head_kv` rows of `head_dim` elements each for K and
/// for V, each row f16 or one quantized row (stored in 16-bit units).
#[derive(Clone, Copy)]
pub struct KvView<'a> {
    pub k: &'a [u16],
    pub v: &'a [u16],
    pub k_type: KvType,
    pub v_type: KvType,
    pub n_cells: usize,
}

/// 16-bit units of one head's row of type `ty`.
#[inline(always)]
fn head_units(ty: KvType, hd: usize) -> usize {
    ty.head_bytes(hd)
        .expect("head size checked when the cache was made")
        / 2
}

#[inline(always)]
fn visible(pos: usize, cell: usize, window: Option<usize>) -> bool {
    cell <= pos && window.is_none_or(|w| pos - cell < w)
}

/// The cells of `first..first + len` that a query at `pos` sees ([`visible`]: from
/// `pos + 1 - window` to `pos`), as offsets from `first`.
#[inline(always)]
fn visible_span(
    pos: usize,
    window: Option<usize>,
    first: usize,
    len: usize,
) -> std::ops::Range<usize> {
    let lo = window.map_or(0, |w| (pos + 1).saturating_sub(w));
    let a = lo.saturating_sub(first).min(len);
    let b = (pos + 1).saturating_sub(first).min(len);
    a..b.max(a)
}

/// `out[t][h] = attention of q[t][h]` (both `n_tok × n_head × head_dim`), for queries at
/// `positions` whose keys and values are already in `kv`.
pub fn attend(
    threads: &Threads,
    kernel: Kernel,
    heads: Heads,
    q: &[f32],
    positions: &[usize],
    kv: KvView,
    out: &mut [f32],
) {
    let (n_tok, n_head, hd) = (positions.len(), heads.n_head, heads.head_dim);
    assert_eq!(out.len(), n_tok * n_head * hd);
    let align = if kernel == Kernel::FlashTiled {
        TILE_Q
    } else {
        1
    };
    let f32kv = (kernel == Kernel::FlashTiled).then(|| F32Kv::new(threads, heads, positions, kv));
    let f16_fast = kernel == Kernel::FlashVec && flash_f16::usable(heads, kv);
    // Work items are head-major (a piece is a run of tokens of one head); each writes its own
    // `[t][h]` row of `out`.
    let base = SendPtr(out.as_mut_ptr());
    threads.ranges(n_head * n_tok, align, |first, rows| {
        let base = &base;
        let dst = |t: usize, h: usize| {
            // SAFETY: row (t, h) is inside `out` (length asserted) and belongs to one item,
            // which only this call computes; `out` outlives the loop.
            unsafe { std::slice::from_raw_parts_mut(base.0.add((t * n_head + h) * hd), hd) }
        };
        let mut i = 0;
        while i < rows {
            let item = first + i;
            let (h, t0) = (item / n_tok, item % n_tok);
            // A run of the same head, at most one query tile.
            let run = (rows - i).min(n_tok - t0).min(TILE_Q);
            let qrow = |t: usize| &q[(t * n_head + h) * hd..][..hd];
            match kernel {
                Kernel::FlashVec if f16_fast => {
                    for (t, &pos) in positions.iter().enumerate().skip(t0).take(run) {
                        // SAFETY: `f16_fast` checked the CPU and the shapes.
                        unsafe { flash_f16::flash_vec(heads, h, qrow(t), pos, kv, dst(t, h)) };
                    }
                }
                Kernel::FlashVec => {
                    for (t, &pos) in positions.iter().enumerate().skip(t0).take(run) {
                        flash_vec(heads, h, qrow(t), pos, kv, dst(t, h));
                    }
                }
                Kernel::Standard => {
                    for (t, &pos) in positions.iter().enumerate().skip(t0).take(run) {
                        standard(heads, h, qrow(t), pos, kv, dst(t, h));
                    }
                }
                Kernel::FlashTiled => {
                    let qs: Vec<&[f32]> = (t0..t0 + run).map(qrow).collect();
                    let f32kv = f32kv.as_ref().expect("converted above");
                    let mut tile = vec![0f32; run * hd];
                    flash_tiled(heads, h, &qs, &positions[t0..t0 + run], f32kv, &mut tile);
                    for (r, row) in tile.chunks_exact(hd).enumerate() {
                        dst(t0 + r, h).copy_from_slice(row);
                    }
                }
            }
            i += run;
        }
    });
}

/// One layer's K and V converted to f32 once for every head and query tile of a batch: K as
/// transposed tiles (`[kv head][tile][dk][cell in tile]`), V as rows (`[kv head][cell][dv]`),
/// cells past the last position zero (what the tiled kernel pads a partial tile with).
struct F32Kv {
    kt: Vec<f32>,
    v: Vec<f32>,
    n_cells: usize,
    n_tiles: usize,
}

impl F32Kv {
    fn new(threads: &Threads, heads: Heads, positions: &[usize], kv: KvView) -> F32Kv {
        let hd = heads.head_dim;
        let last = positions.iter().copied().max().unwrap_or(0);
        let n_cells = kv.n_cells.min(last + 1);
        let n_tiles = n_cells.div_ceil(TILE_KV);
        let t = f16::table();
        let tile = hd * TILE_KV;
        let mut kt = vec![0f32; heads.n_head_kv * n_tiles * tile];
        let mut v = vec![0f32; heads.n_head_kv * n_tiles * tile];
        threads.chunks(&mut kt, tile, 1, |first, piece| {
            for (i, dst) in piece.chunks_exact_mut(tile).enumerate() {
                let (kvh, ti) = ((first + i) / n_tiles, (first + i) % n_tiles);
                let c0 = ti * TILE_KV;
                for tk in 0..TILE_KV.min(n_cells - c0) {
                    let kr = kv_row(kv.k, heads, c0 + tk, kvh);
                    for (dk, &kb) in kr.iter().enumerate() {
                        dst[dk * TILE_KV + tk] = t[kb as usize];
                    }
                }
            }
        });
        threads.chunks(&mut v, tile, 1, |first, piece| {
            for (i, dst) in piece.chunks_exact_mut(tile).enumerate() {
                let (kvh, ti) = ((first + i) / n_tiles, (first + i) % n_tiles);
                let c0 = ti * TILE_KV;
                for tk in 0..TILE_KV.min(n_cells - c0) {
                    let vr = kv_row(kv.v, heads, c0 + tk, kvh);
                    for (d, &vb) in dst[tk * hd..(tk + 1) * hd].iter_mut().zip(vr) {
                        *d = t[vb as usize];
                    }
                }
            }
        });
        F32Kv {
            kt,
            v,
            n_cells,
            n_tiles,
        }
    }

    /// Tile `ti` of kv head `kvh`: (K transposed, V rows).
    fn tile(&self, kvh: usize, ti: usize, hd: usize) -> (&[f32], &[f32]) {
        let n = hd * TILE_KV;
        let at = (kvh * self.n_tiles + ti) * n;
        (&self.kt[at..at + n], &self.v[at..at + n])
    }
}

/// Row of head `kvh` in cell `cell` of an f16 cache.
#[inline(always)]
fn kv_row(cache: &[u16], heads: Heads, cell: usize, kvh: usize) -> &[u16] {
    kv_row_units(cache, heads.head_dim, heads, cell, kvh)
}

/// Row of head `kvh` in cell `cell` of a cache whose head rows are `units` 16-bit units.
#[inline(always)]
fn kv_row_units(cache: &[u16], units: usize, heads: Heads, cell: usize, kvh: usize) -> &[u16] {
    &cache[(cell * heads.n_head_kv + kvh) * units..][..units]
}

#[inline(always)]
fn kv_head(heads: Heads, h: usize) -> usize {
    h / (heads.n_head / heads.n_head_kv)
}

fma_dispatch! {
    fn flash_vec(heads: Heads, h: usize, q: &[f32], pos: usize, kv: KvView, out: &mut [f32]) => flash_vec_impl
}

/// Flash attention, one query row (`ggml_compute_forward_flash_attn_ext_f16_one_chunk`): Q
/// converted to K's dot partner (f16, or Q8_0 for a quantized K), the V sum accumulated in f16
/// for an f16 V and in f32 (V dequantized a row at a time) otherwise.
#[inline(always)]
fn flash_vec_impl(heads: Heads, h: usize, q: &[f32], pos: usize, kv: KvView, out: &mut [f32]) {
    let hd = heads.head_dim;
    let kvh = kv_head(heads, h);
    let (ku, vu) = (head_units(kv.k_type, hd), head_units(kv.v_type, hd));
    let qk = QueryForK::new(kv.k_type, q);
    let f16_acc = kv.v_type == KvType::F16;
    let mut acc = vec![0u16; if f16_acc { hd } else { 0 }];
    let mut acc32 = vec![0f32; if f16_acc { 0 } else { hd }];
    let mut v32 = vec![0f32; if f16_acc { 0 } else { hd }];
    let (mut s_sum, mut m) = (0f32, f32::NEG_INFINITY);
    for c in 0..kv.n_cells.min(pos + 1) {
        if !visible(pos, c, heads.window) {
            continue;
        }
        let s = qk.dot(kv_row_units(kv.k, ku, heads, c, kvh)) * heads.scale;
        let (ms, vs, new_max) = online_step(s, &mut m);
        let vr = kv_row_units(kv.v, vu, heads, c, kvh);
        if f16_acc {
            if new_max {
                f16::scale(&mut acc, ms);
            }
            f16::mad(&mut acc, vr, vs);
        } else {
            if new_max {
                acc32.iter_mut().for_each(|a| *a *= ms);
            }
            hearth_quant::dequantize_row(kv.v_type.ggml(), as_bytes(vr), &mut v32)
                .expect("row sizes checked when the cache was made");
            for (a, &x) in acc32.iter_mut().zip(&v32) {
                *a = x.mul_add(vs, *a);
            }
        }
        s_sum = s_sum.mul_add(ms, vs);
    }
    let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
    if f16_acc {
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o = f16::to_f32(a) * inv;
        }
    } else {
        for (o, &a) in out.iter_mut().zip(&acc32) {
            *o = a * inv;
        }
    }
}

/// [`flash_vec_impl`] for an f16 K and V cache (the default) in AVX-512 registers: the same
/// operations in the same order, so the same bits (tested), without the per-cell calls, table
/// lookups and f16 stores of the accumulator (which took 4× the arithmetic's time). The
/// accumulator is held widened; every value it takes is a half, rounded as `vcvtps2ph` rounds.
mod flash_f16 {
    use super::*;

    /// The widest head this kernel holds (in 16-lane vectors).
    const MAX_VECS: usize = 32;

    /// Whether [`flash_vec`] may run for these heads and this cache.
    pub fn usable(heads: Heads, kv: KvView) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            kv.k_type == KvType::F16
                && kv.v_type == KvType::F16
                && heads.head_dim.is_multiple_of(16)
                && heads.head_dim <= 16 * MAX_VECS
                && f16::simd::enabled()
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// # Safety
    /// [`usable`] must hold for `heads` and `kv`.
    #[cfg(not(target_arch = "x86_64"))]
    pub unsafe fn flash_vec(_: Heads, _: usize, _: &[f32], _: usize, _: KvView, _: &mut [f32]) {
        unreachable!("usable() is false off x86_64")
    }

    /// # Safety
    /// [`usable`] must hold for `heads` and `kv`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub unsafe fn flash_vec(
        heads: Heads,
        h: usize,
        q: &[f32],
        pos: usize,
        kv: KvView,
        out: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        const RNE: i32 = _MM_FROUND_TO_NEAREST_INT;
        let hd = heads.head_dim;
        let (nv, kvh) = (hd / 16, kv_head(heads, h));
        // `ggml_vec_dot_f16` takes steps of 64 and adds the rest one by one; `ggml_vec_mad_f16`
        // and `ggml_vec_scale_f16` multiply whole steps of `FP16_STEP` by the half-rounded
        // factor and the rest by the f32 one.
        let (n64, n_half) = (hd & !63, (hd & !(f16::FP16_STEP - 1)) / 16);
        let round = |x: __m512| _mm512_cvtph_ps(_mm512_cvtps_ph::<RNE>(x));
        let half_of = |v: f32| f16::to_f32(f16::to_f16(v));
        let zero = _mm512_setzero_ps();
        // Q rounded to halves (`QueryForK::F16`), held widened.
        let mut qv = [zero; MAX_VECS];
        let mut acc = [zero; MAX_VECS];
        for (j, v) in qv[..nv].iter_mut().enumerate() {
            // SAFETY: `q` holds `hd` floats.
            *v = round(unsafe { _mm512_loadu_ps(q.as_ptr().add(16 * j)) });
        }
        let mut q_tail = [0f32; 64];
        // SAFETY: `hd - n64 < 64` floats from `n64` on, stored from the rounded vectors.
        unsafe {
            for (j, v) in qv[..nv].iter().enumerate().skip(n64 / 16) {
                _mm512_storeu_ps(q_tail.as_mut_ptr().add(16 * j - n64), *v);
            }
        }
        let (mut s_sum, mut m) = (0f32, f32::NEG_INFINITY);
        for c in visible_span(pos, heads.window, 0, kv.n_cells) {
            let kp = kv_row(kv.k, heads, c, kvh).as_ptr();
            let vp = kv_row(kv.v, heads, c, kvh).as_ptr();
            // SAFETY: K and V rows hold `hd` halves (`kv_row` sliced them).
            let ld = |p: *const u16, j: usize| unsafe {
                _mm512_cvtph_ps(_mm256_loadu_si256(p.add(16 * j).cast()))
            };
            // K·Q as `f16::dot_ggml`: four accumulators over steps of 64, folded 0+2, 1+3.
            let mut s4 = [zero; 4];
            for i in (0..n64).step_by(64) {
                for (jj, a) in s4.iter_mut().enumerate() {
                    let j = i / 16 + jj;
                    *a = _mm512_fmadd_ps(ld(kp, j), qv[j], *a);
                }
            }
            let v = _mm512_add_ps(_mm512_add_ps(s4[0], s4[2]), _mm512_add_ps(s4[1], s4[3]));
            let mut lanes = [0f32; 16];
            // SAFETY: `lanes` holds 16 floats.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
            let mut sumf = f16::reduce16(&lanes) as f64;
            for k in n64..hd {
                // SAFETY: `k < hd`.
                let kk = f16::to_f32(unsafe { *kp.add(k) });
                sumf += (kk * q_tail[k - n64]) as f64;
            }
            let s = sumf as f32 * heads.scale;
            let (ms, vs, new_max) = online_step(s, &mut m);
            if new_max {
                let (mh, mf) = (_mm512_set1_ps(half_of(ms)), _mm512_set1_ps(ms));
                for (j, a) in acc[..nv].iter_mut().enumerate() {
                    *a = round(_mm512_mul_ps(*a, if j < n_half { mh } else { mf }));
                }
            }
            let (vh, vf) = (_mm512_set1_ps(half_of(vs)), _mm512_set1_ps(vs));
            for (j, a) in acc[..nv].iter_mut().enumerate() {
                let f = if j < n_half { vh } else { vf };
                *a = round(_mm512_fmadd_ps(ld(vp, j), f, *a));
            }
            s_sum = s_sum.mul_add(ms, vs);
        }
        let inv = _mm512_set1_ps(if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum });
        for (j, a) in acc[..nv].iter().enumerate() {
            // SAFETY: `out` holds `hd` floats.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * j), _mm512_mul_ps(*a, inv)) };
        }
    }
}

/// One cell of the one-query kernels' online softmax, score `s` against the running maximum
/// `m`: the factor of the accumulator and of the cell's V row (the C library's `expf`), and
/// whether `s` is the new maximum.
#[inline(always)]
fn online_step(s: f32, m: &mut f32) -> (f32, f32, bool) {
    if s > *m {
        let m_old = std::mem::replace(m, s);
        ((m_old - s).exp(), 1.0, true)
    } else {
        (1.0, (s - *m).exp(), false)
    }
}

/// A query row prepared for dot products with K rows of one cache type.
enum QueryForK {
    F16(Vec<u16>),
    /// Q quantized to Q8_0 (the vec-dot partner of Q8_0 and Q4_0), dotted with rows of `GgmlType`.
    Quant(GgmlType, Vec<u8>, usize),
}

impl QueryForK {
    fn new(k_type: KvType, q: &[f32]) -> QueryForK {
        if k_type == KvType::F16 {
            let mut q16 = vec![0u16; q.len()];
            f16::convert(q, &mut q16);
            return QueryForK::F16(q16);
        }
        let ty = k_type.ggml();
        let partner = hearth_quant::vec_dot_type(ty).expect("Q8_0 and Q4_0 have dot partners");
        let mut qq =
            vec![0u8; hearth_quant::row_bytes(partner, q.len()).expect("checked head size")];
        hearth_quant::quantize_act(ty, q, &mut qq).expect("sizes computed above");
        QueryForK::Quant(ty, qq, q.len())
    }

    /// `ggml_vec_dot_f16` for an f16 row; the type's `vec_dot` for a quantized one.
    #[inline(always)]
    fn dot(&self, k_row: &[u16]) -> f32 {
        match self {
            QueryForK::F16(q16) => f16::dot_ggml(k_row, q16),
            QueryForK::Quant(ty, qq, n) => hearth_quant::vec_dot(*ty, as_bytes(k_row), qq, *n)
                .expect("row sizes checked when the cache was made"),
        }
    }
}

/// `s[tk] = Σ_dk k_t[dk][tk] · q[dk]`, one FMA per term in `dk` order, for four query rows
/// (each K column load feeds four rows).
#[inline(always)]
fn qk_tile4(q: [&[f32]; 4], k_t: &[f32]) -> [[f32; TILE_KV]; 4] {
    let mut s = [[0f32; TILE_KV]; 4];
    for (dk, kcol) in k_t.chunks_exact(TILE_KV).enumerate() {
        let kcol: &[f32; TILE_KV] = kcol.try_into().unwrap();
        let a = [q[0][dk], q[1][dk], q[2][dk], q[3][dk]];
        for (tk, &k) in kcol.iter().enumerate() {
            for r in 0..4 {
                s[r][tk] = k.mul_add(a[r], s[r][tk]);
            }
        }
    }
    s
}

/// `a[j] += v[tk][d0 + j] · p[tk]` for every cell `tk` of the tile, in order (`R` output lanes
/// kept in registers).
#[inline(always)]
fn pv_run<const R: usize>(
    mut a: [f32; R],
    v32: &[f32],
    hd: usize,
    d0: usize,
    p: &[f32; TILE_KV],
) -> [f32; R] {
    for (tk, &pt) in p.iter().enumerate() {
        let vr: &[f32; R] = v32[tk * hd + d0..tk * hd + d0 + R].try_into().unwrap();
        for (x, &v) in a.iter_mut().zip(vr) {
            *x = v.mul_add(pt, *x);
        }
    }
    a
}

/// [`pv_run`] for two query rows at once (each V load feeds both), the same order per row.
#[inline(always)]
fn pv_run2<const R: usize>(
    mut a: [[f32; R]; 2],
    v32: &[f32],
    hd: usize,
    d0: usize,
    p: [&[f32; TILE_KV]; 2],
) -> [[f32; R]; 2] {
    for tk in 0..TILE_KV {
        let vr: &[f32; R] = v32[tk * hd + d0..tk * hd + d0 + R].try_into().unwrap();
        let (p0, p1) = (p[0][tk], p[1][tk]);
        for (j, &v) in vr.iter().enumerate() {
            a[0][j] = v.mul_add(p0, a[0][j]);
            a[1][j] = v.mul_add(p1, a[1][j]);
        }
    }
    a
}

/// The P·V update of the rows in `pair` (one or two) for output lanes `d_start..` in runs of
/// `R` while whole runs fit; returns where the runs stopped.
#[inline(always)]
fn pv_runs<const R: usize>(
    out: &mut [f32],
    hd: usize,
    v32: &[f32],
    kqs: &[[f32; TILE_KV]],
    pair: &[usize],
    d_start: usize,
) -> usize {
    let n = (hd - d_start) / R;
    for i in 0..n {
        let d0 = d_start + i * R;
        if let [r0, r1] = *pair {
            let (lo, hi) = out.split_at_mut(r1 * hd);
            let a0: &mut [f32; R] = (&mut lo[r0 * hd + d0..r0 * hd + d0 + R])
                .try_into()
                .unwrap();
            let a1: &mut [f32; R] = (&mut hi[d0..d0 + R]).try_into().unwrap();
            [*a0, *a1] = pv_run2([*a0, *a1], v32, hd, d0, [&kqs[r0], &kqs[r1]]);
        } else {
            let r0 = pair[0];
            let a0: &mut [f32; R] = (&mut out[r0 * hd + d0..r0 * hd + d0 + R])
                .try_into()
                .unwrap();
            *a0 = pv_run(*a0, v32, hd, d0, &kqs[r0]);
        }
    }
    d_start + n * R
}

avx512_dispatch! {
    fn flash_tiled(heads: Heads, h: usize, qs: &[&[f32]], positions: &[usize], kv: &F32Kv, out: &mut [f32]) => flash_tiled_impl
}

/// Flash attention for a run of query rows of one head (at most [`TILE_Q`]), f32 throughout.
#[inline(always)]
fn flash_tiled_impl(
    heads: Heads,
    h: usize,
    qs: &[&[f32]],
    positions: &[usize],
    kv: &F32Kv,
    out: &mut [f32],
) {
    let hd = heads.head_dim;
    let kvh = kv_head(heads, h);
    let rows = qs.len();
    let mut m = vec![f32::NEG_INFINITY; rows];
    let mut s_sum = vec![0f32; rows];
    let mut kqs = vec![[0f32; TILE_KV]; rows];
    let mut live = Vec::with_capacity(rows);
    out.fill(0.0);
    let last = positions.iter().copied().max().unwrap_or(0);
    let n_cells = kv.n_cells.min(last + 1);
    let mut ic = 0;
    while ic < n_cells {
        let kv_tile = TILE_KV.min(n_cells - ic);
        let span = |pos: usize| visible_span(pos, heads.window, ic, kv_tile);
        if positions.iter().all(|&p| span(p).is_empty()) {
            ic += TILE_KV;
            continue;
        }
        let (k_t, v32) = kv.tile(kvh, ic / TILE_KV, hd);
        // Scores of four query rows at a time (a short last group repeats its last row).
        let mut r = 0;
        while r < rows {
            let row = |i: usize| qs[(r + i).min(rows - 1)];
            let s = qk_tile4([row(0), row(1), row(2), row(3)], k_t);
            for (i, si) in s.into_iter().enumerate().take(rows - r) {
                kqs[r + i] = si;
            }
            r += 4;
        }
        // Softmax step per row: the probabilities of the rows that see this tile.
        live.clear();
        for r in 0..rows {
            let kq = &mut kqs[r];
            let seen = span(positions[r]);
            if seen.is_empty() {
                continue;
            }
            kq.iter_mut().for_each(|x| *x *= heads.scale);
            kq[..seen.start].fill(f32::NEG_INFINITY);
            kq[seen.end..].fill(f32::NEG_INFINITY);
            let tile_max = act::max(kq);
            if tile_max == f32::NEG_INFINITY {
                continue;
            }
            let m_new = m[r].max(tile_max);
            if m_new > m[r] {
                let ms = (m[r] - m_new).exp();
                out[r * hd..][..hd].iter_mut().for_each(|a| *a *= ms);
                s_sum[r] *= ms;
            }
            m[r] = m_new;
            s_sum[r] = (s_sum[r] as f64 + act::exp_sum(kq, m_new)) as f32;
            live.push(r);
        }
        // acc[dv] += v[tk][dv] · p[tk] in tk order, register-sized runs of dv (128, 64 or 32
        // lanes, as the head size allows), two rows per pass over V.
        for pair in live.chunks(2) {
            let d0 = pv_runs::<128>(out, hd, v32, &kqs, pair, 0);
            let d0 = pv_runs::<64>(out, hd, v32, &kqs, pair, d0);
            let d0 = pv_runs::<32>(out, hd, v32, &kqs, pair, d0);
            if d0 == hd {
                continue;
            }
            for &r in pair {
                let acc_tail = &mut out[r * hd + d0..(r + 1) * hd];
                for (tk, &p) in kqs[r].iter().enumerate() {
                    let vr = &v32[tk * hd + d0..(tk + 1) * hd];
                    for (a, &v) in acc_tail.iter_mut().zip(vr) {
                        *a = v.mul_add(p, *a);
                    }
                }
            }
        }
        ic += TILE_KV;
    }
    for r in 0..rows {
        let inv = if s_sum[r] == 0.0 { 0.0 } else { 1.0 / s_sum[r] };
        out[r * hd..][..hd].iter_mut().for_each(|a| *a *= inv);
    }
}

fma_dispatch! {
    fn standard(heads: Heads, h: usize, q: &[f32], pos: usize, kv: KvView, out: &mut [f32]) => standard_impl
}

/// Attention without flash attention: scores, softmax, then the probabilities rounded to f16.
/// V must be f16 (llama.cpp, too, needs flash attention for a quantized V cache).
#[inline(always)]
fn standard_impl(heads: Heads, h: usize, q: &[f32], pos: usize, kv: KvView, out: &mut [f32]) {
    let hd = heads.head_dim;
    let kvh = kv_head(heads, h);
    let ku = head_units(kv.k_type, hd);
    // An f16 K goes through tinyBLAS's 16-lane dots; a quantized K through the type's `vec_dot`.
    let q16 = (kv.k_type == KvType::F16).then(|| {
        let mut q16 = vec![0u16; hd];
        f16::convert(q, &mut q16);
        q16
    });
    let qk = q16.is_none().then(|| QueryForK::new(kv.k_type, q));
    let n = kv.n_cells.min(pos + 1);
    // llama.cpp pads the cache view to 256 cells; masked cells only matter for the grouping of
    // the vector `expf` (16 lanes), so pad to 16.
    let mut w = vec![f32::NEG_INFINITY; n.div_ceil(16) * 16];
    for (c, wc) in w.iter_mut().enumerate().take(n) {
        let kr = kv_row_units(kv.k, ku, heads, c, kvh);
        let kq = match (&q16, &qk) {
            (Some(q16), _) => f16::dot_lanes16(kr, q16),
            (None, Some(qk)) => qk.dot(kr),
            (None, None) => unreachable!("one of them is made above"),
        };
        let mask = if visible(pos, c, heads.window) {
            0.0
        } else {
            f32::NEG_INFINITY
        };
        *wc = kq * heads.scale + mask;
    }
    let max = act::max(&w);
    let sum = act::exp_sum(&mut w, max);
    let inv = (1.0 / sum) as f32;
    let p16: Vec<u16> = w[..n].iter().map(|&e| f16::to_f16(e * inv)).collect();
    let t = f16::table();
    for (d, o) in out.iter_mut().enumerate() {
        let mut acc = f16::Lanes16::new();
        for (c, &p) in p16.iter().enumerate() {
            let v = kv.v[(c * heads.n_head_kv + kvh) * hd + d];
            acc.add(c, t[v as usize], t[p as usize]);
        }
        *o = acc.sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax attention in f64 on the same (already f16) keys and values.
    fn reference(heads: Heads, q: &[f32], pos: usize, kv: KvView, h: usize) -> Vec<f64> {
        let hd = heads.head_dim;
        let kvh = kv_head(heads, h);
        let mut scores = Vec::new();
        for c in 0..=pos {
            if !visible(pos, c, heads.window) {
                continue;
            }
            let k = kv_row(kv.k, heads, c, kvh);
            let s: f64 = (0..hd)
                .map(|d| q[d] as f64 * f16::to_f32(k[d]) as f64)
                .sum();
            scores.push((c, s * heads.scale as f64));
        }
        let m = scores.iter().map(|s| s.1).fold(f64::MIN, f64::max);
        let z: f64 = scores.iter().map(|s| (s.1 - m).exp()).sum();
        let mut out = vec![0f64; hd];
        for &(c, s) in &scores {
            let v = kv_row(kv.v, heads, c, kvh);
            for d in 0..hd {
                out[d] += (s - m).exp() / z * f16::to_f32(v[d]) as f64;
            }
        }
        out
    }

    #[test]
    fn visible_span_is_the_visible_cells() {
        for window in [None, Some(1), Some(3), Some(70)] {
            for pos in 0..200 {
                for first in (0..200).step_by(7) {
                    for len in [0, 1, 5, 64] {
                        let want: Vec<usize> = (0..len)
                            .filter(|&i| visible(pos, first + i, window))
                            .collect();
                        let got: Vec<usize> = visible_span(pos, window, first, len).collect();
                        assert_eq!(got, want, "{pos} {window:?} {first} {len}");
                    }
                }
            }
        }
    }

    /// The AVX-512 one-query kernel gives the generic one's bits: head sizes with and without
    /// a tail past the steps of 64 and of `FP16_STEP`, grouped heads, a window, a query that
    /// sees no cell.
    #[test]
    fn f16_flash_vec_is_the_generic_kernel_bit_for_bit() {
        let noise = |i: usize, s: f32| ((i as f32 * 0.618 + s).sin() * 43758.547).fract() - 0.5;
        for hd in [16, 64, 80, 128, 208, 256] {
            let (n_head, n_head_kv, n_cells) = (4, 2, 40);
            let k: Vec<u16> = (0..n_cells * n_head_kv * hd)
                .map(|i| f16::to_f16(noise(i, 1.0) * 6.0))
                .collect();
            let v: Vec<u16> = (0..n_cells * n_head_kv * hd)
                .map(|i| f16::to_f16(noise(i, 2.0) * 3.0))
                .collect();
            let q: Vec<f32> = (0..n_head * hd).map(|i| noise(i, 3.0) * 4.0).collect();
            let kv = KvView {
                k: &k,
                v: &v,
                k_type: KvType::F16,
                v_type: KvType::F16,
                n_cells,
            };
            for window in [None, Some(5)] {
                let heads = Heads {
                    n_head,
                    n_head_kv,
                    head_dim: hd,
                    scale: 0.3,
                    window,
                };
                if !flash_f16::usable(heads, kv) {
                    eprintln!("skipped: no AVX-512");
                    return;
                }
                for pos in [0, 1, 7, 39, 60] {
                    for h in 0..n_head {
                        let qh = &q[h * hd..][..hd];
                        let (mut want, mut got) = (vec![0f32; hd], vec![0f32; hd]);
                        flash_vec(heads, h, qh, pos, kv, &mut want);
                        // SAFETY: `usable` checked above.
                        unsafe { flash_f16::flash_vec(heads, h, qh, pos, kv, &mut got) };
                        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "hd {hd} {window:?} pos {pos} h {h}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_kernel_matches_reference_with_gqa_and_window() {
        let threads = Threads::new(2).unwrap();
        let (n_head, n_head_kv, hd, n_tok) = (4, 2, 64, 70);
        let noise = |i: usize, s: f32| ((i as f32 * 0.618 + s).sin() * 43758.547).fract() - 0.5;
        let k: Vec<u16> = (0..n_tok * n_head_kv * hd)
            .map(|i| f16::to_f16(noise(i, 1.0) * 4.0))
            .collect();
        let v: Vec<u16> = (0..n_tok * n_head_kv * hd)
            .map(|i| f16::to_f16(noise(i, 2.0)))
            .collect();
        let q: Vec<f32> = (0..n_tok * n_head * hd)
            .map(|i| noise(i, 3.0) * 4.0)
            .collect();
        let positions: Vec<usize> = (0..n_tok).collect();
        let kv = KvView {
            k: &k,
            v: &v,
            k_type: KvType::F16,
            v_type: KvType::F16,
            n_cells: n_tok,
        };
        for window in [None, Some(8)] {
            let heads = Heads {
                n_head,
                n_head_kv,
                head_dim: hd,
                scale: 0.125,
                window,
            };
            for kernel in [Kernel::FlashVec, Kernel::FlashTiled, Kernel::Standard] {
                let mut out = vec![0f32; n_tok * n_head * hd];
                attend(&threads, kernel, heads, &q, &positions, kv, &mut out);
                for t in [0, 1, 9, 63, 64, 69] {
                    for h in 0..n_head {
                        let want = reference(heads, &q[(t * n_head + h) * hd..][..hd], t, kv, h);
                        let got = &out[(t * n_head + h) * hd..][..hd];
                        for d in 0..hd {
                            let err = (got[d] as f64 - want[d]).abs();
                            assert!(err < 4e-3, "{kernel:?} {window:?} t{t} h{h} d{d}: {err}");
                        }
                    }
                }
            }
        }
    }

    /// Softmax attention in f64 on f32 rows of K and V (`[cell][kv head][d]`).
    fn reference_f32(
        heads: Heads,
        q: &[f32],
        pos: usize,
        k: &[f32],
        v: &[f32],
        h: usize,
    ) -> Vec<f64> {
        let hd = heads.head_dim;
        let kvh = kv_head(heads, h);
        let row = |x: &'static str, c: usize| {
            let src = if x == "k" { k } else { v };
            &src[(c * heads.n_head_kv + kvh) * hd..][..hd]
        };
        let cells: Vec<usize> = (0..=pos)
            .filter(|&c| visible(pos, c, heads.window))
            .collect();
        let scores: Vec<f64> = cells
            .iter()
            .map(|&c| {
                let s: f64 = (0..hd).map(|d| q[d] as f64 * row("k", c)[d] as f64).sum();
                s * heads.scale as f64
            })
            .collect();
        let m = scores.iter().copied().fold(f64::MIN, f64::max);
        let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
        let mut out = vec![0f64; hd];
        for (&c, &s) in cells.iter().zip(&scores) {
            for (d, o) in out.iter_mut().enumerate() {
                *o += (s - m).exp() / z * row("v", c)[d] as f64;
            }
        }
        out
    }

    /// A quantized cache: attention must equal exact softmax attention on the dequantized K
    /// and V, with Q rounded the way the kernel rounds it (Q8_0 for a quantized K).
    #[test]
    fn quantized_caches_attend_over_their_dequantized_rows() {
        use crate::kv_cache::KvCache;
        let threads = Threads::new(2).unwrap();
        let (n_head, n_head_kv, hd, n_tok) = (4, 2, 64, 70);
        let noise = |i: usize, s: f32| ((i as f32 * 0.618 + s).sin() * 43758.547).fract() - 0.5;
        let width = n_head_kv * hd;
        let k: Vec<f32> = (0..n_tok * width).map(|i| noise(i, 1.0) * 4.0).collect();
        let v: Vec<f32> = (0..n_tok * width).map(|i| noise(i, 2.0)).collect();
        let q: Vec<f32> = (0..n_tok * n_head * hd)
            .map(|i| noise(i, 3.0) * 4.0)
            .collect();
        let positions: Vec<usize> = (0..n_tok).collect();
        let dequant = |ty: KvType, x: &[f32]| -> Vec<f32> {
            let g = ty.ggml();
            let mut bytes = vec![0u8; hearth_quant::row_bytes(g, x.len()).unwrap()];
            if ty == KvType::Q8_0 {
                hearth_quant::quantize_act(g, x, &mut bytes).unwrap();
            } else {
                hearth_quant::quantize_row(g, x, &mut bytes).unwrap();
            }
            let mut out = vec![0f32; x.len()];
            hearth_quant::dequantize_row(g, &bytes, &mut out).unwrap();
            out
        };
        let types = [
            (KvType::Q8_0, KvType::Q8_0),
            (KvType::Q4_0, KvType::Q4_0),
            (KvType::Q8_0, KvType::F16),
            (KvType::F16, KvType::Q4_0),
        ];
        for (kt, vt) in types {
            let mut cache = KvCache::new(1, n_tok, n_head_kv, hd, kt, vt).unwrap();
            cache.write(0, &positions, &k, &v);
            let k_deq = if kt == KvType::F16 {
                k.iter().map(|&x| f16::to_f32(f16::to_f16(x))).collect()
            } else {
                dequant(kt, &k)
            };
            let v_deq = if vt == KvType::F16 {
                v.iter().map(|&x| f16::to_f32(f16::to_f16(x))).collect()
            } else {
                dequant(vt, &v)
            };
            for window in [None, Some(8)] {
                let heads = Heads {
                    n_head,
                    n_head_kv,
                    head_dim: hd,
                    scale: 0.125,
                    window,
                };
                let kernels: &[Kernel] = if vt == KvType::F16 {
                    &[Kernel::FlashVec, Kernel::Standard]
                } else {
                    &[Kernel::FlashVec]
                };
                assert_eq!(
                    Kernel::choose(AttentionMode::Flash, n_tok, kt, vt),
                    Kernel::FlashVec
                );
                for &kernel in kernels {
                    let mut out = vec![0f32; n_tok * n_head * hd];
                    attend(
                        &threads,
                        kernel,
                        heads,
                        &q,
                        &positions,
                        cache.view(0, n_tok),
                        &mut out,
                    );
                    for t in [0, 1, 9, 63, 64, 69] {
                        for h in 0..n_head {
                            let qr = &q[(t * n_head + h) * hd..][..hd];
                            let q_seen = match kt {
                                KvType::F16 => {
                                    qr.iter().map(|&x| f16::to_f32(f16::to_f16(x))).collect()
                                }
                                _ => dequant(KvType::Q8_0, qr),
                            };
                            let want = reference_f32(heads, &q_seen, t, &k_deq, &v_deq, h);
                            let got = &out[(t * n_head + h) * hd..][..hd];
                            for d in 0..hd {
                                let err = (got[d] as f64 - want[d]).abs();
                                assert!(
                                    err < 4e-3,
                                    "{kt}/{vt} {kernel:?} {window:?} t{t} h{h} d{d}: {err}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
