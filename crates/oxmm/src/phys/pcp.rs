//! Per-CPU page caches (Linux's `per_cpu_pages`).
//!
//! Each CPU keeps a short stack of free order-0 frames per zone kind of its
//! home node. Allocation pops, freeing pushes; only when the stack is empty
//! (refill) or above [`HIGH`] (drain) is the zone lock taken. Both batches
//! scale with a one-sided stream, as Linux's do since 6.7:
//! - a refill moves [`BATCH`] frames doubled once for every earlier refill
//!   (the count of doublings halved by every free), up to [`REFILL_MAX`],
//!   the largest power of two that keeps the cache within [`HIGH`]
//!   (`nr_pcp_alloc` and `alloc_factor`): a CPU that only allocates — a
//!   sequential first touch — takes the zone lock once per [`REFILL_MAX`]
//!   frames instead of once per [`BATCH`], and parks no more than before;
//! - a drain moves as many frames as were freed in a row (a count halved
//!   by every allocation call), at least [`BATCH`] and at most
//!   [`DRAIN_MAX`], so that at least [`BATCH`] stay cached (`nr_pcp_free`
//!   and `free_count`): an unmap of a large region takes the zone lock once
//!   per [`DRAIN_MAX`] frames.
//!
//! The lock here is the CPU's own and is uncontended except when
//! another CPU steals from the cache as a last resort before OOM.

use alloc::vec::Vec;

use super::ZoneKind;
use crate::addr::Pfn;
use crate::sync::{new_mutex, AtomicU64, Mutex, Ordering};

/// The fewest frames a drain moves, and the first refill of a fresh cache.
pub const BATCH: usize = 64;
/// Cache size above which a batch is drained.
pub const HIGH: usize = 8 * BATCH;
/// Most frames a refill brings: the largest power of two that leaves
/// room for a batch of frees below [`HIGH`] in an empty cache.
pub const REFILL_MAX: usize = 1 << (HIGH - BATCH).ilog2();
/// Most frames a drain moves: what leaves [`BATCH`] in the cache.
pub const DRAIN_MAX: usize = HIGH - BATCH;
/// Where the count of frames freed in a row stops (Linux's `batch <<
/// CONFIG_PCP_BATCH_SCALE_MAX`, the default 5): past [`DRAIN_MAX`] it only
/// takes more allocations to bring the drains back down to [`BATCH`].
const FREE_COUNT_MAX: usize = BATCH << 5;
/// One list: the frames (a stack), how many times the next refill
/// doubles [`BATCH`], and the frames freed since the last allocations
/// (halved by each).
struct List {
    frames: Vec<u32>,
    alloc_factor: u32,
    free_count: usize,
}

impl List {
    fn new() -> List {
        List { frames: Vec::with_capacity(HIGH + 1), alloc_factor: 0, free_count: 0 }
    }

    /// How many frames the drain of a cache above [`HIGH`] should move:
    /// the frames freed in a row, at least [`BATCH`], at most
    /// [`DRAIN_MAX`] (Linux's `nr_pcp_free`).
    fn drain_size(&self) -> usize {
        self.free_count.clamp(BATCH, DRAIN_MAX)
    }

    /// How many frames the next refill should bring: [`BATCH`] doubled
    /// `alloc_factor` times, but no more than the largest power of two
    /// that leaves room for a batch of frees below [`HIGH`] ([`REFILL_MAX`]
    /// for an empty cache); one more doubling for the refill after, unless
    /// this one was already capped. The cap also bounds the factor, so no
    /// separate limit on doublings is needed (Linux's
    /// `PCP_BATCH_SCALE_MAX` of 5 is never reached at this `HIGH`).
    ///
    /// Powers of two, so that a refill is one buddy block where the zone
    /// has one, and successive refills take the successive halves of one
    /// larger block: a sequential first touch then zeroes frames in
    /// ascending order across refills. Refills of `HIGH - BATCH` (448) are
    /// three blocks, each refill leaving a hole that a later one fills;
    /// their frames jumped back every ~190 frames.
    fn refill_size(&mut self) -> usize {
        let room = HIGH.saturating_sub(self.frames.len() + BATCH).max(BATCH);
        let cap = 1 << room.ilog2();
        let want = BATCH << self.alloc_factor;
        if want <= cap {
            self.alloc_factor += 1;
        }
        want.min(cap)
    }
}

/// The caches of one CPU.
pub struct PerCpuPages {
    lists: [Mutex<List>; 2],
    /// Frames in each list, for readers that do not take the lock. Written
    /// only under that list's lock, so a plain load and store update it
    /// (no locked instruction on the allocation path).
    counts: [AtomicU64; 2],
}

