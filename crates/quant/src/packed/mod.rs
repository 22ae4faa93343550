//! Weight matrices repacked at load into groups of 16 rows, for products with one float lane
//! per weight row (the idea of llama.cpp's repacked `block_q4_0x8`/`block_q4_Kx8`, in our own
//! arrangement): one 64-byte load holds 4 consecutive quants of 16 rows, a `vpdpbusd` against
//! 4 broadcast activation bytes adds 4 products to each row, and no horizontal sums are needed.
//! Each type keeps llama.cpp's float order for that type's repacked kernels bit for bit (the
//! integer sums are exact, the float steps per lane are the scalar ones), and a packed matrix
//! is about as large as the original, so the engine drops the mapped original once it is made.
//! Rows past a matrix's last in its last group are zero.

pub mod q4_0;
pub mod q4_k;

use crate::{GgmlType, QuantError};

/// Rows per group.
pub const ROWS: usize = 16;

/// Whether matrices of `ty` have a packed form.
pub fn supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4K)
}

/// Bytes of a packed `rows × cols` matrix of `ty`.
pub fn packed_bytes(ty: GgmlType, rows: usize, cols: usize) -> Result<usize, QuantError> {
    match ty {
        GgmlType::Q4_0 => q4_0::packed_bytes(rows, cols),
        GgmlType::Q4K => q4_k::packed_bytes(rows, cols),
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
        _ => Err(QuantError::Unsupported {
            ty,
            op: "repacking",
        }),
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

    /// Writes rows `r0..r0 + vals.len()` of token `t` (clipped to the rows of this output).
    #[inline]
    pub(crate) fn put(&mut self, t: usize, r0: usize, vals: &[f32]) {
        assert!(t < self.n_tok && r0 <= self.rows);
        let n = vals.len().min(self.rows - r0);
        // SAFETY: t < n_tok and r0 + n <= rows (checked above); the constructor's contract
        // makes those places ours.
        unsafe {
            let at = self.ptr.add(t * self.t_stride + r0 * self.r_stride);
            if self.r_stride == 1 {
                std::ptr::copy_nonoverlapping(vals.as_ptr(), at, n);
            } else {
                for (i, &v) in vals[..n].iter().enumerate() {
                    *at.add(i * self.r_stride) = v;
                }
            }
        }
    }
}

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
