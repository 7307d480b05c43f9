//! msync: write shared file pages back.

use super::{page_align_wrapping, Mm};
use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::arch::{cas_entry, load_entry, Pte};
use crate::errno::{Errno, SysResult};
use crate::pgtable::cursor::{walk_range, Step};
use crate::platform::CpuId;
use crate::sync::Ordering;
use crate::tlb::MmuGather;

/// `MS_ASYNC`.
pub const MS_ASYNC: u32 = 1;
/// `MS_INVALIDATE`.
pub const MS_INVALIDATE: u32 = 2;
/// `MS_SYNC`.
pub const MS_SYNC: u32 = 4;

impl Mm {
    /// `msync(addr, len, flags)`.
    ///
    /// `EINVAL` for an unaligned address, unknown flags, or both `MS_ASYNC`
    /// and `MS_SYNC`; a length that rounds up to 0 (within a page of 2^64)
    /// succeeds, one that runs past 2^64 is `ENOMEM`; `EBUSY` for
    /// `MS_INVALIDATE` on a locked mapping;
    /// `ENOMEM` if part of the range is unmapped (after syncing the mapped
    /// part, as Linux does). For every shared file mapping in the range,
    /// the dirty bits of its PTEs move to the page cache (the PTEs become
    /// clean and read-only, so the next write faults and dirties the page
    /// again — Linux's `page_mkclean`), then the dirty pages of the range
    /// are written to the file. `MS_ASYNC` does the same work (Linux only
    /// schedules it; doing it now is a correct implementation).
    pub fn msync(&self, cpu: CpuId, addr: u64, len: u64, flags: u32) -> SysResult<()> {
        if flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0 || !addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        if flags & MS_ASYNC != 0 && flags & MS_SYNC != 0 {
            return Err(Errno::EINVAL);
        }
        // Linux rounds with `len = (len + ~PAGE_MASK) & PAGE_MASK` in
        // wrapping arithmetic, so a length within a page of 2^64 rounds to
        // 0 and succeeds (`end == start`); only an end that wraps past the
        // start is `ENOMEM`.
        let len = page_align_wrapping(len);
        let end = addr.wrapping_add(len);
        if end < addr {
            return Err(Errno::ENOMEM);
        }
        if end == addr {
            return Ok(());
        }
        let st = self.read(cpu);
        st.live()?;
        let vmas = st.vmas.overlapping(addr, end);
        if flags & MS_INVALIDATE != 0 && vmas.iter().any(|v| v.flags & super::vma::vmflags::LOCKED != 0) {
            return Err(Errno::EBUSY);
        }
        let sys = &**self.sys();
        for v in vmas.iter().filter(|v| v.file != 0 && v.is_shared()) {
            let Some(cache) = st.files.get(&v.file) else { continue };
            let (s, e) = (v.start.max(addr), v.end.min(end));
            let mut g = MmuGather::new(sys, cpu, self.id());
            // SAFETY: the mmap read lock `st` is held for the walk; slots are
            // used only inside their step.
            unsafe {
                walk_range(sys, self.root(), VirtAddr::new_truncate(s), VirtAddr::new_truncate(e), |step| {
                    let Step::Ptes(r) = step else { return };
                    for (va, slot) in r.slots() {
                        let mut old = load_entry(slot);
                        while old.is_present() && old.is_dirty() {
                            match cas_entry(slot, old, old.without(Pte::DIRTY | Pte::WRITABLE)) {
                                Ok(_) => {
                                    let f = sys.phys.frame(old.pfn());
                                    cache.mark_dirty(f.index.load(Ordering::Relaxed));
                                    g.add_range(va, va + PAGE_SIZE);
                                    break;
                                }
                                Err(now) => old = now,
                            }
                        }
                    }
                });
            }
            // No write may go through a stale writable translation between
            // the write-back and the next fault.
            g.finish(self.cpumask());
            cache.writeback(sys, v.index_of(s), v.index_of(e - PAGE_SIZE)).map_err(|_| Errno::EIO)?;
        }
        if st.vmas.covers(addr, end) {
            Ok(())
        } else {
            Err(Errno::ENOMEM)
        }
    }
}
