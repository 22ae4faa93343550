//! The template environment, set up as transformers sets up jinja2 for chat templates:
//! `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, generation])`,
//! its `tojson` filter and its `raise_exception` and `strftime_now` globals.

use std::borrow::Cow;
use std::fmt;

use chrono::NaiveDateTime;
use chrono::format::{Item, StrftimeItems};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

use crate::python::{JsonOptions, json_dumps, py_str};

/// The error `raise_exception(message)` raises, attached as the source of the render error so that
/// [`crate::ChatError::Raised`] can tell the template's own refusal apart from a failure of the template.
#[derive(Debug)]
pub(crate) struct RaisedException(pub String);

impl fmt::Display for RaisedException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// A render's budget: Qwen3's template on 2,000 messages (1.3 MB of prompt) uses under 4% of it.
const FUEL: u64 = 5_000_000;

pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build();
    env.set_syntax(syntax.expect("the default delimiters are valid"));
    // A GGUF's template is code from the internet: bound what one render may do (about FUEL instructions or
    // FUEL * 64 bytes) so a hostile or broken one fails instead of hanging or exhausting memory.
    env.set_fuel(Some(FUEL));
    // Python's str methods (`.strip()`, `.split()`, `.startswith()`, `.items()`, `.get()`...) that templates call.
    env.set_unknown_method_callback(python_methods);
    // jinja2 built-ins minijinja keeps in contrib (truncate, striptags, cycler, joiner...).
    minijinja_contrib::add_to_environment(&mut env);
    env.add_filter("tojson", tojson);
    env.add_filter("string", |value: Value| py_str(&value));
    // jinja2: `str(value).strip(chars)`, with Python's whitespace
    env.add_filter("trim", |value: Value, chars: Option<String>| match chars {
        Some(chars) => py_str(&value)
            .trim_matches(|c| chars.contains(c))
            .to_string(),
        None => py_str(&value).trim_matches(is_py_space).to_string(),
    });
    // minijinja iterates none as empty, Python refuses: `tools is iterable` must be false for tools=None
    // (Qwen3-Coder's and Nemotron's templates go on to `tools | length`).
    env.add_test("iterable", |value: Value| {
        !value.is_none() && value.try_iter().is_ok()
    });
    env.add_function(
        "raise_exception",
        |message: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message.clone())
                .with_source(RaisedException(message)))
        },
    );
    // jinja2 prints str(value): Python's forms of floats, lists and dicts (`1e+16`, `['a', True]`).
    env.set_formatter(|out, _state, value| {
        let written = match value.kind() {
            ValueKind::String => out.write_str(value.as_str().unwrap_or_default()),
            _ => out.write_str(&py_str(value)),
        };
        written.map_err(Error::from)
    });
    env
}

/// Python's `str.isspace`: Rust's whitespace plus the separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// minijinja-contrib's Python methods, with `strip()`, `lstrip()` and `rstrip()` trimming Python's whitespace.
fn python_methods(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    // no argument, or None: Python's whitespace; with characters, pycompat already does what Python does
    if let (Some(s), [] | [_]) = (value.as_str(), args)
        && args.first().is_none_or(|a| a.is_none())
    {
        match method {
            "strip" => return Ok(Value::from(s.trim_matches(is_py_space))),
            "lstrip" => return Ok(Value::from(s.trim_start_matches(is_py_space))),
            "rstrip" => return Ok(Value::from(s.trim_end_matches(is_py_space))),
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
/// (jinja2's own filter would HTML-escape and sort keys; minijinja's writes compact JSON.) Arguments may be given
/// by position or by name, as in Python.
fn tojson(value: Value, args: Rest<Value>, kwargs: Kwargs) -> Result<String, Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > NAMES.len() {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            "tojson takes at most 4 arguments",
        ));
    }
    let arg = |i: usize| -> Result<Option<Value>, Error> {
        let by_name: Option<Value> = kwargs.get(NAMES[i])?;
        match (args.get(i), by_name) {
            (Some(_), Some(_)) => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson got multiple values for argument '{}'", NAMES[i]),
            )),
            (Some(v), None) => Ok(Some(v.clone())),
            (None, v) => Ok(v),
        }
    };
    let present = |v: Option<Value>| v.filter(|v| !v.is_none() && !v.is_undefined());
    let ensure_ascii = present(arg(0)?).is_some_and(|v| v.is_true());
    let indent = match present(arg(1)?) {
        None => None,
        // json.dumps: an int is that many spaces (none when <= 0 but still one item per line); a str is used as is
        Some(v) if v.kind() == ValueKind::String => {
            Some(v.as_str().unwrap_or_default().to_string())
        }
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an int or a str",
                ));
            }
        },
    };
    let sort_keys = present(arg(3)?).is_some_and(|v| v.is_true());
    let mut opts = JsonOptions::new(ensure_ascii, indent, sort_keys);
    if let Some(separators) = present(arg(2)?) {
        let pair: Vec<Value> = separators.try_iter()?.collect();
        match pair.as_slice() {
            [item, key] if item.as_str().is_some() && key.as_str().is_some() => {
                opts.item_separator = item.as_str().unwrap_or_default().to_string();
                opts.key_separator = key.as_str().unwrap_or_default().to_string();
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: separators must be a pair of strings (item_separator, key_separator)",
                ));
            }
        }
    }
    kwargs.assert_all_used()?;
    json_dumps(&value, &opts)
}

