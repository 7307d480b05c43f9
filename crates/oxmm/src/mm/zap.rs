//! Zapping: clearing the PTEs of a range (munmap, MADV_DONTNEED, exit).
//!
//! Each PTE is cleared with an atomic exchange, so an accessed/dirty bit the
//! MMU sets up to that instant is in the value we get back and none is lost;
//! the frame's mapcount and the mm's RSS drop at once, but the reference the
//! mapping held is dropped only through the gather, after the TLB flush —
//! until then a CPU with a stale translation may still write the frame, and
//! the frame must not be reused.

use super::rss::{kind_of_frame, RssKind};
use super::Mm;
use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::arch::{load_entry, xchg_entry, Pte};
use crate::pgtable::cursor::{walk_range, Step};
use crate::phys::frame::flags;
use crate::rmap::PteRef;
use crate::sync::Ordering;
use crate::tlb::MmuGather;

/// Clear every PTE in `[start, end)`, gathering the frames.
///
/// Enters with: the mmap lock (read for DONTNEED, write for munmap/exit).
/// Takes each PTE table's split lock in turn.
pub(super) fn zap_range(mm: &Mm, g: &mut MmuGather<'_>, start: u64, end: u64) {
    let sys = &**mm.sys();
    let zero = sys.zero_pfn();
    let mut rss = [0i64; 3];
    let mut unused = 0i64;
    // Held across the PTE changes and the reverse-map changes.
    let _chains = crate::rmap::guard(sys, g.cpu());
    let (s, e) = (VirtAddr::new_truncate(start), VirtAddr::new_truncate(end));
    // SAFETY: the caller holds the mmap lock (read for DONTNEED, write for
    // munmap/exit) for the whole walk; slots are used only inside their
    // step.
    unsafe {
        walk_range(sys, mm.root(), s, e, |step| match step {
            Step::Ptes(r) => {
                let mut batch = crate::rmap::begin_batch(sys, g.cpu(), false, r.start);
                for (va, slot) in r.slots() {
                    if load_entry(slot).is_none() {
                        continue;
                    }
                    let old = xchg_entry(slot, Pte::NONE);
                    if !old.maps_frame() {
                        continue;
                    }
                    g.add_range(va, va + PAGE_SIZE);
                    if old.0 & Pte::SW_PREFAULT != 0 && !old.is_accessed() {
                        unused += 1;
                    }
                    let pfn = old.pfn();
                    if pfn == zero {
                        continue;
                    }
                    let f = sys.phys.frame(pfn);
                    f.mapcount.fetch_sub(1, Ordering::AcqRel);
                    let fl = f.flags();
                    if let Some(kind) = kind_of_frame(fl) {
                        rss[kind as usize] += 1;
                    }
                    // A shared file page written through this PTE: the
                    // dirty bit moves to the page cache for writeback.
                    if old.is_dirty() && fl & flags::FILE != 0 {
                        if let Some(c) = sys.caches().get(f.mapping.load(Ordering::Relaxed)) {
                            c.mark_dirty(f.index.load(Ordering::Relaxed));
                        }
                    }
                    // A removal needs no node memory in the end (see
                    // `rmap::remove_one`), so what it returns is not ours
                    // to act on.
                    let _ = batch.push(pfn, PteRef::new(r.table(), va.table_index(1)), f);
                    g.add_page(pfn);
                }
                // One batch per page-table page, with its lock still held.
                let _ = batch.finish();
            }
            Step::Huge { start: hs, slot } => {
                let span = 2 * 1024 * 1024;
                // A 2 MiB leaf only partly inside the range would need a split;
                // nothing maps huge pages yet, so only whole ones are zapped.
                if hs.as_u64() >= start && hs.as_u64() + span <= end {
                    let old = xchg_entry(slot, Pte::NONE);
                    if old.maps_frame() {
                        g.add_range(hs, hs + span);
                        let f = sys.phys.frame(old.pfn());
                        f.mapcount.fetch_sub(1, Ordering::AcqRel);
                        if let Some(kind) = kind_of_frame(f.flags()) {
                            rss[kind as usize] += 512;
                        }
                        g.add_page(old.pfn());
                    }
                }
            }
        })
    };
    for (kind, n) in [RssKind::Anon, RssKind::File, RssKind::Shmem].into_iter().zip(rss) {
        if n != 0 {
            mm.add_rss(g.cpu(), kind, -n);
        }
    }
    if unused != 0 {
        sys.stats.add(g.cpu(), crate::stats::Stat::PrefaultUnused, unused);
    }
}
