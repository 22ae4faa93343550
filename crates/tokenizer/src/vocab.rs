//! The token table: texts, scores, types and attributes, lookup by text, and the special ids.

use crate::error::TokenizerError;

/// A token's type as stored in `tokenizer.ggml.token_type` (llama.cpp `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TokenType {
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    /// Markup such as `<bos>` or `<end_of_turn>`: never produced from plain text.
    Control = 3,
    /// Added tokens such as Gemma's `"\n"` or runs of spaces: matched in text before merging.
    UserDefined = 4,
    Unused = 5,
    /// `<0xNN>`: SentencePiece byte fallback.
    Byte = 6,
}

impl TokenType {
    /// Values outside 0..=6 become `Undefined`, as in llama.cpp.
    pub fn from_i64(v: i64) -> TokenType {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    fn attrs(self) -> TokenAttrs {
        TokenAttrs(match self {
            TokenType::Undefined => 0,
            TokenType::Normal => TokenAttrs::NORMAL,
            TokenType::Unknown => TokenAttrs::UNKNOWN,
            TokenType::Control => TokenAttrs::CONTROL,
            TokenType::UserDefined => TokenAttrs::USER_DEFINED,
            TokenType::Unused => TokenAttrs::UNUSED,
            TokenType::Byte => TokenAttrs::BYTE,
        })
    }
}

/// Effective token attributes (llama.cpp `llama_token_attr`): the type's bit, adjusted by the
/// loader's rules (e.g. `<end_of_turn>` made control, Phi-3 specials strip spaces on the right).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenAttrs(pub u16);

impl TokenAttrs {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const NORMALIZED: u16 = 1 << 6;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
    pub const SINGLE_WORD: u16 = 1 << 9;

    pub fn has(self, bits: u16) -> bool {
        self.0 & bits != 0
    }
    pub fn is_control(self) -> bool {
        self.has(Self::CONTROL)
    }
    pub fn is_user_defined(self) -> bool {
        self.has(Self::USER_DEFINED)
    }
    pub fn is_byte(self) -> bool {
        self.has(Self::BYTE)
    }
    pub fn is_unused(self) -> bool {
        self.has(Self::UNUSED)
    }
}

/// Special token ids. In a [`crate::VocabSpec`] `None` means "not in the metadata" (the loader
/// then applies llama.cpp's per-model default); in a loaded tokenizer it means "this vocabulary
/// has none".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End of turn (`<end_of_turn>`, `<|eot_id|>`, `<|im_end|>`, ...).
    pub eot: Option<u32>,
    /// End of message (`<|eom_id|>`).
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// Token texts in one buffer, with an open-addressing index from text to id.
pub(crate) struct Vocab {
    text: String,
    /// `offsets[id]..offsets[id + 1]` is the token's text.
    offsets: Vec<u32>,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    pub(crate) attrs: Vec<TokenAttrs>,
    index: TextIndex,
}

impl Vocab {
    /// `scores` and `types` may be longer than `tokens` (llama.cpp only requires "not shorter").
    pub fn new(
        tokens: &[String],
        scores: Option<&[f32]>,
        types: Option<&[TokenType]>,
    ) -> Result<Vocab, TokenizerError> {
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if n >= u32::MAX as usize {
            return Err(TokenizerError::Inconsistent(format!(
                "{n} tokens is more than hearth supports"
            )));
        }
        let short = |key: &'static str, len: usize| TokenizerError::TooShort {
            key,
            len,
            n_tokens: n,
        };
        if let Some(s) = scores
            && s.len() < n
        {
            return Err(short(hearth_gguf::keys::TOKENIZER_SCORES, s.len()));
        }
        if let Some(t) = types
            && t.len() < n
        {
            return Err(short(hearth_gguf::keys::TOKENIZER_TOKEN_TYPE, t.len()));
        }

