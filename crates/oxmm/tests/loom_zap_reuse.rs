//! Loom model of zap's flush-before-put against copy-on-write reuse
//! (`mm::zap` and `Frame::is_exclusive_anon`, used by `fault::wp`).
//!
//! After a fork, page O is mapped read-only by the parent and the child
//! (mapcount 2, a reference per mapping). A CPU of the child still holds
//! O in its TLB and reads through it. The child unmaps O on another CPU:
//! zap exchanges its PTE away, drops O's mapcount, flushes the child's
//! TLBs (waits for the reading CPU's access window, as the hosted
//! shootdown does: here a Dekker handshake with SeqCst fences, which loom
//! models — it models SeqCst loads and stores as AcqRel (tokio-rs/loom
//! issue 180) — standing for `loom_tlb_shootdown`'s protocol), and only then
//! drops the mapping's reference. At the
//! same time a parent CPU write-faults on O and reuses it in place if
//! `is_exclusive_anon` says it may. In every interleaving loom explores,
//! the child's stale reads never see the parent's write: the reference
//! count reaches 1 only after the flush, and its Acquire load pairs with
//! the put's release.
//!
//! The model runs the real `Frame` and `is_exclusive_anon`. The `broken_*`
//! model reuses on the mapcount alone — the rule before 7bcfe60 — and must
//! fail.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p oxmm --test loom_zap_reuse`
#![cfg(loom)]

use loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

use oxmm::addr::Pfn;
use oxmm::arch::{EntrySlot, Pte};
use oxmm::phys::frame::{flags, Frame};

const BEFORE: u64 = 1;
const AFTER: u64 = 2;

struct World {
    page: Frame,
    data: AtomicU64,
    parent_pte: AtomicU64,
    child_pte: AtomicU64,
    /// The child's reading CPU: in an access window.
    in_window: AtomicBool,
    /// Its TLB has been flushed.
    flushed: AtomicBool,
}

fn ro() -> Pte {
    Pte::new(Pfn::try_new(10).unwrap(), Pte::PRESENT | Pte::USER | Pte::ACCESSED)
}

fn world() -> Arc<World> {
    let page = Frame::new(0);
    page.flags.store(flags::ALLOCATED | flags::ANON, Ordering::Relaxed);
    page.mapcount.store(2, Ordering::Relaxed);
    page.refcount.store(2, Ordering::Relaxed);
    Arc::new(World {
        page,
        data: AtomicU64::new(BEFORE),
        parent_pte: AtomicU64::new(ro().0),
        child_pte: AtomicU64::new(ro().0),
        in_window: AtomicBool::new(false),
        flushed: AtomicBool::new(false),
    })
}

fn zap_against_reuse(reuse: fn(&Frame) -> bool) {
    loom::model(move || {
        let w = world();
        // The child's CPU with O in its TLB: one access window.
        let reader = {
            let w = w.clone();
            thread::spawn(move || {
                w.in_window.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if !w.flushed.load(Ordering::SeqCst) {
                    let v = w.data.load(Ordering::Relaxed);
                    assert_eq!(v, BEFORE, "the child read the parent's write through its stale TLB");
                }
                w.in_window.store(false, Ordering::SeqCst);
            })
        };
        // The parent's write fault: reuse O in place if it may.
        let writer = {
            let w = w.clone();
            thread::spawn(move || {
                let old = w.parent_pte.load_pte();
                if reuse(&w.page) && w.parent_pte.cas_pte(old, old.with(Pte::WRITABLE | Pte::DIRTY)).is_ok() {
                    w.data.store(AFTER, Ordering::Relaxed);
                }
            })
        };
        // The child's munmap on another CPU: zap, flush, then put.
        w.child_pte.xchg_pte(Pte::NONE);
        w.page.mapcount.fetch_sub(1, Ordering::AcqRel);
        w.flushed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        while w.in_window.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        w.page.refcount.fetch_sub(1, Ordering::AcqRel);
        reader.join().unwrap();
        writer.join().unwrap();
    });
}

#[test]
fn the_stale_reader_never_sees_a_write_reusing_the_page() {
    zap_against_reuse(Frame::is_exclusive_anon);
}

#[test]
#[should_panic(expected = "stale TLB")]
fn broken_reuse_on_the_mapcount_alone() {
    zap_against_reuse(|f| f.has(flags::ANON) && f.mapcount() == 1);
}
