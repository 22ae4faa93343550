#!/usr/bin/env python3
"""Reference renders for hearth-chat's tests, made with Hugging Face transformers' own chat-template renderer.

Writes, under tests/fixtures/chat/ (repository root):
  <name>.json         one per template: the template (a built-in name or a file in tests/fixtures/chat/templates/),
                      the special tokens, and cases (inputs + expected output, or the error transformers raised)
  corpus-digests.json every template of llama.cpp's corpus (scripts/fetch-test-assets) rendered on the same cases,
                      kept as FNV-1a-64 digests of the outputs so the repository stays small

Needs: transformers (no torch) and jinja2; made with transformers 5.24.0, jinja2 3.1.6:
  python3 -m venv /tmp/chatvenv && /tmp/chatvenv/bin/pip install transformers==5.24.0 jinja2==3.1.6
  /tmp/chatvenv/bin/python crates/chat/tests/make_fixtures.py

The renders go through `render_jinja_template`, the function `apply_chat_template` calls, with the inputs prepared as
`apply_chat_template` prepares them (keys whose value is None dropped; the special tokens as template variables);
`strftime_now` reads a fixed date so the outputs are reproducible.
"""

import datetime as _dt
import json
import os
import shutil
import subprocess
import sys

import jinja2
import transformers
from transformers.utils import chat_template_utils as ctu

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CRATE = os.path.join(ROOT, "crates", "chat")
OUT = os.path.join(ROOT, "tests", "fixtures", "chat")

# The date `strftime_now` sees in every case (hearth's RenderOptions::date); not the Llama 3 default "26 Jul 2024",
# so a template that ignores it shows.
DATE = _dt.datetime(2025, 3, 14, 9, 26, 53)


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return DATE


ctu.datetime = _FixedDatetime  # transformers' strftime_now calls datetime.now().strftime(fmt)

# ---------------------------------------------------------------------------------------------------- the cases

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city — in °C",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Zürich\""},
                "days": {"type": "integer", "minimum": 1, "default": 1},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a timezone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    },
}
TOOL_CALL = {
    "id": "call9abc1",  # nine characters: Mistral's template requires exactly that
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 2, "ratio": 0.5, "exact": True}},
}

CASES = {
    "user_only": dict(messages=[{"role": "user", "content": "Hello!"}]),
    "system_user": dict(messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
    ]),
    "multi_turn": dict(messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another one?"},
    ]),
    "whitespace": dict(messages=[
        {"role": "user", "content": "  padded question \n\n"},
        {"role": "assistant", "content": "\n answer with\ttab  "},
        {"role": "user", "content": "line one\nline two"},
    ]),
    "unicode": dict(messages=[
        {"role": "system", "content": "Réponds en français — s'il te plaît."},
        {"role": "user", "content": "日本語 🙂 \"quotes\" \\ back\\slash <b>html</b> & ünïcödé"},
        {"role": "assistant", "content": "D'accord : « très bien » ✓"},
        {"role": "user", "content": "Ω≈ç√∫ 🚀\u00a0nbsp"},
    ]),
    "list_parts": dict(messages=[
        {"role": "system", "content": [{"type": "text", "text": "You describe things."}]},
        {"role": "user", "content": [{"type": "text", "text": "Describe "}, {"type": "text", "text": "a cat."}]},
    ]),
    "tools_list": dict(messages=[
        {"role": "system", "content": "Use tools when needed."},
        {"role": "user", "content": "Weather in Zürich?"},
    ], tools=[WEATHER_TOOL, TIME_TOOL]),
    "tool_calls": dict(messages=[
        {"role": "user", "content": "Weather in Zürich for two days?"},
        {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
        {"role": "tool", "content": "{\"temp\": 21, \"sky\": \"clear\"}", "tool_call_id": "call9abc1",
         "name": "get_weather"},
        {"role": "assistant", "content": "It is 21 °C and clear."},
        {"role": "user", "content": "Thanks."},
    ], tools=[WEATHER_TOOL]),
    "reasoning": dict(messages=[
        {"role": "user", "content": "What is 3*4?"},
        {"role": "assistant", "content": "12", "reasoning_content": "3 times 4 is 12."},
        {"role": "user", "content": "And 5*6?"},
    ]),
    "thinking_off": dict(messages=[
        {"role": "user", "content": "Quick: capital of France?"},
    ], extra={"enable_thinking": False}),
    "roles_not_alternating": dict(messages=[
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
    ]),
}

