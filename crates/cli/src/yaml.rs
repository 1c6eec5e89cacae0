//! Writing JSON values as block-style YAML that reads back the same under YAML 1.2 and 1.1.
//!
//! kubectl reads manifests with a YAML 1.1 parser, where unquoted `on`, `yes`, `n`, `12:30`
//! and `0755` are not the strings they are in YAML 1.2, the only version serde_yaml_ng writes
//! for. A label `flag: "on"` written back unquoted would reach the API server as `true` and be
//! refused. So a string is left unquoted only when it cannot be anything but a string in
//! either version; everything else is double-quoted.

use serde_json::{Map, Value};

/// `value` as a YAML document, ending with a newline.
pub(crate) fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0, false),
        // A literal block at column 0 could hold a `---` line: quoted instead.
        Value::String(s) => {
            write_string(&mut out, s, 0, false);
            out.push('\n');
        }
        scalar => {
            write_scalar(&mut out, scalar, 0);
            out.push('\n');
        }
    }
    out
}

/// Writes `map` with its keys at column `indent`; the first key goes where the output is when
/// `inline` (after a sequence's `- `).
fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize, inline: bool) {
    for (index, (key, value)) in map.iter().enumerate() {
        if index > 0 || !inline {
            push_indent(out, indent);
        }
        write_string(out, key, indent, false);
        out.push(':');
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                write_map(out, inner, indent + 2, false);
            }
            // Sequences under a key at the key's own column, as kubectl writes them.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, indent, false);
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar, indent + 2);
                out.push('\n');
            }
        }
    }
}

