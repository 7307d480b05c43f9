//! Page tables: frames from [`crate::phys`] in the real x86-64 format.
//!
//! A page-table page is an ordinary movable frame flagged
//! [`PAGETABLE`](crate::phys::frame::flags::PAGETABLE) and counted in
//! `NrPageTables`. Its 512 entries are only ever read and written as 64-bit
//! atomics ([`crate::arch::load_entry`] & co.), never through `&mut`,
//! because the software MMU sets accessed/dirty bits in them concurrently
//! with everything else.
//!
//! - [`install`]: a missing intermediate table is installed by
//!   compare-and-swap on the parent entry; the loser frees its page. This is
//!   what lets the fault path run under the mmap read lock alone.
//! - [`walk`]: the hardware walk of the software MMU (no locks; sets A/D).
//! - [`cursor`]: ranged changes (zap, protect, query) under the mmap lock,
//!   one PTE table at a time with its split lock ([`lock`]) held.
//!
//! Tables are freed only with the mmap lock held for writing (munmap, exit)
//! and only after the TLB flush that follows their unlinking, so a lock-free
//! walker (a fault under the read lock, or the MMU inside a flush-protected
//! access) never sees a freed table.

pub mod cursor;
pub mod install;
pub mod lock;
pub mod walk;

use core::sync::atomic::AtomicU64 as HwAtomicU64;

use crate::addr::Pfn;
use crate::addr::VirtAddr;
use crate::arch::{load_entry, EntryKind, Native, PagingFormat};
use crate::platform::CpuId;
use crate::system::System;

/// Why a PTE slot could not be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// No memory for a missing table.
    Oom,
    /// A huge (PS) leaf maps this address at the given level: there is no
    /// PTE table below it.
    Huge(usize),
    /// No table (lookup without allocation).
    Missing,
}

/// The PTE table (level-1 page-table page) covering `va`, installing
/// missing tables on the way.
///
/// Enters with: the mmap lock held (read or write) for the mm owning `root`.
/// Returns with: the same; the table stays a table while it is held.
#[inline]
pub fn pte_table_alloc(sys: &System, cpu: CpuId, owner: u64, root: Pfn, va: VirtAddr) -> Result<Pfn, SlotError> {
    let mut table = root;
    for level in (2..=Native::LEVELS).rev() {
        // SAFETY:
        // - `table` is the root or a table read from a live entry of its
        //   parent; tables are freed only under the mmap write lock, which
        //   the caller's hold of the mmap lock excludes;
        // - `table_index` is below 512.
        let slot = unsafe { sys.entry(table, va.table_index(level)) };
        let span_shift = 12 + 9 * (level as u32 - 1);
        table = install::get_or_install(
            slot,
            level,
            || {
                let t = sys.alloc_table(cpu, owner)?;
                // A table records the first page it maps: a reverse-map
                // entry naming (table, slot) then yields its address.
                let base_vpn = (va.as_u64() >> span_shift << span_shift) >> 12;
                sys.phys.frame(t).index.store(base_vpn, crate::sync::Ordering::Relaxed);
                Some(t)
            },
            |lost| {
                sys.stats.inc(cpu, crate::stats::Stat::PgTableRaceLost);
                sys.free_table(cpu, lost)
            },
        )?;
    }
    Ok(table)
}

/// The PTE slot mapping `va`, installing missing tables on the way.
///
/// Enters with: the mmap lock held (read or write) for the mm owning `root`.
/// Returns with: the same; the slot stays valid while it is held.
///
/// # Safety
///
/// The caller holds the mmap lock of the mm whose root is `root` for as
/// long as it uses the returned reference (the `'_` lifetime is the
/// system's, longer than the lock's: the caller must not keep the slot past
/// its guard).
#[inline]
pub unsafe fn pte_slot_alloc(
    sys: &System,
    cpu: CpuId,
    owner: u64,
    root: Pfn,
    va: VirtAddr,
) -> Result<&HwAtomicU64, SlotError> {
    let table = pte_table_alloc(sys, cpu, owner, root, va)?;
    // SAFETY: `table` is a live PTE table (see `pte_table_alloc`); index < 512.
    Ok(unsafe { sys.entry(table, va.table_index(1)) })
}

/// The PTE slot mapping `va`, if every table on the way exists.
///
/// Enters with: the mmap lock held. Returns with: the same.
///
/// # Safety
///
/// As for [`pte_slot_alloc`]: the mmap lock of `root`'s mm is held while
/// the returned reference is used.
pub unsafe fn pte_slot(sys: &System, root: Pfn, va: VirtAddr) -> Result<&HwAtomicU64, SlotError> {
    // SAFETY: forwarded from the caller.
    let table = unsafe { pte_table(sys, root, va) }?;
    // SAFETY: as in `pte_slot_alloc`.
    Ok(unsafe { sys.entry(table, va.table_index(1)) })
}

/// The PTE table (level-1 page-table page) covering `va`, if every table on
/// the way exists: with the slot index `va.table_index(1)`, what names a
/// PTE in the reverse map.
///
/// # Safety
///
/// As for [`pte_slot`]: the mmap lock of `root`'s mm is held while the
/// table is used.
pub unsafe fn pte_table(sys: &System, root: Pfn, va: VirtAddr) -> Result<Pfn, SlotError> {
    let mut table = root;
    for level in (2..=Native::LEVELS).rev() {
        // SAFETY: as in `pte_slot_alloc`.
        let slot = unsafe { sys.entry(table, va.table_index(level)) };
        match Native::decode(load_entry(slot).0, level) {
            EntryKind::Table(p) => table = p,
            EntryKind::Leaf(_) | EntryKind::ProtNone(_) => return Err(SlotError::Huge(level)),
            EntryKind::None => return Err(SlotError::Missing),
        }
    }
    Ok(table)
}
