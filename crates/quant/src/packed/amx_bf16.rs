//! Batched products on AMX's bf16 tiles (`tdpbf16ps`), for the packed Q4_0, Q5_0, Q4_K, Q6_K
//! and Q8_0 layouts: hearth's fast order for prompts on CPUs with AMX.
//!
//! llama.cpp's integer kernels scale every 32-element block (Q4_0, Q8_0) or 256-element
//! super-block (Q4_K) of every (row, token) pair in floats, which on tiles means storing and
//! re-reading the result tiles that often. Here the weights of each 16-row group are
//! dequantized once per product to bf16 (`w = d·q`, Q4_K `d·sc·q − dmin·m`, Q6_K
//! `d·sc·(q − 32)`) and the activations, quantized to 8 bits as llama.cpp quantizes them and
//! back, rounded to bf16 ([`Bf16Acts::quantized_like`]), so a result tile accumulates in f32 over
//! the whole row and is stored once. A bf16 weight carries 8 significant bits (the quants and
//! their scales give 10 or more): the products differ from the integer kernels' by about 2⁻⁹
//! relatively, inside what llama.cpp's own builds differ by (`PARITY.md`; measured in the
//! closing note of the speed issue).
//!
//! The scalar twin [`product_scalar`] rounds the same way and sums in f64; the tile unit's own
//! summation order is not specified, so tests compare within a tolerance.

use super::{Out, ROWS};
use crate::common::f16_to_f32;
use crate::{GgmlType, QK_K, QuantError, row_bytes};

/// Whether `ty`'s packed layout has a bf16 tile product.
pub fn supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q4K | GgmlType::Q6K | GgmlType::Q8_0
    )
}

/// Bytes of one packed 16-row group of `ty` with `cols` columns.
fn group_bytes(ty: GgmlType, cols: usize) -> Result<usize, QuantError> {
    super::packed_bytes(ty, ROWS, cols)
}

/// Activations rounded to bf16, in the A-tile layout: per block of 32 tokens, per step of 32
/// columns, two tiles (tokens 0..16, 16..32) of 16 rows × 32 bf16; tokens past the last are
/// zero. Made once per product and shared by every thread.
pub struct Bf16Acts {
    tiles: Vec<Line>,
    n_tok: usize,
    cols: usize,
}

/// Tokens per block: two tiles of 16.
const T: usize = 32;
/// Columns per tile step.
const KS: usize = 32;
/// Lines (64 bytes) per tile.
const TILE_LINES: usize = 16;

/// A cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

const ZERO: Line = Line([0; 32]);

thread_local! {
    /// Activation tiles given back by dropped [`Bf16Acts`]: a 512-token prompt's are megabytes,
    /// and a fresh allocation that size is faulted in and zeroed page by page (~5% of a
    /// prefill) before any line is written.
    static SPARE: std::cell::RefCell<Vec<Vec<Line>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// At least `n_tok` tokens' worth of activation lines, every line of the tokens past `n_tok` in
/// the last block zero and the rest unspecified (each is written before it is read): a spare
/// buffer when one is big enough (the smallest such), else a new one.
fn take_lines(n_tok: usize, steps: usize) -> Vec<Line> {
    let n_blocks = n_tok.div_ceil(T);
    let n = n_blocks * steps * 2 * TILE_LINES;
    let spare = SPARE.with_borrow_mut(|free| {
        let pick = (0..free.len())
            .filter(|&i| free[i].len() >= n)
            .min_by_key(|&i| free[i].len())?;
        Some(free.swap_remove(pick))
    });
    let Some(mut lines) = spare else {
        return vec![ZERO; n];
    };
    // Kept whole (lines past `n` are not read) so that it fits as large a product again.
    // Zero the padding tokens of the last block (stale values there would be harmless to the
    // real tokens' results, but keep them out of reach).
    let block = n_blocks - 1;
    for t in n_tok..n_blocks * T {
        let (half, r) = (t % T / 16, t % 16);
        for ks in 0..steps {
            lines[((block * steps + ks) * 2 + half) * TILE_LINES + r] = ZERO;
        }
    }
    lines
}

impl Drop for Bf16Acts {
    fn drop(&mut self) {
        let lines = std::mem::take(&mut self.tiles);
        if lines.is_empty() {
            return;
        }
        SPARE.with_borrow_mut(|free| {
            // A few buffers cover one step's shapes (attention, FFN in, FFN out).
            if free.len() >= 4
                && let Some(small) = (0..free.len()).min_by_key(|&i| free[i].len())
            {
                if free[small].len() >= lines.len() {
                    return;
                }
                free.swap_remove(small);
            }
            free.push(lines);
        });
    }
}

/// The number of `cols`-wide rows in `x` (`cols` a multiple of 32).
fn check_rows(x: &[f32], cols: usize) -> Result<usize, QuantError> {
    let n_tok = x.len().checked_div(cols).unwrap_or(0);
    if cols == 0 || !cols.is_multiple_of(KS) || n_tok * cols != x.len() {
        return Err(QuantError::Length {
            ty: GgmlType::F32,
            what: "the activation rows",
            unit: "floats",
            expected: n_tok * cols,
            got: x.len(),
        });
    }
    Ok(n_tok)
}

/// A pointer into the tiles being filled, shared by the threads that fill disjoint blocks.
struct LinePtr(*mut Line);
// SAFETY: only used to write disjoint lines (see `quantized_like`).
unsafe impl Sync for LinePtr {}

/// `x` rounded to bf16 (to nearest, ties to even; NaN stays NaN).
fn bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// 32 floats rounded to bf16 into one line.
fn round_line(vals: &[f32], line: &mut Line) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bf16") {
        // SAFETY: the CPU has AVX-512 BF16.
        unsafe { tiles::round_line(vals, line) };
        return;
    }
    for (o, &v) in line.0.iter_mut().zip(vals) {
        *o = bf16(v);
    }
}

