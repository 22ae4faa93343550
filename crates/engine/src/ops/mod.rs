//! The numeric building blocks, each mirroring one ggml CPU operation (named in its module).

/// Defines `$name`, which runs `$imp` compiled for AVX2 and FMA when the CPU has them.
/// Without the FMA feature, `f32::mul_add` (which the ggml-mirroring kernels need, fused) is a
/// library call; compiled with it, one instruction, and integer loops vectorize. `$imp` and what
/// it calls are `#[inline(always)]` so that they are compiled into the feature-enabled twin.
/// Both paths give identical bits.
macro_rules! fma_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? => $imp:path) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn fast($($a: $t),*) $(-> $r)? {
                    $imp($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: both features were detected on this CPU.
                    return unsafe { fast($($a),*) };
                }
            }
            $imp($($a),*)
        }
    };
}

/// `fma_dispatch!` with an AVX-512 (F/BW/VL) twin in front, for loops that vectorize 16 wide.
/// Rust never reassociates float operations, so every twin gives identical bits.
macro_rules! avx512_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? => $imp:path) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
                fn fast512($($a: $t),*) $(-> $r)? {
                    $imp($($a),*)
                }
                if hearth_quant::active_isa() >= hearth_quant::Isa::Avx512 {
                    // SAFETY: the active ISA level never exceeds what the CPU has.
                    return unsafe { fast512($($a),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                fn fast($($a: $t),*) $(-> $r)? {
                    $imp($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: both features were detected on this CPU.
                    return unsafe { fast($($a),*) };
                }
            }
            $imp($($a),*)
        }
    };
}

pub mod act;
pub mod attention;
pub mod f16;
pub mod gemm_order;
pub mod matmul;
pub mod norm;
pub mod rope;

/// `a += b`, element-wise (`ggml_add`).
pub fn add_assign(a: &mut [f32], b: &[f32]) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Adds `bias` to every row of a row-major matrix with rows of `bias.len()`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_assign(row, bias);
    }
}

/// `x *= s` (`ggml_scale`).
pub fn scale(x: &mut [f32], s: f32) {
    x.iter_mut().for_each(|v| *v *= s);
}

/// The rows `rows` of a row-major matrix with rows of `width` (`ggml_get_rows`).
pub fn select_rows(x: &[f32], width: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * width);
    for &r in rows {
        out.extend_from_slice(&x[r * width..(r + 1) * width]);
    }
    out
}
