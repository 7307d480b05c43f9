//! Hashed rmap locks (seed 001's `lock_rmap`).
//!
//! A page's reverse map is protected by one of [`RMAP_LOCKS`] spin locks,
//! chosen by the page's `index`. Because the index can change
//! ([`RmapLocks::set_index`], under the lock of the old index — e.g. a
//! kernel re-indexing a moved page), `lock_rmap` reads the index, takes
//! that lock, and re-checks the index: if it changed while waiting, the
//! wrong lock is held, so it lets go and tries again. (oxmm's own mremap
//! keeps indexes and names moved PTEs with explicit entries instead.) The normal case
//! costs one lock acquisition and one extra load. `set_index` changes the
//! index under the lock it is leaving.
//!
//! Batches (fork's copy of a page-table page, zap's teardown of one) sort
//! their pages by lock and take each lock once per batch rather than once
//! per PTE (seed 001's batching of setup and teardown).
//!
//! Lock order: inside the mmap lock and the page-table lock, outside the
//! chain allocator's lock and the zone locks. The loom model of the
//! re-check is `tests/loom_lock_rmap.rs`.

use alloc::boxed::Box;

use crate::phys::frame::Frame;
use crate::sync::{spin_hint, AtomicBool, Ordering};

/// The number of rmap locks (a power of two).
pub const RMAP_LOCKS: usize = 256;

/// The lock table.
pub struct RmapLocks {
    /// Packed, not cache-padded: a batch takes 8 neighbouring locks, which
    /// then share one cache line instead of missing on eight (seed 001's
    /// locks were a plain array too).
    locks: Box<[AtomicBool]>,
}

impl Default for RmapLocks {
    fn default() -> Self {
        Self::new()
    }
}

/// A held rmap lock; released on drop.
pub struct RmapGuard<'a> {
    locks: &'a RmapLocks,
    slot: usize,
}

impl RmapGuard<'_> {
    /// Which lock is held.
    pub fn slot(&self) -> usize {
        self.slot
    }
}

impl Drop for RmapGuard<'_> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire in `lock_slot`.
        self.locks.locks[self.slot].store(false, Ordering::Release);
    }
}

impl RmapLocks {
    /// All unlocked.
    pub fn new() -> RmapLocks {
        RmapLocks { locks: (0..RMAP_LOCKS).map(|_| AtomicBool::new(false)).collect() }
    }

    /// The lock slot for a page index: 64 consecutive indexes share a
    /// lock, so a batch over one page table (512 pages) takes 8 locks,
    /// while page tables still spread over the whole table of locks.
    #[inline]
    pub fn slot_of(index: u64) -> usize {
        ((index >> 6) as usize) & (RMAP_LOCKS - 1)
    }

    /// Take lock `slot`.
    pub fn lock_slot(&self, slot: usize) -> RmapGuard<'_> {
        let l = &self.locks[slot];
        // Acquire: pairs with the Release in the guard's drop.
        while l.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            while l.load(Ordering::Relaxed) {
                spin_hint();
            }
        }
        RmapGuard { locks: self, slot }
    }

    /// Lock `frame`'s reverse map: the lock chosen by its index, re-checked
    /// after taking it (the index may change while we wait).
    pub fn lock_rmap(&self, frame: &Frame) -> RmapGuard<'_> {
        loop {
            let index = frame.index.load(Ordering::Acquire);
            let g = self.lock_slot(Self::slot_of(index));
            // The index is only changed under the lock of its old value, so
            // if it still hashes here, this is the right lock.
            if Self::slot_of(frame.index.load(Ordering::Acquire)) == g.slot {
                return g;
            }
            drop(g);
        }
    }

    /// Change `frame`'s index (seed 001's `set_page_index`), under the lock
    /// of the old index, so that `lock_rmap` never holds a stale lock.
    pub fn set_index(&self, frame: &Frame, index: u64) {
        let _g = self.lock_rmap(frame);
        // Release: pairs with the Acquire re-check in `lock_rmap`.
        frame.index.store(index, Ordering::Release);
    }
}
