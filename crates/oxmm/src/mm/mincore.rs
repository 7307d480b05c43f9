//! mincore.

use alloc::vec;
use alloc::vec::Vec;

use super::{Mm, TASK_SIZE};
use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::arch::load_entry;
use crate::errno::{Errno, SysResult};
use crate::pgtable::cursor::{walk_range, Step};
use crate::platform::CpuId;

impl Mm {
    /// `mincore(addr, len)`: one byte per page, 1 if resident.
    ///
    /// `EINVAL` for an unaligned address; `ENOMEM` if the range leaves the
    /// address space or any page of it is unmapped. A page mapped to the
    /// zero page, or PROT_NONE but holding a frame, is resident, as on Linux.
    pub fn mincore(&self, cpu: CpuId, addr: u64, len: u64) -> SysResult<Vec<u8>> {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        if addr > TASK_SIZE || len > TASK_SIZE - addr {
            return Err(Errno::ENOMEM);
        }
        let pages = len.div_ceil(PAGE_SIZE);
        let end = addr + pages * PAGE_SIZE;
        let st = self.read(cpu);
        if !st.vmas.covers(addr, end) {
            return Err(Errno::ENOMEM);
        }
        let mut out = vec![0u8; pages as usize];
        let sys = &**self.sys();
        walk_range(sys, self.root(), VirtAddr::new_truncate(addr), VirtAddr::new_truncate(end), |step| match step {
            Step::Ptes(r) => {
                for (va, slot) in r.slots() {
                    if load_entry(slot).maps_frame() {
                        out[((va.as_u64() - addr) / PAGE_SIZE) as usize] = 1;
                    }
                }
            }
            Step::Huge { start, .. } => {
                let s = start.as_u64().max(addr);
                let e = (start.as_u64() + (2 << 20)).min(end);
                for p in (s..e).step_by(PAGE_SIZE as usize) {
                    out[((p - addr) / PAGE_SIZE) as usize] = 1;
                }
            }
        });
        Ok(out)
    }
}
