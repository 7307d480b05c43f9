//! Address spaces: VMAs and the Linux memory calls.
//!
//! An [`Mm`] owns a page-table root, a VMA tree behind the mmap lock, a CPU
//! mask for TLB shootdowns and per-CPU RSS counters. The calls follow
//! Linux's argument checks and errno values exactly (see each call), and
//! every one that unmaps or downgrades PTEs flushes the TLB once per call
//! through an [`MmuGather`] before freeing anything.
//!
//! Lock use: `mmap`, `munmap`, `mprotect`, `brk` and exit hold the mmap lock
//! for writing; faults, `madvise` and `mincore` hold it for reading.

pub mod flags;
mod fork;
mod madvise;
mod mincore;
mod mmap;
mod mprotect;
mod mremap;
pub mod msync;
pub mod rss;
pub mod vma;
mod zap;

use alloc::sync::Arc;

use crate::addr::{Pfn, VirtAddr, PAGE_SIZE};
use crate::errno::{Errno, SysResult};
use crate::platform::{CpuId, CpuMask};
use crate::sync::brlock::{BrLock, BrReadGuard, BrWriteGuard};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::system::System;
use crate::tlb::MmuGather;

pub use self::flags::{Advice, MapFlags, Prot};
pub use self::rss::{Rss, RssKind};
pub use self::vma::{Vma, VmaTree};

/// One past the highest user address (`TASK_SIZE`).
pub const TASK_SIZE: u64 = VirtAddr::USER_END;
/// The top of the 47-bit user half: the ceiling for freeing page tables.
pub(crate) const USER_TOP: u64 = 1 << 47;
/// Where top-down mmap starts (below a 128 MiB stack gap, no randomisation).
pub const MMAP_BASE: u64 = 0x7fff_f000_0000 - (128 << 20);
/// The lowest address mmap hands out (`mmap_min_addr`).
pub const MMAP_MIN_ADDR: u64 = 0x10000;
/// Where the brk heap starts.
pub const BRK_START: u64 = 0x0060_0000;

/// What the mmap lock protects.
pub struct MmState {
    /// The VMAs.
    pub vmas: VmaTree,
    /// Start of the heap.
    pub start_brk: u64,
    /// Current break.
    pub brk: u64,
    /// The mm has exited: its tables are freed; every call fails.
    pub dead: bool,
    /// The page caches its VMAs map (kept until exit).
    pub files: alloc::collections::BTreeMap<u64, Arc<crate::pagecache::PageCache>>,
}

impl MmState {
    /// `EINVAL` once the address space has exited (no Linux call can reach
    /// an exited mm; a hosted handle kept past exit can).
    pub(crate) fn live(&self) -> SysResult<()> {
        if self.dead {
            Err(Errno::EINVAL)
        } else {
            Ok(())
        }
    }
}

/// The CPUs that may hold an address space's translations (Linux's
/// `mm_cpumask`): a CPU joins before its first walk of the mm's tables, and
/// a flush reads the set after changing PTEs.
///
/// It is the store-buffering pattern: a joining CPU sets its bit (a SeqCst
/// RMW and fence) and then walks (loads PTEs); a flusher changes PTEs (AcqRel
/// exchanges or CASes) and then reads the set (a SeqCst fence and load).
/// Either the flusher sees the CPU, or the CPU's walk sees the changed
/// PTEs, never neither (`tests/loom_cpumask.rs`).
pub struct ActiveCpus(AtomicU64);

impl ActiveCpus {
    /// No CPU.
    pub fn new() -> ActiveCpus {
        ActiveCpus(AtomicU64::new(0))
    }

    /// `cpu` runs the mm from now on (it may cache its translations).
    pub fn join(&self, cpu: CpuId) {
        let bit = 1u64 << cpu.0;
        if self.0.load(Ordering::Relaxed) & bit == 0 {
            // SeqCst, then a fence: the bit is visible to any later flush
            // before this CPU's first walk can fill its TLB.
            self.0.fetch_or(bit, Ordering::SeqCst);
            crate::sync::fence(Ordering::SeqCst);
        }
    }

    /// The set, for a flush of PTEs changed before this call: the SeqCst
    /// fence orders those changes before the load.
    pub fn load(&self) -> CpuMask {
        crate::sync::fence(Ordering::SeqCst);
        CpuMask(self.0.load(Ordering::SeqCst))
    }
}

impl Default for ActiveCpus {
    fn default() -> Self {
        ActiveCpus::new()
    }
}

/// An address space.
pub struct Mm {
    me: alloc::sync::Weak<Mm>,
    sys: Arc<System>,
    id: u64,
    root: Pfn,
    state: BrLock<MmState>,
    cpumask: ActiveCpus,
    rss: rss::RssCounters,
    dead: AtomicBool,
}

impl Mm {
    /// A new, empty address space (its root table is allocated on `cpu`),
    /// counting RSS as the system's configuration says.
    pub fn new(sys: &Arc<System>, cpu: CpuId) -> SysResult<Arc<Mm>> {
        Mm::with_rss_mode(sys, cpu, sys.config().rss_mode)
    }

