//! The API around rendering: template selection, errors, message forms.

use hearth_chat::{
    Builtin, ChatError, ChatTemplate, Content, ContentPart, Message, RenderOptions, ToolCall,
};
use serde_json::json;

fn date() -> hearth_chat::NaiveDateTime {
    "2025-03-14T09:26:53".parse().unwrap()
}

#[test]
fn gemma3_known_example() {
    // dependency-findings §3: byte-identical to transformers 5.24 with google/gemma-3-*-it's template
    let t = ChatTemplate::for_model(None, "gemma3", "<bos>", "<eos>").unwrap();
    let out = t
        .render(
            &[
                Message::system("You are terse."),
                Message::user("What is 2+2?"),
            ],
            &RenderOptions::generation(),
        )
        .unwrap();
    assert_eq!(
        out,
        "<bos><start_of_turn>user\nYou are terse.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
    );
}

#[test]
fn gguf_template_wins_over_builtin() {
    let t = ChatTemplate::for_model(
        Some("{{ bos_token }}[{{ messages[0].content }}]"),
        "gemma3",
        "<s>",
        "</s>",
    );
    let t = t.unwrap();
    assert_eq!(t.name(), "GGUF tokenizer.chat_template");
    assert_eq!(
        t.render(&[Message::user("hi")], &RenderOptions::default())
            .unwrap(),
        "<s>[hi]"
    );
    // an empty key is no template
    let t = ChatTemplate::for_model(Some("  "), "qwen3", "", "<|im_end|>").unwrap();
    assert_eq!(t.name(), "built-in qwen3");
}

#[test]
fn builtin_for_each_architecture() {
    for (arch, builtin) in [
        ("gemma3", Builtin::Gemma3),
        ("llama", Builtin::Llama3),
        ("qwen2", Builtin::Qwen2),
        ("qwen3", Builtin::Qwen3),
        ("qwen3moe", Builtin::Qwen3),
    ] {
        assert_eq!(Builtin::for_architecture(arch), Some(builtin));
        let t = ChatTemplate::for_model(None, arch, "<s>", "</s>").unwrap();
        assert_eq!(t.name(), format!("built-in {}", builtin.name()));
    }
    for b in Builtin::ALL {
        assert_eq!(Builtin::from_name(b.name()), Some(b));
        ChatTemplate::new(b.name(), b.source(), "<s>", "</s>").unwrap();
    }
}

#[test]
fn unknown_architecture_says_what_to_do() {
    let err = ChatTemplate::for_model(None, "mamba", "<s>", "</s>").unwrap_err();
    assert!(matches!(&err, ChatError::NoTemplate { architecture, .. } if architecture == "mamba"));
    let msg = err.to_string();
    assert!(msg.contains("`mamba`"), "{msg}");
    assert!(msg.contains("tokenizer.chat_template"), "{msg}");
    assert!(
        msg.contains("gemma3, llama, qwen2, qwen3, qwen3moe"),
        "{msg}"
    );
    assert!(msg.contains("pass a template file"), "{msg}");
}

