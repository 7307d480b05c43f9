//! Ranged page-table changes.
//!
//! A cursor visits the PTE tables under `[start, end)` in address order,
//! skipping holes where no table exists, and hands each to the caller as a
//! [`PteRange`] with the table's split lock held ([`PtlGuard`]); the guard
//! is released before the next table is locked (asterinas'
//! `cursor/locking.rs` keeps guards the same way). A 2 MiB leaf (PS at the
//! PMD level) is handed over as [`Step::Huge`] instead: nothing creates one
//! yet, but walkers must already understand them.
//!
//! `free_tables` unlinks page-table pages whose whole span lies in an
//! address range with no VMA (Linux's `free_pgd_range` with floor and
//! ceiling), putting them in the gather so they are freed after the flush.

use core::sync::atomic::AtomicU64 as HwAtomicU64;

use super::lock::PtlGuard;
use crate::addr::{Pfn, VirtAddr};
use crate::arch::{load_entry, xchg_entry, EntryKind, Native, PagingFormat, Pte};
use crate::system::System;
use crate::tlb::MmuGather;

/// The PTEs of one table inside the range, with its lock held.
pub struct PteRange<'a> {
    sys: &'a System,
    guard: PtlGuard<'a>,
    /// Address mapped by slot `first`.
    pub start: VirtAddr,
    first: usize,
    last: usize,
}

impl<'a> PteRange<'a> {
    /// The table.
    pub fn table(&self) -> Pfn {
        self.guard.table()
    }

    /// Each (address, slot) of the range.
    pub fn slots(&self) -> impl Iterator<Item = (VirtAddr, &'a HwAtomicU64)> + '_ {
        let sys = self.sys;
        let table = self.table();
        (self.first..self.last).map(move |i| {
            // SAFETY:
            // - the table is locked by `guard` and the caller holds the mmap
            //   lock, so it stays a live table while the range exists;
            // - i < 512.
            let slot = unsafe { sys.entry(table, i) };
            (self.start + ((i - self.first) as u64) * 4096, slot)
        })
    }
}

/// One step of a walk over a range.
pub enum Step<'a, 'b> {
    /// PTEs of a 4 KiB-page table.
    Ptes(&'b PteRange<'a>),
    /// A 2 MiB leaf at the PMD level, whose span starts at `start`.
    Huge {
        /// First address of the huge page.
        start: VirtAddr,
        /// The PMD entry.
        slot: &'a HwAtomicU64,
    },
}

/// Visit `[start, end)` (page aligned).
///
/// Enters with: the mmap lock of the mm owning `root` (read or write).
/// Returns with: the same; no table lock held.
///
/// # Safety
///
/// The caller holds the mmap lock of the mm whose root is `root` for the
/// whole call, and `f` does not keep a slot past its step (the slots'
/// lifetime is the system's, longer than the lock's).
pub unsafe fn walk_range<'a>(
    sys: &'a System,
    root: Pfn,
    start: VirtAddr,
    end: VirtAddr,
    mut f: impl FnMut(Step<'a, '_>),
) {
    walk_level(sys, root, Native::LEVELS, start.as_u64(), end.as_u64(), &mut f);
}

fn span(level: usize) -> u64 {
    1u64 << (12 + 9 * (level - 1))
}

fn walk_level<'a>(sys: &'a System, table: Pfn, level: usize, start: u64, end: u64, f: &mut dyn FnMut(Step<'a, '_>)) {
    let sz = span(level);
    let mut a = start;
    while a < end {
        let next = ((a / sz) + 1) * sz;
        let hi = next.min(end);
        let va = VirtAddr::new_truncate(a);
        if level == 1 {
            let first = va.table_index(1);
            let last = first + ((end - a) / 4096) as usize;
            let guard = PtlGuard::lock(sys, table);
            let r = PteRange { sys, guard, start: va, first, last: last.min(512) };
            f(Step::Ptes(&r));
            return;
        }
        // SAFETY:
        // - `table` is a live table (root, or read from a present entry) and
        //   the caller holds the mmap lock, which excludes freeing tables;
        // - the index is below 512.
        let slot = unsafe { sys.entry(table, va.table_index(level)) };
        match Native::decode(load_entry(slot).0, level) {
            EntryKind::None => {}
            EntryKind::Table(child) => {
                if level == 2 {
                    walk_level(sys, child, 1, a, hi, f);
                } else {
                    walk_level(sys, child, level - 1, a, hi, f);
                }
            }
            EntryKind::Leaf(_) | EntryKind::ProtNone(_) => {
                if level == 2 {
                    f(Step::Huge { start: VirtAddr::new_truncate(a & !(sz - 1)), slot });
                }
            }
        }
        a = next;
    }
}

/// Unlink and gather the page-table pages below `root` whose whole span
/// lies in `[floor, ceiling)` and meets `[start, end)`. The caller has
/// zapped every PTE in `[floor, ceiling)` (no VMA remains there), so every
/// such table is empty.
///
/// Enters with: the mmap lock held for writing.
pub(crate) fn free_tables(
    sys: &System,
    gather: &mut MmuGather<'_>,
    root: Pfn,
    start: u64,
    end: u64,
    floor: u64,
    ceiling: u64,
) {
    free_level(sys, gather, root, Native::LEVELS, start, end, floor, ceiling);
}

#[allow(clippy::too_many_arguments)]
fn free_level(
    sys: &System,
    gather: &mut MmuGather<'_>,
    table: Pfn,
    level: usize,
    start: u64,
    end: u64,
    floor: u64,
    ceiling: u64,
) {
    if level == 1 {
        return;
    }
    let sz = span(level);
    let mut a = start & !(sz - 1);
    while a < end {
        let va = VirtAddr::new_truncate(a);
        // SAFETY: as in `walk_level`; the mmap write lock is held.
        let slot = unsafe { sys.entry(table, va.table_index(level)) };
        if let EntryKind::Table(child) = Native::decode(load_entry(slot).0, level) {
            free_level(sys, gather, child, level - 1, a.max(start), (a + sz).min(end), floor, ceiling);
            if a >= floor && a + sz <= ceiling {
                xchg_entry(slot, Pte::NONE);
                gather.add_table(child);
            }
        }
        a += sz;
    }
}
