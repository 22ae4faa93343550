//! Python's text forms of template values, where jinja2 (Python) and minijinja (Rust) would print differently:
//! `json.dumps` for the `tojson` filter and `str()` for `{{ value }}`.

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// The options of `json.dumps` that transformers' `tojson` passes through.
#[derive(Clone, Debug)]
pub(crate) struct JsonOptions {
    pub ensure_ascii: bool,
    /// `None`: one line; `Some(s)`: one item per line, indented by `s` per level (`indent=4` is four spaces).
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    pub sort_keys: bool,
}

impl JsonOptions {
    /// `json.dumps` defaults for an indent: separators `(", ", ": ")` on one line, `(",", ": ")` when indenting.
    pub fn new(ensure_ascii: bool, indent: Option<String>, sort_keys: bool) -> JsonOptions {
        let item_separator = if indent.is_some() { "," } else { ", " }.to_string();
        JsonOptions {
            ensure_ascii,
            indent,
            item_separator,
            key_separator: ": ".to_string(),
            sort_keys,
        }
    }
}

/// `json.dumps(value, ...)`.
pub(crate) fn json_dumps(value: &Value, opts: &JsonOptions) -> Result<String, Error> {
    let mut out = String::new();
    dump(&mut out, value, opts, 0)?;
    Ok(out)
}

fn dump(out: &mut String, value: &Value, opts: &JsonOptions, depth: usize) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&number(value, FloatStyle::Json)),
        ValueKind::String => {
            json_string(out, value.as_str().unwrap_or_default(), opts.ensure_ascii)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            container(out, '[', ']', &items, opts, depth, |out, item, depth| {
                dump(out, item, opts, depth)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if opts.sort_keys {
                // Python sorts str keys by code point, which is UTF-8 byte order
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            container(
                out,
                '{',
                '}',
                &entries,
                opts,
                depth,
                |out, (key, item), depth| {
                    json_string(out, key, opts.ensure_ascii);
                    out.push_str(&opts.key_separator);
                    dump(out, item, opts, depth)
                },
            )?;
        }
        // jinja2's Undefined, bytes, macros, namespaces...: Python's json refuses them too
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: object of type {kind} is not JSON serializable"),
            ));
        }
    }
    Ok(())
}

/// `[a, b]` / `{"k": v}` with `json.dumps`' layout: items on one line, or one per line when indenting.
fn container<T>(
    out: &mut String,
    open: char,
    close: char,
    items: &[T],
    opts: &JsonOptions,
    depth: usize,
    mut item: impl FnMut(&mut String, &T, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(indent) = &opts.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(indent);
            }
        }
    };
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&opts.item_separator);
        }
        newline(out, depth + 1);
        item(out, it, depth + 1)?;
    }
    newline(out, depth);
    out.push(close);
    Ok(())
}

/// A dict key as `json.dumps` writes it: str as is; int, float, bool and None turned into their JSON text.
fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::Number => Ok(number(key, FloatStyle::Json)),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_string()),
        ValueKind::None => Ok("null".to_string()),
        kind => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
        )),
    }
}

/// A JSON string literal with the escapes of Python's json: `ensure_ascii=False` escapes only `"`, `\` and
/// U+0000..U+001F; `ensure_ascii=True` also writes everything outside ' '..='~' as `\uXXXX` (UTF-16 pairs above
/// U+FFFF).
fn json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[derive(Clone, Copy, PartialEq)]
enum FloatStyle {
    /// `json.dumps`: `NaN`, `Infinity`, `-Infinity`.
    Json,
    /// `str()` / `repr()`: `nan`, `inf`, `-inf`.
    Python,
}

/// An int as its digits; a float as Python's `repr(float)`.
fn number(value: &Value, style: FloatStyle) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    match f64::try_from(value.clone()) {
        Ok(f) => float_repr(f, style),
        Err(_) => value.to_string(),
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip (Rust finds the same ones), written in positional
/// notation for exponents -4..16 and as `1e+16` / `1e-05` outside, always with a `.0` when it would look like an int.
fn float_repr(f: f64, style: FloatStyle) -> String {
    if f.is_nan() {
        return if style == FloatStyle::Json {
            "NaN"
        } else {
            "nan"
        }
        .to_string();
    }
    if f.is_infinite() {
        let sign = if f < 0.0 { "-" } else { "" };
        return format!(
            "{sign}{}",
            if style == FloatStyle::Json {
                "Infinity"
            } else {
                "inf"
            }
        );
    }
    // `{:e}` gives the shortest round-trip digits as d.ddddde±x
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let (sign, mantissa) = mantissa
        .strip_prefix('-')
        .map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{exp_sign}{:02}", exp.abs())
    }
}

