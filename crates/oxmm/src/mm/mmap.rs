//! mmap, munmap and brk.

use super::vma::{vmflags, Vma};
use super::{page_align, zap, Mm, MmState, MMAP_BASE, MMAP_MIN_ADDR, TASK_SIZE, USER_TOP};
use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::errno::{Errno, SysResult};
use crate::fault::{populate_page, Access};
use crate::mm::flags::{MapFlags, Prot};
use crate::pagecache::PageCache;
use crate::pgtable::cursor::free_tables;
use crate::platform::CpuId;
use crate::tlb::MmuGather;
use alloc::sync::Arc;

/// The flags `MAP_SHARED_VALIDATE` accepts: Linux's `LEGACY_MAP_MASK`
/// (`MAP_SYNC` only for DAX files, which there are none of here).
const LEGACY_MAP_MASK: u32 = MapFlags::SHARED.0
    | MapFlags::PRIVATE.0
    | MapFlags::FIXED.0
    | MapFlags::ANONYMOUS.0
    | MapFlags::DENYWRITE.0
    | MapFlags::EXECUTABLE.0
    | MapFlags::UNINITIALIZED.0
    | MapFlags::GROWSDOWN.0
    | MapFlags::LOCKED.0
    | MapFlags::NORESERVE.0
    | MapFlags::POPULATE.0
    | MapFlags::NONBLOCK.0
    | MapFlags::STACK.0
    | MapFlags::HUGETLB.0;

/// The 2 MiB huge page `MAP_HUGETLB` maps.
const HUGE: u64 = 2 << 20;

impl Mm {
    /// `mmap(addr, len, prot, flags, -1, 0)` for anonymous memory.
    ///
    /// Linux's checks, in Linux 6.18's order (`ksys_mmap_pgoff`, `do_mmap`,
    /// `__get_unmapped_area`, the sharing type, then `__mmap_region`'s
    /// accounting): no `MAP_ANONYMOUS` → `EBADF` (there is no file
    /// descriptor); `len == 0` → `EINVAL`; a length that overflows when
    /// page-aligned (huge-page-aligned for `MAP_HUGETLB`) or exceeds the
    /// address space → `ENOMEM`; `MAP_FIXED` beyond the address space →
    /// `ENOMEM`, at an unaligned address → `EINVAL`, below `mmap_min_addr`
    /// → `EPERM`; `MAP_FIXED_NOREPLACE` over a mapping → `EEXIST`; no free
    /// range → `ENOMEM`; a sharing type other than private, shared or
    /// droppable → `EINVAL` (anonymous `MAP_SHARED_VALIDATE` included, as
    /// Linux has it), as is `MAP_GROWSDOWN` on shared memory; and last the
    /// overcommit charge → `ENOMEM`. A hint is rounded down to a page and
    /// raised to `mmap_min_addr` (`round_hint_to_min`). Unknown flag bits
    /// are ignored; unknown `prot` bits are ignored too, so `PROT_SEM` or
    /// `0x10` alone give a mapping with no access, as on Linux.
    /// `MAP_SHARED | MAP_ANONYMOUS` is shared anonymous memory (a shmem
    /// object of the mapping's size); `MAP_DROPPABLE` private memory that
    /// fork does not copy (and that oxmm never drops); `MAP_HUGETLB` has
    /// no huge page pool (`ENOMEM` once its other checks pass).
    /// `MAP_POPULATE` (and `MAP_LOCKED`) prefault every page.
    pub fn mmap(&self, cpu: CpuId, addr: u64, len: u64, prot: Prot, flags: MapFlags) -> SysResult<VirtAddr> {
        if !flags.contains(MapFlags::ANONYMOUS) {
            return Err(Errno::EBADF);
        }
        self.mmap_object(cpu, addr, len, prot, flags, None)
    }

