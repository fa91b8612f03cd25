//! How a message becomes lines on screen: the look it is drawn with (width, wrap, folds,
//! timestamps, theme), the pieces a message is made of, and each piece as sanitised lines.

use super::*;
use chrono::{DateTime, Utc};

/// Everything besides a message that its lines depend on.
pub struct Look<'a> {
    /// Columns (at least 10).
    pub width: usize,
    pub wrap: bool,
    pub timestamps: bool,
    pub tools_open: bool,
    /// The agent's reasoning shown (else a line saying it is there).
    pub reasoning_open: bool,
    /// Text laid out as markdown (else as written).
    pub markdown: bool,
    /// Now, in whole seconds since the epoch: a running tool call's elapsed time.
    pub clock: i64,
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
            reasoning_open: self.reasoning_open,
        }
    }

    /// Whether lines drawn with `key` are what this look draws.
    pub(super) fn drew(&self, key: &LookKey) -> bool {
        self.width == key.width
            && self.wrap == key.wrap
            && self.timestamps == key.timestamps
            && self.tools_open == key.tools_open
            && self.reasoning_open == key.reasoning_open
            && self.clock == key.clock
            && *self.theme == key.theme
    }

    /// What the text of the lines depends on (not the theme).
    pub(super) fn text_look(&self) -> TextLook {
        TextLook {
            width: self.width,
            wrap: self.wrap,
            timestamps: self.timestamps,
            tools_open: self.tools_open,
            reasoning_open: self.reasoning_open,
        }
    }

    pub(super) fn key(&self) -> LookKey {
        LookKey {
            width: self.width,
            wrap: self.wrap,
            timestamps: self.timestamps,
            tools_open: self.tools_open,
            reasoning_open: self.reasoning_open,
            clock: self.clock,
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
    pub(super) reasoning_open: bool,
}

/// A [`Look`] kept: what the memo's drawn lines were drawn with.
pub(super) struct LookKey {
    pub(super) width: usize,
    pub(super) wrap: bool,
    pub(super) timestamps: bool,
    pub(super) tools_open: bool,
    pub(super) reasoning_open: bool,
    pub(super) clock: i64,
    pub(super) theme: Theme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fit {
    pub(super) width: usize,
    pub(super) wrap: bool,
    pub(super) tools_open: bool,
    pub(super) reasoning_open: bool,
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

    /// Whether its text is laid out as markdown (when the look says so).
    pub(super) fn markdown(self) -> bool {
        matches!(self, Kind::Text | Kind::Reasoning)
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
        started: Option<&'a DateTime<Utc>>,
        ended: Option<&'a DateTime<Utc>>,
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
                started_at,
                ended_at,
            } => {
                visit(
                    id,
                    Piece::Tool {
                        tool,
                        call_id,
                        status,
                        input,
                        started: started_at.as_ref(),
                        ended: ended_at.as_ref(),
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
    draw_message(m, &Shape::of(m, 0, look.markdown), None, look, out);
}

/// One message as lines, its text laid out as `shape` holds it; a person's message says how
/// long its `turn` took.
pub(super) fn draw_message(
    m: &Message,
    shape: &Shape,
    turn: Option<chrono::Duration>,
    look: &Look<'_>,
    out: &mut Vec<Line<'static>>,
) {
    pieces(m, look.tools_open, |id, piece| {
        let laid = match piece {
            Piece::Text(..) => shape.laid(id),
            _ => None,
        };
        let header = matches!(piece, Piece::Header);
        draw_piece(m, look, piece, laid, out);
        if let (true, Some(turn), Some(line)) = (header, turn, out.last_mut()) {
            line.spans.push(Span::styled(
                format!("  turn {}", took(turn)),
                look.theme.muted,
            ));
        }
    });
}

/// The line folded reasoning is drawn as: that it is there, how long it is, and the key.
pub(super) fn folded_reasoning(text: &str, look: &Look<'_>) -> Line<'static> {
    let lines = text.lines().count();
    let what = match lines {
        0 => "  ~ thinking…".to_string(),
        1 => "  ~ thinking, 1 line".to_string(),
        n => format!("  ~ thinking, {n} lines"),
    };
    Line::from(vec![
        Span::styled(what, look.theme.muted.add_modifier(Modifier::ITALIC)),
        Span::styled("  (T shows)", look.theme.muted),
    ])
}

/// Laid-out text as lines: each row its kind's indent, its head (a bullet, a quote's bar, a
/// code gutter) and its runs of text, styled by their marks.
fn draw_laid(kind: Kind, laid: &Laid, look: &Look<'_>, out: &mut Vec<Line<'static>>) {
    let indent = kind.indent();
    let base = kind.style(look.theme);
    let room = look
        .wrap
        .then(|| look.width.saturating_sub(indent.len()).max(1));
    for k in 0..laid.lines.len() {
        let text = laid.line_text(k);
        laid.rows(k, room, |row| {
            let mut spans = vec![Span::raw(indent)];
            if !row.head.is_empty() {
                spans.push(Span::styled(row.head.to_string(), look.theme.muted));
            }
            for (range, mark) in laid.line_marks(k) {
                let (from, to) = (
                    range.start.max(row.range.start),
                    range.end.min(row.range.end),
                );
                if from < to
                    && let Some(piece) = text.get(from..to)
                {
                    spans.push(Span::styled(
                        piece.to_string(),
                        mark.style(base, look.theme),
                    ));
                }
            }
            out.push(Line::from(spans));
        });
    }
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
    laid: Option<&Laid>,
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
            started,
            ended,
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
            // how long it took, or (running) how long it has run
            let took = match (started, ended, status) {
                (Some(s), Some(e), _) => format!(" {}", took(*e - *s)),
                (Some(s), None, ToolStatus::Running) if look.clock > 0 && !waits => {
                    format!(
                        " {}",
                        took(chrono::Duration::seconds(look.clock - s.timestamp()))
                    )
                }
                _ => String::new(),
            };
            out.push(Line::from(vec![
                Span::styled(
                    format!("  [{} {mark}{took}] ", sanitize::line(tool)),
                    theme.tool,
                ),
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
        Piece::Text(Kind::Reasoning, text) if !look.reasoning_open => {
            out.push(folded_reasoning(&text, look))
        }
        Piece::Text(kind, text) => {
            let indent = kind.indent();
            let style = kind.style(theme);
            #[cfg(test)]
            let before = out.len();
            if let Some(laid) = laid {
                draw_laid(kind, laid, look, out);
                #[cfg(test)]
                TEXT_LINES_DRAWN.with(|n| n.set(n.get() + out.len() - before));
                return;
            }
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

/// A duration as a person reads it at a glance: `0.4s`, `12s`, `3m05s`, `1h02m`.
pub(crate) fn took(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    let s = ms / 1000;
    match s {
        0..10 => format!("{}.{}s", s, (ms % 1000) / 100),
        10..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
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
