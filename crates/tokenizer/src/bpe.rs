//! Byte-level BPE as llama.cpp does it (`llm_tokenizer_bpe_session`): each pre-tokenized word
//! (already mapped to GPT-2's byte alphabet) starts as one symbol per character; the adjacent pair
//! with the lowest merge rank is merged (ties: leftmost first) until no pair has a rank.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::vocab::{TextIndex, Vocab, hash_bytes};

/// `tokenizer.ggml.merges`: "left right" strings, rank = position in the list.
pub(crate) struct MergeTable {
    /// Every merge as `left` 0xFF `right` (0xFF never occurs in UTF-8, so the split is unambiguous).
    keys: Vec<u8>,
    offsets: Vec<u32>,
    index: TextIndex,
}

const SEP: u8 = 0xFF;

impl MergeTable {
    pub fn new(merges: &[String]) -> MergeTable {
        let mut table = MergeTable {
            keys: Vec::with_capacity(merges.iter().map(|m| m.len() + 1).sum()),
            offsets: Vec::with_capacity(merges.len() + 1),
            index: TextIndex::with_capacity(merges.len()),
        };
        table.offsets.push(0);
        for (rank, merge) in merges.iter().enumerate() {
            // As llama.cpp: split at the first space after the first byte; a merge without one
            // becomes the pair ("", ""), which never matches.
            let space = merge.bytes().skip(1).position(|b| b == b' ');
            let (left, right) = match space {
                Some(p) => (&merge[..p + 1], &merge[p + 2..]),
                None => ("", ""),
            };
            table.keys.extend_from_slice(left.as_bytes());
            table.keys.push(SEP);
            table.keys.extend_from_slice(right.as_bytes());
            table.offsets.push(table.keys.len() as u32);
            let rank = rank as u32;
            let key = table.key(rank);
            let hash = hash_bytes(key);
            // A repeated pair keeps its first (lowest) rank, like `unordered_map::emplace`.
            if table.index.find(hash, key, |r| table.key(r)).is_none() {
                table.index.insert(hash, rank);
            }
        }
        table
    }

    fn key(&self, rank: u32) -> &[u8] {
        &self.keys[self.offsets[rank as usize] as usize..self.offsets[rank as usize + 1] as usize]
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn rank(&self, left: &[u8], right: &[u8], key: &mut Vec<u8>) -> Option<u32> {
        key.clear();
        key.extend_from_slice(left);
        key.push(SEP);
        key.extend_from_slice(right);
        self.index.find(hash_bytes(key), key, |r| self.key(r))
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: i32,
    next: i32,
}

struct Bigram {
    rank: u32,
    left: i32,
    right: i32,
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
    /// Max-heap order: lowest rank first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.left.cmp(&self.left))
    }
}

#[derive(Default)]
pub(crate) struct BpeScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
    key: Vec<u8>,
}

/// Encodes one byte-encoded word, appending ids to `out`.
pub(crate) fn encode_word(
    vocab: &Vocab,
    merges: &MergeTable,
    ignore_merges: bool,
    word: &str,
    scratch: &mut BpeScratch,
    out: &mut Vec<u32>,
) {
    let bytes = word.as_bytes();
    if bytes.is_empty() {
        return;
    }
    // Llama-3 style vocabularies take a whole word that is a token as is, merges or not.
    if ignore_merges && let Some(id) = vocab.find_text_token(bytes) {
        out.push(id);
        return;
    }
    let BpeScratch {
        symbols,
        queue,
        key,
    } = scratch;
    symbols.clear();
    queue.clear();
    for (i, (start, c)) in word.char_indices().enumerate() {
        let end = start + c.len_utf8();
        symbols.push(Symbol {
            start: start as u32,
            len: c.len_utf8() as u32,
            prev: i as i32 - 1,
            next: if end == bytes.len() { -1 } else { i as i32 + 1 },
        });
    }

    let mut try_add =
        |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: i32, right: i32| {
            if left < 0 || right < 0 {
                return;
            }
            let (l, r) = (symbols[left as usize], symbols[right as usize]);
            let lt = &bytes[l.start as usize..(l.start + l.len) as usize];
            let rt = &bytes[r.start as usize..(r.start + r.len) as usize];
            if let Some(rank) = merges.rank(lt, rt, key) {
                queue.push(Bigram {
                    rank,
                    left,
                    right,
                    size: l.len + r.len,
                });
            }
        };

    for i in 1..symbols.len() as i32 {
        try_add(symbols, queue, i - 1, i);
    }
    while let Some(bigram) = queue.pop() {
        let (l, r) = (bigram.left as usize, bigram.right as usize);
        // Symbols keep their start, so equal lengths mean equal texts (llama.cpp compares texts).
        if symbols[l].len == 0
            || symbols[r].len == 0
            || symbols[l].len + symbols[r].len != bigram.size
        {
            continue;
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

    for s in symbols.iter().filter(|s| s.len > 0) {
        let piece = &bytes[s.start as usize..(s.start + s.len) as usize];
        match vocab.find_text_token(piece) {
            Some(id) => out.push(id),
            // As llama.cpp: look each byte of the encoded text up as a one-byte token; bytes of
            // multi-byte characters never match, so those are dropped.
            None => out.extend(
                piece
                    .iter()
                    .filter_map(|b| vocab.find_text_token(std::slice::from_ref(b))),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_split_and_duplicates() {
        let merges: Vec<String> = ["a b", "ab c", " x y", "nospace", "a b", "é z"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let t = MergeTable::new(&merges);
        let mut key = Vec::new();
        assert_eq!(t.rank(b"a", b"b", &mut key), Some(0));
        assert_eq!(t.rank(b"ab", b"c", &mut key), Some(1));
        // The split searches from the second byte, so a leading space belongs to the left part.
        assert_eq!(t.rank(b" x", b"y", &mut key), Some(2));
        assert_eq!(t.rank(b"", b"", &mut key), Some(3));
        assert_eq!(t.rank(b"b", b"a", &mut key), None);
        assert_eq!(t.rank("é".as_bytes(), b"z", &mut key), Some(5));
        assert_eq!(t.len(), 6);
    }
}
