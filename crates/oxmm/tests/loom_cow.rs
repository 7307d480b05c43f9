//! Loom model of copy-on-write racing with other write faults — the
//! protocol of `fault::wp::do_wp_page`.
//!
//! After a fork, page O (frame 0) is mapped read-only by the parent's PTE
//! and the child's PTE: mapcount 2, one reference per mapping. CPUs write-
//! fault: each reads its PTE (`EntrySlot::load_pte`), and
//!
//! - if O is exclusive — mapcount 1 and refcount 1, as
//!   `Frame::is_exclusive_anon` decides — reuses it: CAS the PTE to
//!   writable (a mapcount of 1 alone can be seen while the other side's
//!   references are still held, e.g. between a winner's mapcount drop and
//!   its puts);
//! - otherwise pins O under the PTE's table lock (after re-checking the
//!   PTE), copies it into its own new frame, and commits with
//!   `EntrySlot::cas_pte(old, new)` under the table lock, retrying while
//!   only the accessed bit changed; the winner drops O's mapcount under the
//!   lock and both references (the mapping's and its pin) after it, the
//!   loser frees its copy and drops its pin.
//!
//! Then each CPU performs its write through whatever its PTE maps (the
//! MMU's retry). Frame memory is Relaxed atomics, as in the hosted MMU.
//! In every interleaving: each PTE ends writable on a live frame; exactly
//! one CAS wins per PTE value; every frame's mapcount equals the PTEs
//! mapping it and its refcount equals its mapcount (no double decrement,
//! no pin left); every unmapped frame was freed exactly once; no copy reads
//! a freed frame; and each process sees exactly its own writes.
//!
//! The `broken_*` models replace the commit CAS by a plain store, or drop
//! the pin, and must fail.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p oxmm --test loom_cow`
#![cfg(loom)]

use loom::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use oxmm::addr::Pfn;
use oxmm::arch::{EntrySlot, Pte};

const RO: u64 = Pte::PRESENT | Pte::USER | Pte::ACCESSED;
const RW: u64 = RO | Pte::WRITABLE | Pte::DIRTY;
const ORIG: u64 = 0x0707;
/// Frames: 0 is O, 1..=3 are the copies of CPUs 1..=3.
const FRAMES: usize = 4;
/// Words per frame: CPU c writes word c - 1.
const WORDS: usize = 3;

#[derive(Clone, Copy)]
struct Variant {
    /// Commit the copy by CAS (the protocol) or by a plain store (broken).
    cas_commit: bool,
    /// Pin O before copying it (the protocol) or not (broken).
    pin: bool,
    /// Commit (the CAS and the drop of O's mapcount) under the table lock,
    /// as Linux's `wp_page_copy` does under the PTE lock — the fix for the
    /// bug `broken_commit_outside_the_table_lock` finds; the references are
    /// dropped after the lock, as `wp.rs` does.
    commit_under_ptl: bool,
}

/// The first protocol: commit outside the table lock (a double free).
const OUTSIDE_PTL: Variant = Variant { cas_commit: true, pin: true, commit_under_ptl: false };
/// The protocol as `fault/wp.rs` implements it: commit under the table
/// lock, as Linux's `wp_page_copy`.
const WP_RS: Variant = Variant { cas_commit: true, pin: true, commit_under_ptl: true };

struct World {
    /// 0: the parent's PTE, 1: the child's.
    ptes: [AtomicU64; 2],
    /// The page-table locks of the two PTEs' tables.
    ptl: [Mutex<()>; 2],
    mapcount: [AtomicI32; FRAMES],
    refcount: [AtomicU32; FRAMES],
    allocated: [AtomicUsize; FRAMES],
    freed: [AtomicUsize; FRAMES],
    data: [[AtomicU64; WORDS]; FRAMES],
    /// Winning commits per PTE.
    wins: [AtomicUsize; 2],
}

fn pfn(frame: usize) -> Pfn {
    Pfn::try_new(10 + frame as u64).unwrap()
}

fn frame_of(p: Pte) -> usize {
    (p.pfn().as_u64() - 10) as usize
}

