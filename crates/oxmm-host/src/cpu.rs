//! A CPU of the hosted machine: a handle used from one thread.
//!
//! Every access goes through the software MMU: open an access window
//! ([`crate::tlb`]), look the page up in the TLB; on a miss walk the page
//! table (which sets accessed, and dirty on a write) and fill the TLB; if
//! the walk fails, close the window, run the fault handler, and retry. A
//! fault the handler cannot resolve is returned as a [`Fault`] value.
//!
//! Frame memory is touched with atomic loads and stores (Relaxed): other
//! CPUs may access the same guest memory at the same time, as on hardware,
//! and atomics make that defined behaviour in Rust while compiling to plain
//! moves.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64 as HwAtomicU64, AtomicU8 as HwAtomicU8, Ordering};
use std::sync::Arc;

use oxmm::addr::Pfn;
use oxmm::addr::{VirtAddr, PAGE_SIZE};
use oxmm::errno::SysResult;
use oxmm::fault::{handle_fault, Access, FaultError};
use oxmm::mm::{MapFlags, Mm, Prot, Rss};
use oxmm::pgtable::walk::{translate, translate_from};
use oxmm::platform::CpuId;

use crate::machine::Machine;
use crate::tlb::{CpuTlb, OwnerState, DATA_WRITABLE};

/// An access the fault handler could not resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// SEGV, BUS or OOM.
    pub kind: FaultError,
    /// The faulting address.
    pub addr: VirtAddr,
}

/// A process: an address space to run on a CPU.
#[derive(Clone)]
pub struct Process {
    mm: Arc<Mm>,
}

impl Process {
    pub(crate) fn new(mm: Arc<Mm>) -> Process {
        Process { mm }
    }
    /// The address space.
    pub fn mm(&self) -> &Arc<Mm> {
        &self.mm
    }
    /// Its resident set (folded exactly).
    pub fn rss(&self) -> Rss {
        self.mm.rss()
    }
}

/// One CPU, bound to the thread that uses it (`Send`, not `Sync`).
pub struct Cpu {
    id: CpuId,
    machine: Arc<Machine>,
    tlb: Arc<CpuTlb>,
    local: OwnerState,
    mm: Option<Arc<Mm>>,
    base: u64,
    _not_sync: PhantomData<Cell<()>>,
}

impl Cpu {
    pub(crate) fn new(id: CpuId, machine: Arc<Machine>, tlb: Arc<CpuTlb>, base: *mut u8) -> Cpu {
        // A CPU handed back and taken again must not keep the previous
        // holder's translations: start from an empty TLB and the current
        // flush generation.
        let mut local = OwnerState::default();
        tlb.take_ownership(&mut local);
        Cpu { id, machine, tlb, local, mm: None, base: base as u64, _not_sync: PhantomData }
    }

    /// This CPU's number.
    pub fn id(&self) -> CpuId {
        self.id
    }

    /// The machine.
    pub fn machine(&self) -> &Arc<Machine> {
        &self.machine
    }

    /// Run `p` on this CPU (load CR3): joins its mm's CPU mask and drops
    /// the TLB.
    pub fn switch_to(&mut self, p: &Process) {
        if self.mm.as_ref().is_some_and(|m| Arc::ptr_eq(m, &p.mm)) {
            return;
        }
        p.mm.activate_on(self.id);
        self.tlb.invalidate_all();
        self.local.pde = (0, 0);
        self.mm = Some(p.mm.clone());
    }

    /// The process running here.
    pub fn current(&self) -> Option<&Arc<Mm>> {
        self.mm.as_ref()
    }

    // ---- the software MMU -------------------------------------------------

    /// The host address of the page holding `va`, for an access of kind
    /// `write`, inside an open window. On a walk failure the window is
    /// closed around the fault handler and reopened.
    #[inline(always)]
    fn page_in_window(&mut self, va: u64, write: bool) -> Result<u64, Fault> {
        let vpn = va >> 12;
        if let Some(d) = self.tlb.lookup(vpn) {
            if !write || d & DATA_WRITABLE != 0 {
                return Ok(d & !0xfff);
            }
        }
        self.miss(va, write)
    }

