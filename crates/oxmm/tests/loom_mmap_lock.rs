//! Loom model of the mmap lock (`sync::brlock`): readers write only their
//! own CPU's count, writers scan every count (Dekker's protocol).
//!
//! Threads use the single-attempt `try_read`/`try_write`, which carry
//! all of the protocol's ordering (loom cannot bound the blocking forms'
//! spin loops). The protected data is a loom `UnsafeCell`, so loom fails the model on
//! any reader access that is not ordered against a writer access; the
//! assertions also check that a reader sees either the value before or
//! after a writer's two-step update, never the middle.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p oxmm --release --test loom_mmap_lock`
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use oxmm::platform::CpuId;
use oxmm::sync::brlock::BrLock;

struct Data {
    a: UnsafeCell<u64>,
    b: UnsafeCell<u64>,
}

// SAFETY: test-only; the lock under test orders every access, and loom
// reports any that it does not.
unsafe impl Sync for Data {}
// SAFETY: as above.
unsafe impl Send for Data {}

fn read_pair(lock: &BrLock<Data>, cpu: u32) {
    let Some(g) = lock.try_read(CpuId(cpu)) else { return };
    // SAFETY: loom checks these accesses against the writer's.
    let a = g.a.with(|p| unsafe { *p });
    // SAFETY: as above.
    let b = g.b.with(|p| unsafe { *p });
    assert_eq!(a, b, "a reader saw a half-done write");
}

fn write_pair(lock: &BrLock<Data>) -> bool {
    let Some(g) = lock.try_write() else { return false };
    // SAFETY: loom checks these accesses against the readers'.
    g.a.with_mut(|p| unsafe { *p += 1 });
    // SAFETY: as above.
    g.b.with_mut(|p| unsafe { *p += 1 });
    true
}

#[test]
fn reader_and_writer_exclude() {
    loom::model(|| {
        let lock = Arc::new(BrLock::new(2, Data { a: UnsafeCell::new(0), b: UnsafeCell::new(0) }));
        let l2 = lock.clone();
        let r = thread::spawn(move || read_pair(&l2, 1));
        let wrote = write_pair(&lock);
        r.join().unwrap();
        read_pair(&lock, 0);
        let _ = wrote;
    });
}

#[test]
fn two_writers_exclude() {
    loom::model(|| {
        let lock = Arc::new(BrLock::new(1, Data { a: UnsafeCell::new(0), b: UnsafeCell::new(0) }));
        let l2 = lock.clone();
        let w = thread::spawn(move || write_pair(&l2));
        let mine = write_pair(&lock);
        let theirs = w.join().unwrap();
        assert!(mine || theirs, "one of two writers always gets in");
        let g = lock.try_read(CpuId(0)).expect("no writer left");
        // SAFETY: both writers joined.
        assert_eq!(g.a.with(|p| unsafe { *p }), u64::from(mine) + u64::from(theirs));
    });
}