#[test]
fn compile_error_names_the_template_and_line() {
    let err =
        ChatTemplate::new("my.gguf tokenizer.chat_template", "ok\n{% if %}", "", "").unwrap_err();
    assert!(matches!(err, ChatError::Compile { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with("chat template `my.gguf tokenizer.chat_template` does not compile: "),
        "{msg}"
    );
    assert!(msg.contains(":2)"), "names line 2: {msg}");
}

#[test]
fn raise_exception_surfaces_as_raised() {
    let t = ChatTemplate::builtin(Builtin::Gemma3, "<bos>", "<eos>");
    let err = t
        .render(
            &[Message::user("a"), Message::user("b")],
            &RenderOptions::default(),
        )
        .unwrap_err();
    match &err {
        ChatError::Raised { template, message } => {
            assert_eq!(template, "built-in gemma3");
            assert_eq!(
                message,
                "Conversation roles must alternate user/assistant/user/assistant/..."
            );
        }
        other => panic!("want Raised, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "chat template `built-in gemma3` rejected the conversation: \
         Conversation roles must alternate user/assistant/user/assistant/..."
    );
}

#[test]
fn render_error_is_not_raised() {
    let t = ChatTemplate::new("t", "{{ messages[0].content.nope.deeper }}", "", "").unwrap();
    let err = t
        .render(&[Message::user("x")], &RenderOptions::default())
        .unwrap_err();
    assert!(matches!(err, ChatError::Render { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("chat template `t` failed to render: "),
        "{err}"
    );
}

#[test]
fn extra_variables_and_reserved_names() {
    let t = ChatTemplate::builtin(Builtin::Qwen3, "", "<|im_end|>");
    let off = RenderOptions::generation().with_var("enable_thinking", false);
    assert_eq!(
        t.render(&[Message::user("hi")], &off).unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
    let t = ChatTemplate::new("t", "{{ bos_token }}", "<s>", "").unwrap();
    let over = RenderOptions::default().with_var("bos_token", "<B>");
    assert_eq!(t.render(&[], &over).unwrap(), "<B>");
    let err = t
        .render(
            &[],
            &RenderOptions::default().with_var("messages", json!([])),
        )
        .unwrap_err();
    assert!(matches!(err, ChatError::Options { .. }), "{err:?}");
}

#[test]
fn fixed_date_feeds_strftime_now() {
    let t = ChatTemplate::builtin(Builtin::Llama3, "<|begin_of_text|>", "<|eot_id|>");
    let out = t
        .render(
            &[Message::user("hi")],
            &RenderOptions::default().with_date(date()),
        )
        .unwrap();
    assert!(out.contains("Today Date: 14 Mar 2025\n"), "{out}");
    // without one: today's date, as transformers does
    let out = t
        .render(&[Message::user("hi")], &RenderOptions::default())
        .unwrap();
    let today = chrono_today();
    assert!(out.contains(&format!("Today Date: {today}\n")), "{out}");
}

fn chrono_today() -> String {
    // the template's own format, from the same clock the render reads
    let t = ChatTemplate::new("t", "{{ strftime_now('%d %b %Y') }}", "", "").unwrap();
    t.render(&[], &RenderOptions::default()).unwrap()
}

#[test]
fn message_forms_serialize_as_templates_expect() {
    let tool_call = ToolCall::function(
        Some("call9abc1".into()),
        "get_weather",
        json!({"city": "Zürich"}),
    );
    let assistant = Message {
        tool_calls: Some(vec![tool_call]),
        ..Message::assistant("")
    };
    let parts = Message {
        content: Some(Content::Parts(vec![
            ContentPart::Image,
            ContentPart::Text {
                text: "What is it?".into(),
            },
        ])),
        ..Message::new("user", "")
    };
    let tool = Message {
        name: Some("get_weather".into()),
        ..Message::tool("21 °C", "call9abc1")
    };
    let t = ChatTemplate::new(
        "t",
        "{% for m in messages %}{{ m | tojson }}\n{% endfor %}",
        "",
        "",
    )
    .unwrap();
    let out = t
        .render(&[parts, assistant, tool], &RenderOptions::default())
        .unwrap();
    assert_eq!(
        out,
        concat!(
            r#"{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}"#,
            "\n",
            r#"{"role": "assistant", "content": "", "tool_calls": [{"id": "call9abc1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]}"#,
            "\n",
            r#"{"role": "tool", "content": "21 °C", "tool_call_id": "call9abc1", "name": "get_weather"}"#,
            "\n"
        )
    );
    // Gemma 3 puts its image marker where the image part is
    let t = ChatTemplate::builtin(Builtin::Gemma3, "<bos>", "<eos>");
    let parts = Message {
        content: Some(Content::Parts(vec![
            ContentPart::Image,
            ContentPart::Text {
                text: " Describe. ".into(),
            },
        ])),
        ..Message::new("user", "")
    };
    assert_eq!(
        t.render(&[parts], &RenderOptions::default()).unwrap(),
        "<bos><start_of_turn>user\n<start_of_image>Describe.<end_of_turn>\n"
    );
}

#[test]
fn reasoning_is_also_thinking() {
    // transformers copies reasoning_content to `thinking` (first) for templates that read that name
    let m = Message {
        reasoning_content: Some("hmm".into()),
        ..Message::assistant("4")
    };
    let t = ChatTemplate::new("t", "{{ messages[0] | tojson }}", "", "").unwrap();
    assert_eq!(
        t.render(&[m], &RenderOptions::default()).unwrap(),
        r#"{"thinking": "hmm", "role": "assistant", "content": "4", "reasoning_content": "hmm"}"#
    );
}

#[test]
fn templates_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChatTemplate>();
}

#[test]
fn runaway_template_is_stopped() {
    // doubles a string until it would take terabytes: must fail, not hang or abort
    let bomb = "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}\
                {{ ns.s | length }}";
    let t = ChatTemplate::new("bomb", bomb, "", "").unwrap();
    let err = t.render(&[], &RenderOptions::default()).unwrap_err();
    assert!(matches!(err, ChatError::Render { .. }), "{err:?}");
    // while a long conversation renders well within budget
    let long: Vec<Message> = (0..2000)
        .map(|i| {
            if i % 2 == 0 {
                Message::user("word ".repeat(200))
            } else {
                Message::assistant("ok ".repeat(100))
            }
        })
        .collect();
    let t = ChatTemplate::builtin(Builtin::Qwen3, "", "<|im_end|>");
    assert!(t.render(&long, &RenderOptions::generation()).unwrap().len() > 1_000_000);
}
