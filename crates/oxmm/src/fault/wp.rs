//! The write fault on a present read-only PTE (Linux's `do_wp_page`).
//!
//! Three cases, decided on the PTE value read under the mmap read lock and
//! committed by compare-and-swap against it:
//!
//! - the zero page: allocate a zeroed page and swap it in; other CPUs may
//!   hold the read-only zero-page translation, so the change carries a
//!   [`PendingFlush`] that is flushed before the handler returns;
//! - an anonymous page this mm maps alone and nothing else holds
//!   (mapcount 1 and reference count 1, [`Frame::is_exclusive_anon`]):
//!   reuse it — set writable and dirty; stale read-only TLB entries only
//!   cause another, spurious, fault, so no flush is needed;
//! - any other page (copy-on-write after fork, or one whose other mapping
//!   is being unmapped but not yet flushed): copy it into
//!   a new page, swap the PTE, flush, then drop the mapping's reference to
//!   the old page.
//!
//! [`Frame::is_exclusive_anon`]: crate::phys::frame::Frame::is_exclusive_anon

use core::sync::atomic::AtomicU64 as HwAtomicU64;

use super::anon::{anon_leaf_flags, setup_new_page, undo_new_page};
use crate::addr::{Pfn, VirtAddr, PAGE_SIZE};
use crate::arch::{cas_entry, load_entry, Pte};
use crate::fault::FaultError;
use crate::mm::rss::RssKind;
use crate::mm::vma::Vma;
use crate::mm::Mm;
use crate::pgtable::lock::PtlGuard;
use crate::phys::Gfp;
use crate::platform::CpuId;
use crate::rmap::{self, PteRef};
use crate::stats::Stat;
use crate::sync::Ordering;
use crate::tlb::PendingFlush;

/// Resolve a write to the read-only present PTE `old` at `va`.
///
/// Enters with: the mmap read lock. Returns with: the same.
pub fn do_wp_page(
    mm: &Mm,
    cpu: CpuId,
    vma: &Vma,
    va: VirtAddr,
    table: Pfn,
    slot: &HwAtomicU64,
    old: Pte,
) -> Result<(), FaultError> {
    let sys = &**mm.sys();
    let old_pfn = old.pfn();
    let is_zero = old_pfn == sys.zero_pfn();
    if !is_zero {
        let f = sys.phys.frame(old_pfn);
        if f.is_exclusive_anon() {
            let new = old.with(Pte::WRITABLE | Pte::DIRTY | Pte::ACCESSED);
            if cas_entry(slot, old, new).is_ok() {
                sys.stats.inc(cpu, Stat::WpReuse);
            } else {
                sys.stats.inc(cpu, Stat::FaultRaceLost);
            }
            return Ok(());
        }
    }
    // Held across the PTE change and the old page's reverse-map change.
    let _chains = rmap::guard(sys, cpu);
    if !is_zero {
        // Pin the page before reading it: under the table's lock (which zap
        // holds while it clears PTEs) the PTE still mapping it proves the
        // mapping's reference is alive, so taking another is safe; the copy
        // then reads a frame nobody can free under us.
        let _ptl = PtlGuard::lock(sys, table);
        if load_entry(slot) != old {
            return Ok(());
        }
        sys.phys.frame(old_pfn).refcount.fetch_add(1, Ordering::Relaxed);
    }
    // Zeroed only for the zero page; a copy overwrites every byte.
    let fresh = if is_zero { sys.alloc_user_page(cpu) } else { sys.phys.alloc_frame(cpu, Gfp::MOVABLE) };
    let Some(pfn) = fresh else {
        if !is_zero {
            sys.put_page(cpu, old_pfn);
        }
        return Err(FaultError::Oom);
    };
    if !is_zero {
        sys.copy_frame(pfn, old_pfn);
    }
    let f = sys.phys.frame(pfn);
    let r = PteRef::new(table, va.table_index(1));
    setup_new_page(mm, vma, f, va, r);
    let new = Pte::new(pfn, anon_leaf_flags(vma, true));
    // Commit under the table's lock, as Linux's `wp_page_copy` does: only
    // if the PTE still maps the page we copied (the MMU may have set its
    // accessed bit meanwhile), and with the old page's reverse map, count
    // and references dropped before anyone else can decide on it again.
    // Without the lock, a CPU that pinned the old page could see it freed
    // by another CPU's commit and free it a second time.
    let ptl = PtlGuard::lock(sys, table);
    let mut cur = load_entry(slot);
    let committed = loop {
        if cur.without(Pte::ACCESSED) != old.without(Pte::ACCESSED) {
            break false;
        }
        match cas_entry(slot, cur, new) {
            Ok(_) => break true,
            Err(now) => cur = now,
        }
    };
    if !committed {
        drop(ptl);
        undo_new_page(f);
        sys.phys.free_frame(cpu, pfn);
        if !is_zero {
            sys.put_page(cpu, old_pfn);
        }
        sys.stats.inc(cpu, Stat::FaultRaceLost);
        return Ok(());
    }
    mm.add_rss(cpu, RssKind::Anon, 1);
    sys.stats.inc(cpu, Stat::AnonFaultAlloc);
    sys.stats.inc(cpu, Stat::NrAnonPages);
    // Other CPUs may still read the old page through the old read-only
    // translation: flush before the old page can be freed.
    PendingFlush::new(mm.id(), va, va + PAGE_SIZE).flush(sys, cpu, mm.cpumask());
    if !is_zero {
        let of = sys.phys.frame(old_pfn);
        rmap::remove_one(sys, cpu, old_pfn, r);
        of.mapcount.fetch_sub(1, Ordering::AcqRel);
        if let Some(kind) = crate::mm::rss::kind_of_frame(of.flags()) {
            mm.add_rss(cpu, kind, -1);
        }
    }
    drop(ptl);
    if !is_zero {
        // The mapping's reference, then our pin.
        sys.put_page(cpu, old_pfn);
        sys.put_page(cpu, old_pfn);
    }
    Ok(())
}
