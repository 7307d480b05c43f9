//! fork: copy an address space (Linux's `dup_mmap` / `copy_page_range`).
//!
//! The child gets a copy of every VMA (except `MADV_DONTFORK` ones) and of
//! the parent's page tables: private pages become read-only in both and are
//! shared copy-on-write (the first write in either copies the page, or
//! reuses it when that mm is by then its only mapper and holder — see
//! [`crate::fault::wp`]); the zero page stays shared; `MADV_WIPEONFORK`
//! VMAs start empty in the child; mlock is not inherited. Each copied PTE
//! adds a mapping (mapcount and a reference) and the child's RSS.
//! Reverse-map entries for the child are added per page-table page in one
//! batch (see [`crate::rmap`]).
//!
//! The parent's PTEs lose their write bit, so its TLBs are flushed once, at
//! the end, through one gather. The parent's mmap lock is held for writing
//! throughout (no fault can race the copy); the child is not yet visible to
//! anyone.

use alloc::sync::Arc;

use super::rss::{kind_of_frame, RssKind};
use super::vma::{vmflags, Vma};
use super::Mm;
use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::arch::{cas_entry, load_entry, Pte};
use crate::errno::{Errno, SysResult};
use crate::pgtable::cursor::{walk_range, Step};
use crate::pgtable::{pte_table_alloc, SlotError};
use crate::phys::frame::Frame;
use crate::platform::CpuId;
use crate::rmap::PteRef;
use crate::sync::Ordering;
use crate::tlb::MmuGather;

impl Mm {
    /// `fork()`: a new address space that is a copy-on-write copy of this
    /// one. `ENOMEM` if page tables for the child cannot be allocated (the
    /// half-built child is torn down; the parent is unchanged but for write
    /// protection, as on Linux).
    pub fn fork(&self, cpu: CpuId) -> SysResult<Arc<Mm>> {
        let st = self.write();
        st.live()?;
        let child = Mm::with_rss_mode(self.sys(), cpu, self.rss_counters().mode())?;
        let mut failed = false;
        {
            let mut cst = child.write();
            cst.start_brk = st.start_brk;
            cst.brk = st.brk;
            let mut g = MmuGather::new(self.sys(), cpu, self.id());
            cst.vmas.inherit_marks(&st.vmas);
            for v in st.vmas.iter() {
                if v.flags & vmflags::DONTFORK != 0 {
                    continue;
                }
                // mlock is not inherited (Linux's `dup_mmap` clears
                // VM_LOCKED): the child's copy is an ordinary mapping.
                cst.vmas.insert(Vma { flags: v.flags & !vmflags::LOCKED, ..*v });
                if v.file != 0 {
                    if let Some(c) = st.files.get(&v.file) {
                        c.add_user(&child, v.pgoff, v.pgoff + ((v.end - v.start) >> 12));
                        cst.files.entry(v.file).or_insert_with(|| c.clone());
                    }
                }
                // Like Linux, shared mappings are not copied (the child
                // faults them in from the page cache), nor are private file
                // mappings that never had a private page (`vma_needs_copy`:
                // no anon_vma; one that had some is copied whole, its file
                // pages too, even after its private pages are gone).
                if v.flags & vmflags::WIPEONFORK != 0 || failed || v.is_shared() {
                    continue;
                }
                if v.file != 0 && !st.vmas.has_had_private_pages(v) {
                    continue;
                }
                if copy_range(self, &child, &mut g, cpu, v).is_err() {
                    failed = true;
                }
            }
            crate::rmap::fork_vmas(&child, &cst.vmas);
            g.finish(self.cpumask());
        }
        drop(st);
        if failed {
            child.exit(cpu);
            return Err(Errno::ENOMEM);
        }
        Ok(child)
    }
}

