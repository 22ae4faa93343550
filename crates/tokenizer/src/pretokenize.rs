//! BPE pre-tokenizers: the word splitting that `tokenizer.ggml.pre` selects, as llama.cpp does it.
//!
//! llama.cpp applies a list of regexes in turn, each one splitting the pieces the previous one
//! left (matches and the gaps between them both become pieces). The common regexes (GPT-2,
//! Llama 3, Qwen 2, Qwen 3.5) run as hand-written splitters there, and their quirks are the
//! reference, so they are ported here one to one. Every other regex runs through `std::regex` on a
//! "collapsed" text in which each non-ASCII code point is replaced by a stand-in for its class
//! (letter, number, ...; see `unicode_regex_split`). We emulate that with `fancy-regex` on the same
//! collapsed text, so `\p{L}` means llama.cpp's table, not the regex engine's.

use std::ops::Range;

use crate::error::TokenizerError;
use crate::unicode::{CpFlags, flags};

/// One splitting step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Stage {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3,
    /// Llama 3 with single digits: `\p{N}` instead of `\p{N}{1,3}`.
    Qwen2,
    /// Qwen 2 where letter runs also take combining marks (`[\p{L}\p{M}]+`).
    Qwen35,
    /// `[^\n]+|[\n]+`
    Newlines,
    /// Digit runs cut into groups of three from the right (AFMoE, Tiny Aya).
    DigitGroups,
    /// Any other regex, in llama.cpp's (ECMAScript) syntax.
    Regex(&'static str),
}

/// What `tokenizer.ggml.pre` selects: the splitting stages and the flags llama.cpp sets with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreConfig {
    pub stages: &'static [Stage],
    /// Detokenizer post-processing (`clean_up_tokenization_spaces`).
    pub clean_spaces: bool,
    /// Take a word that is itself a token without merging (Llama 3 and others).
    pub ignore_merges: bool,
    /// The default for `add_bos` before `tokenizer.ggml.add_bos_token` is read.
    pub add_bos: bool,
    /// The vocabulary has no default BOS token (ChatGLM).
    pub no_default_bos: bool,
}

impl PreConfig {
    const fn new(stages: &'static [Stage]) -> PreConfig {
        PreConfig {
            stages,
            clean_spaces: true,
            ignore_merges: false,
            add_bos: false,
            no_default_bos: false,
        }
    }
    const fn keep_spaces(mut self) -> Self {
        self.clean_spaces = false;
        self
    }
    const fn ignore_merges(mut self) -> Self {
        self.ignore_merges = true;
        self
    }
    const fn add_bos(mut self) -> Self {
        self.add_bos = true;
        self
    }
    const fn no_bos(mut self) -> Self {
        self.no_default_bos = true;
        self
    }
}

use Stage::{DigitGroups, Gpt2, Llama3, Newlines, Qwen2, Qwen35, Regex};

