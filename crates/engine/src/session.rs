//! A session: one sequence, its KV cache and its position.

use crate::adapter::Applied;
use crate::blocks::{Seq, Step};
use crate::buffers::Buffers;
use crate::error::{EngineError, Result};
use crate::kv_cache::{KvCache, KvType};
use crate::model::Model;
use crate::models;
use crate::ops::attention::{AttentionMode, Kernel};

/// Context size when none is asked for.
pub const DEFAULT_N_CTX: usize = 4096;
/// Tokens per forward pass of a long prompt (llama.cpp's default `n_ubatch`).
pub const DEFAULT_N_UBATCH: usize = 512;

#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Context size in tokens; 0 = [`DEFAULT_N_CTX`]. Capped by the model's context length.
    pub n_ctx: usize,
    /// Flash attention (llama.cpp's default on CPU) or the standard softmax path.
    pub attention: AttentionMode,
    /// A prompt longer than this is evaluated in several passes of this many tokens.
    pub n_ubatch: usize,
    /// Element type of the K cache (`--cache-type-k`).
    pub cache_type_k: KvType,
    /// Element type of the V cache (`--cache-type-v`); a quantized V needs flash attention.
    pub cache_type_v: KvType,
    /// LoRA adapters to apply from the start (see [`Session::set_adapters`]).
    pub adapters: Vec<Applied>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: DEFAULT_N_CTX,
            attention: AttentionMode::Flash,
            n_ubatch: DEFAULT_N_UBATCH,
            cache_type_k: KvType::F16,
            cache_type_v: KvType::F16,
            adapters: Vec::new(),
        }
    }
}

/// Which positions of a batch to compute logits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None: only fill the cache.
    None,
    /// The last token of the batch (generation).
    Last,
    /// Every token (scoring, `hearth logits`).
    All,
    /// The last `n` tokens (perplexity scores the second half of a chunk).
    Tail(usize),
}

impl Logits {
    fn rows(self, n: usize) -> Vec<usize> {
        match self {
            Logits::None => Vec::new(),
            Logits::Last => vec![n - 1],
            Logits::All => (0..n).collect(),
            Logits::Tail(k) => (n.saturating_sub(k)..n).collect(),
        }
    }
}

/// Logits of some positions of a batch.
#[derive(Clone, Debug, Default)]
pub struct Output {
    n_vocab: usize,
    /// Batch indices of the rows, ascending.
    indices: Vec<usize>,
    data: Vec<f32>,
}

impl Output {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// The batch index (0-based position within the `eval` call) of each row.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// Row `i` (not batch index `i`).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_vocab..(i + 1) * self.n_vocab]
    }

    /// The logits of batch index `index`, if they were computed.
    pub fn at(&self, index: usize) -> Option<&[f32]> {
        let i = self.indices.binary_search(&index).ok()?;
        Some(self.row(i))
    }

    /// The last row.
    pub fn last(&self) -> Option<&[f32]> {
        (!self.is_empty()).then(|| self.row(self.len() - 1))
    }

    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.n_vocab.max(1))
    }

    /// All rows, row-major.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}

/// One sequence being evaluated: the model, a KV cache and the tokens in it.
pub struct Session<'m> {
    model: &'m Model,
    cache: KvCache,
    /// The tokens whose K and V are cached, in position order.
    tokens: Vec<u32>,
    opts: SessionOptions,
    /// Activation buffers kept between passes (see [`Buffers`]).
    bufs: Buffers,
    /// LoRA adapters applied to every product they target, with their scales.
    adapters: Vec<Applied>,
}

