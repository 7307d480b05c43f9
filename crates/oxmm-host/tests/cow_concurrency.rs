//! Copy-on-write under concurrency: two CPUs of one process write-fault the
//! same COW-shared pages at once while a third CPU, running the child,
//! writes them too. Each PTE is committed by compare-and-swap, so exactly
//! one copy survives per (process, page), the losers free theirs, no write
//! is lost, and after every exit nothing leaks — under both schemes.

mod common;

use std::sync::Barrier;

use common::*;
use oxmm::mm::Prot;
use oxmm::rmap::RmapScheme;

const SCHEMES: [RmapScheme; 2] = [RmapScheme::PteChains, RmapScheme::Object];
const PAGES: u64 = 64;
const ROUNDS: u64 = 6;

/// One word per writer in each page: CPU 0 and CPU 1 (parent), CPU 2
/// (child), so that every write must survive the races.
fn word(w: u64) -> u64 {
    8 * w
}

fn value(round: u64, w: u64, page: u64) -> u64 {
    (round << 32) | (w << 16) | page
}

#[test]
fn parent_cpus_and_child_write_the_same_cow_pages() {
    for scheme in SCHEMES {
        let mut r = Rig::with_rmap(scheme);
        let a = r.map(PAGES * PAGE, Prot::RW);
        r.cpu.fill(a, PAGES * PAGE, 0x11).unwrap();
        let parent = r.proc.clone();
        let machine = r.machine.clone();
        let fill = u64::from_le_bytes([0x11; 8]);
        for round in 0..ROUNDS {
            let child = r.cpu.fork(&parent).unwrap();
            assert_eq!(r.machine.meminfo().anon, PAGES);
            let start = Barrier::new(3);
            std::thread::scope(|s| {
                let spawn = |w: u64, p: oxmm_host::Process| {
                    let (machine, start) = (&machine, &start);
                    s.spawn(move || {
                        let mut cpu = machine.cpu(w as usize + 1).unwrap();
                        cpu.switch_to(&p);
                        start.wait();
                        // Writers 1 and 2 go in opposite orders, writer 0
                        // (the rig's CPU, below) forwards: every pair meets.
                        for k in 0..PAGES {
                            let i = if w == 1 { PAGES - 1 - k } else { (k * 5) % PAGES };
                            cpu.write_u64(a + i * PAGE + word(w), value(round, w, i)).unwrap();
                        }
                    })
                };
                let t1 = spawn(1, parent.clone());
                let t2 = spawn(2, child.clone());
                start.wait();
                for i in 0..PAGES {
                    r.cpu.write_u64(a + i * PAGE + word(0), value(round, 0, i)).unwrap();
                }
                t1.join().unwrap();
                t2.join().unwrap();
            });
            r.check();
            // Exactly one copy per page: the first writer of each page
            // copies, the other process then maps the original alone and
            // reuses it (or both copy, and the original is freed).
            assert_eq!(r.machine.meminfo().anon, 2 * PAGES, "{scheme:?} round {round}");
            assert_eq!(parent.rss().anon, PAGES);
            assert_eq!(child.rss().anon, PAGES);
            for i in 0..PAGES {
                let p = a + i * PAGE;
                assert_eq!(r.cpu.read_u64(p + word(0)).unwrap(), value(round, 0, i), "{scheme:?} page {i}");
                assert_eq!(r.cpu.read_u64(p + word(1)).unwrap(), value(round, 1, i), "{scheme:?} page {i}");
                let before = if round == 0 { fill } else { value(round - 1, 2, i) };
                assert_eq!(r.cpu.read_u64(p + word(2)).unwrap(), before, "{scheme:?}: the child's write leaked");
                let pfn = r.pfn_of(&parent, p);
                assert_eq!(r.mapcount_of(pfn), 1);
                assert_eq!(r.rmap_of(pfn), at(&[&parent], p), "{scheme:?}");
            }
            r.cpu.switch_to(&child);
            for i in 0..PAGES {
                let p = a + i * PAGE;
                let before = if round == 0 { fill } else { value(round - 1, 0, i) };
                assert_eq!(r.cpu.read_u64(p + word(0)).unwrap(), before, "{scheme:?}: the parent's write leaked");
                assert_eq!(r.cpu.read_u64(p + word(2)).unwrap(), value(round, 2, i));
            }
            r.cpu.switch_to(&parent);
            // The parent carries the child's word of this round into the
            // next, so each round checks the previous one's data.
            for i in 0..PAGES {
                r.cpu.write_u64(a + i * PAGE + word(2), value(round, 2, i)).unwrap();
                r.cpu.write_u64(a + i * PAGE + word(0), value(round, 0, i)).unwrap();
            }
            r.cpu.exit_process(child);
            r.check();
            assert_eq!(r.machine.meminfo().anon, PAGES, "{scheme:?}: the child's copies are freed");
        }
        assert!(r.stat("wp_reuse") > 0, "{scheme:?}: the second writer of a page reuses it");
    }
}

