//! mincore.

use alloc::vec::Vec;

use super::{Mm, TASK_SIZE};
use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::arch::load_entry;
use crate::errno::{Errno, SysResult};
use crate::pgtable::cursor::{walk_range, Step};
use crate::platform::CpuId;

impl Mm {
    /// `mincore(addr, len)`, reporting each resident page to `resident`
    /// (its index from `addr`); returns the number of pages in the range.
    ///
    /// `EINVAL` for an unaligned address; `ENOMEM` if the range leaves the
    /// address space or any page of it is unmapped. A page mapped to the
    /// zero page, or PROT_NONE but holding a frame, is resident, as on
    /// Linux. Nothing is allocated, so a huge range costs only its walk
    /// (holes without page tables are skipped).
    pub fn mincore_visit(&self, cpu: CpuId, addr: u64, len: u64, mut resident: impl FnMut(u64)) -> SysResult<u64> {
        let pages = check_args(addr, len)?;
        let end = addr + pages * PAGE_SIZE;
        let st = self.read(cpu);
        st.live()?;
        if !st.vmas.covers(addr, end) {
            return Err(Errno::ENOMEM);
        }
        let sys = &**self.sys();
        // Pages with a PTE holding a frame are resident.
        let mut seen = alloc::collections::BTreeSet::new();
        // SAFETY: the mmap read lock `st` is held for the walk; slots are
        // used only inside their step.
        unsafe {
            walk_range(sys, self.root(), VirtAddr::new_truncate(addr), VirtAddr::new_truncate(end), |step| match step {
                Step::Ptes(r) => {
                    for (va, slot) in r.slots() {
                        if load_entry(slot).maps_frame() {
                            seen.insert((va.as_u64() - addr) / PAGE_SIZE);
                        }
                    }
                }
                Step::Huge { start, .. } => {
                    let s = start.as_u64().max(addr);
                    let e = (start.as_u64() + (2 << 20)).min(end);
                    for p in (s..e).step_by(PAGE_SIZE as usize) {
                        seen.insert((p - addr) / PAGE_SIZE);
                    }
                }
            })
        };
        // In a file or shmem mapping, a page is also resident if it is in
        // the page cache (Linux's `mincore_page`).
        for v in st.vmas.overlapping(addr, end).iter().filter(|v| v.file != 0) {
            let Some(cache) = st.files.get(&v.file) else { continue };
            let (s, e) = (v.start.max(addr), v.end.min(end));
            for a in (s..e).step_by(PAGE_SIZE as usize) {
                let i = (a - addr) / PAGE_SIZE;
                if !seen.contains(&i) && cache.lookup(v.index_of(a)).is_some() {
                    seen.insert(i);
                }
            }
        }
        for i in seen {
            resident(i);
        }
        Ok(pages)
    }

    /// `mincore(addr, len)`: one byte per page, 1 if resident. Errors as
    /// [`Mm::mincore_visit`]; a vector that cannot be allocated is `ENOMEM`.
    pub fn mincore(&self, cpu: CpuId, addr: u64, len: u64) -> SysResult<Vec<u8>> {
        // The arguments first, as Linux's `mincore` checks them before it
        // looks at the result vector: an unaligned address is `EINVAL`
        // whatever the length.
        let pages = usize::try_from(check_args(addr, len)?).map_err(|_| Errno::ENOMEM)?;
        let mut out = Vec::new();
        out.try_reserve_exact(pages).map_err(|_| Errno::ENOMEM)?;
        // Validate before touching the vector's memory.
        let mut hits = Vec::new();
        self.mincore_visit(cpu, addr, len, |i| hits.push(i))?;
        out.resize(pages, 0);
        for i in hits {
            out[i as usize] = 1;
        }
        Ok(out)
    }

    /// `mincore(addr, len)`, counting resident pages only.
    pub fn mincore_count(&self, cpu: CpuId, addr: u64, len: u64) -> SysResult<u64> {
        let mut n = 0;
        self.mincore_visit(cpu, addr, len, |_| n += 1)?;
        Ok(n)
    }
}

/// The argument checks of Linux's `mincore`, in its order: an unaligned
/// address → `EINVAL`, then a range that leaves the address space
/// (`access_ok`) → `ENOMEM`. Returns the number of pages.
fn check_args(addr: u64, len: u64) -> SysResult<u64> {
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    if addr > TASK_SIZE || len > TASK_SIZE - addr {
        return Err(Errno::ENOMEM);
    }
    Ok(len.div_ceil(PAGE_SIZE))
}
