//! Weight matrices repacked at load into groups of 16 rows, for products with one float lane
//! per weight row (the idea of llama.cpp's repacked `block_q4_0x8`/`block_q4_Kx8`, in our own
//! arrangement): one 64-byte load holds 4 consecutive quants of 16 rows, a `vpdpbusd` against
//! 4 broadcast activation bytes adds 4 products to each row, and no horizontal sums are needed.
//! Q4_0 and Q4_K keep llama.cpp's float order for its repacked kernels bit for bit (the integer
//! sums are exact, the float steps per lane are the scalar ones); Q5_0 and Q8_0, which llama.cpp
//! sums in `vec_dot`'s order, take the same block order (hearth's fast order, see [`q5_0`]), and
//! Q6_K takes llama.cpp's tiled order for every batch size (for decode that is hearth's fast
//! order too, see [`q6_k`]). A packed matrix is as
//! large as the original, so the engine drops the mapped original once it is made.
//! Rows past a matrix's last in its last group are zero.

pub mod amx_bf16;
pub mod q4_0;
pub mod q4_k;
pub mod q5_0;
pub mod q6_k;
pub mod q8_0;

use crate::{GgmlType, QuantError};

/// Rows per group.
pub const ROWS: usize = 16;

/// Whether matrices of `ty` have a packed form.
pub fn supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q4K | GgmlType::Q5_0 | GgmlType::Q6K | GgmlType::Q8_0
    )
}

/// Bytes of a packed `rows × cols` matrix of `ty`.
pub fn packed_bytes(ty: GgmlType, rows: usize, cols: usize) -> Result<usize, QuantError> {
    match ty {
        GgmlType::Q4_0 => q4_0::packed_bytes(rows, cols),
        GgmlType::Q4K => q4_k::packed_bytes(rows, cols),
        GgmlType::Q5_0 => q5_0::packed_bytes(rows, cols),
        GgmlType::Q6K => q6_k::packed_bytes(rows, cols),
        GgmlType::Q8_0 => q8_0::packed_bytes(rows, cols),
        _ => Err(QuantError::Unsupported {
            ty,
            op: "repacking",
        }),
    }
}

/// Packs up to `16 · groups` rows of `ty` (`src`, `cols` elements each) into `dst`.
pub fn pack(ty: GgmlType, src: &[u8], cols: usize, dst: &mut [u8]) -> Result<(), QuantError> {
    match ty {
        GgmlType::Q4_0 => q4_0::pack(src, cols, dst),
        GgmlType::Q4K => q4_k::pack(src, cols, dst),
        GgmlType::Q5_0 => q5_0::pack(src, cols, dst),
        GgmlType::Q6K => q6_k::pack(src, cols, dst),
        GgmlType::Q8_0 => q8_0::pack(src, cols, dst),
        _ => Err(QuantError::Unsupported {
            ty,
            op: "repacking",
        }),
    }
}

/// Activation rows quantized for a packed product (to Q8_0 for Q4_0/Q5_0 weights, Q8_K for
/// Q4_K), with the per-block sums its kernels need, made once per product and shared by every
/// thread's rows.
pub struct Acts {
    data: Vec<u8>,
    n_tok: usize,
    /// Q8_0: `Σ y` of block `b` of token `t` at `t · nb + b`. Q8_K: `bsum(2k) + bsum(2k + 1)` of
    /// super-block `s` of token `t` at `(t · nsb + s) · 8 + k`.
    sums: Vec<i32>,
}

