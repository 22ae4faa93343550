//! Loading: hyperparameters from GGUF metadata and weights borrowed from the memory map.

use std::path::{Path, PathBuf};

use hearth_gguf::{GgmlType, GgufFile, keys::arch as key};
use hearth_quant::{dequantize_row, vec_dot_type};

use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::models::{self, Arch};
use crate::ops::matmul::MatRef;
use crate::ops::rope::{Rope, RopeMode};
use crate::session::{Session, SessionOptions};
use crate::threads::Threads;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Threads for the matrix products and attention; 0 = the available cores.
    pub threads: usize,
    /// Repack the weights whose kernels want another layout (Q4_K: 16 rows interleaved) at
    /// load, dropping the mapped originals from memory. On by default; `HEARTH_REPACK=0` turns
    /// the default off (to measure what it brings).
    pub repack: bool,
    /// Only llama.cpp's float orders (bit-exact reproduction). Off by default: then Q5_0
    /// matrices are repacked too and summed per block, an order llama.cpp uses for its repacked
    /// types but not for Q5_0 (`HEARTH_EXACT=1` turns the default on).
    pub exact: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: 0,
            repack: std::env::var("HEARTH_REPACK").map_or(true, |v| v != "0"),
            exact: std::env::var("HEARTH_EXACT").is_ok_and(|v| v == "1"),
        }
    }
}

/// Hyperparameters, as llama.cpp derives them from the metadata.
#[derive(Clone, Debug)]
pub struct Hparams {
    pub arch: Arch,
    pub n_vocab: usize,
    /// `{arch}.context_length`: the longest context the model was trained for.
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// `attention.key_length` (= value length for these architectures).
    pub head_dim: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    /// Rotation of each layer (Gemma 3's sliding-window layers have their own base).
    pub rope: Vec<Rope>,
    /// Sliding window of each layer, if it has one.
    pub window: Vec<Option<usize>>,
    /// Multiplies `K·Q` in the softmax.
    pub kq_scale: f32,
    /// Multiplies Q after RoPE (Gemma folds its attention scale in here).
    pub q_scale: Option<f32>,
    /// Multiplies the token embeddings (Gemma: √n_embd).
    pub embd_scale: Option<f32>,
    /// `logits = c·tanh(logits/c)` when set.
    pub final_softcap: Option<f32>,
    /// Mixture of experts (`expert_count`, 0 for a dense model): experts per layer, experts each
    /// token is routed to, and the hidden size of one expert's FFN.
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub n_ff_exp: usize,
}

/// A weight matrix in the model file: `rows` rows of `cols` elements.
#[derive(Clone, Debug)]
pub(crate) struct Matrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    start: usize,
    len: usize,
    /// The rows repacked for their kernels, when the loader made a copy (then the mapped
    /// original is not read again).
    packed: Option<Arc<memmap2::Mmap>>,
    /// Repacked without `LoadOptions::exact`: batches may take hearth's fast orders.
    fast: bool,
    /// An expert's matrix, repacked the first time a token is routed to it
    /// ([`prepare`](Self::prepare)) rather than at load, so that experts never used stay out
    /// of memory.
    on_use: Option<Arc<OnUse>>,
}

/// [`Matrix::on_use`]: the repacked copy once made (`None` inside when the type is not
/// repacked or the copy failed: the matrix then stays in the file's order).
#[derive(Debug)]
struct OnUse {
    copy: std::sync::OnceLock<Option<Arc<memmap2::Mmap>>>,
    exact: bool,
}

impl Matrix {
    /// `rows × cols` of type `ty` at `start..start + len` of a file's bytes.
    pub(crate) fn in_file(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        start: usize,
        len: usize,
    ) -> Matrix {
        Matrix {
            ty,
            rows,
            cols,
            start,
            len,
            packed: None,
            fast: false,
            on_use: None,
        }
    }

    /// Leaves the repacking to the first [`prepare`](Self::prepare) (expert matrices).
    fn pack_on_use(&mut self, exact: bool) {
        self.on_use = Some(Arc::new(OnUse {
            copy: std::sync::OnceLock::new(),
            exact,
        }));
    }

