//! Cutting special tokens out of the text before merging (llama.cpp `tokenizer_st_partition`).
//!
//! llama.cpp takes the special tokens longest first, and for each one scans every remaining
//! text fragment left to right, cutting out its non-overlapping occurrences. User-defined tokens
//! always take part; control and unknown tokens only when the caller parses special tokens.
//! Tokens may strip whitespace on their left or right (`LSTRIP`/`RSTRIP` attributes).
//!
//! The loop there is O(special tokens × text); here one Aho-Corasick pass finds every occurrence
//! of every candidate, and the occurrences are then accepted in llama.cpp's order: an occurrence is
//! taken when none of its bytes was consumed before, which is exactly when llama.cpp's scan of the
//! still-unconsumed fragments would have found it. Texts with millions of overlapping occurrences
//! (long whitespace runs against Gemma's space-run tokens) fall back to llama.cpp's own scan, but
//! only for the tokens that occur.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::unicode::is_c_space;
use crate::vocab::{TokenAttrs, Vocab};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

struct Automaton {
    ac: AhoCorasick,
    /// Pattern index → position in the matching order.
    rank: Vec<u32>,
}

pub(crate) struct SpecialMatcher {
    /// Control, user-defined and unknown tokens, longest text first. (llama.cpp's sort is not
    /// stable; ties are broken by id here. No vocabulary we test has two equal-length specials
    /// that can overlap, the only case where the order among ties could matter.)
    order: Vec<u32>,
    /// Built on first use: most programs encode with one setting only.
    user_only: OnceLock<Option<Automaton>>,
    all: OnceLock<Option<Automaton>>,
}

impl SpecialMatcher {
    pub fn new(vocab: &Vocab) -> SpecialMatcher {
        let special = TokenAttrs::CONTROL | TokenAttrs::USER_DEFINED | TokenAttrs::UNKNOWN;
        let mut order: Vec<u32> = (0..vocab.len() as u32)
            .filter(|&id| vocab.attrs(id).has(special))
            .collect();
        order.sort_by_key(|&id| std::cmp::Reverse(vocab.bytes(id).len()));
        SpecialMatcher {
            order,
            user_only: OnceLock::new(),
            all: OnceLock::new(),
        }
    }

    /// Special ids in matching order.
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    fn automaton(&self, vocab: &Vocab, parse_special: bool) -> Option<&Automaton> {
        let cell = if parse_special {
            &self.all
        } else {
            &self.user_only
        };
        cell.get_or_init(|| {
            let mut patterns = Vec::new();
            let mut rank = Vec::new();
            for (r, &id) in self.order.iter().enumerate() {
                let attrs = vocab.attrs(id);
                if !parse_special && attrs.has(TokenAttrs::CONTROL | TokenAttrs::UNKNOWN) {
                    continue;
                }
                patterns.push(vocab.bytes(id));
                rank.push(r as u32);
            }
            if patterns.is_empty() {
                return None;
            }
            let ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .build(&patterns)
                .expect("special token automaton");
            Some(Automaton { ac, rank })
        })
        .as_ref()
    }

    /// Splits `text` into raw-text fragments and special tokens, in order.
    pub fn partition(
        &self,
        vocab: &Vocab,
        text: &str,
        parse_special: bool,
        out: &mut Vec<Fragment>,
    ) {
        self.partition_limited(vocab, text, parse_special, MAX_HITS, out);
    }

    fn partition_limited(
        &self,
        vocab: &Vocab,
        text: &str,
        parse_special: bool,
        max_hits: usize,
        out: &mut Vec<Fragment>,
    ) {
        if text.is_empty() {
            return;
        }
        let whole = |out: &mut Vec<Fragment>| out.push(Fragment::Text(0..text.len()));
        let Some(automaton) = self.automaton(vocab, parse_special) else {
            return whole(out);
        };
        let bytes = text.as_bytes();
        let mut taken = Taken::default();
        // Every occurrence, overlapping ones included, as (rank, start): few in ordinary text, but
        // a long run of spaces against Gemma's 30 space-run tokens gives 30 per byte. Past a bound
        // we keep only which tokens occur and search each of those in the free text instead.
        let mut hits: Vec<(u32, u32)> = Vec::new();
        let mut present = vec![false; automaton.rank.len()];
        let mut overflow = text.len() > u32::MAX as usize;
        for m in automaton.ac.find_overlapping_iter(text) {
            let p = m.pattern().as_usize();
            present[p] = true;
            if !overflow {
                hits.push((automaton.rank[p], m.start() as u32));
                if hits.len() > max_hits {
                    overflow = true;
                    hits = Vec::new();
                }
            }
        }
        if !overflow {
            if hits.is_empty() {
                return whole(out);
            }
            hits.sort_unstable();
            for (rank, start) in hits {
                taken.take(vocab, bytes, self.order[rank as usize], start as usize);
            }
        } else {
            let mut ranks: Vec<u32> = (0..present.len())
                .filter(|&p| present[p])
                .map(|p| automaton.rank[p])
                .collect();
            ranks.sort_unstable();
            let mut gaps = Vec::new();
            for rank in ranks {
                let id = self.order[rank as usize];
                let finder = memchr::memmem::Finder::new(vocab.bytes(id));
                taken.gaps(bytes.len(), &mut gaps);
                for gap in &gaps {
                    // llama.cpp's scan of one fragment: left to right, resuming after each match
                    // (and the whitespace it stripped).
                    let mut pos = gap.start;
                    while let Some(at) = finder.find(&bytes[pos..gap.end]) {
                        pos = match taken.take(vocab, bytes, id, pos + at) {
                            Some(end) => end,
                            None => pos + at + 1,
                        };
                    }
                }
            }
        }

        let mut cursor = 0;
        for (&start, &(end, token)) in &taken.0 {
            if start > cursor {
                out.push(Fragment::Text(cursor..start));
            }
            if let Some(id) = token {
                out.push(Fragment::Token(id));
            }
            cursor = end;
        }
        if cursor < text.len() {
            out.push(Fragment::Text(cursor..text.len()));
        }
    }
}

