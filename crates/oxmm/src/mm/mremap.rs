//! mremap: shrink, grow in place, or move a mapping with its pages.
//!
//! A move carries the PTEs themselves to the new address: each is taken
//! out of its old slot with an atomic exchange (so no accessed/dirty bit is
//! lost) and stored in the new one; no page is copied and RSS is
//! unchanged. Both reverse-map schemes stay right: pte chains name PTEs by
//! (page table, slot), so each moved PTE's entry is replaced; the
//! object-based scheme derives addresses from a page's index and the VMA's
//! `pgoff`, which the moved VMA keeps (so nothing changes per page).

use alloc::vec::Vec;

use super::vma::Vma;
use super::{page_align_wrapping, Mm, MmState, MMAP_BASE, MMAP_MIN_ADDR, TASK_SIZE, USER_TOP};
use crate::addr::{Pfn, VirtAddr, PAGE_SIZE};
use crate::arch::{load_entry, xchg_entry, Pte};
use crate::errno::{Errno, SysResult};
use crate::mm::flags::RemapFlags;
use crate::pgtable::cursor::{free_tables, walk_range, Step};
use crate::pgtable::pte_table_alloc;
use crate::platform::CpuId;
use crate::rmap::PteRef;
use crate::sync::Ordering;
use crate::tlb::MmuGather;

/// `MREMAP_DONTUNMAP` (accepted only with `MREMAP_MAYMOVE`, not supported
/// for anonymous memory here: `EINVAL`).
const DONTUNMAP: u32 = 4;