    /// The TLB missed (or the entry forbids a write): walk, fault, retry.
    ///
    /// Borrows the CPU's fields one by one rather than cloning the `Arc`s
    /// of the mm and the system: an `Arc` clone is a write to a cache line
    /// every CPU shares, which the fault path must not make.
    #[cold]
    fn miss(&mut self, va: u64, write: bool) -> Result<u64, Fault> {
        let addr =
            VirtAddr::try_new(va).map_err(|_| Fault { kind: FaultError::Segv, addr: VirtAddr::new_truncate(va) })?;
        let Cpu { id, machine, tlb, local, mm, base, .. } = self;
        let mm = mm.as_deref().ok_or(Fault { kind: FaultError::Segv, addr })?;
        let sys = machine.sys();
        loop {
            // An exited mm's tables are freed after a flush this window's
            // entry has seen (its `dead` store precedes the flush request).
            if mm.is_dead() {
                return Err(Fault { kind: FaultError::Segv, addr });
            }
            let region = (va >> 21) + 1;
            let walked = if local.pde.0 == region {
                // SAFETY:
                // - this CPU is inside an access window (opened by
                //   `with_page`, reopened after each fault), which every TLB
                //   flush waits for, and tables are freed only after one;
                // - the cached PTE table was found by a walk of this mm in an
                //   earlier window, and the cache is dropped at the first
                //   window after any flush (`CpuTlb::enter`) and on every
                //   switch, so the table is still allocated.
                unsafe { translate_from(sys, Pfn::try_new(local.pde.1).unwrap_or_default(), 1, addr, write) }
            } else {
                // SAFETY: inside an access window (see above); the root of a
                // live mm (exit was ruled out above).
                unsafe { translate(sys, mm.root(), addr, write) }
            };
            match walked {
                Ok(t) => {
                    if t.level == 1 {
                        local.pde = (region, t.table.as_u64());
                    }
                    let host = *base + t.pfn.as_u64() * PAGE_SIZE;
                    tlb.fill(va >> 12, host | if t.writable { DATA_WRITABLE } else { 0 });
                    return Ok(host);
                }
                Err(_) => {
                    tlb.exit(local);
                    let r = handle_fault(mm, *id, addr, if write { Access::Write } else { Access::Read });
                    tlb.enter(local);
                    if let Err(kind) = r {
                        return Err(Fault { kind, addr });
                    }
                }
            }
        }
    }

    /// Run `f` on the host address of the page holding `va`, inside one
    /// access window.
    #[inline(always)]
    fn with_page<R>(&mut self, va: u64, write: bool, f: impl FnOnce(u64) -> R) -> Result<R, Fault> {
        self.tlb.enter(&mut self.local);
        let r = self.page_in_window(va, write).map(f);
        self.tlb.exit(&mut self.local);
        r
    }

    /// Load 8 bytes (little-endian) from `va`.
    #[inline(always)]
    pub fn read_u64(&mut self, va: VirtAddr) -> Result<u64, Fault> {
        let a = va.as_u64();
        if a & 7 == 0 {
            self.with_page(a, false, |page| {
                // SAFETY:
                // - `page` is the host address of a frame the MMU translated
                //   `a` to, inside the arena, and stays a frame of this
                //   mapping until the window closes (the flush protocol);
                // - `a & 0xfff` is 8-aligned, so the 8 bytes are in the page
                //   and aligned for an atomic access.
                unsafe { HwAtomicU64::from_ptr((page + (a & 0xfff)) as *mut u64) }.load(Ordering::Relaxed)
            })
        } else {
            let mut b = [0u8; 8];
            self.read(va, &mut b)?;
            Ok(u64::from_le_bytes(b))
        }
    }

    /// Store 8 bytes (little-endian) to `va`.
    #[inline(always)]
    pub fn write_u64(&mut self, va: VirtAddr, v: u64) -> Result<(), Fault> {
        let a = va.as_u64();
        if a & 7 == 0 {
            self.with_page(a, true, |page| {
                // SAFETY: as in `read_u64`, for a translation allowing writes.
                unsafe { HwAtomicU64::from_ptr((page + (a & 0xfff)) as *mut u64) }.store(v, Ordering::Relaxed)
            })
        } else {
            self.write(va, &v.to_le_bytes())
        }
    }

