use super::*;

/// Every row of `laid` as drawn `room` cells wide (`None`: not wrapping), head included.
fn shown(laid: &Laid, room: Option<usize>) -> Vec<String> {
    let mut out = Vec::new();
    for k in 0..laid.lines.len() {
        let text = laid.line_text(k);
        // the runs of marks are the line, end to end
        let runs: Vec<_> = laid.line_marks(k).collect();
        let mut at = 0;
        for (range, _) in &runs {
            assert_eq!(range.start, at, "line {k} {text:?}: {runs:?}");
            at = range.end;
        }
        assert_eq!(at, text.len(), "line {k} {text:?}: {runs:?}");
        laid.rows(k, room, |row| {
            let drawn: String = runs
                .iter()
                .filter_map(|(r, _)| {
                    text.get(r.start.max(row.range.start)..r.end.min(row.range.end))
                })
                .collect();
            out.push(format!("{}{drawn}", row.head))
        });
    }
    out
}

/// The mark of the run holding `needle` on the line that has it.
fn mark_of(laid: &Laid, needle: &str) -> Mark {
    for k in 0..laid.lines.len() {
        let text = laid.line_text(k);
        if let Some(at) = text.find(needle) {
            for (range, mark) in laid.line_marks(k) {
                if range.contains(&at) {
                    return mark;
                }
            }
        }
    }
    panic!("{needle:?} is not in {:?}", shown(laid, None));
}

const REPLY: &str = "# Deploy plan\n\nI read **the manifests** and *two* things stand out:\n\n\
1. the image is `latest`\n2. no probe\n   - readiness\n   - liveness\n\n\
> Never ship on a Friday.\n\n```rust\nfn main() { let n = 42; // answer\n    println!(\"hi\"); }\n```\n\n\
| service | replicas | ok |\n|:--|--:|:-:|\n| api | 3 | yes |\n| worker | 12 | no |\n\n\
See [the docs](https://example.com/docs) or <https://example.com>.\n\n---\n\nDone.";

#[test]
fn an_agents_markdown_reads_as_a_document() {
    let laid = layout(REPLY);
    assert_eq!(
        shown(&laid, None),
        [
            "Deploy plan",
            "",
            "I read the manifests and two things stand out:",
            "",
            "1. the image is latest",
            "2. no probe",
            "   ◦ readiness",
            "   ◦ liveness",
            "",
            "> Never ship on a Friday.",
            "",
            "│ fn main() { let n = 42; // answer",
            "│     println!(\"hi\"); }",
            "",
            "service │ replicas │ ok",
            "────────┼──────────┼────",
            "api     │        3 │ yes",
            "worker  │       12 │ no",
            "",
            "See the docs (https://example.com/docs) or https://example.com.",
            "",
            "────────────────────────",
            "",
            "Done.",
        ]
    );
    assert!(mark_of(&laid, "Deploy").has(Mark::HEADING.with(Mark::TITLE)));
    assert!(mark_of(&laid, "the manifests").has(Mark::STRONG));
    assert!(mark_of(&laid, "two").has(Mark::EMPH));
    assert!(mark_of(&laid, "latest").has(Mark::CODE));
    assert!(mark_of(&laid, "Never").has(Mark::QUOTE));
    assert_eq!(mark_of(&laid, "fn main"), Mark::KEYWORD);
    assert_eq!(mark_of(&laid, "42"), Mark::NUMBER);
    assert_eq!(mark_of(&laid, "// answer"), Mark::COMMENT);
    assert_eq!(mark_of(&laid, "\"hi\""), Mark::STRING);
    assert!(mark_of(&laid, "service").has(Mark::STRONG));
    assert!(mark_of(&laid, "the docs").has(Mark::LINK));
    assert!(mark_of(&laid, "(https://example.com/docs)").has(Mark::MUTED));
}

#[test]
fn prose_wraps_between_words_under_its_bullet_and_code_anywhere() {
    let laid =
        layout("- restart the sandbox when the pod is up again\n\n```\nabcdefghijklmnop\n```");
    assert_eq!(
        shown(&laid, Some(16)),
        [
            "• restart the ",
            "  sandbox when ",
            "  the pod is up ",
            "  again",
            "",
            "│ abcdefghijklmn",
            "│ op",
        ]
    );
    // a quote's rows keep its bar
    let quote = layout("> one two three four five");
    assert_eq!(
        shown(&quote, Some(12)),
        ["> one two ", "> three ", "> four five"]
    );
}

#[test]
fn counts_are_the_rows_drawn_at_every_width() {
    let mut text = REPLY.to_string();
    text.push_str(
        "\n\n日本語の文章は二つのセルを取る。 a very-long-word-without-any-space-in-it\n",
    );
    text.push_str("- [x] done\n- [ ] todo with some more words after it\n");
    let laid = layout(&text);
    for room in 1..90 {
        assert_eq!(
            laid.count(Some(room)),
            shown(&laid, Some(room)).len(),
            "room {room}"
        );
        // (narrower, a head alone can fill the room)
        for row in shown(&laid, Some(room)).iter().filter(|_| room >= 8) {
            assert!(
                crate::tui::cells::width(row) <= room,
                "room {room}: {row:?}"
            );
        }
    }
    assert_eq!(laid.count(None), laid.lines.len());
}

#[test]
fn nothing_from_the_text_reaches_the_terminal_as_a_control() {
    let laid = layout(
        "red &#27;[31mtext\u{1b}[0m and `\u{7}bell` \t tab\n\n```\n\u{1b}]0;title\u{7}x\n```",
    );
    let all = shown(&laid, None).join("\n");
    assert!(!all.chars().any(|c| c.is_control() && c != '\n'), "{all:?}");
    assert!(all.contains("text"), "{all:?}");
}