#[test]
fn two_cpus_of_the_only_mapper_reuse_without_copying() {
    for scheme in SCHEMES {
        let mut r = Rig::with_rmap(scheme);
        let a = r.map(PAGES * PAGE, Prot::RW);
        r.cpu.fill(a, PAGES * PAGE, 1).unwrap();
        let parent = r.proc.clone();
        let child = r.cpu.fork(&parent).unwrap();
        r.cpu.exit_process(child);
        // Read-only again but mapped once: both CPUs must reuse.
        let machine = r.machine.clone();
        let start = Barrier::new(2);
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                let mut cpu = machine.cpu(1).unwrap();
                cpu.switch_to(&parent);
                start.wait();
                for i in (0..PAGES).rev() {
                    cpu.write_u64(a + i * PAGE + 8, 2).unwrap();
                }
            });
            start.wait();
            for i in 0..PAGES {
                r.cpu.write_u64(a + i * PAGE, 3).unwrap();
            }
            t.join().unwrap();
        });
        assert_eq!(r.machine.meminfo().anon, PAGES, "{scheme:?}: no copy for a sole mapper");
        for i in 0..PAGES {
            assert_eq!(r.cpu.read_u64(a + i * PAGE).unwrap(), 3);
            assert_eq!(r.cpu.read_u64(a + i * PAGE + 8).unwrap(), 2);
        }
        r.check();
    }
}

/// A page that fork shared is not the parent's alone while the child's
/// munmap is still running: the child's zap has dropped the mapcount to 1,
/// but until its TLB flush the child's other CPUs may still read the page
/// through stale translations. Reusing it in place then — through a write
/// fault, or through mprotect making the PTE writable — would let them see
/// what the parent writes after the fork. Linux decides on the reference
/// count, which the zap drops only after the flush, and copies instead.
///
/// The child's munmap zaps the watched page first and flushes after 20,000
/// more, so the parent's write lands inside that window in most rounds.
#[test]
fn a_write_during_the_other_mms_unmap_never_reaches_its_stale_tlb() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    const N: u64 = 20_000;
    for via_mprotect in [false, true] {
        let cfg = oxmm_host::MachineConfig { mem_bytes: 256 << 20, cpus: 3, ..Default::default() };
        let mut r = Rig::with(cfg);
        let p = r.map(N * PAGE, Prot::RW);
        r.cpu.fill(p, N * PAGE, 1).unwrap();
        let parent = r.proc.clone();
        let (mut stale, mut in_window) = (0, 0);
        for round in 0..3u64 {
            r.cpu.write_u64(p, 0).unwrap();
            let child = r.cpu.fork(&parent).unwrap();
            if via_mprotect {
                r.cpu.mprotect(p.as_u64(), PAGE, Prot::READ).unwrap();
            }
            let frame = r.machine.sys().phys.frame(r.pfn_of(&parent, p));
            let reader = Remote::new(&r.machine, 1, &child);
            let unmapper = Remote::new(&r.machine, 2, &child);
            // The child's CPU 1 caches the page's translation.
            assert_eq!(reader.run(move |cpu| cpu.read_u64(p).unwrap()), 0);
            let done = Arc::new(AtomicBool::new(false));
            let seen = Arc::new(AtomicU64::new(0));
            let secret = 0x5ec_0000 + round;
            std::thread::scope(|s| {
                let (d, n) = (done.clone(), seen.clone());
                let rd = s.spawn(|| {
                    reader.run(move |cpu| {
                        while !d.load(Ordering::Acquire) {
                            if cpu.read_u64(p) == Ok(secret) {
                                n.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                });
                let d = done.clone();
                let un = s.spawn(|| {
                    unmapper.run(move |cpu| {
                        cpu.munmap(p.as_u64(), N * PAGE).unwrap();
                        d.store(true, Ordering::Release);
                    })
                });
                while frame.mapcount() != 1 && !done.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                in_window += u64::from(!done.load(Ordering::Acquire));
                if via_mprotect {
                    r.cpu.mprotect(p.as_u64(), PAGE, Prot::RW).unwrap();
                }
                r.cpu.write_u64(p, secret).unwrap();
                un.join().unwrap();
                rd.join().unwrap();
            });
            stale += seen.load(Ordering::Relaxed);
            drop((reader, unmapper));
            r.cpu.exit_process(child);
            assert_eq!(r.cpu.read_u64(p).unwrap(), secret);
        }
        assert_eq!(stale, 0, "mprotect {via_mprotect}: the child read the parent's post-fork data (writes in the window: {in_window} of 3)");
        r.check();
    }
}