/// Whether [`tiles::scaled_line`] may run.
fn scaled_lines_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::isa::active_isa() >= crate::Isa::Avx512
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The 32 quants of step `ks` (columns `32ks..`) of a row quantized as `partner` (Q8_0 or
/// Q8_K), and their scale.
#[inline]
fn step_quants(partner: GgmlType, q: &[u8], ks: usize) -> (&[u8], f32) {
    let bb = partner.block_bytes();
    if partner == GgmlType::Q8K {
        // d (f32), 256 quants, 16 sums.
        let b = &q[ks / 8 * bb..][..bb];
        let d = f32::from_le_bytes(b[..4].try_into().unwrap());
        (&b[4 + ks % 8 * KS..][..KS], d)
    } else {
        // d (f16), 32 quants.
        let b = &q[ks * bb..][..bb];
        (&b[2..], f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
    }
}

fn from_bf16(b: u16) -> f32 {
    half::bf16::from_bits(b).to_f32()
}

impl Bf16Acts {
    /// `x` (`n_tok` rows of `cols` floats, `cols` a multiple of 32) quantized as llama.cpp
    /// quantizes activations for `weight` (Q8_0 blocks of 32 for Q4_0/Q5_0/Q8_0, Q8_K blocks of
    /// 256 for the K-quants) and back, then rounded to bf16: the products keep llama.cpp's own
    /// activation rounding (its largest difference from exact arithmetic) and add only bf16's,
    /// 2⁻⁹ relative. The tokens are filled by `par(n_tok, fill)`, which must call
    /// `fill(first, count)` once for each of disjoint ranges covering `0..n_tok` (on several
    /// threads, say).
    pub fn quantized_like(
        weight: GgmlType,
        x: &[f32],
        cols: usize,
        par: impl FnOnce(usize, &(dyn Fn(usize, usize) + Sync)),
    ) -> Result<Bf16Acts, QuantError> {
        Self::quantized_like_in(scaled_lines_fast(), weight, x, cols, par)
    }

    /// [`quantized_like`](Self::quantized_like), each line made by [`tiles::scaled_line`] from
    /// the quantized row when `fast`, else by dequantizing the row and rounding.
    fn quantized_like_in(
        fast: bool,
        weight: GgmlType,
        x: &[f32],
        cols: usize,
        par: impl FnOnce(usize, &(dyn Fn(usize, usize) + Sync)),
    ) -> Result<Bf16Acts, QuantError> {
        let partner = crate::vec_dot_type(weight)?;
        let rb = row_bytes(partner, cols)?;
        let n_tok = check_rows(x, cols)?;
        let steps = cols / KS;
        let mut tiles = take_lines(n_tok, steps);
        let base = LinePtr(tiles.as_mut_ptr());
        let err = std::sync::Mutex::new(None);
        let fill = |t0: usize, nt: usize| {
            let base = &base;
            let (mut q, mut back) = (vec![0u8; rb], vec![0f32; if fast { 0 } else { cols }]);
            for t in t0..t0 + nt {
                let row = &x[t * cols..(t + 1) * cols];
                let mut done = crate::quantize_act(weight, row, &mut q);
                if !fast {
                    done = done.and_then(|()| crate::dequantize_row(partner, &q, &mut back));
                }
                if let Err(e) = done {
                    *err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return;
                }
                let (block, half, r) = (t / T, t % T / 16, t % 16);
                for ks in 0..steps {
                    let i = ((block * steps + ks) * 2 + half) * TILE_LINES + r;
                    // SAFETY: line i belongs to token t, which only this call fills; `tiles`
                    // outlives `par`.
                    let line = unsafe { &mut *base.0.add(i) };
                    if fast {
                        let (qs, d) = step_quants(partner, &q, ks);
                        // SAFETY: `fast` checked AVX-512 BF16.
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            tiles::scaled_line(qs, d, line)
                        };
                    } else {
                        round_line(&back[ks * KS..(ks + 1) * KS], line);
                    }
                }
            }
        };
        par(n_tok, &fill);
        if let Some(e) = err.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        Ok(Bf16Acts { tiles, n_tok, cols })
    }

    /// `x` (`n_tok` rows of `cols` floats) rounded to bf16 as it is.
    pub fn new(x: &[f32], cols: usize) -> Result<Bf16Acts, QuantError> {
        let n_tok = check_rows(x, cols)?;
        let steps = cols / KS;
        let mut tiles = take_lines(n_tok, steps);
        for (t, row) in x.chunks_exact(cols).enumerate() {
            let (block, half, r) = (t / T, t % T / 16, t % 16);
            for (ks, vals) in row.chunks_exact(KS).enumerate() {
                let line = &mut tiles[((block * steps + ks) * 2 + half) * TILE_LINES + r];
                round_line(vals, line);
            }
        }
        Ok(Bf16Acts { tiles, n_tok, cols })
    }

    pub fn n_tok(&self) -> usize {
        self.n_tok
    }

    fn at(&self, t: usize, k: usize) -> f32 {
        let steps = self.cols / KS;
        let (block, half, r) = (t / T, t % T / 16, t % 16);
        from_bf16(self.tiles[((block * steps + k / KS) * 2 + half) * TILE_LINES + r].0[k % KS])
    }
}

/// `w[r] · x[t]` for the rows of the packed groups of `ty` in `packed` (`cols` columns) and every
/// token of `acts`, into `out`. Uses AMX when the CPU has it and `isa` allows it, else the
/// scalar twin. Single-threaded.
pub fn product(
    isa: crate::Isa,
    ty: GgmlType,
    packed: &[u8],
    cols: usize,
    acts: &Bf16Acts,
    out: &mut Out,
) -> Result<(), QuantError> {
    if !supported(ty) {
        return Err(QuantError::Unsupported {
            ty,
            op: "bf16 tile products",
        });
    }
    row_bytes(ty, cols)?;
    let gb = group_bytes(ty, cols)?;
    if acts.cols != cols
        || acts.n_tok != out.n_tok()
        || packed.len() != out.rows().div_ceil(ROWS) * gb
    {
        return Err(QuantError::Length {
            ty,
            what: "the packed rows, activations or output",
            unit: "bytes",
            expected: out.rows().div_ceil(ROWS) * gb,
            got: packed.len(),
        });
    }
    #[cfg(target_arch = "x86_64")]
    if isa.min(crate::isa::detected_isa()) >= crate::Isa::Amx {
        // SAFETY: the CPU has AMX and AVX-512 BF16 (the AMX level implies both); sizes checked.
        unsafe { tiles::product(ty, packed, gb, cols, acts, out) };
        return Ok(());
    }
    let _ = isa;
    product_scalar(ty, packed, gb, cols, acts, out);
    Ok(())
}

/// The weights of row `lane` of a packed group, dequantized to f32 as the tile kernels do and
/// rounded to bf16.
fn dequant_row(ty: GgmlType, group: &[u8], cols: usize, lane: usize) -> Vec<f32> {
    let mut w = vec![0f32; cols];
    match ty {
        GgmlType::Q4_0 | GgmlType::Q8_0 => {
            let (bb, d_at) = if ty == GgmlType::Q4_0 {
                (super::q4_0::GROUP_BLOCK_BYTES, 64 * 4)
            } else {
                (super::q8_0::GROUP_BLOCK_BYTES, 64 * 8)
            };
            for (b, p) in group.chunks_exact(bb).enumerate() {
                let d = f16_to_f32(u16::from_le_bytes([
                    p[d_at + 2 * lane],
                    p[d_at + 2 * lane + 1],
                ]));
                for e in 0..32 {
                    let q = if ty == GgmlType::Q4_0 {
                        let byte = p[(e % 16 / 4) * 64 + lane * 4 + e % 4];
                        (if e < 16 { byte & 15 } else { byte >> 4 }) as i32 - 8
                    } else {
                        (p[(e / 4) * 64 + lane * 4 + e % 4] ^ 0x80) as i8 as i32
                    };
                    w[b * 32 + e] = q as f32 * d;
                }
            }
        }
        GgmlType::Q5_0 => {
            use super::q5_0::{D, GROUP_BLOCK_BYTES, MASKS};
            for (b, p) in group.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
                let d = f16_to_f32(u16::from_le_bytes([p[D + 2 * lane], p[D + 2 * lane + 1]]));
                for e in 0..32 {
                    let (j, i, high) = (e % 16 / 4, e % 4, e >= 16);
                    let byte = p[j * 64 + lane * 4 + i];
                    let nib = if high { byte >> 4 } else { byte & 15 };
                    let m = &p[MASKS + (2 * j + high as usize) * 8..][..8];
                    let mask = u64::from_le_bytes(m.try_into().unwrap());
                    let fifth = (mask >> (4 * lane + i)) & 1;
                    let q = (nib as i32 | (fifth as i32) << 4) - 16;
                    w[b * 32 + e] = q as f32 * d;
                }
            }
        }
        GgmlType::Q6K => {
            use super::q6_k::{D, GROUP_SB_BYTES, SC, qh_at, ql_at};
            for (s, p) in group.chunks_exact(GROUP_SB_BYTES).enumerate() {
                let d = f16_to_f32(u16::from_le_bytes([p[D + 2 * lane], p[D + 2 * lane + 1]]));
                for e in 0..QK_K {
                    let (h, within) = (e / 128, e % 128);
                    let (nib, part, l) = (within / 64, within % 64 / 32, within % 32);
                    let (j, b) = (l / 4, l % 4);
                    let ql = p[ql_at(h, part, j) + lane * 4 + b];
                    let qh = p[qh_at(h, j) + lane * 4 + b];
                    let lo = if nib == 0 { ql & 15 } else { ql >> 4 };
                    let hi = (qh >> (2 * (part + 2 * nib))) & 3;
                    let q = (lo | (hi << 4)) as i32 - 32;
                    let scale = d * p[SC + (e / 16) * ROWS + lane] as i8 as f32;
                    w[s * QK_K + e] = q as f32 * scale;
                }
            }
        }
        _ => {
            use super::q4_k::{D, DMIN, GROUP_SB_BYTES, MN, SC};
            for (s, p) in group.chunks_exact(GROUP_SB_BYTES).enumerate() {
                let h = |at: usize| f16_to_f32(u16::from_le_bytes([p[at], p[at + 1]]));
                let (d, dmin) = (h(D + 2 * lane), h(DMIN + 2 * lane));
                for e in 0..QK_K {
                    let (c, within) = (e / 64, e % 64);
                    let byte = p[(c * 8 + within % 32 / 4) * 64 + lane * 4 + within % 4];
                    let q = if within < 32 { byte & 15 } else { byte >> 4 };
                    let sub = e / 32;
                    let scale = d * p[SC + sub * ROWS + lane] as f32;
                    let min = dmin * p[MN + sub * ROWS + lane] as f32;
                    w[s * QK_K + e] = (q as f32).mul_add(scale, -min);
                }
            }
        }
    }
    for v in &mut w {
        *v = from_bf16(bf16(*v));
    }
    w
}

