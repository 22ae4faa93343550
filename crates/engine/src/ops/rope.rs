//! Rotary position embeddings, as `ggml_compute_forward_rope_flt`: a cos/sin cache per position
//! built by repeated multiplication of theta in f32 (`ggml_rope_cache_init`), optional frequency
//! factors (Llama 3.1+ `rope_freqs.weight`), linear and YaRN scaling, and the two pairings:
//! adjacent pairs (`NORMAL`, Llama) and halves (`NEOX`, Qwen, Gemma).

/// Which elements rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// `(x[2i], x[2i+1])`.
    Normal,
    /// `(x[i], x[i + n_dims/2])`.
    Neox,
}

/// Everything that fixes a rotation, for one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    pub mode: RopeMode,
    /// Rotated dimensions (the first `n_dims` of each head).
    pub n_dims: usize,
    pub freq_base: f32,
    /// `1 / scaling factor` (1 without scaling).
    pub freq_scale: f32,
    /// YaRN's extrapolation mix (0 unless the model uses YaRN).
    pub ext_factor: f32,
    /// Magnitude scale of cos and sin (`attn_factor`).
    pub attn_factor: f32,
    /// YaRN correction range (`ggml_rope_yarn_corr_dims`).
    pub corr_dims: [f32; 2],
    /// Per-frequency divisors, `n_dims / 2` of them.
    pub freq_factors: Option<Vec<f32>>,
}

impl Rope {
    /// Plain rotation: no scaling, no factors.
    pub fn new(mode: RopeMode, n_dims: usize, freq_base: f32) -> Rope {
        Rope {
            mode,
            n_dims,
            freq_base,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            corr_dims: [0.0, 0.0],
            freq_factors: None,
        }
    }

    /// Sets YaRN's correction dimensions for `n_ctx_orig` with llama.cpp's default betas.
    pub fn with_yarn(mut self, n_ctx_orig: u32, beta_fast: f32, beta_slow: f32) -> Rope {
        self.corr_dims = yarn_corr_dims(
            self.n_dims,
            n_ctx_orig,
            self.freq_base,
            beta_fast,
            beta_slow,
        );
        self
    }

    /// Interleaved `(cos, sin)` for position `pos`: `n_dims` floats.
    pub fn cache(&self, pos: i32, cache: &mut [f32]) {
        let theta_scale = self.freq_base.powf(-2.0 / self.n_dims as f32);
        let mut theta = pos as f32;
        for i0 in (0..self.n_dims).step_by(2) {
            let ff = self.freq_factors.as_ref().map_or(1.0, |f| f[i0 / 2]);
            let (c, s) = self.yarn(theta / ff, i0);
            cache[i0] = c;
            cache[i0 + 1] = s;
            theta *= theta_scale;
        }
    }

    /// `rope_yarn`.
    fn yarn(&self, theta_extrap: f32, i0: usize) -> (f32, f32) {
        let theta_interp = self.freq_scale * theta_extrap;
        let mut theta = theta_interp;
        let mut mscale = self.attn_factor;
        if self.ext_factor != 0.0 {
            let ramp_mix = yarn_ramp(self.corr_dims[0], self.corr_dims[1], i0) * self.ext_factor;
            theta = theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix;
            mscale *= 1.0 + 0.1 * (1.0 / self.freq_scale).ln();
        }
        (theta.cos() * mscale, theta.sin() * mscale)
    }

    /// Rotates one head in place with a cache from [`Rope::cache`].
    #[inline(always)]
    pub fn apply(&self, cache: &[f32], x: &mut [f32]) {
        let half = self.n_dims / 2;
        for i0 in (0..self.n_dims).step_by(2) {
            let (a, b) = match self.mode {
                RopeMode::Normal => (i0, i0 + 1),
                RopeMode::Neox => (i0 / 2, i0 / 2 + half),
            };
            let (cos, sin) = (cache[i0], cache[i0 + 1]);
            let (x0, x1) = (x[a], x[b]);
            // GCC contracts the first product of each line into an FMA.
            x[a] = x0.mul_add(cos, -(x1 * sin));
            x[b] = x0.mul_add(sin, x1 * cos);
        }
    }
}

