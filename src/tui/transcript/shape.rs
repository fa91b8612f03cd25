//! A message's [`Shape`]: what its line count depends on at any width, wrap or fold, kept
//! current as text streams in, so that counting lines never touches the text.

use super::*;

/// What a message's line count depends on, at any width, wrap or fold: how many lines never
/// wrap, and the width in cells of every text line (once sanitised, tabs expanded), longest
/// first in each piece of text (a count needs no order). Where a line breaks depends only on
/// its width when every char in it is one cell (or none) wide; a line with wider chars also
/// keeps the widths of its clusters, run-length coded, to count its breaks by.
pub(super) struct Shape {
    /// Changes whenever the message does (unique over the transcript's life): the key of its
    /// drawn lines.
    pub(super) rev: u64,
    /// Lines that never wrap (header, tool calls, files, patches, the blank line after).
    pub(super) fixed: usize,
    /// The text pieces, in order.
    pub(super) blocks: Vec<Block>,
    /// The widths of the text lines with no wide char, longest first in each block.
    pub(super) narrow: Vec<u32>,
    /// The text lines with a wide char, longest first in each block.
    pub(super) wide: Vec<Wide>,
    /// The clusters of the `wide` lines.
    pub(super) runs: Vec<Run>,
    /// The text pieces laid out as markdown (see [`Block::laid`]).
    pub(super) laid: Vec<Laid>,
}

/// A piece of text in a [`Shape`]: which piece, how it is set, how many of the shape's
/// `narrow` and `wide` lines are its, and its last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) id: u32,
    pub(super) kind: Kind,
    pub(super) narrow: usize,
    pub(super) wide: usize,
    pub(super) tail: Tail,
    /// Its layout in the shape's `laid`, when it is laid out as markdown: then it has no
    /// `narrow` or `wide` lines, and its count is the layout's.
    pub(super) laid: Option<u32>,
    /// A laid-out block's line count and widest line, kept here: a count at a width it fits
    /// in reads nothing else (0 for text as written).
    pub(super) laid_lines: u32,
    pub(super) widest: u32,
}

/// The last line of a piece's text, as far as text appended to it needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tail {
    /// The text is empty or ends with a newline: what comes next starts a new line.
    Empty,
    /// A line of plain text this many cells wide (counted among the block's `narrow`), in a
    /// text with nothing the sanitiser removes (so no escape sequence is left open).
    Narrow(u32),
    /// Anything else: appending means measuring the whole text again.
    Unknown,
}

impl Tail {
    /// The last line of `drawn`, the text as drawn; `clean` when the sanitiser removed
    /// nothing from it. A narrow last line must end in an ASCII char, so that nothing
    /// appended can join its last cluster.
    pub(super) fn of(drawn: &str, clean: bool) -> Tail {
        if !clean {
            return Tail::Unknown;
        }
        if drawn.is_empty() || drawn.ends_with('\n') {
            return Tail::Empty;
        }
        let last = drawn.rsplit('\n').next().unwrap_or("");
        if last.is_ascii() {
            return Tail::Narrow(to_u32(last.len()));
        }
        if !last.ends_with(|c: char| c.is_ascii()) {
            return Tail::Unknown;
        }
        let mut width = 0;
        for (_, w) in clusters(last) {
            if w > 1 {
                return Tail::Unknown;
            }
            width += w;
        }
        Tail::Narrow(to_u32(width))
    }
}

/// The width of a line's worth of appended text as drawn, when it is plain: printable ASCII
/// (a tab is drawn as four spaces), or chars one cell wide with nothing the sanitiser removes.
/// Text that goes on a line (`joins`) must start with an ASCII char, which starts a cluster of
/// its own. `None` otherwise.
pub(super) fn plain_width(text: &str, joins: bool) -> Option<u32> {
    if text.is_ascii() {
        let mut width = 0u32;
        for b in text.bytes() {
            width = width.saturating_add(match b {
                b'\t' => 4,
                0x20..=0x7e => 1,
                _ => return None,
            });
        }
        return Some(width);
    }
    if (joins && !text.starts_with(|c: char| c.is_ascii()))
        || text.contains('\t')
        || !matches!(sanitize::text(text), Cow::Borrowed(_))
    {
        return None;
    }
    let mut width = 0;
    for (_, w) in clusters(text) {
        if w > 1 {
            return None;
        }
        width += w;
    }
    Some(to_u32(width))
}

