//! mprotect: change the protection of a range, VMAs and PTEs together.

use super::vma::vmflags;
use super::{page_align, Mm};
use crate::addr::{Pfn, VirtAddr, PAGE_SIZE};
use crate::arch::{cas_entry, load_entry, Pte};
use crate::errno::{Errno, SysResult};
use crate::mm::flags::Prot;
use crate::pgtable::cursor::{walk_range, Step};
use crate::platform::CpuId;
use crate::system::System;
use crate::tlb::MmuGather;

/// `PROT_SEM`, accepted and ignored as on x86.
const PROT_SEM: u32 = 0x8;
/// `PROT_GROWSDOWN`.
const PROT_GROWSDOWN: u32 = 0x0100_0000;
/// `PROT_GROWSUP`.
const PROT_GROWSUP: u32 = 0x0200_0000;

/// The leaf bits a VMA protection gives a PTE mapping `pfn`.
pub(crate) fn leaf_bits(sys: &System, prot: Prot, pfn: Pfn, old: Pte) -> Pte {
    let keep = old.0 & (Pte::FRAME_MASK | Pte::ACCESSED | Pte::DIRTY | Pte::PS | Pte::SW_PREFAULT);
    if !prot.readable() {
        return Pte((keep | Pte::PROTNONE) & !Pte::PRESENT);
    }
    let mut bits = keep | Pte::PRESENT | Pte::USER;
    if !prot.executable() {
        bits |= Pte::NX;
    }
    // Writable only where a write needs no fault: a private anonymous page
    // this mm maps alone and nothing else holds (Linux's
    // `can_change_pte_writable` for an anon-exclusive page; see
    // `Frame::is_exclusive_anon` for why the mapcount is not enough). The
    // zero page and shared pages stay read-only and take a write fault.
    if prot.writable() && pfn != sys.zero_pfn() {
        let f = sys.phys.frame(pfn);
        if f.is_exclusive_anon() && (old.is_writable() || old.is_dirty()) {
            bits |= Pte::WRITABLE;
        }
    }
    Pte(bits)
}