impl Mm {
    /// `mremap(addr, old_len, new_len, flags, new_addr)`.
    ///
    /// Linux 6.18's checks, in its order (`check_mremap_params`, the VMA
    /// lookup, `check_prep_vma`): unknown flags, `MREMAP_FIXED` without
    /// `MAYMOVE`, an unaligned address, a zero or too large new length, or
    /// a fixed target that is unaligned, out of range or overlaps the
    /// source → `EINVAL` (the old range itself is not checked up front); no
    /// mapping at `addr` → `EFAULT`; a zero old length duplicates a shared
    /// mapping from `addr` (a private one → `EINVAL`, and without
    /// `MAYMOVE` → `ENOMEM`); an old
    /// range that is not inside one mapping → `EFAULT` (but a shrink, fixed
    /// or not, or a same-size call without `FIXED` succeeds over several:
    /// only the part kept must be in the mapping); a shrink whose dropped
    /// tail leaves the address space → `EINVAL` (the unmap's range check);
    /// growing where the space after the mapping is taken, without
    /// `MAYMOVE` → `ENOMEM`. A failed call changes nothing, except that a
    /// fixed shrink failing on its tail has already unmapped the target, as
    /// on Linux. Growing a locked mapping faults the new part in (Linux's
    /// `populate_expand`). Returns the (possibly new) address.
    pub fn mremap(
        &self,
        cpu: CpuId,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: RemapFlags,
        new_addr: u64,
    ) -> SysResult<VirtAddr> {
        let f = flags.0;
        if f & !(RemapFlags::MAYMOVE.0 | RemapFlags::FIXED.0 | DONTUNMAP) != 0 {
            return Err(Errno::EINVAL);
        }
        if f & (RemapFlags::FIXED.0 | DONTUNMAP) != 0 && f & RemapFlags::MAYMOVE.0 == 0 {
            return Err(Errno::EINVAL);
        }
        if f & DONTUNMAP != 0 {
            return Err(Errno::EINVAL);
        }
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        // `PAGE_ALIGN`, which wraps: a length within a page of 2^64 is 0.
        let old_len = page_align_wrapping(old_len);
        let new_len = page_align_wrapping(new_len);
        if new_len == 0 {
            return Err(Errno::EINVAL);
        }
        // Only the new length is checked against the address space here
        // (6.18's `check_mremap_params`): an old range running past it is
        // judged by the VMA lookup and `check_prep_vma` (EFAULT), or by the
        // unmap of a shrink's tail (EINVAL).
        if new_len > TASK_SIZE {
            return Err(Errno::EINVAL);
        }
        let fixed = f & RemapFlags::FIXED.0 != 0;
        // The target of a fixed move is checked first (6.18's
        // `check_mremap_params`), before the source is looked at.
        if fixed {
            if !new_addr.is_multiple_of(PAGE_SIZE) || new_addr > TASK_SIZE - new_len {
                return Err(Errno::EINVAL);
            }
            // `vrm_overlaps`, whose old end wraps as Linux's does.
            if new_addr < addr.wrapping_add(old_len) && addr < new_addr + new_len {
                return Err(Errno::EINVAL);
            }
        }
        let mut st = self.write();
        st.live()?;
        // Then the mapping at `addr` (6.18's `do_mremap`): from an unmapped
        // address, every form — shrink, same size, grow, fixed move — is
        // EFAULT and unmaps nothing.
        let first = *st.vmas.find(addr).ok_or(Errno::EFAULT)?;
        // An old length of 0 duplicates a shared mapping (Linux keeps it
        // "for DOS-emu"): a new mapping of the same object from `addr`'s
        // offset, the old one left as it is. A private one cannot be
        // duplicated.
        if old_len == 0 {
            if !first.is_shared() {
                return Err(Errno::EINVAL);
            }
            if f & RemapFlags::MAYMOVE.0 == 0 {
                return Err(Errno::ENOMEM);
            }
            let dest = if fixed {
                self.unmap_locked(&mut st, cpu, new_addr, new_addr + new_len);
                new_addr
            } else {
                st.vmas.find_gap_topdown(new_len, MMAP_MIN_ADDR, MMAP_BASE).ok_or(Errno::ENOMEM)?
            };
            self.insert_mapping(
                &mut st,
                Vma { start: dest, end: dest + new_len, pgoff: first.index_of(addr), ..first },
            );
            drop(st);
            if first.flags & super::vma::vmflags::LOCKED != 0 {
                self.populate(cpu, dest, dest + new_len, first.prot, true);
            }
            return Ok(VirtAddr::new_truncate(dest));
        }
        let mut old_len = old_len;
        if fixed {
            // 6.18 checks that the part of the source that moves lies in
            // one mapping (`check_prep_vma`, which for a shrink checks only
            // the new length: the dropped tail may cross mappings) before
            // `mremap_to` clears the target and drops the tail, so a move
            // failing here destroys nothing. (6.17+ also moves a same-size
            // range over several mappings; oxmm does not, and says EFAULT.)
            if old_len.min(new_len) > first.end - addr {
                return Err(Errno::EFAULT);
            }
            self.unmap_locked(&mut st, cpu, new_addr, new_addr + new_len);
            if old_len > new_len {
                // `shrink_vma` after the target is gone: a tail leaving the
                // address space fails there, the target already unmapped.
                check_tail(addr, old_len, new_len)?;
                self.unmap_locked(&mut st, cpu, addr + new_len, addr + old_len);
                old_len = new_len;
            }
        } else if new_len <= old_len {
            // A shrink succeeds whatever else is mapped there (the range
            // may span several mappings), as on Linux.
            if new_len < old_len {
                check_tail(addr, old_len, new_len)?;
                self.unmap_locked(&mut st, cpu, addr + new_len, addr + old_len);
            }
            return Ok(VirtAddr::new_truncate(addr));
        }
        let vma = *st.vmas.find(addr).ok_or(Errno::EFAULT)?;
        if old_len > vma.end - addr {
            return Err(Errno::EFAULT);
        }
        // A locked mapping that grows gets its new part faulted in once
        // the call is done (6.18's `populate_expand` → `mm_populate` in
        // `do_mremap`, after the mmap lock is dropped).
        let populate = vma.flags & super::vma::vmflags::LOCKED != 0 && new_len > old_len;
        // Grow in place when the mapping ends here and the space after is free.
        if !fixed
            && addr + old_len == vma.end
            && addr + new_len <= TASK_SIZE
            && st.vmas.overlapping(vma.end, addr + new_len).is_empty()
        {
            self.insert_mapping(
                &mut st,
                Vma { start: vma.end, end: addr + new_len, pgoff: vma.index_of(vma.end), ..vma },
            );
            drop(st);
            if populate {
                self.populate(cpu, addr + old_len, addr + new_len, vma.prot, vma.is_shared());
            }
            return Ok(VirtAddr::new_truncate(addr));
        }
        if f & RemapFlags::MAYMOVE.0 == 0 {
            return Err(Errno::ENOMEM);
        }
        let dest = if fixed {
            new_addr
        } else {
            st.vmas.find_gap_topdown(new_len, MMAP_MIN_ADDR, MMAP_BASE).ok_or(Errno::ENOMEM)?
        };
        let moved = old_len.min(new_len);
        // Page tables for the destination first: failing here leaves the
        // source untouched.
        let sys = &**self.sys();
        let mut a = dest;
        while a < dest + moved {
            pte_table_alloc(sys, cpu, self.id(), self.root(), VirtAddr::new_truncate(a)).map_err(|_| Errno::ENOMEM)?;
            a = (a | ((2 << 20) - 1)) + 1;
        }
        let mut g = MmuGather::new(sys, cpu, self.id());
        move_ptes(self, &mut g, cpu, addr, dest, moved);
        // The source's VMA pieces go (their PTEs have moved); the
        // destination's VMA goes in before the source's empty page tables
        // are freed, so that tables it now uses are kept.
        let removed = st.vmas.remove_range(addr, addr + moved);
        // The moved piece keeps its own private-pages mark (the split at
        // `addr` may have given it one of its own).
        let cow_mark = removed.first().map_or(vma.cow_mark, |v| v.cow_mark);
        self.insert_mapping(
            &mut st,
            Vma { start: dest, end: dest + new_len, pgoff: vma.index_of(addr), cow_mark, ..vma },
        );
        let floor = st.vmas.prev(addr).map(|v| v.end).unwrap_or(0);
        let ceiling = st.vmas.find_from(addr + moved).map(|v| v.start).unwrap_or(USER_TOP);
        free_tables(sys, &mut g, self.root(), addr, addr + moved, floor, ceiling);
        g.finish(self.cpumask());
        drop(st);
        if populate {
            self.populate(cpu, dest + old_len, dest + new_len, vma.prot, vma.is_shared());
        }
        Ok(VirtAddr::new_truncate(dest))
    }
}