/// Occurrences kept in memory (8 bytes each) before switching to per-token search.
const MAX_HITS: usize = 1 << 21;

/// Consumed byte ranges, `start → (end, token)`; `None` marks whitespace a token stripped.
#[derive(Default)]
struct Taken(BTreeMap<usize, (usize, Option<u32>)>);

impl Taken {
    /// Takes the occurrence of token `id` at `start` if none of its bytes is consumed yet, with
    /// the whitespace its strip attributes swallow; returns the end of what it consumed.
    fn take(&mut self, vocab: &Vocab, bytes: &[u8], id: u32, start: usize) -> Option<usize> {
        let end = start + vocab.bytes(id).len();
        if !self.is_free(start, end) {
            return None;
        }
        let attrs = vocab.attrs(id);
        if attrs.has(TokenAttrs::LSTRIP) {
            let mut s = start;
            while s > 0 && is_c_space(bytes[s - 1]) && self.is_free(s - 1, s) {
                s -= 1;
            }
            self.insert(s, start, None);
        }
        self.insert(start, end, Some(id));
        let mut e = end;
        if attrs.has(TokenAttrs::RSTRIP) {
            while e < bytes.len() && is_c_space(bytes[e]) && self.is_free(e, e + 1) {
                e += 1;
            }
            self.insert(end, e, None);
        }
        Some(e)
    }

    /// The unconsumed ranges of a text of `len` bytes.
    fn gaps(&self, len: usize, out: &mut Vec<Range<usize>>) {
        out.clear();
        let mut cursor = 0;
        for (&start, &(end, _)) in &self.0 {
            if start > cursor {
                out.push(cursor..start);
            }
            cursor = end;
        }
        if cursor < len {
            out.push(cursor..len);
        }
    }

    fn is_free(&self, start: usize, end: usize) -> bool {
        // Ranges are disjoint, so only the last one starting before `end` can reach into [start, end).
        match self.0.range(..end).next_back() {
            Some((_, &(e, _))) => e <= start,
            None => true,
        }
    }

    fn insert(&mut self, start: usize, end: usize, token: Option<u32>) {
        if start < end {
            self.0.insert(start, (end, token));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::TokenType;

    fn vocab(tokens: &[(&str, TokenType)]) -> Vocab {
        let texts: Vec<String> = tokens.iter().map(|t| t.0.to_string()).collect();
        let types: Vec<TokenType> = tokens.iter().map(|t| t.1).collect();
        Vocab::new(&texts, None, Some(&types)).unwrap()
    }

    /// Partitions with both strategies (collected occurrences, per-token search) and checks
    /// that they agree.
    fn parts(v: &Vocab, text: &str, parse_special: bool) -> Vec<String> {
        let m = SpecialMatcher::new(v);
        let run = |max_hits| {
            let mut out = Vec::new();
            m.partition_limited(v, text, parse_special, max_hits, &mut out);
            out
        };
        let fragments = run(MAX_HITS);
        assert_eq!(fragments, run(0), "{text:?}");
        fragments
            .into_iter()
            .map(|f| match f {
                Fragment::Text(r) => format!("'{}'", &text[r]),
                Fragment::Token(id) => format!("<{id}>"),
            })
            .collect()
    }

    #[test]
    fn longest_token_first_then_left_to_right() {
        use TokenType::*;
        let v = vocab(&[
            ("a", Normal),
            ("  ", UserDefined),
            ("   ", UserDefined),
            ("<c>", Control),
        ]);
        // Five spaces: the three-space token wins first, then the two-space one.
        assert_eq!(parts(&v, "x     y", false), ["'x'", "<2>", "<1>", "'y'"]);
        // Four spaces: llama.cpp takes the longer token first, leaving one space.
        assert_eq!(parts(&v, "x    y", false), ["'x'", "<2>", "' y'"]);
        assert_eq!(parts(&v, "<c>a", false), ["'<c>a'"]);
        assert_eq!(parts(&v, "<c>a<c>", true), ["<3>", "'a'", "<3>"]);
    }

    #[test]
    fn both_strategies_agree_on_whitespace_runs() {
        use TokenType::*;
        let mut tokens = vec![("a", Normal), ("\n", UserDefined), ("\n\n", UserDefined)];
        let runs: Vec<String> = (2..8).map(|n| " ".repeat(n)).collect();
        tokens.extend(runs.iter().map(|r| (r.as_str(), UserDefined)));
        let v = vocab(&tokens);
        for n in 0..40 {
            let text = format!("a{}a\n\n\n{}", " ".repeat(n), " ".repeat(n / 3));
            parts(&v, &text, false);
        }
    }

    #[test]
    fn strip_attributes_consume_whitespace() {
        use TokenType::*;
        let mut v = vocab(&[("a", Normal), ("<r>", UserDefined), ("<l>", UserDefined)]);
        v.attrs[1].0 |= TokenAttrs::RSTRIP;
        v.attrs[2].0 |= TokenAttrs::LSTRIP;
        assert_eq!(parts(&v, "x <r>  y", false), ["'x '", "<1>", "'y'"]);
        assert_eq!(parts(&v, "x  <l> y", false), ["'x'", "<2>", "' y'"]);
        assert_eq!(parts(&v, "<r> <r>", false), ["<1>", "<1>"]);
    }
}