// The regex lists of llama.cpp's `llm_tokenizer_bpe` (literals copied as is: they are the data).
// Non-ASCII characters are written as `\u{..}` escapes: several of them (Greek with tonos, the
// Kelvin and Ohm signs) are not in NFC, and an editor that normalizes would silently change them.
const DEFAULT: &[Stage] = &[
    Regex("[\\p{P}\\$\\+<=>\\^~\\|]+"),
    Gpt2,
    Regex("\\p{N}+"),
    Regex("[0-9][0-9][0-9]"),
];
const LLAMA3: &[Stage] = &[Llama3];
const JAIS2: &[Stage] = &[Regex(
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}",
)];
const DEEPSEEK_LLM: &[Stage] = &[
    Regex("[\r\n]"),
    Regex(
        "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
    ),
    Regex("\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+"),
    Regex("\\s+$"),
    Regex("[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+"),
    Regex("\\p{N}+"),
];
const DEEPSEEK3_LLM: &[Stage] = &[
    Regex("\\p{N}{1,3}"),
    Regex("[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+"),
    Regex(
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    ),
];
const SPARK2_5: &[Stage] = &[
    Regex("\\p{N}{1,3}"),
    Regex("[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+"),
    Regex(
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
    ),
    Regex("\\p{N}"),
];
const YOUTU: &[Stage] = &[
    Regex(
        "[\u{AC00}-\u{D7A3}\u{3131}-\u{318E}]+|[\u{FF01}\u{2026}\u{201C}\u{201D}\u{2018}\u{2019}\u{2014}\u{FF1A}\u{FF1B}\u{FF0C}\u{3001}-\u{303F}\u{FE30}-\u{FE4F}]+|[\u{3105}-\u{312F}]+|[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
    ),
    Regex(
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ),
];
const DEEPSEEK_CODER: &[Stage] = &[
    Regex("[\r\n]"),
    Regex("\\s?\\p{L}+"),
    Regex("\\s?\\p{P}+"),
    Regex("[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+"),
    Regex("\\p{N}"),
];
const FALCON: &[Stage] = &[
    Regex("[\\p{P}\\$\\+<=>\\^~\\|`]+"),
    Gpt2,
    Regex("[0-9][0-9][0-9]"),
];
const STARCODER: &[Stage] = &[Regex("\\p{N}"), Gpt2];
const GPT2: &[Stage] = &[Gpt2];
const QWEN2: &[Stage] = &[Qwen2];
const QWEN35: &[Stage] = &[Qwen35];
const PORO: &[Stage] = &[Regex(
    " ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+",
)];
const VIKING: &[Stage] = &[
    Regex(" ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+"),
    Regex("\\p{N}"),
];
const TEKKEN: &[Stage] = &[Regex(
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
)];
const CHAMELEON: &[Stage] = &[
    Regex("<sentinel:[0-9]+>"),
    Regex("(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z"),
    Regex("([\\t\\n]|    |  )"),
    Regex("\\p{N}"),
    Regex("[\\p{P}!-/:-@\\[-`{-~]"),
    Gpt2,
];
const GPT4O: &[Stage] = &[Regex(
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
)];
const GRANITE_EMB_MULTI: &[Stage] = &[Regex(
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
)];
const TINY_AYA: &[Stage] = &[
    DigitGroups,
    Regex(
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ),
];
const BAILINGMOE: &[Stage] = &[Regex(
    "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
)];
const SEED_CODER: &[Stage] = &[Regex(
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
)];
const UFAKZEKA: &[Stage] = &[Regex(
    "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
)];
const AFMOE: &[Stage] = &[
    DigitGroups,
    Regex(
        "[\u{4E00}-\u{9FFF}\u{3400}-\u{4DBF}\u{8C48}-\u{FAFF}\u{3040}-\u{309F}\u{30A0}-\u{30FF}\u{FF65}-\u{FF9F}\u{2F00}-\u{2FDF}\u{E40}-\u{E7F}\u{E80}-\u{EFF}\u{1780}-\u{17FF}\u{1000}-\u{109F}\u{AA60}-\u{AA7F}\u{A9E0}-\u{A9FF}\u{AC00}-\u{D7AF}\u{1100}-\u{11FF}]+",
    ),
    Regex(
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ),
];
const LAGUNA: &[Stage] = &[Newlines, Qwen2];
const EXAONE_MOE: &[Stage] = &[Regex(
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
)];
const MINICPM5: &[Stage] = &[
    Regex("\\p{N}{1,3}"),
    Regex(
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ),
];

