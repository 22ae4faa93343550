//! Token pieces back to bytes: llama.cpp's byte-level decoding and its `clean_spaces` passes.

use crate::unicode;

/// `<0xNN>` → NN, parsed like llama.cpp's `strtol(text.substr(3, 2), 16)` (junk reads as 0).
pub(crate) fn byte_of_byte_token(text: &str) -> u8 {
    let digits = text.get(3..5).unwrap_or("");
    let mut v = 0u8;
    for c in digits.chars() {
        match c.to_digit(16) {
            Some(d) => v = v * 16 + d as u8,
            None => break,
        }
    }
    v
}

/// GPT-2 byte-level text back to bytes (llama.cpp `llama_decode_text`, including its odd
/// rendering of characters outside the byte alphabet).
pub(crate) fn decode_byte_level(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// llama.cpp's `clean_spaces` passes over detokenized text, ported literally (they work in place
/// and read bytes they have already rewritten, which matters for inputs such as " ' ' ").
pub(crate) fn clean_up_spaces(text: &mut Vec<u8>) {
    // " ?", " !", " .", " ," lose the space.
    let total1 = text.len();
    let mut total = total1.min(1);
    for i in 1..total1 {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    // " ' " becomes "'".
    let total2 = total;
    total = total2.min(1);
    let mut i = 1;
    while i < total2 {
        let x = text[i];
        if x == b'\'' && i + 1 < total2 && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    // " 's", " 'm", " 're", " 've" lose the space.
    let total3 = total;
    total = total3.min(1);
    for i in 1..total3 {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < total3 {
            let x1 = text[i + 1];
            if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if x1 != b't' && x1 != b'd' && i + 2 < total3 {
                let x2 = text[i + 2];
                if (x1 == b'r' || x1 == b'v') && x2 == b'e' {
                    total -= 1;
                }
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        clean_up_spaces(&mut v);
        String::from_utf8(v).unwrap()
    }

    /// Expected values are llama.cpp's `llama_detokenize` output on the GPT-2 vocabulary.
    #[test]
    fn clean_spaces_matches_llama_cpp() {
        assert_eq!(clean("a ' ' b"), "a'' b");
        assert_eq!(clean("x ' 's y"), "x''s y");
        assert_eq!(clean(" ' , . ! ?"), " ',.!?");
        assert_eq!(
            clean("it 's he 'll we 're 'd 't 'm ' x"),
            "it's he 'll we're 'd 't'm'x"
        );
        assert_eq!(clean(""), "");
    }

    #[test]
    fn byte_tokens_and_byte_level_text() {
        assert_eq!(byte_of_byte_token("<0x0A>"), 0x0A);
        assert_eq!(byte_of_byte_token("<0xfF>"), 0xFF);
        assert_eq!(byte_of_byte_token("<0xZ1>"), 0);
        let mut out = Vec::new();
        decode_byte_level("ĠhiĊ", &mut out);
        assert_eq!(out, b" hi\n");
        out.clear();
        decode_byte_level("a€", &mut out);
        assert_eq!(out, b"a[UNK_BYTE_0xe282aca\xe2\x82\xac]");
    }
}
