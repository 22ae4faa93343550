//! The chat templates hearth ships, for models whose GGUF lacks `tokenizer.chat_template` (Gemma 3 270M, the
//! default model, is one).

/// A built-in chat template (`crates/chat/templates/<name>.jinja`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// Gemma 3 instruct (google/gemma-3-*-it): a system message is folded into the first user turn, the assistant
    /// speaks as `model`.
    Gemma3,
    /// Llama 3.x instruct (meta-llama/Llama-3.2-3B-Instruct): tools as JSON in the first user turn, a
    /// `Today Date:` line from `strftime_now`.
    Llama3,
    /// Qwen2.5 (Qwen/Qwen2.5-7B-Instruct): ChatML with Qwen's default system prompt, `<tool_call>` tools.
    Qwen2,
    /// Qwen3 (Qwen/Qwen3-0.6B): ChatML with `<think>` reasoning; `enable_thinking: false` closes it empty.
    Qwen3,
}

impl Builtin {
    pub const ALL: [Builtin; 4] = [
        Builtin::Gemma3,
        Builtin::Llama3,
        Builtin::Qwen2,
        Builtin::Qwen3,
    ];

    /// The `general.architecture` values that have a built-in template.
    pub const ARCHITECTURES: [&'static str; 5] = ["gemma3", "llama", "qwen2", "qwen3", "qwen3moe"];

    /// The built-in for a GGUF `general.architecture`. `llama` means Llama 3: the Llama 2 and Mistral GGUFs that
    /// share the architecture name carry their own template.
    pub fn for_architecture(architecture: &str) -> Option<Builtin> {
        match architecture {
            "gemma3" => Some(Builtin::Gemma3),
            "llama" => Some(Builtin::Llama3),
            "qwen2" => Some(Builtin::Qwen2),
            "qwen3" | "qwen3moe" => Some(Builtin::Qwen3),
            _ => None,
        }
    }

    /// `gemma3`, `llama3`, `qwen2`, `qwen3`: the template's file name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Gemma3 => "gemma3",
            Builtin::Llama3 => "llama3",
            Builtin::Qwen2 => "qwen2",
            Builtin::Qwen3 => "qwen3",
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The Jinja source.
    pub fn source(self) -> &'static str {
        match self {
            Builtin::Gemma3 => include_str!("../templates/gemma3.jinja"),
            Builtin::Llama3 => include_str!("../templates/llama3.jinja"),
            Builtin::Qwen2 => include_str!("../templates/qwen2.jinja"),
            Builtin::Qwen3 => include_str!("../templates/qwen3.jinja"),
        }
    }
}
