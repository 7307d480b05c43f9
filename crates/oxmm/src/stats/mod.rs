//! Counters: vmstat-style events, meminfo-style page counts.
//!
//! Every counter is per CPU and summed on read (Linux's vm_event_states and
//! the per-CPU vmstat diffs): a fault bumps counters in its own CPU's cache
//! line only, so counting adds no shared cache-line write to the fast path.
//! Increments are Relaxed `fetch_add`s: a slot normally has one writer (the
//! thread running as that CPU), but teardown from elsewhere must not lose
//! counts, and an uncontended locked add on a local line is cheap.

use alloc::boxed::Box;

use crate::platform::CpuId;
use crate::sync::{AtomicI64, Ordering};
use crossbeam_utils::CachePadded;

macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            /// Every counter.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The `/proc/vmstat`-style name.
            pub const fn name(self) -> &'static str { match self { $($name::$v => $s,)* } }
        }
    };
}

counters!(
    /// Events and page counts.
    Stat {
        /// Fault-handler entries.
        PgFault => "pgfault",
        /// Faults resolved by mapping the shared zero page.
        ZeroPageMap => "zero_page_map",
        /// Anonymous pages allocated by faults.
        AnonFaultAlloc => "anon_fault_alloc",
        /// Write faults on present read-only PTEs that reused the page.
        WpReuse => "wp_reuse",
        /// Faults that found the PTE already set (lost a race, or stale TLB).
        FaultRaceLost => "fault_race_lost",
        /// Faults that failed with SEGV.
        FaultSegv => "fault_segv",
        /// Faults that failed with OOM.
        FaultOom => "fault_oom",
        /// TLB flush requests (batched: one per munmap/mprotect call).
        TlbFlush => "nr_tlb_flush",
        /// Flushes that had to reach another CPU (shootdowns).
        TlbShootdown => "nr_tlb_remote_flush",
        /// Page-table pages allocated.
        PgTableAlloc => "pgtable_alloc",
        /// Page-table pages freed.
        PgTableFree => "pgtable_free",
        /// Page-table install races lost (the loser freed its page).
        PgTableRaceLost => "pgtable_race_lost",
        /// Anonymous pages in use (gauge).
        NrAnonPages => "nr_anon_pages",
        /// Page-table pages in use (gauge).
        NrPageTables => "nr_page_table_pages",
        /// Writes to cache lines several CPUs write (shared RSS counters,
        /// remote TLB flush requests); zone-lock batches are counted by the
        /// allocator and added in `System::shared_writes`.
        SharedWrite => "shared_cacheline_writes",
        /// Faults that mapped a prefault window of more than one page.
        PrefaultWindow => "prefault_windows",
        /// Extra pages mapped by prefault windows.
        PrefaultPages => "prefault_pages",
        /// pte-chain changes that found no node memory and were not made:
        /// additions refused (the fork, fault or mapping failed instead),
        /// and removals or moves left undone (only from a chain other pages
        /// share, with no frame free anywhere; the checker reports them).
        RmapAllocFail => "rmap_alloc_fail",
        /// Prefaulted pages unmapped without ever being accessed (their
        /// accessed bit was still clear at zap).
        PrefaultUnused => "prefault_unused",
    }
);

/// The per-CPU counter table.
pub struct Counters {
    cpus: Box<[CachePadded<[AtomicI64; Stat::ALL.len()]>]>,
}

impl Counters {
    /// Zeroed counters for `cpus` CPUs.
    pub fn new(cpus: usize) -> Counters {
        Counters {
            cpus: (0..cpus.max(1)).map(|_| CachePadded::new(core::array::from_fn(|_| AtomicI64::new(0)))).collect(),
        }
    }

    /// Add `n` to `s` on `cpu`.
    ///
    /// Relaxed: counters publish nothing; readers sum slots and tolerate a
    /// value a few events old.
    #[inline(always)]
    pub fn add(&self, cpu: CpuId, s: Stat, n: i64) {
        self.cpus[cpu.index() % self.cpus.len()][s as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Add one.
    #[inline(always)]
    pub fn inc(&self, cpu: CpuId, s: Stat) {
        self.add(cpu, s, 1)
    }

    /// The sum over CPUs.
    pub fn get(&self, s: Stat) -> i64 {
        self.cpus.iter().map(|c| c[s as usize].load(Ordering::Relaxed)).sum()
    }
}

/// A snapshot of meminfo-style counts, in 4 KiB pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// Frames in the machine.
    pub total: u64,
    /// Free frames.
    pub free: u64,
    /// Anonymous pages mapped by user space.
    pub anon: u64,
    /// Page-table pages.
    pub page_tables: u64,
}

/// A snapshot of every event counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmStat {
    /// (name, value) for every [`Stat`].
    pub counters: alloc::vec::Vec<(&'static str, i64)>,
}

impl VmStat {
    /// The value of a counter by name.
    pub fn get(&self, name: &str) -> Option<i64> {
        self.counters.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}
