//! The transcript's tests: shapes and counts against drawing, search, the memo, streaming.

use super::draw::TEXT_LINES_DRAWN;
use super::index::Fenwick;
use super::shape::{Tail, wrapped};
use super::*;
use crate::model::MessageStatus;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// What takes cells in `text`: each char with a width and the zero-width chars after it.
fn cells(text: &str) -> Vec<String> {
    let mut clusters: Vec<String> = Vec::new();
    for c in text.chars() {
        match clusters.last_mut() {
            Some(last) if c.width().unwrap_or(0) == 0 => last.push(c),
            _ => clusters.push(c.to_string()),
        }
    }
    clusters
}

/// The transcript's lines as the cockpit drew them before the memo: every line of every
/// message, each frame (kept as the reference: the memo's lines must be these). Text
/// wraps by cells: a char of width 0 goes with the char before it; a line breaks before a
/// char (with its zero-width followers) that would take it past the room, unless nothing
/// with a width is on it yet.
fn reference(t: &Transcript, theme: &Theme, width: u16) -> Vec<Line<'static>> {
    let mut out: Vec<Line<'static>> = Vec::new();
    let width = usize::from(width.max(10));
    let push_text = |out: &mut Vec<Line<'static>>, text: &str, style: Style, indent: &str| {
        for raw in sanitize::text(text).replace('\t', "    ").lines() {
            if t.wrap {
                let room = width.saturating_sub(indent.len()).max(1);
                if raw.is_empty() {
                    out.push(Line::from(""));
                }
                let mut line = String::new();
                let mut used = 0;
                for cluster in cells(raw) {
                    let w = cluster.width();
                    if used > 0 && used + w > room {
                        out.push(Line::from(vec![
                            Span::raw(indent.to_string()),
                            Span::styled(std::mem::take(&mut line), style),
                        ]));
                        used = 0;
                    }
                    line.push_str(&cluster);
                    used += w;
                }
                if !raw.is_empty() {
                    out.push(Line::from(vec![
                        Span::raw(indent.to_string()),
                        Span::styled(line, style),
                    ]));
                }
            } else {
                out.push(Line::from(vec![
                    Span::raw(indent.to_string()),
                    Span::styled(raw.to_string(), style),
                ]));
            }
        }
    };
    let all = t.messages();
    for (i, m) in all.iter().enumerate() {
        let (who, style) = match m.role {
            MessageRole::User => ("> you", theme.user),
            MessageRole::Assistant => ("< agent", theme.accent),
            MessageRole::System => ("# agentdeck", theme.muted),
        };
        let mut head = vec![
            Span::styled(who.to_string(), style),
            Span::styled(format!("  #{}", m.seq), theme.muted),
        ];
        if t.timestamps {
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
            MessageStatus::Aborted => head.push(Span::styled("  stopped (aborted)", theme.warning)),
            MessageStatus::Complete => {}
        }
        // a person's message: how long its turn took, once every answer in it has ended
        if m.role == MessageRole::User {
            let answers: Vec<&Message> = all[i + 1..]
                .iter()
                .take_while(|a| a.role != MessageRole::User)
                .collect();
            if let Some(last) = answers.last()
                && answers.iter().all(|a| a.status != MessageStatus::Pending)
            {
                let took = super::draw::took(last.updated_at - m.created_at);
                head.push(Span::styled(format!("  turn {took}"), theme.muted));
            }
        }
        out.push(Line::from(head));
        for part in &m.parts {
            match part {
                Part::Text { text } => push_text(&mut out, text, theme.assistant, "  "),
                Part::Reasoning { text } => push_text(
                    &mut out,
                    text,
                    theme.muted.add_modifier(Modifier::ITALIC),
                    "  ~ ",
                ),
                Part::Tool {
                    tool,
                    status,
                    input,
                    output,
                    error,
                    ..
                } => {
                    let mark = match status {
                        ToolStatus::Completed => "done",
                        ToolStatus::Running => "running",
                        ToolStatus::Pending => "pending",
                        ToolStatus::Error => "ERROR",
                        ToolStatus::Stopped => "stopped",
                    };
                    let summary = super::draw::tool_summary(input);
                    let fold = if t.tools_open { "" } else { "  (o unfolds)" };
                    out.push(Line::from(vec![
                        Span::styled(format!("  [{} {mark}] ", sanitize::line(tool)), theme.tool),
                        Span::raw({
                            let mut cut = String::new();
                            let mut used = 0;
                            for cluster in cells(&sanitize::line(&summary)) {
                                used += cluster.width();
                                if used > width.saturating_sub(20) {
                                    break;
                                }
                                cut.push_str(&cluster);
                            }
                            cut
                        }),
                        Span::styled(fold, theme.muted),
                    ]));
                    if t.tools_open {
                        push_text(
                            &mut out,
                            &serde_json::to_string_pretty(input).unwrap_or_default(),
                            theme.muted,
                            "    in  ",
                        );
                        if let Some(o) = output {
                            push_text(&mut out, o, theme.text, "    out ");
                        }
                        if let Some(e) = error {
                            push_text(&mut out, e, theme.error, "    err ");
                        }
                    }
                }
                Part::File { path, url, .. } => {
                    let name = path.as_deref().or(url.as_deref()).unwrap_or("file");
                    out.push(Line::from(Span::styled(
                        format!("  [file] {}", sanitize::line(name)),
                        theme.tool,
                    )));
                }
                Part::Patch { files } => {
                    out.push(Line::from(Span::styled(
                        format!("  [patch] {}", sanitize::line(&files.join(", "))),
                        theme.tool,
                    )));
                }
                Part::Other(_) => {}
            }
        }
        out.push(Line::from(""));
    }
    out
}

/// A transcript showing text as written and reasoning unfolded: what [`reference`] draws.
fn raw_transcript(session: Uuid) -> Transcript {
    let mut t = Transcript::new(session);
    t.set_markdown(false);
    t.reasoning_open = true;
    t
}

fn message(seq: i64, role: MessageRole, status: MessageStatus, parts: Vec<Part>) -> Message {
    let t = chrono::DateTime::from_timestamp(1_790_000_000 + seq, 0).unwrap_or_default();
    Message {
        id: Uuid::from_u128(seq as u128),
        session_id: Uuid::from_u128(1),
        seq,
        role,
        status,
        parts,
        error: (status == MessageStatus::Failed && seq % 2 == 0)
            .then(|| "harness \u{1b}[31mgone\u{1b}[0m\nat once".to_string()),
        harness_message_id: None,
        usage: None,
        diffs: Vec::new(),
        created_at: t,
        updated_at: t,
    }
}

