//! Anticipatory prefault (seed 003).
//!
//! Each CPU (a thread of the hosted machine; a task in Linux) predicts
//! where its next anonymous fault will be: right after the window its last
//! one mapped. A fault at the predicted address is a *hit*, and the window
//! grows: the first hit maps 1 extra page, then 2, 4, 8 … up to 2^max_order
//! extra pages (max_order 3 by default, so a long sequential run takes one
//! fault per 9 pages); any other fault is a *miss* and resets the window to
//! the faulting page alone. The window is clipped to the VMA and to the PTE
//! table (2 MiB) of the faulting address, so a window is filled with one
//! table's slots and never installs a table. `MADV_RANDOM` turns it off for
//! the VMA.
//!
//! The faulting page is mapped with its accessed bit set; the extra pages
//! without it and with the software bit [`Pte::SW_PREFAULT`], so that the
//! MMU's first access sets accessed and zap (and `try_to_unmap`) can count
//! the pages prefault mapped for nothing (`prefault_unused`); aging
//! (`page_referenced`) clears the mark with the accessed bit it takes.
//! Faults taken to populate a range (`MAP_POPULATE`, `MADV_POPULATE_*`)
//! never open a window and leave the predictor alone.
//!
//! The predictor is only ever read and written by its own CPU (Relaxed
//! atomics in its own cache line): predicting adds no shared write.
//!
//! [`Pte::SW_PREFAULT`]: crate::arch::Pte::SW_PREFAULT

use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::mm::vma::{vmflags, Vma};
use crate::mm::Mm;
use crate::platform::CpuId;
use crate::sync::{AtomicU32, AtomicU64, Ordering::Relaxed};
use crate::system::{System, PREFAULT_MAX_ORDER};

/// Most pages one window can map (the faulting page and 2^max extra).
pub const MAX_WINDOW: usize = 1 + (1 << PREFAULT_MAX_ORDER);

const PMD_SPAN: u64 = 2 << 20;

/// One CPU's predictor (seed 003's `anon_fault_next_addr` and
/// `anon_fault_order`), plus the mm it predicted for.
pub struct Predictor {
    mm: AtomicU64,
    next: AtomicU64,
    hits: AtomicU32,
}

impl Predictor {
    /// No prediction.
    pub fn new() -> Predictor {
        Predictor { mm: AtomicU64::new(0), next: AtomicU64::new(u64::MAX), hits: AtomicU32::new(0) }
    }
}

impl Default for Predictor {
    fn default() -> Self {
        Self::new()
    }
}

/// The window ended at `end` rather than where [`window`] planned (an
/// allocation came up short): the next fault is predicted there, as seed
/// 003 records the end of the pages actually allocated.
#[inline]
pub fn shortened(sys: &System, cpu: CpuId, end: VirtAddr) {
    sys.predictor(cpu).next.store(end.as_u64(), Relaxed);
}

/// The number of pages (≥ 1, ≤ [`MAX_WINDOW`]) the fault at `va` should map,
/// and the prediction updated for the next fault.
///
/// Enters with: the mmap read lock; `va` page-aligned inside `vma`.
#[inline]
pub fn window(sys: &System, mm: &Mm, cpu: CpuId, vma: &Vma, va: VirtAddr) -> usize {
    let Some(max_order) = sys.prefault() else { return 1 };
    let p = sys.predictor(cpu);
    if vma.flags & vmflags::RANDOM != 0 {
        p.hits.store(0, Relaxed);
        p.next.store(u64::MAX, Relaxed);
        return 1;
    }
    let a = va.as_u64();
    let hit = p.mm.load(Relaxed) == mm.id() && p.next.load(Relaxed) == a;
    let hits = if hit { (p.hits.load(Relaxed) + 1).min(64) } else { 0 };
    let extra = if hits == 0 { 0 } else { 1u64 << (hits - 1).min(u32::from(max_order)) };
    let table_end = (a & !(PMD_SPAN - 1)) + PMD_SPAN;
    let end = (a + (1 + extra) * PAGE_SIZE).min(vma.end).min(table_end);
    p.hits.store(hits, Relaxed);
    p.mm.store(mm.id(), Relaxed);
    p.next.store(end, Relaxed);
    ((end - a) / PAGE_SIZE) as usize
}
