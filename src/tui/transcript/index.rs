//! The index that makes a long transcript cheap: line counts per message in a Fenwick tree
//! (the message holding line N in O(log n)), and the drawn lines kept from a frame to the next.
//!
//! **A new fit is counted lazily.** When the width (or wrap, or a fold) changes, every count
//! is kept as an estimate of itself and marked unsure; a frame counts exactly only the
//! messages it shows ([`Memo::sure_window`]), and the rest are counted a slice at a time
//! between frames ([`Memo::settle`]). So a resize costs the frame what the window costs, not
//! what a million lines cost. Until the rest are counted, the total (the scroll position
//! shown) is an estimate, and so is where line N of a view scrolled up falls: a following
//! view (the usual one) is exact at once.

use super::*;
use std::time::Instant;

/// Line counts per message for one [`Fit`], and a message's drawn lines kept from a frame to
/// the next.
#[derive(Default)]
pub(super) struct Memo {
    /// What `counts` and `tree` hold; `None` until counted, and after a message was inserted
    /// before others.
    pub(super) fit: Option<Fit>,
    pub(super) counts: Vec<usize>,
    pub(super) tree: Fenwick,
    /// Messages changed since they were counted (may repeat).
    pub(super) dirty: Vec<usize>,
    /// Which counts are estimates (counted at an earlier fit), how many, and where
    /// [`Memo::settle`] goes on from (it walks down from the end).
    pub(super) unsure: Vec<bool>,
    pub(super) unsure_left: usize,
    pub(super) cursor: usize,
    /// How `drawn` was drawn.
    pub(super) drawn_look: Option<LookKey>,
    /// The messages on screen in the last frame.
    pub(super) drawn: Vec<Drawn>,
    /// The last frame's window.
    pub(super) shown: Option<Shown>,
    /// The current search hit's matches, as drawn in the last frame.
    pub(super) emphasis: Option<Emphasis>,
}

pub(super) struct Drawn {
    pub(super) rev: u64,
    pub(super) lines: Vec<Line<'static>>,
}

impl Memo {
    pub(super) fn changed(&mut self, i: usize) {
        if self.fit.is_some() && self.dirty.last() != Some(&i) {
            self.dirty.push(i);
        }
    }

    /// A message was inserted at `i`, making `len` in all.
    pub(super) fn inserted(&mut self, i: usize, len: usize) {
        if self.fit.is_some() && i + 1 == len {
            // appended: the common case, a new message at the bottom
            self.counts.push(0);
            self.tree.push(0);
            self.dirty.push(i);
        } else {
            self.fit = None;
        }
    }

    /// Brings the counts up to date for `fit`: exactly when nothing was counted yet (or a
    /// message was inserted before others), else lazily (see the module's doc): the counts of
    /// another fit stand as estimates until made sure. Changed messages are counted exactly.
    pub(super) fn count(&mut self, fit: Fit, shapes: &[Shape]) {
        if self.fit.is_none() || self.counts.len() != shapes.len() {
            self.counts = shapes.iter().map(|s| s.count(fit)).collect();
            self.tree = Fenwick::new(&self.counts);
            self.dirty.clear();
            self.unsure.clear();
            self.unsure.resize(shapes.len(), false);
            self.unsure_left = 0;
            self.fit = Some(fit);
            return;
        }
        if self.fit != Some(fit) {
            self.fit = Some(fit);
            self.unsure.clear();
            self.unsure.resize(shapes.len(), true);
            self.unsure_left = shapes.len();
            self.cursor = shapes.len();
        }
        for i in std::mem::take(&mut self.dirty) {
            if let Some(shape) = shapes.get(i) {
                let new = shape.count(fit);
                self.recounted(i, new);
            }
        }
    }

    /// Count `i` is `new`, and sure.
    fn recounted(&mut self, i: usize, new: usize) {
        if self.unsure.get(i) == Some(&true) {
            self.unsure[i] = false;
            self.unsure_left -= 1;
        }
        if self.unsure.len() <= i {
            self.unsure.resize(i + 1, false);
        }
        self.tree.set(i, self.counts[i], new);
        self.counts[i] = new;
    }

