//! Reading the fixtures that `make_fixtures.py` writes (tests/fixtures/chat/ at the repository root).

#![allow(dead_code)] // each test binary uses part of this

use std::path::PathBuf;

use hearth_chat::{ChatError, ChatTemplate, Message, NaiveDateTime, RenderOptions};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat")
}

#[derive(Deserialize)]
pub struct FixtureFile {
    pub transformers: String,
    pub date: String,
    #[serde(default)]
    pub template: Option<TemplateRef>,
    pub bos_token: String,
    pub eos_token: String,
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct TemplateRef {
    pub builtin: Option<String>,
    pub file: Option<String>,
}

#[derive(Deserialize, Clone)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub add_generation_prompt: bool,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub tools: Option<Vec<Json>>,
    #[serde(default)]
    pub extra: Map<String, Json>,
    /// A template of its own (snippets.json).
    #[serde(default)]
    pub source: Option<String>,
    pub expected: Option<String>,
    pub error: Option<ExpectedError>,
}

/// What transformers raised: `raised` when the template's raise_exception did.
#[derive(Deserialize, Clone, Debug)]
pub struct ExpectedError {
    pub raised: bool,
    pub message: String,
}

pub fn load(name: &str) -> FixtureFile {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl FixtureFile {
    pub fn date(&self) -> NaiveDateTime {
        self.date
            .parse()
            .unwrap_or_else(|e| panic!("fixture date {:?}: {e}", self.date))
    }
}

impl Case {
    pub fn options(&self, date: NaiveDateTime) -> RenderOptions {
        RenderOptions {
            add_generation_prompt: self.add_generation_prompt,
            tools: self.tools.clone(),
            extra: self.extra.clone(),
            date: Some(date),
        }
    }

    /// `None` when `render`'s result agrees with what transformers did, else what differs.
    pub fn check(&self, rendered: &Result<String, ChatError>) -> Option<String> {
        match (rendered, &self.expected, &self.error) {
            (Ok(got), Some(want), _) if got == want => None,
            (Ok(got), Some(want), _) => Some(format!(
                "output differs\n--- want\n{want}\n--- got\n{got}\n---"
            )),
            (Err(e), Some(_), _) => Some(format!("transformers renders it, we fail: {e}")),
            (Err(e), None, Some(want)) => error_disagrees(e, want),
            (Ok(got), None, Some(want)) => Some(format!(
                "transformers fails ({}), we render:\n{got}",
                want.message
            )),
            (_, None, None) => Some("fixture case has neither `expected` nor `error`".to_string()),
        }
    }
}

/// `None` when our failure agrees with transformers': a raise_exception with the same message, or any other failure
/// where transformers failed otherwise (a TypeError...; the messages of Python and minijinja differ).
pub fn error_disagrees(err: &ChatError, want: &ExpectedError) -> Option<String> {
    match err {
        ChatError::Raised { message, .. } if want.raised && *message == want.message => None,
        _ if want.raised => Some(format!(
            "want raise_exception({:?}), got: {err}",
            want.message
        )),
        ChatError::Raised { message, .. } => Some(format!(
            "want a failure ({}), got raise_exception({message:?})",
            want.message
        )),
        _ => None,
    }
}

/// Renders every case of a fixture file with `template` (or the case's own source) and returns the failures.
pub fn run_cases(file: &FixtureFile, template: Option<&ChatTemplate>) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    for case in &file.cases {
        let own;
        let template = match (&case.source, template) {
            (Some(source), _) => {
                own = ChatTemplate::new(&case.name, source, &file.bos_token, &file.eos_token);
                match &own {
                    Ok(t) => t,
                    Err(e) => {
                        failures.push(format!("{}: does not compile: {e}", case.name));
                        continue;
                    }
                }
            }
            (None, Some(t)) => t,
            (None, None) => panic!("case {} has no template", case.name),
        };
        let rendered = template.render(&case.messages, &case.options(file.date()));
        if let Some(problem) = case.check(&rendered) {
            failures.push(format!(
                "{} (add_generation_prompt={}): {problem}",
                case.name, case.add_generation_prompt
            ));
        }
    }
    (file.cases.len(), failures)
}

/// FNV-1a 64 of the UTF-8 bytes, as make_fixtures.py digests the corpus renders.
pub fn fnv1a64(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}
