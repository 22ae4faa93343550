//! Every template of llama.cpp's corpus (70 real chat templates, fetched by scripts/fetch-test-assets) rendered on
//! the fixture conversations and compared with transformers' renders, kept as digests in corpus-digests.json.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{ExpectedError, error_disagrees, fixtures_dir, fnv1a64};
use hearth_chat::{ChatError, ChatTemplate, Message, NaiveDateTime, RenderOptions};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

#[derive(Deserialize)]
struct Digests {
    date: String,
    bos_token: String,
    eos_token: String,
    cases: BTreeMap<String, CaseInput>,
    templates: BTreeMap<String, TemplateDigests>,
}

#[derive(Deserialize)]
struct CaseInput {
    messages: Vec<Message>,
    #[serde(default)]
    tools: Option<Vec<Json>>,
    #[serde(default)]
    extra: Map<String, Json>,
}

#[derive(Deserialize)]
struct TemplateDigests {
    source_fnv1a64: String,
    /// `<case>/gen` or `<case>/nogen` (add_generation_prompt) to the digest of transformers' output, or its error.
    results: BTreeMap<String, Outcome>,
}

#[derive(Deserialize)]
struct Outcome {
    fnv1a64: Option<String>,
    error: Option<ExpectedError>,
}

/// Where scripts/fetch-test-assets puts the templates (it prints the folder above this).
fn corpus_dir() -> PathBuf {
    let home = std::env::var_os("HEARTH_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hearth")))
        .expect("neither HEARTH_HOME nor HOME is set");
    let assets = home.join("test-assets/llama.cpp-0.3.36");
    assert!(
        assets.join(".complete").is_file(),
        "llama.cpp's chat template corpus is missing from {}: run scripts/fetch-test-assets first",
        assets.display()
    );
    assets.join("templates")
}

/// How a render can disagree with transformers.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Disagreement {
    OutputDiffers,
    OnlyWeFail,
    OnlyTransformersFails,
}

/// Disagreements minijinja cannot be made to avoid from outside, by template; any other fails the test.
const KNOWN: &[(&str, Disagreement, &str)] = &[
    (
        "meetkai-functionary-medium-v3.1.jinja",
        Disagreement::OutputDiffers,
        "`\"...\"|safe + text`: jinja2's Markup HTML-escapes the text added to it (its tool JSON comes out as \
         &#34;name&#34;...); minijinja concatenates plainly",
    ),
    (
        "CohereForAI-c4ai-command-r-plus-tool_use.jinja",
        Disagreement::OnlyTransformersFails,
        "without tools it loops over tools=None: Python raises TypeError, minijinja loops zero times",
    ),
    (
        "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
        Disagreement::OnlyTransformersFails,
        "without tools it loops over tools=None: Python raises TypeError, minijinja loops zero times",
    ),
    (
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        Disagreement::OnlyTransformersFails,
        "without tools it loops over tools=None: Python raises TypeError, minijinja loops zero times",
    ),
    (
        "llama-cpp-deepseek-r1.jinja",
        Disagreement::OnlyTransformersFails,
        "`tools | map(attribute='function') | tojson`: Python's map gives a generator json cannot serialize, \
         minijinja's gives a list",
    ),
];

#[derive(Default)]
struct Tally {
    identical: usize,
    both_fail: usize,
    disagree: Vec<(String, Disagreement)>,
}