impl World {
    fn new() -> Arc<World> {
        let w = World {
            ptes: [AtomicU64::new(Pte::new(pfn(0), RO).0), AtomicU64::new(Pte::new(pfn(0), RO).0)],
            ptl: [Mutex::new(()), Mutex::new(())],
            mapcount: core::array::from_fn(|i| AtomicI32::new(if i == 0 { 2 } else { 0 })),
            refcount: core::array::from_fn(|i| AtomicU32::new(if i == 0 { 2 } else { 0 })),
            allocated: core::array::from_fn(|i| AtomicUsize::new(usize::from(i == 0))),
            freed: core::array::from_fn(|_| AtomicUsize::new(0)),
            data: core::array::from_fn(|i| {
                core::array::from_fn(|_| AtomicU64::new(if i == 0 { ORIG } else { 0xdead }))
            }),
            wins: [AtomicUsize::new(0), AtomicUsize::new(0)],
        };
        Arc::new(w)
    }

    fn put_page(&self, f: usize) {
        if self.refcount[f].fetch_sub(1, Ordering::AcqRel) == 1 {
            self.freed[f].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `do_wp_page` for CPU `cpu` on PTE `p`, then the write the MMU
    /// retries.
    fn write(&self, cpu: usize, p: usize, v: Variant) {
        let slot = &self.ptes[p];
        let old = slot.load_pte();
        if !old.is_writable() {
            self.wp(cpu, p, old, v);
        }
        // The retried access: a winner made the PTE writable.
        let now = slot.load_pte();
        assert!(now.is_writable(), "CPU {cpu}: PTE {p} still read-only after the fault: {now:?}");
        let f = frame_of(now);
        assert_eq!(self.freed[f].load(Ordering::Relaxed), 0, "CPU {cpu} writes freed frame {f}");
        self.data[f][cpu - 1].store(cpu as u64, Ordering::Relaxed);
    }

    fn wp(&self, cpu: usize, p: usize, old: Pte, v: Variant) {
        let slot = &self.ptes[p];
        let of = frame_of(old);
        // Reuse: this mm maps the page alone and nothing else holds it.
        if self.mapcount[of].load(Ordering::Acquire) == 1 && self.refcount[of].load(Ordering::Acquire) == 1 {
            let _ = slot.cas_pte(old, old.with(Pte::WRITABLE | Pte::DIRTY));
            return;
        }
        if v.pin {
            let _ptl = self.ptl[p].lock().unwrap();
            if slot.load_pte() != old {
                return;
            }
            self.refcount[of].fetch_add(1, Ordering::Relaxed);
        }
        // Allocate this CPU's copy and copy O into it.
        let nf = cpu;
        self.allocated[nf].fetch_add(1, Ordering::Relaxed);
        self.refcount[nf].store(1, Ordering::Relaxed);
        self.mapcount[nf].store(1, Ordering::Relaxed);
        for k in 0..WORDS {
            let x = self.data[of][k].load(Ordering::Relaxed);
            assert_eq!(self.freed[of].load(Ordering::Relaxed), 0, "CPU {cpu} copies freed frame {of}");
            self.data[nf][k].store(x, Ordering::Relaxed);
        }
        let new = Pte::new(pfn(nf), RW);
        let ptl = v.commit_under_ptl.then(|| self.ptl[p].lock().unwrap());
        let won = if v.cas_commit {
            // As `wp.rs`: commit while the PTE still maps what was copied,
            // whatever the MMU did to its accessed bit meanwhile.
            let mut cur = slot.load_pte();
            loop {
                if cur.without(Pte::ACCESSED) != old.without(Pte::ACCESSED) {
                    break false;
                }
                match slot.cas_pte(cur, new) {
                    Ok(_) => break true,
                    Err(now) => cur = now,
                }
            }
        } else {
            slot.store(new.0, Ordering::Release);
            true
        };
        if won {
            self.wins[p].fetch_add(1, Ordering::Relaxed);
            // Under the table lock, as in `wp.rs`: the old page's mapcount
            // drops before anyone else can decide on it again.
            self.mapcount[of].fetch_sub(1, Ordering::AcqRel);
            drop(ptl);
            // The mapping's reference, then the pin — after the lock.
            self.put_page(of);
            if v.pin {
                self.put_page(of);
            }
        } else {
            drop(ptl);
            self.mapcount[nf].store(0, Ordering::Relaxed);
            self.put_page(nf);
            if v.pin {
                self.put_page(of);
            }
        }
    }

    /// The end state, after every CPU is done. `writers[p]` are the CPUs
    /// that wrote through PTE p.
    fn check(&self, writers: [&[usize]; 2]) {
        let mut mapped = [0i32; FRAMES];
        for (p, ws) in writers.iter().enumerate() {
            let pte = self.ptes[p].load_pte();
            let f = frame_of(pte);
            mapped[f] += 1;
            if !ws.is_empty() {
                assert!(pte.is_writable(), "PTE {p}: {pte:?}");
            }
            // The process sees exactly its own writes.
            for k in 0..WORDS {
                let want = if ws.contains(&(k + 1)) { (k + 1) as u64 } else { ORIG };
                assert_eq!(self.data[f][k].load(Ordering::Relaxed), want, "PTE {p} frame {f} word {k}");
            }
            assert!(self.wins[p].load(Ordering::Relaxed) <= 1, "PTE {p} committed twice");
        }
        for (f, &mapped_f) in mapped.iter().enumerate() {
            let (mc, rc) = (self.mapcount[f].load(Ordering::Relaxed), self.refcount[f].load(Ordering::Relaxed));
            let freed = self.freed[f].load(Ordering::Relaxed);
            let allocated = self.allocated[f].load(Ordering::Relaxed);
            assert!(freed <= 1, "frame {f} freed {freed} times");
            assert!(allocated <= 1);
            if mapped_f > 0 {
                assert_eq!(freed, 0, "frame {f} mapped but freed");
                assert_eq!(mc, mapped_f, "frame {f}: mapcount {mc}, mapped {}", mapped_f);
                assert_eq!(rc as i32, mc, "frame {f}: refcount {rc}, mapcount {mc}");
            } else {
                assert_eq!(mc, 0, "frame {f}: unmapped, mapcount {mc}");
                assert_eq!(rc, 0, "frame {f}: unmapped, refcount {rc} (leak or pin left)");
                assert_eq!(freed, allocated, "frame {f}: allocated {allocated}, freed {freed}");
            }
        }
    }
}

/// Two CPUs of the parent write-fault the parent's PTE at once.
fn same_pte(v: Variant) {
    loom::model(move || {
        let w = World::new();
        let w1 = w.clone();
        let t = thread::spawn(move || w1.write(1, 0, v));
        w.write(2, 0, v);
        t.join().unwrap();
        w.check([&[1, 2], &[]]);
    });
}

/// The parent and the child write-fault their PTEs at once (copy against
/// reuse).
fn across_ptes(v: Variant) {
    loom::model(move || {
        let w = World::new();
        let w1 = w.clone();
        let t = thread::spawn(move || w1.write(1, 0, v));
        w.write(3, 1, v);
        t.join().unwrap();
        w.check([&[1], &[3]]);
    });
}

/// Both at once: two parent CPUs and the child.
fn all_three(v: Variant, bound: usize) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound);
    b.check(move || {
        let w = World::new();
        let (w1, w2) = (w.clone(), w.clone());
        let t1 = thread::spawn(move || w1.write(1, 0, v));
        let t2 = thread::spawn(move || w2.write(2, 0, v));
        w.write(3, 1, v);
        t1.join().unwrap();
        t2.join().unwrap();
        w.check([&[1, 2], &[3]]);
    });
}