    /// `mmap(addr, len, prot, flags, fd, offset)` of a file whose page cache
    /// is `file` (`MAP_ANONYMOUS` is ignored, as Linux ignores the fd when
    /// it is set — here the file wins). An unaligned offset → `EINVAL`;
    /// `MAP_HUGETLB` (not a hugetlbfs file) → `EINVAL`; a mapping that would
    /// end past the largest file offset → `EOVERFLOW`; a shared writable
    /// mapping of a file that cannot be written → `EACCES`;
    /// `MAP_SHARED_VALIDATE` with a flag outside `LEGACY_MAP_MASK` →
    /// `EOPNOTSUPP`; `MAP_GROWSDOWN` → `EINVAL`; otherwise the checks of
    /// [`Mm::mmap`]. A mapping past the end of the file is allowed;
    /// accesses there get `SIGBUS`.
    #[allow(clippy::too_many_arguments)] // Linux's six arguments, the mm and the CPU.
    pub fn mmap_file(
        &self,
        cpu: CpuId,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: &Arc<PageCache>,
        offset: u64,
    ) -> SysResult<VirtAddr> {
        if !offset.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        self.mmap_object(cpu, addr, len, prot, flags, Some((file, offset)))
    }

    fn mmap_object(
        &self,
        cpu: CpuId,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(&Arc<PageCache>, u64)>,
    ) -> SysResult<VirtAddr> {
        // `ksys_mmap_pgoff`: MAP_HUGETLB of a file that is not hugetlbfs.
        let hugetlb = flags.contains(MapFlags::HUGETLB);
        if hugetlb && file.is_some() {
            return Err(Errno::EINVAL);
        }
        // `ksys_mmap_pgoff` rounds a hugetlb length to the huge page, and
        // the rounding wraps: to 0, which `do_mmap` then refuses.
        const HUGE_MASK: u64 = HUGE - 1;
        let len = if hugetlb { len.wrapping_add(HUGE_MASK) & !HUGE_MASK } else { len };
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let prot = Prot(prot.0 & Prot::ALL);
        let fixed = flags.contains(MapFlags::FIXED) || flags.contains(MapFlags::FIXED_NOREPLACE);
        // `round_hint_to_min`: a hint is rounded down to a page, and one
        // below mmap_min_addr raised to it.
        let hint = match addr & !(PAGE_SIZE - 1) {
            h if fixed || h == 0 => h,
            h => h.max(MMAP_MIN_ADDR),
        };
        let len = page_align(len).filter(|l| *l != 0).ok_or(Errno::ENOMEM)?;
        let pgoff = file.map_or(0, |(_, offset)| offset / PAGE_SIZE);
        if file.is_some() && pgoff.checked_add(len / PAGE_SIZE).is_none() {
            return Err(Errno::EOVERFLOW);
        }
        // `__get_unmapped_area`: the length, then a fixed address's range,
        // alignment (a huge page's for hugetlb) and mmap_min_addr.
        if len > TASK_SIZE {
            return Err(Errno::ENOMEM);
        }
        if fixed {
            // hugetlb's `get_unmapped_area` refuses a misaligned fixed
            // address before the range is checked.
            if hugetlb && !addr.is_multiple_of(HUGE) {
                return Err(Errno::EINVAL);
            }
            if addr > TASK_SIZE - len {
                return Err(Errno::ENOMEM);
            }
            if !addr.is_multiple_of(PAGE_SIZE) {
                return Err(Errno::EINVAL);
            }
            if addr < MMAP_MIN_ADDR {
                return Err(Errno::EPERM);
            }
        }
        let typ = flags.0 & MapFlags::TYPE_MASK;
        let mut vflags = vmflags::ANON;
        if flags.contains(MapFlags::LOCKED) {
            vflags |= vmflags::LOCKED;
        }
        let growsdown = flags.contains(MapFlags::GROWSDOWN);
        if growsdown {
            vflags |= vmflags::GROWSDOWN;
        }
        let mut st = self.write();
        st.live()?;
        let start = if fixed {
            if flags.contains(MapFlags::FIXED_NOREPLACE) && !st.vmas.overlapping(addr, addr + len).is_empty() {
                return Err(Errno::EEXIST);
            }
            addr
        } else if hint >= MMAP_MIN_ADDR && hint <= TASK_SIZE - len && st.vmas.overlapping(hint, hint + len).is_empty() {
            hint
        } else {
            st.vmas.find_gap_topdown(len, MMAP_MIN_ADDR, MMAP_BASE).ok_or(Errno::ENOMEM)?
        };
        // `do_mmap`'s checks of the file and of the sharing type, in its
        // order (a hugetlb mapping takes the file path: its memory is a
        // hugetlbfs file).
        let shared = if let Some((f, _)) = file {
            // `file_mmap_ok`: the mapping must end below the largest file
            // offset (`MAX_LFS_FILESIZE`), in Linux's arithmetic.
            const MAX_LFS_FILESIZE: u64 = i64::MAX as u64;
            if len > MAX_LFS_FILESIZE || pgoff > (MAX_LFS_FILESIZE - len) >> 12 {
                return Err(Errno::EOVERFLOW);
            }
            let shared = match typ {
                t if t == MapFlags::PRIVATE.0 => false,
                t if t == MapFlags::SHARED.0 || t == MapFlags::SHARED_VALIDATE.0 => {
                    if t == MapFlags::SHARED_VALIDATE.0 && flags.0 & !LEGACY_MAP_MASK != 0 {
                        return Err(Errno::EOPNOTSUPP);
                    }
                    if prot.writable() && !f.writable() {
                        return Err(Errno::EACCES);
                    }
                    true
                }
                _ => return Err(Errno::EINVAL),
            };
            if growsdown {
                return Err(Errno::EINVAL);
            }
            shared
        } else if hugetlb {
            if typ != MapFlags::PRIVATE.0 && typ != MapFlags::SHARED.0 && typ != MapFlags::SHARED_VALIDATE.0 {
                return Err(Errno::EINVAL);
            }
            if growsdown {
                return Err(Errno::EINVAL);
            }
            // The pool is empty (no `nr_hugepages`): the reservation fails.
            return Err(Errno::ENOMEM);
        } else {
            match typ {
                t if t == MapFlags::PRIVATE.0 => false,
                t if t == MapFlags::SHARED.0 => {
                    if growsdown {
                        return Err(Errno::EINVAL);
                    }
                    true
                }
                t if t == MapFlags::DROPPABLE.0 => {
                    // Private memory the kernel may drop (oxmm never does,
                    // which the contract allows) and a child does not see;
                    // never charged (Linux sets VM_NORESERVE).
                    if flags.contains(MapFlags::LOCKED) || growsdown {
                        return Err(Errno::EINVAL);
                    }
                    vflags |= vmflags::DROPPABLE | vmflags::WIPEONFORK | vmflags::DONTDUMP | vmflags::NORESERVE;
                    false
                }
                _ => return Err(Errno::EINVAL),
            }
        };
        // Linux's heuristic overcommit (`overcommit_memory=0`), charged in
        // `__mmap_region` (private writable memory) and by shmem for shared
        // anonymous memory whatever its protection: more than all of memory
        // (and swap, of which there is none) is refused outright, unless
        // MAP_NORESERVE.
        let accountable = (prot.writable() && !shared) || (shared && file.is_none());
        if flags.contains(MapFlags::NORESERVE) {
            vflags |= vmflags::NORESERVE;
        }
        if accountable && vflags & vmflags::NORESERVE == 0 {
            if !self.enough_memory(len) {
                return Err(Errno::ENOMEM);
            }
            if !shared {
                vflags |= vmflags::ACCOUNT;
            }
        }
        if fixed {
            self.unmap_locked(&mut st, cpu, addr, addr + len);
        }
        let mut vma = Vma::new_anon(start, start + len, prot, vflags);
        // The object behind it: the file, a new shmem object for shared
        // anonymous memory, or none.
        let cache = match file {
            Some((f, offset)) => {
                vma.pgoff = offset / PAGE_SIZE;
                Some(f.clone())
            }
            None if shared => {
                vma.pgoff = 0;
                Some(self.sys().caches().create(self.sys(), None, len / PAGE_SIZE))
            }
            None => None,
        };
        if shared {
            vma.flags |= vmflags::SHARED;
        }
        if let Some(c) = &cache {
            vma.flags &= !vmflags::ANON;
            vma.file = c.id;
            c.add_user(&self.arc(), vma.pgoff, vma.pgoff + len / PAGE_SIZE);
            st.files.entry(c.id).or_insert_with(|| c.clone());
            if !shared {
                vma.cow_mark = st.vmas.new_mark(false);
            }
        }
        // Private mappings (anonymous, or a file's copy-on-write pages) get
        // an anon_vma under the object-based reverse map.
        if !shared {
            vma.anon_vma = self.anon_vma_for(&st.vmas, &vma);
        }
        st.vmas.insert(vma);
        drop(st);
        if flags.contains(MapFlags::POPULATE) || flags.contains(MapFlags::LOCKED) {
            // Writes only where a write is private (Linux's
            // `populate_vma_page_range`): a shared mapping is faulted in
            // for reading, so populating it dirties nothing.
            self.populate(cpu, start, start + len, prot, shared);
        }
        Ok(VirtAddr::new_truncate(start))
    }

