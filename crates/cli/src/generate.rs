//! Loading a model with feedback, and the generation loop shared by `run` and `chat`: prefill
//! (reusing the cached prefix), then sample → stream → decode one token at a time.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hearth_engine::{LoadOptions, Logits, Model, Session, SessionOptions};
use hearth_sampling::{Sampler, SamplerParams, StopMatch, StopStrings};
use hearth_tokenizer::Tokenizer;

use crate::model_ref;

/// Resolves MODEL, maps it and builds its tokenizer, telling the user what is being loaded.
pub fn load(model: &str, threads: usize) -> Result<(Model, Tokenizer)> {
    let path = model_ref::resolve(model)?;
    let size = std::fs::metadata(&path)
        .with_context(|| format!("{}", path.display()))?
        .len();
    eprintln!(
        "hearth: loading {} ({:.1} MB)",
        path.display(),
        size as f64 / 1e6
    );
    let start = Instant::now();
    let model = Model::load(
        &path,
        &LoadOptions {
            threads,
            ..Default::default()
        },
    )?;
    let tok = Tokenizer::from_gguf(model.gguf().metadata())
        .with_context(|| format!("{}: reading the tokenizer", path.display()))?;
    let hp = model.hparams();
    eprintln!(
        "hearth: {} model, {} layers, {} wide, vocabulary {}, trained context {}; loaded in {} ms, {} threads",
        hp.arch.name(),
        hp.n_layer,
        hp.n_embd,
        hp.n_vocab,
        hp.n_ctx_train,
        start.elapsed().as_millis(),
        model.n_threads()
    );
    Ok((model, tok))
}

pub struct GenParams {
    pub n_predict: usize,
    pub sampler: SamplerParams,
    pub stops: Vec<String>,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model ended its turn (an end-of-generation token).
    Eog,
    Length,
    StopString,
    ContextFull,
}

pub struct GenResult {
    pub ids: Vec<u32>,
    pub text: String,
    pub reason: StopReason,
    pub prompt_tokens: usize,
    /// Prompt tokens that were evaluated (the rest were reused from the cache).
    pub prefilled: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
}

impl GenResult {
    /// Timings line in the manner of llama.cpp's, for stderr.
    pub fn timings(&self) -> String {
        let rate = |n: usize, d: Duration| {
            if d.is_zero() {
                0.0
            } else {
                n as f64 / d.as_secs_f64()
            }
        };
        format!(
            "hearth: prompt {} tokens ({} evaluated) in {:.1} ms ({:.1} t/s); generated {} tokens in {:.1} ms ({:.1} t/s); stop: {:?}",
            self.prompt_tokens,
            self.prefilled,
            self.prefill_time.as_secs_f64() * 1e3,
            rate(self.prefilled, self.prefill_time),
            self.ids.len(),
            self.decode_time.as_secs_f64() * 1e3,
            rate(self.ids.len().saturating_sub(1), self.decode_time),
            self.reason
        )
    }
}

/// A session plus the tokens in its cache, so a following prompt that shares a prefix (the next turn
/// of a chat) only evaluates what is new.
pub struct Generator<'m> {
    session: Session<'m>,
}

impl<'m> Generator<'m> {
    pub fn new(model: &'m Model, opts: SessionOptions) -> Result<Self> {
        let session = model.session(opts)?;
        Ok(Generator { session })
    }

    pub fn n_ctx(&self) -> usize {
        self.session.n_ctx()
    }

    /// Evaluates `prompt` after the longest prefix already cached; returns the last position's
    /// logits and how many tokens were evaluated.
    fn prefill(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize)> {
        let (out, reused) = self.session.prefill(prompt, Logits::Last)?;
        Ok((
            out.last().context("no logits")?.to_vec(),
            prompt.len() - reused,
        ))
    }

    /// Generates after `prompt`, calling `on_text` with each piece of text as it becomes final.
    pub fn generate(
        &mut self,
        tok: &Tokenizer,
        prompt: &[u32],
        p: &GenParams,
        on_text: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<GenResult> {
        if prompt.is_empty() {
            bail!("the prompt is empty (no tokens to start from)");
        }
        let n_ctx = self.session.n_ctx();
        if prompt.len() >= n_ctx {
            bail!(
                "the prompt is {} tokens but the context holds {n_ctx} (with room for one generated token); \
                 raise -c (the model allows {}) or shorten the prompt",
                prompt.len(),
                self.session.model().n_ctx_train()
            );
        }
        p.sampler.validate().map_err(anyhow::Error::msg)?;
        let mut sampler = Sampler::new(p.sampler.clone());
        for &t in prompt {
            sampler.accept(t);
        }
        let mut stops = StopStrings::new(p.stops.iter().cloned());
        let mut utf8 = Utf8Stream::default();

        let start = Instant::now();
        let (mut logits, prefilled) = self.prefill(prompt)?;
        let prefill_time = start.elapsed();
        let decode_start = Instant::now();
        let mut ids = Vec::new();
        let mut text = String::new();
        let mut reason = StopReason::Length;
        while ids.len() < p.n_predict {
            let t = sampler.sample(&mut logits);
            if tok.is_eog(t) && !p.ignore_eos {
                reason = StopReason::Eog;
                break;
            }
            sampler.accept(t);
            ids.push(t);
            let piece = utf8.push(&tok.token_to_piece(t, true));
            match stops.push(&piece) {
                StopMatch::Continue(s) => {
                    text.push_str(&s);
                    on_text(&s)?;
                }
                StopMatch::Stop(s) => {
                    text.push_str(&s);
                    on_text(&s)?;
                    reason = StopReason::StopString;
                    break;
                }
            }
            if ids.len() == p.n_predict {
                break;
            }
            if self.session.n_past() >= n_ctx {
                reason = StopReason::ContextFull;
                break;
            }
            let out = self.session.eval(&[t], Logits::Last)?;
            logits = out.last().context("no logits")?.to_vec();
        }
        if reason != StopReason::StopString {
            let tail = stops.push(&utf8.finish());
            let rest = match tail {
                StopMatch::Continue(s) | StopMatch::Stop(s) => s,
            } + &stops.finish();
            text.push_str(&rest);
            on_text(&rest)?;
        }
        Ok(GenResult {
            ids,
            text,
            reason,
            prompt_tokens: prompt.len(),
            prefilled,
            prefill_time,
            decode_time: decode_start.elapsed(),
        })
    }
}

/// Token pieces are bytes and may split a UTF-8 character; this releases only complete characters.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An incomplete sequence at the end waits; a broken one in the middle is released lossily.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let out = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
        self.pending.drain(..valid);
        out
    }

    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Utf8Stream;

    #[test]
    fn split_characters_wait_for_their_last_byte() {
        let mut s = Utf8Stream::default();
        let e = "é".as_bytes();
        assert_eq!(s.push(&[b'a', e[0]]), "a");
        assert_eq!(s.push(&e[1..]), "é");
        assert_eq!(s.push(&[0xff, b'b']), "\u{fffd}b");
        assert_eq!(s.push(&[0xe2, 0x82]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }
}