#[test]
fn two_cpus_of_one_mm_on_the_same_pte() {
    same_pte(WP_RS);
}

#[test]
fn parent_and_child_copy_or_reuse() {
    across_ptes(WP_RS);
}

/// Found by this model: the child commits its copy (O: mapcount 1, one
/// reference left, the parent's). Parent CPU 2 has read the parent PTE and
/// mapcount 2, takes the table lock and sees the PTE still `old`. Parent
/// CPU 1 — which pinned O earlier — now commits its copy *without the
/// table lock*, drops O's mapcount to 0 and both its references: O is
/// freed. CPU 2 then pins the freed O (refcount 0 → 1), copies it, loses
/// its CAS, and unpins it: refcount 1 → 0, O is freed a second time.
/// (A plain sequential interleaving, not a weak-memory effect.) This was
/// `fault/wp.rs`'s first protocol; the model keeps it to show it fails.
#[test]
#[should_panic]
fn broken_commit_outside_the_table_lock() {
    all_three(OUTSIDE_PTL, 3);
}

#[test]
fn two_parent_cpus_and_the_child() {
    all_three(WP_RS, 3);
}

#[test]
#[should_panic]
fn broken_commit_by_store() {
    same_pte(Variant { cas_commit: false, ..WP_RS });
}

#[test]
#[should_panic]
fn broken_commit_by_store_with_the_child() {
    all_three(Variant { cas_commit: false, ..WP_RS }, 2);
}

#[test]
#[should_panic(expected = "freed frame")]
fn broken_copy_without_pin() {
    all_three(Variant { pin: false, ..WP_RS }, 3);
}
