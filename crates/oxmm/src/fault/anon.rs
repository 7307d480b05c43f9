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

use core::sync::atomic::AtomicU64 as HwAtomicU64;

use crate::addr::VirtAddr;
use crate::arch::{cas_entry, Pte};
use crate::fault::{Access, FaultError};
use crate::mm::rss::RssKind;
use crate::mm::vma::Vma;
use crate::mm::Mm;
use crate::phys::frame::flags;
use crate::platform::CpuId;
use crate::stats::Stat;
use crate::sync::Ordering;

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

/// Map a new page (write) or the zero page (read) at `va`.
///
/// Enters with: the mmap read lock; `slot` is the PTE for `va`, seen empty.
/// Returns with: the same lock.
pub fn do_anonymous_page(
    mm: &Mm,
    cpu: CpuId,
    vma: &Vma,
    va: VirtAddr,
    slot: &HwAtomicU64,
    access: Access,
) -> Result<(), FaultError> {
    let sys = &**mm.sys();
    if access == Access::Read {
        let pte = Pte::new(sys.zero_pfn(), anon_leaf_flags(vma, false));
        if cas_entry(slot, Pte::NONE, pte).is_ok() {
            sys.stats.inc(cpu, Stat::ZeroPageMap);
        } else {
            sys.stats.inc(cpu, Stat::FaultRaceLost);
        }
        return Ok(());
    }
    let pfn = sys.alloc_user_page(cpu).ok_or(FaultError::Oom)?;
    let f = sys.phys.frame(pfn);
    f.index.store(va.vpn(), Ordering::Relaxed);
    f.mapping.store(mm.id(), Ordering::Relaxed);
    f.mapcount.store(1, Ordering::Relaxed);
    f.flags.fetch_or(flags::ANON, Ordering::Relaxed);
    let pte = Pte::new(pfn, anon_leaf_flags(vma, true));
    // Release (in cas_entry): publishes the zeroed page and the metadata
    // above; pairs with the Acquire load in walkers and rmap.
    match cas_entry(slot, Pte::NONE, pte) {
        Ok(_) => {
            mm.rss_counters().add(cpu, RssKind::Anon, 1);
            sys.stats.inc(cpu, Stat::AnonFaultAlloc);
            sys.stats.inc(cpu, Stat::NrAnonPages);
            Ok(())
        }
        Err(_) => {
            // Lost the race: the frame was never visible. Undo and free.
            f.mapcount.store(0, Ordering::Relaxed);
            f.flags.fetch_and(!flags::ANON, Ordering::Relaxed);
            sys.phys.free_frame(cpu, pfn);
            sys.stats.inc(cpu, Stat::FaultRaceLost);
            Ok(())
        }
    }
}
