//! madvise.

use alloc::vec::Vec;

use super::vma::{vmflags, Vma};
use super::{page_align, zap, Mm};
use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::errno::{Errno, SysResult};
use crate::fault::{populate_page, Access, FaultError, PopulateError};
use crate::mm::flags::{Advice, Prot};
use crate::platform::CpuId;
use crate::tlb::MmuGather;

impl Mm {
    /// `madvise(addr, len, advice)`.
    ///
    /// `EINVAL` for unknown advice, an unaligned address or an overflowing
    /// length; a zero length succeeds. The range is advised VMA by VMA, as
    /// Linux's `madvise_walk_vmas` does: the first VMA that refuses the
    /// advice ends the call with its error, the VMAs before it keeping what
    /// was done to them; a range with unmapped parts is advised where
    /// mapped and then fails with `ENOMEM`.
    /// `MADV_DONTNEED` zaps the range (private anonymous pages read back as
    /// zeroes), under the mmap read lock as Linux does; `MADV_DONTNEED` on a
    /// locked VMA → `EINVAL`. `MADV_RANDOM`/`SEQUENTIAL`/`NORMAL` and the
    /// huge-page hints set VMA flags (random turns prefault off).
    /// The fork and dump hints set VMA flags for fork to honour
    /// (`WIPEONFORK` on a shared or file mapping → `EINVAL`);
    /// `POPULATE_READ`/`WRITE` fault the range in. `WILLNEED`, `COLD`,
    /// `PAGEOUT`, `FREE` and `COLLAPSE` have nothing to act on until swap,
    /// reclaim and huge pages exist: they do nothing, but refuse the VMAs
    /// Linux refuses (see `check_lazy`). `REMOVE` gives Linux's errors but
    /// punches no hole yet (see `remove`).
    pub fn madvise(&self, cpu: CpuId, addr: u64, len: u64, advice: u32) -> SysResult<()> {
        let adv = Advice::from_raw(advice).ok_or(Errno::EINVAL)?;
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let alen = page_align(len).ok_or(Errno::EINVAL)?;
        if len != 0 && alen == 0 {
            return Err(Errno::EINVAL);
        }
        let end = addr.checked_add(alen).ok_or(Errno::EINVAL)?;
        if end == addr {
            return Ok(());
        }
        let (set, clear) = match adv {
            Advice::Normal => (0, vmflags::RANDOM | vmflags::SEQUENTIAL),
            Advice::Random => (vmflags::RANDOM, vmflags::SEQUENTIAL),
            Advice::Sequential => (vmflags::SEQUENTIAL, vmflags::RANDOM),
            Advice::HugePage => (vmflags::HUGEPAGE, vmflags::NOHUGEPAGE),
            Advice::NoHugePage => (vmflags::NOHUGEPAGE, vmflags::HUGEPAGE),
            Advice::DontFork => (vmflags::DONTFORK, 0),
            Advice::DoFork => (0, vmflags::DONTFORK),
            Advice::WipeOnFork => (vmflags::WIPEONFORK, 0),
            Advice::KeepOnFork => (0, vmflags::WIPEONFORK),
            Advice::DontDump => (vmflags::DONTDUMP, 0),
            Advice::DoDump => (0, vmflags::DONTDUMP),
            Advice::Mergeable => (vmflags::MERGEABLE, 0),
            Advice::Unmergeable => (0, vmflags::MERGEABLE),
            Advice::DontNeed => return self.dontneed(cpu, addr, end, false),
            Advice::DontNeedLocked => return self.dontneed(cpu, addr, end, true),
            Advice::Remove => return self.remove(cpu, addr, end),
            Advice::PopulateRead | Advice::PopulateWrite => {
                return self.populate_advice(cpu, addr, end, adv == Advice::PopulateWrite)
            }
            Advice::WillNeed | Advice::Cold | Advice::PageOut | Advice::Free | Advice::Collapse => {
                let st = self.read(cpu);
                st.live()?;
                return walk_vmas(st.vmas.overlapping(addr, end), addr, end, |v, s, e| {
                    let shmem = st.files.get(&v.file).map(|c| c.is_shmem());
                    check_lazy(adv, v, shmem, s, e)
                });
            }
        };
        let mut st = self.write();
        st.live()?;
        walk_vmas(st.vmas.overlapping(addr, end), addr, end, |v, s, e| {
            // `madvise_vma_behavior`: MADV_WIPEONFORK is only for
            // anonymous memory, and shared anonymous memory is shmem there
            // (it has a `vm_file`).
            if adv == Advice::WipeOnFork && (v.file != 0 || v.is_shared()) {
                return Err(Errno::EINVAL);
            }
            // Droppable memory stays wiped on fork and out of dumps.
            if matches!(adv, Advice::KeepOnFork | Advice::DoDump) && v.flags & vmflags::DROPPABLE != 0 {
                return Err(Errno::EINVAL);
            }
            st.vmas.modify_range(s, e, |v| v.flags = (v.flags | set) & !clear);
            Ok(())
        })
    }