    /// Load one byte.
    #[inline]
    pub fn read_u8(&mut self, va: VirtAddr) -> Result<u8, Fault> {
        let a = va.as_u64();
        self.with_page(a, false, |page| {
            // SAFETY: as in `read_u64`; one byte at an in-page offset.
            unsafe { HwAtomicU8::from_ptr((page + (a & 0xfff)) as *mut u8) }.load(Ordering::Relaxed)
        })
    }

    /// Store one byte.
    #[inline]
    pub fn write_u8(&mut self, va: VirtAddr, v: u8) -> Result<(), Fault> {
        let a = va.as_u64();
        self.with_page(a, true, |page| {
            // SAFETY: as in `read_u64`, for a translation allowing writes.
            unsafe { HwAtomicU8::from_ptr((page + (a & 0xfff)) as *mut u8) }.store(v, Ordering::Relaxed)
        })
    }

    /// One access to `va`: a load of its byte, or a store of `0x01`.
    #[inline]
    pub fn touch(&mut self, va: VirtAddr, write: bool) -> Result<(), Fault> {
        if write {
            self.write_u8(va, 1)
        } else {
            self.read_u8(va).map(|_| ())
        }
    }

    /// Apply `f(host_addr, len)` to each page-sized piece of
    /// `[va, va+len)`, one window per piece; stops at the first fault.
    fn for_each_piece(
        &mut self,
        va: VirtAddr,
        len: u64,
        write: bool,
        mut f: impl FnMut(u64, u64, u64),
    ) -> Result<(), Fault> {
        let mut a = va.as_u64();
        let end = a.checked_add(len).ok_or(Fault { kind: FaultError::Segv, addr: va })?;
        let mut done = 0u64;
        while a < end {
            let n = (PAGE_SIZE - (a & 0xfff)).min(end - a);
            self.with_page(a, write, |page| f(page + (a & 0xfff), n, done))?;
            done += n;
            a += n;
        }
        Ok(())
    }

    /// Copy `buf.len()` bytes from `va`.
    pub fn read(&mut self, va: VirtAddr, buf: &mut [u8]) -> Result<(), Fault> {
        self.for_each_piece(va, buf.len() as u64, false, |host, n, done| {
            for i in 0..n {
                // SAFETY: `host..host+n` lies in one translated page (see
                // `read_u64`); byte atomics need no alignment.
                buf[(done + i) as usize] =
                    unsafe { HwAtomicU8::from_ptr((host + i) as *mut u8) }.load(Ordering::Relaxed);
            }
        })
    }

    /// Copy `buf` to `va`.
    pub fn write(&mut self, va: VirtAddr, buf: &[u8]) -> Result<(), Fault> {
        self.for_each_piece(va, buf.len() as u64, true, |host, n, done| {
            for i in 0..n {
                // SAFETY: as in `read`, for a translation allowing writes.
                unsafe { HwAtomicU8::from_ptr((host + i) as *mut u8) }
                    .store(buf[(done + i) as usize], Ordering::Relaxed);
            }
        })
    }

    /// Store `byte` to every byte of `[va, va+len)`.
    pub fn fill(&mut self, va: VirtAddr, len: u64, byte: u8) -> Result<(), Fault> {
        let word = u64::from_ne_bytes([byte; 8]);
        self.for_each_piece(va, len, true, |host, n, _| {
            let mut p = host;
            let end = host + n;
            while p < end {
                if p & 7 == 0 && end - p >= 8 {
                    // SAFETY: `p` is 8-aligned and `p+8 <= end` inside one
                    // translated page.
                    unsafe { HwAtomicU64::from_ptr(p as *mut u64) }.store(word, Ordering::Relaxed);
                    p += 8;
                } else {
                    // SAFETY: `p` is inside one translated page.
                    unsafe { HwAtomicU8::from_ptr(p as *mut u8) }.store(byte, Ordering::Relaxed);
                    p += 1;
                }
            }
        })
    }