    /// Makes the repacked copy of a matrix that waits for its first use, if it has not been
    /// made (a failure leaves the matrix in the file's order, which the products also take).
    pub(crate) fn prepare(&self, file: &GgufFile, threads: &Threads) {
        if let Some(u) = &self.on_use {
            u.copy.get_or_init(|| {
                self.packed_copy(file, threads, u.exact)
                    .ok()
                    .flatten()
                    .map(Arc::new)
            });
        }
    }

    pub fn view<'a>(&'a self, file: &'a [u8]) -> MatRef<'a> {
        let made = self
            .on_use
            .as_ref()
            .and_then(|u| Some((u.copy.get()?.as_deref()?, !u.exact)));
        let (packed, fast) = match (self.packed.as_deref(), made) {
            (Some(p), _) => (Some(&p[..]), self.fast),
            (None, Some((p, fast))) => (Some(&p[..]), fast),
            (None, None) => (None, false),
        };
        MatRef {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: &file[self.start..self.start + self.len],
            packed,
            fast,
        }
    }

    /// Repacks a matrix into 16-row groups, in parallel, then releases the mapped original:
    /// Q4_0 and Q4_K where llama.cpp repacks them (a row count that is a multiple of 8; the
    /// same float order), and unless `exact`, Q5_0, Q8_0 (hearth's block order) and Q6_K (the
    /// tiled order for every batch).
    fn repack(&mut self, file: &GgufFile, threads: &Threads, exact: bool) -> Result<()> {
        if self.packed.is_some() {
            return Ok(());
        }
        if let Some(copy) = self.packed_copy(file, threads, exact)? {
            self.packed = Some(Arc::new(copy));
            self.fast = !exact;
        }
        Ok(())
    }

    /// The repacked copy ([`repack`](Self::repack)), or `None` for a type or shape that stays
    /// in the file's order. Releases the mapped original as it goes.
    fn packed_copy(
        &self,
        file: &GgufFile,
        threads: &Threads,
        exact: bool,
    ) -> Result<Option<memmap2::Mmap>> {
        use hearth_quant::packed::{self, ROWS};
        let wanted = match self.ty {
            GgmlType::Q4_0 | GgmlType::Q4K => true,
            GgmlType::Q5_0 | GgmlType::Q6K | GgmlType::Q8_0 => !exact,
            _ => false,
        };
        if !wanted || self.rows == 0 || !self.rows.is_multiple_of(8) {
            return Ok(None);
        }
        let src = &file.bytes()[self.start..self.start + self.len];
        let rb = self.len / self.rows.max(1);
        let gb = packed::packed_bytes(self.ty, ROWS, self.cols)?;
        let mut dst = packed_buffer(packed::packed_bytes(self.ty, self.rows, self.cols)?)
            .map_err(|e| EngineError::Io(format!("could not allocate repacked weights: {e}")))?;
        let err = std::sync::Mutex::new(None);
        threads.chunks(&mut dst, gb, 4, |g0, piece| {
            let r0 = g0 * ROWS;
            let r1 = (r0 + piece.len() / gb * ROWS).min(self.rows);
            if let Err(e) = packed::pack(self.ty, &src[r0 * rb..r1 * rb], self.cols, piece) {
                *err.lock().unwrap() = Some(e);
            }
            // Drop each stretch of the original as soon as it is copied, so that the copy and
            // the original are never both resident (peak memory).
            file.release(self.start + r0 * rb, (r1 - r0) * rb);
        });
        if let Some(e) = err.into_inner().unwrap() {
            return Err(e.into());
        }
        file.release(self.start, self.len);
        let dst = dst
            .make_read_only()
            .map_err(|e| EngineError::Io(format!("could not seal repacked weights: {e}")))?;
        Ok(Some(dst))
    }
}

