//! Chat templates: a conversation (messages, tools) into the prompt text a model was trained on.
//!
//! Templates are Jinja, as Hugging Face ships them (and GGUF files carry them in `tokenizer.chat_template`). They
//! render with minijinja set up to match transformers' `apply_chat_template` byte for byte (see [`ChatTemplate`]);
//! hearth also ships templates for the architectures it runs ([`Builtin`]), for GGUFs without one.
//!
//! ```
//! use hearth_chat::{ChatTemplate, Message, RenderOptions};
//!
//! let template = ChatTemplate::for_model(None, "gemma3", "<bos>", "<eos>").unwrap();
//! let prompt = template
//!     .render(&[Message::system("You are terse."), Message::user("What is 2+2?")], &RenderOptions::generation())
//!     .unwrap();
//! assert_eq!(
//!     prompt,
//!     "<bos><start_of_turn>user\nYou are terse.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
//! );
//! ```
//!
//! What matches transformers (5.24, jinja2 3.1.6), checked by the tests against its own renders: whitespace
//! handling (trim_blocks, lstrip_blocks), `tojson` as `json.dumps` (ensure_ascii, indent, separators, sort_keys),
//! Python's `str()` of printed values (`True`, `None`, `{'a': 1.0}`, `1e+16`), Python's whitespace for `trim` and
//! `.strip()`, `raise_exception`, `strftime_now`, `{% generation %}` tags, `none is iterable` being false, and the
//! message dicts (None fields absent, reasoning also under `thinking`). On llama.cpp's corpus of 70 real templates
//! every render transformers completes comes out identical, except where Python's semantics cannot be reproduced
//! from outside minijinja:
//! - `"..." | safe + text`: jinja2's Markup HTML-escapes `text`; minijinja concatenates (functionary v3.1).
//! - `for x in none`: Python raises TypeError; minijinja loops zero times, so a template that needs tools renders
//!   without them where transformers fails.
//! - `seq | map(...) | tojson`: Python's `map` is a generator `json` refuses; minijinja's is a list.
//! - `a ~ b` on non-strings uses minijinja's text for floats (`1e16` prints `10000000000000000.0`, Python `1e+16`).

mod builtin;
mod env;
mod error;
mod message;
mod python;
mod template;

pub use builtin::Builtin;
pub use chrono::NaiveDateTime;
pub use error::ChatError;
pub use message::{Content, ContentPart, FunctionCall, Message, ToolCall};
pub use template::{ChatTemplate, RenderOptions};