/// Writes `items` with their dashes at column `indent`.
fn write_seq(out: &mut String, items: &[Value], indent: usize, inline: bool) {
    for (index, item) in items.iter().enumerate() {
        if index > 0 || !inline {
            push_indent(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(inner) if !inner.is_empty() => write_map(out, inner, indent + 2, true),
            Value::Array(inner) if !inner.is_empty() => write_seq(out, inner, indent + 2, true),
            scalar => {
                write_scalar(out, scalar, indent + 2);
                out.push('\n');
            }
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A scalar, or an empty collection; a multi-line string's lines go at column `indent`.
fn write_scalar(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s, indent, true),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

fn write_string(out: &mut String, s: &str, indent: usize, block_allowed: bool) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if block_allowed && fits_literal_block(s) {
        // Scripts in commands read best as they were written.
        out.push_str(if s.ends_with('\n') { "|" } else { "|-" });
        for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
            out.push('\n');
            if !line.is_empty() {
                push_indent(out, indent);
                out.push_str(line);
            }
        }
    } else {
        write_double_quoted(out, s);
    }
}

/// Words that YAML 1.1 or 1.2 read as booleans or null when unquoted.
const RESERVED_WORDS: &[&str] = &["y", "yes", "n", "no", "true", "false", "on", "off", "null"];

/// Whether `s` is a string when written unquoted, under YAML 1.1 and 1.2 alike: it starts with a
/// letter, `_`, `/` or a flag's `-`/`--` before a letter (never a number, timestamp, sign,
/// indicator or `.inf`), holds no character that starts a comment, flow collection, tag, alias
/// or quote, has no `: ` and no space at either end, and is not one of the reserved words.
fn is_plain_safe(s: &str) -> bool {
    let flag_name = s.strip_prefix("--").or_else(|| s.strip_prefix('-'));
    let start = flag_name.map_or(s, |name| name).chars().next();
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_./:@+=%~ ".contains(c);
    let Some(first) = start else { return false };
    (first.is_ascii_alphabetic() || (flag_name.is_none() && (first == '_' || first == '/')))
        && s.chars().all(allowed)
        && !s.ends_with([':', ' '])
        && !s.contains(": ")
        && !RESERVED_WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

/// Characters written as escapes: controls (NEL among them), and what YAML 1.1 reads as line
/// breaks or a byte-order mark.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}')
}

/// Whether a multi-line string can be a literal block (`|` or `|-`) and read back the same:
/// printable, no tabs or carriage returns, at most one final newline, and a first line that
/// does not start with a space (which would need an indentation indicator).
fn fits_literal_block(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && !s.ends_with("\n\n")
        && s.chars().all(|c| c == '\n' || !needs_escape(c))
        && !s.split('\n').any(|line| line.ends_with(' '))
}

/// A double-quoted scalar: the escapes YAML shares with JSON, others as `\u`.
fn write_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read_back(yaml: &str) -> Value {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}:\n{yaml}"))
    }

    #[test]
    fn strings_yaml_1_1_reads_differently_are_quoted() {
        for word in [
            "on",
            "Off",
            "YES",
            "y",
            "n",
            "no",
            "~",
            "12:30",
            "0755",
            "0x1F",
            "1e3",
            "1_000",
            ".inf",
            "-.5",
            "2001-12-14",
            "<<",
            "=",
            "",
            "null",
            "True",
        ] {
            let yaml = to_string(&json!({ "k": word }));
            assert_eq!(yaml, format!("k: \"{word}\"\n"), "{word:?}");
        }
    }

    #[test]
    fn ordinary_strings_stay_plain() {
        let value = json!({"app.kubernetes.io/name": "web", "image": "cr.l5d.io/linkerd/proxy:edge-24.1", "cmd": "sleep 20", "path": "/ready"});
        assert_eq!(
            to_string(&value),
            "app.kubernetes.io/name: web\nimage: cr.l5d.io/linkerd/proxy:edge-24.1\ncmd: sleep 20\npath: /ready\n"
        );
    }

    #[test]
    fn layout_is_block_style_with_sequences_at_their_key() {
        let value = json!({"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80}]}, {"name": "b", "args": []}], "x": {}}, "m": null, "t": true, "f": 1.5});
        let expected = "\
spec:
  containers:
  - name: app
    ports:
    - containerPort: 80
  - name: b
    args: []
  x: {}
m: null
t: true
f: 1.5
";
        assert_eq!(to_string(&value), expected);
        assert_eq!(read_back(expected), value);
    }

    #[test]
    fn every_value_reads_back_the_same() {
        let strings = [
            "a: b",
            "a #b",
            "#x",
            "- x",
            "?x",
            "[x]",
            "{x}",
            "x,y",
            "'x'",
            "\"x\"",
            "&a",
            "*a",
            "!t",
            "%x",
            "@x",
            "`x`",
            "x:",
            " x",
            "x ",
            "tab\there",
            "cr\r\n",
            "line\nbreak",
            "two\nlines\n",
            "keep\n\n",
            "\n lead",
            "  indented\nx",
            "trailing \nspace",
            "\u{85}nel",
            "ls\u{2028}ps",
            "ünïcödé",
            "-c",
            "--all",
            "--",
            "---",
            "-1x",
            "-_x",
            "--/x",
            "emoji 🦆",
            "\u{7f}del",
            "\u{feff}bom",
            "\u{1}",
            "back\\slash",
            "|",
            ">",
            "-",
            "1",
            "-1",
            "+1",
            "0o17",
            "1.0",
            ".5",
            "NaN",
            "nan",
            ".NaN",
            "2001-12-14t21:59:43.10-05:00",
        ];
        let value = json!({
            "strings": strings.as_slice(),
            "keys": strings.iter().map(|s| (s.to_string(), json!(s))).collect::<Map<String, Value>>(),
            "nested": [[1, [2, {"a": [3]}]], [], {}, [{}], null, -7, 1e100, u64::MAX],
        });
        assert_eq!(read_back(&to_string(&value)), value);
    }

    #[test]
    fn multi_line_strings_are_literal_blocks() {
        let value = json!({"command": ["sh", "-c", "set -e\necho hi\n\nexit 0\n"], "strip": "a\nb"});
        let yaml = to_string(&value);
        assert_eq!(yaml, "command:\n- sh\n- -c\n- |\n  set -e\n  echo hi\n\n  exit 0\nstrip: |-\n  a\n  b\n");
        assert_eq!(read_back(&yaml), value);
    }
}