impl Acts {
    /// `data`: whole rows of `cols` elements in `vec_dot_type(weight)` format.
    pub fn new(weight: GgmlType, cols: usize, data: Vec<u8>) -> Result<Acts, QuantError> {
        let format = crate::vec_dot_type(weight)?;
        let ab = crate::row_bytes(format, cols)?;
        let n_tok = data.len().checked_div(ab).unwrap_or(0);
        if ab == 0 || n_tok * ab != data.len() {
            return Err(QuantError::Length {
                ty: format,
                what: "the activation rows",
                unit: "bytes",
                expected: n_tok * ab,
                got: data.len(),
            });
        }
        let sums = match format {
            GgmlType::Q8_0 => data
                .chunks_exact(34)
                .map(|b| b[2..].iter().map(|&q| q as i8 as i32).sum())
                .collect(),
            GgmlType::Q8K => {
                let bsum = |b: &[u8], i: usize| {
                    i16::from_le_bytes([b[260 + 2 * i], b[261 + 2 * i]]) as i32
                };
                data.chunks_exact(292)
                    .flat_map(|b| (0..8).map(move |k| bsum(b, 2 * k) + bsum(b, 2 * k + 1)))
                    .collect()
            }
            ty => {
                return Err(QuantError::Unsupported {
                    ty,
                    op: "packed products",
                });
            }
        };
        Ok(Acts { data, n_tok, sums })
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn n_tok(&self) -> usize {
        self.n_tok
    }

    pub(crate) fn sums(&self) -> &[i32] {
        &self.sums
    }
}

/// Where a packed product writes the value of token `t` and row `r` (of the rows being
/// computed): `ptr[t * t_stride + r * r_stride]`. Token-major (`r_stride` 1) lets threads that
/// compute disjoint row ranges fill one `[n_tok][rows]` matrix directly; row-major
/// (`t_stride` 1) keeps a long batch's writes in a few streams.
pub struct Out {
    ptr: *mut f32,
    t_stride: usize,
    r_stride: usize,
    rows: usize,
    n_tok: usize,
}

impl Out {
    fn whole(out: &mut [f32], rows: usize, token_major: bool) -> Result<Out, QuantError> {
        let n_tok = out.len().checked_div(rows).unwrap_or(0);
        if rows == 0 || n_tok * rows != out.len() {
            return Err(QuantError::Length {
                ty: GgmlType::F32,
                what: "the output",
                unit: "floats",
                expected: n_tok * rows,
                got: out.len(),
            });
        }
        let (t_stride, r_stride) = if token_major { (rows, 1) } else { (1, n_tok) };
        Ok(Out {
            ptr: out.as_mut_ptr(),
            t_stride,
            r_stride,
            rows,
            n_tok,
        })
    }

    /// All of a token-major `[n_tok][rows]` matrix.
    pub fn token_major(out: &mut [f32], rows: usize) -> Result<Out, QuantError> {
        Out::whole(out, rows, true)
    }

    /// All of a row-major `[rows][n_tok]` matrix.
    pub fn row_major(out: &mut [f32], rows: usize) -> Result<Out, QuantError> {
        Out::whole(out, rows, false)
    }