/// Every kind of part and text the renderer treats specially, over `n` messages.
fn messages(n: i64, from: i64) -> Vec<Message> {
    let texts = [
        "",
        "one line",
        "two\nlines",
        "trailing newline\n",
        "\n\nleading blank lines",
        "\ttabbed\tout\t",
        "escape \u{1b}]0;title\u{7}gone \u{1b}[2Jand \u{9b}31mthis\r\nwindows line",
        "wide 日本語のテキスト and combining e\u{301}e\u{301}e\u{301}",
        "a long line that goes on and on past any sensible terminal width, and then some more words, and then yet more words, until it has been wrapped several times over at eighty columns at least",
    ];
    (0..n)
        .map(|k| {
            let seq = from + k;
            let i = seq as usize;
            let text = |j: usize| texts[(i * 7 + j * 3) % texts.len()].repeat(1 + (i + j) % 3);
            let role = [
                MessageRole::User,
                MessageRole::Assistant,
                MessageRole::System,
            ][i % 3];
            let status = [
                MessageStatus::Complete,
                MessageStatus::Pending,
                MessageStatus::Failed,
                MessageStatus::Complete,
            ][i % 4];
            let mut parts = vec![Part::text(text(0))];
            if i % 2 == 1 {
                parts.push(Part::Reasoning { text: text(1) });
            }
            if !i.is_multiple_of(3) {
                parts.push(Part::Tool {
                    call_id: format!("c{i}"),
                    tool: "bash\u{1b}[1m".into(),
                    status: [
                        ToolStatus::Pending,
                        ToolStatus::Running,
                        ToolStatus::Completed,
                        ToolStatus::Error,
                    ][i % 4]
                        .clone(),
                    input: if i.is_multiple_of(2) {
                        serde_json::json!({"command": text(2)})
                    } else {
                        serde_json::json!({"path": "src/lib.rs", "lines": [1, 2, 3]})
                    },
                    output: (i % 4 != 1).then(|| text(3)),
                    error: (i % 5 == 2).then(|| text(4)),
                    started_at: None,
                    ended_at: None,
                });
            }
            match i % 5 {
                0 => parts.push(Part::File {
                    path: Some("a\tb.txt".into()),
                    url: None,
                    mime: None,
                }),
                1 => parts.push(Part::File {
                    path: None,
                    url: i.is_multiple_of(2).then(|| "https://x/y".into()),
                    mime: None,
                }),
                2 => parts.push(Part::Patch {
                    files: vec!["src/a.rs".into(), "src/\u{1b}b.rs".into()],
                }),
                3 => parts.push(Part::Other(serde_json::json!({"type": "step-start"}))),
                _ => parts.push(Part::text("")),
            }
            message(seq, role, status, parts)
        })
        .collect()
}

/// The window, checked against the reference drawn whole.
fn check(t: &Transcript, theme: &Theme, width: u16, height: usize) {
    check_against(&reference(t, theme, width), t, theme, width, height);
}

