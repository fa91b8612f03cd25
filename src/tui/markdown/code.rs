//! Syntax colouring for code blocks, a line at a time: keywords, strings, numbers and comments
//! of the languages agents write most (Rust, Python, JavaScript/TypeScript, Go, C-like, shell,
//! SQL, JSON/YAML/TOML) and diffs. Small on purpose: a line is read once, left to right, with
//! no state carried between lines (a string or comment over several lines is coloured on its
//! first line only), which is what a transcript can afford at a million lines.

use super::Mark;

struct Lang {
    keywords: &'static [&'static str],
    /// Where a comment starts (to the end of the line).
    comments: &'static [&'static str],
    quotes: &'static [char],
    /// Keywords match whatever their case (SQL).
    any_case: bool,
    /// `key:` / `key =` at the start of a line is a key (YAML, TOML, JSON).
    keys: bool,
}

const RUST: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "false",
    "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "self", "Self", "static", "struct", "super", "trait", "true", "type", "unsafe",
    "use", "where", "while", "Some", "None", "Ok", "Err",
];
const PYTHON: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "False", "finally", "for", "from", "global", "if", "import", "in", "is",
    "lambda", "None", "nonlocal", "not", "or", "pass", "raise", "return", "True", "try", "while",
    "with", "yield", "self",
];
const JS: &[&str] = &[
    "async",
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "default",
    "delete",
    "do",
    "else",
    "enum",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "from",
    "function",
    "if",
    "implements",
    "import",
    "in",
    "instanceof",
    "interface",
    "let",
    "new",
    "null",
    "of",
    "return",
    "static",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "type",
    "typeof",
    "undefined",
    "var",
    "void",
    "while",
    "yield",
];
const GO: &[&str] = &[
    "break",
    "case",
    "chan",
    "const",
    "continue",
    "default",
    "defer",
    "else",
    "fallthrough",
    "false",
    "for",
    "func",
    "go",
    "goto",
    "if",
    "import",
    "interface",
    "map",
    "nil",
    "package",
    "range",
    "return",
    "select",
    "struct",
    "switch",
    "true",
    "type",
    "var",
];
const C: &[&str] = &[
    "auto",
    "bool",
    "break",
    "case",
    "catch",
    "char",
    "class",
    "const",
    "continue",
    "default",
    "delete",
    "do",
    "double",
    "else",
    "enum",
    "extends",
    "false",
    "final",
    "float",
    "for",
    "if",
    "import",
    "int",
    "long",
    "namespace",
    "new",
    "null",
    "nullptr",
    "package",
    "private",
    "protected",
    "public",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "template",
    "this",
    "throw",
    "true",
    "try",
    "typedef",
    "union",
    "unsigned",
    "using",
    "val",
    "var",
    "virtual",
    "void",
    "volatile",
    "while",
    "fun",
    "func",
    "let",
    "override",
];
const SHELL: &[&str] = &[
    "if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "until", "case",
    "esac", "function", "return", "export", "local", "readonly", "set", "unset", "echo", "cd",
    "exit", "source", "sudo",
];
const SQL: &[&str] = &[
    "select",
    "from",
    "where",
    "and",
    "or",
    "not",
    "insert",
    "into",
    "values",
    "update",
    "set",
    "delete",
    "create",
    "table",
    "index",
    "drop",
    "alter",
    "join",
    "left",
    "right",
    "inner",
    "outer",
    "on",
    "group",
    "by",
    "order",
    "limit",
    "offset",
    "as",
    "null",
    "is",
    "in",
    "primary",
    "key",
    "references",
    "returning",
    "with",
    "distinct",
    "having",
    "union",
    "begin",
    "commit",
    "rollback",
    "exists",
    "default",
    "true",
    "false",
];
const DATA: &[&str] = &["true", "false", "null", "yes", "no", "on", "off"];

