//! Encodes texts and prints ids the way `tools/difftok.cpp` prints llama.cpp's, for differential
//! testing (see `tools/README.md`).
//!
//!     cargo run -p hearth-tokenizer --example dump_ids -- MODEL.gguf TEXTS OUT
//!
//! TEXTS holds texts separated by "\x01SEP\x01\n". For each text OUT gets four lines
//! `<add_special><parse_special>: ids...` and one line `D:<hex>` with the detokenized ids of
//! (add_special = 0, parse_special = 1), rendered with special tokens.

use std::fmt::Write;

use hearth_tokenizer::{DecodeOptions, Tokenizer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, texts, out] = args.as_slice() else {
        eprintln!("usage: dump_ids MODEL.gguf TEXTS OUT");
        std::process::exit(2);
    };
    let tok = Tokenizer::from_gguf_file(model).unwrap_or_else(|e| panic!("{model}: {e}"));
    let texts = std::fs::read_to_string(texts).unwrap_or_else(|e| panic!("{texts}: {e}"));
    let mut s = String::new();
    if !texts.is_empty() {
        for text in texts.split("\x01SEP\x01\n") {
            for (a, p) in [(false, false), (false, true), (true, false), (true, true)] {
                write!(s, "{}{}:", a as u8, p as u8).unwrap();
                for id in tok.encode(text, a, p) {
                    write!(s, " {id}").unwrap();
                }
                s.push('\n');
            }
            let ids = tok.encode(text, false, true);
            let opts = DecodeOptions {
                remove_special: false,
                unparse_special: true,
            };
            s.push_str("D:");
            for b in tok.decode_with(&ids, opts) {
                write!(s, "{b:02x}").unwrap();
            }
            s.push('\n');
        }
    }
    std::fs::write(out, s).unwrap_or_else(|e| panic!("{out}: {e}"));
}