/// A line with a char wider than one cell: its width, and its clusters (`runs[from..to]`).
pub(super) struct Wide {
    pub(super) width: u32,
    pub(super) from: u32,
    pub(super) to: u32,
}

/// `n` clusters in a row, each `width` cells wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) width: u32,
    pub(super) n: u32,
}

pub(super) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Shape {
    /// `m`'s shape; its text laid out as markdown when `markdown`.
    pub(super) fn of(m: &Message, rev: u64, markdown: bool) -> Shape {
        let mut shape = Shape {
            rev,
            fixed: 0,
            blocks: Vec::new(),
            narrow: Vec::new(),
            wide: Vec::new(),
            runs: Vec::new(),
            laid: Vec::new(),
        };
        pieces(m, true, |id, piece| match piece {
            Piece::Text(kind, text) if markdown && kind.markdown() => {
                let laid = markdown::layout(&text);
                let (laid_lines, widest) = (to_u32(laid.lines.len()), laid.widest);
                shape.laid.push(laid);
                shape.blocks.push(Block {
                    laid_lines,
                    widest,
                    id,
                    kind,
                    narrow: 0,
                    wide: 0,
                    // appending means laying it out again
                    tail: Tail::Unknown,
                    laid: Some(to_u32(shape.laid.len() - 1)),
                });
            }
            Piece::Text(kind, text) => {
                let (narrow, wide) = (shape.narrow.len(), shape.wide.len());
                let (drawn, clean) = drawn_and_clean(&text);
                for raw in drawn.lines() {
                    shape.line(raw);
                }
                shape.narrow[narrow..].sort_unstable_by(|a, b| b.cmp(a));
                shape.wide[wide..].sort_unstable_by_key(|w| std::cmp::Reverse(w.width));
                shape.blocks.push(Block {
                    id,
                    kind,
                    narrow: shape.narrow.len() - narrow,
                    wide: shape.wide.len() - wide,
                    tail: Tail::of(&drawn, clean),
                    laid: None,
                    laid_lines: 0,
                    widest: 0,
                });
            }
            _ => shape.fixed += 1,
        });
        shape
    }

    /// Piece `id`'s layout, when it is laid out as markdown.
    pub(super) fn laid(&self, id: u32) -> Option<&Laid> {
        let block = self.blocks.iter().find(|b| b.id == id)?;
        self.laid.get(block.laid? as usize)
    }

    /// Takes in `delta` streamed onto piece `id`, laid out as markdown, whose text was
    /// `before`, without laying it out again when that is sure to come out the same
    /// ([`Laid::append_plain`]); `false` (nothing changed) otherwise.
    pub(super) fn append_laid(&mut self, id: u32, before: &str, delta: &str, rev: u64) -> bool {
        let Some(block) = self.blocks.iter_mut().find(|b| b.id == id) else {
            return false;
        };
        let Some(laid) = block.laid.and_then(|l| self.laid.get_mut(l as usize)) else {
            return false;
        };
        if !laid.append_plain(before, delta) {
            return false;
        }
        block.widest = laid.widest;
        block.laid_lines = to_u32(laid.lines.len());
        self.rev = rev;
        true
    }

    /// Takes in `text` appended to piece `id` without measuring the piece again: its last line
    /// grows, and the lines after it are new. Only for plain text after a known last line;
    /// `false` (nothing changed) otherwise, and the caller measures the message again.
    pub(super) fn append(&mut self, id: u32, text: &str, rev: u64) -> bool {
        let Some(b) = self.blocks.iter().position(|b| b.id == id) else {
            return false;
        };
        let tail = match self.blocks[b].tail {
            Tail::Empty => None,
            Tail::Narrow(w) => Some(w),
            Tail::Unknown => return false,
        };
        let mut widths = Vec::new();
        let mut last_ascii = true;
        for (k, segment) in text.split('\n').enumerate() {
            match plain_width(segment, k == 0 && tail.is_some()) {
                Some(w) => widths.push(w),
                None => return false,
            }
            if !segment.is_empty() {
                last_ascii = segment.ends_with(|c: char| c.is_ascii());
            }
        }
        let start: usize = self.blocks[..b].iter().map(|b| b.narrow).sum();
        if let Some(w) = tail {
            let block = &self.narrow[start..start + self.blocks[b].narrow];
            let at = block.partition_point(|&x| x > w);
            if block.get(at) != Some(&w) {
                return false;
            }
            self.narrow.remove(start + at);
            self.blocks[b].narrow -= 1;
        }
        // The old last line goes on with the first segment; each newline ends a line (empty or
        // not); what follows the last newline is the new last line, if it holds anything.
        widths[0] = widths[0].saturating_add(tail.unwrap_or(0));
        let last = widths.len() - 1;
        let new_tail = widths[last];
        for (k, &w) in widths.iter().enumerate() {
            if k == last && w == 0 && (k > 0 || tail.is_none()) {
                break;
            }
            let block = &self.narrow[start..start + self.blocks[b].narrow];
            let at = block.partition_point(|&x| x > w);
            self.narrow.insert(start + at, w);
            self.blocks[b].narrow += 1;
        }
        self.blocks[b].tail = if new_tail == 0 && (last > 0 || tail.is_none()) {
            Tail::Empty
        } else if last_ascii {
            Tail::Narrow(new_tail)
        } else {
            Tail::Unknown
        };
        self.rev = rev;
        true
    }

    /// Measures one text line (as drawn).
    pub(super) fn line(&mut self, raw: &str) {
        if raw.is_ascii() {
            self.narrow.push(to_u32(raw.len()));
            return;
        }
        let from = self.runs.len();
        let mut width = 0;
        let mut wide = false;
        for (_, w) in clusters(raw) {
            // a cluster of width 0 (zero-width chars starting the line) never breaks it
            if w == 0 {
                continue;
            }
            width += w;
            wide |= w > 1;
            let w = to_u32(w);
            match self.runs[from..].last_mut() {
                Some(run) if run.width == w => run.n = run.n.saturating_add(1),
                _ => self.runs.push(Run { width: w, n: 1 }),
            }
        }
        if wide {
            self.wide.push(Wide {
                width: to_u32(width),
                from: to_u32(from),
                to: to_u32(self.runs.len()),
            });
        } else {
            self.runs.truncate(from);
            self.narrow.push(to_u32(width));
        }
    }

    /// Its line count: what [`message_lines`] makes of it.
    pub(super) fn count(&self, fit: Fit) -> usize {
        let mut n = self.fixed;
        let mut narrow = self.narrow.as_slice();
        let mut wide = self.wide.as_slice();
        for block in &self.blocks {
            let (lines, rest) = narrow.split_at(block.narrow.min(narrow.len()));
            narrow = rest;
            let (wides, rest) = wide.split_at(block.wide.min(wide.len()));
            wide = rest;
            if block.kind.folded() && !fit.tools_open {
                continue;
            }
            if block.kind == Kind::Reasoning && !fit.reasoning_open {
                // folded to a line
                n += 1;
                continue;
            }
            if let Some(l) = block.laid {
                let indent = block.kind.indent().len();
                let room = fit.wrap.then(|| fit.width.saturating_sub(indent).max(1));
                n += match room {
                    Some(r) if block.widest as usize > r => {
                        self.laid.get(l as usize).map_or(0, |laid| laid.count(room))
                    }
                    _ => block.laid_lines as usize,
                };
                continue;
            }
            n += lines.len() + wides.len();
            if !fit.wrap {
                continue;
            }
            // One line each, plus what the lines wider than the room wrap into: those come
            // first, so a count stops at the first line that fits (a resize recounts them all).
            let room = fit.width.saturating_sub(block.kind.indent().len()).max(1);
            for &l in lines {
                let l = l as usize;
                if l <= room {
                    break;
                }
                n += l.div_ceil(room) - 1;
            }
            for w in wides {
                if w.width as usize <= room {
                    break;
                }
                let runs = self.runs.get(w.from as usize..w.to as usize).unwrap_or(&[]);
                n += wrapped(runs, room) - 1;
            }
        }
        n
    }
}

/// How many lines [`wrap`] makes of a line of clusters `runs`, `room` cells wide: the same
/// walk, a run at a time.
pub(super) fn wrapped(runs: &[Run], room: usize) -> usize {
    let mut lines = 1;
    let mut used = 0;
    for run in runs {
        let (width, n) = (run.width as usize, run.n as usize);
        if width == 0 || n == 0 {
            continue;
        }
        if width > room {
            // each on a line of its own
            lines += if used > 0 { n } else { n - 1 };
            used = width;
            continue;
        }
        let fit = room.saturating_sub(used) / width;
        if n <= fit {
            used += n * width;
            continue;
        }
        let rest = n - fit;
        let per_line = room / width;
        let more = rest.div_ceil(per_line);
        lines += more;
        used = (rest - (more - 1) * per_line) * width;
    }
    lines
}