# Built-in templates (crates/chat/templates/<name>.jinja) with the special tokens their models use.
BUILTINS = {
    "gemma3": ("<bos>", "<eos>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "qwen2": ("<|endoftext|>", "<|im_end|>"),
    "qwen3": ("<|endoftext|>", "<|im_end|>"),
}

# A handful of llama.cpp corpus templates, copied into tests/fixtures/chat/templates/, for what they exercise.
CORPUS_FIXTURES = {
    "LFM2.5-8B-A1B": ("<|startoftext|>", "<|im_end|>"),  # {% generation %}, `| string`, macros, .items()
    "google-gemma-2-2b-it": ("<bos>", "<eos>"),  # raise_exception on a system message
    "mistralai-Mistral-Nemo-Instruct-2407": ("<s>", "</s>"),  # tools + tojson, tool-call id checks
    # macros over JSON schemas. It iterates `tools` unchecked: without tools Python fails on `for t in None` while
    # minijinja loops zero times, so only the cases with tools
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": ("<|begin_of_text|>", "<|im_end|>", ["tools_list", "tool_calls"]),
    "ibm-granite-granite-3.3-2B-Instruct": ("<|end_of_text|>", "<|end_of_text|>"),  # strftime_now, tojson(indent=4)
    "microsoft-Phi-3.5-mini-instruct": ("<s>", "<|endoftext|>"),
}

# Small templates, each for one piece of transformers' environment: `tojson` and its options, Python's str() of
# values, `{% generation %}` tags amid whitespace control, raise_exception, strftime_now, loop controls, methods.
JSON_VALUE = {"name": "Zoë", "quote": "say \"hi\"\\", "ctrl": "a\u0001b\u007f\n", "emoji": "🙂", "int": -3,
              "big": 12345678901234, "float": 0.1, "exp": 1e16, "tiny": 1e-05, "whole": 2.0, "yes": True, "no": False,
              "nothing": None, "empty_list": [], "empty_dict": {}, "nested": {"b": [1, [2, {"c": "d"}]], "a": "<&>"}}
SNIPPETS = [
    ("tojson", "{{ value | tojson }}", {"value": JSON_VALUE}),
    ("tojson_indent2", "{{ value | tojson(indent=2) }}", {"value": JSON_VALUE}),
    ("tojson_indent4_sorted", "{{ value | tojson(indent=4, sort_keys=True) }}", {"value": JSON_VALUE}),
    ("tojson_indent_tab", "{{ value | tojson(indent='\\t') }}", {"value": JSON_VALUE}),
    ("tojson_indent0", "{{ value | tojson(indent=0) }}", {"value": JSON_VALUE}),
    ("tojson_compact", "{{ value | tojson(separators=(',', ':')) }}", {"value": JSON_VALUE}),
    ("tojson_ascii", "{{ value | tojson(ensure_ascii=True) }}", {"value": JSON_VALUE}),
    ("tojson_ascii_false", "{{ value | tojson(ensure_ascii=false) }}", {"value": JSON_VALUE}),
    ("tojson_positional", "{{ value | tojson(False, 1) }}", {"value": [1, {"a": None}]}),
    ("tojson_scalars", "{{ 1 | tojson }} {{ 1.5 | tojson }} {{ 'x' | tojson }} {{ none | tojson }} {{ true | tojson }}",
     {}),
    ("print_values", "{{ value }}|{{ value.nested }}|{{ value.float }}|{{ value.exp }}|{{ value.yes }}|"
                     "{{ value.nothing }}|{{ value.missing }}|{{ value.empty_list }}", {"value": JSON_VALUE}),
    ("print_string_filter", "{{ value.nested | string }}|{{ value.whole | string }}|{{ value.no | string }}",
     {"value": JSON_VALUE}),
    ("print_repr_quotes", "{{ ['it\\'s', 'say \"x\"', 'tab\\there', 'both \\' and \"'] }}", {}),
    ("generation_tags",
     "{% for m in messages %}\n  {% generation %}\n  [{{ m.content }}]\n  {% endgeneration %}\n{% endfor %}\n"
     "{%- for m in messages -%}\n{%- generation -%}\n<{{ m.role }}>\n{%- endgeneration -%}\n{%- endfor %}|"
     "{% generation %}{% set inner = 1 %}{% endgeneration %}{{ inner is defined }}",
     {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
    ("raise_exception", "before{{ raise_exception('Only user and assistant roles are supported!') }}after", {}),
    ("strftime_now", "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S') }}|"
                     "{{ strftime_now('%A, %B %-d') }}", {}),
    ("defaults", "{{ tools is none }} {{ documents is defined }} {{ documents is none }} {{ add_generation_prompt }} "
                 "{{ bos_token }}{{ eos_token }} {{ custom is defined }}", {}),
    ("loop_controls", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 4 %}{% break %}"
                      "{% endif %}{{ i }}{% endfor %}", {}),
    ("str_methods", "{{ ' a b '.strip() }}|{{ 'x,y'.split(',') }}|{{ 'abc'.startswith('a') }}|"
                    "{{ '\\n\\nq\\n'.lstrip('\\n') }}|{{ 'A'.lower() }}{{ 'b'.upper() }}|"
                    "{{ {'k': 1}.items() | list }}|{{ {'k': 1}.get('k') }}{{ {'k': 1}.get('z', 'd') }}", {}),
    ("python_whitespace", "[{{ value | trim }}][{{ value.strip() }}][{{ value.lstrip() }}][{{ value.rstrip() }}]"
                          "[{{ 'xxaxx' | trim('x') }}][{{ [1, 'a'] | trim }}]",
     {"value": "\u001f\u00a0\u3000 \t\n text \u2003\u001c\u0085"}),
    ("whitespace_control", "  {% if true %}\n    kept\n  {% endif %}\n  {%- if true %} x {% endif -%}  \n|", {}),
]

MESSAGE_KEYS = ("role", "content", "reasoning_content", "tool_calls", "tool_call_id", "name")


def canonical_message(m):
    """The message with its keys in the order hearth's `Message` serializes them, so both sides hand the template
    identical dicts (the order shows wherever a template iterates over or dumps a message)."""
    assert set(m) <= set(MESSAGE_KEYS), m
    return {k: m[k] for k in MESSAGE_KEYS if k in m and m[k] is not None}


def render(source, case, add_generation_prompt, bos, eos):
    """{"expected": text} or {"error": {"raised": bool, "message": str}} (raised: the template's raise_exception)."""
    messages = [canonical_message(m) for m in case["messages"]]
    kwargs = {"bos_token": bos, "eos_token": eos, **case.get("extra", {})}
    try:
        out, _ = ctu.render_jinja_template(conversations=[messages], tools=case.get("tools"), chat_template=source,
                                           add_generation_prompt=add_generation_prompt, **kwargs)
        return {"expected": out[0]}
    except jinja2.exceptions.TemplateError as e:
        # raise_exception raises the base TemplateError; jinja's own failures are subclasses of it
        return {"error": {"raised": type(e) is jinja2.exceptions.TemplateError, "message": str(e)}}
    except Exception as e:  # TypeError, ValueError...: the template did something Python refuses
        return {"error": {"raised": False, "message": f"{type(e).__name__}: {e}"}}


def cases_for(source, bos, eos, only=None):
    out = []
    for name, case in CASES.items():
        if only is not None and name not in only:
            continue
        for agp in (False, True):
            entry = {"name": name, "add_generation_prompt": agp,
                     "messages": [canonical_message(m) for m in case["messages"]]}
            if "tools" in case:
                entry["tools"] = case["tools"]
            if "extra" in case:
                entry["extra"] = case["extra"]
            entry.update(render(source, case, agp, bos, eos))
            out.append(entry)
    return out


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def dump(path, value):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")


def corpus_dir():
    if len(sys.argv) > 1:
        return sys.argv[1]
    out = subprocess.run([os.path.join(ROOT, "scripts", "fetch-test-assets")], check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()[-1]
    return os.path.join(out, "templates")


def main():
    os.makedirs(os.path.join(OUT, "templates"), exist_ok=True)
    header = {"transformers": transformers.__version__, "jinja2": jinja2.__version__, "date": DATE.isoformat()}
    summary = []

    for name, (bos, eos) in BUILTINS.items():
        with open(os.path.join(CRATE, "templates", f"{name}.jinja"), encoding="utf-8") as f:
            source = f.read()
        cases = cases_for(source, bos, eos)
        dump(os.path.join(OUT, f"builtin-{name}.json"),
             {**header, "template": {"builtin": name}, "bos_token": bos, "eos_token": eos, "cases": cases})
        summary.append((f"builtin-{name}", cases))

    snippets = []
    for name, source, variables in SNIPPETS:
        variables = dict(variables)
        messages = [canonical_message(m) for m in variables.pop("messages", [])]
        entry = {"name": name, "source": source, "messages": messages, "extra": variables}
        entry.update(render(source, {"messages": messages, "extra": variables}, False, "<s>", "</s>"))
        snippets.append(entry)
    dump(os.path.join(OUT, "snippets.json"), {**header, "bos_token": "<s>", "eos_token": "</s>", "cases": snippets})

    corpus = corpus_dir()
    for name, (bos, eos, *only) in CORPUS_FIXTURES.items():
        rel = f"templates/{name}.jinja"
        shutil.copyfile(os.path.join(corpus, f"{name}.jinja"), os.path.join(OUT, rel))
        with open(os.path.join(OUT, rel), encoding="utf-8") as f:
            source = f.read()
        cases = cases_for(source, bos, eos, *only)
        dump(os.path.join(OUT, f"corpus-{name}.json"),
             {**header, "template": {"file": rel}, "bos_token": bos, "eos_token": eos, "cases": cases})
        summary.append((f"corpus-{name}", cases))

    # Every corpus template on every case, as digests; generic special tokens.
    digests = {}
    for fname in sorted(os.listdir(corpus)):
        if not fname.endswith(".jinja"):
            continue
        with open(os.path.join(corpus, fname), encoding="utf-8") as f:
            source = f.read()
        results = {}
        for case in cases_for(source, "<s>", "</s>"):
            key = f"{case['name']}/{'gen' if case['add_generation_prompt'] else 'nogen'}"
            if "expected" in case:
                results[key] = {"fnv1a64": fnv1a64(case["expected"]), "len": len(case["expected"].encode())}
            else:
                results[key] = {"error": case["error"]}
        digests[fname] = {"source_fnv1a64": fnv1a64(source), "results": results}
    cases = {name: {k: v for k, v in case.items()} for name, case in CASES.items()}
    for case in cases.values():
        case["messages"] = [canonical_message(m) for m in case["messages"]]
    dump(os.path.join(OUT, "corpus-digests.json"),
         {**header, "bos_token": "<s>", "eos_token": "</s>", "cases": cases, "templates": digests})

    for name, cases in summary:
        errors = sum("error" in c for c in cases)
        print(f"{name}: {len(cases)} cases, {errors} expected errors")
    ok = sum("fnv1a64" in r for t in digests.values() for r in t["results"].values())
    total = sum(len(t["results"]) for t in digests.values())
    print(f"corpus: {len(digests)} templates, {ok}/{total} renders succeed in transformers")


if __name__ == "__main__":
    main()