/// The window `height` lines high, checked against `all` the transcript's lines. A new width
/// or fold is counted lazily: following, the first frame is already exact; once the rest is
/// counted ([`Transcript::settle`]), every frame is.
fn check_against(all: &[Line<'static>], t: &Transcript, theme: &Theme, width: u16, height: usize) {
    let first = t.window(width, theme, height);
    if t.follow {
        assert_eq!(first.lines.len(), height.min(all.len()), "width {width}");
        let tail = all.len() - first.lines.len();
        assert_eq!(
            first.lines,
            all[tail..],
            "following, at once: width {width}"
        );
    }
    while !t.settle(std::time::Duration::ZERO) {}
    let w = t.window(width, theme, height);
    let max_top = all.len().saturating_sub(height);
    let top = if t.follow {
        max_top
    } else {
        t.scroll.min(max_top)
    };
    let want: Vec<Line> = all.iter().skip(top).take(height).cloned().collect();
    let what = format!(
        "width {width} height {height} wrap {} tools {} reasoning {} timestamps {} follow {} \
         scroll {}",
        t.wrap, t.tools_open, t.reasoning_open, t.timestamps, t.follow, t.scroll
    );
    assert_eq!(w.total, all.len(), "{what}");
    assert_eq!(w.top, top, "{what}");
    assert_eq!(w.lines, want, "{what}");
}

#[test]
fn windows_are_the_reference_lines_in_every_look() {
    let mut t = raw_transcript(Uuid::from_u128(1));
    t.merge(messages(40, 1));
    for theme in [Theme::default_theme(), Theme::mono()] {
        for (wrap, tools_open, timestamps) in [
            (true, false, false),
            (true, true, true),
            (false, false, true),
            (false, true, false),
        ] {
            t.wrap = wrap;
            t.tools_open = tools_open;
            t.timestamps = timestamps;
            for width in [0, 9, 10, 11, 12, 23, 80, 158, 300] {
                let total = reference(&t, &theme, width).len();
                for height in [0, 1, 7, 46] {
                    t.follow = true;
                    check(&t, &theme, width, height);
                    t.follow = false;
                    for scroll in [0, 1, total / 3, total / 2 + 5, total - 1, total + 9] {
                        t.scroll = scroll;
                        check(&t, &theme, width, height);
                    }
                }
            }
        }
    }
}

#[test]
fn windows_stay_right_as_the_transcript_changes() {
    let theme = Theme::default_theme();
    let mut t = raw_transcript(Uuid::from_u128(1));
    check(&t, &theme, 80, 20);
    // paged in, in order, with frames between the pages
    for page in 0..4 {
        t.merge(messages(25, 1 + page * 25));
        check(&t, &theme, 80, 20);
    }
    let total = reference(&t, &theme, 80).len();
    assert_eq!(
        t.shown(),
        Some(Shown {
            top: total - 20,
            total,
            height: 20,
            width: 80
        })
    );
    t.follow = false;
    t.scroll = 150;
    check(&t, &theme, 80, 20);
    assert_eq!(t.shown().map(|s| s.top), Some(150));
    // streaming into the last message and into one on screen
    for k in 0..30 {
        let seq = if k % 3 == 0 { 100 } else { 30 };
        let changed = t.apply_delta(&LiveDelta {
            session: t.session,
            seq,
            part: 0,
            text: format!("more text {k} \u{1b}[1mbold\u{1b}[0m\n").repeat(k % 4),
        });
        assert!(changed);
        check(&t, &theme, 80, 20);
        t.follow = k % 2 == 0;
        check(&t, &theme, 80, 20);
    }
    // a delta to a part that does not exist yet, and to one that is not text
    assert!(t.apply_delta(&LiveDelta {
        session: t.session,
        seq: 40,
        part: 9,
        text: "late part".into(),
    }));
    check(&t, &theme, 80, 20);
    assert!(!t.apply_delta(&LiveDelta {
        session: t.session,
        seq: 41,
        part: 2,
        text: "not a text part".into(),
    }));
    assert!(!t.apply_delta(&LiveDelta {
        session: t.session,
        seq: 999,
        part: 0,
        text: "no such message".into(),
    }));
    check(&t, &theme, 80, 20);
    // the stored copy replaces the live one; new messages at the end; one arrives late
    let mut stored = messages(3, 29);
    stored[1].status = MessageStatus::Complete;
    t.merge(stored);
    check(&t, &theme, 80, 20);
    t.merge(messages(5, 101));
    check(&t, &theme, 80, 20);
    let late = messages(1, 500);
    t.merge(late.clone());
    t.merge(messages(4, 200));
    check(&t, &theme, 80, 20);
    // resized, wrap and folds toggled, between changes
    for (k, width) in [80u16, 79, 120, 80, 33].into_iter().enumerate() {
        t.wrap = k % 2 == 0;
        check(&t, &theme, width, 20);
        t.tools_open = !t.tools_open;
        t.merge(messages(1, 300 + k as i64));
        check(&t, &theme, width, 20);
        t.timestamps = !t.timestamps;
        check(&t, &theme, width, 37);
    }
    assert_eq!(t.last_seq(), 500);
}

#[test]
fn fenwick_finds_every_unit() {
    let counts: Vec<usize> = (0..37).map(|i| (i * 7) % 5).collect();
    let mut f = Fenwick::default();
    for &c in &counts {
        f.push(c);
    }
    let mut g = Fenwick::new(&counts);
    let mut counts = counts;
    for (i, new) in [(3, 9), (0, 0), (36, 4), (17, 1)] {
        f.set(i, counts[i], new);
        g.set(i, counts[i], new);
        counts[i] = new;
    }
    let units: Vec<(usize, usize)> = counts
        .iter()
        .enumerate()
        .flat_map(|(i, &c)| (0..c).map(move |o| (i, o)))
        .collect();
    assert_eq!(f.total(), units.len());
    assert_eq!(g.total(), units.len());
    for (at, &want) in units.iter().enumerate() {
        assert_eq!(f.find(at), want, "unit {at}");
        assert_eq!(g.find(at), want, "unit {at}");
    }
    assert_eq!(f.prefix(counts.len()), units.len());
}

/// A turn stopped by an abort says so, and does not read as a failure.
#[test]
fn an_aborted_turn_reads_as_stopped_not_failed() {
    let theme = Theme::mono();
    let mut t = raw_transcript(Uuid::from_u128(1));
    let mut m = message(
        1,
        MessageRole::Assistant,
        MessageStatus::Aborted,
        vec![Part::text("half an answer")],
    );
    m.error = Some("Aborted".into());
    t.merge(vec![m]);
    let text: Vec<String> = t
        .window(80, &theme, 10)
        .lines
        .iter()
        .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
        .collect();
    assert!(text[0].contains("stopped (aborted)"), "{text:?}");
    assert!(!text.join("\n").contains("FAILED"), "{text:?}");
}

/// Streamed text taken in a delta at a time (re-measuring only the last line where it
/// can) leaves a message measured exactly as measuring it whole would: the same lines,
/// the same last line, the same counts at every width.
#[test]
fn appending_measures_like_measuring_again() {
    let mut rng = Lcg(11);
    let plain = [
        "a", "bc ", "word ", "\t", "\n", "\n\n", "", " ", "café ", "naïve", "—dash", "é",
        "\u{301}x", "x\u{301}", "\n—",
    ];
    let awkward = ["日本", "\u{1b}[31m", "e\u{301}", "\r", "\u{9b}"];
    let mut fast = 0;
    for round in 0..60 {
        let start = if round % 3 == 0 {
            String::new()
        } else {
            let n = rng.below(30);
            rng.text(n)
        };
        let mut t = raw_transcript(Uuid::from_u128(1));
        t.merge(vec![message(
            1,
            MessageRole::Assistant,
            MessageStatus::Pending,
            vec![
                Part::text("first part\nstays"),
                Part::text(&start),
                Part::Reasoning {
                    text: "thinking".into(),
                },
            ],
        )]);
        for _ in 0..40 {
            let part = [1, 1, 1, 2, 0][rng.below(5)];
            let n = rng.below(4);
            let text: String = (0..n)
                .map(|_| {
                    if rng.below(25) == 0 {
                        awkward[rng.below(awkward.len())]
                    } else {
                        plain[rng.below(plain.len())]
                    }
                })
                .collect();
            let before = t.shapes[0].rev;
            t.apply_delta(&LiveDelta {
                session: Uuid::from_u128(1),
                seq: 1,
                part,
                text,
            });
            let got = &t.shapes[0];
            let want = Shape::of(&t.messages[0], 0, false);
            assert!(got.rev > before, "a new rev after each delta");
            assert_eq!(got.blocks, want.blocks, "{:?}", t.messages[0].parts);
            assert_eq!(got.narrow, want.narrow);
            assert_eq!(got.fixed, want.fixed);
            let widths = |s: &Shape| s.wide.iter().map(|w| w.width).collect::<Vec<_>>();
            assert_eq!(widths(got), widths(&want));
            for width in [1, 3, 7, 20, 80] {
                for (wrap, tools_open) in [(true, true), (true, false), (false, true)] {
                    let fit = Fit {
                        width,
                        wrap,
                        tools_open,
                        reasoning_open: true,
                    };
                    assert_eq!(got.count(fit), want.count(fit));
                }
            }
            fast += usize::from(matches!(got.blocks[1].tail, Tail::Narrow(_) | Tail::Empty));
        }
    }
    assert!(fast > 500, "the fast path is taken for plain text ({fast})");
}

/// A small deterministic generator, for mixed text.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }

    /// `n` bits of text: ASCII, CJK, emoji (with a skin tone, a variation selector, a
    /// ZWJ family), combining marks (also starting a line), zero-width chars, tabs and
    /// newlines.
    fn text(&mut self, n: usize) -> String {
        let bits: Vec<&str> = concat!(
            "a|b| |word |日|本|語|テキスト|한글|😀|👍🏽|❤\u{fe0f}|⚠\u{fe0f}|e\u{301}|\u{301}|",
            "\u{200b}|\u{200d}|👨\u{200d}👩\u{200d}👧|\t|\n|ｶﾞ|Ｆｕｌｌ|x"
        )
        .split('|')
        .collect();
        (0..n).map(|_| bits[self.below(bits.len())]).collect()
    }
}