/// Every `tokenizer.ggml.pre` value llama.cpp 0.3.36 knows for `gpt2` vocabularies, mapped to its
/// stages and flags (`llama_vocab::impl::load`). Missing or empty means "default".
pub(crate) fn config(pre: &str) -> Result<PreConfig, TokenizerError> {
    let unsupported = |why| {
        Err(TokenizerError::UnsupportedPre {
            name: pre.to_string(),
            why,
        })
    };
    let c = PreConfig::new;
    Ok(match pre {
        "" | "default" => c(DEFAULT),
        "minicpm5" => c(MINICPM5).ignore_merges(),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => c(LLAMA3).ignore_merges().add_bos(),
        "deepseek-llm" => c(DEEPSEEK_LLM).keep_spaces(),
        "deepseek-coder" => c(DEEPSEEK_CODER).keep_spaces(),
        "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => c(DEEPSEEK3_LLM).keep_spaces(),
        "spark2_5" => c(SPARK2_5).keep_spaces(),
        "youtu" => c(YOUTU).keep_spaces().ignore_merges(),
        "falcon" => c(FALCON),
        "mpt" | "olmo" | "jais" => c(GPT2),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => c(STARCODER),
        "command-r" | "smollm" => c(STARCODER).keep_spaces(),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4" => c(GPT2),
        // These also add a separator token, which only matters to BERT-style (WPM) encoders.
        "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => c(GPT2),
        "trillion" | "granite-docling" => c(GPT2).keep_spaces(),
        "jais-2" => c(JAIS2),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "grok-2" | "hunyuan"
        | "solar-open" => c(QWEN2).keep_spaces(),
        "stablelm2" | "megrez" => c(QWEN2),
        "qwen35" => c(QWEN35).keep_spaces(),
        "dbrx" | "smaug-bpe" => c(LLAMA3),
        "poro-chat" => c(PORO).keep_spaces(),
        "bloom" | "gpt3-finnish" => c(PORO),
        "chatglm-bpe" => c(LLAMA3).no_bos(),
        "glm4" | "glm5" => c(LLAMA3).no_bos().ignore_merges(),
        "viking" => c(VIKING).keep_spaces(),
        "tekken" => c(TEKKEN).keep_spaces().ignore_merges().add_bos(),
        "chameleon" => c(CHAMELEON).keep_spaces().add_bos(),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => c(GPT4O).keep_spaces(),
        "granite-embed-multi-97m" => c(GRANITE_EMB_MULTI).keep_spaces().ignore_merges(),
        "tiny_aya" | "cohere2moe" => c(TINY_AYA).keep_spaces(),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => c(BAILINGMOE).keep_spaces(),
        "seed-coder" => c(SEED_CODER).keep_spaces(),
        "ufakzeka" => c(UFAKZEKA).keep_spaces(),
        "afmoe" => c(AFMOE).keep_spaces(),
        "laguna" => c(LAGUNA).keep_spaces(),
        "exaone-moe" => c(EXAONE_MOE),
        "kimi-k2" => return unsupported("Kimi-K2's tiktoken-style splitter is not implemented"),
        "superbpe" => {
            return unsupported("its empty-match regex needs std::regex iterator semantics");
        }
        "gemma4" | "granite-embed-multi-311m" | "sarvam-moe" => {
            return unsupported("SentencePiece-style BPE without byte encoding is not implemented");
        }
        "whitespace" => return unsupported("the whitespace pre-tokenizer is not implemented"),
        _ => return Err(TokenizerError::UnknownPre(pre.to_string())),
    })
}

/// The compiled stages of one pre-tokenizer.
pub(crate) struct PreTokenizer {
    stages: Vec<Compiled>,
}

enum Compiled {
    Custom(Stage),
    Regex {
        re: fancy_regex::Regex,
        /// Match against the collapsed text (the regex uses `\p{..}` classes); otherwise against
        /// the code points with non-ASCII whitespace replaced by U+000B, as llama.cpp's wregex path.
        collapsed: bool,
    },
}

/// llama.cpp's `\p{..}` classes and what they become in the collapsed text: the stand-in code
/// point for non-ASCII members plus the ASCII members (`k_ucat_cpt`, `k_ucat_map`).
/// All letter subclasses collapse to "letter", exactly as there.
const CLASSES: &[(&str, &str)] = &[
    ("\\p{N}", "\\x{E0D1}\\x30-\\x39"),
    ("\\p{L}", "\\x{E0D2}\\x41-\\x5A\\x61-\\x7A"),
    (
        "\\p{P}",
        "\\x{E0D3}\\x21-\\x23\\x25-\\x2A\\x2C-\\x2F\\x3A-\\x3B\\x3F-\\x40\\x5B-\\x5D\\x5F\\x7B\\x7D",
    ),
    ("\\p{M}", "\\x{E0D4}"),
    (
        "\\p{S}",
        "\\x{E0D5}\\x24\\x2B\\x3C-\\x3E\\x5E\\x60\\x7C\\x7E",
    ),
    ("\\p{Lu}", "\\x{E0D2}\\x41-\\x5A\\x61-\\x7A"),
    ("\\p{Ll}", "\\x{E0D2}\\x41-\\x5A\\x61-\\x7A"),
    ("\\p{Lt}", "\\x{E0D2}\\x41-\\x5A\\x61-\\x7A"),
    ("\\p{Lm}", "\\x{E0D2}\\x41-\\x5A\\x61-\\x7A"),
    ("\\p{Lo}", "\\x{E0D2}\\x41-\\x5A\\x61-\\x7A"),
];

