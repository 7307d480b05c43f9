//! Loom model of the per-CPU RSS counters (`mm::rss`, seed 002's "sloppy
//! rss" made exact on read).
//!
//! Faults add to their own CPU's counters with Relaxed atomics; a reader
//! folds every CPU's counters. The models run the real [`RssCounters`]
//! over loom atomics and check, in every interleaving:
//!
//! - a fold racing the updates never returns a negative count (the sum
//!   of the per-CPU values can be, for an instant, when a page mapped on
//!   one CPU is unmapped on another: the fold clamps) and never more
//!   than the largest total the counters ever held;
//! - once the updaters are joined (or have otherwise handed over with a
//!   Release/Acquire edge) the fold is exact.
//!
//! The `broken_*` model folds after a Relaxed hand-over and must fail:
//! the fold is exact only after a happens-before edge, and the model can
//! tell.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p oxmm --test loom_rss_fold`
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

use oxmm::mm::rss::{RssCounters, RssKind};
use oxmm::platform::CpuId;
use oxmm::system::RssMode;

/// Two CPUs each map pages (`add`) while a third folds.
#[test]
fn fold_races_adds_and_is_exact_after_join() {
    loom::model(|| {
        let rss = Arc::new(RssCounters::new(2, RssMode::PerCpu));
        let updaters: Vec<_> = (0..2u32)
            .map(|c| {
                let rss = rss.clone();
                // CPU 0 maps one page, CPU 1 a prefault window of 2.
                thread::spawn(move || rss.add(CpuId(c), RssKind::Anon, i64::from(c) + 1))
            })
            .collect();
        let folder = {
            let rss = rss.clone();
            thread::spawn(move || {
                let a = rss.fold().anon;
                let b = rss.fold().anon;
                assert!(a <= 3 && b <= 3, "fold above the total: {a}, {b}");
                // Each CPU's counter only grows, and a later fold reads
                // every counter no earlier than the first fold did.
                assert!(a <= b, "a later fold went back: {a} then {b}");
            })
        };
        for u in updaters {
            u.join().unwrap();
        }
        folder.join().unwrap();
        let r = rss.fold();
        assert_eq!((r.anon, r.file, r.shmem), (3, 0, 0), "fold after join");
    });
}

/// A page mapped on CPU 0 is unmapped on CPU 1 (which learnt of it
/// through a Release/Acquire edge, as through the PTE): CPU 1's counter
/// goes negative. A racing fold never reports a negative count nor more
/// than the 2 pages ever mapped; after the hand-over it is exact.
#[test]
fn fold_clamps_a_migrated_unmap_and_is_exact_after_handover() {
    loom::model(|| {
        let rss = Arc::new(RssCounters::new(2, RssMode::PerCpu));
        let mapped = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let cpu0 = {
            let (rss, mapped) = (rss.clone(), mapped.clone());
            thread::spawn(move || {
                rss.add(CpuId(0), RssKind::Anon, 2);
                // Release: the "PTE" that publishes the mapping.
                mapped.store(true, Ordering::Release);
            })
        };
        let cpu1 = {
            let (rss, mapped, done) = (rss.clone(), mapped.clone(), done.clone());
            thread::spawn(move || {
                if mapped.load(Ordering::Acquire) {
                    rss.add(CpuId(1), RssKind::Anon, -1);
                    done.store(true, Ordering::Release);
                }
            })
        };
        let a = rss.fold().anon;
        assert!(a <= 2, "fold above every total: {a}");
        if done.load(Ordering::Acquire) {
            // Both updates happened before this fold.
            assert_eq!(rss.fold().anon, 1, "fold after the hand-over");
        }
        cpu0.join().unwrap();
        cpu1.join().unwrap();
        let want = if done.load(Ordering::Relaxed) { 1 } else { 2 };
        assert_eq!(rss.fold().anon, want, "fold after join");
    });
}

/// The shared mode: both CPUs add to one counter triple; no update lost.
#[test]
fn shared_mode_loses_no_update() {
    loom::model(|| {
        let rss = Arc::new(RssCounters::new(2, RssMode::Shared));
        let t: Vec<_> = (0..2u32)
            .map(|c| {
                let rss = rss.clone();
                thread::spawn(move || rss.add(CpuId(c), RssKind::Anon, 1))
            })
            .collect();
        let a = rss.fold().anon;
        assert!(a <= 2);
        for t in t {
            t.join().unwrap();
        }
        assert_eq!(rss.fold().anon, 2);
    });
}

/// The fold is exact only after a happens-before edge from the updates:
/// a Relaxed "done" flag is not one, and loom finds a fold that misses
/// an update.
#[test]
#[should_panic(expected = "fold after a relaxed hand-over")]
fn broken_relaxed_handover_is_caught() {
    loom::model(|| {
        let rss = Arc::new(RssCounters::new(2, RssMode::PerCpu));
        let done = Arc::new(AtomicBool::new(false));
        let t = {
            let (rss, done) = (rss.clone(), done.clone());
            thread::spawn(move || {
                rss.add(CpuId(1), RssKind::Anon, 1);
                done.store(true, Ordering::Relaxed);
            })
        };
        if done.load(Ordering::Relaxed) {
            assert_eq!(rss.fold().anon, 1, "fold after a relaxed hand-over");
        }
        t.join().unwrap();
    });
}
