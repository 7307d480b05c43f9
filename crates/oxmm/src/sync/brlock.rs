//! The mmap lock: a reader-writer lock whose readers write only their own
//! CPU's cache line (a "big reader" lock, Linux's `percpu_rw_semaphore`
//! and `brlock`).
//!
//! Faults take the mmap lock for reading on every fault; with one shared
//! reader count, every fault on every CPU would write the same cache line
//! and the fault path would stop scaling (seed 002's complaint about the
//! page-table lock, moved one lock up). Here each CPU has its own reader
//! count in its own cache line, and writers — mmap, munmap, mprotect, brk,
//! exit, all rare next to faults — pay for it by scanning every CPU's count.
//!
//! # Protocol (Dekker's, with sequentially consistent operations)
//!
//! ```text
//! reader on CPU c                          writer
//! readers[c].fetch_add(1, SeqCst)          writer.swap(true, SeqCst)   (one writer at a time)
//! if writer.load(SeqCst):                  for each CPU: wait until readers[c].load(SeqCst) == 0
//!     readers[c].fetch_sub(1); wait        ... exclusive section ...
//!     until !writer; retry                 writer.store(false, Release)
//! ... shared section ...
//! readers[c].fetch_sub(1, Release)
//! ```
//!
//! All four racing operations are SeqCst, so they fall in one total order:
//! either the reader's increment comes first and the writer's scan sees it
//! (and waits), or the writer's flag comes first and the reader's load sees
//! it (and backs off). A reader never proceeds while a writer holds the
//! lock. Writers have priority: a waiting writer makes new readers back off,
//! so a stream of faults cannot starve munmap. The increment is a locked
//! instruction on the reader's own cache line — no line is shared between
//! readers. Loom models SeqCst accesses as AcqRel, so under `--cfg loom`
//! the same ordering is expressed with SeqCst fences (which loom does
//! model); the model is `tests/loom_mmap_lock.rs`.

use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

use super::{spin_hint, AtomicBool, AtomicU64, Ordering};
use crate::platform::CpuId;
use crossbeam_utils::CachePadded;

/// A reader-writer lock with per-CPU reader counts.
pub struct BrLock<T> {
    writer: CachePadded<AtomicBool>,
    readers: Box<[CachePadded<AtomicU64>]>,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&T` to readers only while no writer holds it
// and `&mut T` to one writer only while no reader does (see the protocol);
// T must be Send + Sync for that, as for std's RwLock.
unsafe impl<T: Send + Sync> Sync for BrLock<T> {}
// SAFETY: moving the lock moves the T.
unsafe impl<T: Send> Send for BrLock<T> {}

#[inline(always)]
fn model_fence() {
    #[cfg(loom)]
    super::fence(Ordering::SeqCst);
}

impl<T> BrLock<T> {
    /// A lock for `cpus` CPUs around `v`.
    pub fn new(cpus: usize, v: T) -> BrLock<T> {
        BrLock {
            writer: CachePadded::new(AtomicBool::new(false)),
            readers: (0..cpus.max(1)).map(|_| CachePadded::new(AtomicU64::new(0))).collect(),
            data: UnsafeCell::new(v),
        }
    }

    fn slot(&self, cpu: CpuId) -> &AtomicU64 {
        &self.readers[cpu.index() % self.readers.len()]
    }

    /// One attempt to take the lock for reading on `cpu`: fails if a
    /// writer holds the lock or is waiting for it.
    #[inline]
    pub fn try_read(&self, cpu: CpuId) -> Option<BrReadGuard<'_, T>> {
        let slot = self.slot(cpu);
        // SeqCst: the reader's half of Dekker (pairs with the writer's
        // flag and scan).
        slot.fetch_add(1, Ordering::SeqCst);
        model_fence();
        if !self.writer.load(Ordering::SeqCst) {
            return Some(BrReadGuard { lock: self, slot });
        }
        slot.fetch_sub(1, Ordering::Release);
        None
    }

    /// Take the lock for reading on `cpu`.
    #[inline]
    pub fn read(&self, cpu: CpuId) -> BrReadGuard<'_, T> {
        loop {
            if let Some(g) = self.try_read(cpu) {
                return g;
            }
            while self.writer.load(Ordering::Relaxed) {
                spin_hint();
            }
        }
    }

    /// True if no reader holds the lock. Called with the writer flag set.
    fn readers_gone(&self) -> bool {
        model_fence();
        // SeqCst (and Acquire): sees every reader that got in, and
        // synchronises with its Release decrement.
        self.readers.iter().all(|r| r.load(Ordering::SeqCst) == 0)
    }

    /// One attempt to take the lock for writing: fails if another writer
    /// holds it or any reader does.
    pub fn try_write(&self) -> Option<BrWriteGuard<'_, T>> {
        // SeqCst: the writer's half of Dekker; Acquire against the previous
        // writer's Release.
        if self.writer.compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return None;
        }
        if self.readers_gone() {
            return Some(BrWriteGuard { lock: self });
        }
        self.writer.store(false, Ordering::Release);
        None
    }

    /// Take the lock for writing. The writer flag is set first and kept
    /// while readers drain, so new readers back off (writer priority).
    pub fn write(&self) -> BrWriteGuard<'_, T> {
        while self.writer.compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            while self.writer.load(Ordering::Relaxed) {
                spin_hint();
            }
        }
        while !self.readers_gone() {
            spin_hint();
        }
        BrWriteGuard { lock: self }
    }
}

/// Shared access; released on drop.
pub struct BrReadGuard<'a, T> {
    lock: &'a BrLock<T>,
    slot: &'a AtomicU64,
}

impl<T> Deref for BrReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a reader count is held, so no writer is inside (protocol
        // in the module doc); shared references only.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Drop for BrReadGuard<'_, T> {
    fn drop(&mut self) {
        // Release: pairs with the writer's SeqCst (Acquire) scan; the
        // shared section happens-before the exclusive one.
        self.slot.fetch_sub(1, Ordering::Release);
    }
}

/// Exclusive access; released on drop.
pub struct BrWriteGuard<'a, T> {
    lock: &'a BrLock<T>,
}

impl<T> Deref for BrWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the writer flag is ours and every reader count was zero
        // after it was set: no other reference exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for BrWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; exclusive.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for BrWriteGuard<'_, T> {
    fn drop(&mut self) {
        // Release: publishes the exclusive section to the next reader's
        // SeqCst load of the flag and the next writer's swap.
        self.lock.writer.store(false, Ordering::Release);
    }
}