impl<'m> Session<'m> {
    pub(crate) fn new(model: &'m Model, mut opts: SessionOptions) -> Result<Session<'m>> {
        let hp = model.hparams();
        if opts.n_ctx == 0 {
            opts.n_ctx = DEFAULT_N_CTX;
        }
        opts.n_ctx = opts.n_ctx.min(hp.n_ctx_train);
        if opts.n_ubatch == 0 {
            opts.n_ubatch = DEFAULT_N_UBATCH;
        }
        if opts.cache_type_v != KvType::F16 && opts.attention != AttentionMode::Flash {
            return Err(EngineError::Options(format!(
                "a {} V cache needs flash attention (as in llama.cpp); use an f16 V cache or turn \
                 flash attention on",
                opts.cache_type_v
            )));
        }
        let cache = KvCache::new(
            hp.n_layer,
            opts.n_ctx,
            hp.n_head_kv,
            hp.head_dim,
            opts.cache_type_k,
            opts.cache_type_v,
        )?;
        let adapters = std::mem::take(&mut opts.adapters);
        let mut session = Session {
            model,
            cache,
            tokens: Vec::new(),
            opts,
            bufs: Buffers::default(),
            adapters: Vec::new(),
        };
        session.set_adapters(adapters)?;
        Ok(session)
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Tokens in the cache (the position of the next token).
    pub fn n_past(&self) -> usize {
        self.tokens.len()
    }

    /// The tokens in the cache, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The context size: at most this many tokens fit.
    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx()
    }

    pub fn options(&self) -> &SessionOptions {
        &self.opts
    }

    /// Bytes of the KV cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// The adapters this session applies.
    pub fn adapters(&self) -> &[Applied] {
        &self.adapters
    }

    /// Applies `adapters` (in this order, each at its scale) from the next evaluation on; no
    /// adapter is the base model. The base weights are untouched: other sessions of the same
    /// model keep theirs. Changing the set forgets the cached tokens, whose keys and values
    /// were computed with the old one.
    pub fn set_adapters(&mut self, adapters: Vec<Applied>) -> Result<()> {
        for a in &adapters {
            if !a.scale.is_finite() {
                return Err(EngineError::Options(format!(
                    "adapter {} has scale {}; a scale must be a finite number",
                    a.adapter.path().display(),
                    a.scale
                )));
            }
            if !a.adapter.fits(self.model) {
                return Err(EngineError::Options(format!(
                    "adapter {} was loaded for another model",
                    a.adapter.path().display()
                )));
            }
        }
        if adapters != self.adapters {
            self.tokens.clear();
            self.adapters = adapters;
        }
        Ok(())
    }

    /// Forgets every cached token.
    pub fn clear(&mut self) {
        self.tokens.clear();
    }

    /// Keeps the first `n` cached tokens (to regenerate from there).
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n > self.n_past() {
            return Err(EngineError::BadTruncate {
                n,
                n_past: self.n_past(),
            });
        }
        self.tokens.truncate(n);
        Ok(())
    }