    /// A new, empty address space with its own RSS counting mode (the fault
    /// benchmark runs both modes on one machine).
    pub fn with_rss_mode(sys: &Arc<System>, cpu: CpuId, rss_mode: crate::system::RssMode) -> SysResult<Arc<Mm>> {
        let id = sys.new_mm_id();
        let root = sys.alloc_table(cpu, id).ok_or(Errno::ENOMEM)?;
        let mm = Arc::new_cyclic(|me| Mm {
            me: me.clone(),
            sys: sys.clone(),
            id,
            root,
            state: BrLock::new(
                sys.platform().cpus(),
                MmState {
                    vmas: VmaTree::new(),
                    start_brk: BRK_START,
                    brk: BRK_START,
                    dead: false,
                    files: alloc::collections::BTreeMap::new(),
                },
            ),
            cpumask: ActiveCpus::new(),
            rss: rss::RssCounters::new(sys.platform().cpus(), rss_mode),
            dead: AtomicBool::new(false),
        });
        sys.register_mm(id, Arc::downgrade(&mm));
        Ok(mm)
    }

    /// This mm as a strong reference (it is alive while `&self` is).
    pub fn arc(&self) -> Arc<Mm> {
        self.me.upgrade().expect("an Mm borrowed is an Mm alive")
    }

    /// The system.
    pub fn sys(&self) -> &Arc<System> {
        &self.sys
    }

    /// The mm id (also the TLB tag).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The root page table (what CR3 would hold).
    #[inline(always)]
    pub fn root(&self) -> Pfn {
        self.root
    }

    /// The mmap lock, shared, taken on `cpu` (it writes only that CPU's
    /// reader count: see [`BrLock`]).
    #[inline]
    pub fn read(&self, cpu: CpuId) -> BrReadGuard<'_, MmState> {
        self.state.read(cpu)
    }

    /// The mmap lock, exclusive.
    pub fn write(&self) -> BrWriteGuard<'_, MmState> {
        self.state.write()
    }

    /// Record that `cpu` runs this mm (it may cache its translations from
    /// now on). Called by a CPU switching to the mm.
    pub fn activate_on(&self, cpu: CpuId) {
        self.cpumask.join(cpu);
    }

    /// The CPUs that may hold this mm's translations, for a flush of PTEs
    /// changed before the call ([`ActiveCpus::load`]).
    pub fn cpumask(&self) -> CpuMask {
        self.cpumask.load()
    }

    /// RSS counters.
    pub fn rss_counters(&self) -> &rss::RssCounters {
        &self.rss
    }

    /// Add `n` pages of `kind` to the RSS, on `cpu`.
    #[inline(always)]
    pub fn add_rss(&self, cpu: CpuId, kind: RssKind, n: i64) {
        self.rss.add(cpu, kind, n);
        if self.rss.is_shared() {
            self.sys.stats.inc(cpu, crate::stats::Stat::SharedWrite);
        }
    }

    /// The PTE mapping `va` (under the mmap read lock), if its page tables
    /// exist: for tests and tools that inspect mappings.
    pub fn pte(&self, cpu: CpuId, va: VirtAddr) -> Option<crate::arch::Pte> {
        let st = self.read(cpu);
        if st.dead {
            return None;
        }
        // SAFETY: the mmap read lock `st` is held while the slot is used.
        let slot = unsafe { crate::pgtable::pte_slot(&self.sys, self.root, va) }.ok()?;
        Some(crate::arch::load_entry(slot))
    }

    /// The resident set, folded exactly.
    pub fn rss(&self) -> Rss {
        self.rss.fold()
    }

    /// True once [`Mm::exit`] ran.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Tear everything down: zap every VMA, free every page table, flush.
    /// Idempotent.
    pub fn exit(&self, cpu: CpuId) {
        self.exit_from(Some(cpu))
    }

    /// Exit from `cpu`, or from no CPU at all (`None`: the last reference
    /// was dropped by some thread; the flush then waits for every CPU).
    pub fn exit_from(&self, cpu: Option<CpuId>) {
        let mut st = self.write();
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        st.dead = true;
        let mut g = match cpu {
            Some(c) => MmuGather::new(&self.sys, c, self.id),
            None => MmuGather::detached(&self.sys, self.id),
        };
        let cpu = g.cpu();
        g.flush_all();
        let all: alloc::vec::Vec<Vma> = st.vmas.iter().copied().collect();
        for v in &all {
            zap::zap_range(self, &mut g, v.start, v.end);
        }
        crate::rmap::mm_exit(self, &st.vmas);
        st.vmas = VmaTree::new();
        crate::pgtable::cursor::free_tables(&self.sys, &mut g, self.root, 0, USER_TOP, 0, USER_TOP);
        g.finish(self.cpumask());
        // Shared file pages written through this mm reach the file now; the
        // caches go when their last user does.
        for (_, c) in core::mem::take(&mut st.files) {
            let _ = c.writeback(&self.sys, 0, u64::MAX);
            c.remove_user(self.id);
        }
        drop(st);
        self.sys.free_table(cpu, self.root);
        self.sys.unregister_mm(self.id);
    }
}

impl Drop for Mm {
    fn drop(&mut self) {
        if !self.dead.load(Ordering::Acquire) {
            self.exit_from(None);
        }
    }
}

/// Round `len` up to whole pages; `None` on overflow.
pub(crate) fn page_align(len: u64) -> Option<u64> {
    len.checked_add(PAGE_SIZE - 1).map(|l| l & !(PAGE_SIZE - 1))
}

/// Round `len` up to whole pages as Linux's `PAGE_ALIGN` does, wrapping: a
/// length within a page of 2^64 becomes 0.
pub(crate) fn page_align_wrapping(len: u64) -> u64 {
    len.wrapping_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}