impl Mm {
    /// Insert `v`, a new piece of an existing mapping (grown, moved or
    /// duplicated), registering it with its page cache, if it maps one, as
    /// a user of its range of pages.
    ///
    /// Enters with: the mmap lock for writing (`st`).
    fn insert_mapping(&self, st: &mut MmState, v: Vma) {
        if let Some(c) = st.files.get(&v.file) {
            c.add_user(&self.arc(), v.pgoff, v.pgoff + (v.len() >> 12));
        }
        st.vmas.insert(v);
    }
}

/// The range check of the unmap that drops a shrink's tail
/// `[addr + new_len, addr + old_len)` (Linux's `do_vmi_munmap` from
/// `shrink_vma`): a tail leaving the address space is `EINVAL`.
fn check_tail(addr: u64, old_len: u64, new_len: u64) -> SysResult<()> {
    let start = addr + new_len;
    if start > TASK_SIZE || old_len - new_len > TASK_SIZE - start {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Move the PTEs of `[from, from+len)` to `[to, to+len)` (tables exist).
///
/// Enters with: the mmap lock for writing. Takes each source table's lock.
fn move_ptes(mm: &Mm, g: &mut MmuGather<'_>, cpu: CpuId, from: u64, to: u64, len: u64) {
    let sys = &**mm.sys();
    let _chains = crate::rmap::guard(sys, cpu);
    let mut moves: Vec<(Pfn, PteRef, PteRef)> = Vec::new();
    // SAFETY: the mmap write lock is held for the whole walk; slots are used
    // only inside their step.
    unsafe {
        walk_range(sys, mm.root(), VirtAddr::new_truncate(from), VirtAddr::new_truncate(from + len), |step| {
            let Step::Ptes(r) = step else { return };
            for (va, slot) in r.slots() {
                if load_entry(slot).is_none() {
                    continue;
                }
                let old = xchg_entry(slot, Pte::NONE);
                let dva = VirtAddr::new_truncate(to + (va.as_u64() - from));
                let Ok(dt) = pte_table_alloc(sys, cpu, mm.id(), mm.root(), dva) else { continue };
                // SAFETY: `dt` is a live table under the mmap write lock.
                sys.entry(dt, dva.table_index(1)).store(old.0, Ordering::Release);
                g.add_range(va, va + PAGE_SIZE);
                if old.maps_frame() && old.pfn() != sys.zero_pfn() {
                    moves.push((
                        old.pfn(),
                        PteRef::new(r.table(), va.table_index(1)),
                        PteRef::new(dt, dva.table_index(1)),
                    ));
                }
            }
        });
    }
    for (pfn, old, new) in moves {
        // One rewrite of the entry, which needs node memory only for a
        // chain other pages share; with none left anywhere, the entry is
        // left naming the old PTE (counted in `rmap_alloc_fail`; the
        // checker reports it) — Linux would move the range back and fail
        // with ENOMEM, which this does not do yet.
        let _ = crate::rmap::move_one(sys, cpu, pfn, old, new);
    }
}