    /// `MADV_POPULATE_READ`/`WRITE`: fault every page in, VMA by VMA as
    /// Linux's `madvise_populate` does, so the pages before a failure stay
    /// populated. A hole is `ENOMEM`; a mapping that does not allow the
    /// access (a write to a read-only mapping, any access to `PROT_NONE`)
    /// is `EINVAL`; a page the mapping cannot back (`SIGBUS`) is `EFAULT`;
    /// no memory is `ENOMEM`. A mapping changed by another CPU meanwhile is
    /// judged as it is now: unmapped → `ENOMEM`, made inaccessible →
    /// `EINVAL`.
    fn populate_advice(&self, cpu: CpuId, addr: u64, end: u64, write: bool) -> SysResult<()> {
        let access = if write { Access::Write } else { Access::Read };
        let mut a = addr;
        while a < end {
            let vma_end = {
                let st = self.read(cpu);
                st.live()?;
                let v = st.vmas.find(a).ok_or(Errno::ENOMEM)?;
                // `PROT_READ` itself for a read (Linux's `check_vma_flags`
                // without FOLL_FORCE), though x86 lets write or exec read.
                if !(if write { v.prot.writable() } else { v.prot.contains(Prot::READ) }) {
                    return Err(Errno::EINVAL);
                }
                v.end.min(end)
            };
            while a < vma_end {
                match populate_page(self, cpu, VirtAddr::new_truncate(a), access) {
                    Ok(()) => a += PAGE_SIZE,
                    // Changed by another CPU since the check above.
                    Err(PopulateError::Unmapped) => return Err(Errno::ENOMEM),
                    Err(PopulateError::Access) => return Err(Errno::EINVAL),
                    Err(PopulateError::Fault(FaultError::Oom)) => return Err(Errno::ENOMEM),
                    Err(PopulateError::Fault(_)) => return Err(Errno::EFAULT),
                }
            }
        }
        Ok(())
    }

    /// `MADV_REMOVE`, checked VMA by VMA as Linux's `madvise_remove`: the
    /// first mapping of the range decides — locked, or private anonymous
    /// (no backing store to punch) → `EINVAL`; a private file mapping, or a
    /// shared one of a file not open for writing → `EACCES`. A range with
    /// no mapping at all is `ENOMEM`. Linux then punches a hole in the file
    /// (`fallocate(FALLOC_FL_PUNCH_HOLE)`); the page cache cannot punch
    /// holes yet, so a shared writable mapping gets `EOPNOTSUPP`, which is
    /// what Linux's fallocate answers for a file system without hole
    /// punching. Nothing is changed in any case.
    fn remove(&self, cpu: CpuId, addr: u64, end: u64) -> SysResult<()> {
        let st = self.read(cpu);
        st.live()?;
        let Some(v) = st.vmas.overlapping(addr, end).into_iter().next() else {
            return Err(Errno::ENOMEM);
        };
        if v.flags & vmflags::LOCKED != 0 {
            return Err(Errno::EINVAL);
        }
        let Some(cache) = st.files.get(&v.file) else {
            return Err(Errno::EINVAL);
        };
        if !(v.is_shared() && cache.writable()) {
            return Err(Errno::EACCES);
        }
        Err(Errno::EOPNOTSUPP)
    }

    /// `MADV_DONTNEED`(`_LOCKED`), VMA by VMA as Linux's
    /// `madvise_walk_vmas`: a locked VMA (for plain `DONTNEED`,
    /// `madvise_dontneed_free_valid_vma`) ends the call with `EINVAL`, the
    /// VMAs before it already zapped.
    fn dontneed(&self, cpu: CpuId, addr: u64, end: u64, locked_too: bool) -> SysResult<()> {
        let st = self.read(cpu);
        st.live()?;
        let mut g = MmuGather::new(self.sys(), cpu, self.id());
        let r = walk_vmas(st.vmas.overlapping(addr, end), addr, end, |v, s, e| {
            if !locked_too && v.flags & vmflags::LOCKED != 0 {
                return Err(Errno::EINVAL);
            }
            zap::zap_range(self, &mut g, s, e);
            Ok(())
        });
        // What was zapped before a failure is flushed all the same.
        g.finish(self.cpumask());
        r
    }
}

