//! The buddy allocator of one zone.
//!
//! Free memory is kept as blocks of 2^order frames (order 0–10), each block
//! aligned to its size in frame numbers. A block's buddy is the block whose
//! frame number differs in bit `order`; freeing merges a block with its buddy
//! while the buddy is free and of the same order, so fragmentation is undone
//! as soon as it can be. The free lists are doubly linked through the
//! frames' own `next`/`prev` fields (no memory beyond the frame table), and
//! a free block's head carries [`flags::BUDDY`] and its order, which is what
//! lets a merge recognise a free buddy in O(1).
//!
//! Everything here runs under the zone lock; the atomics of [`Frame`] are
//! used Relaxed because the lock orders them.

use super::frame::{flags, link_pfn, Frame, NIL};
use crate::addr::Pfn;
use crate::sync::Ordering::Relaxed;

/// The largest order: blocks of 1024 frames (4 MiB).
pub const MAX_ORDER: usize = 10;

/// The free lists of one zone. Lives inside the zone lock.
pub struct FreeArea {
    heads: [u32; MAX_ORDER + 1],
    counts: [u64; MAX_ORDER + 1],
    /// Free frames in the lists.
    pub free: u64,
    start: u64,
    end: u64,
}

impl FreeArea {
    /// Empty lists for the zone `[start, end)`.
    pub fn new(start: Pfn, end: Pfn) -> FreeArea {
        FreeArea {
            heads: [NIL; MAX_ORDER + 1],
            counts: [0; MAX_ORDER + 1],
            free: 0,
            start: start.as_u64(),
            end: end.as_u64(),
        }
    }

    /// Free blocks per order (`/proc/buddyinfo`).
    pub fn counts(&self) -> [u64; MAX_ORDER + 1] {
        self.counts
    }

    fn push(&mut self, frames: &[Frame], pfn: u64, order: usize) {
        let f = &frames[pfn as usize];
        let head = self.heads[order];
        f.next.store(head, Relaxed);
        f.prev.store(NIL, Relaxed);
        if head != NIL {
            frames[head as usize].prev.store(pfn as u32, Relaxed);
        }
        self.heads[order] = pfn as u32;
        f.order.store(order as u32, Relaxed);
        f.flags.store(flags::BUDDY, Relaxed);
        self.counts[order] += 1;
        self.free += 1 << order;
    }

    fn unlink(&mut self, frames: &[Frame], pfn: u64, order: usize) {
        let f = &frames[pfn as usize];
        let (next, prev) = (f.next.load(Relaxed), f.prev.load(Relaxed));
        if prev == NIL {
            self.heads[order] = next;
        } else {
            frames[prev as usize].next.store(next, Relaxed);
        }
        if next != NIL {
            frames[next as usize].prev.store(prev, Relaxed);
        }
        f.flags.store(0, Relaxed);
        self.counts[order] -= 1;
        self.free -= 1 << order;
    }

    /// Take a block of 2^order frames, splitting a larger one if needed.
    pub fn alloc(&mut self, frames: &[Frame], order: usize) -> Option<Pfn> {
        let mut o = order;
        while o <= MAX_ORDER && self.heads[o] == NIL {
            o += 1;
        }
        if o > MAX_ORDER {
            return None;
        }
        let pfn = self.heads[o] as u64;
        self.unlink(frames, pfn, o);
        // Split: give back the upper halves.
        while o > order {
            o -= 1;
            self.push(frames, pfn + (1 << o), o);
        }
        link_pfn(pfn as u32)
    }

    /// Return a block of 2^order frames, merging with free buddies.
    pub fn free(&mut self, frames: &[Frame], pfn: Pfn, order: usize) {
        let mut pfn = pfn.as_u64();
        let mut o = order;
        while o < MAX_ORDER {
            let buddy = pfn ^ (1 << o);
            if buddy < self.start || buddy + (1 << o) > self.end {
                break;
            }
            let b = &frames[buddy as usize];
            if b.flags.load(Relaxed) != flags::BUDDY || b.order.load(Relaxed) as usize != o {
                break;
            }
            self.unlink(frames, buddy, o);
            pfn &= !(1 << o);
            o += 1;
        }
        self.push(frames, pfn, o);
    }

    /// Hand the whole zone range to the lists as maximal aligned blocks,
    /// skipping reserved frames (`skip` says which).
    pub fn populate(&mut self, frames: &[Frame], skip: impl Fn(u64) -> bool) {
        let mut pfn = self.start;
        while pfn < self.end {
            if skip(pfn) {
                pfn += 1;
                continue;
            }
            let mut o = MAX_ORDER;
            while o > 0 && (pfn & ((1 << o) - 1) != 0 || pfn + (1 << o) > self.end || (pfn..pfn + (1 << o)).any(&skip))
            {
                o -= 1;
            }
            self.push(frames, pfn, o);
            pfn += 1 << o;
        }
    }

    /// Every free block, for the checker: (pfn, order).
    pub fn for_each_block(&self, frames: &[Frame], mut f: impl FnMut(Pfn, usize)) {
        for (o, &head) in self.heads.iter().enumerate() {
            let mut cur = head;
            while cur != NIL {
                f(Pfn::new_unchecked(cur as u64), o);
                cur = frames[cur as usize].next.load(Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn table(n: usize) -> Vec<Frame> {
        (0..n).map(|_| Frame::new(0)).collect()
    }

    #[test]
    fn split_and_merge_restore_one_block() {
        let frames = table(1024);
        let mut fa = FreeArea::new(Pfn::new_unchecked(0), Pfn::new_unchecked(1024));
        fa.populate(&frames, |_| false);
        assert_eq!(fa.counts()[MAX_ORDER], 1);
        let a = fa.alloc(&frames, 0).unwrap();
        let b = fa.alloc(&frames, 3).unwrap();
        assert_eq!(fa.free, 1024 - 1 - 8);
        assert_ne!(a, b);
        fa.free(&frames, a, 0);
        fa.free(&frames, b, 3);
        assert_eq!(fa.free, 1024);
        assert_eq!(fa.counts()[MAX_ORDER], 1, "blocks must merge back");
    }

    #[test]
    fn unaligned_zone_and_reserved_frames() {
        let frames = table(2000);
        let mut fa = FreeArea::new(Pfn::new_unchecked(3), Pfn::new_unchecked(2000));
        fa.populate(&frames, |p| p == 700);
        assert_eq!(fa.free, 2000 - 3 - 1);
        let mut got = Vec::new();
        while let Some(p) = fa.alloc(&frames, 0) {
            assert!(p.as_u64() >= 3 && p.as_u64() < 2000 && p.as_u64() != 700);
            got.push(p);
        }
        assert_eq!(got.len(), 1996);
        for p in got {
            fa.free(&frames, p, 0);
        }
        assert_eq!(fa.free, 1996);
    }
}
