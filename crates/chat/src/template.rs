//! A compiled chat template and its render.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use minijinja::Environment;
use minijinja::value::{Serde, Value};
use serde_json::{Map, Value as Json};

use crate::builtin::Builtin;
use crate::env::{environment, rewrite_generation_tags, strftime_now};
use crate::error::ChatError;
use crate::message::Message;

/// The one template in a [`ChatTemplate`]'s environment (errors quote it as the place: `(in template:12)`).
const KEY: &str = "template";

/// Variables every render sets; [`RenderOptions::extra`] may not replace them.
const RESERVED: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

/// What a render takes besides the messages.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// End with the header of an assistant turn, so the model writes the reply.
    pub add_generation_prompt: bool,
    /// Tool definitions (JSON schemas, usually `{"type": "function", "function": {...}}`); `None` renders without
    /// tools (the template sees `tools` as none).
    pub tools: Option<Vec<Json>>,
    /// More template variables, e.g. `enable_thinking: false` for Qwen3. They override `bos_token`/`eos_token`.
    pub extra: Map<String, Json>,
    /// The date and time `strftime_now` reports; `None` is the local time now, as in transformers.
    pub date: Option<NaiveDateTime>,
}

impl RenderOptions {
    /// Options with the generation prompt on: what a prompt for the model needs.
    pub fn generation() -> RenderOptions {
        RenderOptions {
            add_generation_prompt: true,
            ..RenderOptions::default()
        }
    }

    pub fn with_tools(mut self, tools: Vec<Json>) -> RenderOptions {
        self.tools = Some(tools);
        self
    }

    /// Sets one template variable.
    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<Json>) -> RenderOptions {
        self.extra.insert(name.into(), value.into());
        self
    }

    pub fn with_date(mut self, date: NaiveDateTime) -> RenderOptions {
        self.date = Some(date);
        self
    }
}

/// A compiled chat template with the special tokens it is rendered with.
///
/// Renders as transformers' `tokenizer.apply_chat_template(messages, tokenize=False, ...)` does, byte for byte:
/// the same whitespace rules, Python's `tojson` and `str()`, `raise_exception`, `strftime_now`, and the
/// `{% generation %}` tags accepted.
#[derive(Debug)]
pub struct ChatTemplate {
    name: String,
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`. `name` says where it came from (errors quote it), e.g. `model.gguf
    /// tokenizer.chat_template`; `bos_token` and `eos_token` are the template's `bos_token` and `eos_token`.
    pub fn new(
        name: impl Into<String>,
        source: &str,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<ChatTemplate, ChatError> {
        let name = name.into();
        let mut env = environment();
        if let Err(source) =
            env.add_template_owned(KEY, rewrite_generation_tags(source).into_owned())
        {
            return Err(ChatError::Compile {
                template: name,
                source,
            });
        }
        Ok(ChatTemplate {
            name,
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// One of hearth's built-in templates.
    pub fn builtin(
        builtin: Builtin,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> ChatTemplate {
        ChatTemplate::new(
            format!("built-in {}", builtin.name()),
            builtin.source(),
            bos_token,
            eos_token,
        )
        .expect("built-in templates compile (tested)")
    }

    /// The template for a model: the GGUF's own `tokenizer.chat_template` when it has one, otherwise hearth's
    /// built-in template for its `general.architecture`, otherwise [`ChatError::NoTemplate`].
    pub fn for_model(
        gguf_template: Option<&str>,
        architecture: &str,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<ChatTemplate, ChatError> {
        if let Some(source) = gguf_template.filter(|s| !s.trim().is_empty()) {
            return ChatTemplate::new("GGUF tokenizer.chat_template", source, bos_token, eos_token);
        }
        match Builtin::for_architecture(architecture) {
            Some(builtin) => Ok(ChatTemplate::builtin(builtin, bos_token, eos_token)),
            None => Err(ChatError::NoTemplate {
                architecture: architecture.to_string(),
                builtins: Builtin::ARCHITECTURES.join(", "),
            }),
        }
    }

    /// Where the template came from, as given to [`ChatTemplate::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders the conversation into the model's prompt text.
    pub fn render(&self, messages: &[Message], opts: &RenderOptions) -> Result<String, ChatError> {
        let messages: Vec<Json> = messages.iter().map(Message::to_template_json).collect();
        // transformers: `render(messages=..., tools=..., documents=..., add_generation_prompt=...,
        // **{special tokens, then the caller's kwargs})`, with strftime_now among the globals
        let mut ctx: BTreeMap<String, Value> = BTreeMap::from([
            ("messages".into(), Value::from(Serde(&messages))),
            ("tools".into(), Value::from(Serde(&opts.tools))),
            ("documents".into(), Value::from(())),
            (
                "add_generation_prompt".into(),
                Value::from(opts.add_generation_prompt),
            ),
            ("strftime_now".into(), strftime_now(opts.date)),
            ("bos_token".into(), Value::from(self.bos_token.as_str())),
            ("eos_token".into(), Value::from(self.eos_token.as_str())),
        ]);
        for (key, value) in &opts.extra {
            if RESERVED.contains(&key.as_str()) {
                return Err(ChatError::Options {
                    template: self.name.clone(),
                    message: format!(
                        "`{key}` is set by the render itself and cannot be an extra variable"
                    ),
                });
            }
            ctx.insert(key.clone(), Value::from(Serde(value)));
        }
        let template = self
            .env
            .get_template(KEY)
            .expect("the template was added in new()");
        template
            .render(Value::from(ctx))
            .map_err(|e| ChatError::from_render(&self.name, e))
    }
}
