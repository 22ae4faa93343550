//! Byte-exact agreement with transformers' apply_chat_template on the committed fixtures (make_fixtures.py).

mod common;

use common::{fixtures_dir, load, run_cases};
use hearth_chat::{Builtin, ChatTemplate};

fn check_file(name: &str) {
    let file = load(name);
    let template_ref = file
        .template
        .as_ref()
        .expect("template fixture names its template");
    let template = match (&template_ref.builtin, &template_ref.file) {
        (Some(builtin), _) => {
            let builtin = Builtin::from_name(builtin)
                .unwrap_or_else(|| panic!("{name}: no built-in {builtin}"));
            ChatTemplate::builtin(builtin, &file.bos_token, &file.eos_token)
        }
        (None, Some(path)) => {
            let source =
                std::fs::read_to_string(fixtures_dir().join(path)).expect("fixture template");
            ChatTemplate::new(path.as_str(), &source, &file.bos_token, &file.eos_token)
                .expect("compiles")
        }
        (None, None) => panic!("{name}: template is neither builtin nor file"),
    };
    let (total, failures) = run_cases(&file, Some(&template));
    assert!(
        failures.is_empty(),
        "{name}: {} of {total} cases differ from transformers {} (if a template changed, rerun \
         crates/chat/tests/make_fixtures.py):\n\n{}",
        failures.len(),
        file.transformers,
        failures.join("\n\n")
    );
}

#[test]
fn builtin_gemma3() {
    check_file("builtin-gemma3.json");
}

#[test]
fn builtin_llama3() {
    check_file("builtin-llama3.json");
}

#[test]
fn builtin_qwen2() {
    check_file("builtin-qwen2.json");
}

#[test]
fn builtin_qwen3() {
    check_file("builtin-qwen3.json");
}

#[test]
fn corpus_lfm2_generation_tags() {
    check_file("corpus-LFM2.5-8B-A1B.json");
}

#[test]
fn corpus_gemma2_raises() {
    check_file("corpus-google-gemma-2-2b-it.json");
}

#[test]
fn corpus_mistral_nemo_tools() {
    check_file("corpus-mistralai-Mistral-Nemo-Instruct-2407.json");
}

#[test]
fn corpus_hermes2_pro_tool_use() {
    check_file("corpus-NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.json");
}

#[test]
fn corpus_granite_strftime_tojson_indent() {
    check_file("corpus-ibm-granite-granite-3.3-2B-Instruct.json");
}

#[test]
fn corpus_phi35() {
    check_file("corpus-microsoft-Phi-3.5-mini-instruct.json");
}

/// One small template per piece of transformers' environment: tojson options, Python's str(), generation tags,
/// raise_exception, strftime_now, loop controls, str methods, whitespace control.
#[test]
fn snippets() {
    let file = load("snippets.json");
    let (total, failures) = run_cases(&file, None);
    assert!(
        failures.is_empty(),
        "{} of {total} snippets differ:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