/// Copy the PTEs of `vma` from `parent` to `child`.
///
/// Enters with: the parent's mmap lock for writing and the child's for
/// writing. Takes each parent PTE table's lock in turn (the child's tables
/// are private to this call).
fn copy_range(parent: &Mm, child: &Mm, g: &mut MmuGather<'_>, cpu: CpuId, vma: &Vma) -> Result<(), SlotError> {
    let sys = &**parent.sys();
    let zero = sys.zero_pfn();
    let shared = vma.flags & vmflags::SHARED != 0;
    let mut result = Ok(());
    let mut rss = [0i64; 3];
    // Held across the PTE copies and their reverse-map changes, so the
    // node coalescer never sees them disagree.
    let _chains = crate::rmap::guard(sys, cpu);
    // SAFETY: the parent's mmap write lock is held for the whole walk;
    // slots are used only inside their step.
    unsafe {
        walk_range(sys, parent.root(), VirtAddr::new_truncate(vma.start), VirtAddr::new_truncate(vma.end), |step| {
            let Step::Ptes(r) = step else { return };
            if result.is_err() {
                return;
            }
            let ctable = match pte_table_alloc(sys, cpu, child.id(), child.root(), r.start) {
                Ok(t) => t,
                Err(e) => {
                    result = Err(e);
                    return;
                }
            };
            let mut batch = crate::rmap::begin_batch(sys, cpu, true, r.start);
            for (va, slot) in r.slots() {
                let mut old = load_entry(slot);
                if !old.maps_frame() {
                    continue;
                }
                let pfn = old.pfn();
                // Private and writable: write-protect the parent (CAS: the
                // MMU may be setting A/D concurrently through a stale TLB).
                if !shared && old.is_writable() {
                    loop {
                        match cas_entry(slot, old, old.without(Pte::WRITABLE)) {
                            Ok(_) => break,
                            Err(now) => old = now,
                        }
                    }
                    old = old.without(Pte::WRITABLE);
                    g.add_range(va, va + PAGE_SIZE);
                }
                // The child's copy is old (not accessed), like Linux's.
                let new = old.without(Pte::ACCESSED | Pte::SW_PREFAULT);
                let cslot = sys.entry(ctable, va.table_index(1));
                cslot.store(new.0, Ordering::Release);
                if pfn == zero {
                    continue;
                }
                let f = sys.phys.frame(pfn);
                f.mapcount.fetch_add(1, Ordering::AcqRel);
                f.refcount.fetch_add(1, Ordering::Relaxed);
                if let Some(kind) = kind_of_frame(f.flags()) {
                    rss[kind as usize] += 1;
                }
                if !batch.push(pfn, PteRef::new(ctable, va.table_index(1)), f) {
                    undo_copy(&mut rss, cslot, f);
                    result = Err(SlotError::Oom);
                }
            }
            for (pfn, cr) in batch.finish() {
                undo_copy(&mut rss, sys.entry(cr.table(), cr.slot()), sys.phys.frame(pfn));
                result = Err(SlotError::Oom);
            }
        });
    }
    for (kind, n) in [RssKind::Anon, RssKind::File, RssKind::Shmem].into_iter().zip(rss) {
        if n != 0 {
            child.add_rss(cpu, kind, n);
        }
    }
    result
}

/// Take back the child's copy of a PTE (`cslot`, mapping `f`) whose
/// reverse-map entry could not be added (pte chains out of node memory):
/// a mapping the reverse map does not know of must not exist. The fork
/// then fails with ENOMEM. The parent still maps and holds the page, so
/// the reference dropped here is never the last.
fn undo_copy(rss: &mut [i64; 3], cslot: &core::sync::atomic::AtomicU64, f: &Frame) {
    cslot.store(Pte::NONE.0, Ordering::Release);
    f.mapcount.fetch_sub(1, Ordering::AcqRel);
    f.refcount.fetch_sub(1, Ordering::Relaxed);
    if let Some(kind) = kind_of_frame(f.flags()) {
        rss[kind as usize] -= 1;
    }
}
