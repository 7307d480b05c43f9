//! madvise.

use super::vma::vmflags;
use super::{page_align, zap, Mm};
use crate::addr::PAGE_SIZE;
use crate::errno::{Errno, SysResult};
use crate::mm::flags::Advice;
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
    /// `WILLNEED`, `COLD`, `PAGEOUT` and `FREE` have nothing to act on until
    /// swap and reclaim exist, and succeed.
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
            Advice::DontNeed => return self.dontneed(cpu, addr, end),
            Advice::WillNeed | Advice::Cold | Advice::PageOut | Advice::Free => {
                let st = self.read();
                return if st.vmas.covers(addr, end) { Ok(()) } else { Err(Errno::ENOMEM) };
            }
        };
        let mut st = self.write();
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

    fn dontneed(&self, cpu: CpuId, addr: u64, end: u64) -> SysResult<()> {
        let st = self.read();
        let vmas = st.vmas.overlapping(addr, end);
        if vmas.iter().any(|v| v.flags & vmflags::LOCKED != 0) {
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