/// The scalar twin: bf16 weights and activations, products summed in f64.
fn product_scalar(
    ty: GgmlType,
    packed: &[u8],
    gb: usize,
    cols: usize,
    acts: &Bf16Acts,
    out: &mut Out,
) {
    for r in 0..out.rows() {
        let w = dequant_row(ty, &packed[r / ROWS * gb..][..gb], cols, r % ROWS);
        for t in 0..acts.n_tok {
            let sum: f64 = (0..cols).map(|k| w[k] as f64 * acts.at(t, k) as f64).sum();
            out.put(t, r, &[sum as f32]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod tiles {
    use super::*;
    use crate::amx::Tiles;
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// Bytes of weight panels dequantized at a time: a run of groups whose panels stay in L2
    /// while every token block passes over them.
    const RUN_BYTES: usize = 512 << 10;

    /// Steps of a Q4_K/Q6_K super-block: long rows are cut into chunks of whole super-blocks.
    const CHUNK_STEPS: usize = 8;

    /// Steps per chunk of a long row when there are several token blocks (2048 columns).
    const KC_STEPS: usize = 64;

    thread_local! {
        /// Each thread's panel buffer, kept between products: a fresh one per product cost
        /// zeroing and page faults comparable to a short prompt's whole product.
        static PANELS: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
        /// Each thread's partial sums between the chunks of long rows: 4 tiles per token
        /// block and group pair of a run.
        static PARTIAL: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// # Safety
    /// AMX (with AVX-512 BF16) must be usable; `packed` holds whole groups of `gb` bytes for
    /// `out.rows()` rows, `acts` the tokens of `out`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16,avx512vbmi")]
    pub(super) unsafe fn product(
        ty: GgmlType,
        packed: &[u8],
        gb: usize,
        cols: usize,
        acts: &Bf16Acts,
        out: &mut Out,
    ) {
        let steps = cols / KS;
        let groups = packed.len() / gb;
        let blocks = acts.n_tok.div_ceil(T);
        PANELS.with_borrow_mut(|panels| {
            // SAFETY: the caller's contract.
            let _tiles = unsafe { Tiles::configure() };
            if blocks == 1 {
                // One token block: each step's panels are used once. They are made two steps
                // ahead in a ring of three, so that the dequantization of step u + 2 (vector
                // units) runs while the tiles multiply step u (the AMX unit) instead of after.
                const RING: usize = 3;
                let slot_lines = 2 * TILE_LINES;
                if panels.len() < RING * slot_lines {
                    panels.resize(RING * slot_lines, ZERO);
                }
                debug_assert_eq!(gb % steps, 0);
                let step_bytes = gb / steps;
                let a = acts.tiles.as_ptr() as *const u8;
                let ring = panels.as_mut_ptr();
                let units = groups.div_ceil(2) * steps;
                // Unit u: step u % steps of the group pair 2(u / steps), into slot u % RING.
                let make = |u: usize| {
                    let (pair, ks) = (2 * (u / steps), u % steps);
                    let slot = ring.wrapping_add(u % RING * slot_lines);
                    // The bytes of the step's block, or super-block for Q4_K/Q6_K (8 steps).
                    let span = if matches!(ty, GgmlType::Q4K | GgmlType::Q6K) {
                        8
                    } else {
                        1
                    };
                    let from = ks / span * span;
                    for j in 0..(1 + (pair + 1 < groups) as usize) {
                        let g = &packed[(pair + j) * gb..(pair + j + 1) * gb][from * step_bytes..];
                        // The packed rows stream from memory once; fetch ahead into L2.
                        super::super::prefetch_tiles(
                            g.as_ptr().wrapping_add((ks - from) * step_bytes),
                            step_bytes,
                        );
                        dequant_step(ty, g, ks - from, slot.wrapping_add(j * TILE_LINES));
                    }
                };
                make(0);
                if units > 1 {
                    make(1);
                }
                for u in 0..units {
                    let (pair, ks) = (2 * (u / steps), u % steps);
                    let two = pair + 1 < groups;
                    let w0 = ring.wrapping_add(u % RING * slot_lines) as *const u8;
                    let w1 = if two {
                        w0.wrapping_add(TILE_LINES * 64)
                    } else {
                        w0
                    };
                    // SAFETY: tiles 0..8 are configured; step ks of the token block and the
                    // slot's two panels are whole tiles.
                    unsafe {
                        if ks == 0 {
                            zero_acc();
                        }
                        step(a.add(ks * 2 * 1024), w0, w1);
                    }
                    if u + 2 < units {
                        make(u + 2);
                    }
                    if ks + 1 == steps {
                        scatter(pair, two, 0, acts, out);
                    }
                }
                return;
            }
            // Long rows are cut into chunks of `KC_STEPS` steps, each with its own run of panels:
            // the run (and with it every pass over the token blocks' activations) then covers as
            // many rows for a 8192-column matrix as for a 2048-column one, and the partial sums
            // wait in `partial` between chunks.
            let kc = if steps > KC_STEPS && steps.is_multiple_of(CHUNK_STEPS) {
                KC_STEPS
            } else {
                steps
            };
            let chunks = steps.div_ceil(kc);
            let chunk_lines = kc * TILE_LINES;
            let per_run = (RUN_BYTES / (chunk_lines * 64)).max(2) & !1;
            let need = per_run.min(groups + 1) * chunk_lines;
            if panels.len() < need {
                panels.resize(need, ZERO);
            }
            let acc_lines = 4 * TILE_LINES;
            let pairs = per_run.min(groups).div_ceil(2);
            PARTIAL.with_borrow_mut(|partial| {
                if chunks > 1 && partial.len() < blocks * pairs * acc_lines {
                    partial.resize(blocks * pairs * acc_lines, ZERO);
                }
                let step_bytes = gb / steps;
                for g0 in (0..groups).step_by(per_run) {
                    let run = per_run.min(groups - g0);
                    for c in 0..chunks {
                        let (s0, n) = (c * kc, kc.min(steps - c * kc));
                        let bytes = s0 * step_bytes..(s0 + n) * step_bytes;
                        for (i, panel) in panels.chunks_exact_mut(chunk_lines).take(run).enumerate()
                        {
                            let g = &packed[(g0 + i) * gb..(g0 + i + 1) * gb];
                            dequant_group(ty, &g[bytes.clone()], n, panel);
                        }
                        for b in 0..blocks {
                            let a = acts.tiles[(b * steps + s0) * 2 * TILE_LINES..].as_ptr()
                                as *const u8;
                            for pair in (0..run).step_by(2) {
                                let two = pair + 1 < run;
                                let w0 = panels[pair * chunk_lines..].as_ptr() as *const u8;
                                // A lone last group multiplies its own panel twice (one result
                                // is unused).
                                let w1 = if two {
                                    w0.wrapping_add(chunk_lines * 64)
                                } else {
                                    w0
                                };
                                let acc = partial
                                    .as_mut_ptr()
                                    .wrapping_add((b * pairs + pair / 2) * acc_lines)
                                    as *mut u8;
                                // SAFETY: tiles 0..8 are configured; every tile read is 16 whole
                                // lines of `acts.tiles` (block b, steps s0..s0 + n) or of a
                                // panel; `acc` is 4 tiles of `partial` when there are chunks.
                                unsafe {
                                    if c == 0 {
                                        zero_acc();
                                    } else {
                                        load_acc(acc);
                                    }
                                    for ks in 0..n {
                                        step(
                                            a.add(ks * 2 * 1024),
                                            w0.add(ks * 1024),
                                            w1.add(ks * 1024),
                                        );
                                    }
                                    if c + 1 < chunks {
                                        store_acc(acc);
                                    }
                                }
                                if c + 1 == chunks {
                                    scatter(g0 + pair, two, b, acts, out);
                                }
                            }
                        }
                    }
                }
            })
        })
    }

    /// Loads the accumulator tiles 0..4 from 4 KiB at `src`.
    ///
    /// # Safety
    /// The tiles must be configured; `src` starts 4 KiB of readable memory.
    #[inline(always)]
    unsafe fn load_acc(src: *const u8) {
        // SAFETY: the caller's contract.
        unsafe {
            asm!(
                "tileloadd tmm0, [{p} + {s}*1]",
                "tileloadd tmm1, [{p} + {s}*1 + 1024]",
                "tileloadd tmm2, [{p} + {s}*1 + 2048]",
                "tileloadd tmm3, [{p} + {s}*1 + 3072]",
                p = in(reg) src,
                s = in(reg) 64usize,
                options(nostack, readonly)
            )
        };
    }

    /// Stores the accumulator tiles 0..4 to 4 KiB at `dst`.
    ///
    /// # Safety
    /// The tiles must be configured; `dst` starts 4 KiB of writable memory.
    #[inline(always)]
    unsafe fn store_acc(dst: *mut u8) {
        // SAFETY: the caller's contract.
        unsafe {
            asm!(
                "tilestored [{p} + {s}*1], tmm0",
                "tilestored [{p} + {s}*1 + 1024], tmm1",
                "tilestored [{p} + {s}*1 + 2048], tmm2",
                "tilestored [{p} + {s}*1 + 3072], tmm3",
                p = in(reg) dst,
                s = in(reg) 64usize,
                options(nostack)
            )
        };
    }

    /// Zeroes the accumulator tiles 0..4.
    ///
    /// # Safety
    /// The tiles must be configured.
    #[inline(always)]
    unsafe fn zero_acc() {
        // SAFETY: the caller's contract.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            )
        };
    }

    /// One step of 32 columns: tokens 0..16 (`a0`) and 16..32 (`a0 + 1024`) times the panels of
    /// two groups (`w0`, `w1`) into accumulators (h, j) = tile 2j + h.
    ///
    /// # Safety
    /// The tiles must be configured; each pointer starts 1 KiB (two at `a0`) of readable lines.
    #[inline(always)]
    unsafe fn step(a0: *const u8, w0: *const u8, w1: *const u8) {
        // SAFETY: the caller's contract.
        unsafe {
            asm!(
                "tileloadd tmm4, [{a0} + {s}*1]",
                "tileloadd tmm5, [{a1} + {s}*1]",
                "tileloadd tmm6, [{w0} + {s}*1]",
                "tileloadd tmm7, [{w1} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm5, tmm6",
                "tdpbf16ps tmm2, tmm4, tmm7",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0,
                a1 = in(reg) a0.add(1024),
                w0 = in(reg) w0,
                w1 = in(reg) w1,
                s = in(reg) 64usize,
                options(nostack, readonly)
            )
        };
    }

    /// Stores tile `$tile` to 16 lines at `$dst`, `$stride` bytes apart.
    macro_rules! tilestored {
        ($tile:literal, $dst:expr, $stride:expr) => {
            asm!(
                concat!("tilestored [{d} + {s}*1], ", $tile),
                d = in(reg) $dst,
                s = in(reg) $stride,
                options(nostack)
            )
        };
    }

    /// Stores the accumulators of groups `g`, `g + 1` (when `two`) for token block `b` into `out`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")]
    fn scatter(g: usize, two: bool, b: usize, acts: &Bf16Acts, out: &mut Out) {
        // Whole tiles go straight to a token-major output.
        let direct = [(0, 0), (1, 0), (0, 1), (1, 1)]
            .map(|(h, j)| out.tile16(b * T + 16 * h, (g + j) * ROWS));
        if let [Some(d0), Some(d1), d2, d3] = direct
            && (!two || (d2.is_some() && d3.is_some()))
        {
            // SAFETY: the tiles are configured (every caller holds `Tiles`); each block is
            // inside the output (`tile16`).
            unsafe {
                tilestored!("tmm0", d0.0, d0.1);
                tilestored!("tmm1", d1.0, d1.1);
                if two && let (Some(d2), Some(d3)) = (d2, d3) {
                    tilestored!("tmm2", d2.0, d2.1);
                    tilestored!("tmm3", d3.0, d3.1);
                }
            }
            return;
        }
        let mut c = std::mem::MaybeUninit::<[Line; 4 * TILE_LINES]>::uninit();
        let cp = c.as_mut_ptr() as *mut u8;
        // SAFETY: as above; `c` holds 4 tiles, which the stores fill completely.
        let c = unsafe {
            tilestored!("tmm0", cp, 64usize);
            tilestored!("tmm1", cp.add(1024), 64usize);
            tilestored!("tmm2", cp.add(2048), 64usize);
            tilestored!("tmm3", cp.add(3072), 64usize);
            c.assume_init()
        };
        // Result tile (token half h, group j) is c[2j + h]: row = token, lane = row.
        for j in 0..1 + two as usize {
            let r0 = (g + j) * ROWS;
            for t in 0..T.min(acts.n_tok - b * T) {
                let line = &c[(2 * j + t / 16) * TILE_LINES + t % 16];
                // SAFETY: a line holds 16 f32.
                let v = unsafe { _mm512_load_ps(line.0.as_ptr().cast()) };
                let tok = b * T + t;
                match out.lanes16(tok, r0) {
                    // SAFETY: `lanes16` gives room for 16 floats.
                    Some(dst) => unsafe { _mm512_storeu_ps(dst, v) },
                    None => {
                        let mut lanes = [0f32; ROWS];
                        // SAFETY: `lanes` holds 16 floats.
                        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
                        out.put(tok, r0, &lanes);
                    }
                }
            }
        }
    }

    /// [`super::round_line`] (the same rounding: to nearest, ties to even).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) fn round_line(vals: &[f32], line: &mut Line) {
        let vals = &vals[..32];
        // SAFETY: 32 floats in, one aligned line out.
        unsafe {
            let lo = _mm512_loadu_ps(vals.as_ptr());
            let hi = _mm512_loadu_ps(vals.as_ptr().add(16));
            let b: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_store_si512(line.0.as_mut_ptr().cast(), b);
        }
    }

    /// Line = the 32 quants `q` (i8) times `d`, rounded to bf16: what [`super::round_line`]
    /// makes of the row that `dequantize_row` gives back (the same product, one rounding each).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) fn scaled_line(q: &[u8], d: f32, line: &mut Line) {
        let q = &q[..32];
        // SAFETY: 32 bytes in, one aligned line out.
        unsafe {
            let v = _mm256_loadu_si256(q.as_ptr().cast());
            let dv = _mm512_set1_ps(d);
            let lo = _mm512_cvtepi8_epi32(_mm256_castsi256_si128(v));
            let hi = _mm512_cvtepi8_epi32(_mm256_extracti128_si256::<1>(v));
            let lo = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), dv);
            let hi = _mm512_mul_ps(_mm512_cvtepi32_ps(hi), dv);
            let b: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_store_si512(line.0.as_mut_ptr().cast(), b);
        }
    }

    /// A per-row value (16 lanes, row r in lane r) spread over the lanes of two row-pair
    /// vectors: lanes 2i and 2i + 1 of `[0]` hold row i, of `[1]` row 8 + i.
    #[derive(Clone, Copy)]
    struct Pairs([__m512; 2]);

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn pairs(v: __m512, factor: f32) -> Pairs {
        let lo = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
        let hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
        let f = _mm512_set1_ps(factor);
        Pairs([
            _mm512_mul_ps(_mm512_permutexvar_ps(lo, v), f),
            _mm512_mul_ps(_mm512_permutexvar_ps(hi, v), f),
        ])
    }

    /// [`emit`]'s scale: a quant sits in the top byte of its lane (`q·2²⁴`), which the scale
    /// undoes exactly.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn scale_pairs(scale: __m512) -> Pairs {
        pairs(scale, 1.0 / (1 << 24) as f32)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn bias_pairs(bias: __m512) -> Pairs {
        pairs(bias, 1.0)
    }

    /// Writes the 4 columns of one packed line (16 rows × 4 signed values `v`, byte `i` of
    /// dword `r` = row r's column `k0 + i`) as `q·scale − bias` (per row) in bf16 into the
    /// panel rows for column pairs `k0/2` and `k0/2 + 1` (`dst` = the first of those lines).
    ///
    /// One byte permute puts each (row, column) quant in the top byte of the lane its bf16 pair
    /// needs, so the float conversion, the scaling and the bf16 packing need no further shuffles.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16,avx512vbmi")]
    fn emit(v: __m512i, scale: &Pairs, bias: &Pairs, dst: *mut Line) {
        // Lane i of output line l, half h: row 8h + i/2, column 2l + i%2, i.e. byte
        // 4(8h + i/2) + 2l + i%2 of `v`, moved to byte 4i + 3 (the others zeroed).
        const fn index(l: usize, h: usize) -> [i8; 64] {
            let mut idx = [0i8; 64];
            let mut i = 0;
            while i < 16 {
                idx[4 * i + 3] = (4 * (8 * h + i / 2) + 2 * l + i % 2) as i8;
                i += 1;
            }
            idx
        }
        const IDX: [[[i8; 64]; 2]; 2] = [[index(0, 0), index(0, 1)], [index(1, 0), index(1, 1)]];
        for (l, idx) in IDX.iter().enumerate() {
            let half = |h: usize| {
                // SAFETY: 64 bytes of index.
                let ix = unsafe { _mm512_loadu_si512(idx[h].as_ptr().cast()) };
                let q = permute_top(ix, v);
                _mm512_fmsub_ps(_mm512_cvtepi32_ps(q), scale.0[h], bias.0[h])
            };
            let (lo, hi) = (half(0), half(1));
            // SAFETY: the caller gives two whole lines at `dst`.
            unsafe {
                let p: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_store_si512(dst.add(l).cast(), p);
            }
        }
    }

    /// `_mm512_maskz_permutexvar_epi8` keeping the top byte of each lane, written out: LLVM
    /// turns the intrinsic into a permute and an AND, a µop more per vector (dequantization
    /// alone, 640×2048 Q5_0 at 32 tokens, alternating runs: ~8% faster).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    fn permute_top(ix: __m512i, v: __m512i) -> __m512i {
        let q: __m512i;
        // SAFETY: register-only AVX-512 VBMI instruction (the caller's target features).
        unsafe {
            asm!(
                "vpermb {q}{{{k}}}{{z}}, {ix}, {v}",
                q = out(zmm_reg) q,
                k = in(kreg) 0x8888_8888_8888_8888u64,
                ix = in(zmm_reg) ix,
                v = in(zmm_reg) v,
                options(pure, nomem, nostack)
            )
        };
        q
    }

    /// The panel of one group: per step of 32 columns, one B tile of 16 lines, line `kk`
    /// holding columns `2kk, 2kk + 1` of the 16 rows (row r at bf16 pair r).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16,avx512vbmi")]
    fn dequant_group(ty: GgmlType, group: &[u8], steps: usize, panel: &mut [Line]) {
        assert!(panel.len() >= steps * TILE_LINES);
        for ks in 0..steps {
            // SAFETY: step ks's 16 lines are inside `panel` (asserted).
            dequant_step(ty, group, ks, unsafe {
                panel.as_mut_ptr().add(ks * TILE_LINES)
            });
        }
    }

    /// Step `ks` of a group's panel (16 lines at `dst`, which must be writable) from `group`,
    /// the group's packed bytes from a block (Q4_0/Q5_0/Q8_0) or super-block (Q4_K/Q6_K)
    /// boundary on.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16,avx512vbmi")]
    fn dequant_step(ty: GgmlType, group: &[u8], ks: usize, dst: *mut Line) {
        let line = |p: &[u8], i: usize| unsafe { _mm512_loadu_si512(p[i * 64..].as_ptr().cast()) };
        let halves = |p: &[u8], at: usize| unsafe {
            _mm512_cvtph_ps(_mm256_loadu_si256(p[at..at + 32].as_ptr().cast()))
        };
        let at = |i: usize| dst.wrapping_add(i);
        let m4 = _mm512_set1_epi8(0x0f);
        let zero = Pairs([_mm512_setzero_ps(); 2]);
        match ty {
            GgmlType::Q4_0 => {
                let bb = super::super::q4_0::GROUP_BLOCK_BYTES;
                let p = &group[ks * bb..(ks + 1) * bb];
                let eight = _mm512_set1_epi8(8);
                let d = scale_pairs(halves(p, 64 * 4));
                for j in 0..4 {
                    let x = line(p, j);
                    let lo = _mm512_sub_epi8(_mm512_and_si512(x, m4), eight);
                    let hi =
                        _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16::<4>(x), m4), eight);
                    // Columns 4j.. (lines 2j, 2j+1) and 16 + 4j.. (lines 8 + 2j, 9 + 2j).
                    emit(lo, &d, &zero, at(2 * j));
                    emit(hi, &d, &zero, at(8 + 2 * j));
                }
            }
            GgmlType::Q5_0 => {
                use super::super::q5_0::{D, GROUP_BLOCK_BYTES, MASKS};
                let p = &group[ks * GROUP_BLOCK_BYTES..(ks + 1) * GROUP_BLOCK_BYTES];
                let sixteen = _mm512_set1_epi8(16);
                let d = scale_pairs(halves(p, D));
                let mask =
                    |i: usize| u64::from_le_bytes(p[MASKS + 8 * i..][..8].try_into().unwrap());
                for j in 0..4 {
                    let x = line(p, j);
                    let lo = _mm512_and_si512(x, m4);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4);
                    let lo = _mm512_mask_add_epi8(lo, mask(2 * j), lo, sixteen);
                    let hi = _mm512_mask_add_epi8(hi, mask(2 * j + 1), hi, sixteen);
                    emit(_mm512_sub_epi8(lo, sixteen), &d, &zero, at(2 * j));
                    emit(_mm512_sub_epi8(hi, sixteen), &d, &zero, at(8 + 2 * j));
                }
            }
            GgmlType::Q8_0 => {
                let bb = super::super::q8_0::GROUP_BLOCK_BYTES;
                let p = &group[ks * bb..(ks + 1) * bb];
                let flip = _mm512_set1_epi8(-128);
                let d = scale_pairs(halves(p, 64 * 8));
                for j in 0..8 {
                    emit(_mm512_xor_si512(line(p, j), flip), &d, &zero, at(2 * j));
                }
            }
            GgmlType::Q6K => {
                use super::super::q6_k::{D, GROUP_SB_BYTES, SC, qh_at, ql_at};
                let p = &group[ks / 8 * GROUP_SB_BYTES..(ks / 8 + 1) * GROUP_SB_BYTES];
                // Step st of the super-block: columns 32·st.. = 128h + 32·part + 64·nib.
                let st = ks % 8;
                let (h, part, nib) = (st / 4, st % 2, st % 4 / 2);
                let m3 = _mm512_set1_epi8(3);
                let thirty_two = _mm512_set1_epi8(32);
                let d = halves(p, D);
                let shift = _mm_cvtsi32_si128(2 * (part + 2 * nib) as i32);
                for jh in 0..2 {
                    // Columns k0.. of this step share one scale per 16.
                    let k0 = 32 * st + 16 * jh;
                    let sc = unsafe {
                        _mm512_cvtepi8_epi32(_mm_loadu_si128(
                            p[SC + (k0 / 16) * ROWS..][..16].as_ptr().cast(),
                        ))
                    };
                    let scale = scale_pairs(_mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)));
                    for j in 4 * jh..4 * jh + 4 {
                        let y = line(p, qh_at(h, j) / 64);
                        let x = line(p, ql_at(h, part, j) / 64);
                        let lo = if nib == 0 {
                            _mm512_and_si512(x, m4)
                        } else {
                            _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4)
                        };
                        let hi = _mm512_and_si512(_mm512_srl_epi16(y, shift), m3);
                        let q = _mm512_or_si512(lo, _mm512_slli_epi16::<4>(hi));
                        emit(_mm512_sub_epi8(q, thirty_two), &scale, &zero, at(2 * j));
                    }
                }
            }
            _ => {
                use super::super::q4_k::{D, DMIN, GROUP_SB_BYTES, MN, SC};
                let p = &group[ks / 8 * GROUP_SB_BYTES..(ks / 8 + 1) * GROUP_SB_BYTES];
                let bytes16 = |at: usize| unsafe {
                    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                        p[at..at + 16].as_ptr().cast(),
                    )))
                };
                // Sub-block `sub` of the super-block is this step: nibbles of lines 8c.. (low
                // nibbles for even sub-blocks).
                let sub = ks % 8;
                let (c, half) = (sub / 2, sub % 2);
                let (d, dmin) = (halves(p, D), halves(p, DMIN));
                let scale = scale_pairs(_mm512_mul_ps(d, bytes16(SC + sub * ROWS)));
                let bias = bias_pairs(_mm512_mul_ps(dmin, bytes16(MN + sub * ROWS)));
                for j in 0..8 {
                    let x = line(p, c * 8 + j);
                    let q = if half == 0 {
                        _mm512_and_si512(x, m4)
                    } else {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4)
                    };
                    // Columns 4j.. of the step → lines 2j, 2j+1.
                    emit(q, &scale, &bias, at(2 * j));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Case;
    use super::*;

    /// The vector lines equal the dequantized-and-rounded rows bit for bit, for both partner
    /// formats, a short last token block included.
    #[test]
    fn scaled_lines_equal_the_rounded_dequantized_rows() {
        if !scaled_lines_fast() {
            eprintln!("skipped: no AVX-512 BF16");
            return;
        }
        let cols = 512;
        for n_tok in [1, 37] {
            let x: Vec<f32> = (0..n_tok * cols)
                .map(|i| ((i as f32) * 0.731).sin() * (1.0 + (i % 97) as f32))
                .collect();
            for ty in [GgmlType::Q4_0, GgmlType::Q4K] {
                let seq = |n: usize, f: &(dyn Fn(usize, usize) + Sync)| f(0, n);
                let a = Bf16Acts::quantized_like_in(true, ty, &x, cols, seq).unwrap();
                let b = Bf16Acts::quantized_like_in(false, ty, &x, cols, seq).unwrap();
                for t in 0..n_tok {
                    for k in 0..cols {
                        assert_eq!(a.at(t, k).to_bits(), b.at(t, k).to_bits(), "{ty:?} {t} {k}");
                    }
                }
            }
        }
    }

    /// Every ISA within a tight tolerance of the f64 sum of the bf16-rounded operands (the tile
    /// unit's summation order is its own), over several runs of groups and token blocks,
    /// including a short last group and a short last token block; and within 2⁻⁸ of the
    /// integer kernels' order.
    #[test]
    fn tile_products_equal_the_bf16_sums() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q4K,
            GgmlType::Q6K,
            GgmlType::Q8_0,
        ] {
            // One token block (steps made and used chunk by chunk), whole or partial tiles, and
            // several blocks over runs of groups; 672 columns = 21 steps for the 32-blocks.
            let odd = if matches!(ty, GgmlType::Q4K | GgmlType::Q6K) {
                768
            } else {
                672
            };
            // Rows of 80 steps (2560 columns) are cut into chunks of 64 and 16 steps when there
            // are several token blocks; 65 steps (2080, 32-blocks only) are not cut.
            let long = if odd == 768 { 2560 } else { 2080 };
            for (rows, cols, n_tok) in [
                (16, 256, 1),
                (64, odd, 32),
                (40, 1280, 20),
                (40, 512, 45),
                (200, 2048, 70),
                (48, 2560, 40),
                (24, long, 33),
            ] {
                let c = Case::new(ty, rows, cols, n_tok);
                let x: Vec<f32> = (0..n_tok * cols)
                    .map(|i| (i as f32 * 0.13).cos() * 3.0)
                    .collect();
                let acts = Bf16Acts::new(&x, cols).unwrap();
                let gb = group_bytes(ty, cols).unwrap();
                let mut want = vec![0f32; rows * n_tok];
                product_scalar(
                    ty,
                    &c.packed,
                    gb,
                    cols,
                    &acts,
                    &mut Out::token_major(&mut want, rows).unwrap(),
                );
                for isa in crate::available_isas() {
                    let mut got = vec![f32::NAN; rows * n_tok];
                    let mut o = Out::token_major(&mut got, rows).unwrap();
                    product(isa, ty, &c.packed, cols, &acts, &mut o).unwrap();
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        let scale: f32 = 1e-5 * (cols as f32).sqrt() * 8.0;
                        assert!(
                            (g - w).abs() <= scale * (1.0 + w.abs()),
                            "{ty} {isa} {i}: {g} vs {w}"
                        );
                    }
                }
                // Near the exact products of the original rows and activations.
                for r in 0..rows {
                    let mut w = vec![0f32; cols];
                    crate::dequantize_row(ty, c.row(r), &mut w).unwrap();
                    for t in 0..n_tok {
                        let exact: f64 = (0..cols)
                            .map(|k| w[k] as f64 * x[t * cols + k] as f64)
                            .sum();
                        let norm: f64 = (0..cols)
                            .map(|k| (w[k] as f64 * x[t * cols + k] as f64).abs())
                            .sum();
                        let g = want[t * rows + r] as f64;
                        assert!(
                            (g - exact).abs() <= norm / 256.0,
                            "{ty} r{r} t{t}: {g} vs {exact}"
                        );
                    }
                }
            }
        }
    }
}