/// Anonymous memory for repacked weights, asked to be backed by 2 MiB pages: a decode step
/// streams through every weight, and huge pages spare the TLB a miss per 4 KiB (measured: the
/// Q4_0 1B decode goes from ~63 to ~78 tokens/s here).
fn packed_buffer(len: usize) -> std::io::Result<memmap2::MmapMut> {
    let m = memmap2::MmapMut::map_anon(len.max(1))?;
    #[cfg(target_os = "linux")]
    let _ = m.advise(memmap2::Advice::HugePage);
    Ok(m)
}

/// The weights of one block. Optional parts are the flags that tell the architectures apart.
pub(crate) struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub bo: Option<Vec<f32>>,
    /// Per-head RMS norm of Q and K (Qwen 3, Gemma 3).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// Norms of the attention and FFN outputs before the residual adds (Gemma).
    pub attn_post_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
    pub ffn_post_norm: Option<Vec<f32>>,
}

/// A block's feed-forward network.
pub(crate) enum Ffn {
    /// One gated MLP for every token.
    Dense {
        gate: Matrix,
        up: Matrix,
        down: Matrix,
        gate_b: Option<Vec<f32>>,
        up_b: Option<Vec<f32>>,
        down_b: Option<Vec<f32>>,
    },
    /// Experts, each a gated MLP, and a router that picks some of them per token.
    Moe(Moe),
}

/// A mixture of experts: `router` (`ffn_gate_inp`, one row per expert) scores the experts of a
/// token, the `n_used` best run on it, and their outputs are summed with the softmax weights
/// renormalized over the chosen ones. Expert `e`'s matrices are slices of the 3-D
/// `ffn_{gate,up,down}_exps` tensors, left in the file's map (read, so made resident, only
/// when a token is routed to them).
pub(crate) struct Moe {
    pub router: Matrix,
    pub gate: Vec<Matrix>,
    pub up: Vec<Matrix>,
    pub down: Vec<Matrix>,
    pub n_used: usize,
}

impl Layer {
    /// The matrix a target names, and its bias (`None` for the FFN targets of a mixture of
    /// experts, which has no single such matrix).
    pub fn matrix(&self, t: crate::adapter::Target) -> Option<(&Matrix, Option<&Vec<f32>>)> {
        use crate::adapter::Target;
        Some(match (t, &self.ffn) {
            (Target::AttnQ, _) => (&self.wq, self.bq.as_ref()),
            (Target::AttnK, _) => (&self.wk, self.bk.as_ref()),
            (Target::AttnV, _) => (&self.wv, self.bv.as_ref()),
            (Target::AttnOutput, _) => (&self.wo, self.bo.as_ref()),
            (Target::FfnGate, Ffn::Dense { gate, gate_b, .. }) => (gate, gate_b.as_ref()),
            (Target::FfnUp, Ffn::Dense { up, up_b, .. }) => (up, up_b.as_ref()),
            (Target::FfnDown, Ffn::Dense { down, down_b, .. }) => (down, down_b.as_ref()),
            (_, Ffn::Moe(_)) => return None,
        })
    }
}

/// Which optional tensors an architecture requires.
pub(crate) struct LayerSpec {
    pub qk_norm: bool,
    pub post_norms: bool,
}

/// A loaded model: metadata, hyperparameters and weights in the file's memory map.
pub struct Model {
    pub(crate) hp: Hparams,
    pub(crate) tok_embd: Matrix,
    pub(crate) output_norm: Vec<f32>,
    pub(crate) output: Matrix,
    pub(crate) output_b: Option<Vec<f32>>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) threads: Threads,
    file: GgufFile,
    path: PathBuf,
    id: u64,
    /// SHA-256 of the file, computed the first time an adapter asks for it.
    sha256: std::sync::OnceLock<String>,
}