    /// Counts message `i` exactly if its count is an estimate.
    fn make_sure(&mut self, i: usize, fit: Fit, shapes: &[Shape]) {
        if self.unsure.get(i) == Some(&true) {
            self.recounted(i, shapes[i].count(fit));
        }
    }

    /// Makes sure the counts of the messages a `height`-line frame shows: the last lines when
    /// `top` is `None` (following), else from line `top`. Following, the frame is then what
    /// counting everything would show.
    pub(super) fn sure_window(
        &mut self,
        fit: Fit,
        shapes: &[Shape],
        height: usize,
        top: Option<usize>,
    ) {
        while self.unsure_left > 0 {
            let total = self.tree.total();
            let max_top = total.saturating_sub(height);
            let first = top.map_or(max_top, |top| top.min(max_top));
            if first >= total {
                return;
            }
            let (mut i, skip) = self.tree.find(first);
            let mut covered = 0;
            let mut made = false;
            while i < shapes.len() && covered < skip + height {
                if self.unsure[i] {
                    self.make_sure(i, fit, shapes);
                    made = true;
                }
                covered += self.counts[i];
                i += 1;
            }
            if !made {
                return;
            }
        }
    }

    /// Counts exactly the messages whose counts are estimates, from the bottom up, until
    /// `deadline` (all of them without one). `true` when every count is sure.
    pub(super) fn settle(&mut self, shapes: &[Shape], deadline: Option<Instant>) -> bool {
        let Some(fit) = self.fit else { return true };
        let mut n = 0u32;
        while self.unsure_left > 0 && self.cursor > 0 {
            self.cursor -= 1;
            self.make_sure(self.cursor, fit, shapes);
            n += 1;
            if n.is_multiple_of(64) && deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        if self.cursor == 0 && self.unsure_left > 0 {
            // made sure out of order by frames: start again from the end
            self.cursor = shapes.len();
        }
        self.unsure_left == 0
    }
}

/// Prefix sums of line counts, with point updates, appends and "which message holds line N",
/// each in O(log n).
#[derive(Default)]
pub(super) struct Fenwick {
    /// 1-based: `tree[k - 1]` is the sum of the counts `k - lowbit(k) .. k`.
    pub(super) tree: Vec<usize>,
    pub(super) total: usize,
}

pub(super) fn lowbit(k: usize) -> usize {
    k & k.wrapping_neg()
}

impl Fenwick {
    pub(super) fn new(counts: &[usize]) -> Fenwick {
        let mut tree = counts.to_vec();
        for k in 1..=tree.len() {
            let parent = k + lowbit(k);
            if parent <= tree.len() {
                tree[parent - 1] += tree[k - 1];
            }
        }
        Fenwick {
            tree,
            total: counts.iter().sum(),
        }
    }

    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// The sum of the first `k` counts.
    pub(super) fn prefix(&self, mut k: usize) -> usize {
        let mut sum = 0;
        while k > 0 {
            sum += self.tree[k - 1];
            k -= lowbit(k);
        }
        sum
    }

    pub(super) fn push(&mut self, count: usize) {
        let k = self.tree.len() + 1;
        let covered = self.prefix(k - 1) - self.prefix(k - lowbit(k));
        self.tree.push(covered + count);
        self.total += count;
    }

    /// Count `i` (0-based) goes from `old` to `new`.
    pub(super) fn set(&mut self, i: usize, old: usize, new: usize) {
        let mut k = i + 1;
        while k <= self.tree.len() {
            self.tree[k - 1] = self.tree[k - 1] - old + new;
            k += lowbit(k);
        }
        self.total = self.total - old + new;
    }

    /// The count holding unit `at` (0-based, below the total), and `at`'s offset in it.
    pub(super) fn find(&self, at: usize) -> (usize, usize) {
        let mut k = 0;
        let mut rest = at;
        let mut step = self.tree.len().checked_next_power_of_two().unwrap_or(0);
        while step > 0 {
            if k + step <= self.tree.len() && self.tree[k + step - 1] <= rest {
                k += step;
                rest -= self.tree[k - 1];
            }
            step /= 2;
        }
        (k, rest)
    }
}