    /// `rows` rows of `n_tok` tokens, (t, r) at `ptr + t * t_stride + r * r_stride`.
    ///
    /// # Safety
    /// Those places must be valid for writes for every `t < n_tok`, `r < rows`, and nothing
    /// else may read or write them while the `Out` is in use.
    pub unsafe fn from_raw(
        ptr: *mut f32,
        t_stride: usize,
        r_stride: usize,
        rows: usize,
        n_tok: usize,
    ) -> Out {
        Out {
            ptr,
            t_stride,
            r_stride,
            rows,
            n_tok,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn n_tok(&self) -> usize {
        self.n_tok
    }

    /// Where rows `r0..r0 + 16` of token `t` are, when they are consecutive (a token-major
    /// output) and all inside it.
    #[inline]
    pub(crate) fn lanes16(&mut self, t: usize, r0: usize) -> Option<*mut f32> {
        (self.r_stride == 1 && t < self.n_tok && r0 + ROWS <= self.rows)
            // SAFETY: (t, r0..r0 + 16) is inside the output (checked).
            .then(|| unsafe { self.ptr.add(t * self.t_stride + r0) })
    }

    /// Where the 16 × 16 block of tokens `t0..t0 + 16` and rows `r0..r0 + 16` is, with the
    /// distance between its tokens in bytes, when it is a token-major block inside the output.
    #[inline]
    pub(crate) fn tile16(&mut self, t0: usize, r0: usize) -> Option<(*mut f32, usize)> {
        (self.r_stride == 1 && t0 + 16 <= self.n_tok && r0 + ROWS <= self.rows)
            // SAFETY: the whole block is inside the output (checked).
            .then(|| unsafe { (self.ptr.add(t0 * self.t_stride + r0), self.t_stride * 4) })
    }

    /// Writes rows `r0..r0 + vals.len()` of token `t` (clipped to the rows of this output).
    #[inline]
    pub(crate) fn put(&mut self, t: usize, r0: usize, vals: &[f32]) {
        self.put_tokens(t, r0, &[&vals[..vals.len().min(ROWS)]]);
    }

    /// Writes rows `r0..r0 + 16` (clipped) of tokens `t0..t0 + lanes.len()`, `lanes[dt][i]`
    /// being row `r0 + i` of token `t0 + dt`: in a row-major output each row's tokens are
    /// consecutive, so this is one short run per row.
    #[inline]
    pub(crate) fn put_tokens<L: AsRef<[f32]>>(&mut self, t0: usize, r0: usize, lanes: &[L]) {
        assert!(t0 + lanes.len() <= self.n_tok && r0 <= self.rows);
        let width = lanes.iter().map(|l| l.as_ref().len()).min().unwrap_or(0);
        let n = width.min(self.rows - r0);
        // SAFETY: every (t, r) written has t < n_tok and r < rows (checked above); the
        // constructor's contract makes those places ours.
        unsafe {
            let base = self.ptr.add(t0 * self.t_stride + r0 * self.r_stride);
            if self.r_stride == 1 {
                for (dt, l) in lanes.iter().enumerate() {
                    let src = l.as_ref();
                    std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(dt * self.t_stride), n);
                }
            } else {
                for i in 0..n {
                    let row = base.add(i * self.r_stride);
                    for (dt, l) in lanes.iter().enumerate() {
                        *row.add(dt * self.t_stride) = l.as_ref()[i];
                    }
                }
            }
        }
    }
}

/// Row `r` of a packed `ty` matrix (`cols` elements) back in GGUF's layout, for the types whose
/// packed form serves embedding lookups too (Q8_0, Q6_K: tied heads).
pub fn unpack_row(
    ty: GgmlType,
    packed: &[u8],
    cols: usize,
    r: usize,
    out: &mut [u8],
) -> Result<(), QuantError> {
    match ty {
        GgmlType::Q8_0 => q8_0::unpack_row(packed, cols, r, out),
        GgmlType::Q6K => q6_k::unpack_row_at(packed, cols, r, out),
        _ => Err(QuantError::Unsupported {
            ty,
            op: "reading a packed row back",
        }),
    }
}

/// The scalar twin of a packed product: `unpack(r)` gives row `r` back in GGUF's layout, and
/// `dot(row, act, t)` its product with token `t`'s activation row (`ab` bytes of `acts`).
pub(crate) fn scalar_product(
    acts: &[u8],
    ab: usize,
    out: &mut Out,
    unpack: impl Fn(usize) -> Result<Vec<u8>, QuantError>,
    dot: impl Fn(&[u8], &[u8], usize) -> f32,
) -> Result<(), QuantError> {
    for r in 0..out.rows() {
        let row = unpack(r)?;
        for (t, a) in acts.chunks_exact(ab).enumerate() {
            out.put(t, r, &[dot(&row, a, t)]);
        }
    }
    Ok(())
}

/// Checks the sizes given to a type's `pack` (`rb` bytes per source row, `gb` per packed
/// group), clears `dst` and returns the source rows.
pub(crate) fn start_pack(
    ty: GgmlType,
    src: &[u8],
    rb: usize,
    gb: usize,
    dst: &mut [u8],
) -> Result<usize, QuantError> {
    let rows = src.len().checked_div(rb).unwrap_or(0);
    if rb == 0 || rows * rb != src.len() || dst.len() != rows.div_ceil(ROWS) * gb {
        return Err(QuantError::Length {
            ty,
            what: "the packed matrix",
            unit: "bytes",
            expected: rows.div_ceil(ROWS) * gb,
            got: dst.len(),
        });
    }
    dst.fill(0);
    Ok(rows)
}

/// Drives a 16-row kernel over every group of `packed` (`gb` bytes each) and every token of
/// `out`: `kernel(group, t0, wide, lanes)` computes tokens `t0..t0 + T` when `wide` (whole blocks
/// of `T` tokens share each load of the weights) and token `t0` alone otherwise, into
/// `lanes[token - t0][row]`.
pub(crate) fn drive<const T: usize>(
    packed: &[u8],
    gb: usize,
    out: &mut Out,
    mut kernel: impl FnMut(&[u8], usize, bool, &mut [[f32; ROWS]; T]),
) {
    let n_tok = out.n_tok();
    let mut lanes = [[0f32; ROWS]; T];
    // Blocked for L2: runs of groups whose weights fit in `RUN_BYTES`, and within a run,
    // passes of `TOKENS_PER_PASS` tokens over each group, so both the run's weights and a
    // pass's activations stay in L2 (a 512-token batch of 8192-wide activations is 4.4 MB,
    // which every group would otherwise stream again from L3).
    let per_run = (RUN_BYTES / gb.max(1)).max(1);
    for (run, run_groups) in packed.chunks(per_run * gb.max(1)).enumerate() {
        let mut c0 = 0;
        while c0 < n_tok {
            let c1 = (c0 + TOKENS_PER_PASS).min(n_tok);
            for (i, group) in run_groups.chunks_exact(gb).enumerate() {
                let g = run * per_run + i;
                let mut t0 = c0;
                while t0 < c1 {
                    let wide = c1 - t0 >= T;
                    let nt = if wide { T } else { 1 };
                    kernel(group, t0, wide, &mut lanes);
                    out.put_tokens(t0, g * ROWS, &lanes[..nt]);
                    t0 += nt;
                }
            }
            c0 = c1;
        }
    }
}

/// Weight bytes of one run of groups in [`drive`].
const RUN_BYTES: usize = 256 << 10;

/// Tokens per pass of [`drive`] over the groups: a multiple of every kernel's `T` and of 4
/// (llama.cpp's GEMM order covers whole blocks of 4 tokens), so passes split no block.
const TOKENS_PER_PASS: usize = 64;

/// Checks the sizes of a packed product: `packed` must hold the groups of `out.rows()` rows
/// (`group_bytes` each) and `acts_len` must be `out.n_tok()` activation rows of `act_bytes`.
/// Returns the row count.
pub(crate) fn check(
    ty: GgmlType,
    packed: usize,
    group_bytes: usize,
    acts_len: usize,
    act_bytes: usize,
    out: &Out,
) -> Result<usize, QuantError> {
    let (rows, n_tok) = (out.rows, out.n_tok);
    let want = rows.div_ceil(ROWS) * group_bytes;
    if group_bytes == 0 || packed != want || acts_len != act_bytes * n_tok {
        return Err(QuantError::Length {
            ty,
            what: "the packed rows, activations or output",
            unit: "bytes",
            expected: want,
            got: packed,
        });
    }
    Ok(rows)
}

/// Bytes ahead of a streaming kernel's position that [`prefetch_ahead`] fetches into L2.
/// Measured on a 2048-column Q4_0 GEMV over 600 MB (single thread, Xeon with a 300 MiB L3):
/// none 52 ms, 37 KiB 45 ms, 74 KiB 40 ms.
#[cfg(target_arch = "x86_64")]
const FAR_PREFETCH: usize = 72 << 10;

/// Software prefetch for the decode-step kernels, which read every weight once: the `bytes`
/// of the block `near` bytes ahead into L1, and of the block [`FAR_PREFETCH`] ahead into L2.
/// One core's hardware prefetchers alone keep too few lines in flight to reach the memory's
/// bandwidth. Prefetches past the end of the data are harmless (they never fault).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead(p: *const u8, bytes: usize, near: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T1, _mm_prefetch};
    for line in (0..bytes).step_by(64) {
        // SAFETY: prefetching is a hint; any address is allowed.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(near + line).cast());
            _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(FAR_PREFETCH + line).cast());
        }
    }
}