static NEXT_MODEL_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Model {
    /// Opens `path`, reads the hyperparameters of its architecture and maps its weights.
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        let path = path.as_ref();
        let file = GgufFile::open(path)?;
        let ld = Loader { file: &file, path };
        let arch_name = file.metadata().architecture().map_err(|e| ld.err(e))?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| {
            ld.err(format!(
                "unsupported architecture {arch_name:?}; hearth runs {}",
                Arch::ALL.map(|a| a.name()).join(", ")
            ))
        })?;
        let hp = models::hparams(arch, &ld)?;
        let spec = models::layer_spec(arch);
        let mut layers = (0..hp.n_layer)
            .map(|il| ld.layer(il, &hp, &spec))
            .collect::<Result<Vec<_>>>()?;
        let mut tok_embd = ld.matrix("token_embd.weight", hp.n_embd, hp.n_vocab)?;
        let (output, tied) = match ld.opt_matrix("output.weight", hp.n_embd, hp.n_vocab)? {
            Some(m) => (m, false),
            None => (tok_embd.clone(), true),
        };
        let output_norm = ld.vector("output_norm.weight", hp.n_embd)?;
        let output_b = ld.opt_vector("output.bias", hp.n_vocab)?;
        let threads = Threads::new(opts.threads)?;
        let mut output = output;
        if opts.repack {
            // Experts are repacked when first used: all at load would make every one resident.
            for l in &mut layers {
                let mut ms = vec![&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo];
                match &mut l.ffn {
                    Ffn::Dense { gate, up, down, .. } => ms.extend([gate, up, down]),
                    Ffn::Moe(moe) => {
                        for m in moe.gate.iter_mut().chain(&mut moe.up).chain(&mut moe.down) {
                            m.pack_on_use(opts.exact);
                        }
                    }
                }
                for m in ms {
                    m.repack(&file, &threads, opts.exact)?;
                }
            }
            // A tied head shares its rows with the embedding lookups, which can read a packed
            // Q8_0 or Q6_K row back; for other types the map stays theirs.
            if !tied || matches!(output.ty, GgmlType::Q8_0 | GgmlType::Q6K) {
                output.repack(&file, &threads, opts.exact)?;
            }
            if tied {
                tok_embd.packed = output.packed.clone();
            }
        }
        let path = path.to_owned();
        Ok(Model {
            hp,
            tok_embd,
            output_norm,
            output,
            output_b,
            layers,
            threads,
            file,
            path,
            id: NEXT_MODEL_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            sha256: std::sync::OnceLock::new(),
        })
    }

    /// A number no other model loaded by this process has (what an adapter was checked against).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub fn hparams(&self) -> &Hparams {
        &self.hp
    }

    pub fn architecture(&self) -> Arch {
        self.hp.arch
    }

    /// The matrix at an adapter's site, if the model has it.
    pub(crate) fn site(&self, site: crate::adapter::Site) -> Option<&Matrix> {
        use crate::adapter::Site;
        match site {
            Site::Output => Some(&self.output),
            Site::Layer(il, t) => Some(self.layers.get(il)?.matrix(t)?.0),
        }
    }

    pub fn n_vocab(&self) -> usize {
        self.hp.n_vocab
    }

    pub fn n_ctx_train(&self) -> usize {
        self.hp.n_ctx_train
    }

    /// The GGUF file (metadata, tokenizer keys).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hex SHA-256 of the model's file: the identity adapters are bound to (read once, on first
    /// use: about 0.2 s per 250 MB).
    pub fn content_sha256(&self) -> Result<&str> {
        if let Some(h) = self.sha256.get() {
            return Ok(h);
        }
        let h = crate::adapter::binding::sha256_file(&self.path).map_err(|e| {
            EngineError::Io(format!("reading {} to hash it: {e}", self.path.display()))
        })?;
        Ok(self.sha256.get_or_init(|| h))
    }

    /// Threads used for a step.
    pub fn n_threads(&self) -> usize {
        self.threads.n()
    }

    /// A new session with its own KV cache.
    pub fn session(&self, opts: SessionOptions) -> Result<Session<'_>> {
        Session::new(self, opts)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.file.bytes()
    }
}

/// Reads metadata and tensors of one file, with errors that name it.
pub(crate) struct Loader<'a> {
    pub file: &'a GgufFile,
    pub path: &'a Path,
}

