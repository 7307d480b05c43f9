//! The anonymous fault on an empty PTE (Linux's `do_anonymous_page`).
//!
//! A read maps the shared zero page read-only: nothing is allocated and RSS
//! does not change. A write takes a frame from the CPU's page cache, zeroes
//! it, sets its metadata (anon, mapcount 1, index = virtual page number,
//! owner = mm) and only then publishes it with `cas(pte, NONE, new)`: the
//! Release half of the CAS publishes the zeroing and the metadata, so every
//! walker and every later rmap walk that sees the PTE sees a fully set-up
//! page (seed 002's ordering). The loser of a race frees its frame.
//!
//! No lock beyond the mmap read lock is taken, and the only shared cache
//! lines written are the PTE's and the frame's own metadata; counters are
//! per CPU.

use super::prefault;
use crate::addr::{Pfn, VirtAddr};
use crate::arch::{cas_entry, Pte};
use crate::fault::{Access, FaultError};
use crate::mm::rss::RssKind;
use crate::mm::vma::Vma;
use crate::mm::Mm;
use crate::phys::frame::{flags, Frame};
use crate::phys::Gfp;
use crate::platform::CpuId;
use crate::rmap::{self, PteRef};
use crate::stats::Stat;
use crate::sync::Ordering;

/// Set up the metadata of a fresh anonymous page about to be mapped at
/// `va` of `vma` through PTE `r`: its index in the VMA's object, its owner
/// (the anon_vma under the object-based reverse map, else the mm), one
/// mapping, and its reverse map — all before the PTE publishes it.
#[inline]
pub(crate) fn setup_new_page(mm: &Mm, vma: &Vma, f: &Frame, va: VirtAddr, r: PteRef) {
    f.index.store(vma.index_of(va.as_u64()), Ordering::Relaxed);
    let owner = if vma.anon_vma != 0 { vma.anon_vma } else { mm.id() };
    f.mapping.store(owner, Ordering::Relaxed);
    f.mapcount.store(1, Ordering::Relaxed);
    // Not a locked RMW (Linux's `__folio_set_anon`): the frame is ours
    // alone until the PTE publishes it, so nothing else changes its flags;
    // and a locked instruction here would wait for the page's zeroing
    // stores to drain on every page.
    f.flags.store(f.flags.load(Ordering::Relaxed) | flags::ANON, Ordering::Relaxed);
    rmap::new_page(mm.sys(), f, r);
}

/// Undo [`setup_new_page`] for a page that lost the race to its PTE (it was
/// never visible, so no lock is needed).
#[inline]
pub(crate) fn undo_new_page(f: &Frame) {
    f.mapcount.store(0, Ordering::Relaxed);
    f.flags.store(f.flags.load(Ordering::Relaxed) & !flags::ANON, Ordering::Relaxed);
    rmap::unpublished(f);
}

/// The leaf bits of a fresh private anonymous page in `vma`.
#[inline]
pub(crate) fn anon_leaf_flags(vma: &Vma, write: bool) -> u64 {
    let mut bits = Pte::PRESENT | Pte::USER | Pte::ACCESSED;
    if write {
        bits |= Pte::WRITABLE | Pte::DIRTY;
    }
    if !vma.prot.executable() {
        bits |= Pte::NX;
    }
    bits
}

/// Map a new page (write) or the zero page (read) at `va`, and, if
/// `prefault` allows it, the rest of the prefault window if there is one.
///
/// Enters with: the mmap read lock; the PTE for `va` in `table` was seen
/// empty. Returns with: the same lock.
pub fn do_anonymous_page(
    mm: &Mm,
    cpu: CpuId,
    vma: &Vma,
    va: VirtAddr,
    table: Pfn,
    access: Access,
    prefault: bool,
) -> Result<(), FaultError> {
    let sys = &**mm.sys();
    let pages = if prefault { prefault::window(sys, mm, cpu, vma, va) } else { 1 };
    let idx = va.table_index(1);
    // `window` clips to the PTE table, so every slot is in `table`.
    debug_assert!(idx + pages <= 512);
    // SAFETY (for every `entry` below): `table` is a live PTE table while
    // the mmap read lock is held; `idx + k < 512` because the window is
    // clipped to the table.
    if access == Access::Read {
        let mut extra = 0;
        for k in 0..pages {
            let flags = prefault_bits(anon_leaf_flags(vma, false), k);
            let pte = Pte::new(sys.zero_pfn(), flags);
            // SAFETY: see above.
            if cas_entry(unsafe { sys.entry(table, idx + k) }, Pte::NONE, pte).is_ok() {
                if k == 0 {
                    sys.stats.inc(cpu, Stat::ZeroPageMap);
                } else {
                    extra += 1;
                }
            } else if k == 0 {
                sys.stats.inc(cpu, Stat::FaultRaceLost);
            }
        }
        count_window(sys, cpu, pages, extra);
        return Ok(());
    }
    let mut frames = [Pfn::default(); prefault::MAX_WINDOW];
    let got = if pages == 1 {
        match sys.phys.alloc_frame(cpu, Gfp::MOVABLE) {
            Some(p) => {
                frames[0] = p;
                1
            }
            None => 0,
        }
    } else {
        // Allocation failure after the first page shortens the window.
        sys.phys.alloc_batch(cpu, Gfp::MOVABLE, &mut frames[..pages])
    };
    if got == 0 {
        return Err(FaultError::Oom);
    }
    if got < pages {
        // The window was shortened: predict from where it really ended.
        prefault::shortened(sys, cpu, va + got as u64 * 4096);
    }
    let mut installed = 0i64;
    let mut extra = 0usize;
    for (k, &pfn) in frames[..got].iter().enumerate() {
        sys.zero_frame(pfn);
        let f = sys.phys.frame(pfn);
        setup_new_page(mm, vma, f, va + k as u64 * 4096, PteRef::new(table, idx + k));
        let pte = Pte::new(pfn, prefault_bits(anon_leaf_flags(vma, true), k));
        // Release (in cas_entry): publishes the zeroed page and the metadata
        // above; pairs with the Acquire load in walkers and rmap.
        // SAFETY: see above.
        if cas_entry(unsafe { sys.entry(table, idx + k) }, Pte::NONE, pte).is_ok() {
            installed += 1;
            extra += usize::from(k > 0);
        } else {
            // Lost the race: the frame was never visible. Undo and free.
            undo_new_page(f);
            sys.phys.free_frame(cpu, pfn);
            if k == 0 {
                sys.stats.inc(cpu, Stat::FaultRaceLost);
            }
        }
    }
    if installed > 0 {
        mm.add_rss(cpu, RssKind::Anon, installed);
        sys.stats.add(cpu, Stat::AnonFaultAlloc, installed);
        sys.stats.add(cpu, Stat::NrAnonPages, installed);
    }
    count_window(sys, cpu, got, extra);
    Ok(())
}

/// Extra pages of a window go in without the accessed bit and with the
/// prefault software bit (so unused ones can be counted at unmap).
#[inline(always)]
fn prefault_bits(bits: u64, k: usize) -> u64 {
    if k == 0 {
        bits
    } else {
        (bits & !Pte::ACCESSED) | Pte::SW_PREFAULT
    }
}

#[inline]
fn count_window(sys: &crate::system::System, cpu: CpuId, window: usize, extra_mapped: usize) {
    if window > 1 {
        sys.stats.inc(cpu, Stat::PrefaultWindow);
        sys.stats.add(cpu, Stat::PrefaultPages, extra_mapped as i64);
    }
}