    /// Starts a new request whose full token sequence is `prompt`: keeps the longest prefix of
    /// the cache that `prompt` shares (leaving at least one token to evaluate, so there are
    /// logits), evaluates only the rest, and returns its logits and how many tokens were reused.
    /// A follow-up turn of a chat, or a request repeating a long system prompt, only pays for
    /// the new tokens.
    pub fn prefill(&mut self, prompt: &[u32], want: Logits) -> Result<(Output, usize)> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyBatch);
        }
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        let keep = std::mem::take(&mut self.tokens);
        self.tokens = keep[..common].to_vec();
        match self.eval(&prompt[common..], want) {
            Ok(out) => Ok((out, common)),
            Err(e) => {
                // Refused before any cell was written: the old tokens are all still there.
                if matches!(
                    e,
                    EngineError::BadToken { .. } | EngineError::ContextFull { .. }
                ) {
                    self.tokens = keep;
                }
                Err(e)
            }
        }
    }

    /// Whether `tokens` (at batch index `index0` on) are in the vocabulary and fit after the
    /// cached ones.
    fn check_append(&self, tokens: &[u32], index0: usize) -> Result<()> {
        let n_vocab = self.model.n_vocab();
        if let Some((i, &id)) = tokens
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as usize >= n_vocab)
        {
            let index = index0 + i;
            return Err(EngineError::BadToken { id, index, n_vocab });
        }
        let (n_past, n_new) = (self.n_past(), tokens.len());
        if n_past + n_new > self.n_ctx() {
            return Err(EngineError::ContextFull {
                n_past,
                n_new,
                total: n_past + n_new,
                n_ctx: self.n_ctx(),
                n_ctx_train: self.model.n_ctx_train(),
            });
        }
        Ok(())
    }

    /// Appends `tokens` at positions `n_past..` and returns the logits `want`s. A whole prompt
    /// goes through the model as one batch (in passes of `n_ubatch` tokens); decode is a batch
    /// of one. On error nothing is appended.
    pub fn eval(&mut self, tokens: &[u32], want: Logits) -> Result<Output> {
        if tokens.is_empty() {
            return Err(EngineError::EmptyBatch);
        }
        self.check_append(tokens, 0)?;
        let n_vocab = self.model.n_vocab();
        let n_past = self.n_past();
        let rows = want.rows(tokens.len());
        let mut out = Output {
            n_vocab,
            indices: rows.clone(),
            data: Vec::with_capacity(rows.len() * n_vocab),
        };
        let mut start = 0;
        while start < tokens.len() {
            let end = (start + self.opts.n_ubatch).min(tokens.len());
            let out_rows: Vec<usize> = rows
                .iter()
                .filter(|&&r| r >= start && r < end)
                .map(|&r| r - start)
                .collect();
            let positions = (n_past + start..n_past + end).collect();
            let seq = Seq {
                cache: &mut self.cache,
                rows: 0..end - start,
                kernel: Kernel::choose(
                    self.opts.attention,
                    end - start,
                    self.opts.cache_type_k,
                    self.opts.cache_type_v,
                ),
                adapters: &self.adapters,
            };
            let mut step = Step {
                m: self.model,
                seqs: vec![seq],
                tokens: &tokens[start..end],
                positions,
                out_rows: &out_rows,
                bufs: &self.bufs,
                rope_caches: Vec::new(),
            };
            let logits = match models::forward(&mut step) {
                Ok(l) => l,
                Err(e) => {
                    // Earlier passes filled cells that are not counted: forget them.
                    self.tokens.truncate(n_past);
                    return Err(e);
                }
            };
            self.tokens.extend_from_slice(&tokens[start..end]);
            out.data.extend_from_slice(&logits);
            self.bufs.give(logits);
            start = end;
        }
        Ok(out)
    }
}

/// One decode step for several sessions of one model at once (continuous batching): each
/// `(session, token)` appends `token` to its session. The weights are read once for all rows,
/// each row attends over its own session's cache and gets its own session's adapters (or none)
/// — the S-LoRA idea on CPU. Returns each session's next-token logits, in order; on error no
/// session changes.
pub fn decode_batch(items: &mut [(&mut Session<'_>, u32)]) -> Result<Vec<Vec<f32>>> {
    let Some((first, _)) = items.first() else {
        return Err(EngineError::EmptyBatch);
    };
    let model = first.model;
    let n_vocab = model.n_vocab();
    for (index, (s, id)) in items.iter().enumerate() {
        if !std::ptr::eq(s.model, model) {
            return Err(EngineError::Options(
                "a batch's sessions must all belong to the same loaded model".into(),
            ));
        }
        s.check_append(&[*id], index)?;
    }
    let n = items.len();
    let tokens: Vec<u32> = items.iter().map(|(_, t)| *t).collect();
    let positions: Vec<usize> = items.iter().map(|(s, _)| s.n_past()).collect();
    let out_rows: Vec<usize> = (0..n).collect();
    let bufs = Buffers::default();
    let mut seqs = Vec::with_capacity(n);
    for (i, (s, _)) in items.iter_mut().enumerate() {
        let s: &mut Session = s;
        let kernel = Kernel::choose(
            s.opts.attention,
            1,
            s.opts.cache_type_k,
            s.opts.cache_type_v,
        );
        seqs.push(Seq {
            cache: &mut s.cache,
            rows: i..i + 1,
            kernel,
            adapters: &s.adapters,
        });
    }
    let mut step = Step {
        m: model,
        seqs,
        tokens: &tokens,
        positions,
        out_rows: &out_rows,
        bufs: &bufs,
        rope_caches: Vec::new(),
    };
    let logits = models::forward(&mut step)?;
    drop(step);
    for (s, t) in items.iter_mut() {
        s.tokens.push(*t);
    }
    Ok(logits.chunks_exact(n_vocab).map(<[f32]>::to_vec).collect())
}