/// Python's `str(value)`, which jinja2 prints for `{{ value }}`: strings as they are, `True`/`False`/`None`,
/// floats as `repr`, lists and dicts with their items' `repr`. Undefined prints as nothing.
pub(crate) fn py_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        ValueKind::Undefined => String::new(),
        _ => py_repr(value),
    }
}

fn py_repr(value: &Value) -> String {
    match value.kind() {
        ValueKind::None => "None".to_string(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.to_string(),
        ValueKind::Number => number(value, FloatStyle::Python),
        ValueKind::String => str_repr(value.as_str().unwrap_or_default()),
        ValueKind::Seq => match value.try_iter() {
            Ok(items) => {
                let items: Vec<String> = items.map(|v| py_repr(&v)).collect();
                match (value.is_tuple(), items.len()) {
                    (true, 1) => format!("({},)", items[0]),
                    (true, _) => format!("({})", items.join(", ")),
                    (false, _) => format!("[{}]", items.join(", ")),
                }
            }
            Err(_) => value.to_string(),
        },
        ValueKind::Map => match value.try_iter() {
            Ok(keys) => {
                let entries: Vec<String> = keys
                    .map(|k| {
                        let v = value.get_item(&k).unwrap_or_default();
                        format!("{}: {}", py_repr(&k), py_repr(&v))
                    })
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }
            Err(_) => value.to_string(),
        },
        // Undefined inside a container, iterators, macros...: minijinja's own text
        _ => value.to_string(),
    }
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`; `\\`, the quote, `\n`, `\r`, `\t`
/// escaped; other unprintable characters as `\xNN`, `\uNNNN` or `\UNNNNNNNN`.
fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_printable(c) => {
                let cp = c as u32;
                if cp <= 0xff {
                    out.push_str(&format!("\\x{cp:02x}"));
                } else if cp <= 0xffff {
                    out.push_str(&format!("\\u{cp:04x}"));
                } else {
                    out.push_str(&format!("\\U{cp:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable` for one character: false for control characters (Cc), format characters (Cf),
/// separators other than the ASCII space (Zs, Zl, Zp) and private-use code points. Unassigned code points (which
/// Python also escapes) are not known here and count as printable.
fn is_printable(c: char) -> bool {
    let cp = c as u32;
    let unprintable = c.is_control()
        || matches!(cp,
            0xA0 | 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2 | 0x1680 | 0x180E
            | 0x2000..=0x200F | 0x2028..=0x202F | 0x205F..=0x2064 | 0x2066..=0x206F | 0x3000 | 0xFEFF
            | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F
            | 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD);
    !unprintable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        // (value, Python's repr)
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (0.1, "0.1"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.2345e-7, "1.2345e-07"),
            (123456789.125, "123456789.125"),
            (1e100, "1e+100"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f, FloatStyle::Python), want, "{f:e}");
        }
        assert_eq!(float_repr(f64::NAN, FloatStyle::Json), "NaN");
        assert_eq!(float_repr(f64::NEG_INFINITY, FloatStyle::Json), "-Infinity");
        assert_eq!(float_repr(f64::INFINITY, FloatStyle::Python), "inf");
    }

    #[test]
    fn str_repr_matches_python() {
        assert_eq!(str_repr("a'b"), "\"a'b\"");
        assert_eq!(str_repr("a'b\""), "'a\\'b\"'");
        assert_eq!(str_repr("tab\tnl\n\\ é 🙂"), "'tab\\tnl\\n\\\\ é 🙂'");
        assert_eq!(
            str_repr("\u{7}\u{a0}\u{200b}\u{10fffd}"),
            "'\\x07\\xa0\\u200b\\U0010fffd'"
        );
    }
}