fma_dispatch! {
    /// Rotates every head of `x` (heads of `head_dim`) with a cache from [`Rope::cache`].
    pub fn rotate(rope: &Rope, cache: &[f32], x: &mut [f32], head_dim: usize) => rotate_impl
}

#[inline(always)]
fn rotate_impl(rope: &Rope, cache: &[f32], x: &mut [f32], head_dim: usize) {
    for h in x.chunks_exact_mut(head_dim) {
        rope.apply(cache, h);
    }
}

fn yarn_ramp(low: f32, high: f32, i0: usize) -> f32 {
    let y = ((i0 / 2) as f32 - low) / (high - low).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

fn yarn_corr_dim(n_dims: usize, n_ctx_orig: u32, n_rot: f32, base: f32) -> f32 {
    n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
        / (2.0 * base.ln())
}

/// `ggml_rope_yarn_corr_dims`.
pub fn yarn_corr_dims(
    n_dims: usize,
    n_ctx_orig: u32,
    freq_base: f32,
    beta_fast: f32,
    beta_slow: f32,
) -> [f32; 2] {
    let start = yarn_corr_dim(n_dims, n_ctx_orig, beta_fast, freq_base).floor();
    let end = yarn_corr_dim(n_dims, n_ctx_orig, beta_slow, freq_base).ceil();
    [start.max(0.0), end.min(n_dims as f32 - 1.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook rotation in f64.
    fn reference(mode: RopeMode, base: f64, pos: f64, x: &[f32]) -> Vec<f64> {
        let d = x.len();
        let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for i in 0..d / 2 {
            let theta = pos * base.powf(-2.0 * i as f64 / d as f64);
            let (a, b) = match mode {
                RopeMode::Normal => (2 * i, 2 * i + 1),
                RopeMode::Neox => (i, i + d / 2),
            };
            let (x0, x1) = (x[a] as f64, x[b] as f64);
            y[a] = x0 * theta.cos() - x1 * theta.sin();
            y[b] = x0 * theta.sin() + x1 * theta.cos();
        }
        y
    }

    #[test]
    fn matches_the_textbook_rotation() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0).collect();
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            for pos in [0, 1, 17, 300] {
                let rope = Rope::new(mode, 64, 10000.0);
                let mut cache = vec![0.0; 64];
                rope.cache(pos, &mut cache);
                let mut y = x.clone();
                rope.apply(&cache, &mut y);
                let want = reference(mode, 10000.0, pos as f64, &x);
                for i in 0..64 {
                    // theta is built by repeated f32 multiplication, as in ggml: its relative
                    // error grows with the index, so the tolerance scales with the position.
                    let tol = 1e-5 * (1.0 + pos as f64);
                    assert!((y[i] as f64 - want[i]).abs() < tol, "{mode:?} {pos} {i}");
                }
            }
        }
    }

    #[test]
    fn position_zero_is_identity_and_norms_are_kept() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
        let rope = Rope::new(RopeMode::Neox, 32, 1e6);
        let mut cache = vec![0.0; 32];
        rope.cache(0, &mut cache);
        let mut y = x.clone();
        rope.apply(&cache, &mut y);
        assert_eq!(x, y);
        rope.cache(1234, &mut cache);
        rope.apply(&cache, &mut y);
        let n0: f32 = x.iter().map(|v| v * v).sum();
        let n1: f32 = y.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3 * n0);
    }

    #[test]
    fn freq_factors_divide_theta() {
        let mut rope = Rope::new(RopeMode::Normal, 4, 10000.0);
        let mut plain = vec![0.0; 4];
        rope.cache(10, &mut plain);
        rope.freq_factors = Some(vec![2.0, 1.0]);
        let mut scaled = vec![0.0; 4];
        rope.cache(10, &mut scaled);
        assert_eq!(scaled[0], (10f32 / 2.0).cos());
        assert_eq!(scaled[2..], plain[2..]);
    }
}