    /// The anon_vma a new anonymous VMA gets under the object-based
    /// reverse map: a mergeable neighbour's, or a new one (0 under other
    /// schemes).
    pub(crate) fn anon_vma_for(&self, vmas: &super::VmaTree, v: &Vma) -> u64 {
        if self.sys().rmap().scheme != crate::rmap::RmapScheme::Object {
            return 0;
        }
        vmas.mergeable_anon_vma(v.start, v.end, v.prot, v.flags)
            .unwrap_or_else(|| self.sys().rmap().objects.create(&self.arc()))
    }

    /// Linux's heuristic overcommit check (`overcommit_memory=0`,
    /// `__vm_enough_memory`): a charge of `len` bytes fails only if it is
    /// more than all of memory (and swap, of which there is none).
    pub(crate) fn enough_memory(&self, len: u64) -> bool {
        len / PAGE_SIZE <= self.sys().phys.total_frames()
    }

    /// Fault in every page of `[start, end)` (failures are ignored, as
    /// Linux ignores them for `MAP_POPULATE`).
    pub(crate) fn populate(&self, cpu: CpuId, start: u64, end: u64, prot: Prot, shared: bool) {
        if !prot.readable() {
            return;
        }
        let access = if prot.writable() && !shared { Access::Write } else { Access::Read };
        let mut a = start;
        while a < end {
            if populate_page(self, cpu, VirtAddr::new_truncate(a), access).is_err() {
                break;
            }
            a += PAGE_SIZE;
        }
    }

