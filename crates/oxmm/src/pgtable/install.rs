//! Installing a missing page-table page by compare-and-swap.
//!
//! # Protocol
//!
//! Faults run concurrently under the mmap *read* lock, so two CPUs may both
//! find the same parent entry empty. Each allocates and zeroes a table page,
//! then tries `cas(parent, NONE, table(new))`:
//!
//! - the winner's table is now reachable; the Release half of the CAS
//!   publishes the zeroing, and pairs with the Acquire load every walker
//!   uses ([`crate::arch::load_entry`]), so no walker sees a non-zero
//!   garbage entry in a fresh table;
//! - the loser's CAS fails and returns the winner's entry; the loser frees
//!   its own page (it was never visible to anyone, so it needs no TLB flush)
//!   and continues with the winner's table.
//!
//! Invariant: every table reachable from the root is a page-table page
//! allocated by exactly one installer, and no page is both installed and
//! freed. Entries are never changed from a table to something else while
//! the mmap lock is held for reading (only munmap/exit, under the write
//! lock, unlink tables), so a table read here stays valid while the lock is
//! held. The loom model is `tests/loom_pgtable_install.rs`.

use super::SlotError;
use crate::addr::Pfn;
use crate::arch::{EntryKind, EntrySlot, Native, PagingFormat, Pte};

/// The table below `slot` (an entry at `level` ≥ 2), installing one from
/// `alloc` if there is none. A lost race hands the allocated page to
/// `free_lost`.
#[inline]
pub fn get_or_install<S: EntrySlot + ?Sized>(
    slot: &S,
    level: usize,
    alloc: impl FnOnce() -> Option<Pfn>,
    free_lost: impl FnOnce(Pfn),
) -> Result<Pfn, SlotError> {
    let cur = slot.load_pte();
    match Native::decode(cur.0, level) {
        EntryKind::Table(p) => return Ok(p),
        EntryKind::Leaf(_) | EntryKind::ProtNone(_) => return Err(SlotError::Huge(level)),
        EntryKind::None => {}
    }
    let new = alloc().ok_or(SlotError::Oom)?;
    match slot.cas_pte(cur, Pte(Native::table(new))) {
        Ok(_) => Ok(new),
        Err(actual) => {
            free_lost(new);
            match Native::decode(actual.0, level) {
                EntryKind::Table(p) => Ok(p),
                EntryKind::Leaf(_) | EntryKind::ProtNone(_) => Err(SlotError::Huge(level)),
                // The entry changed but is empty again: impossible while the
                // mmap lock is held (nothing unlinks tables under the read
                // lock); report it as a missing table rather than loop.
                EntryKind::None => Err(SlotError::Missing),
            }
        }
    }
}