/// Every text line (indent and text) is at most `width` cells wide.
fn text_lines_fit(lines: &[Line], width: u16) {
    let width = usize::from(width.max(10));
    let indents = [
        Kind::Text,
        Kind::Reasoning,
        Kind::ToolIn,
        Kind::ToolOut,
        Kind::ToolErr,
    ]
    .map(Kind::indent);
    for line in lines {
        if line.spans.len() == 2 && indents.contains(&&*line.spans[0].content) {
            assert!(line.width() <= width, "{line:?} is wider than {width}");
        }
    }
}

fn text_message(seq: i64, text: &str, tool_output: &str) -> Message {
    let mut parts = vec![Part::text(text), Part::Reasoning { text: text.into() }];
    if !tool_output.is_empty() {
        parts.push(Part::Tool {
            call_id: format!("c{seq}"),
            tool: "bash".into(),
            status: ToolStatus::Completed,
            input: serde_json::json!({"command": tool_output}),
            output: Some(tool_output.into()),
            error: None,
            started_at: None,
            ended_at: None,
        });
    }
    message(seq, MessageRole::Assistant, MessageStatus::Complete, parts)
}

#[test]
fn wide_chars_wrap_by_cells() {
    let texts = [
        "日本語のテキストを折り返す、全角の文字は二つのセルを取る",
        "mixed 日本語 and ASCII, Ｆｕｌｌｗｉｄｔｈ too",
        "emoji 😀😀😀 👍🏽 ❤\u{fe0f}❤\u{fe0f} ⚠\u{fe0f} family 👨\u{200d}👩\u{200d}👧 done",
        "combining e\u{301}e\u{301}e\u{301}e\u{301} a\u{308}o\u{308}u\u{308} 한\u{1161}글",
        "\u{301}starts with a combining mark\n\u{200b}\u{200b}\n日",
        "\t日本\t語\t",
        "aaaaaaa日本",
    ];
    let mut t = raw_transcript(Uuid::from_u128(1));
    t.merge(
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| text_message(i as i64 + 1, text, text))
            .collect(),
    );
    let theme = Theme::default_theme();
    for (wrap, tools_open) in [(true, true), (true, false), (false, true)] {
        t.wrap = wrap;
        t.tools_open = tools_open;
        // at 10 columns tool output has 2 cells: one wide char just fits
        for width in [0, 10, 11, 12, 13, 14, 17, 20, 33, 80] {
            let all = reference(&t, &theme, width);
            if wrap {
                text_lines_fit(&all, width);
            }
            for height in [1, 9, 200] {
                t.follow = true;
                check(&t, &theme, width, height);
                t.follow = false;
                for scroll in [0, 5, all.len() / 2, all.len()] {
                    t.scroll = scroll;
                    check(&t, &theme, width, height);
                    if wrap {
                        text_lines_fit(&t.window(width, &theme, height).lines, width);
                    }
                }
            }
        }
    }
    // two cells of room: CJK one char a line, never cut
    t.wrap = true;
    t.tools_open = true;
    t.follow = false;
    t.scroll = 0;
    let all = t.window(10, &theme, usize::MAX).lines;
    let out: Vec<&str> = all
        .iter()
        .filter(|l| l.spans.len() == 2 && l.spans[0].content == Kind::ToolOut.indent())
        .map(|l| &*l.spans[1].content)
        .take(4)
        .collect();
    assert_eq!(out, ["日", "本", "語", "の"]);
}

#[test]
fn wrapping_keeps_clusters_whole_and_never_stalls() {
    let pieces = |line: &str, room: usize| {
        let mut out = Vec::new();
        wrap(line, room, |p| out.push(line[p].to_string()));
        out
    };
    // a wide char wider than the room still goes on a line, its own
    assert_eq!(pieces("日本a語", 1), ["日", "本", "a", "語"]);
    assert_eq!(pieces("a日", 2), ["a", "日"]);
    assert_eq!(pieces("ab日", 3), ["ab", "日"]);
    // zero-width chars stay with the char before them, and lead a line they start
    assert_eq!(pieces("e\u{301}x", 1), ["e\u{301}", "x"]);
    assert_eq!(pieces("\u{301}日x", 1), ["\u{301}日", "x"]);
    assert_eq!(pieces("ab\u{200b}\u{200b}", 2), ["ab\u{200b}\u{200b}"]);
    // an emoji made by a variation selector takes two cells
    assert_eq!(pieces("a❤\u{fe0f}b", 2), ["a", "❤\u{fe0f}", "b"]);
    assert_eq!(truncate("日本語", 5), "日本");
    assert_eq!(truncate("e\u{301}e\u{301}e", 2), "e\u{301}e\u{301}");
    assert_eq!(truncate("ab", 0), "");
}

#[test]
fn counts_are_the_lines_wrapping_makes() {
    let mut rng = Lcg(7);
    for k in 0..400 {
        let text = rng.text(1 + k % 60).replace('\t', "    ");
        for raw in text.lines().filter(|l| !l.is_empty()) {
            let mut shape = Shape {
                rev: 0,
                fixed: 0,
                blocks: Vec::new(),
                narrow: Vec::new(),
                wide: Vec::new(),
                runs: Vec::new(),
                laid: Vec::new(),
            };
            shape.line(raw);
            for room in 1..=24 {
                let mut want = 0;
                wrap(raw, room, |_| want += 1);
                let got = match (shape.narrow.first(), shape.wide.first()) {
                    (Some(&w), None) => (w as usize).div_ceil(room).max(1),
                    (None, Some(w)) => wrapped(&shape.runs[w.from as usize..w.to as usize], room),
                    _ => unreachable!("one line measured"),
                };
                assert_eq!(got, want, "{raw:?} in {room}");
            }
        }
    }
}

#[test]
fn mixed_text_at_every_width() {
    let mut rng = Lcg(1);
    let mut t = raw_transcript(Uuid::from_u128(1));
    let messages: Vec<Message> = (1..=30)
        .map(|seq| {
            let n = 5 + rng.below(120);
            let text = rng.text(n);
            let m = rng.below(40);
            let output = rng.text(m);
            text_message(seq, &text, &output)
        })
        .collect();
    t.merge(messages);
    let theme = Theme::mono();
    for tools_open in [false, true] {
        t.tools_open = tools_open;
        for width in 10..=60 {
            let all = reference(&t, &theme, width);
            text_lines_fit(&all, width);
            t.follow = true;
            check(&t, &theme, width, 30);
            t.follow = false;
            for scroll in [0, all.len() / 3, all.len() - 10] {
                t.scroll = scroll;
                check(&t, &theme, width, 30);
            }
        }
    }
}

/// A line's text as searched: after the indent on a line of text, else all of it.
fn searched(line: &Line) -> String {
    match &line.spans[..] {
        [indent, text] if KINDS.iter().any(|k| k.indent() == indent.content) => {
            text.content.to_string()
        }
        spans => spans.iter().map(|s| &*s.content).collect(),
    }
}

