//! Code point classes as llama.cpp sees them, and GPT-2's byte-level alphabet.
//!
//! llama.cpp classifies code points with its own tables (`unicode-data.cpp`, one Unicode version)
//! rather than the host's; BPE pre-tokenizers split on these classes, so we carry the same tables
//! (`unicode_data.rs`, generated) instead of using a regex engine's `\p{L}`.

use std::sync::OnceLock;

use crate::unicode_data::{CATEGORY_RANGES, WHITESPACE};

/// Flags of one code point (llama.cpp `unicode_cpt_flags`): one category bit plus `WHITESPACE`.
/// `CpFlags::NONE` stands for "past the end of the text", which matches no class at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpFlags(u16);

impl CpFlags {
    pub const NONE: CpFlags = CpFlags(0);
    pub const UNDEFINED: u16 = 0x0001;
    pub const NUMBER: u16 = 0x0002;
    pub const LETTER: u16 = 0x0004;
    #[cfg(test)]
    pub const SEPARATOR: u16 = 0x0008;
    pub const ACCENT_MARK: u16 = 0x0010;
    pub const PUNCTUATION: u16 = 0x0020;
    pub const SYMBOL: u16 = 0x0040;
    #[cfg(test)]
    pub const CONTROL: u16 = 0x0080;
    pub const WHITESPACE: u16 = 0x0100;

    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub fn is_accent_mark(self) -> bool {
        self.0 & Self::ACCENT_MARK != 0
    }
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    /// Any flag at all; false only for [`CpFlags::NONE`] (every real code point has a category).
    pub fn any(self) -> bool {
        self.0 != 0
    }
    /// The category bits without `WHITESPACE`.
    pub fn category(self) -> u16 {
        self.0 & 0x00FF
    }
}

fn category_of(cp: u32) -> u16 {
    // The last range starts at 0x110000, so the search always lands on a real range for cp < 0x110000.
    let i = CATEGORY_RANGES.partition_point(|&(start, _)| start <= cp);
    match i {
        0 => CpFlags::UNDEFINED,
        i => CATEGORY_RANGES[i - 1].1 as u16,
    }
}

/// The Basic Multilingual Plane, looked up directly (most text never leaves it).
fn bmp_table() -> &'static [CpFlags] {
    static TABLE: OnceLock<Vec<CpFlags>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Vec::with_capacity(0x10000);
        let mut r = 0;
        for cp in 0..0x10000u32 {
            while CATEGORY_RANGES[r + 1].0 <= cp {
                r += 1;
            }
            table.push(CpFlags(CATEGORY_RANGES[r].1 as u16));
        }
        for &cp in &WHITESPACE {
            table[cp as usize].0 |= CpFlags::WHITESPACE;
        }
        table
    })
}

pub(crate) fn flags(cp: u32) -> CpFlags {
    if cp < 0x10000 {
        bmp_table()[cp as usize]
    } else if cp < 0x110000 {
        // No whitespace lives outside the BMP.
        CpFlags(category_of(cp))
    } else {
        CpFlags(CpFlags::UNDEFINED)
    }
}

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 bytes
/// are moved to U+0100.. in byte order, so every byte becomes a visible character.
const fn byte_is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

const BYTE_TO_CHAR: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0;
    while b < 256 {
        table[b] = if byte_is_printable(b as u8) {
            b as u8 as char
        } else {
            let c = match char::from_u32(256 + n) {
                Some(c) => c,
                None => panic!("unreachable"),
            };
            n += 1;
            c
        };
        b += 1;
    }
    table
};

pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The inverse of [`byte_to_char`]; `None` for characters outside GPT-2's 256-character alphabet.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 256 && byte_is_printable(cp as u8) {
        return Some(cp as u8);
    }
    let n = cp.checked_sub(256)? as usize;
    SHIFTED_BYTES.get(n).copied()
}

/// The 68 non-printable bytes in order: U+0100 + n stands for `SHIFTED_BYTES[n]`.
const SHIFTED_BYTES: [u8; 68] = {
    let mut table = [0u8; 68];
    let mut n = 0;
    let mut b = 0;
    while b < 256 {
        if !byte_is_printable(b as u8) {
            table[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    table
};

/// `isspace` in the C locale, which llama.cpp uses when it strips around special tokens.
pub(crate) fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_llama_cpp_tables() {
        assert!(flags('a' as u32).is_letter());
        assert!(flags('7' as u32).is_number());
        assert!(flags(' ' as u32).is_whitespace());
        assert_eq!(flags(' ' as u32).category(), CpFlags::SEPARATOR);
        assert!(flags('\n' as u32).is_whitespace());
        assert_eq!(flags('\n' as u32).category(), CpFlags::CONTROL);
        assert!(flags(0x3000).is_whitespace());
        assert!(flags(0x0301).is_accent_mark()); // combining acute
        assert!(flags(0x1F600).any()); // emoji: a symbol
        assert_eq!(flags(0x1F600).category(), CpFlags::SYMBOL);
        assert!(flags(0x20000).is_letter()); // CJK extension B
        assert!(!flags(0x200B).is_whitespace()); // zero width space is not \s
        assert_eq!(flags(0x10FFFF).category(), CpFlags::UNDEFINED);
        assert!(!CpFlags::NONE.any());
    }

    #[test]
    fn gpt2_byte_alphabet_round_trips() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0xAD), '\u{143}');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
        assert_eq!(char_to_byte(' '), None);
    }
}