/// `strftime_now(format)` for a render: transformers calls `datetime.now().strftime(format)` (local time); a render
/// may fix the date instead so its output is reproducible.
pub(crate) fn strftime_now(date: Option<NaiveDateTime>) -> Value {
    Value::from_function(
        move |_state: &State, format: String| -> Result<String, Error> {
            let now = date.unwrap_or_else(|| chrono::Local::now().naive_local());
            strftime(&now, &format)
        },
    )
}

fn strftime(date: &NaiveDateTime, format: &str) -> Result<String, Error> {
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: unsupported format {format:?}"),
        ));
    }
    let mut out = String::new();
    fmt::write(
        &mut out,
        format_args!("{}", date.format_with_items(items.into_iter())),
    )
    .map_err(|_| {
        // chrono refuses specifiers a naive date cannot fill (%z, %Z)
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: cannot format {format:?} without a time zone"),
        )
    })?;
    Ok(out)
}

/// Rewrites transformers' `{% generation %}` ... `{% endgeneration %}` (its extension marking assistant text for
/// training masks) as `{% with %}` ... `{% endwith %}`: the body renders unchanged in a scope of its own, as inside
/// jinja2's CallBlock, and whitespace control (`{%-`, `-%}`, trim_blocks, lstrip_blocks) acts on the tags as before.
pub(crate) fn rewrite_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let (before, tag) = rest.split_at(start + 2);
        out.push_str(before);
        rest = tag;
        let marker = usize::from(rest.starts_with(['-', '+']));
        let name_at = marker + (rest[marker..].len() - rest[marker..].trim_start().len());
        let name = &rest[name_at..];
        for (keyword, replacement) in [("endgeneration", "endwith"), ("generation", "with")] {
            let Some(after) = name.strip_prefix(keyword) else {
                continue;
            };
            // the whole word: not `generation_prompt` or `generations`
            if after
                .chars()
                .next()
                .is_some_and(|c| !(c.is_alphanumeric() || c == '_'))
            {
                out.push_str(&rest[..name_at]);
                out.push_str(replacement);
                rest = after;
                break;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_scopes() {
        let src = "{%- generation -%}a{% endgeneration %}\n{%generation%}{%+ endgeneration +%}{% if generationx %}{%填";
        assert_eq!(
            rewrite_generation_tags(src),
            "{%- with -%}a{% endwith %}\n{%with%}{%+ endwith +%}{% if generationx %}{%填"
        );
        assert!(matches!(
            rewrite_generation_tags("{{ x }}"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn strftime_formats_like_python() {
        let date = chrono::NaiveDate::from_ymd_opt(2025, 3, 4)
            .unwrap()
            .and_hms_opt(9, 5, 7)
            .unwrap();
        assert_eq!(strftime(&date, "%d %b %Y").unwrap(), "04 Mar 2025");
        assert_eq!(
            strftime(&date, "%B %-d, %Y %H:%M:%S %A").unwrap(),
            "March 4, 2025 09:05:07 Tuesday"
        );
        assert_eq!(strftime(&date, "%Y-%m-%d").unwrap(), "2025-03-04");
        assert!(strftime(&date, "%Q").is_err());
    }
}
