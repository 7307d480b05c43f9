//! The split page-table lock (Linux's per-page `ptl`).
//!
//! Each page-table page carries a spin lock in its frame metadata. Ranged
//! modifiers (munmap, mprotect, MADV_DONTNEED, mincore, exit) take it for
//! the PTE table they work on, through [`cursor`](super::cursor), so they
//! exclude each other and the reverse-map walkers (which reach a PTE from a
//! frame, without the mmap lock) per 2 MiB of address space rather than per
//! mm. The anonymous fault on an empty PTE does not take it: it installs by
//! compare-and-swap, and every modifier changes PTEs with atomic
//! exchange/CAS, so a racing fault sees either the old or the new entry.
//!
//! Lock order: taken inside the mmap lock, outside the rmap, LRU and zone
//! locks.

use lock_api::RawMutex;

use crate::addr::Pfn;
use crate::system::System;

/// A held page-table lock; released on drop.
pub struct PtlGuard<'a> {
    sys: &'a System,
    table: Pfn,
}

impl<'a> PtlGuard<'a> {
    /// Lock the page-table page `table`.
    ///
    /// Enters with: the mmap lock held (so `table` stays a table).
    pub fn lock(sys: &'a System, table: Pfn) -> PtlGuard<'a> {
        sys.phys.frame(table).ptl.lock();
        PtlGuard { sys, table }
    }

    /// The locked table.
    pub fn table(&self) -> Pfn {
        self.table
    }
}

impl Drop for PtlGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard took the lock in `lock` and releases it once.
        unsafe { self.sys.phys.frame(self.table).ptl.unlock() }
    }
}