/// The lines the reference draws with `needle` in them (ASCII, ignoring case).
fn lines_with(t: &Transcript, theme: &Theme, width: u16, needle: &str) -> Vec<usize> {
    let needle = needle.to_ascii_lowercase();
    reference(t, theme, width)
        .iter()
        .enumerate()
        .filter(|(_, l)| searched(l).to_ascii_lowercase().contains(&needle))
        .map(|(k, _)| k)
        .collect()
}

/// Whether `line` has a span `text` (ignoring case) with the `modifier`.
fn marked(line: &Line, text: &str, modifier: Modifier) -> bool {
    line.spans
        .iter()
        .any(|s| s.content.eq_ignore_ascii_case(text) && s.style.add_modifier.contains(modifier))
}

fn plain_text(line: &Line) -> String {
    line.spans.iter().map(|s| &*s.content).collect()
}

fn needles() -> Transcript {
    let texts = [
        "a needle at the start",
        "nothing here",
        "Needle with a capital, and a needle twice on one line",
        "a line\nand a NEEDLE on the second\nand one more line",
        "日本語 needle 日本語",
        "still nothing",
        "the last needle",
    ];
    let mut t = raw_transcript(Uuid::from_u128(1));
    t.merge(
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                message(
                    i as i64 + 1,
                    MessageRole::Assistant,
                    MessageStatus::Complete,
                    vec![Part::text(*text)],
                )
            })
            .collect(),
    );
    t
}

#[test]
fn search_moves_forward_and_back_and_wraps_around() {
    let theme = Theme::default_theme();
    let mut t = needles();
    assert_eq!(t.next_match(80, &theme, 6, true), None);
    t.search("needle");
    assert_eq!(t.search_query(), Some("needle"));
    let want = lines_with(&t, &theme, 80, "needle");
    assert_eq!(want.len(), 5);
    // from the top of the frame shown
    t.follow = false;
    t.scroll = 0;
    t.window(80, &theme, 6);
    let mut got = Vec::new();
    for _ in 0..want.len() + 2 {
        let hit = t
            .next_match(80, &theme, 6, true)
            .map(|h| (h.line, h.index, h.total));
        got.push(hit);
    }
    let mut expect: Vec<_> = (0..want.len())
        .map(|k| Some((want[k], k + 1, want.len())))
        .collect();
    expect.extend([expect[0], expect[1]]);
    assert_eq!(got, expect);
    assert!(!t.follow);
    // backward from the second: the first, then around to the last
    let back: Vec<_> = (0..3)
        .map(|_| t.next_match(80, &theme, 6, false).map(|h| h.index))
        .collect();
    assert_eq!(back, [Some(1), Some(5), Some(4)]);
    // a new query starts again from the frame shown: backward, from its bottom line
    t.search("nothing");
    t.follow = true;
    t.window(80, &theme, 6);
    let hit = t.next_match(80, &theme, 6, false);
    let all = lines_with(&t, &theme, 80, "nothing");
    assert_eq!(
        hit.map(|h| (h.line, h.index, h.total)),
        Some((all[1], 2, 2))
    );
    // nothing found: nothing moves
    t.search("haystack");
    t.follow = true;
    assert_eq!(t.next_match(80, &theme, 6, true), None);
    assert!(t.follow);
    t.search("");
    assert_eq!(t.search_query(), None);
    assert_eq!(t.next_match(80, &theme, 6, true), None);
}

#[test]
fn search_is_smart_case() {
    let theme = Theme::mono();
    let mut t = needles();
    let total = |t: &mut Transcript, q: &str| {
        t.search(q);
        t.next_match(80, &theme, 6, true).map_or(0, |h| h.total)
    };
    assert_eq!(total(&mut t, "needle"), 5);
    assert_eq!(total(&mut t, "NEEDLE"), 1);
    assert_eq!(total(&mut t, "Needle"), 1);
    assert_eq!(total(&mut t, "日本語 NEEDLE"), 0);
    assert_eq!(total(&mut t, "日本語 needle"), 1);
    // headers are searched too (not the indents)
    assert_eq!(total(&mut t, "< agent  #3"), 1);
    assert_eq!(total(&mut t, "  a needle"), 0);
    let m = Matcher::new("émile k");
    assert_eq!(m.find_all("X ÉMILE \u{212a} émile k").count(), 2);
    let m = Matcher::new("Émile");
    let found: Vec<_> = m.find_all("ÉMILE émile Émile").collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0], 14..20);
    let m = Matcher::new("aa");
    assert_eq!(m.find_all("AAAaa").collect::<Vec<_>>(), [0..2, 2..4]);
}

#[test]
fn hits_are_shown_and_marked() {
    let mut t = needles();
    for theme in [Theme::default_theme(), Theme::mono()] {
        t.search("");
        t.search("needle");
        for (width, height) in [(80, 6), (20, 4), (12, 1), (200, 30)] {
            for _ in 0..7 {
                let Some(hit) = t.next_match(width, &theme, height, true) else {
                    panic!("no hit at {width}");
                };
                let w = t.window(width, &theme, height);
                assert!(w.top <= hit.line && hit.line < w.top + w.lines.len());
                // the hit is a third of the way down, where the transcript allows
                let max_top = w.total.saturating_sub(height);
                assert_eq!(w.top, hit.line.saturating_sub(height / 3).min(max_top));
                let line = &w.lines[hit.line - w.top];
                // the matches starting there (or their starts, when they wrap) stand out
                let current: Vec<String> = line
                    .spans
                    .iter()
                    .filter(|s| s.style == s.style.patch(theme.selected))
                    .map(|s| s.content.to_ascii_lowercase())
                    .collect();
                assert!(
                    !current.is_empty() && current.iter().all(|c| "needle".starts_with(c)),
                    "{line:?} at {width}"
                );
                // the text is what the reference draws, only marked
                let all = reference(&t, &theme, width);
                for (k, l) in w.lines.iter().enumerate() {
                    assert_eq!(plain_text(l), plain_text(&all[w.top + k]));
                }
            }
        }
    }
    // every match in the window marked; none once the search is cleared
    let theme = Theme::mono();
    t.search("needle");
    t.follow = false;
    t.scroll = 0;
    let w = t.window(80, &theme, 100);
    let with = lines_with(&t, &theme, 80, "needle");
    for (k, line) in w.lines.iter().enumerate() {
        let n = searched(line)
            .to_ascii_lowercase()
            .matches("needle")
            .count();
        // underlined, or the current hit
        let marks = line
            .spans
            .iter()
            .filter(|s| {
                marked_span(s, "needle", Modifier::UNDERLINED)
                    || marked_span(s, "needle", Modifier::REVERSED)
            })
            .count();
        assert_eq!(n, marks, "{line:?}");
        assert_eq!(n > 0, with.contains(&k));
    }
    assert!(
        w.lines
            .iter()
            .any(|l| marked(l, "Needle", Modifier::UNDERLINED))
    );
    t.search("");
    let w = t.window(80, &theme, 100);
    assert_eq!(w.lines, reference(&t, &theme, 80));
}

