//! The conversation a template renders: OpenAI-style messages, as transformers hands them to templates.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// One message of a conversation.
///
/// Fields that are `None` are absent from what the template sees (transformers drops `None`-valued keys too), so
/// `message.tool_calls is defined` is false unless a message has tool calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool` (or whatever else a template understands, e.g. `ipython`).
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// The model's reasoning for an assistant turn (Qwen3's `<think>`); templates also see it as `thinking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// On a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// On a `tool` message: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A message's content: a plain string, or the list-of-parts form (`[{"type": "text", "text": ...}]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a list-of-parts content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ContentPart {
    Text {
        text: String,
    },
    /// Where an image goes: templates emit their image marker (Gemma 3: `<start_of_image>`) for it; the pixels
    /// travel beside the prompt, not through the template.
    Image,
}

/// A function call made by an assistant message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Always `function` in practice; kept because templates and OpenAI clients read it.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

/// The function a [`ToolCall`] names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// Usually a JSON object: most templates `tojson` it. (OpenAI's API carries it as a string of JSON; some
    /// templates accept that too, others would print it quoted, so parse it first.)
    pub arguments: Json,
}

fn function_kind() -> String {
    "function".to_string()
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: Some(Content::Text(content.into())),
            ..Message::default()
        }
    }

    pub fn system(content: impl Into<String>) -> Message {
        Message::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new("assistant", content)
    }

    /// A tool's result, answering the call `tool_call_id`.
    pub fn tool(content: impl Into<String>, tool_call_id: impl Into<String>) -> Message {
        Message {
            tool_call_id: Some(tool_call_id.into()),
            ..Message::new("tool", content)
        }
    }

    /// The message as the dict a template sees, exactly as transformers builds it: keys in field order, `None`s
    /// dropped, and a reasoning text also put first under `thinking` (transformers' `_alias_reasoning_fields`, for
    /// templates such as gpt-oss that read that name).
    pub(crate) fn to_template_json(&self) -> Json {
        let Json::Object(fields) = serde_json::to_value(self).expect("a Message always serializes")
        else {
            unreachable!("a struct serializes to a JSON object")
        };
        match &self.reasoning_content {
            Some(reasoning) => {
                let mut aliased = Map::with_capacity(fields.len() + 1);
                aliased.insert("thinking".to_string(), Json::String(reasoning.clone()));
                aliased.extend(fields);
                Json::Object(aliased)
            }
            None => Json::Object(fields),
        }
    }
}

impl ToolCall {
    /// A call to `name` with JSON `arguments`.
    pub fn function(id: Option<String>, name: impl Into<String>, arguments: Json) -> ToolCall {
        ToolCall {
            id,
            kind: function_kind(),
            function: FunctionCall {
                name: name.into(),
                arguments,
            },
        }
    }
}
