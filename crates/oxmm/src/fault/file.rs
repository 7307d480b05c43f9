//! Faults on file and shmem mappings (Linux's `do_read_fault`,
//! `do_cow_fault`, `do_shared_fault`, `filemap_map_pages`).
//!
//! | VMA | access | action |
//! |---|---|---|
//! | any | read | map the cached page read-only, and the already-cached pages of the aligned 64 KiB window around it (fault-around) |
//! | private | write | copy the cached page into a new private anonymous page (copy-on-write at first touch) |
//! | shared | write | map the cached page writable and mark it dirty |
//! | shared | write to a read-only PTE | make it writable and mark the page dirty (`do_shared_wp`) |
//!
//! An index past the end of the object is `SIGBUS`. A cached page mapped
//! by a PTE holds a reference and a mapcount for that PTE and is in the
//! reverse map; installing races with other CPUs by CAS on the empty PTE,
//! and the loser drops what it took.

use core::sync::atomic::AtomicU64 as HwAtomicU64;

use super::anon::{setup_new_page, undo_new_page};
use super::{Access, FaultError};
use crate::addr::{Pfn, VirtAddr, PAGE_SIZE};
use crate::arch::{cas_entry, Pte};
use crate::mm::rss::RssKind;
use crate::mm::vma::Vma;
use crate::mm::Mm;
use crate::pagecache::{CacheError, PageCache};
use crate::phys::Gfp;
use crate::platform::CpuId;
use crate::rmap::{self, PteRef};
use crate::stats::Stat;
use crate::sync::Ordering;

/// Pages in the fault-around window (64 KiB, as Linux's default).
pub const FAULT_AROUND_PAGES: u64 = 16;

fn cache_err(e: CacheError) -> FaultError {
    match e {
        CacheError::Bus | CacheError::Io => FaultError::Bus,
        CacheError::Oom => FaultError::Oom,
    }
}

/// The RSS counter a cached frame counts in.
fn kind_of(cache: &PageCache) -> RssKind {
    if cache.is_shmem() {
        RssKind::Shmem
    } else {
        RssKind::File
    }
}

/// The leaf bits for a cached page in `vma`.
fn leaf_bits(vma: &Vma, writable: bool, accessed: bool) -> u64 {
    let mut bits = Pte::PRESENT | Pte::USER;
    if accessed {
        bits |= Pte::ACCESSED;
    }
    if writable {
        bits |= Pte::WRITABLE | Pte::DIRTY;
    }
    if !vma.prot.executable() {
        bits |= Pte::NX;
    }
    bits
}

/// Map cached frame `pfn` at slot `idx` of `table` if the slot is empty:
/// `Ok(true)` if this call installed it, `Ok(false)` if another CPU did,
/// `Oom` if the reverse map had no memory for its entry (nothing mapped).
///
/// Enters with: the mmap read lock and the chain lock shared.
fn install(
    mm: &Mm,
    cpu: CpuId,
    cache: &PageCache,
    pfn: Pfn,
    table: Pfn,
    idx: usize,
    bits: u64,
) -> Result<bool, FaultError> {
    let sys = &**mm.sys();
    let f = sys.phys.frame(pfn);
    // The mapping's reference and mapcount, taken before the PTE makes the
    // mapping visible; given back if another CPU installed first.
    f.refcount.fetch_add(1, Ordering::Relaxed);
    f.mapcount.fetch_add(1, Ordering::AcqRel);
    // SAFETY: `table` is a live PTE table while the mmap read lock is held;
    // `idx` < 512.
    let slot = unsafe { sys.entry(table, idx) };
    // The reverse-map entry goes in before the PTE, as for a new anonymous
    // page: a zap racing the install (MADV_DONTNEED under the read lock)
    // then finds it to remove, never leaving an entry for a cleared PTE.
    let r = PteRef::new(table, idx);
    if !rmap::add_one(sys, cpu, pfn, r) {
        // No node memory for the entry: no mapping without one.
        f.mapcount.fetch_sub(1, Ordering::AcqRel);
        sys.put_page(cpu, pfn);
        return Err(FaultError::Oom);
    }
    if cas_entry(slot, Pte::NONE, Pte::new(pfn, bits)).is_ok() {
        mm.add_rss(cpu, kind_of(cache), 1);
        Ok(true)
    } else {
        rmap::remove_one(sys, cpu, pfn, r);
        f.mapcount.fetch_sub(1, Ordering::AcqRel);
        sys.put_page(cpu, pfn);
        Ok(false)
    }
}

