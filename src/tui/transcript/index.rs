//! The index that makes a long transcript cheap: line counts per message in a Fenwick tree
//! (the message holding line N in O(log n)), and the drawn lines kept from a frame to the next.

use super::*;

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

    /// Brings the counts up to date for `fit`.
    pub(super) fn count(&mut self, fit: Fit, shapes: &[Shape]) {
        if self.fit == Some(fit) && self.counts.len() == shapes.len() {
            for i in std::mem::take(&mut self.dirty) {
                if let Some(shape) = shapes.get(i) {
                    let new = shape.count(fit);
                    self.tree.set(i, self.counts[i], new);
                    self.counts[i] = new;
                }
            }
            return;
        }
        self.counts = shapes.iter().map(|s| s.count(fit)).collect();
        self.tree = Fenwick::new(&self.counts);
        self.dirty.clear();
        self.fit = Some(fit);
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
