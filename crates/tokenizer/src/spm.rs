//! SentencePiece-style encoding as llama.cpp does it (`llm_tokenizer_spm_session`): start from
//! one symbol per UTF-8 character, repeatedly merge the adjacent pair whose concatenation is the
//! highest-scoring token (ties: leftmost first), then fall back to `<0xNN>` byte tokens for any
//! symbol that is not a token.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::vocab::Vocab;

#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    /// Bytes; 0 once merged into its left neighbour.
    len: u32,
    prev: i32,
    next: i32,
}

struct Bigram {
    score: f32,
    left: i32,
    right: i32,
    /// Combined length when queued; a mismatch later means one side has changed since.
    size: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Reusable buffers, so that encoding many fragments does not allocate each time.
#[derive(Default)]
pub(crate) struct SpmScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
}

/// Encodes `text` (already escaped: spaces are `▁`), appending ids to `out`.
/// `byte_tokens[b]` is the token for byte `b` (`<0xNN>`), if the vocabulary has one.
pub(crate) fn encode(
    vocab: &Vocab,
    byte_tokens: &[Option<u32>; 256],
    text: &str,
    scratch: &mut SpmScratch,
    out: &mut Vec<u32>,
) {
    let bytes = text.as_bytes();
    let symbols = &mut scratch.symbols;
    let queue = &mut scratch.queue;
    symbols.clear();
    queue.clear();
    for (i, (start, c)) in text.char_indices().enumerate() {
        let end = start + c.len_utf8();
        symbols.push(Symbol {
            start: start as u32,
            len: c.len_utf8() as u32,
            prev: i as i32 - 1,
            next: if end == bytes.len() { -1 } else { i as i32 + 1 },
        });
    }
    if symbols.is_empty() {
        return;
    }

    let try_add = |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: i32, right: i32| {
        if left < 0 || right < 0 {
            return;
        }
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        let size = l.len + r.len;
        let piece = &bytes[l.start as usize..(l.start + size) as usize];
        if let Some(id) = vocab.find_text_token(piece) {
            queue.push(Bigram {
                score: vocab.score(id),
                left,
                right,
                size,
            });
        }
    };

    for i in 1..symbols.len() as i32 {
        try_add(symbols, queue, i - 1, i);
    }

    while let Some(bigram) = queue.pop() {
        let (l, r) = (bigram.left as usize, bigram.right as usize);
        if symbols[l].len == 0
            || symbols[r].len == 0
            || symbols[l].len + symbols[r].len != bigram.size
        {
            continue; // stale: one side was merged since this pair was queued
        }
        symbols[l].len += symbols[r].len;
        symbols[r].len = 0;
        symbols[l].next = symbols[r].next;
        let next = symbols[r].next;
        if next >= 0 {
            symbols[next as usize].prev = bigram.left;
        }
        try_add(symbols, queue, symbols[l].prev, bigram.left);
        try_add(symbols, queue, bigram.left, symbols[l].next);
    }

    // Every merged symbol is a token by construction; a lone character may not be, and then its
    // bytes are emitted. (llama.cpp's `rev_merge` re-segmentation can only apply to merged
    // symbols, so it never triggers and is not needed here.)
    let mut i = 0i32;
    while i != -1 {
        let s = symbols[i as usize];
        let piece = &bytes[s.start as usize..(s.start + s.len) as usize];
        match vocab.find_text_token(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.iter().filter_map(|&b| byte_tokens[b as usize])),
        }
        i = s.next;
    }
}
