//! `mmu_gather`: the flush-then-free batch.

use alloc::vec::Vec;

use crate::addr::{Pfn, VirtAddr};
use crate::platform::{CpuId, CpuMask, FlushRange, FlushRequest};
use crate::stats::Stat;
use crate::system::System;

/// Frames and tables unmapped from an mm, waiting for the TLB flush that
/// lets them be freed.
#[must_use = "unmapped frames are freed only by `finish`, after the TLB flush"]
pub struct MmuGather<'a> {
    sys: &'a System,
    cpu: CpuId,
    initiator: Option<CpuId>,
    asid: u64,
    start: u64,
    end: u64,
    full: bool,
    pages: Vec<Pfn>,
    tables: Vec<Pfn>,
    done: bool,
}

impl<'a> MmuGather<'a> {
    /// An empty batch for the mm `asid`, run on `cpu`.
    pub fn new(sys: &'a System, cpu: CpuId, asid: u64) -> MmuGather<'a> {
        MmuGather {
            sys,
            cpu,
            initiator: Some(cpu),
            asid,
            start: u64::MAX,
            end: 0,
            full: false,
            pages: Vec::new(),
            tables: Vec::new(),
            done: false,
        }
    }

    /// A batch run by no CPU of the machine (a teardown from whatever thread
    /// dropped the last reference): the flush waits for every CPU in the
    /// mask, and frames are freed through CPU 0's cache (under its lock).
    pub fn detached(sys: &'a System, asid: u64) -> MmuGather<'a> {
        let mut g = MmuGather::new(sys, CpuId(0), asid);
        g.initiator = None;
        g
    }

    /// The CPU doing the work.
    pub fn cpu(&self) -> CpuId {
        self.cpu
    }

    /// A PTE mapping `va` was changed: flush it.
    #[inline]
    pub fn add_range(&mut self, start: VirtAddr, end: VirtAddr) {
        self.start = self.start.min(start.as_u64());
        self.end = self.end.max(end.as_u64());
    }

    /// Flush the whole address space (exit).
    pub fn flush_all(&mut self) {
        self.full = true;
    }

    /// A reference to `pfn` is dropped after the flush.
    #[inline]
    pub fn add_page(&mut self, pfn: Pfn) {
        self.pages.push(pfn);
    }

    /// A page-table page is freed after the flush.
    pub fn add_table(&mut self, pfn: Pfn) {
        self.tables.push(pfn);
    }

    /// True if nothing needs flushing.
    pub fn is_empty(&self) -> bool {
        !self.full && self.start >= self.end && self.pages.is_empty() && self.tables.is_empty()
    }

    /// Flush the CPUs in `cpus`, then free what was gathered.
    pub fn finish(mut self, cpus: CpuMask) {
        self.done = true;
        if self.full || self.start < self.end || !self.tables.is_empty() {
            let range = if self.full || self.start >= self.end {
                FlushRange::All
            } else {
                FlushRange::Range { start: VirtAddr::new_truncate(self.start), end: VirtAddr::new_truncate(self.end) }
            };
            flush(self.sys, self.cpu, self.initiator, self.asid, cpus, range, !self.tables.is_empty());
        }
        for &p in &self.pages {
            self.sys.put_page(self.cpu, p);
        }
        for &t in &self.tables {
            self.sys.free_table(self.cpu, t);
        }
    }
}

impl Drop for MmuGather<'_> {
    fn drop(&mut self) {
        debug_assert!(self.done || self.is_empty(), "MmuGather dropped without finish: frames leaked");
    }
}

fn flush(
    sys: &System,
    cpu: CpuId,
    initiator: Option<CpuId>,
    asid: u64,
    cpus: CpuMask,
    range: FlushRange,
    tables_freed: bool,
) {
    sys.stats.inc(cpu, Stat::TlbFlush);
    let remote = cpus.0 & !initiator.map_or(0, |c| 1u64 << c.0);
    if remote != 0 {
        sys.stats.inc(cpu, Stat::TlbShootdown);
        // Each remote CPU's flush request writes a line that CPU owns.
        sys.stats.add(cpu, Stat::SharedWrite, i64::from(remote.count_ones()));
    }
    sys.platform().flush_tlb(&FlushRequest { asid, cpus, initiator, range, tables_freed });
}

/// A PTE was changed in a way that stale TLB entries must not outlive
/// (a read-only zero-page mapping replaced, a permission removed).
#[must_use = "the changed PTE must be flushed before the caller proceeds"]
pub struct PendingFlush {
    asid: u64,
    start: VirtAddr,
    end: VirtAddr,
}

impl PendingFlush {
    /// A flush of `[start, end)` in mm `asid`.
    pub fn new(asid: u64, start: VirtAddr, end: VirtAddr) -> PendingFlush {
        PendingFlush { asid, start, end }
    }

    /// Do it.
    pub fn flush(self, sys: &System, cpu: CpuId, cpus: CpuMask) {
        flush(sys, cpu, Some(cpu), self.asid, cpus, FlushRange::Range { start: self.start, end: self.end }, false);
    }
}