/// A fault on an empty PTE of a file or shmem VMA.
///
/// Enters with: the mmap read lock. Returns with: the same.
pub fn do_file_page(
    mm: &Mm,
    cpu: CpuId,
    vma: &Vma,
    cache: &PageCache,
    va: VirtAddr,
    table: Pfn,
    access: Access,
) -> Result<(), FaultError> {
    let sys = &**mm.sys();
    let index = vma.index_of(va.as_u64());
    let idx = va.table_index(1);
    let _chains = rmap::guard(sys, cpu);
    let src = cache.get(sys, cpu, index).map_err(cache_err)?;
    if access == Access::Write && !vma.is_shared() {
        // Copy-on-write at first touch: a private anonymous copy.
        // Not zeroed: the copy overwrites every byte.
        let pfn = sys.phys.alloc_frame(cpu, Gfp::MOVABLE).ok_or(FaultError::Oom)?;
        sys.copy_frame(pfn, src);
        let f = sys.phys.frame(pfn);
        setup_new_page(mm, vma, f, va, PteRef::new(table, idx));
        let bits = Pte::PRESENT
            | Pte::USER
            | Pte::ACCESSED
            | Pte::WRITABLE
            | Pte::DIRTY
            | if vma.prot.executable() { 0 } else { Pte::NX };
        // SAFETY: as in `install`.
        if cas_entry(unsafe { sys.entry(table, idx) }, Pte::NONE, Pte::new(pfn, bits)).is_ok() {
            mm.add_rss(cpu, RssKind::Anon, 1);
            sys.stats.inc(cpu, Stat::AnonFaultAlloc);
            sys.stats.inc(cpu, Stat::NrAnonPages);
        } else {
            undo_new_page(f);
            sys.phys.free_frame(cpu, pfn);
            sys.stats.inc(cpu, Stat::FaultRaceLost);
        }
        return Ok(());
    }
    let write = access == Access::Write;
    if install(mm, cpu, cache, src, table, idx, leaf_bits(vma, write, true))? {
        if write {
            cache.mark_dirty(index);
        }
    } else {
        sys.stats.inc(cpu, Stat::FaultRaceLost);
    }
    if !write {
        fault_around(mm, cpu, vma, cache, va, table);
    }
    Ok(())
}

/// Map the cached pages of the aligned 64 KiB window around `va` that are
/// not mapped yet, read-only and not accessed (no I/O: only pages already
/// in the cache), within the VMA, the PTE table and the object.
fn fault_around(mm: &Mm, cpu: CpuId, vma: &Vma, cache: &PageCache, va: VirtAddr, table: Pfn) {
    let win = FAULT_AROUND_PAGES * PAGE_SIZE;
    let table_start = va.as_u64() & !((2 << 20) - 1);
    let start = (va.as_u64() & !(win - 1)).max(vma.start).max(table_start);
    let end = ((va.as_u64() & !(win - 1)) + win).min(vma.end).min(table_start + (2 << 20));
    let size = cache.size_pages();
    let mut a = start;
    while a < end {
        if a != va.as_u64() {
            let index = vma.index_of(a);
            if index < size {
                if let Some(pfn) = cache.lookup(index) {
                    let v = VirtAddr::new_truncate(a);
                    // Best effort: out of memory ends the fault-around.
                    if install(mm, cpu, cache, pfn, table, v.table_index(1), leaf_bits(vma, false, false)).is_err() {
                        return;
                    }
                }
            }
        }
        a += PAGE_SIZE;
    }
}

/// A write to a read-only PTE of a shared mapping (mapped read-only by a
/// read fault or after msync cleaned it): make it writable and dirty, and
/// mark the page dirty for writeback.
///
/// Enters with: the mmap read lock.
pub fn do_shared_wp(mm: &Mm, cpu: CpuId, cache: &PageCache, slot: &HwAtomicU64, old: Pte) -> Result<(), FaultError> {
    let sys = &**mm.sys();
    let index = sys.phys.frame(old.pfn()).index.load(Ordering::Relaxed);
    if cas_entry(slot, old, old.with(Pte::WRITABLE | Pte::DIRTY | Pte::ACCESSED)).is_ok() {
        cache.mark_dirty(index);
    } else {
        sys.stats.inc(cpu, Stat::FaultRaceLost);
    }
    Ok(())
}
