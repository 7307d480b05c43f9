//! An interval tree: which address spaces map which page ranges of a file.
//!
//! Intervals `[start, end)` of page indexes, each with an owner (an mm).
//! Stored sorted by start in a vector with an implicit balanced binary tree
//! over it whose every node carries the largest `end` of its subtree (the
//! classic augmented interval tree, laid out like a segment tree), so a
//! stabbing query ("who maps index i?") visits only subtrees that can hold
//! a hit: O(log n + k). Inserts and removals rebuild the augmentation in
//! O(n) — they happen at mmap, fork and exit, while queries happen on every
//! reverse-map walk of a file page.

use alloc::vec;
use alloc::vec::Vec;

/// One interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    /// First page index.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// The owner (an mm id).
    pub owner: u64,
}

/// The tree.
#[derive(Default, Clone, Debug)]
pub struct IntervalTree {
    items: Vec<Interval>,
    /// `max_end[node]` for the implicit tree over `items` (node 1 = root,
    /// covering all items; children 2n, 2n+1 halve the range).
    max_end: Vec<u64>,
}

impl IntervalTree {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of intervals.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// No intervals.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn rebuild(&mut self) {
        let n = self.items.len();
        self.max_end = vec![0; 4 * n.max(1)];
        if n > 0 {
            self.build(1, 0, n);
        }
    }

    fn build(&mut self, node: usize, lo: usize, hi: usize) -> u64 {
        let m = if hi - lo == 1 {
            self.items[lo].end
        } else {
            let mid = (lo + hi) / 2;
            self.build(2 * node, lo, mid).max(self.build(2 * node + 1, mid, hi))
        };
        self.max_end[node] = m;
        m
    }

    /// Add an interval (an exact duplicate is kept once).
    pub fn insert(&mut self, iv: Interval) {
        if iv.start >= iv.end {
            return;
        }
        match self.items.binary_search(&iv) {
            Ok(_) => return,
            Err(i) => self.items.insert(i, iv),
        }
        self.rebuild();
    }

    /// Remove every interval of `owner`.
    pub fn remove_owner(&mut self, owner: u64) {
        let before = self.items.len();
        self.items.retain(|iv| iv.owner != owner);
        if self.items.len() != before {
            self.rebuild();
        }
    }

    /// Every interval containing `index`.
    pub fn stab(&self, index: u64, out: &mut Vec<Interval>) {
        if !self.items.is_empty() {
            self.stab_node(1, 0, self.items.len(), index, out);
        }
    }

    fn stab_node(&self, node: usize, lo: usize, hi: usize, index: u64, out: &mut Vec<Interval>) {
        // Nothing here ends after `index`, or everything starts after it.
        if self.max_end[node] <= index || self.items[lo].start > index {
            return;
        }
        if hi - lo == 1 {
            let iv = self.items[lo];
            if iv.start <= index && index < iv.end {
                out.push(iv);
            }
            return;
        }
        let mid = (lo + hi) / 2;
        self.stab_node(2 * node, lo, mid, index, out);
        self.stab_node(2 * node + 1, mid, hi, index, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn iv(start: u64, end: u64, owner: u64) -> Interval {
        Interval { start, end, owner }
    }

    #[test]
    fn stabbing() {
        let mut t = IntervalTree::new();
        t.insert(iv(0, 10, 1));
        t.insert(iv(5, 6, 2));
        t.insert(iv(8, 20, 3));
        let mut out = Vec::new();
        t.stab(5, &mut out);
        assert_eq!(out, vec![iv(0, 10, 1), iv(5, 6, 2)]);
        out.clear();
        t.stab(9, &mut out);
        assert_eq!(out, vec![iv(0, 10, 1), iv(8, 20, 3)]);
        t.remove_owner(1);
        out.clear();
        t.stab(5, &mut out);
        assert_eq!(out, vec![iv(5, 6, 2)]);
    }

    proptest! {
        #[test]
        fn stab_equals_linear_scan(ivs in proptest::collection::vec((0u64..100, 1u64..30, 0u64..5), 0..40), q in 0u64..130) {
            let mut t = IntervalTree::new();
            let mut all = Vec::new();
            for (s, l, o) in ivs {
                t.insert(iv(s, s + l, o));
                all.push(iv(s, s + l, o));
            }
            all.sort();
            all.dedup();
            let want: Vec<Interval> = all.into_iter().filter(|i| i.start <= q && q < i.end).collect();
            let mut got = Vec::new();
            t.stab(q, &mut got);
            prop_assert_eq!(got, want);
        }
    }
}