impl Loader<'_> {
    pub fn err(&self, problem: impl std::fmt::Display) -> EngineError {
        EngineError::model(self.path, problem.to_string())
    }

    pub fn u(&self, suffix: &str) -> Result<usize> {
        self.opt_u(suffix)?
            .ok_or_else(|| self.err(format!("missing metadata key {:?}", self.arch_key(suffix))))
    }

    pub fn opt_u(&self, suffix: &str) -> Result<Option<usize>> {
        let v = self
            .file
            .metadata()
            .opt_arch_u64(suffix)
            .map_err(|e| self.err(e))?;
        Ok(v.map(|v| v as usize))
    }

    pub fn opt_f(&self, suffix: &str) -> Result<Option<f32>> {
        self.file
            .metadata()
            .opt_arch_f32(suffix)
            .map_err(|e| self.err(e))
    }

    pub fn opt_str(&self, suffix: &str) -> Result<Option<&str>> {
        self.file
            .metadata()
            .opt_str(&self.arch_key(suffix))
            .map_err(|e| self.err(e))
    }

    pub fn arch_key(&self, suffix: &str) -> String {
        self.file
            .metadata()
            .arch_key(suffix)
            .unwrap_or_else(|_| suffix.into())
    }

    /// The hyperparameters every architecture here shares, read as `llama_model::load_hparams`
    /// does: defaults for the optional keys, RoPE with its scaling.
    pub fn common(&self, arch: Arch, rope_mode: RopeMode) -> Result<Hparams> {
        let n_embd = self.u(key::EMBEDDING_LENGTH)?;
        let n_layer = self.u(key::BLOCK_COUNT)?;
        let n_head = self.u(key::HEAD_COUNT)?;
        let n_head_kv = self.opt_u(key::HEAD_COUNT_KV)?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(self.err(format!(
                "{n_head} query heads cannot share {n_head_kv} key/value heads"
            )));
        }
        let head_dim = self.opt_u(key::KEY_LENGTH)?.unwrap_or(n_embd / n_head);
        let head_dim_v = self.opt_u(key::VALUE_LENGTH)?.unwrap_or(n_embd / n_head);
        if head_dim != head_dim_v {
            return Err(self.err(format!(
                "key length {head_dim} differs from value length {head_dim_v}; not supported"
            )));
        }
        let n_rot = self.opt_u(key::ROPE_DIMENSION_COUNT)?.unwrap_or(head_dim);
        if n_rot != head_dim {
            return Err(self.err(format!(
                "rope.dimension_count {n_rot} differs from the head size {head_dim}"
            )));
        }
        let rms_eps = self.opt_f(key::RMS_EPS)?.ok_or_else(|| {
            self.err(format!(
                "missing metadata key {:?}",
                self.arch_key(key::RMS_EPS)
            ))
        })?;
        let n_ctx_train = self.u(key::CONTEXT_LENGTH)?;
        let n_ff = self.u(key::FEED_FORWARD_LENGTH)?;
        let n_expert = self.opt_u(key::EXPERT_COUNT)?.unwrap_or(0);
        let n_expert_used = self.opt_u(key::EXPERT_USED_COUNT)?.unwrap_or(0);
        // Mixtral-style llama files give the experts the model's FFN size.
        let n_ff_exp = self.opt_u(key::EXPERT_FEED_FORWARD_LENGTH)?.unwrap_or(n_ff);
        if n_expert > 0 && (n_expert_used == 0 || n_expert_used > n_expert || n_ff_exp == 0) {
            return Err(self.err(format!(
                "{n_expert_used} of {n_expert} experts used per token, expert FFN {n_ff_exp}"
            )));
        }
        let emb = self.tensor_dims("token_embd.weight")?;
        let n_vocab = emb.get(1).copied().unwrap_or(0) as usize;
        let freq_base = self.opt_f(key::ROPE_FREQ_BASE)?.unwrap_or(10000.0);
        let rope = self.rope(rope_mode, head_dim, freq_base, n_ctx_train)?;
        Ok(Hparams {
            arch,
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            rms_eps,
            rope: vec![rope; n_layer],
            window: vec![None; n_layer],
            kq_scale: 1.0 / (head_dim as f32).sqrt(),
            q_scale: None,
            embd_scale: None,
            final_softcap: None,
            n_expert,
            n_expert_used,
            n_ff_exp,
        })
    }

    /// RoPE with the model's scaling (`rope.scaling.*`), as `llama_context` sets it up.
    pub fn rope(
        &self,
        mode: RopeMode,
        n_dims: usize,
        freq_base: f32,
        n_ctx_train: usize,
    ) -> Result<Rope> {
        let mut rope = Rope::new(mode, n_dims, freq_base);
        let scaling = self.opt_str(key::ROPE_SCALING_TYPE)?.unwrap_or("linear");
        let factor = self.opt_f(key::ROPE_SCALING_FACTOR)?.unwrap_or(0.0);
        let attn_factor = self.opt_f("rope.scaling.attn_factor")?.unwrap_or(1.0);
        let n_ctx_orig = self
            .opt_u(key::ROPE_SCALING_ORIG_CTX)?
            .unwrap_or(n_ctx_train);
        rope.freq_scale = if factor == 0.0 { 1.0 } else { 1.0 / factor };
        match scaling {
            "none" => rope.freq_scale = 1.0,
            "linear" => {}
            "yarn" => {
                if self.opt_f("rope.scaling.yarn_log_multiplier")?.is_some() {
                    return Err(
                        self.err("YaRN with rope.scaling.yarn_log_multiplier is not supported yet")
                    );
                }
                rope.ext_factor = 1.0;
                let factor = 1.0 / rope.freq_scale;
                let mscale = if factor <= 1.0 {
                    1.0
                } else {
                    0.1 * factor.ln() + 1.0
                };
                rope.attn_factor = mscale * (1.0 / (1.0 + 0.1 * factor.ln()));
                rope = rope.with_yarn(n_ctx_orig as u32, 32.0, 1.0);
            }
            other => {
                return Err(self.err(format!(
                    "rope scaling {other:?} is not supported (hearth handles none, linear, yarn)"
                )));
            }
        }
        rope.attn_factor *= attn_factor;
        Ok(rope)
    }

    fn tensor_dims(&self, name: &str) -> Result<Vec<u64>> {
        self.file
            .tensor(name)
            .map(|t| t.dims.clone())
            .ok_or_else(|| self.err(format!("tensor {name:?} is missing")))
    }

    /// A 2-D weight `[cols, rows]` (ggml order) of a type the dot products support.
    pub fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<Matrix> {
        self.opt_matrix(name, cols, rows)?
            .ok_or_else(|| self.err(format!("tensor {name:?} is missing")))
    }

    pub fn opt_matrix(&self, name: &str, cols: usize, rows: usize) -> Result<Option<Matrix>> {
        let Some(t) = self.file.tensor(name) else {
            return Ok(None);
        };
        let want = [cols as u64, rows as u64];
        let dims: Vec<u64> = t.dims.clone();
        let matches = dims.len() >= 2 && dims[..2] == want && dims[2..].iter().all(|&d| d == 1);
        if !matches {
            return Err(self.err(format!(
                "tensor {name:?} has shape {dims:?}, expected {want:?}"
            )));
        }
        self.multipliable(name, t.ty)?;
        let start = (self.file.data_offset + t.offset) as usize;
        Ok(Some(Matrix::in_file(
            t.ty,
            rows,
            cols,
            start,
            t.n_bytes as usize,
        )))
    }

    /// A 3-D weight `[cols, rows, n]` (ggml order) as `n` matrices of `rows × cols`, each a
    /// slice of the file.
    pub fn experts(&self, name: &str, cols: usize, rows: usize, n: usize) -> Result<Vec<Matrix>> {
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| self.err(format!("tensor {name:?} is missing")))?;
        let want = [cols as u64, rows as u64, n as u64];
        if t.dims[..] != want {
            return Err(self.err(format!(
                "tensor {name:?} has shape {:?}, expected {want:?}",
                t.dims
            )));
        }
        self.multipliable(name, t.ty)?;
        let per = t.n_bytes as usize / n.max(1);
        let start = (self.file.data_offset + t.offset) as usize;
        Ok((0..n)
            .map(|i| Matrix::in_file(t.ty, rows, cols, start + i * per, per))
            .collect())
    }

    fn multipliable(&self, name: &str, ty: GgmlType) -> Result<()> {
        vec_dot_type(ty).map(|_| ()).map_err(|_| {
            self.err(format!(
                "tensor {name:?} is {ty}, which hearth cannot multiply; re-quantize the model \
                 (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS)"
            ))
        })
    }

    /// A 1-D tensor of `len` elements, decoded to f32 (norm weights, biases, RoPE factors).
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        self.opt_vector(name, len)?
            .ok_or_else(|| self.err(format!("tensor {name:?} is missing")))
    }

    pub fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        let Some(t) = self.file.tensor(name) else {
            return Ok(None);
        };
        if t.n_elements != len as u64 || t.row_len() != len as u64 {
            return Err(self.err(format!(
                "tensor {name:?} has shape {:?}, expected [{len}]",
                t.dims
            )));
        }
        let mut out = vec![0f32; len];
        dequantize_row(t.ty, self.file.tensor_data(t), &mut out)
            .map_err(|e| self.err(format!("tensor {name:?}: {e}")))?;
        Ok(Some(out))
    }

    /// Block `il`'s weights; `spec` says which optional parts the architecture requires.
    pub fn layer(&self, il: usize, hp: &Hparams, spec: &LayerSpec) -> Result<Layer> {
        let n = |s: &str| format!("blk.{il}.{s}");
        let (e, hd) = (hp.n_embd, hp.head_dim);
        let (nq, nkv) = (hp.n_head * hd, hp.n_head_kv * hd);
        let need = |on: bool, name: &str, len: usize| -> Result<Option<Vec<f32>>> {
            if on {
                self.vector(name, len).map(Some)
            } else {
                self.opt_vector(name, len)
            }
        };
        Ok(Layer {
            attn_norm: self.vector(&n("attn_norm.weight"), e)?,
            wq: self.matrix(&n("attn_q.weight"), e, nq)?,
            wk: self.matrix(&n("attn_k.weight"), e, nkv)?,
            wv: self.matrix(&n("attn_v.weight"), e, nkv)?,
            wo: self.matrix(&n("attn_output.weight"), nq, e)?,
            bq: self.opt_vector(&n("attn_q.bias"), nq)?,
            bk: self.opt_vector(&n("attn_k.bias"), nkv)?,
            bv: self.opt_vector(&n("attn_v.bias"), nkv)?,
            bo: self.opt_vector(&n("attn_output.bias"), e)?,
            q_norm: need(spec.qk_norm, &n("attn_q_norm.weight"), hd)?,
            k_norm: need(spec.qk_norm, &n("attn_k_norm.weight"), hd)?,
            attn_post_norm: need(spec.post_norms, &n("post_attention_norm.weight"), e)?,
            ffn_norm: self.vector(&n("ffn_norm.weight"), e)?,
            ffn: if hp.n_expert > 0 {
                let (ne, nf) = (hp.n_expert, hp.n_ff_exp);
                Ffn::Moe(Moe {
                    router: self.matrix(&n("ffn_gate_inp.weight"), e, ne)?,
                    gate: self.experts(&n("ffn_gate_exps.weight"), e, nf, ne)?,
                    up: self.experts(&n("ffn_up_exps.weight"), e, nf, ne)?,
                    down: self.experts(&n("ffn_down_exps.weight"), nf, e, ne)?,
                    n_used: hp.n_expert_used,
                })
            } else {
                Ffn::Dense {
                    gate: self.matrix(&n("ffn_gate.weight"), e, hp.n_ff)?,
                    up: self.matrix(&n("ffn_up.weight"), e, hp.n_ff)?,
                    down: self.matrix(&n("ffn_down.weight"), hp.n_ff, e)?,
                    gate_b: self.opt_vector(&n("ffn_gate.bias"), hp.n_ff)?,
                    up_b: self.opt_vector(&n("ffn_up.bias"), hp.n_ff)?,
                    down_b: self.opt_vector(&n("ffn_down.bias"), e)?,
                }
            },
            ffn_post_norm: need(spec.post_norms, &n("post_ffw_norm.weight"), e)?,
        })
    }
}