fn marked_span(span: &Span, text: &str, modifier: Modifier) -> bool {
    span.content.eq_ignore_ascii_case(text) && span.style.add_modifier.contains(modifier)
}

#[test]
fn a_match_wrapped_onto_the_next_line_is_found_where_it_starts() {
    let theme = Theme::mono();
    let mut t = raw_transcript(Uuid::from_u128(1));
    // at 20 columns, 18 cells of room: "needle" starts on the first line, ends on the next
    let text = format!("{}needle and more", "x".repeat(15));
    t.merge(vec![message(
        1,
        MessageRole::User,
        MessageStatus::Complete,
        vec![Part::text(text)],
    )]);
    t.search("needle");
    let hit = t.next_match(20, &theme, 10, true);
    assert_eq!(
        hit,
        Some(SearchHit {
            line: 1,
            index: 1,
            total: 1
        })
    );
    let w = t.window(20, &theme, 10);
    let selected = |l: &Line| -> String {
        l.spans
            .iter()
            .filter(|s| s.style.add_modifier.contains(Modifier::REVERSED))
            .map(|s| &*s.content)
            .collect()
    };
    assert_eq!(selected(&w.lines[1]), "nee");
    assert_eq!(selected(&w.lines[2]), "dle");
    // wider, the same hit is on one line, still marked
    let w = t.window(80, &theme, 10);
    assert_eq!(selected(&w.lines[1]), "needle");
    assert_eq!(t.next_match(80, &theme, 10, true).map(|h| h.line), Some(1));
}

#[test]
fn search_in_a_long_transcript_draws_no_text() {
    let theme = Theme::default_theme();
    let mut t = raw_transcript(Uuid::from_u128(1));
    t.merge(messages(10_000, 1));
    let w = t.window(120, &theme, 40);
    TEXT_LINES_DRAWN.with(|n| n.set(0));
    t.search("WINDOWS LINE");
    assert_eq!(t.next_match(120, &theme, 40, true), None);
    t.search("windows line");
    let first = t.next_match(120, &theme, 40, true);
    let Some(first) = first else {
        panic!("not found");
    };
    assert!(first.total > 1000, "{first:?}");
    // forward from the top of the frame shown (the bottom one): the last hit, on it
    assert_eq!(first.index, first.total);
    assert!(first.line < w.total);
    let second = t.next_match(120, &theme, 40, true);
    assert_eq!(second.map(|h| h.index), Some(1));
    let back = t.next_match(120, &theme, 40, false);
    assert_eq!(back, Some(first));
    assert_eq!(TEXT_LINES_DRAWN.with(Cell::get), 0);
    // a frame draws only what is on screen
    let w = t.window(120, &theme, 40);
    assert!(w.lines.iter().any(|l| {
        marked(l, "windows line", Modifier::UNDERLINED)
            || l.spans
                .iter()
                .any(|s| s.style == s.style.patch(theme.selected))
    }));
    assert!(TEXT_LINES_DRAWN.with(Cell::get) < 1000);
    // streaming into a message is searched again, alone
    t.apply_delta(&LiveDelta {
        session: t.session,
        seq: 10_000,
        part: 0,
        text: "\nwindows line, once more".into(),
    });
    let again = t.next_match(120, &theme, 40, false);
    assert_eq!(again.map(|h| h.total), Some(first.total + 1));
}

#[test]
fn search_hits_match_the_reference_in_every_look() {
    let mut t = raw_transcript(Uuid::from_u128(1));
    t.merge(messages(60, 1));
    let theme = Theme::default_theme();
    for query in ["line", "wide", "#4", "src/", "windows"] {
        t.search(query);
        for (wrap, tools_open, timestamps) in [
            (true, false, false),
            (true, true, true),
            (false, true, false),
        ] {
            t.wrap = wrap;
            t.tools_open = tools_open;
            t.timestamps = timestamps;
            for width in [10, 33, 80, 158] {
                let want = lines_with(&t, &theme, width, query);
                t.follow = false;
                t.scroll = 0;
                t.window(width, &theme, 20);
                t.search("");
                t.search(query);
                let mut got = Vec::new();
                let mut total = 0;
                while let Some(hit) = t.next_match(width, &theme, 20, true) {
                    if got.first() == Some(&hit.line) {
                        break;
                    }
                    assert_eq!(hit.index, got.len() + 1);
                    total = hit.total;
                    got.push(hit.line);
                }
                assert_eq!(total, got.len());
                let what = format!("{query:?} at {width}, wrap {wrap} tools {tools_open}");
                for line in &want {
                    assert!(got.contains(line), "{what}: {line} not found in {got:?}");
                }
                if !wrap {
                    assert_eq!(got, want, "{what}");
                }
                // the others have a match that starts there and wraps onto the next lines
                let all = reference(&t, &theme, width);
                for &line in got.iter().filter(|l| !want.contains(l)) {
                    let joined: String = all[line..(line + query.len()).min(all.len())]
                        .iter()
                        .map(searched)
                        .collect::<String>()
                        .to_ascii_lowercase();
                    let first = searched(&all[line]).len();
                    assert!(
                        joined
                            .match_indices(&query.to_ascii_lowercase())
                            .any(|(at, _)| at < first),
                        "{what}: {line} ({joined:?}) has no match"
                    );
                }
            }
        }
    }
}

/// A tool call's head says what it is about in words, never its raw JSON.
#[test]
fn a_tool_line_says_what_the_call_is_about() {
    use super::draw::tool_summary;
    use serde_json::json;
    assert_eq!(
        tool_summary(&json!({"command": "ls -la", "description": "List"})),
        "ls -la"
    );
    assert_eq!(
        tool_summary(&json!({"filePath": "/w/src/lib.rs"})),
        "/w/src/lib.rs"
    );
    assert_eq!(
        tool_summary(
            &json!({"questions": [{"header": "Region", "question": "Which region?",
            "options": [{"label": "eu-west"}]}]})
        ),
        "Which region?"
    );
    assert_eq!(
        tool_summary(&json!({"limit": 5, "deep": true, "nested": {"a": 1}})),
        "deep=true limit=5"
    );
}

// ---------------------------------------------------------------- markdown, folds, durations

