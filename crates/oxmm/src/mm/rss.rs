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

/// The RSS counter a user frame counts in, from its flags (`None` for
/// frames that are not user pages, such as the zero page).
pub fn kind_of_frame(frame_flags: u32) -> Option<RssKind> {
    use crate::phys::frame::flags;
    if frame_flags & flags::ANON != 0 {
        Some(RssKind::Anon)
    } else if frame_flags & flags::SHMEM != 0 {
        Some(RssKind::Shmem)
    } else if frame_flags & flags::FILE != 0 {
        Some(RssKind::File)
    } else {
        None
    }
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
    shared: bool,
}

impl RssCounters {
    /// Zeroed counters for `cpus` CPUs (one shared triple in
    /// [`RssMode::Shared`](crate::system::RssMode::Shared)).
    pub fn new(cpus: usize, mode: crate::system::RssMode) -> Self {
        let shared = mode == crate::system::RssMode::Shared;
        let n = if shared { 1 } else { cpus.max(1) };
        RssCounters {
            cpus: (0..n).map(|_| CachePadded::new(core::array::from_fn(|_| AtomicI64::new(0)))).collect(),
            shared,
        }
    }

    /// The mode these counters were made in.
    pub fn mode(&self) -> crate::system::RssMode {
        if self.shared {
            crate::system::RssMode::Shared
        } else {
            crate::system::RssMode::PerCpu
        }
    }

    /// True if every CPU writes the same counters.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Add `n` pages of `kind` on `cpu`.
    ///
    /// Relaxed: the counters publish nothing; the fold sums them. Callers
    /// go through [`Mm::add_rss`](crate::mm::Mm::add_rss), which also
    /// counts a shared-cache-line write in the shared mode.
    #[inline(always)]
    pub fn add(&self, cpu: CpuId, kind: RssKind, n: i64) {
        self.cpus[cpu.index() % self.cpus.len()][kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Fold every CPU's counters. A sum below zero (possible only for a
    /// moment, while one CPU's decrement is seen before another's
    /// increment) reads as zero.
    pub fn fold(&self) -> Rss {
        let t = self.fold_raw();
        Rss { anon: t[0].max(0) as u64, file: t[1].max(0) as u64, shmem: t[2].max(0) as u64, swap: 0 }
    }

    /// The sums of every CPU's counters per [`RssKind`], unclamped (the
    /// checker compares these, so a counter driven below zero shows).
    pub fn fold_raw(&self) -> [i64; 3] {
        let mut t = [0i64; 3];
        for c in self.cpus.iter() {
            for (i, v) in c.iter().enumerate() {
                t[i] += v.load(Ordering::Relaxed);
            }
        }
        t
    }
}
