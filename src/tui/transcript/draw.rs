//! How a message becomes lines on screen: the look it is drawn with (width, wrap, folds,
//! timestamps, theme), the pieces a message is made of, and each piece as sanitised lines.

use super::*;

/// Everything besides a message that its lines depend on.
pub struct Look<'a> {
    /// Columns (at least 10).
    pub width: usize,
    pub wrap: bool,
    pub timestamps: bool,
    pub tools_open: bool,
    pub theme: &'a Theme,
    /// The tool calls waiting for a person's answer (their call ids): drawn as such.
    pub waiting: &'a [String],
}

impl Look<'_> {
    /// What line counts depend on: the width only when wrapping; not timestamps or the theme.
    pub(super) fn fit(&self) -> Fit {
        Fit {
            width: if self.wrap { self.width } else { 0 },
            wrap: self.wrap,
            tools_open: self.tools_open,
        }
    }

    /// Whether lines drawn with `key` are what this look draws.
    pub(super) fn drew(&self, key: &LookKey) -> bool {
        self.width == key.width
            && self.wrap == key.wrap
            && self.timestamps == key.timestamps
            && self.tools_open == key.tools_open
            && *self.theme == key.theme
    }

    /// What the text of the lines depends on (not the theme).
    pub(super) fn text_look(&self) -> TextLook {
        TextLook {
            width: self.width,
            wrap: self.wrap,
            timestamps: self.timestamps,
            tools_open: self.tools_open,
        }
    }

    pub(super) fn key(&self) -> LookKey {
        LookKey {
            width: self.width,
            wrap: self.wrap,
            timestamps: self.timestamps,
            tools_open: self.tools_open,
            theme: self.theme.clone(),
        }
    }
}

/// A [`Look`] without the theme: what the text of the lines depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TextLook {
    pub(super) width: usize,
    pub(super) wrap: bool,
    pub(super) timestamps: bool,
    pub(super) tools_open: bool,
}

/// A [`Look`] kept: what the memo's drawn lines were drawn with.
pub(super) struct LookKey {
    pub(super) width: usize,
    pub(super) wrap: bool,
    pub(super) timestamps: bool,
    pub(super) tools_open: bool,
    pub(super) theme: Theme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fit {
    pub(super) width: usize,
    pub(super) wrap: bool,
    pub(super) tools_open: bool,
}

/// How a piece of text is set: its indent and style, and whether it shows only with tool
/// calls unfolded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Reasoning,
    ToolIn,
    ToolOut,
    ToolErr,
}

pub(super) const KINDS: [Kind; 5] = [
    Kind::Text,
    Kind::Reasoning,
    Kind::ToolIn,
    Kind::ToolOut,
    Kind::ToolErr,
];

impl Kind {
    pub(super) fn indent(self) -> &'static str {
        match self {
            Kind::Text => "  ",
            Kind::Reasoning => "  ~ ",
            Kind::ToolIn => "    in  ",
            Kind::ToolOut => "    out ",
            Kind::ToolErr => "    err ",
        }
    }

    pub(super) fn style(self, theme: &Theme) -> Style {
        match self {
            Kind::Text => theme.assistant,
            Kind::Reasoning => theme.muted.add_modifier(Modifier::ITALIC),
            Kind::ToolIn => theme.muted,
            Kind::ToolOut => theme.text,
            Kind::ToolErr => theme.error,
        }
    }

    pub(super) fn folded(self) -> bool {
        matches!(self, Kind::ToolIn | Kind::ToolOut | Kind::ToolErr)
    }
}