/// Every line of the transcript, each message drawn whole from a shape measured afresh: a
/// window must be a slice of this, and the counts its length, however the transcript's own
/// shapes were kept up to date.
fn drawn_whole(t: &Transcript, theme: &Theme, width: u16) -> Vec<Line<'static>> {
    let look = t.look(width, theme);
    let mut out = Vec::new();
    for (i, m) in t.messages().iter().enumerate() {
        let shape = Shape::of(m, 0, t.markdown());
        draw_message(m, &shape, t.turn_took(i), &look, &mut out);
    }
    out
}

fn check_whole(t: &Transcript, theme: &Theme, width: u16, height: usize) {
    check_against(&drawn_whole(t, theme, width), t, theme, width, height);
    // no row wider than the screen where there is room for a row at all
    if t.wrap && width >= 16 {
        for l in &t.window(width, theme, height).lines {
            assert!(l.width() <= usize::from(width) + 20, "width {width}: {l:?}");
        }
    }
}

const MARKDOWN: [&str; 5] = [
    "# Plan\n\n1. **read** the `config`\n2. fix it\n\n```rust\nfn main() { let x = 1; }\n```",
    "| service | replicas |\n|---|--:|\n| api | 3 |\n| a much longer worker name | 12 |",
    "> quoted *text* that goes on for a while so that it wraps at narrow widths\n\n- one\n- two\n  - nested item with a long tail of words to wrap",
    "plain words that wrap between words at every width and never split a word unless it must: supercalifragilisticexpialidocious",
    "日本語のテキストと **bold 日本** and a [link](https://example.com/a/very/long/path)",
];

fn markdown_messages(n: i64, from: i64) -> Vec<Message> {
    (from..from + n)
        .map(|seq| {
            let k = seq as usize;
            let role = if k.is_multiple_of(3) {
                MessageRole::User
            } else {
                MessageRole::Assistant
            };
            let mut parts = vec![Part::text(MARKDOWN[k % MARKDOWN.len()])];
            if role == MessageRole::Assistant && k.is_multiple_of(2) {
                parts.insert(
                    0,
                    Part::Reasoning {
                        text: "**thinking** about it\n- a\n- b".into(),
                    },
                );
                parts.push(Part::Tool {
                    call_id: format!("c{seq}"),
                    tool: "bash".into(),
                    status: ToolStatus::Completed,
                    input: serde_json::json!({"command": "ls"}),
                    output: Some("a\nb".into()),
                    error: None,
                    started_at: Some(chrono::DateTime::UNIX_EPOCH),
                    ended_at: Some(
                        chrono::DateTime::UNIX_EPOCH + chrono::Duration::milliseconds(1500),
                    ),
                });
            }
            message(seq, role, MessageStatus::Complete, parts)
        })
        .collect()
}

#[test]
fn markdown_windows_are_every_line_drawn_in_every_look() {
    let mut t = Transcript::new(Uuid::from_u128(1));
    t.merge(markdown_messages(24, 1));
    assert!(t.markdown());
    for theme in [Theme::default_theme(), Theme::mono()] {
        for (wrap, tools_open, reasoning_open) in [
            (true, false, false),
            (true, true, true),
            (false, false, true),
            (false, true, false),
        ] {
            t.wrap = wrap;
            t.tools_open = tools_open;
            t.reasoning_open = reasoning_open;
            for width in [0, 10, 11, 17, 40, 80, 158] {
                let total = drawn_whole(&t, &theme, width).len();
                for height in [1, 9, 46] {
                    t.follow = true;
                    check_whole(&t, &theme, width, height);
                    t.follow = false;
                    for scroll in [0, total / 3, total - 1] {
                        t.scroll = scroll;
                        check_whole(&t, &theme, width, height);
                    }
                }
            }
        }
    }
}

#[test]
fn markdown_is_drawn_as_markdown_and_raw_on_request() {
    let theme = Theme::mono();
    let mut t = Transcript::new(Uuid::from_u128(1));
    t.merge(vec![message(
        1,
        MessageRole::Assistant,
        MessageStatus::Complete,
        vec![
            Part::Reasoning {
                text: "first\nsecond".into(),
            },
            Part::text(MARKDOWN[0]),
        ],
    )]);
    let text = |t: &Transcript| -> Vec<String> {
        t.window(60, &theme, 40)
            .lines
            .iter()
            .map(plain_text)
            .collect()
    };
    let shown = text(&t);
    // the reasoning folded to a line saying so; markers gone, a heading bold, code in a gutter
    assert!(
        shown.contains(&"  ~ thinking, 2 lines  (T shows)".to_string()),
        "{shown:?}"
    );
    assert!(!shown.iter().any(|l| l.contains("first")), "{shown:?}");
    assert!(shown.contains(&"  Plan".to_string()), "{shown:?}");
    assert!(
        shown.contains(&"  1. read the config".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"  │ fn main() { let x = 1; }".to_string()),
        "{shown:?}"
    );
    let w = t.window(60, &theme, 40);
    let heading = w.lines.iter().find(|l| plain_text(l) == "  Plan");
    assert!(heading.is_some_and(|l| marked(l, "Plan", Modifier::BOLD)));
    // unfolded, the reasoning is there
    t.reasoning_open = true;
    assert!(text(&t).contains(&"  ~ first".to_string()));
    // raw: as the agent wrote it
    t.set_markdown(false);
    let raw = text(&t);
    assert!(raw.contains(&"  # Plan".to_string()), "{raw:?}");
    assert!(raw.contains(&"  ```rust".to_string()), "{raw:?}");
    t.set_markdown(true);
    assert_eq!(text(&t), {
        let mut again = shown.clone();
        let at = again
            .iter()
            .position(|l| l.contains("thinking"))
            .unwrap_or(0);
        again.splice(
            at..at + 1,
            ["  ~ first".to_string(), "  ~ second".to_string()],
        );
        again
    });
}

#[test]
fn streamed_markdown_is_laid_out_again_as_it_grows() {
    let theme = Theme::default_theme();
    let mut t = Transcript::new(Uuid::from_u128(1));
    t.merge(markdown_messages(9, 1));
    t.merge(vec![message(
        10,
        MessageRole::Assistant,
        MessageStatus::Pending,
        vec![Part::text("")],
    )]);
    check_whole(&t, &theme, 40, 20);
    // a fence opened and closed across deltas, a table, a list, text after
    for delta in [
        "Here is the fix:\n\n```py",
        "\nprint('x')  # one\n",
        "```\n\n| a | b |\n|---|---|\n| 1 ",
        "| 2 |\n\n- item one that is long enough to wrap at forty columns\n- item",
        " two\n\nand done.",
    ] {
        assert!(t.apply_delta(&LiveDelta {
            session: t.session,
            seq: 10,
            part: 0,
            text: delta.into(),
        }));
        for width in [12, 40, 80] {
            check_whole(&t, &theme, width, 20);
        }
    }
    // prose streamed a few words at a time (taken in without laying the message out again)
    for k in 0..40 {
        let words = ["and more ", "words", " then", ", done. ", "naïve café "][k % 5];
        assert!(t.apply_delta(&LiveDelta {
            session: t.session,
            seq: 10,
            part: 0,
            text: words.into(),
        }));
        for width in [12, 40, 80] {
            check_whole(&t, &theme, width, 20);
        }
    }
    let shown: Vec<String> = drawn_whole(&t, &theme, 80).iter().map(plain_text).collect();
    assert!(
        shown.contains(&"  │ print('x')  # one".to_string()),
        "{shown:?}"
    );
    assert!(shown.contains(&"  • item two".to_string()), "{shown:?}");
    assert!(!shown.iter().any(|l| l.contains("```")), "{shown:?}");
}

