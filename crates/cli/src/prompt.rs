//! Turning what the user typed into token ids: raw completion prompts, and conversations through the
//! model's chat template — where user text must never become control tokens.

use anyhow::{Context, Result, bail};
use hearth_chat::{ChatTemplate, Content, Message, RenderOptions};
use hearth_engine::Model;
use hearth_tokenizer::Tokenizer;

/// llama.cpp's completion mode: BOS as the metadata says; special-token text parsed unless told not to.
pub fn raw(tok: &Tokenizer, text: &str, parse_special: bool) -> Vec<u32> {
    tok.encode(text, true, parse_special)
}

/// The model's chat template (from the GGUF, else hearth's built-in for the architecture).
pub fn template(model: &Model, tok: &Tokenizer) -> Result<ChatTemplate> {
    let md = model.gguf().metadata();
    let gguf_template = md.opt_str(hearth_gguf::keys::CHAT_TEMPLATE)?;
    let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or("").to_string();
    Ok(ChatTemplate::for_model(
        gguf_template,
        md.architecture()?,
        text(tok.bos()),
        text(tok.eos()),
    )?)
}

/// Renders `messages` and tokenizes the result so that only the template's own text is parsed for
/// special tokens; each message's content is tokenized as plain text.
///
/// The template is rendered twice: with the real contents and with unique placeholders. The
/// placeholder render splits into the template's literal pieces; the real render is then matched
/// piece by piece, with each content as the template inserted it (as is, or trimmed, as Gemma's
/// template does). Matching never searches for the template text inside user text, so a message
/// that contains `<end_of_turn>` cannot move a boundary.
pub fn chat(
    tok: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
    add_generation_prompt: bool,
) -> Result<Vec<u32>> {
    let opts = RenderOptions {
        add_generation_prompt,
        ..RenderOptions::default()
    };
    let full = template.render(messages, &opts)?;
    let marks: Vec<String> = (0..messages.len())
        .map(|i| format!("\u{E000}hearth-content-{i}\u{E001}"))
        .collect();
    let placeholders: Vec<Message> = messages
        .iter()
        .zip(&marks)
        .map(|(m, mark)| match m.content {
            Some(Content::Text(_)) => Message {
                content: Some(Content::Text(mark.clone())),
                ..m.clone()
            },
            _ => m.clone(),
        })
        .collect();
    let skeleton = template.render(&placeholders, &opts)?;

    // Split the skeleton into literal pieces and the message index each placeholder stands for.
    let mut pieces = vec![];
    let mut slots = vec![];
    let mut rest = skeleton.as_str();
    while let Some((at, i, len)) = marks
        .iter()
        .enumerate()
        .filter_map(|(i, m)| rest.find(m.as_str()).map(|at| (at, i, m.len())))
        .min()
    {
        pieces.push(&rest[..at]);
        slots.push(i);
        rest = &rest[at + len..];
    }
    pieces.push(rest);

    // Walk the real render: literal, content, literal, content, ..., literal.
    let mut ids = Vec::new();
    let starts_with_bos = tok
        .bos()
        .and_then(|b| tok.token_text(b))
        .is_some_and(|b| !b.is_empty() && full.starts_with(b));
    let mut pos = 0;
    for (k, piece) in pieces.iter().enumerate() {
        if !full[pos..].starts_with(piece) {
            bail!("cannot separate the chat template's text from message contents; use --raw");
        }
        // Templates write <bos> themselves; add one only if they did not.
        let add_bos = k == 0 && !starts_with_bos && tok.adds_bos();
        ids.extend(tok.encode_with(
            piece,
            hearth_tokenizer::EncodeOptions {
                add_bos,
                add_eos: false,
                parse_special: true,
            },
        ));
        pos += piece.len();
        let Some(&slot) = slots.get(k) else { break };
        let Some(Content::Text(content)) = &messages[slot].content else {
            bail!("message {slot} has no text content");
        };
        let next = pieces[k + 1];
        let inserted = [content.as_str(), content.trim()]
            .into_iter()
            .find(|c| full[pos..].starts_with(c) && full[pos + c.len()..].starts_with(next))
            .context("cannot find a message's content where the chat template put it; use --raw")?;
        ids.extend(tok.encode(inserted, false, false));
        pos += inserted.len();
    }
    Ok(ids)
}
