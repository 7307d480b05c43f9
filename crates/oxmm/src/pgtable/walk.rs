//! The hardware walk, as the MMU does it on a TLB miss.
//!
//! No lock is taken: the walk reads each level with one 64-bit Acquire load
//! and, at the leaf, sets the accessed bit (and the dirty bit on a write)
//! with compare-and-swap, re-reading the entry if it changed underneath, as
//! x86 does with its locked A/D update. If the leaf is not present or does
//! not allow the access, the walk reports a fault and the fault handler
//! takes over.
//!
//! Safety of the walk rests on the TLB shootdown protocol: the caller walks
//! inside an access window that [`Platform::flush_tlb`] waits for, and a
//! page-table page is freed only after such a flush. The accessed/dirty
//! bits set here therefore land before a flush returns — the guarantee
//! reclaim and munmap rely on.
//!
//! Understands 2 MiB (PS at level 2) and 1 GiB (PS at level 3) leaves.
//!
//! [`Platform::flush_tlb`]: crate::platform::Platform::flush_tlb

use crate::addr::{Pfn, VirtAddr};
use crate::arch::{load_entry, EntryKind, EntrySlot, Native, PagingFormat, Pte};
use crate::system::System;

/// The result of a successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The 4 KiB frame holding the address.
    pub pfn: Pfn,
    /// Writes may go through this translation without another walk (the
    /// leaf is writable and already dirty).
    pub writable: bool,
    /// The level of the leaf (1 = 4 KiB, 2 = 2 MiB).
    pub level: usize,
    /// The page-table page holding the leaf.
    pub table: Pfn,
}

/// Why the walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkFault {
    /// Nothing mapped (or PROT_NONE).
    NotPresent,
    /// Mapped, but the access is not allowed (a write to a read-only leaf).
    Protection,
}

/// Walk `root` for `va`, setting A (and D on `write`).
///
/// Enters with: an open access window on the walking CPU (see the TLB
/// protocol), or the mmap lock held. No lock is taken.
///
/// # Safety
///
/// `root` must be the root table of a live mm, and every table reachable
/// from it must stay allocated for the duration of the call: the caller
/// is inside an access window that the platform's TLB flush waits for
/// (tables are freed only after such a flush), or holds that mm's mmap
/// lock (tables are freed only under it, for writing).
#[inline]
pub unsafe fn translate(sys: &System, root: Pfn, va: VirtAddr, write: bool) -> Result<Translation, WalkFault> {
    // SAFETY: forwarded from the caller.
    unsafe { translate_from(sys, root, Native::LEVELS, va, write) }
}

/// [`translate`] starting at `table`, a page-table page of level `level`
/// that maps `va` — how a hardware walk resumes from a paging-structure
/// cache entry. The result's `table` names the level-1 table used, for the
/// caller to cache.
///
/// # Safety
///
/// As for [`translate`], for `table` and every table below it: the caller
/// is inside an access window (a TLB flush, which must precede freeing any
/// table, waits for it and drops the caller's cached tables at its next
/// window), or holds the mmap lock.
#[inline(always)]
pub unsafe fn translate_from(
    sys: &System,
    table: Pfn,
    level: usize,
    va: VirtAddr,
    write: bool,
) -> Result<Translation, WalkFault> {
    let mut table = table;
    let mut level = level;
    loop {
        // SAFETY:
        // - `table` is the root or was read from a present entry in this
        //   walk; tables are freed only after a TLB flush, which waits for
        //   the caller's access window to close (or the caller holds the
        //   mmap lock, which excludes freeing);
        // - the index is below 512.
        let slot = unsafe { sys.entry(table, va.table_index(level)) };
        let mut raw = load_entry(slot);
        match Native::decode(raw.0, level) {
            EntryKind::None | EntryKind::ProtNone(_) => return Err(WalkFault::NotPresent),
            EntryKind::Table(next) => {
                table = next;
                level -= 1;
            }
            EntryKind::Leaf(base) => {
                raw = mark_leaf(slot, raw, level, write)?;
                let pfn = match level {
                    1 => raw.pfn(),
                    _ => {
                        let span_pages = 1u64 << (9 * (level - 1));
                        Pfn::new_unchecked(raw.pfn().as_u64() + (va.vpn() & (span_pages - 1)))
                    }
                };
                let _ = base;
                return Ok(Translation { pfn, writable: raw.is_writable() && raw.is_dirty(), level, table });
            }
        }
    }
}

/// The walk's last step on leaf `raw` (read from `slot`, at `level`): set
/// its accessed bit, and its dirty bit for a `write`, by compare-and-swap,
/// deciding again on the new value whenever it changed underneath (another
/// CPU's update, or the kernel's exchange or CAS), as x86's locked A/D
/// update does. Returns the leaf with the bits set, or the fault it now
/// gives. A translation is used only if its bits are in the entry, so an
/// exchange that takes the entry (zap) returns every bit a walk relied on
/// (`tests/loom_mmu_ad.rs`).
#[inline(always)]
pub fn mark_leaf<S: EntrySlot + ?Sized>(slot: &S, mut raw: Pte, level: usize, write: bool) -> Result<Pte, WalkFault> {
    loop {
        if write && !raw.is_writable() {
            return Err(WalkFault::Protection);
        }
        let want = Pte::ACCESSED | if write { Pte::DIRTY } else { 0 };
        if raw.0 & want == want {
            return Ok(raw);
        }
        match slot.cas_pte(raw, raw.with(want)) {
            Ok(_) => return Ok(raw.with(want)),
            Err(now) => {
                raw = now;
                if !matches!(Native::decode(raw.0, level), EntryKind::Leaf(_)) {
                    return Err(WalkFault::NotPresent);
                }
            }
        }
    }
}