/// Bytes ahead that [`prefetch_tiles`] fetches. The one-block tile products spend longer on
/// each byte than the decode kernels, so they need less lead. Measured on a 640×2048 Q6_K
/// product of 32 tokens from memory (single thread, alternating runs, ms): 72 KiB 0.44, 32 KiB
/// 0.42, 128 KiB 0.45.
#[cfg(target_arch = "x86_64")]
const TILE_PREFETCH: usize = 32 << 10;

/// The `bytes` [`TILE_PREFETCH`] ahead of `p` into L2, for the one-block tile products, which
/// stream packed rows once. Callers ask a step's bytes at a time: a super-block's worth at once
/// (8 steps of Q4_K/Q6_K, 50+ lines) overruns the fill buffers and stalls the loads behind it
/// (the same 640×2048 Q6_K product: 0.53 → 0.44 ms).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_tiles(p: *const u8, bytes: usize) {
    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
    for line in (0..bytes).step_by(64) {
        // SAFETY: prefetching is a hint; any address is allowed.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(TILE_PREFETCH + line).cast()) };
    }
}

/// The kernel shared by the packed Q4_0 and Q5_0 layouts (32-element blocks of nibbles, Q5_0
/// adding a fifth bit from per-block masks; see [`q4_0`], [`q5_0`]).
#[cfg(target_arch = "x86_64")]
pub(crate) mod nibbles {
    use super::ROWS;
    use crate::common::f16_to_f32;
    use std::arch::x86_64::*;