#[test]
fn llama_cpp_corpus_matches_transformers() {
    let dir = corpus_dir();
    let path = fixtures_dir().join("corpus-digests.json");
    let digests: Digests =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("corpus-digests.json"))
            .expect("corpus-digests.json parses");
    let date: NaiveDateTime = digests.date.parse().expect("date");

    let mut tally = Tally::default();
    let mut templates_all_agree = 0;
    let mut unexpected = Vec::new();
    let mut known_seen = vec![false; KNOWN.len()];
    for (file, want) in &digests.templates {
        let source = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (re-run scripts/fetch-test-assets)",
                dir.join(file).display()
            )
        });
        assert_eq!(
            fnv1a64(&source),
            want.source_fnv1a64,
            "{file} is not the template the digests were made from: re-run crates/chat/tests/make_fixtures.py"
        );
        let template = ChatTemplate::new(
            file.as_str(),
            &source,
            &digests.bos_token,
            &digests.eos_token,
        );
        let mut all_agree = true;
        for (key, outcome) in &want.results {
            let (case_name, generation) = key.rsplit_once('/').expect("<case>/<gen|nogen>");
            let input = &digests.cases[case_name];
            let opts = RenderOptions {
                add_generation_prompt: generation == "gen",
                tools: input.tools.clone(),
                extra: input.extra.clone(),
                date: Some(date),
            };
            let rendered: Result<String, ChatError> = match &template {
                Ok(t) => t.render(&input.messages, &opts),
                // a compile error cannot be cloned: compiling again gives this case its own
                Err(_) => ChatTemplate::new(file.as_str(), &source, "", "")
                    .and_then(|t| t.render(&input.messages, &opts)),
            };
            let label = format!("{file} {key}");
            let (kind, verdict) = match (&rendered, outcome) {
                (
                    Ok(got),
                    Outcome {
                        fnv1a64: Some(want),
                        ..
                    },
                ) if fnv1a64(got) == *want => {
                    tally.identical += 1;
                    continue;
                }
                (
                    Ok(_),
                    Outcome {
                        fnv1a64: Some(_), ..
                    },
                ) => (Disagreement::OutputDiffers, "output differs".to_string()),
                (
                    Err(e),
                    Outcome {
                        fnv1a64: Some(_), ..
                    },
                ) => (Disagreement::OnlyWeFail, format!("we fail: {e}")),
                (
                    Err(e),
                    Outcome {
                        error: Some(want), ..
                    },
                ) => match error_disagrees(e, want) {
                    None => {
                        tally.both_fail += 1;
                        continue;
                    }
                    Some(problem) => (Disagreement::OutputDiffers, problem),
                },
                (
                    Ok(_),
                    Outcome {
                        error: Some(want), ..
                    },
                ) => (
                    Disagreement::OnlyTransformersFails,
                    format!("transformers fails ({}), we render", want.message),
                ),
                (
                    _,
                    Outcome {
                        fnv1a64: None,
                        error: None,
                    },
                ) => panic!("{label}: digest has no outcome"),
            };
            all_agree = false;
            tally.disagree.push((label.clone(), kind));
            match KNOWN.iter().position(|(f, k, _)| f == file && *k == kind) {
                Some(i) => known_seen[i] = true,
                None => unexpected.push(format!("{label}: {verdict}")),
            }
        }
        templates_all_agree += usize::from(all_agree);
    }

    let total = digests
        .templates
        .values()
        .map(|t| t.results.len())
        .sum::<usize>();
    let count = |kind| tally.disagree.iter().filter(|(_, k)| *k == kind).count();
    println!(
        "corpus: {} templates, {templates_all_agree} agree with transformers on every case\n\
         renders: {total}; identical {}, both fail {}, output differs {}, only we fail {}, only transformers fails {}",
        digests.templates.len(),
        tally.identical,
        tally.both_fail,
        count(Disagreement::OutputDiffers),
        count(Disagreement::OnlyWeFail),
        count(Disagreement::OnlyTransformersFails),
    );
    for (file, kind, reason) in KNOWN {
        println!("  known: {file}: {kind:?}: {reason}");
    }
    assert!(
        unexpected.is_empty(),
        "{} renders disagree with transformers:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    let stale: Vec<_> = KNOWN
        .iter()
        .zip(&known_seen)
        .filter(|(_, seen)| !**seen)
        .map(|(k, _)| k.0)
        .collect();
    assert!(
        stale.is_empty(),
        "KNOWN lists disagreements that no longer occur (remove them): {stale:?}"
    );
}