impl PerCpuPages {
    /// Empty caches.
    pub fn new() -> Self {
        PerCpuPages {
            lists: [new_mutex(List::new()), new_mutex(List::new())],
            counts: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Frames held.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Record the length of list `kind` (the caller holds its lock).
    #[inline(always)]
    fn set_count(&self, kind: ZoneKind, len: usize) {
        self.counts[kind as usize].store(len as u64, Ordering::Relaxed);
    }

    /// Pop a frame of `kind`, refilling with `refill(buf, n)` (which
    /// pushes up to `n` frames onto the empty `buf` and returns how many)
    /// when empty.
    #[inline]
    pub fn pop(&self, kind: ZoneKind, refill: impl FnOnce(&mut Vec<u32>, usize) -> usize) -> Option<Pfn> {
        let mut l = self.lists[kind as usize].lock();
        l.free_count >>= 1;
        if l.frames.is_empty() {
            let n = l.refill_size();
            refill(&mut l.frames, n);
        }
        let p = l.frames.pop();
        self.set_count(kind, l.frames.len());
        Some(Pfn::new_unchecked(p? as u64))
    }

    /// Pop up to `out.len()` frames of `kind` under one lock, refilling
    /// with `refill` (as for [`pop`](Self::pop)) whenever the cache runs
    /// dry; returns how many.
    pub fn pop_many(
        &self,
        kind: ZoneKind,
        out: &mut [Pfn],
        mut refill: impl FnMut(&mut Vec<u32>, usize) -> usize,
    ) -> usize {
        let mut guard = self.lists[kind as usize].lock();
        let l = &mut *guard;
        // One halving per call, however many frames it takes: this
        // crate's choice (Linux's bulk allocator leaves the count alone;
        // its single-page allocations halve it once each).
        l.free_count >>= 1;
        let mut n = 0;
        while n < out.len() {
            if l.frames.is_empty() {
                let want = l.refill_size();
                if refill(&mut l.frames, want) == 0 {
                    break;
                }
            }
            let take = (out.len() - n).min(l.frames.len());
            for _ in 0..take {
                let p = l.frames.pop().expect("non-empty");
                out[n] = Pfn::new_unchecked(p as u64);
                n += 1;
            }
        }
        self.set_count(kind, l.frames.len());
        n
    }

    /// Push a frame; above [`HIGH`], hand the oldest frames to `drain`:
    /// as many as were freed in a row, from [`BATCH`] to [`DRAIN_MAX`].
    /// A free halves the growth of the next refills (Linux halves
    /// `alloc_factor` on every free).
    #[inline]
    pub fn push(&self, kind: ZoneKind, pfn: Pfn, drain: impl FnOnce(&[u32])) {
        let mut guard = self.lists[kind as usize].lock();
        let l = &mut *guard;
        l.alloc_factor >>= 1;
        l.free_count = (l.free_count + 1).min(FREE_COUNT_MAX);
        l.frames.push(pfn.as_u64() as u32);
        if l.frames.len() > HIGH {
            let n = l.drain_size();
            drain(&l.frames[..n]);
            l.frames.drain(..n);
        }
        self.set_count(kind, l.frames.len());
    }

    /// Take one frame (another CPU's last resort, or a drain).
    pub fn steal(&self, kind: ZoneKind) -> Option<Pfn> {
        let mut l = self.lists[kind as usize].lock();
        let p = l.frames.pop();
        self.set_count(kind, l.frames.len());
        Some(Pfn::new_unchecked(p? as u64))
    }
}

impl Default for PerCpuPages {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::cell::RefCell;

    /// A refill callback handing out consecutive frame numbers, recording
    /// what it was asked for.
    struct Source {
        asked: RefCell<Vec<usize>>,
        next: RefCell<u32>,
    }

    impl Source {
        fn refill(&self, buf: &mut Vec<u32>, want: usize) -> usize {
            self.asked.borrow_mut().push(want);
            let mut next = self.next.borrow_mut();
            buf.extend(*next..*next + want as u32);
            *next += want as u32;
            want
        }
    }

    #[test]
    fn refills_grow_while_only_allocating_and_shrink_on_free() {
        let pcp = PerCpuPages::new();
        let src = Source { asked: RefCell::new(Vec::new()), next: RefCell::new(0) };
        let mut out = [Pfn::default(); 16];
        let mut got = 0;
        while got < 64 + 128 + 256 + 256 + 256 {
            got += pcp.pop_many(ZoneKind::Movable, &mut out, |b, w| src.refill(b, w));
        }
        assert_eq!(REFILL_MAX, 256);
        assert_eq!(*src.asked.borrow(), [64, 128, 256, 256, 256], "doubling from BATCH, capped at REFILL_MAX");
        assert_eq!(pcp.count(), 0);
        // A stack: the last frame popped is the first the last refill gave.
        assert_eq!(out[15].as_u64(), u64::from(*src.next.borrow()) - 256);
        // One free halves the factor (3 -> 1): once the cache runs dry
        // again, the refill asks for BATCH << 1.
        pcp.push(ZoneKind::Movable, Pfn::new_unchecked(7), |_| panic!("no drain below HIGH"));
        src.asked.borrow_mut().clear();
        assert_eq!(pcp.pop(ZoneKind::Movable, |b, w| src.refill(b, w)), Some(Pfn::new_unchecked(7)));
        assert!(pcp.pop(ZoneKind::Movable, |b, w| src.refill(b, w)).is_some());
        assert_eq!(*src.asked.borrow(), [128]);
    }

    /// Free `frames` into `pcp`, recording every drain's frames in `drains`.
    fn push_all(pcp: &PerCpuPages, frames: core::ops::Range<u32>, drains: &mut Vec<Vec<u32>>) {
        for f in frames {
            pcp.push(ZoneKind::Movable, Pfn::new_unchecked(u64::from(f)), |d| drains.push(d.to_vec()));
        }
    }

    #[test]
    fn drains_grow_with_frees_in_a_row_and_shrink_on_allocation() {
        let pcp = PerCpuPages::new();
        let mut drains = Vec::new();
        // 513 frees in a row: the first drain already moves DRAIN_MAX, the
        // oldest frames, and leaves BATCH + 1.
        push_all(&pcp, 0..513, &mut drains);
        assert_eq!(drains, [(0..448).collect::<Vec<u32>>()]);
        assert_eq!(pcp.count(), 65);
        push_all(&pcp, 513..961, &mut drains);
        assert_eq!(drains.len(), 2);
        assert_eq!(drains[1], (448..896).collect::<Vec<u32>>());
        // Allocations halve the count (1408 here, so 11 halvings clear
        // it); the next drain after 12 frees is BATCH.
        let src = Source { asked: RefCell::new(Vec::new()), next: RefCell::new(10_000) };
        push_all(&pcp, 961..1408, &mut drains);
        assert_eq!((drains.len(), pcp.count()), (2, 512));
        for _ in 0..11 {
            assert!(pcp.pop(ZoneKind::Movable, |b, w| src.refill(b, w)).is_some());
        }
        assert!(src.asked.borrow().is_empty(), "no refill while the cache holds frames");
        push_all(&pcp, 2000..2012, &mut drains);
        assert_eq!(drains.len(), 3);
        assert_eq!(drains[2].len(), BATCH);
        assert_eq!(pcp.count(), (HIGH + 1 - BATCH) as u64);
        // A drain leaves the count (12); one bulk allocation of 4 frames
        // halves it once (6), so 68 more frees drain 74 (one halving per
        // frame would have left 0 and drained 68).
        let mut out = [Pfn::default(); 4];
        assert_eq!(pcp.pop_many(ZoneKind::Movable, &mut out, |b, w| src.refill(b, w)), 4);
        push_all(&pcp, 3000..3068, &mut drains);
        assert_eq!(drains.len(), 4);
        assert_eq!(drains[3].len(), 74);
    }

    /// The count of frees in a row stops at `BATCH << 5`: after 10,000
    /// frees, five allocations bring it down to `BATCH`, and the next drain
    /// is that plus the frees since (an unbounded count would still be
    /// 312 and drain `DRAIN_MAX`).
    #[test]
    fn the_count_of_frees_in_a_row_is_capped() {
        let pcp = PerCpuPages::new();
        let mut drains = Vec::new();
        push_all(&pcp, 0..10_000, &mut drains);
        let src = Source { asked: RefCell::new(Vec::new()), next: RefCell::new(20_000) };
        for _ in 0..5 {
            assert!(pcp.pop(ZoneKind::Movable, |b, w| src.refill(b, w)).is_some());
        }
        let before = drains.len();
        let frees = HIGH + 1 - pcp.count() as usize;
        push_all(&pcp, 30_000..30_000 + frees as u32, &mut drains);
        assert_eq!(drains.len(), before + 1);
        let want = (FREE_COUNT_MAX >> 5) + frees;
        assert!(want < DRAIN_MAX, "the test must tell the cap from no cap");
        assert_eq!(drains[before].len(), want);
    }

    #[test]
    fn a_dry_zone_ends_the_refill() {
        let pcp = PerCpuPages::new();
        let mut out = [Pfn::default(); 4];
        assert_eq!(pcp.pop_many(ZoneKind::Normal, &mut out, |_, _| 0), 0);
        assert!(pcp.pop(ZoneKind::Normal, |_, _| 0).is_none());
    }
}