#[test]
fn search_finds_words_in_laid_out_markdown() {
    let theme = Theme::mono();
    let mut t = Transcript::new(Uuid::from_u128(1));
    t.merge(markdown_messages(12, 1));
    t.search("wrap");
    for width in [14u16, 40, 120] {
        let all = drawn_whole(&t, &theme, width);
        let with: Vec<usize> = all
            .iter()
            .enumerate()
            .filter(|(_, l)| searched(l).contains("wrap"))
            .map(|(k, _)| k)
            .collect();
        // every hit lands on a line that shows the word (or where it starts, wrapped)
        let first = t.next_match(width, &theme, 10, true).map(|h| h.total);
        let Some(total) = first else {
            panic!("no hit at {width}");
        };
        assert!(total >= with.len().min(1), "{width}");
        for _ in 0..total {
            let Some(hit) = t.next_match(width, &theme, 10, true) else {
                panic!("lost the hits at {width}");
            };
            let w = t.window(width, &theme, 10);
            let line = &w.lines[hit.line - w.top];
            assert!(
                plain_text(line).contains('w') && with.contains(&hit.line)
                    || plain_text(line).ends_with("w")
                    || plain_text(line).ends_with("wr")
                    || plain_text(line).ends_with("wra"),
                "{line:?} at {width}"
            );
            assert!(
                line.spans
                    .iter()
                    .any(|s| s.style == s.style.patch(theme.selected)),
                "{line:?} at {width}"
            );
        }
    }
}

#[test]
fn tool_calls_and_turns_say_how_long_they_took() {
    let theme = Theme::mono();
    let mut t = Transcript::new(Uuid::from_u128(1));
    let asked = message(
        1,
        MessageRole::User,
        MessageStatus::Complete,
        vec![Part::text("go")],
    );
    let started = asked.created_at;
    let mut answer = message(
        2,
        MessageRole::Assistant,
        MessageStatus::Pending,
        vec![Part::Tool {
            call_id: "c".into(),
            tool: "bash".into(),
            status: ToolStatus::Running,
            input: serde_json::json!({"command": "make"}),
            output: None,
            error: None,
            started_at: Some(chrono::Utc::now() - chrono::Duration::seconds(75)),
            ended_at: None,
        }],
    );
    t.merge(vec![asked.clone(), answer.clone()]);
    let text = |t: &Transcript| -> Vec<String> {
        t.window(80, &theme, 20)
            .lines
            .iter()
            .map(plain_text)
            .collect()
    };
    let running = text(&t);
    // a running call's time so far (at least the 75 s it has run); no turn time yet
    assert!(
        running
            .iter()
            .any(|l| l.starts_with("  [bash running 1m1") && l.contains("make")),
        "{running:?}"
    );
    assert_eq!(running[0], "> you  #1");
    // done: the call's own time, and the turn's on the person's message
    answer.status = MessageStatus::Complete;
    answer.updated_at = started + chrono::Duration::seconds(42);
    answer.parts = vec![Part::Tool {
        call_id: "c".into(),
        tool: "bash".into(),
        status: ToolStatus::Completed,
        input: serde_json::json!({"command": "make"}),
        output: Some("ok".into()),
        error: None,
        started_at: Some(started),
        ended_at: Some(started + chrono::Duration::milliseconds(3400)),
    }];
    t.merge(vec![answer]);
    let done = text(&t);
    assert_eq!(done[0], "> you  #1  turn 42s");
    assert!(
        done.iter()
            .any(|l| l.starts_with("  [bash done 3.4s] make")),
        "{done:?}"
    );
    assert_eq!(super::draw::took(chrono::Duration::seconds(3725)), "1h02m");
    assert_eq!(
        super::draw::took(chrono::Duration::milliseconds(400)),
        "0.4s"
    );
}

/// How many line counts are estimates.
fn unsure(t: &Transcript) -> usize {
    let memo = t.memo.take();
    let n = memo.unsure_left;
    t.memo.set(memo);
    n
}

#[test]
fn a_resize_counts_what_the_frame_shows_and_the_rest_between_frames() {
    let theme = Theme::mono();
    let mut t = Transcript::new(Uuid::from_u128(1));
    t.merge(markdown_messages(400, 1));
    check_whole(&t, &theme, 100, 20);
    assert!(!t.settling());

    // A new width: the frame counts the few messages it shows, exactly, and nothing else.
    let at_60 = drawn_whole(&t, &theme, 60);
    let w = t.window(60, &theme, 20);
    assert_eq!(w.lines, at_60[at_60.len() - 20..]);
    assert!(t.settling());
    let left = unsure(&t);
    assert!(
        left > 380 && left < 400,
        "{left} of 400 counts left to make sure"
    );

    // While the rest waits, what arrives at the bottom is drawn right.
    t.merge(markdown_messages(2, 401));
    let w = t.window(60, &theme, 20);
    let at_60 = drawn_whole(&t, &theme, 60);
    assert_eq!(w.lines, at_60[at_60.len() - 20..]);
    assert!(t.settling());

    // Between frames, a slice at a time, every count is made exact.
    let mut slices = 0;
    while !t.settle(std::time::Duration::ZERO) {
        slices += 1;
    }
    assert!(
        slices >= 3,
        "64 messages a slice at most when the time is up: {slices}"
    );
    assert_eq!(unsure(&t), 0);
    let w = t.window(60, &theme, 20);
    assert_eq!(w.total, at_60.len());

    // Scrolled up, a resize then a search: the hits are numbered on exact counts.
    t.follow = false;
    t.scroll = 30;
    t.window(60, &theme, 20);
    t.search("wrap");
    let at_140 = drawn_whole(&t, &theme, 140);
    let Some(hit) = t.next_match(140, &theme, 20, true) else {
        panic!("no hit at 140");
    };
    assert!(!t.settling());
    assert!(
        searched(&at_140[hit.line]).contains("wrap"),
        "{:?}",
        at_140[hit.line]
    );
    t.search("");
    check_whole(&t, &theme, 140, 20);
}