    /// `munmap(addr, len)`.
    ///
    /// `EINVAL` for an unaligned address, a zero length, or a range beyond
    /// the address space; an unmapped range is not an error.
    pub fn munmap(&self, cpu: CpuId, addr: u64, len: u64) -> SysResult<()> {
        if !addr.is_multiple_of(PAGE_SIZE) || addr > TASK_SIZE || len > TASK_SIZE - addr {
            return Err(Errno::EINVAL);
        }
        let len = page_align(len).ok_or(Errno::EINVAL)?;
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let mut st = self.write();
        st.live()?;
        self.unmap_locked(&mut st, cpu, addr, addr + len);
        Ok(())
    }

    /// Remove `[start, end)`: split and drop VMAs, zap PTEs, free the page
    /// tables nothing maps any more, flush once, then free.
    ///
    /// Enters with: the mmap lock held for writing.
    pub(crate) fn unmap_locked(&self, st: &mut MmState, cpu: CpuId, start: u64, end: u64) {
        let removed = st.vmas.remove_range(start, end);
        if removed.is_empty() {
            return;
        }
        let mut g = MmuGather::new(self.sys(), cpu, self.id());
        for v in &removed {
            zap::zap_range(self, &mut g, v.start, v.end);
        }
        let floor = st.vmas.prev(start).map(|v| v.end).unwrap_or(0);
        let ceiling = st.vmas.find_from(end).map(|v| v.start).unwrap_or(USER_TOP);
        free_tables(self.sys(), &mut g, self.root(), start, end, floor, ceiling);
        g.finish(self.cpumask());
    }

