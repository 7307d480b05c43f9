//! Virtual memory areas and the tree that holds them.
//!
//! A VMA is a page-aligned range `[start, end)` with one protection and one
//! set of flags. The tree is a `BTreeMap` keyed by start address; VMAs never
//! overlap. Neighbouring VMAs with equal attributes are merged after every
//! change (Linux's `vma_merge`), so that mmap/mprotect/munmap sequences
//! produce the same VMA count Linux's `/proc/PID/maps` would show.
//!
//! The tree is protected by the mmap lock: faults read it under the read
//! lock, everything that changes it holds the write lock.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use super::flags::Prot;

/// VMA flag bits.
pub mod vmflags {
    /// Shared mapping.
    pub const SHARED: u32 = 1 << 0;
    /// Anonymous memory.
    pub const ANON: u32 = 1 << 1;
    /// `MADV_RANDOM`: no prefault, no readahead.
    pub const RANDOM: u32 = 1 << 2;
    /// `MADV_SEQUENTIAL`.
    pub const SEQUENTIAL: u32 = 1 << 3;
    /// `MADV_HUGEPAGE`.
    pub const HUGEPAGE: u32 = 1 << 4;
    /// `MADV_NOHUGEPAGE`.
    pub const NOHUGEPAGE: u32 = 1 << 5;
    /// `MAP_LOCKED`.
    pub const LOCKED: u32 = 1 << 6;
    /// The brk heap.
    pub const HEAP: u32 = 1 << 7;
    /// `MAP_GROWSDOWN` / `MAP_STACK`.
    pub const GROWSDOWN: u32 = 1 << 8;
    /// `MADV_DONTFORK`: not inherited by a fork's child.
    pub const DONTFORK: u32 = 1 << 9;
    /// `MADV_WIPEONFORK`: the child sees zeroes.
    pub const WIPEONFORK: u32 = 1 << 10;
    /// `MADV_DONTDUMP`.
    pub const DONTDUMP: u32 = 1 << 11;
    /// `MADV_MERGEABLE`.
    pub const MERGEABLE: u32 = 1 << 12;
    /// Charged to the overcommit account (Linux's `VM_ACCOUNT`): private
    /// writable memory, from when it was mapped or made writable.
    pub const ACCOUNT: u32 = 1 << 13;
    /// `MAP_NORESERVE`: never charged.
    pub const NORESERVE: u32 = 1 << 14;
    /// `MAP_DROPPABLE` (Linux's `VM_DROPPABLE`): wiped on fork and never
    /// dumped for good (`MADV_KEEPONFORK` and `MADV_DODUMP` refuse it).
    pub const DROPPABLE: u32 = 1 << 15;
}

/// One virtual memory area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Protection.
    pub prot: Prot,
    /// [`vmflags`] bits.
    pub flags: u32,
    /// The page offset of `start` in the mapped object: for anonymous
    /// memory the virtual page number the VMA was created at (Linux's
    /// `vm_pgoff`), kept when mremap moves the VMA, so that a page's index
    /// still gives its address: `start + (index - pgoff) * 4096`.
    pub pgoff: u64,
    /// The anon_vma of the object-based reverse map (0: none).
    pub anon_vma: u64,
    /// The page cache mapped (a file or shmem object; 0: anonymous).
    pub file: u64,
    /// A private file mapping's "has had private pages" mark in its tree
    /// ([`VmaTree::mark_private_pages`]; 0: not a private file mapping).
    pub cow_mark: u64,
}

impl Vma {
    /// A VMA of `[start, end)` whose object offset is its own page number
    /// (new anonymous memory).
    pub fn new_anon(start: u64, end: u64, prot: Prot, flags: u32) -> Vma {
        Vma { start, end, prot, flags, pgoff: start >> 12, anon_vma: 0, file: 0, cow_mark: 0 }
    }