/// A message, in the order it is drawn: lines that never wrap, and text that may.
pub(super) enum Piece<'a> {
    Header,
    Tool {
        tool: &'a str,
        call_id: &'a str,
        status: &'a ToolStatus,
        input: &'a serde_json::Value,
    },
    File(&'a str),
    Patch(&'a [String]),
    Text(Kind, Cow<'a, str>),
    Blank,
}

/// Walks a message's pieces; the unfolded details of tool calls only when `details`. Each
/// comes with an id that says which it is whatever is folded, in drawing order: 0 for the
/// header, `4 * (p + 1)` for part `p`, plus 1, 2 or 3 for a tool call's input, output or error.
pub(super) fn pieces<'a>(m: &'a Message, details: bool, mut visit: impl FnMut(u32, Piece<'a>)) {
    visit(0, Piece::Header);
    for (p, part) in m.parts.iter().enumerate() {
        let id = to_u32(p + 1).saturating_mul(4);
        match part {
            Part::Text { text } => visit(id, Piece::Text(Kind::Text, Cow::Borrowed(text))),
            Part::Reasoning { text } => {
                visit(id, Piece::Text(Kind::Reasoning, Cow::Borrowed(text)))
            }
            Part::Tool {
                tool,
                call_id,
                status,
                input,
                output,
                error,
            } => {
                visit(
                    id,
                    Piece::Tool {
                        tool,
                        call_id,
                        status,
                        input,
                    },
                );
                if details {
                    let pretty = serde_json::to_string_pretty(input).unwrap_or_default();
                    visit(id + 1, Piece::Text(Kind::ToolIn, Cow::Owned(pretty)));
                    if let Some(o) = output {
                        visit(id + 2, Piece::Text(Kind::ToolOut, Cow::Borrowed(o)));
                    }
                    if let Some(e) = error {
                        visit(id + 3, Piece::Text(Kind::ToolErr, Cow::Borrowed(e)));
                    }
                }
            }
            Part::File { path, url, .. } => visit(
                id,
                Piece::File(path.as_deref().or(url.as_deref()).unwrap_or("file")),
            ),
            Part::Patch { files } => visit(id, Piece::Patch(files)),
            Part::Other(_) => {}
        }
    }
    visit(to_u32(m.parts.len() + 1).saturating_mul(4), Piece::Blank);
}

/// One message as lines (sanitised), appended to `out`.
pub fn message_lines(m: &Message, look: &Look<'_>, out: &mut Vec<Line<'static>>) {
    pieces(m, look.tools_open, |_, piece| {
        draw_piece(m, look, piece, out)
    });
}

#[cfg(test)]
thread_local! {
    /// Text lines drawn by this thread (tests check what a search draws).
    pub(super) static TEXT_LINES_DRAWN: Cell<usize> = const { Cell::new(0) };
}

/// One piece of a message as lines, appended to `out`.
pub(super) fn draw_piece(
    m: &Message,
    look: &Look<'_>,
    piece: Piece<'_>,
    out: &mut Vec<Line<'static>>,
) {
    let theme = look.theme;
    let width = look.width;
    match piece {
        Piece::Header => {
            let (who, style) = match m.role {
                MessageRole::User => ("> you", theme.user),
                MessageRole::Assistant => ("< agent", theme.accent),
                MessageRole::System => ("# agentdeck", theme.muted),
            };
            let mut head = vec![
                Span::styled(who.to_string(), style),
                Span::styled(format!("  #{}", m.seq), theme.muted),
            ];
            if look.timestamps {
                head.push(Span::styled(
                    format!("  {}", m.created_at.format("%H:%M:%S")),
                    theme.muted,
                ));
            }
            match m.status {
                MessageStatus::Pending if m.role == MessageRole::User => {
                    head.push(Span::styled("  (sending…)", theme.warning))
                }
                MessageStatus::Pending => head.push(Span::styled("  (streaming…)", theme.muted)),
                MessageStatus::Failed => head.push(Span::styled(
                    format!(
                        "  FAILED: {}",
                        sanitize::line(m.error.as_deref().unwrap_or("no reason given"))
                    ),
                    theme.error,
                )),
                MessageStatus::Aborted => {
                    head.push(Span::styled("  stopped (aborted)", theme.warning))
                }
                MessageStatus::Complete => {}
            }
            out.push(Line::from(head));
        }
        Piece::Tool {
            tool,
            call_id,
            status,
            input,
        } => {
            let waits = matches!(status, ToolStatus::Running | ToolStatus::Pending)
                && look.waiting.iter().any(|c| c == call_id);
            let mark = match status {
                _ if waits => "waits for you",
                ToolStatus::Completed => "done",
                ToolStatus::Running => "running",
                ToolStatus::Pending => "pending",
                ToolStatus::Error => "ERROR",
                ToolStatus::Stopped => "stopped",
            };
            let summary = tool_summary(input);
            let fold = if look.tools_open { "" } else { "  (o unfolds)" };
            out.push(Line::from(vec![
                Span::styled(format!("  [{} {mark}] ", sanitize::line(tool)), theme.tool),
                Span::raw(
                    truncate(&sanitize::line(&summary), width.saturating_sub(20)).to_string(),
                ),
                Span::styled(fold, theme.muted),
            ]));
        }
        Piece::File(name) => out.push(Line::from(Span::styled(
            format!("  [file] {}", sanitize::line(name)),
            theme.tool,
        ))),
        Piece::Patch(files) => out.push(Line::from(Span::styled(
            format!("  [patch] {}", sanitize::line(&files.join(", "))),
            theme.tool,
        ))),
        Piece::Text(kind, text) => {
            let indent = kind.indent();
            let style = kind.style(theme);
            #[cfg(test)]
            let before = out.len();
            for raw in as_drawn(&text).lines() {
                if look.wrap {
                    let room = width.saturating_sub(indent.len()).max(1);
                    if raw.is_empty() {
                        out.push(Line::from(""));
                        continue;
                    }
                    wrap(raw, room, |piece| {
                        out.push(Line::from(vec![
                            Span::raw(indent.to_string()),
                            Span::styled(raw[piece].to_string(), style),
                        ]))
                    });
                } else {
                    out.push(Line::from(vec![
                        Span::raw(indent.to_string()),
                        Span::styled(raw.to_string(), style),
                    ]));
                }
            }
            #[cfg(test)]
            TEXT_LINES_DRAWN.with(|n| n.set(n.get() + out.len() - before));
        }
        Piece::Blank => out.push(Line::from("")),
    }
}

/// Text as drawn: sanitised, tabs expanded to four spaces (borrowed when that changes
/// nothing).
pub(super) fn as_drawn(text: &str) -> Cow<'_, str> {
    drawn_and_clean(text).0
}

/// [`as_drawn`], and whether the sanitiser left the text as it was.
pub(super) fn drawn_and_clean(text: &str) -> (Cow<'_, str>, bool) {
    let sanitized = sanitize::text(text);
    let clean = matches!(sanitized, Cow::Borrowed(_));
    if sanitized.contains('\t') {
        (Cow::Owned(sanitized.replace('\t', "    ")), clean)
    } else {
        (sanitized, clean)
    }
}

/// What a tool call is about, in one line for its head: the command, the file, the pattern,
/// the address, the question asked; else its plain fields as `name=value`. Never the raw JSON
/// (a question's tool line read `{"questions":[{"header":…`).
pub(super) fn tool_summary(input: &serde_json::Value) -> String {
    for key in [
        "command",
        "filePath",
        "path",
        "pattern",
        "url",
        "query",
        "description",
    ] {
        if let Some(text) = input.get(key).and_then(|v| v.as_str()) {
            return text.to_string();
        }
    }
    if let Some(questions) = input.get("questions").and_then(|q| q.as_array()) {
        let asked: Vec<&str> = questions
            .iter()
            .filter_map(|q| q.get("question").and_then(|t| t.as_str()))
            .collect();
        return asked.join(" / ");
    }
    match input.as_object() {
        Some(fields) => fields
            .iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some(format!("{k}={s}")),
                serde_json::Value::Number(n) => Some(format!("{k}={n}")),
                serde_json::Value::Bool(b) => Some(format!("{k}={b}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" "),
        None => input.as_str().map(str::to_string).unwrap_or_default(),
    }
}