    /// `brk(new)`: returns the new break, or the old one if the request
    /// cannot be met (as the Linux syscall does; `brk(0)` queries).
    pub fn brk(&self, cpu: CpuId, new: u64) -> u64 {
        let mut st = self.write();
        if st.dead || new < st.start_brk || new > TASK_SIZE {
            return st.brk;
        }
        let (Some(newbrk), Some(oldbrk)) = (page_align(new), page_align(st.brk)) else { return st.brk };
        if newbrk == oldbrk {
            st.brk = new;
            return new;
        }
        if newbrk < oldbrk {
            // Linux's `brk` shrinks only over a mapping (`vma_find(newbrk,
            // oldbrk)`): with the heap unmapped, the break stays.
            if st.vmas.overlapping(newbrk, oldbrk).is_empty() {
                return st.brk;
            }
            self.unmap_locked(&mut st, cpu, newbrk, oldbrk);
            st.brk = new;
            return new;
        }
        if !st.vmas.overlapping(oldbrk, newbrk + PAGE_SIZE).is_empty() {
            return st.brk;
        }
        let mut vma = Vma::new_anon(oldbrk, newbrk, Prot::RW, vmflags::ANON | vmflags::HEAP | vmflags::ACCOUNT);
        vma.anon_vma = self.anon_vma_for(&st.vmas, &vma);
        st.vmas.insert(vma);
        st.brk = new;
        new
    }

    /// Grow the `MAP_GROWSDOWN` mapping above `va` down to `va`'s page, for
    /// a fault there (Linux's `expand_downwards`); `false` if it may not
    /// grow. It may not below `mmap_min_addr`, to within the stack guard gap
    /// (256 pages, `stack_guard_gap`) of an accessible mapping below that is
    /// not itself growing down, or beyond the stack limit in all
    /// (`RLIMIT_STACK`, 8 MiB by default: `acct_stack_growth`). True also if
    /// another CPU has grown it meanwhile.
    ///
    /// Enters with: no lock. Takes the mmap lock for writing.
    pub(crate) fn expand_stack(&self, va: VirtAddr) -> bool {
        const STACK_GUARD_GAP: u64 = 256 * PAGE_SIZE;
        const RLIMIT_STACK: u64 = 8 << 20;
        let addr = va.as_u64() & !(PAGE_SIZE - 1);
        let mut st = self.write();
        if st.dead || !(MMAP_MIN_ADDR..TASK_SIZE).contains(&addr) {
            return false;
        }
        let Some(v) = st.vmas.find_from(addr).copied() else { return false };
        if v.start <= addr {
            return true;
        }
        if v.flags & vmflags::GROWSDOWN == 0 || v.end - addr > RLIMIT_STACK {
            return false;
        }
        if let Some(p) = st.vmas.prev(v.start) {
            if p.flags & vmflags::GROWSDOWN == 0 && p.prot != Prot::NONE && addr - p.end < STACK_GUARD_GAP {
                return false;
            }
        }
        let grow = (v.start - addr) / PAGE_SIZE;
        let Some(pgoff) = v.pgoff.checked_sub(grow) else { return false };
        st.vmas.remove_range(v.start, v.end);
        st.vmas.insert(Vma { start: addr, pgoff, ..v });
        true
    }

    /// The heap's start (where `brk` began).
    pub fn start_brk(&self, cpu: CpuId) -> u64 {
        self.read(cpu).start_brk
    }
}
