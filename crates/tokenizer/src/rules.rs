//! llama.cpp's load-time rules keyed on token texts and model names: end-of-turn and FIM ids the
//! metadata left out, the end-of-generation set, and the attribute fixes that come with them.

use crate::spec::Source;
use crate::special::SpecialMatcher;
use crate::vocab::{SpecialIds, TokenAttrs, Vocab};

/// The special-token detection llama.cpp does by token text at load time: EOT/EOM/FIM ids the
/// metadata did not give, the end-of-generation set, and the attribute fixes that come with them.
/// Returns the sorted EOG ids.
pub(crate) fn detect_special_tokens(vocab: &mut Vocab, ids: &mut SpecialIds) -> Vec<u32> {
    const EOT: &[&str] = &[
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "<｜end▁of▁sentence｜>",
        "<end_of_utterance>",
    ];
    const EOM: &[&str] = &["<|eom_id|>"];
    const FIM_PRE: &[&str] = &[
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ];
    const FIM_SUF: &[&str] = &[
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ];
    const FIM_MID: &[&str] = &[
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ];
    const FIM_PAD: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
    const FIM_REP: &[&str] = &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ];
    const FIM_SEP: &[&str] = &["<|file_sep|>"];
    const EOG: &[&str] = &[
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
        "<｜end▁of▁sentence｜>",
        "[e~[",
    ];

    let make_control =
        |vocab: &mut Vocab, id: u32| vocab.attrs[id as usize].0 |= TokenAttrs::CONTROL;
    // llama.cpp takes whichever candidate its hash map yields first; we take the first name in
    // its list that the vocabulary has, which is deterministic (and picks `<|im_end|>` over
    // `<|endoftext|>` for Qwen).
    for (slot, names) in [
        (&mut ids.eot, EOT),
        (&mut ids.eom, EOM),
        (&mut ids.fim_pre, FIM_PRE),
        (&mut ids.fim_suf, FIM_SUF),
        (&mut ids.fim_mid, FIM_MID),
        (&mut ids.fim_pad, FIM_PAD),
        (&mut ids.fim_rep, FIM_REP),
        (&mut ids.fim_sep, FIM_SEP),
    ] {
        if slot.is_none()
            && let Some(id) = names.iter().find_map(|n| vocab.find(n.as_bytes()))
        {
            *slot = Some(id);
            make_control(vocab, id);
        }
    }

    // Control tokens named "unused..." are unused.
    for id in 0..vocab.len() as u32 {
        if vocab.attrs(id).is_control() && vocab.text(id).contains("unused") {
            vocab.attrs[id as usize].0 |= TokenAttrs::UNUSED;
        }
    }

    let mut eog: Vec<u32> = [ids.fim_pad, ids.fim_rep, ids.fim_sep]
        .into_iter()
        .flatten()
        .collect();
    for name in EOG {
        if let Some(id) = vocab.find(name.as_bytes()) {
            eog.push(id);
            make_control(vocab, id);
        }
    }
    // gpt-oss: these always render, so they are user-defined whatever the file says.
    for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(id) = vocab.find(name.as_bytes()) {
            vocab.attrs[id as usize] = TokenAttrs(TokenAttrs::USER_DEFINED);
        }
    }
    eog.extend([ids.eos, ids.eot, ids.eom].into_iter().flatten());
    eog.sort_unstable();
    eog.dedup();

    fn find_in(eog: &[u32], vocab: &Vocab, names: &[&str]) -> Option<u32> {
        eog.iter()
            .copied()
            .find(|&id| names.contains(&vocab.text(id)))
    }
    let has = |eog: &[u32], vocab: &Vocab, names: &[&str]| find_in(eog, vocab, names).is_some();
    // o200k_harmony and solar-open: `<|end|>` ends a message, not the generation.
    let call = ["<|call|>", "<|calls|>"];
    if let Some(end) = find_in(&eog, vocab, &["<|end|>"])
        && ((has(&eog, vocab, &["<|return|>"]) && has(&eog, vocab, &call))
            || (has(&eog, vocab, &call) && has(&eog, vocab, &["<|flush|>"])))
    {
        eog.retain(|&id| id != end);
        vocab.attrs[end as usize] = TokenAttrs(TokenAttrs::USER_DEFINED);
    }
    // Gemma 4 and PLaMo have an ordinary `</s>`.
    if let Some(s) = find_in(&eog, vocab, &["</s>"])
        && has(&eog, vocab, &["<|tool_response>", "<|plamo:eos|>"])
    {
        eog.retain(|&id| id != s);
        vocab.attrs[s as usize] = TokenAttrs(TokenAttrs::NORMAL);
    }
    eog
}

/// Per-model token attributes llama.cpp sets by name after loading.
pub(crate) fn apply_model_rules(vocab: &mut Vocab, specials: &SpecialMatcher, src: &Source<'_>) {
    fn set(vocab: &mut Vocab, text: &str, bit: u16, on: bool) {
        if let Some(id) = vocab.find(text.as_bytes()) {
            let a = &mut vocab.attrs[id as usize].0;
            *a = if on { *a | bit } else { *a & !bit };
        }
    }
    let name = src.model_name.unwrap_or("").to_lowercase();
    let pre = src.pre.unwrap_or("");
    let arch = src.architecture.unwrap_or("");
    if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
        .iter()
        .any(|p| pre.contains(p))
        || ["nomic-bert-moe", "jina-bert-v3"]
            .iter()
            .any(|a| arch.contains(a))
    {
        set(vocab, "<mask>", TokenAttrs::LSTRIP, true);
    } else if name.contains("phi-3") || name.contains("phi3") {
        // Phi-3's special tokens swallow the whitespace after them.
        for &id in specials.order() {
            vocab.attrs[id as usize].0 |= TokenAttrs::RSTRIP;
        }
        set(vocab, "</s>", TokenAttrs::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(vocab, t, TokenAttrs::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set(vocab, "[MASK]", TokenAttrs::LSTRIP, true);
    }
}
