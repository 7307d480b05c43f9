//! Per-CPU page caches (Linux's `per_cpu_pages`).
//!
//! Each CPU keeps a short stack of free order-0 frames per zone kind of its
//! home node. Allocation pops, freeing pushes; only when the stack is empty
//! (refill) or above [`HIGH`] (drain) is the zone lock taken, for a batch of
//! [`BATCH`] frames. The lock here is the CPU's own and is uncontended except
//! when another CPU steals from the cache as a last resort before OOM.

use alloc::vec::Vec;

use super::ZoneKind;
use crate::addr::Pfn;
use crate::sync::{new_mutex, AtomicU64, Mutex, Ordering};

/// Frames moved per refill or drain.
pub const BATCH: usize = 64;
/// Cache size above which a batch is drained.
pub const HIGH: usize = 8 * BATCH;

/// The caches of one CPU.
pub struct PerCpuPages {
    lists: [Mutex<Vec<u32>>; 2],
    /// Frames in each list, for readers that do not take the lock. Written
    /// only under that list's lock, so a plain load and store update it
    /// (no locked instruction on the allocation path).
    counts: [AtomicU64; 2],
}

impl PerCpuPages {
    /// Empty caches.
    pub fn new() -> Self {
        PerCpuPages {
            lists: [new_mutex(Vec::with_capacity(HIGH + 1)), new_mutex(Vec::with_capacity(HIGH + 1))],
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

    /// Pop a frame of `kind`, refilling with `refill` (which pushes up to
    /// [`BATCH`] frames and returns how many) when empty.
    #[inline]
    pub fn pop(&self, kind: ZoneKind, refill: impl FnOnce(&mut Vec<u32>) -> usize) -> Option<Pfn> {
        let mut l = self.lists[kind as usize].lock();
        if l.is_empty() {
            refill(&mut l);
        }
        let p = l.pop();
        self.set_count(kind, l.len());
        Some(Pfn::new_unchecked(p? as u64))
    }

    /// Pop up to `out.len()` frames of `kind` under one lock, refilling
    /// with `refill` whenever the cache runs dry; returns how many.
    pub fn pop_many(&self, kind: ZoneKind, out: &mut [Pfn], mut refill: impl FnMut(&mut Vec<u32>) -> usize) -> usize {
        let mut l = self.lists[kind as usize].lock();
        let mut n = 0;
        while n < out.len() {
            if l.is_empty() && refill(&mut l) == 0 {
                break;
            }
            let take = (out.len() - n).min(l.len());
            for _ in 0..take {
                let p = l.pop().expect("non-empty");
                out[n] = Pfn::new_unchecked(p as u64);
                n += 1;
            }
        }
        self.set_count(kind, l.len());
        n
    }

    /// Push a frame; above [`HIGH`], hand the oldest [`BATCH`] to `drain`.
    #[inline]
    pub fn push(&self, kind: ZoneKind, pfn: Pfn, drain: impl FnOnce(&[u32])) {
        let mut l = self.lists[kind as usize].lock();
        l.push(pfn.as_u64() as u32);
        if l.len() > HIGH {
            drain(&l[..BATCH]);
            l.drain(..BATCH);
        }
        self.set_count(kind, l.len());
    }

    /// Take one frame (another CPU's last resort, or a drain).
    pub fn steal(&self, kind: ZoneKind) -> Option<Pfn> {
        let mut l = self.lists[kind as usize].lock();
        let p = l.pop();
        self.set_count(kind, l.len());
        Some(Pfn::new_unchecked(p? as u64))
    }
}

impl Default for PerCpuPages {
    fn default() -> Self {
        Self::new()
    }
}