        let mut text = String::with_capacity(tokens.iter().map(|t| t.len()).sum());
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        for (i, t) in tokens.iter().enumerate() {
            if t.is_empty() {
                // llama.cpp renames empty tokens so that every text stays unique and visible.
                text.push_str(&format!("[EMPTY_{i}]"));
            } else {
                text.push_str(t);
            }
            let end = u32::try_from(text.len()).map_err(|_| {
                TokenizerError::Inconsistent("token texts exceed 4 GiB".to_string())
            })?;
            offsets.push(end);
        }
        let types: Vec<TokenType> = match types {
            Some(t) => t[..n].to_vec(),
            // Without types every token is normal (llama.cpp's default attribute).
            None => vec![TokenType::Normal; n],
        };
        let mut vocab = Vocab {
            attrs: types.iter().map(|t| t.attrs()).collect(),
            scores: scores.map_or_else(|| vec![0.0; n], |s| s[..n].to_vec()),
            types,
            text,
            offsets,
            index: TextIndex::with_capacity(n),
        };
        for id in 0..n as u32 {
            let bytes = vocab.bytes(id);
            let hash = hash_bytes(bytes);
            if let Some(first) = vocab.index.find(hash, bytes, |i| vocab.bytes(i)) {
                return Err(TokenizerError::DuplicateToken {
                    text: vocab.text(id).to_string(),
                    first,
                    second: id,
                });
            }
            vocab.index.insert(hash, id);
        }
        Ok(vocab)
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn text(&self, id: u32) -> &str {
        &self.text[self.offsets[id as usize] as usize..self.offsets[id as usize + 1] as usize]
    }

    pub fn bytes(&self, id: u32) -> &[u8] {
        self.text(id).as_bytes()
    }

    pub fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }

    pub fn token_type(&self, id: u32) -> TokenType {
        self.types[id as usize]
    }

    pub fn attrs(&self, id: u32) -> TokenAttrs {
        self.attrs[id as usize]
    }

    /// Any token with exactly this text.
    pub fn find(&self, bytes: &[u8]) -> Option<u32> {
        self.index.find(hash_bytes(bytes), bytes, |i| self.bytes(i))
    }

    /// A token that plain text may become: control and unknown tokens are excluded, so that user
    /// text never turns into markup through merging. (In every vocabulary we test no control token
    /// can even be reached by merging; llama.cpp itself does not check.)
    pub fn find_text_token(&self, bytes: &[u8]) -> Option<u32> {
        self.find(bytes).filter(|&id| {
            !self
                .attrs(id)
                .has(TokenAttrs::CONTROL | TokenAttrs::UNKNOWN)
        })
    }
}

/// FxHash-style multiplicative hash over 8-byte words: fast, and good enough for token texts.
/// (Text from users is only looked up, never inserted, so collisions cannot grow the table.)
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
    }
    // Mix the high bits down: the table indexes with the low bits.
    h ^ (h >> 29)
}

/// Open addressing with linear probing; stores ids, the caller resolves an id to its key.
pub(crate) struct TextIndex {
    /// `(hash, id)`; `id == u32::MAX` marks an empty slot.
    slots: Vec<(u32, u32)>,
    mask: usize,
}

impl TextIndex {
    pub fn with_capacity(n: usize) -> TextIndex {
        // Load factor at most 1/2 keeps probe sequences short.
        let size = (n * 2).next_power_of_two().max(16);
        TextIndex {
            slots: vec![(0, u32::MAX); size],
            mask: size - 1,
        }
    }

    pub fn insert(&mut self, hash: u64, id: u32) {
        let mut i = hash as usize & self.mask;
        while self.slots[i].1 != u32::MAX {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = ((hash >> 32) as u32, id);
    }

    pub fn find<'a>(&self, hash: u64, key: &[u8], key_of: impl Fn(u32) -> &'a [u8]) -> Option<u32> {
        let tag = (hash >> 32) as u32;
        let mut i = hash as usize & self.mask;
        loop {
            let (t, id) = self.slots[i];
            if id == u32::MAX {
                return None;
            }
            if t == tag && key_of(id) == key {
                return Some(id);
            }
            i = (i + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lookup_and_empty_tokens() {
        let v = Vocab::new(&strings(&["a", "", "bc", "<s>"]), None, None).unwrap();
        assert_eq!(v.find(b"a"), Some(0));
        assert_eq!(v.find(b"bc"), Some(2));
        assert_eq!(v.find(b"b"), None);
        assert_eq!(v.text(1), "[EMPTY_1]");
        assert_eq!(v.token_type(3), TokenType::Normal);
    }

    #[test]
    fn duplicate_text_is_an_error() {
        let e = Vocab::new(&strings(&["a", "b", "a"]), None, None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("ids 0 and 2"), "{e}");
    }

    #[test]
    fn control_tokens_are_not_text_tokens() {
        let types = [
            TokenType::Normal,
            TokenType::Control,
            TokenType::UserDefined,
        ];
        let v = Vocab::new(&strings(&["a", "<x>", "\n"]), None, Some(&types)).unwrap();
        assert_eq!(v.find(b"<x>"), Some(1));
        assert_eq!(v.find_text_token(b"<x>"), None);
        assert_eq!(v.find_text_token(b"\n"), Some(2));
    }
}