/// ECMAScript `\s` in the C locale (non-ASCII whitespace was already replaced by U+000B).
const SPACE_CLASS: &str = "\\t\\n\\x0B\\x0C\\r\\x20";

/// Rewrites a llama.cpp regex into fancy-regex syntax with the same meaning on the collapsed (or
/// whitespace-folded) text. Returns the pattern and whether it needs the collapsed text.
fn translate(pattern: &str) -> Result<(String, bool), String> {
    let collapsed = CLASSES.iter().any(|(name, _)| pattern.contains(name));
    if collapsed && !pattern.is_ascii() {
        // llama.cpp refuses this combination too.
        return Err("mixes \\p{..} classes and non-ASCII characters".to_string());
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut inside = false;
    let mut i = 0;
    let class = |out: &mut String, inside: bool, body: &str| {
        if inside {
            out.push_str(body);
        } else {
            out.push('[');
            out.push_str(body);
            out.push(']');
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '[' if !inside => {
                inside = true;
                out.push('[');
                // A leading `]` or `^]` would be literal in ECMAScript; none of the tables has one.
            }
            ']' if inside => {
                inside = false;
                out.push(']');
            }
            '.' if !inside => out.push_str("[^\\n\\r]"),
            '\\' => {
                let Some(&n) = chars.get(i + 1) else {
                    return Err("ends with a backslash".to_string());
                };
                match n {
                    'p' => {
                        let rest: String = chars[i..].iter().collect();
                        let Some((name, body)) =
                            CLASSES.iter().find(|(name, _)| rest.starts_with(name))
                        else {
                            return Err(format!("unknown class in {rest:.12}"));
                        };
                        class(&mut out, inside, body);
                        i += name.chars().count();
                        continue;
                    }
                    's' => class(&mut out, inside, SPACE_CLASS),
                    'd' => class(&mut out, inside, "0-9"),
                    'S' | 'D' if !inside => {
                        out.push_str("[^");
                        out.push_str(if n == 'S' { SPACE_CLASS } else { "0-9" });
                        out.push(']');
                    }
                    'S' | 'D' | 'w' | 'W' | 'b' | 'B' => {
                        return Err(format!("escape \\{n} is not supported here"));
                    }
                    _ => {
                        out.push('\\');
                        out.push(n);
                    }
                }
                i += 2;
                continue;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    Ok((out, collapsed))
}

fn compile(pattern: &str) -> Result<Compiled, String> {
    let (translated, collapsed) = translate(pattern)?;
    let re = fancy_regex::RegexBuilder::new(&translated)
        .backtrack_limit(100_000_000)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Compiled::Regex { re, collapsed })
}

impl PreTokenizer {
    pub fn new(name: &str, stages: &[Stage]) -> Result<PreTokenizer, TokenizerError> {
        let stages = stages
            .iter()
            .map(|&s| match s {
                Regex(p) => compile(p).map_err(|e| {
                    TokenizerError::Inconsistent(format!(
                        "pre-tokenizer {name:?}: regex {p:?}: {e}"
                    ))
                }),
                custom => Ok(Compiled::Custom(custom)),
            })
            .collect::<Result<_, _>>()?;
        Ok(PreTokenizer { stages })
    }

    /// Splits `text` into words, appended to `out` as byte ranges (in order, covering the text).
    pub fn split(&self, text: &str, s: &mut SplitScratch, out: &mut Vec<Range<usize>>) {
        s.cps.clear();
        s.flags.clear();
        s.byte_pos.clear();
        for (pos, c) in text.char_indices() {
            s.cps.push(c as u32);
            s.flags.push(flags(c as u32));
            s.byte_pos.push(pos as u32);
        }
        s.byte_pos.push(text.len() as u32);
        s.pieces.clear();
        s.pieces.push(s.cps.len());
        s.repr_kind = Repr::None;

        for stage in &self.stages {
            s.next.clear();
            match stage {
                Compiled::Custom(kind) => {
                    let mut start = 0;
                    for &len in &s.pieces {
                        let t = Text {
                            cps: &s.cps,
                            fl: &s.flags,
                            end: start + len,
                        };
                        match kind {
                            Gpt2 => split_gpt2(&t, start, &mut s.next),
                            Llama3 => split_llama3(&t, start, false, &mut s.next),
                            Qwen2 => split_llama3(&t, start, true, &mut s.next),
                            Qwen35 => split_qwen35(&t, start, &mut s.next),
                            Newlines => split_newlines(&t, start, &mut s.next),
                            DigitGroups => split_digit_groups(&t, start, &mut s.next),
                            Regex(_) => unreachable!("compiled separately"),
                        }
                        start += len;
                    }
                }
                Compiled::Regex { re, collapsed } => {
                    let kind = if *collapsed {
                        Repr::Collapsed
                    } else {
                        Repr::Wide
                    };
                    s.build_repr(kind);
                    let mut start = 0;
                    for &len in &s.pieces {
                        split_regex(re, &s.repr, &s.repr_pos, start, start + len, &mut s.next);
                        start += len;
                    }
                }
            }
            std::mem::swap(&mut s.pieces, &mut s.next);
        }

        let mut start = 0;
        for &len in &s.pieces {
            if len > 0 {
                out.push(s.byte_pos[start] as usize..s.byte_pos[start + len] as usize);
            }
            start += len;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum Repr {
    #[default]
    None,
    Collapsed,
    Wide,
}

/// Reusable buffers for [`PreTokenizer::split`].
#[derive(Default)]
pub(crate) struct SplitScratch {
    cps: Vec<u32>,
    flags: Vec<CpFlags>,
    /// Byte offset of each code point, plus the text length.
    byte_pos: Vec<u32>,
    /// Piece lengths in code points.
    pieces: Vec<usize>,
    next: Vec<usize>,
    repr: String,
    /// Byte offset in `repr` of each code point, plus its length.
    repr_pos: Vec<u32>,
    repr_kind: Repr,
}

impl SplitScratch {
    fn build_repr(&mut self, kind: Repr) {
        if self.repr_kind == kind {
            return;
        }
        self.repr.clear();
        self.repr_pos.clear();
        for (&cp, &f) in self.cps.iter().zip(&self.flags) {
            self.repr_pos.push(self.repr.len() as u32);
            let c = if cp < 0x80 {
                cp
            } else if f.is_whitespace() {
                0x0B
            } else if kind == Repr::Wide {
                cp
            } else {
                match f.category() {
                    CpFlags::NUMBER => 0xE0D1,
                    CpFlags::LETTER => 0xE0D2,
                    CpFlags::PUNCTUATION => 0xE0D3,
                    CpFlags::ACCENT_MARK => 0xE0D4,
                    CpFlags::SYMBOL => 0xE0D5,
                    _ => 0xE0D0,
                }
            };
            self.repr
                .push(char::from_u32(c).expect("a valid code point"));
        }
        self.repr_pos.push(self.repr.len() as u32);
        self.repr_kind = kind;
    }
}

/// `unicode_regex_split_stl`: matches and the gaps between them become pieces.
fn split_regex(
    re: &fancy_regex::Regex,
    repr: &str,
    repr_pos: &[u32],
    ini: usize,
    end: usize,
    out: &mut Vec<usize>,
) {
    let base = repr_pos[ini] as usize;
    let slice = &repr[base..repr_pos[end] as usize];
    let cp_at = |byte: usize| repr_pos.partition_point(|&p| (p as usize) < base + byte);
    let mut prev = ini;
    for m in re.find_iter(slice) {
        // A regex that exhausts its backtracking budget leaves the rest of the piece unsplit.
        let Ok(m) = m else { break };
        let (ms, me) = (cp_at(m.start()), cp_at(m.end()));
        if ms > prev {
            out.push(ms - prev);
        }
        // Empty matches would be empty words, which produce no tokens.
        if me > ms {
            out.push(me - ms);
        }
        prev = me;
    }
    if prev < end {
        out.push(end - prev);
    }
}

const OUT_OF_RANGE: u32 = u32::MAX;

/// One piece of the text for the hand-written splitters: positions at or past `end` read as
/// "nothing" (no code point, no flags), as in llama.cpp's `_get_cpt`/`_get_flags`.
struct Text<'a> {
    cps: &'a [u32],
    fl: &'a [CpFlags],
    end: usize,
}

impl Text<'_> {
    fn cpt(&self, pos: usize) -> u32 {
        if pos < self.end {
            self.cps[pos]
        } else {
            OUT_OF_RANGE
        }
    }
    fn fl(&self, pos: usize) -> CpFlags {
        if pos < self.end {
            self.fl[pos]
        } else {
            CpFlags::NONE
        }
    }
}

/// Emits pieces ending at given positions (`_add_token`).
struct Emitter<'a> {
    prev_end: usize,
    out: &'a mut Vec<usize>,
}

impl Emitter<'_> {
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

fn is_cr_lf(c: u32) -> bool {
    c == '\r' as u32 || c == '\n' as u32
}

/// `'s 't 're 've 'm 'll 'd` at `pos` (`pos` holds `'`); returns the contraction's length.
/// `fold` lowercases ASCII first (the `(?i:...)` variants; llama.cpp's lowercase table maps only
/// ASCII letters onto these).
fn contraction(t: &Text, pos: usize, fold: bool) -> Option<usize> {
    let lower = |c: u32| {
        if fold && (b'A' as u32..=b'Z' as u32).contains(&c) {
            c + 32
        } else {
            c
        }
    };
    if pos + 1 >= t.end {
        return None;
    }
    let n = lower(t.cpt(pos + 1));
    if [b's', b't', b'm', b'd'].iter().any(|&c| n == c as u32) {
        return Some(2);
    }
    if pos + 2 < t.end {
        let nn = lower(t.cpt(pos + 2));
        let pair = |a: u8, b: u8| n == a as u32 && nn == b as u32;
        if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
            return Some(3);
        }
    }
    None
}

/// Whitespace handling shared by the Llama-3 family: `\s*[\r\n]+|\s+(?!\S)|\s+`.
/// Returns the new position, or `None` if there is no whitespace at `pos`.
fn whitespace_run(t: &Text, pos: usize, newlines: bool) -> Option<usize> {
    let mut n = 0;
    let mut last_rn = 0;
    while t.fl(pos + n).is_whitespace() {
        if newlines && is_cr_lf(t.cpt(pos + n)) {
            last_rn = pos + n + 1;
        }
        n += 1;
    }
    if last_rn > 0 {
        return Some(last_rn);
    }
    // `\s+(?!\S)`: leave the last space to prefix the next word; llama.cpp only checks that the
    // run does not reach the end of the piece.
    if n > 1 && t.cpt(pos + n) != OUT_OF_RANGE {
        return Some(pos + n - 1);
    }
    if n > 0 {
        return Some(pos + n);
    }
    None
}

/// llama.cpp `unicode_regex_split_custom_gpt2`.
fn split_gpt2(t: &Text, ini: usize, out: &mut Vec<usize>) {
    let mut e = Emitter { prev_end: ini, out };
    let mut pos = ini;
    while pos < t.end {
        let c = t.cpt(pos);
        let f = t.fl(pos);
        if c == '\'' as u32
            && let Some(n) = contraction(t, pos, false)
        {
            pos += e.add(pos + n);
            continue;
        }
        let space = (c == ' ' as u32) as usize;
        let mut f2 = if space == 1 { t.fl(pos + 1) } else { f };
        if f2.is_letter() {
            pos += space;
            while f2.is_letter() {
                pos += 1;
                f2 = t.fl(pos);
            }
            e.add(pos);
            continue;
        }
        if f2.is_number() {
            pos += space;
            while f2.is_number() {
                pos += 1;
                f2 = t.fl(pos);
            }
            e.add(pos);
            continue;
        }
        let other = |f: CpFlags| !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.any();
        if other(f2) {
            pos += space;
            while other(f2) {
                pos += 1;
                f2 = t.fl(pos);
            }
            e.add(pos);
            continue;
        }
        match whitespace_run(t, pos, false) {
            Some(p) => {
                pos = p;
                e.add(pos);
            }
            None => {
                pos += 1;
                e.add(pos);
            }
        }
    }
}

/// llama.cpp `unicode_regex_split_custom_llama3` (`single_digits`: the Qwen 2 variant).
fn split_llama3(t: &Text, ini: usize, single_digits: bool, out: &mut Vec<usize>) {
    let mut e = Emitter { prev_end: ini, out };
    let mut pos = ini;
    while pos < t.end {
        let c = t.cpt(pos);
        let f = t.fl(pos);
        if c == '\'' as u32
            && let Some(n) = contraction(t, pos, true)
        {
            pos += e.add(pos + n);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(is_cr_lf(c) || f.is_number()) && (f.is_letter() || t.fl(pos + 1).is_letter()) {
            pos += 1;
            while t.fl(pos).is_letter() {
                pos += 1;
            }
            e.add(pos);
            continue;
        }
        // \p{N}{1,3} or \p{N}
        if f.is_number() {
            if single_digits {
                pos += 1;
                e.add(pos);
                continue;
            }
            let mut run = pos;
            while t.fl(pos).is_number() {
                pos += 1;
                if pos - run >= 3 {
                    e.add(pos);
                    run = pos;
                }
            }
            e.add(pos);
            continue;
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*' (llama.cpp tests the first character's flags, not f2's)
        if punctuation_run(t, &mut pos, c, f, |f| f.is_letter() || f.is_number()) {
            e.add(pos);
            continue;
        }
        match whitespace_run(t, pos, true) {
            Some(p) => pos = p,
            None => pos += 1,
        }
        e.add(pos);
    }
}

/// ` ?[^\s<word>]+[\r\n]*` for the Llama-3 family; `word` says which classes end the run.
fn punctuation_run(
    t: &Text,
    pos: &mut usize,
    c: u32,
    f: CpFlags,
    word: impl Fn(CpFlags) -> bool,
) -> bool {
    let space = (c == ' ' as u32) as usize;
    let mut f2 = if space == 1 { t.fl(*pos + 1) } else { f };
    if !(f2.is_whitespace() || word(f2)) && f.any() {
        *pos += space;
        while !(f2.is_whitespace() || word(f2)) && f2.any() {
            *pos += 1;
            f2 = t.fl(*pos);
        }
        while is_cr_lf(t.cpt(*pos)) {
            *pos += 1;
        }
        return true;
    }
    false
}

/// llama.cpp `unicode_regex_split_custom_qwen35`: Qwen 2 where marks count as letters.
fn split_qwen35(t: &Text, ini: usize, out: &mut Vec<usize>) {
    let mut e = Emitter { prev_end: ini, out };
    let mut pos = ini;
    let wordish = |f: CpFlags| f.is_letter() || f.is_accent_mark();
    while pos < t.end {
        let c = t.cpt(pos);
        let f = t.fl(pos);
        if c == '\'' as u32
            && let Some(n) = contraction(t, pos, true)
        {
            pos += e.add(pos + n);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+
        if !(is_cr_lf(c) || f.is_number()) && (wordish(f) || wordish(t.fl(pos + 1))) {
            pos += 1;
            while wordish(t.fl(pos)) {
                pos += 1;
            }
            e.add(pos);
            continue;
        }
        if f.is_number() {
            pos += 1;
            e.add(pos);
            continue;
        }
        if punctuation_run(t, &mut pos, c, f, |f| wordish(f) || f.is_number()) {
            e.add(pos);
            continue;
        }
        match whitespace_run(t, pos, true) {
            Some(p) => pos = p,
            None => pos += 1,
        }
        e.add(pos);
    }
}

/// llama.cpp `unicode_regex_split_custom_newlines`: runs of `\n` and runs of anything else.
fn split_newlines(t: &Text, ini: usize, out: &mut Vec<usize>) {
    let mut pos = ini;
    while pos < t.end {
        let newline = t.cpt(pos) == '\n' as u32;
        let start = pos;
        while pos < t.end && (t.cpt(pos) == '\n' as u32) == newline {
            pos += 1;
        }
        out.push(pos - start);
    }
}

/// llama.cpp `unicode_regex_split_custom_afmoe`: a digit run of length n is cut as n % 3 digits
/// then groups of three. As there, the text before a digit run joins its first group (the next
/// stage splits it off again).
fn split_digit_groups(t: &Text, ini: usize, out: &mut Vec<usize>) {
    let mut e = Emitter { prev_end: ini, out };
    let mut pos = ini;
    while pos < t.end {
        if t.fl(pos).is_number() {
            let start = pos;
            while pos < t.end && t.fl(pos).is_number() {
                pos += 1;
            }
            let count = pos - start;
            let mut cur = start;
            if !count.is_multiple_of(3) {
                cur += count % 3;
                e.add(cur);
            }
            while cur < start + count {
                cur += 3;
                e.add(cur);
            }
            continue;
        }
        pos += 1;
    }
    if e.prev_end < t.end {
        e.add(t.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pre: &str, text: &str) -> Vec<String> {
        let cfg = config(pre).unwrap();
        let p = PreTokenizer::new(pre, cfg.stages).unwrap();
        let mut ranges = Vec::new();
        p.split(text, &mut SplitScratch::default(), &mut ranges);
        ranges.into_iter().map(|r| text[r].to_string()).collect()
    }

    #[test]
    fn every_known_pre_tokenizer_compiles() {
        let names = [
            "default",
            "minicpm5",
            "llama-bpe",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "spark2_5",
            "youtu",
            "falcon",
            "mpt",
            "starcoder",
            "command-r",
            "gpt-2",
            "jina-v2-code",
            "trillion",
            "jais-2",
            "qwen2",
            "stablelm2",
            "qwen35",
            "dbrx",
            "poro-chat",
            "bloom",
            "chatglm-bpe",
            "glm4",
            "viking",
            "tekken",
            "chameleon",
            "gpt-4o",
            "granite-embed-multi-97m",
            "tiny_aya",
            "bailingmoe",
            "seed-coder",
            "ufakzeka",
            "afmoe",
            "laguna",
            "exaone-moe",
        ];
        for name in names {
            let cfg = config(name).unwrap();
            if let Err(e) = PreTokenizer::new(name, cfg.stages) {
                panic!("{name}: {e}");
            }
        }
        assert!(matches!(
            config("kimi-k2"),
            Err(TokenizerError::UnsupportedPre { .. })
        ));
        assert!(matches!(
            config("no-such-pre"),
            Err(TokenizerError::UnknownPre(_))
        ));
    }

    #[test]
    fn gpt2_splits() {
        assert_eq!(
            split("gpt-2", "Hello world's  end 123\n\n  x"),
            ["Hello", " world", "'s", " ", " end", " 123", "\n\n ", " x"]
        );
        // Upper-case contractions are not contractions for GPT-2.
        assert_eq!(split("gpt-2", "I'M"), ["I", "'", "M"]);
    }

    #[test]
    fn llama3_splits() {
        assert_eq!(
            split("llama-bpe", "I'M 12345 ab\r\n  \n x!!\n"),
            ["I", "'M", " ", "123", "45", " ab", "\r\n  \n", " x", "!!\n"]
        );
        assert_eq!(split("qwen2", "a 123"), ["a", " ", "1", "2", "3"]);
    }

    #[test]
    fn regex_stages_use_llama_cpp_classes() {
        // command-r: every digit alone, then GPT-2.
        assert_eq!(split("command-r", "ab 12c"), ["ab", " ", "1", "2", "c"]);
        // deepseek-coder: CJK runs are their own words; `\p{L}` covers non-ASCII letters.
        assert_eq!(
            split("deepseek-coder", "été 中文x"),
            ["été", " ", "中文", "x"]
        );
        // Trailing whitespace at the end of a piece (`\s+$`, deepseek-llm).
        assert_eq!(split("deepseek-llm", "ab  "), ["ab", "  "]);
    }

    #[test]
    fn translation() {
        let (p, collapsed) = translate("[^\\s\\p{L}]?\\p{N}+|\\s+(?!\\S)").unwrap();
        assert!(collapsed);
        assert_eq!(
            p,
            "[^\\t\\n\\x0B\\x0C\\r\\x20\\x{E0D2}\\x41-\\x5A\\x61-\\x7A]?[\\x{E0D1}\\x30-\\x39]+|[\\t\\n\\x0B\\x0C\\r\\x20]+(?![^\\t\\n\\x0B\\x0C\\r\\x20])"
        );
        assert!(translate("\\p{Han}+").is_err());
    }
}
