//! Errors, each naming the template it concerns.

use std::error::Error as _;

use crate::env::RaisedException;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The template is not valid Jinja (or uses syntax minijinja lacks).
    #[error("chat template `{template}` does not compile: {source}")]
    Compile {
        template: String,
        #[source]
        source: minijinja::Error,
    },

    /// The template called `raise_exception(message)`: it refuses this conversation (e.g. roles that do not
    /// alternate, a system message it does not support).
    #[error("chat template `{template}` rejected the conversation: {message}")]
    Raised { template: String, message: String },

    /// Rendering failed for another reason (a missing variable used as an object, a type error...).
    #[error("chat template `{template}` failed to render: {source}")]
    Render {
        template: String,
        #[source]
        source: minijinja::Error,
    },

    /// Neither the model nor hearth has a chat template for this architecture.
    #[error(
        "no chat template for architecture `{architecture}`: the GGUF has no `tokenizer.chat_template` and hearth \
         has no built-in template for it (built-ins: {builtins}); pass a template file (a Jinja chat template, e.g. \
         the `chat_template` of the model's tokenizer_config.json)"
    )]
    NoTemplate {
        architecture: String,
        builtins: String,
    },

    /// A render option the template variables cannot take.
    #[error("chat template `{template}`: {message}")]
    Options { template: String, message: String },
}

impl ChatError {
    /// Sorts a minijinja render error into [`ChatError::Raised`] or [`ChatError::Render`].
    pub(crate) fn from_render(template: &str, err: minijinja::Error) -> ChatError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
        while let Some(e) = source {
            if let Some(RaisedException(message)) = e.downcast_ref::<RaisedException>() {
                return ChatError::Raised {
                    template: template.to_string(),
                    message: message.clone(),
                };
            }
            source = e.source();
        }
        ChatError::Render {
            template: template.to_string(),
            source: err,
        }
    }
}
