//! Choosing the next token from logits, and noticing when to stop.
//!
//! The chain follows llama.cpp's default order: logit bias → repetition penalties → top-k → top-p →
//! min-p → temperature → draw. A temperature of 0 (or below) is greedy: the highest logit, the lowest
//! id on a tie. Draws come from a seeded generator, so a seed reproduces a run.

mod stop;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};

pub use stop::{StopMatch, StopStrings};

/// Sampling settings; the defaults are llama.cpp's.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerParams {
    /// 0 or below: greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities sum to at least p; 1.0 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one; 0 keeps all.
    pub min_p: f32,
    /// Divides positive logits and multiplies negative ones of recent tokens; 1.0 is off.
    pub repeat_penalty: f32,
    /// Subtracted once per earlier occurrence of a token.
    pub frequency_penalty: f32,
    /// Subtracted once if a token occurred at all.
    pub presence_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Added to a token's logit before anything else (`f32::NEG_INFINITY` bans it).
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0xC0FFEE,
        }
    }
}

impl SamplerParams {
    pub fn greedy() -> Self {
        SamplerParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Checks ranges so a bad flag gets a message instead of odd output.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite()) {
            return Err(format!(
                "temperature must be a number, got {}",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("top-p must be in [0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min-p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(format!(
                "repeat penalty must be positive, got {}",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// A sampler with its random state and the recent-token window the penalties use.
pub struct Sampler {
    params: SamplerParams,
    rng: StdRng,
    recent: VecDeque<u32>,
    /// Candidate buffer reused across calls (a 262k vocabulary is sampled every token).
    cand: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Sampler {
            params,
            rng,
            recent: VecDeque::new(),
            cand: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// Records tokens that are now part of the context (the prompt, then each chosen token).
    pub fn accept(&mut self, token: u32) {
        if self.params.penalty_last_n == 0 {
            return;
        }
        if self.recent.len() == self.params.penalty_last_n {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    /// Chooses the next token. `logits` is modified (bias and penalties are applied in place).
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        for &(t, b) in &p.logit_bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
        self.apply_penalties(logits);
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let p = &self.params;

        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        self.cand.clear();
        if p.top_k > 0 && p.top_k < logits.len() {
            top_k(logits, p.top_k, &mut self.cand);
        } else {
            self.cand.extend(
                logits
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| (i as u32, l))
                    .filter(|c| c.1 > f32::NEG_INFINITY),
            );
        }
        if self.cand.is_empty() {
            // Everything was banned: fall back to the plain argmax rather than inventing a token.
            return argmax(logits);
        }
        self.cand.sort_unstable_by(by_logit);

        if p.top_p < 1.0 {
            let probs = softmax(&self.cand);
            let mut sum = 0.0;
            let mut keep = probs.len();
            for (i, pr) in probs.iter().enumerate() {
                sum += pr;
                if sum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            // p_i ≥ min_p · p_max  ⇔  logit_i ≥ logit_max + ln(min_p).
            let cut = self.cand[0].1 + p.min_p.ln();
            let keep = self.cand.iter().take_while(|c| c.1 >= cut).count();
            self.cand.truncate(keep.max(1));
        }
        for c in self.cand.iter_mut() {
            c.1 /= p.temperature;
        }
        let probs = softmax(&self.cand);
        let r: f64 = self.rng.random();
        let mut acc = 0.0f64;
        for (c, pr) in self.cand.iter().zip(&probs) {
            acc += *pr as f64;
            if r < acc {
                return c.0;
            }
        }
        self.cand.last().map(|c| c.0).unwrap_or(0)
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let p = &self.params;
        if self.recent.is_empty()
            || (p.repeat_penalty == 1.0 && p.frequency_penalty == 0.0 && p.presence_penalty == 0.0)
        {
            return;
        }
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in &self.recent {
            *counts.entry(t).or_default() += 1;
        }
        for (&t, &n) in &counts {
            let Some(l) = logits.get_mut(t as usize) else {
                continue;
            };
            *l = if *l > 0.0 {
                *l / p.repeat_penalty
            } else {
                *l * p.repeat_penalty
            };
            *l -= n as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
}

/// The `k` best candidates (largest logit first, the lower id on a tie, as `f32::total_cmp`
/// orders them; -inf and NaN are never candidates) into `out`, in no particular order: one pass
/// that keeps the best `k` so far and skips what cannot beat the worst of them, instead of
/// selecting among a copy of the whole vocabulary (3 ms for Gemma 3's 262 144 logits).
fn top_k(logits: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    // `total_cmp`'s order as integers.
    let key = |l: f32| {
        let b = l.to_bits() as i32;
        b ^ (((b >> 31) as u32) >> 1) as i32
    };
    // The worst kept candidate: the lowest key, and of equal keys the highest id (ids only grow,
    // so a later equal logit never beats it).
    let worst = |out: &[(u32, f32)]| {
        let mut w = 0;
        for (i, c) in out.iter().enumerate() {
            let (kc, kw) = (key(c.1), key(out[w].1));
            if kc < kw || (kc == kw && c.0 > out[w].0) {
                w = i;
            }
        }
        w
    };
    let mut w = 0;
    let mut floor = i32::MIN;
    // Runs of 64 logits none of which beats the floor are skipped on their largest key (a
    // branch-free maximum the compiler vectorizes): once the floor settles, almost all of a
    // 262k vocabulary is. The others take the one-by-one rule, in id order.
    const RUN: usize = 64;
    for (r, run) in logits.chunks(RUN).enumerate() {
        if run.iter().fold(i32::MIN, |m, &l| m.max(key(l))) <= floor {
            continue;
        }
        for (j, &l) in run.iter().enumerate() {
            let kl = key(l);
            if kl <= floor || l.is_nan() || l == f32::NEG_INFINITY {
                continue;
            }
            let i = r * RUN + j;
            if out.len() < k {
                out.push((i as u32, l));
                if out.len() == k {
                    w = worst(out);
                    floor = key(out[w].1);
                }
            } else {
                out[w] = (i as u32, l);
                w = worst(out);
                floor = key(out[w].1);
            }
        }
    }
}

/// The highest logit; the lowest id among equals (as the llama.cpp references were made).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn softmax(c: &[(u32, f32)]) -> Vec<f32> {
    let max = c.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = c.iter().map(|x| (x.1 - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass top-k keeps exactly what sorting every candidate keeps, ties (to the lower
    /// id), signed zeros, infinities and NaN included.
    #[test]
    fn top_k_equals_sorting_every_candidate() {
        let mut rng = StdRng::seed_from_u64(7);
        let specials = [
            0.0,
            -0.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            1.5,
            -1.5,
        ];
        for n in [1usize, 5, 40, 41, 300, 5000, 70_000] {
            let logits: Vec<f32> = (0..n)
                .map(|_| match rng.random_range(0..10) {
                    0 => specials[rng.random_range(0..specials.len())],
                    1..=3 => rng.random_range(-4..4) as f32,
                    _ => rng.random_range(-10.0..10.0),
                })
                .collect();
            for k in [1, 2, 7, 40, n.saturating_sub(1).max(1)] {
                let by_logit =
                    |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
                let mut want: Vec<(u32, f32)> = logits
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| (i as u32, l))
                    .filter(|c| c.1 > f32::NEG_INFINITY)
                    .collect();
                want.sort_unstable_by(by_logit);
                want.truncate(k);
                let mut got = Vec::new();
                top_k(&logits, k, &mut got);
                got.sort_unstable_by(by_logit);
                let ids = |v: &[(u32, f32)]| v.iter().map(|c| c.0).collect::<Vec<_>>();
                assert_eq!(ids(&got), ids(&want), "n {n} k {k}");
            }
        }
    }

    #[test]
    fn greedy_takes_the_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplerParams::greedy());
        assert_eq!(s.sample(&mut [1.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn seeds_reproduce_and_differ() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplerParams {
                seed,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                temperature: 5.0,
                ..Default::default()
            });
            (0..50)
                .map(|_| s.sample(&mut logits.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn top_k_1_is_greedy_and_min_p_cuts() {
        let logits = vec![0.0, 5.0, 4.9, -3.0];
        let mut s = Sampler::new(SamplerParams {
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut logits.clone()), 1);
        }
        // min_p 0.5: only tokens within ln 2 of the best survive (1 and 2).
        let mut s = Sampler::new(SamplerParams {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            temperature: 1.0,
            ..Default::default()
        });
        for _ in 0..200 {
            let t = s.sample(&mut logits.clone());
            assert!(t == 1 || t == 2);
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // Token 0 alone has ~0.88 of the mass.
        let logits = vec![4.0, 2.0, 0.0, 0.0];
        let mut s = Sampler::new(SamplerParams {
            top_k: 0,
            top_p: 0.8,
            min_p: 0.0,
            temperature: 1.0,
            ..Default::default()
        });
        for _ in 0..100 {
            assert_eq!(s.sample(&mut logits.clone()), 0);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // p = softmax([ln 1, ln 3]) = [0.25, 0.75].
        let logits = vec![0.0, 3f32.ln()];
        let mut s = Sampler::new(SamplerParams {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            temperature: 1.0,
            seed: 9,
            ..Default::default()
        });
        let ones = (0..4000)
            .filter(|_| s.sample(&mut logits.clone()) == 1)
            .count();
        assert!((2850..3150).contains(&ones), "{ones}");
    }

    #[test]
    fn penalties_and_bias() {
        let mut s = Sampler::new(SamplerParams {
            repeat_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplerParams::greedy()
        });
        s.accept(0);
        s.accept(0);
        s.accept(2);
        let mut l = vec![4.0, 3.0, -1.0];
        s.sample(&mut l);
        // 4/2 - (2·0.25 + 0.5) and -1·2 - (1·0.25 + 0.5).
        assert_eq!(l, vec![1.0, 3.0, -2.75]);
        let mut s = Sampler::new(SamplerParams {
            logit_bias: vec![(0, f32::NEG_INFINITY), (2, 10.0)],
            ..SamplerParams::greedy()
        });
        assert_eq!(s.sample(&mut [5.0, 4.0, 0.0]), 2);
        let mut s = Sampler::new(SamplerParams {
            logit_bias: vec![(0, f32::NEG_INFINITY)],
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [5.0, 4.0, 0.0]), 1);
    }

    #[test]
    fn the_penalty_window_slides() {
        let mut s = Sampler::new(SamplerParams {
            penalty_last_n: 2,
            repeat_penalty: 2.0,
            ..SamplerParams::greedy()
        });
        for t in [0, 1, 2] {
            s.accept(t);
        }
        let mut l = vec![2.0, 2.0, 2.0];
        s.sample(&mut l);
        assert_eq!(l, vec![2.0, 1.0, 1.0]);
    }

    #[test]
    fn validation_names_the_bad_setting() {
        assert!(
            SamplerParams {
                top_p: 1.5,
                ..Default::default()
            }
            .validate()
            .unwrap_err()
            .contains("top-p")
        );
        assert!(
            SamplerParams {
                repeat_penalty: 0.0,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(SamplerParams::default().validate().is_ok());
    }
}
