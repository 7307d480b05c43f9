//! The seam to the environment (arceos' `PagingHandler`).
//!
//! The core asks the platform for three things only: where physical memory
//! is mapped (a linear direct map, as every 64-bit kernel has), how to shoot
//! down TLB entries on other CPUs, and the time. `oxmm-host` implements it
//! over a real memory arena and threads; a kernel would implement it over
//! its direct map, IPIs and `invlpg`.

use crate::addr::VirtAddr;

/// A CPU number, below [`MAX_CPUS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuId(pub u32);

impl CpuId {
    /// As an index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// The most CPUs a machine may have (the width of an mm's CPU mask).
pub const MAX_CPUS: usize = 64;

/// A set of CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CpuMask(pub u64);

impl CpuMask {
    /// True if `cpu` is in the set.
    pub const fn contains(self, cpu: CpuId) -> bool {
        self.0 & (1 << cpu.0) != 0
    }
    /// The CPUs in the set.
    pub fn iter(self) -> impl Iterator<Item = CpuId> {
        (0..64u32).filter(move |i| self.0 & (1 << i) != 0).map(CpuId)
    }
}

/// What a TLB flush must invalidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushRange {
    /// Every translation of the address space.
    All,
    /// Translations of `[start, end)`.
    Range {
        /// First address.
        start: VirtAddr,
        /// One past the last.
        end: VirtAddr,
    },
}

/// A shootdown request.
#[derive(Clone, Copy, Debug)]
pub struct FlushRequest {
    /// The address space (its id, used as the TLB tag's ASID).
    pub asid: u64,
    /// The CPUs that may hold translations of it.
    pub cpus: CpuMask,
    /// The initiating CPU (flushed locally, without an IPI).
    pub initiator: Option<CpuId>,
    /// What to invalidate.
    pub range: FlushRange,
    /// Page-table pages are being freed too: paging-structure caches must go.
    pub tables_freed: bool,
}

/// The environment the core runs in.
///
/// # Safety
///
/// Implementors guarantee that [`Platform::direct_map`] returns a pointer to
/// `frames * 4096` bytes of memory that stays valid, writable and not used
/// for anything else for as long as the platform lives, and that
/// [`Platform::flush_tlb`] meets the shootdown guarantee: when it returns,
/// no CPU in the request's mask reads or writes through a translation the
/// request invalidated, and every accessed/dirty update made through such a
/// translation is visible to the caller.
pub unsafe trait Platform: Send + Sync {
    /// The base of the direct map (physical address 0) and the number of
    /// 4 KiB frames behind it.
    fn direct_map(&self) -> (*mut u8, u64);
    /// The number of CPUs.
    fn cpus(&self) -> usize;
    /// Invalidate translations on the CPUs named in the request and wait
    /// for them (see the trait's safety contract).
    fn flush_tlb(&self, req: &FlushRequest);
    /// Monotonic nanoseconds.
    fn now_ns(&self) -> u64;
}