fn lang(name: &str) -> Option<Lang> {
    let (keywords, comments, quotes, any_case, keys): (_, &[&str], &[char], _, _) = match name {
        "rust" | "rs" => (RUST, &["//"], &['"'], false, false),
        "python" | "py" | "python3" => (PYTHON, &["#"], &['"', '\''], false, false),
        "javascript" | "js" | "jsx" | "typescript" | "ts" | "tsx" | "mjs" => {
            (JS, &["//"], &['"', '\'', '`'], false, false)
        }
        "go" | "golang" => (GO, &["//"], &['"', '`'], false, false),
        "c" | "h" | "cpp" | "c++" | "cc" | "hpp" | "java" | "kotlin" | "kt" | "swift" | "cs"
        | "csharp" | "scala" | "dart" => (C, &["//"], &['"', '\''], false, false),
        "sh" | "bash" | "shell" | "zsh" | "console" | "dockerfile" | "make" | "makefile" => {
            (SHELL, &["#"], &['"', '\''], false, false)
        }
        "sql" | "postgres" | "postgresql" | "sqlite" => (SQL, &["--"], &['\''], true, false),
        "json" | "jsonc" => (DATA, &["//"], &['"'], false, true),
        "yaml" | "yml" | "toml" | "ini" | "conf" => (DATA, &["#"], &['"', '\''], false, true),
        _ => return None,
    };
    Some(Lang {
        keywords,
        comments,
        quotes,
        any_case,
        keys,
    })
}

/// Hands `line` (of a code block in language `name`) to `push` a run at a time, each with its
/// mark; the runs end to end are the line. A language not known is one plain run.
pub fn highlight<'a>(name: &str, line: &'a str, mut push: impl FnMut(&'a str, Mark)) {
    if matches!(name, "diff" | "patch" | "udiff") {
        let mark = if line.starts_with("+++") || line.starts_with("---") {
            Mark::STRONG
        } else if line.starts_with('+') {
            Mark::STRING
        } else if line.starts_with('-') {
            Mark::REMOVED
        } else if line.starts_with("@@") {
            Mark::MUTED
        } else {
            Mark::PLAIN
        };
        push(line, mark);
        return;
    }
    let Some(lang) = lang(name) else {
        push(line, Mark::PLAIN);
        return;
    };
    let bytes = line.as_bytes();
    let mut at = 0;
    // a run of plain text not yet handed on
    let mut plain = 0;
    let flush = |from: usize, to: usize, mark: Mark, push: &mut dyn FnMut(&'a str, Mark)| {
        if let Some(piece) = line.get(from..to)
            && !piece.is_empty()
        {
            push(piece, mark);
        }
    };
    let push: &mut dyn FnMut(&'a str, Mark) = &mut push;
    if lang.keys {
        let lead = line.len() - line.trim_start().len();
        let rest = &line[lead..];
        let key_end = if let Some(quoted) = rest.strip_prefix('"') {
            quoted.find('"').map(|e| e + 2)
        } else {
            rest.find([':', '='])
                .filter(|&e| e > 0 && !rest[..e].contains(' ') && !rest.starts_with('#'))
        };
        if let Some(end) = key_end
            && rest[end..].trim_start().starts_with([':', '='])
        {
            flush(0, lead, Mark::PLAIN, push);
            flush(lead, lead + end, Mark::KEYWORD, push);
            at = lead + end;
            plain = at;
        }
    }
    while at < bytes.len() {
        let rest = &line[at..];
        if lang.comments.iter().any(|c| rest.starts_with(*c)) {
            flush(plain, at, Mark::PLAIN, push);
            flush(at, line.len(), Mark::COMMENT, push);
            return;
        }
        let c = rest.chars().next().unwrap_or(' ');
        if lang.quotes.contains(&c) {
            flush(plain, at, Mark::PLAIN, push);
            // to the closing quote (not an escaped one), or the end of the line
            let open = at + c.len_utf8();
            let mut end = line.len();
            let mut escaped = false;
            for (i, ch) in line[open..].char_indices() {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == c {
                    end = open + i + ch.len_utf8();
                    break;
                }
            }
            flush(at, end, Mark::STRING, push);
            at = end;
            plain = at;
            continue;
        }
        let word_start = at == 0 || !is_word(line[..at].chars().next_back().unwrap_or(' '));
        if word_start && c.is_ascii_digit() {
            let end = at
                + rest
                    .find(|ch: char| !is_word(ch) && ch != '.')
                    .unwrap_or(rest.len());
            flush(plain, at, Mark::PLAIN, push);
            flush(at, end, Mark::NUMBER, push);
            at = end;
            plain = at;
            continue;
        }
        if word_start && is_word(c) {
            let end = at + rest.find(|ch: char| !is_word(ch)).unwrap_or(rest.len());
            let word = &line[at..end];
            let keyword = if lang.any_case {
                lang.keywords.iter().any(|k| k.eq_ignore_ascii_case(word))
            } else {
                lang.keywords.contains(&word)
            };
            if keyword {
                flush(plain, at, Mark::PLAIN, push);
                flush(at, end, Mark::KEYWORD, push);
                plain = end;
            }
            at = end;
            continue;
        }
        at += c.len_utf8();
    }
    flush(plain, line.len(), Mark::PLAIN, push);
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}
