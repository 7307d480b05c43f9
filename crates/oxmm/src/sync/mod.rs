//! Synchronisation primitives, through one shim so loom can model them.
//!
//! Normally the atomics are `core::sync::atomic`; under `--cfg loom` they
//! are loom's, so the loom models in `tests/loom_*.rs` explore every
//! interleaving of the real code (the crossbeam-epoch `primitive` pattern).
//! The locks are `lock_api` types over [`RawSpin`] / [`RawRwSpin`], spin
//! locks written against the shimmed atomics: the `spin` crate's locks use
//! `core` atomics directly and so would be invisible to loom, and a no_std
//! kernel has nothing to sleep on anyway. The mmap lock is [`brlock::BrLock`],
//! a reader-writer lock with per-CPU reader counts.

pub mod brlock;

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Tell the scheduler (or loom) that this thread is spinning.
#[inline]
pub fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// A test-and-test-and-set spin lock.
pub struct RawSpin {
    locked: AtomicBool,
}

// SAFETY:
// - `lock` returns only after it changed `locked` from false to true with
//   Acquire, so at most one holder exists at a time;
// - `unlock` stores false with Release, publishing the critical section to
//   the next Acquire in `lock`/`try_lock`.
unsafe impl lock_api::RawMutex for RawSpin {
    #[allow(clippy::declare_interior_mutable_const)]
    #[cfg(not(loom))]
    const INIT: RawSpin = RawSpin { locked: AtomicBool::new(false) };
    #[allow(clippy::declare_interior_mutable_const)]
    #[cfg(loom)]
    const INIT: RawSpin = panic!("under loom, build locks with Mutex::const_new is impossible; use new_mutex()");
    type GuardMarker = lock_api::GuardSend;

    #[inline]
    fn lock(&self) {
        while !self.try_lock() {
            while self.locked.load(Ordering::Relaxed) {
                spin_hint();
            }
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        // Acquire: pairs with the Release in `unlock`.
        self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    #[inline]
    unsafe fn unlock(&self) {
        // Release: pairs with the Acquire in `try_lock`.
        self.locked.store(false, Ordering::Release);
    }
}

impl RawSpin {
    /// A new, unlocked raw lock (works under loom, unlike `INIT`).
    pub fn new() -> Self {
        RawSpin { locked: AtomicBool::new(false) }
    }
}

impl Default for RawSpin {
    fn default() -> Self {
        Self::new()
    }
}

/// A spin mutex.
pub type Mutex<T> = lock_api::Mutex<RawSpin, T>;
/// Its guard.
pub type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawSpin, T>;

/// A new spin mutex.
pub fn new_mutex<T>(v: T) -> Mutex<T> {
    Mutex::from_raw(RawSpin::new(), v)
}

const WRITER: usize = 1;
const READER: usize = 2;

/// A reader-writer spin lock: bit 0 is the writer, the rest count readers.
/// A waiting writer does not block new readers (the mmap lock's writers are
/// rare and readers are faults that must not stall behind them for long).
pub struct RawRwSpin {
    state: AtomicUsize,
}

impl RawRwSpin {
    /// A new, unlocked raw lock.
    pub fn new() -> Self {
        RawRwSpin { state: AtomicUsize::new(0) }
    }
}

impl Default for RawRwSpin {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY:
// - a writer holds the lock only after moving `state` from 0 to WRITER, so
//   no reader or other writer holds it;
// - a reader holds it only after adding READER while WRITER was clear, and a
//   writer cannot start until every reader has subtracted its READER;
// - all acquisitions are Acquire and releases Release, so critical sections
//   are ordered.
unsafe impl lock_api::RawRwLock for RawRwSpin {
    #[allow(clippy::declare_interior_mutable_const)]
    #[cfg(not(loom))]
    const INIT: RawRwSpin = RawRwSpin { state: AtomicUsize::new(0) };
    #[allow(clippy::declare_interior_mutable_const)]
    #[cfg(loom)]
    const INIT: RawRwSpin = panic!("use RawRwSpin::new under loom");
    type GuardMarker = lock_api::GuardSend;

    fn lock_shared(&self) {
        while !self.try_lock_shared() {
            spin_hint();
        }
    }

    fn try_lock_shared(&self) -> bool {
        // Acquire: pairs with the Release in `unlock_exclusive`.
        let prev = self.state.fetch_add(READER, Ordering::Acquire);
        if prev & WRITER != 0 {
            self.state.fetch_sub(READER, Ordering::Relaxed);
            return false;
        }
        true
    }

    unsafe fn unlock_shared(&self) {
        // Release: pairs with the Acquire in `try_lock_exclusive`.
        self.state.fetch_sub(READER, Ordering::Release);
    }

    fn lock_exclusive(&self) {
        while !self.try_lock_exclusive() {
            spin_hint();
        }
    }

    fn try_lock_exclusive(&self) -> bool {
        // Acquire: pairs with the Release in both unlocks.
        self.state.compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    unsafe fn unlock_exclusive(&self) {
        // Release: pairs with the Acquire in both try_locks.
        self.state.fetch_and(!WRITER, Ordering::Release);
    }
}

/// A reader-writer spin lock.
pub type RwLock<T> = lock_api::RwLock<RawRwSpin, T>;
/// Shared guard.
pub type RwLockReadGuard<'a, T> = lock_api::RwLockReadGuard<'a, RawRwSpin, T>;
/// Exclusive guard.
pub type RwLockWriteGuard<'a, T> = lock_api::RwLockWriteGuard<'a, RawRwSpin, T>;

/// A new reader-writer lock.
pub fn new_rwlock<T>(v: T) -> RwLock<T> {
    RwLock::from_raw(RawRwSpin::new(), v)
}
