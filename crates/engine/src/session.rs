//! A session: one sequence, its KV cache and its position.

use crate::blocks::Step;
use crate::error::{EngineError, Result};
use crate::kv_cache::KvCache;
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
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: DEFAULT_N_CTX,
            attention: AttentionMode::Flash,
            n_ubatch: DEFAULT_N_UBATCH,
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

/// One sequence being evaluated: the model, a KV cache and the number of cached tokens.
pub struct Session<'m> {
    model: &'m Model,
    cache: KvCache,
    n_past: usize,
    opts: SessionOptions,
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
        let cache = KvCache::new(hp.n_layer, opts.n_ctx, hp.n_head_kv * hp.head_dim);
        Ok(Session {
            model,
            cache,
            n_past: 0,
            opts,
        })
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Tokens in the cache (the position of the next token).
    pub fn n_past(&self) -> usize {
        self.n_past
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

    /// Forgets every cached token.
    pub fn clear(&mut self) {
        self.n_past = 0;
    }

    /// Keeps the first `n` cached tokens (to regenerate from there).
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n > self.n_past {
            return Err(EngineError::BadTruncate {
                n,
                n_past: self.n_past,
            });
        }
        self.n_past = n;
        Ok(())
    }

    /// Appends `tokens` at positions `n_past..` and returns the logits `want`s. A whole prompt
    /// goes through the model as one batch (in passes of `n_ubatch` tokens); decode is a batch
    /// of one. On error nothing is appended.
    pub fn eval(&mut self, tokens: &[u32], want: Logits) -> Result<Output> {
        if tokens.is_empty() {
            return Err(EngineError::EmptyBatch);
        }
        let n_vocab = self.model.n_vocab();
        if let Some((index, &id)) = tokens
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as usize >= n_vocab)
        {
            return Err(EngineError::BadToken { id, index, n_vocab });
        }
        let total = self.n_past + tokens.len();
        if total > self.n_ctx() {
            return Err(EngineError::ContextFull {
                n_past: self.n_past,
                n_new: tokens.len(),
                total,
                n_ctx: self.n_ctx(),
                n_ctx_train: self.model.n_ctx_train(),
            });
        }
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
            let positions = (self.n_past + start..self.n_past + end).collect();
            let mut step = Step {
                m: self.model,
                cache: &mut self.cache,
                tokens: &tokens[start..end],
                positions,
                out_rows: &out_rows,
                kernel: Kernel::choose(self.opts.attention, end - start),
            };
            let logits = models::forward(&mut step)?;
            out.data.extend_from_slice(&logits);
            start = end;
        }
        self.n_past = total;
        Ok(out)
    }
}