    /// The address of object page `index` in this VMA, if it falls inside.
    pub fn address_of(&self, index: u64) -> Option<u64> {
        let off = index.checked_sub(self.pgoff)?;
        let a = self.start.checked_add(off.checked_mul(4096)?)?;
        (a < self.end).then_some(a)
    }

    /// The object page index of `addr` (inside the VMA).
    pub fn index_of(&self, addr: u64) -> u64 {
        self.pgoff + ((addr - self.start) >> 12)
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    /// Never true for a VMA in a tree.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
    /// Anonymous.
    pub fn is_anon(&self) -> bool {
        self.flags & vmflags::ANON != 0
    }
    /// `MAP_SHARED`.
    pub fn is_shared(&self) -> bool {
        self.flags & vmflags::SHARED != 0
    }
    /// Mergeable with `next`, apart from the private-pages marks (see
    /// [`VmaTree::merged_mark`]).
    fn mergeable(&self, next: &Vma) -> bool {
        self.end == next.start
            && self.prot == next.prot
            && self.flags == next.flags
            && self.anon_vma == next.anon_vma
            && self.file == next.file
            && next.pgoff == self.pgoff + ((self.end - self.start) >> 12)
    }
}

/// The VMAs of an address space.
///
/// Besides the VMAs, the tree keeps the "has had private pages" marks of
/// its private file mappings: Linux's `vma->anon_vma != NULL`, which the
/// first copy-on-write fault in such a mapping sets, under the mmap read
/// lock, and which stays set when the private pages are gone (fork copies
/// the PTEs of exactly the private file mappings that have it:
/// `vma_needs_copy`). A mark is an atomic flag here so that a fault can set
/// it through the shared tree. A split gives both halves a set mark (Linux's
/// split gives both the anon_vma), and each half its own unset one; two VMAs
/// with different set marks do not merge (two anon_vmas).
#[derive(Default, Debug)]
pub struct VmaTree {
    map: BTreeMap<u64, Vma>,
    marks: BTreeMap<u64, AtomicBool>,
    next_mark: u64,
}

impl Clone for VmaTree {
    fn clone(&self) -> Self {
        VmaTree {
            map: self.map.clone(),
            marks: self.marks.iter().map(|(k, m)| (*k, AtomicBool::new(m.load(Ordering::Relaxed)))).collect(),
            next_mark: self.next_mark,
        }
    }
}

impl VmaTree {
    /// No VMAs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of VMAs.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No VMAs.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The VMA containing `addr`.
    #[inline]
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.map.range(..=addr).next_back().map(|(_, v)| v).filter(|v| addr < v.end)
    }

    /// The first VMA ending above `addr` (Linux's `find_vma`).
    pub fn find_from(&self, addr: u64) -> Option<&Vma> {
        if let Some(v) = self.find(addr) {
            return Some(v);
        }
        self.map.range(addr..).next().map(|(_, v)| v)
    }

    /// The VMA ending at or below `addr` with the highest end.
    pub fn prev(&self, addr: u64) -> Option<&Vma> {
        self.map.range(..addr).next_back().map(|(_, v)| v).filter(|v| v.end <= addr)
    }

