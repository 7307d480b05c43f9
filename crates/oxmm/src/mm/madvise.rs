//! madvise.

use super::vma::vmflags;
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
    /// length; a zero length succeeds; a range with unmapped parts is
    /// advised where mapped and then fails with `ENOMEM`, as on Linux.
    /// `MADV_DONTNEED` zaps the range (private anonymous pages read back as
    /// zeroes), under the mmap read lock as Linux does; `MADV_DONTNEED` on a
    /// locked VMA → `EINVAL`. `MADV_RANDOM`/`SEQUENTIAL`/`NORMAL` and the
    /// huge-page hints set VMA flags (random turns prefault off).
    /// The fork and dump hints set VMA flags for fork to honour;
    /// `POPULATE_READ`/`WRITE` fault the range in. `WILLNEED`, `COLD`,
    /// `PAGEOUT`, `FREE` and `COLLAPSE` have nothing to act on until swap,
    /// reclaim and huge pages exist, and succeed. `REMOVE` gives Linux's
    /// errors but punches no hole yet (see `remove`).
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
                return if st.vmas.covers(addr, end) { Ok(()) } else { Err(Errno::ENOMEM) };
            }
        };
        let mut st = self.write();
        st.live()?;
        let covered = st.vmas.covers(addr, end);
        for v in st.vmas.overlapping(addr, end) {
            let (s, e) = (v.start.max(addr), v.end.min(end));
            st.vmas.modify_range(s, e, |v| v.flags = (v.flags | set) & !clear);
        }
        if covered {
            Ok(())
        } else {
            Err(Errno::ENOMEM)
        }
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

    fn dontneed(&self, cpu: CpuId, addr: u64, end: u64, locked_too: bool) -> SysResult<()> {
        let st = self.read(cpu);
        st.live()?;
        let vmas = st.vmas.overlapping(addr, end);
        if !locked_too && vmas.iter().any(|v| v.flags & vmflags::LOCKED != 0) {
            return Err(Errno::EINVAL);
        }
        let mut g = MmuGather::new(self.sys(), cpu, self.id());
        for v in &vmas {
            zap::zap_range(self, &mut g, v.start.max(addr), v.end.min(end));
        }
        g.finish(self.cpumask());
        if st.vmas.covers(addr, end) {
            Ok(())
        } else {
            Err(Errno::ENOMEM)
        }
    }
}
