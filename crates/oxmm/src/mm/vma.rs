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
}

impl Vma {
    /// A VMA of `[start, end)` whose object offset is its own page number
    /// (new anonymous memory).
    pub fn new_anon(start: u64, end: u64, prot: Prot, flags: u32) -> Vma {
        Vma { start, end, prot, flags, pgoff: start >> 12, anon_vma: 0, file: 0 }
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
#[derive(Default, Clone, Debug)]
pub struct VmaTree {
    map: BTreeMap<u64, Vma>,
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
                self.map.insert(v.start, Vma { end: addr, ..v });
                self.map.insert(addr, Vma { start: addr, pgoff: v.index_of(addr), ..v });
            }
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
                if prev.mergeable(&v) {
                    self.map.remove(&k);
                    self.map.get_mut(&c).expect("merge target present").end = v.end;
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

    #[test]
    fn gap_search_topdown() {
        let mut t = VmaTree::new();
        t.insert(anon(0x9000, 0xa000, Prot::RW));
        assert_eq!(t.find_gap_topdown(0x1000, 0x1000, 0xa000), Some(0x8000));
        assert_eq!(t.find_gap_topdown(0x1000, 0x1000, 0xb000), Some(0xa000));
        assert_eq!(t.find_gap_topdown(0x9000, 0x1000, 0xa000), None);
    }
}