    /// Every VMA in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.map.values()
    }

    /// The VMAs overlapping `[start, end)`, in order (copies).
    pub fn overlapping(&self, start: u64, end: u64) -> Vec<Vma> {
        let first = self.find(start).map(|v| v.start).unwrap_or(start);
        self.map.range(first..end).map(|(_, v)| *v).filter(|v| v.end > start).collect()
    }

    /// True if `[start, end)` is entirely covered by VMAs.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        for v in self.overlapping(start, end) {
            if v.start > at {
                return false;
            }
            at = v.end;
        }
        at >= end
    }

    /// Split the VMA containing `addr` so that a VMA starts at `addr`.
    pub fn split_at(&mut self, addr: u64) {
        if let Some(v) = self.find(addr).copied() {
            if v.start < addr {
                // Linux's split gives both halves the anon_vma: a set mark
                // is shared (so the halves may merge back), an unset one is
                // not (a later write in one half must not mark the other).
                let cow_mark =
                    if v.cow_mark == 0 || self.marked(v.cow_mark) { v.cow_mark } else { self.new_mark(false) };
                self.map.insert(v.start, Vma { end: addr, ..v });
                self.map.insert(addr, Vma { start: addr, pgoff: v.index_of(addr), cow_mark, ..v });
            }
        }
    }

    /// A new private-pages mark, set or not, for a private file mapping
    /// about to be inserted ([`Vma::cow_mark`]).
    pub fn new_mark(&mut self, set: bool) -> u64 {
        if self.marks.len() > 2 * self.map.len() + 16 {
            // Drop the marks of VMAs that are gone (unmapped, or merged
            // away). Not on removal itself: mremap removes a VMA and then
            // inserts it, mark and all, elsewhere.
            let live: alloc::collections::BTreeSet<u64> = self.map.values().map(|v| v.cow_mark).collect();
            self.marks.retain(|k, _| live.contains(k));
        }
        self.next_mark += 1;
        self.marks.insert(self.next_mark, AtomicBool::new(set));
        self.next_mark
    }

    /// Whether mark `id` is set.
    fn marked(&self, id: u64) -> bool {
        self.marks.get(&id).is_some_and(|m| m.load(Ordering::Relaxed))
    }

    /// Record that private file mapping `vma` of this tree gets (or may
    /// get) a private page: the first copy-on-write fault in it calls this,
    /// under the mmap read lock (Linux's `anon_vma_prepare`). Nothing for
    /// other VMAs.
    pub fn mark_private_pages(&self, vma: &Vma) {
        if let Some(m) = self.marks.get(&vma.cow_mark) {
            if !m.load(Ordering::Relaxed) {
                m.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Whether private file mapping `vma` has ever had a private page
    /// ([`VmaTree::mark_private_pages`]).
    pub fn has_had_private_pages(&self, vma: &Vma) -> bool {
        self.marked(vma.cow_mark)
    }

    /// Take over `parent`'s marks (fork: the child's VMAs are copies, their
    /// marks included). Enters with: both trees' mms locked for writing.
    pub fn inherit_marks(&mut self, parent: &VmaTree) {
        self.marks = parent.marks.iter().map(|(k, m)| (*k, AtomicBool::new(m.load(Ordering::Relaxed)))).collect();
        self.next_mark = self.next_mark.max(parent.next_mark);
    }

    /// The mark a merge of `a` and its successor `b` keeps, if the two may
    /// merge: Linux merges two VMAs unless both have an anon_vma (and they
    /// differ).
    fn merged_mark(&self, a: &Vma, b: &Vma) -> Option<u64> {
        if a.cow_mark == b.cow_mark || !self.marked(b.cow_mark) {
            Some(a.cow_mark)
        } else if !self.marked(a.cow_mark) {
            Some(b.cow_mark)
        } else {
            None
        }
    }

    /// Remove `[start, end)` from the tree (splitting VMAs at the edges);
    /// returns the removed pieces.
    pub fn remove_range(&mut self, start: u64, end: u64) -> Vec<Vma> {
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self.map.range(start..end).map(|(k, _)| *k).collect();
        keys.into_iter().filter_map(|k| self.map.remove(&k)).collect()
    }

    /// Insert a VMA over a free range and merge it with its neighbours.
    pub fn insert(&mut self, vma: Vma) {
        debug_assert!(self.overlapping(vma.start, vma.end).is_empty());
        self.map.insert(vma.start, vma);
        self.merge_around(vma.start, vma.end);
    }

    /// The anon_vma of a neighbour that a new VMA `[start, end)` with
    /// `prot`/`flags` would merge with (Linux's `find_mergeable_anon_vma`).
    pub fn mergeable_anon_vma(&self, start: u64, end: u64, prot: Prot, flags: u32) -> Option<u64> {
        let fits = |v: &Vma| v.prot == prot && v.flags == flags && v.anon_vma != 0;
        if let Some(p) =
            self.prev(start).filter(|p| p.end == start && fits(p) && p.pgoff + ((p.end - p.start) >> 12) == start >> 12)
        {
            return Some(p.anon_vma);
        }
        self.find_from(end).filter(|n| n.start == end && fits(n) && n.pgoff == end >> 12).map(|n| n.anon_vma)
    }

    /// Change every VMA in `[start, end)` (splitting at the edges) with `f`,
    /// then merge what became equal.
    pub fn modify_range(&mut self, start: u64, end: u64, mut f: impl FnMut(&mut Vma)) {
        self.split_at(start);
        self.split_at(end);
        for (_, v) in self.map.range_mut(start..end) {
            f(v);
        }
        self.merge_around(start, end);
    }

    /// Merge mergeable neighbours among the VMAs touching `[start, end]`.
    pub fn merge_around(&mut self, start: u64, end: u64) {
        let lo = self.prev(start).map(|v| v.start).or_else(|| self.find(start).map(|v| v.start)).unwrap_or(start);
        let keys: Vec<u64> = self.map.range(lo..=end).map(|(k, _)| *k).collect();
        let mut cur: Option<u64> = None;
        for k in keys {
            let Some(v) = self.map.get(&k).copied() else { continue };
            if let Some(c) = cur {
                let prev = self.map[&c];
                if let Some(mark) = prev.mergeable(&v).then(|| self.merged_mark(&prev, &v)).flatten() {
                    self.map.remove(&k);
                    let merged = self.map.get_mut(&c).expect("merge target present");
                    merged.end = v.end;
                    merged.cow_mark = mark;
                    continue;
                }
            }
            cur = Some(k);
        }
    }

    /// The highest address `a` with `[a, a+len)` free, `a >= low` and
    /// `a + len <= high` (top-down search, as Linux's default mmap layout).
    pub fn find_gap_topdown(&self, len: u64, low: u64, high: u64) -> Option<u64> {
        let mut top = high;
        for v in self.map.range(..high).rev().map(|(_, v)| v) {
            if v.end <= top && top - v.end >= len {
                return Some(top - len).filter(|a| *a >= low);
            }
            top = top.min(v.start);
            if top < low + len {
                return None;
            }
        }
        if top >= low + len {
            Some(top - len)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(start: u64, end: u64, prot: Prot) -> Vma {
        Vma::new_anon(start, end, prot, vmflags::ANON)
    }

    #[test]
    fn insert_merges_neighbours() {
        let mut t = VmaTree::new();
        t.insert(anon(0x1000, 0x3000, Prot::RW));
        t.insert(anon(0x3000, 0x5000, Prot::RW));
        assert_eq!(t.len(), 1);
        assert_eq!(t.find(0x4fff).unwrap().start, 0x1000);
        t.insert(anon(0x6000, 0x7000, Prot::RW));
        assert_eq!(t.len(), 2, "a hole keeps VMAs apart");
    }

    #[test]
    fn protect_middle_splits_in_three_and_back_merges() {
        let mut t = VmaTree::new();
        t.insert(anon(0x10000, 0x20000, Prot::RW));
        t.modify_range(0x14000, 0x18000, |v| v.prot = Prot::READ);
        assert_eq!(t.len(), 3);
        t.modify_range(0x14000, 0x18000, |v| v.prot = Prot::RW);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn remove_range_splits() {
        let mut t = VmaTree::new();
        t.insert(anon(0x10000, 0x20000, Prot::RW));
        let gone = t.remove_range(0x12000, 0x13000);
        assert_eq!(gone, alloc::vec![anon(0x12000, 0x13000, Prot::RW)]);
        assert_eq!(t.len(), 2);
        assert!(!t.covers(0x11000, 0x14000));
        assert!(t.covers(0x10000, 0x12000));
    }

    /// A private file mapping of file 7 at page offset 0.
    fn private_file(t: &mut VmaTree, start: u64, end: u64) -> Vma {
        let mut v = Vma::new_anon(start, end, Prot::RW, 0);
        v.file = 7;
        v.pgoff = 0;
        v.cow_mark = t.new_mark(false);
        v
    }

    #[test]
    fn private_page_marks_follow_splits_and_merges() {
        let mut t = VmaTree::new();
        let v = private_file(&mut t, 0x10000, 0x20000);
        t.insert(v);
        // Split before any mark: the halves are marked apart.
        t.modify_range(0x18000, 0x20000, |v| v.prot = Prot::READ);
        let (lo, hi) = (*t.find(0x10000).unwrap(), *t.find(0x18000).unwrap());
        assert_ne!(lo.cow_mark, hi.cow_mark);
        t.mark_private_pages(&lo);
        assert!(t.has_had_private_pages(&lo) && !t.has_had_private_pages(&hi));
        // A merge with an unmarked neighbour keeps the mark.
        t.modify_range(0x18000, 0x20000, |v| v.prot = Prot::RW);
        assert_eq!(t.len(), 1);
        let whole = *t.find(0x1f000).unwrap();
        assert!(t.has_had_private_pages(&whole));
        // A split after the mark shares it (one anon_vma), so the halves
        // merge back.
        t.modify_range(0x14000, 0x20000, |v| v.prot = Prot::READ);
        let (lo, hi) = (*t.find(0x10000).unwrap(), *t.find(0x14000).unwrap());
        assert_eq!(lo.cow_mark, hi.cow_mark);
        assert!(t.has_had_private_pages(&lo) && t.has_had_private_pages(&hi));
        t.modify_range(0x14000, 0x20000, |v| v.prot = Prot::RW);
        assert_eq!(t.len(), 1);
        // Two VMAs with different set marks do not merge (two anon_vmas).
        let other = private_file(&mut t, 0x20000, 0x30000);
        let other = Vma { pgoff: 0x10, ..other };
        t.mark_private_pages(&other);
        t.insert(other);
        assert_eq!(t.len(), 2, "{:?}", t.iter().collect::<Vec<_>>());
        // Anonymous and shared VMAs have no mark.
        assert!(!t.has_had_private_pages(&anon(0, 0x1000, Prot::RW)));
    }

    #[test]
    fn marks_of_gone_vmas_are_dropped() {
        let mut t = VmaTree::new();
        for i in 0..1000u64 {
            let v = private_file(&mut t, 0x10000, 0x20000);
            t.insert(v);
            assert_eq!(t.remove_range(0x10000, 0x20000).len(), 1, "round {i}");
        }
        assert!(t.marks.len() <= 2 * t.len() + 17, "{} marks for {} VMAs", t.marks.len(), t.len());
        // A removed VMA inserted again (mremap) keeps its mark until then.
        let v = private_file(&mut t, 0x10000, 0x20000);
        t.insert(v);
        t.mark_private_pages(&v);
        let gone = t.remove_range(0x10000, 0x20000)[0];
        t.insert(Vma { start: 0x40000, end: 0x50000, ..gone });
        assert!(t.has_had_private_pages(t.find(0x40000).unwrap()));
    }

    #[test]
    fn gap_search_topdown() {
        let mut t = VmaTree::new();
        t.insert(anon(0x9000, 0xa000, Prot::RW));
        assert_eq!(t.find_gap_topdown(0x1000, 0x1000, 0xa000), Some(0x8000));
        assert_eq!(t.find_gap_topdown(0x1000, 0x1000, 0xb000), Some(0xa000));
        assert_eq!(t.find_gap_topdown(0x9000, 0x1000, 0xa000), None);
    }
}