impl Mm {
    /// `mprotect(addr, len, prot)`, in the order of Linux 6.18's
    /// `do_mprotect_pkey`.
    ///
    /// `EINVAL` for both `PROT_GROWSDOWN` and `PROT_GROWSUP`, an unaligned
    /// address, or unknown `prot` bits; a zero length succeeds; an
    /// overflowing range → `ENOMEM`, as is one whose start is not mapped.
    /// `PROT_GROWSDOWN` extends the range down to the start of its first
    /// mapping, which must be `MAP_GROWSDOWN` (`EINVAL`); `PROT_GROWSUP` is
    /// `EINVAL` (x86 has no upward-growing mappings). Then mapping by
    /// mapping: write access to a shared mapping of a file that cannot be
    /// written → `EACCES` (no `VM_MAYWRITE`), private memory made writable
    /// for the first time and larger than all of memory → `ENOMEM` (the
    /// heuristic overcommit charge, unless `MAP_NORESERVE`), and a hole →
    /// `ENOMEM`; the mappings before any of these keep their new
    /// protection, as Linux leaves them. A locked private mapping made
    /// writable is populated for writing, as `mprotect_fixup` does (so its
    /// pages stay resident and their copy-on-write is broken now, not at
    /// the next write).
    pub fn mprotect(&self, cpu: CpuId, addr: u64, len: u64, prot: Prot) -> SysResult<()> {
        let grows = prot.0 & (PROT_GROWSDOWN | PROT_GROWSUP);
        if grows == PROT_GROWSDOWN | PROT_GROWSUP {
            return Err(Errno::EINVAL);
        }
        let prot_bits = prot.0 & !grows;
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        if len == 0 {
            return Ok(());
        }
        let len = page_align(len).ok_or(Errno::ENOMEM)?;
        let end = addr.checked_add(len).filter(|e| *e > addr).ok_or(Errno::ENOMEM)?;
        if prot_bits & !(Prot::ALL | PROT_SEM) != 0 {
            return Err(Errno::EINVAL);
        }
        let prot = Prot(prot_bits & Prot::ALL);
        let mut st = self.write();
        st.live()?;
        let first = *st.vmas.find_from(addr).filter(|v| v.start < end).ok_or(Errno::ENOMEM)?;
        let mut start = addr;
        if grows == PROT_GROWSDOWN {
            start = first.start;
            if first.flags & vmflags::GROWSDOWN == 0 {
                return Err(Errno::EINVAL);
            }
        } else {
            if first.start > start {
                return Err(Errno::ENOMEM);
            }
            if grows == PROT_GROWSUP {
                // Linux would extend to the mapping's end, if it grew up.
                return Err(Errno::EINVAL);
            }
        }
        // The mappings from `start` up to the first hole or the first one
        // that may not take the protection.
        let mut at = start;
        let mut error = None;
        let mut populate = alloc::vec::Vec::new();
        for v in st.vmas.overlapping(start, end) {
            if v.start > at {
                error = Some(Errno::ENOMEM);
                break;
            }
            let may_write = !(v.is_shared() && st.files.get(&v.file).is_some_and(|c| !c.writable()));
            if prot.writable() && !may_write {
                error = Some(Errno::EACCES);
                break;
            }
            let (s, e) = (at, v.end.min(end));
            // `mprotect_fixup`: private memory made writable for the first
            // time is charged to the overcommit account.
            let charge = prot.writable()
                && v.flags & (vmflags::ACCOUNT | vmflags::NORESERVE | vmflags::SHARED) == 0
                && !v.prot.writable();
            if charge && !self.enough_memory(e - s) {
                error = Some(Errno::ENOMEM);
                break;
            }
            if v.flags & (vmflags::LOCKED | vmflags::SHARED) == vmflags::LOCKED && !v.prot.writable() && prot.writable()
            {
                populate.push((s, e));
            }
            at = e;
        }
        if at < end && error.is_none() {
            error = Some(Errno::ENOMEM);
        }
        if at > start {
            st.vmas.modify_range(start, at, |v| {
                v.prot = prot;
                if prot.writable() && v.flags & (vmflags::SHARED | vmflags::NORESERVE) == 0 {
                    v.flags |= vmflags::ACCOUNT;
                }
            });
            let mut g = MmuGather::new(self.sys(), cpu, self.id());
            change_protection(self, &mut g, start, at, prot);
            g.finish(self.cpumask());
        }
        drop(st);
        for (s, e) in populate {
            self.populate(cpu, s, e, prot, false);
        }
        error.map_or(Ok(()), Err)
    }
}

/// Rewrite the PTEs of `[start, end)` for `prot`; a PTE that loses a
/// permission is added to the gather's flush range.
///
/// Enters with: the mmap lock held for writing. Each PTE is updated by a
/// CAS loop, because the MMU may set A/D bits in it concurrently.
fn change_protection(mm: &Mm, g: &mut MmuGather<'_>, start: u64, end: u64, prot: Prot) {
    let sys = &**mm.sys();
    // SAFETY: the caller holds the mmap write lock for the whole walk;
    // slots are used only inside their step.
    unsafe {
        walk_range(sys, mm.root(), VirtAddr::new_truncate(start), VirtAddr::new_truncate(end), |step| {
            if let Step::Ptes(r) = step {
                for (va, slot) in r.slots() {
                    let mut old = load_entry(slot);
                    loop {
                        if !old.maps_frame() {
                            break;
                        }
                        let new = leaf_bits(sys, prot, old.pfn(), old);
                        if new == old {
                            break;
                        }
                        match cas_entry(slot, old, new) {
                            Ok(_) => {
                                let lost = (old.is_present() && !new.is_present())
                                    || (old.is_writable() && !new.is_writable())
                                    || (new.0 & Pte::NX != 0 && old.0 & Pte::NX == 0);
                                if lost {
                                    g.add_range(va, va + PAGE_SIZE);
                                }
                                break;
                            }
                            Err(now) => old = now,
                        }
                    }
                }
            }
            // 2 MiB leaves: nothing creates them yet; see `cursor`.
        })
    };
}