#[test]
fn highlighted_runs_are_the_line_and_find_what_they_should() {
    let cases = [
        ("rust", "let s = \"a \\\" b\"; // c", "let", Mark::KEYWORD),
        ("python", "def f(x): return 'y'  # z", "'y'", Mark::STRING),
        (
            "sh",
            "if [ -f x ]; then echo \"$HOME\"; fi",
            "then",
            Mark::KEYWORD,
        ),
        (
            "sql",
            "SELECT id FROM sessions -- all",
            "FROM",
            Mark::KEYWORD,
        ),
        ("yaml", "  replicas: 3 # three", "replicas", Mark::KEYWORD),
        ("json", "{\"name\": \"x\", \"n\": 12}", "12", Mark::NUMBER),
        ("diff", "-old line", "-old line", Mark::REMOVED),
        ("unknown", "let x = 1", "let x = 1", Mark::PLAIN),
    ];
    for (lang, line, needle, want) in cases {
        let mut runs = Vec::new();
        code::highlight(lang, line, |piece, mark| runs.push((piece, mark)));
        assert_eq!(runs.iter().map(|r| r.0).collect::<String>(), line, "{lang}");
        assert!(
            runs.iter().any(|(p, m)| p.contains(needle) && *m == want),
            "{lang}: {runs:?}"
        );
    }
    // a word holding a keyword is not one
    let mut runs = Vec::new();
    code::highlight("rust", "letter", |piece, mark| runs.push((piece, mark)));
    assert_eq!(runs, [("letter", Mark::PLAIN)]);
}

#[test]
fn marks_read_without_colour() {
    let mono = Theme::mono();
    let base = Style::default();
    assert!(
        Mark::HEADING
            .style(base, &mono)
            .add_modifier
            .contains(Modifier::BOLD)
    );
    assert!(
        Mark::HEADING
            .with(Mark::TITLE)
            .style(base, &mono)
            .add_modifier
            .contains(Modifier::UNDERLINED)
    );
    assert!(
        Mark::LINK
            .style(base, &mono)
            .add_modifier
            .contains(Modifier::UNDERLINED)
    );
    assert!(
        Mark::EMPH
            .style(base, &mono)
            .add_modifier
            .contains(Modifier::ITALIC)
    );
    assert_eq!(Mark::PLAIN.style(base, &mono), base);
}

#[test]
fn counting_rows_from_break_points_is_wrapping_them() {
    // random prose: short and long words, narrow non-ASCII chars, runs of spaces, a word too
    // long for a break point's byte
    let mut seed = 7u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for k in 0..300 {
        let mut text = String::new();
        let words = 1 + next(60);
        for _ in 0..words {
            let word = match next(12) {
                0 => "é".repeat(1 + next(9) as usize),
                1 => "—".to_string(),
                2 if k % 7 == 0 => "x".repeat(200 + next(200) as usize),
                3 => "".to_string(),
                _ => "w".repeat(1 + next(14) as usize),
            };
            text.push_str(&word);
            text.push(' ');
            if next(9) == 0 {
                text.push(' ');
            }
        }
        let laid = plain(text.trim_end(), Mark::PLAIN);
        for room in 1..130 {
            for line in 0..laid.lines.len() {
                let mut drawn = 0;
                laid.rows(line, Some(room), |_| drawn += 1);
                assert_eq!(
                    laid.count_rows(line, Some(room)),
                    drawn,
                    "room {room}: {:?}",
                    laid.line_text(line)
                );
            }
            assert_eq!(laid.count(Some(room)), shown(&laid, Some(room)).len());
        }
    }
}

#[test]
fn streamed_text_taken_in_is_laying_it_out_again() {
    let mut seed = 11u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let starts = [
        "",
        "Plain words",
        "# A heading",
        "- an item",
        "> a quote",
        "some *emphasis* and `code` then",
        "a *dangling",
        "see [the docs](https://example.com) now",
        "| a | b |\n|---|---|\n| 1 | 2",
        "```rust\nfn main",
        "two paragraphs\n\nthe second",
        "AT&T and",
        "日本語の",
        "trailing back\\",
    ];
    let pieces = [
        " and more",
        "words",
        " ",
        "  ",
        "x",
        "é",
        "—",
        ", then: done.",
        "\n",
        "\n\n",
        "*",
        "`",
        "(",
        "amp;",
        " 12",
        "日本",
        "-",
        ":",
        "supercalifragilisticexpialidocious",
    ];
    let mut taken = 0;
    for start in starts {
        for _ in 0..60 {
            let mut text = start.to_string();
            let mut laid = layout(&text);
            for _ in 0..30 {
                let delta = if next(6) == 0 {
                    "w".repeat(1 + next(300) as usize)
                } else {
                    pieces[next(pieces.len() as u64) as usize].to_string()
                };
                let before = text.clone();
                text.push_str(&delta);
                if laid.append_plain(&before, &delta) {
                    taken += 1;
                } else {
                    laid = layout(&text);
                }
                assert_eq!(laid, layout(&text), "{before:?} + {delta:?}");
            }
        }
    }
    // most of a plain stream is taken in without laying it out again
    assert!(taken > 2000, "{taken}");
}

#[test]
fn narrow_word_wrapping_is_word_wrapping() {
    let texts = [
        "the image cannot be pulled",
        "a bcdefghij  klm   n",
        "naïve café — déjà vu: a line of words that goes on",
        "/a/very/long/path/name with words",
        "   leading spaces and trailing   ",
        "x",
    ];
    for text in texts {
        for room in 1..40 {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            crate::tui::cells::wrap_words(text, room, |r| a.push(r));
            wrap_words_narrow(text, room, |r| b.push(r));
            assert_eq!(a, b, "{text:?} at {room}");
        }
    }
}
