//! Loom model of seed 001's `lock_rmap` index re-check
//! (`oxmm::rmap::locks::RmapLocks`), run on the real functions.
//!
//! A frame's reverse map is protected by the rmap lock its `index` hashes
//! to, and the index can change (`set_index`, under the old index's lock).
//! One thread re-indexes a frame from A to B (different lock slots) and
//! then works on the rmap under `lock_rmap`; another takes `lock_rmap` and,
//! holding the guard, reads the index and works on the data of the lock
//! that index names. That data is a loom `UnsafeCell` per lock slot, so a
//! thread working under the wrong lock is a data race loom reports; the
//! model also asserts directly that the held slot is the index's slot.
//!
//! The `broken_*` models drop one half of the protocol and must fail:
//! without the re-check a waiter can hold A's lock after the index moved
//! to B; with an index store outside the lock the index can move while a
//! holder relies on it.
//!
//! The lock table has `RMAP_LOCKS` = 256 entries; loom builds it in every
//! execution, which is cheap next to the exploration itself (the models
//! finish in well under a second in release).
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p oxmm --test loom_lock_rmap`
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom::thread;

use oxmm::phys::frame::Frame;
use oxmm::rmap::locks::{RmapGuard, RmapLocks, RMAP_LOCKS};

/// Two indexes hashing to different lock slots.
const A: u64 = 7;
const B: u64 = 7 + 1 + RMAP_LOCKS as u64 * 3;

struct World {
    locks: RmapLocks,
    frame: Frame,
    /// "The reverse maps protected by lock slot A / slot B".
    data: [UnsafeCell<u64>; 2],
}

// SAFETY: test-only; loom checks every access to `data` and fails the model
// on any access not ordered against a conflicting one.
unsafe impl Sync for World {}
// SAFETY: as above.
unsafe impl Send for World {}

impl World {
    fn new() -> Arc<World> {
        let frame = Frame::new(0);
        frame.index.store(A, Ordering::Relaxed);
        Arc::new(World { locks: RmapLocks::new(), frame, data: [UnsafeCell::new(0), UnsafeCell::new(0)] })
    }

    fn cell(&self, slot: usize) -> &UnsafeCell<u64> {
        if slot == RmapLocks::slot_of(A) {
            &self.data[0]
        } else {
            assert_eq!(slot, RmapLocks::slot_of(B));
            &self.data[1]
        }
    }

    /// Holding `g`: the index must hash to the held lock; work on the data
    /// that lock protects.
    fn work(&self, g: &RmapGuard<'_>, assert_slot: bool) -> u64 {
        let index = self.frame.index.load(Ordering::Relaxed);
        if assert_slot {
            assert_eq!(RmapLocks::slot_of(index), g.slot(), "holding lock {} for index {index}", g.slot());
        }
        self.cell(RmapLocks::slot_of(index)).with_mut(|p| {
            // SAFETY: loom checks this access (see the Sync impl).
            unsafe { *p += 1 }
        });
        index
    }
}

/// The protocol under test, with a choice of `lock_rmap` and `set_index`.
type LockFn = for<'a> fn(&'a RmapLocks, &'a Frame) -> RmapGuard<'a>;

///
/// With `assert_slot` false only loom's race detection on the per-slot data
/// can notice a wrong lock.
fn model(lock: LockFn, set: fn(&RmapLocks, &Frame, u64), assert_slot: bool) {
    loom::model(move || {
        let w = World::new();
        let w2 = w.clone();
        let mover = thread::spawn(move || {
            set(&w2.locks, &w2.frame, B);
            let g = lock(&w2.locks, &w2.frame);
            assert_eq!(w2.work(&g, assert_slot), B);
        });
        let g = lock(&w.locks, &w.frame);
        let seen = w.work(&g, assert_slot);
        assert!(seen == A || seen == B);
        drop(g);
        mover.join().unwrap();
        assert_eq!(w.frame.index.load(Ordering::Relaxed), B);
    });
}

fn real_lock<'a>(l: &'a RmapLocks, f: &'a Frame) -> RmapGuard<'a> {
    l.lock_rmap(f)
}

fn real_set(l: &RmapLocks, f: &Frame, index: u64) {
    l.set_index(f, index)
}

#[test]
fn lock_rmap_always_holds_the_lock_of_the_index_it_sees() {
    model(real_lock, real_set, true);
    model(real_lock, real_set, false);
}

/// A → B → A: the index comes back to its first slot while a waiter holds
/// nothing; the re-check compares slots, so it is still right.
#[test]
fn lock_rmap_with_the_index_moving_back_and_forth() {
    loom::model(|| {
        let w = World::new();
        let w2 = w.clone();
        let mover = thread::spawn(move || {
            w2.locks.set_index(&w2.frame, B);
            w2.locks.set_index(&w2.frame, A);
        });
        let g = w.locks.lock_rmap(&w.frame);
        w.work(&g, true);
        drop(g);
        mover.join().unwrap();
    });
}

fn lock_no_recheck<'a>(l: &'a RmapLocks, f: &'a Frame) -> RmapGuard<'a> {
    let index = f.index.load(Ordering::Acquire);
    l.lock_slot(RmapLocks::slot_of(index))
}

fn set_unlocked(_: &RmapLocks, f: &Frame, index: u64) {
    f.index.store(index, Ordering::Release);
}

#[test]
#[should_panic(expected = "holding lock")]
fn broken_lock_rmap_without_the_recheck() {
    model(lock_no_recheck, real_set, true);
}

#[test]
#[should_panic(expected = "holding lock")]
fn broken_set_index_without_the_lock() {
    model(real_lock, set_unlocked, true);
}

/// The same two breakages, caught by loom's race detector alone (the
/// slot assertion off): the per-slot data is touched under the wrong lock.
#[test]
#[should_panic]
fn broken_lock_rmap_without_the_recheck_races() {
    model(lock_no_recheck, real_set, false);
}

#[test]
#[should_panic]
fn broken_set_index_without_the_lock_races() {
    model(real_lock, set_unlocked, false);
}
