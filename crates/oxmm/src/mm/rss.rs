//! Resident-set counters (seed 002's "sloppy rss", made exact on read).
//!
//! Each mm keeps one counter triple (anon, file, shmem) per CPU, in its own
//! cache line. A fault adds to its CPU's triple only, so concurrent faults
//! of one process on many CPUs never write a shared cache line for
//! accounting; a read folds the triples. The fold is exact whenever no
//! update is in flight (e.g. after the threads have joined), and never off
//! by more than the updates in flight at the moment of the read.

use alloc::boxed::Box;

use crate::platform::CpuId;
use crate::sync::{AtomicI64, Ordering};
use crossbeam_utils::CachePadded;

/// Which resident-set counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum RssKind {
    /// Anonymous pages (`RssAnon`).
    Anon = 0,
    /// File pages (`RssFile`).
    File = 1,
    /// Shared memory (`RssShmem`).
    Shmem = 2,
}

/// Folded resident-set counts, in pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rss {
    /// Anonymous pages.
    pub anon: u64,
    /// File pages.
    pub file: u64,
    /// Shared memory pages.
    pub shmem: u64,
    /// Pages in swap.
    pub swap: u64,
}

impl Rss {
    /// All resident pages.
    pub fn total(&self) -> u64 {
        self.anon + self.file + self.shmem
    }
}

/// Per-CPU RSS counters of one mm.
pub struct RssCounters {
    cpus: Box<[CachePadded<[AtomicI64; 3]>]>,
}

impl RssCounters {
    /// Zeroed counters for `cpus` CPUs.
    pub fn new(cpus: usize) -> Self {
        RssCounters {
            cpus: (0..cpus.max(1)).map(|_| CachePadded::new(core::array::from_fn(|_| AtomicI64::new(0)))).collect(),
        }
    }

    /// Add `n` pages of `kind` on `cpu`.
    ///
    /// Relaxed: the counters publish nothing; the fold sums them.
    #[inline(always)]
    pub fn add(&self, cpu: CpuId, kind: RssKind, n: i64) {
        self.cpus[cpu.index() % self.cpus.len()][kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Fold every CPU's counters.
    pub fn fold(&self) -> Rss {
        let mut t = [0i64; 3];
        for c in self.cpus.iter() {
            for (i, v) in c.iter().enumerate() {
                t[i] += v.load(Ordering::Relaxed);
            }
        }
        Rss { anon: t[0].max(0) as u64, file: t[1].max(0) as u64, shmem: t[2].max(0) as u64, swap: 0 }
    }
}