    /// Tokens handled together.
    pub(crate) const T: usize = 8;
    const Q8_0_BYTES: usize = 34;

    /// The 16 rows of one packed group (`BLOCK_BYTES` per block: quants at 0, the fifth-bit
    /// masks at `MASKS_AT` when `FIFTH`, the row scales at `D_AT`) · `NT` (≤ [`T`]) Q8_0
    /// activations `a` (`sums[t·nb + b] = Σ y` of their blocks), lane = row, one output per
    /// token. Per block: `isum = Σ q·y − offset·Σ y` exactly (offset 8, or 16 with the fifth
    /// bit), then `acc = fma(f32(isum), d_w · d_a, acc)`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) fn dot16<
        const NT: usize,
        const FIFTH: bool,
        const BLOCK_BYTES: usize,
        const MASKS_AT: usize,
        const D_AT: usize,
    >(
        group: &[u8],
        nb: usize,
        a: &[u8],
        sums: &[i32],
        prefetch: bool,
        out: &mut [[f32; ROWS]; T],
    ) {
        let (nt, block_bytes, masks_at, d_at) = (NT, BLOCK_BYTES, MASKS_AT, D_AT);
        assert!((1..=T).contains(&nt));
        assert!(d_at + 2 * ROWS <= block_bytes && (!FIFTH || masks_at + 64 <= d_at));
        assert!(group.len() >= nb * block_bytes && a.len() >= nt * nb * Q8_0_BYTES);
        assert!(sums.len() >= nt * nb);
        let offset = if FIFTH { -16 } else { -8 };
        let m4 = _mm512_set1_epi8(0x0f);
        let sixteen = _mm512_set1_epi8(16);
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..nb {
            // SAFETY (raw loads below): `p` is one whole packed block and `y` one whole Q8_0
            // block of a token t < nt (asserted above); offsets stay inside them.
            let p = unsafe { group.as_ptr().add(b * block_bytes) };
            // A decode step streams through every weight once (a batch finds them in cache).
            if prefetch {
                crate::packed::prefetch_ahead(p, block_bytes, 16 * block_bytes);
            }
            let mask =
                |i: usize| unsafe { (p.add(masks_at + 8 * i) as *const u64).read_unaligned() };
            let mut lo = [_mm512_setzero_si512(); 4];
            let mut hi = [_mm512_setzero_si512(); 4];
            for j in 0..4 {
                let x = unsafe { _mm512_loadu_si512(p.add(j * 64).cast()) };
                lo[j] = _mm512_and_si512(x, m4);
                hi[j] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4);
                if FIFTH {
                    lo[j] = _mm512_mask_add_epi8(lo[j], mask(2 * j), lo[j], sixteen);
                    hi[j] = _mm512_mask_add_epi8(hi[j], mask(2 * j + 1), hi[j], sixteen);
                }
            }
            let dw = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(d_at).cast())) };
            for (t, acc) in acc.iter_mut().enumerate().take(nt) {
                let y = unsafe { a.as_ptr().add((t * nb + b) * Q8_0_BYTES) };
                let ys = |k: usize| unsafe {
                    _mm512_set1_epi32((y.add(2 + k) as *const i32).read_unaligned())
                };
                let mut isum = _mm512_set1_epi32(offset * sums[t * nb + b]);
                for j in 0..4 {
                    isum = _mm512_dpbusd_epi32(isum, lo[j], ys(4 * j));
                    isum = _mm512_dpbusd_epi32(isum, hi[j], ys(16 + 4 * j));
                }
                let da = f16_to_f32(u16::from_le_bytes(unsafe { *(y as *const [u8; 2]) }));
                let d = _mm512_mul_ps(dw, _mm512_set1_ps(da));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, *acc);
            }
        }
        for (o, acc) in out.iter_mut().zip(acc).take(nt) {
            // SAFETY: `o` holds 16 floats.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), acc) };
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::isa::Isa;

    /// A test case: a `rows × cols` matrix of `ty` (smooth pseudo-random values), `n_tok`
    /// activation rows quantized for it, and the packed matrix.
    pub struct Case {
        pub rows: usize,
        pub n_tok: usize,
        pub wq: Vec<u8>,
        pub acts: Vec<u8>,
        pub packed: Vec<u8>,
    }

    impl Case {
        pub fn new(ty: GgmlType, rows: usize, cols: usize, n_tok: usize) -> Case {
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| (i as f32 * 0.37).sin() * 2.0)
                .collect();
            let x: Vec<f32> = (0..n_tok * cols)
                .map(|i| (i as f32 * 0.13).cos() * 3.0)
                .collect();
            let wq = crate::quantize_matrix(ty, &w, rows, cols).unwrap();
            let ab = crate::row_bytes(crate::vec_dot_type(ty).unwrap(), cols).unwrap();
            let mut acts = vec![0u8; n_tok * ab];
            for (row, dst) in x.chunks_exact(cols).zip(acts.chunks_exact_mut(ab)) {
                crate::quantize_act(ty, row, dst).unwrap();
            }
            let mut packed = vec![0u8; packed_bytes(ty, rows, cols).unwrap()];
            pack(ty, &wq, cols, &mut packed).unwrap();
            Case {
                rows,
                n_tok,
                wq,
                acts,
                packed,
            }
        }

        pub fn row(&self, r: usize) -> &[u8] {
            let rb = self.wq.len() / self.rows;
            &self.wq[r * rb..(r + 1) * rb]
        }

        pub fn act(&self, t: usize) -> &[u8] {
            let ab = self.acts.len() / self.n_tok;
            &self.acts[t * ab..(t + 1) * ab]
        }

        /// Runs `product` at every ISA into a token-major output and checks every (row, token)
        /// bit for bit against `want(row bytes, activation bytes, token)`.
        pub fn check(
            &self,
            product: impl Fn(Isa, &mut Out),
            want: impl Fn(&[u8], &[u8], usize) -> f32,
        ) {
            for isa in crate::available_isas() {
                let mut got = vec![0f32; self.rows * self.n_tok];
                product(isa, &mut Out::token_major(&mut got, self.rows).unwrap());
                for r in 0..self.rows {
                    for t in 0..self.n_tok {
                        let w = want(self.row(r), self.act(t), t);
                        let g = got[t * self.rows + r];
                        assert_eq!(g.to_bits(), w.to_bits(), "{isa} r{r} t{t}: {g} vs {w}");
                    }
                }
            }
        }
    }
}