    /// The sum of every byte of `[va, va+len)`.
    pub fn sum(&mut self, va: VirtAddr, len: u64) -> Result<u64, Fault> {
        let mut total = 0u64;
        self.for_each_piece(va, len, false, |host, n, _| {
            let mut p = host;
            let end = host + n;
            while p < end {
                if p & 7 == 0 && end - p >= 8 {
                    // SAFETY: as in `fill`.
                    let w = unsafe { HwAtomicU64::from_ptr(p as *mut u64) }.load(Ordering::Relaxed);
                    total += w.to_ne_bytes().iter().map(|&b| u64::from(b)).sum::<u64>();
                    p += 8;
                } else {
                    // SAFETY: as in `fill`.
                    total += u64::from(unsafe { HwAtomicU8::from_ptr(p as *mut u8) }.load(Ordering::Relaxed));
                    p += 1;
                }
            }
        })?;
        Ok(total)
    }

    /// The first faulting address of a failed piecewise access is the
    /// start of the piece; report it precisely for op scripts.
    pub fn fault_offset(f: &Fault, region: VirtAddr) -> u64 {
        f.addr.as_u64().wrapping_sub(region.as_u64())
    }

    // ---- system calls of the running process -----------------------------

    fn mm(&self) -> SysResult<Arc<Mm>> {
        self.mm.clone().ok_or(oxmm::Errno::EINVAL)
    }

    /// `mmap` in the running process.
    pub fn mmap(&mut self, addr: u64, len: u64, prot: Prot, flags: MapFlags) -> SysResult<VirtAddr> {
        self.mm()?.mmap(self.id, addr, len, prot, flags)
    }
    /// `mmap` of a file's page cache at `offset`.
    pub fn mmap_file(
        &mut self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: &Arc<oxmm::pagecache::PageCache>,
        offset: u64,
    ) -> SysResult<VirtAddr> {
        self.mm()?.mmap_file(self.id, addr, len, prot, flags, file, offset)
    }
    /// `msync`.
    pub fn msync(&mut self, addr: u64, len: u64, flags: u32) -> SysResult<()> {
        self.mm()?.msync(self.id, addr, len, flags)
    }
    /// `munmap`.
    pub fn munmap(&mut self, addr: u64, len: u64) -> SysResult<()> {
        self.mm()?.munmap(self.id, addr, len)
    }
    /// `mprotect`.
    pub fn mprotect(&mut self, addr: u64, len: u64, prot: Prot) -> SysResult<()> {
        self.mm()?.mprotect(self.id, addr, len, prot)
    }
    /// `madvise`.
    pub fn madvise(&mut self, addr: u64, len: u64, advice: u32) -> SysResult<()> {
        self.mm()?.madvise(self.id, addr, len, advice)
    }
    /// `mincore`.
    pub fn mincore(&mut self, addr: u64, len: u64) -> SysResult<Vec<u8>> {
        self.mm()?.mincore(self.id, addr, len)
    }
    /// `mincore`, counting resident pages (no per-page vector).
    pub fn mincore_count(&mut self, addr: u64, len: u64) -> SysResult<u64> {
        self.mm()?.mincore_count(self.id, addr, len)
    }
    /// `mremap(addr, old_len, new_len, flags, new_addr)`.
    pub fn mremap(
        &mut self,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: oxmm::mm::flags::RemapFlags,
        new_addr: u64,
    ) -> SysResult<VirtAddr> {
        self.mm()?.mremap(self.id, addr, old_len, new_len, flags, new_addr)
    }
    /// `brk`.
    pub fn brk(&mut self, new: u64) -> SysResult<u64> {
        Ok(self.mm()?.brk(self.id, new))
    }

    /// `fork()` the process `p` from this CPU: a copy-on-write child.
    pub fn fork(&mut self, p: &Process) -> SysResult<Process> {
        Ok(Process::new(p.mm.fork(self.id)?))
    }

    /// Exit `p`: tear down its address space (from this CPU).
    pub fn exit_process(&mut self, p: Process) {
        if self.mm.as_ref().is_some_and(|m| Arc::ptr_eq(m, &p.mm)) {
            self.mm = None;
            self.tlb.invalidate_all();
            self.local.pde = (0, 0);
        }
        p.mm.exit(self.id);
    }
}

impl Drop for Cpu {
    fn drop(&mut self) {
        self.machine.release_cpu(self.id);
    }
}