/// Linux's `madvise_walk_vmas`: `visit` each VMA of `vmas` (those
/// overlapping `[addr, end)`, in order) with its part of the range; the
/// first error is returned at once, the VMAs after it untouched. A hole in
/// the range is not an error until the end: then `ENOMEM`.
fn walk_vmas(
    vmas: Vec<Vma>,
    addr: u64,
    end: u64,
    mut visit: impl FnMut(&Vma, u64, u64) -> SysResult<()>,
) -> SysResult<()> {
    let mut at = addr;
    let mut unmapped = false;
    for v in &vmas {
        let (s, e) = (v.start.max(addr), v.end.min(end));
        unmapped |= s > at;
        visit(v, s, e)?;
        at = e;
    }
    if unmapped || at < end {
        Err(Errno::ENOMEM)
    } else {
        Ok(())
    }
}

/// The checks Linux makes on each VMA for the advice oxmm has nothing to
/// act on yet (`WILLNEED`, `COLD`, `PAGEOUT`, `FREE`, `COLLAPSE`), so that
/// doing nothing still gives Linux's errno; `[s, e)` is the VMA's part of
/// the range and `shmem` whether its object is shmem (`None`: anonymous).
fn check_lazy(adv: Advice, v: &Vma, shmem: Option<bool>, s: u64, e: u64) -> SysResult<()> {
    let locked = v.flags & vmflags::LOCKED != 0;
    match adv {
        // `madvise_willneed` reads ahead or swaps in; it refuses nothing.
        Advice::WillNeed => Ok(()),
        // `can_madv_lru_vma`: no locked (or PFN-map, hugetlb) VMA.
        Advice::Cold | Advice::PageOut if locked => Err(Errno::EINVAL),
        Advice::Cold | Advice::PageOut => Ok(()),
        // `madvise_dontneed_free_valid_vma` refuses a locked VMA, then
        // `madvise_free_single_vma` works only on anonymous VMAs
        // (`vma_is_anonymous`: shared anonymous memory is shmem).
        Advice::Free if locked || v.file != 0 => Err(Errno::EINVAL),
        Advice::Free => Ok(()),
        Advice::Collapse => check_collapse(v, shmem, s, e),
        _ => Ok(()),
    }
}

/// `MADV_COLLAPSE`'s checks in Linux's `madvise_collapse`, before it
/// collapses anything. First `thp_vma_allowable_order(TVA_FORCED_COLLAPSE)`,
/// which ignores the THP sysfs settings but refuses `MADV_NOHUGEPAGE`, a
/// regular file (no `CONFIG_READ_ONLY_THP_FOR_FS` on the reference kernel),
/// and a VMA without one PMD-aligned 2 MiB block inside it (for shmem, at
/// a 2 MiB-aligned object offset too: `thp_vma_suitable_order`). Then a
/// range that neither holds a 2 MiB block nor is within one: `hstart` (the
/// start rounded up to 2 MiB) past `hend` (the end rounded down) makes the
/// block count wrap, so the call fails with its initial `SCAN_FAIL` →
/// `EINVAL`; `hstart == hend` collapses nothing and succeeds. Linux then
/// collapses each block (failing with `EINVAL` where there is no page
/// table, and refusing an anonymous VMA never faulted in, which has no
/// anon_vma); oxmm has no huge pages to collapse into and succeeds there.
/// Checked with a C program on Linux 6.18.
fn check_collapse(v: &Vma, shmem: Option<bool>, s: u64, e: u64) -> SysResult<()> {
    const HPAGE: u64 = 2 << 20;
    if v.flags & vmflags::NOHUGEPAGE != 0 || shmem == Some(false) {
        return Err(Errno::EINVAL);
    }
    if shmem == Some(true) && !((v.start >> 12).wrapping_sub(v.pgoff)).is_multiple_of(HPAGE >> 12) {
        return Err(Errno::EINVAL);
    }
    let last = v.end.saturating_sub(HPAGE) & !(HPAGE - 1);
    if v.end < HPAGE || last < v.start {
        return Err(Errno::EINVAL);
    }
    let hstart = s.next_multiple_of(HPAGE);
    let hend = e & !(HPAGE - 1);
    if hstart > hend {
        return Err(Errno::EINVAL);
    }
    Ok(())
}
