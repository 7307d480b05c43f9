//! pte chains (seeds 000 and 001): chain sharing in fork fan-out, explicit
//! entries after mremap, and chain-node coalescing (seed 000's node-page
//! defragmentation), alone and racing with COW faults.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;

use common::*;
use oxmm::addr::VirtAddr;
use oxmm::mm::flags::RemapFlags;
use oxmm::mm::Prot;
use oxmm::rmap::{self, RmapScheme};
use oxmm_host::{MachineConfig, Process};

const TWO_MIB: u64 = 2 << 20;
const MOVE_FIXED: RemapFlags = RemapFlags(RemapFlags::MAYMOVE.0 | RemapFlags::FIXED.0);
/// A 2 MiB-aligned address, so a region's page tables are predictable.
const BASE: u64 = 0x4000_0000;

fn rig() -> Rig {
    Rig::with_rmap(RmapScheme::PteChains)
}

fn stats(r: &Rig) -> rmap::RmapStats {
    rmap::stats(r.machine.sys())
}

/// The sorted mappings of every page of `[a, a + pages)` as `p` maps them.
/// (page number → (pfn, mappings)).
fn snapshot(r: &Rig, p: &Process, a: VirtAddr, pages: u64) -> BTreeMap<u64, (u64, Vec<(u64, u64)>)> {
    (0..pages)
        .map(|i| {
            let pfn = r.pfn_of(p, a + i * PAGE);
            (i, (pfn.as_u64(), r.rmap_of(pfn)))
        })
        .collect()
}

mod sharing {
    use super::*;

    #[test]
    fn fork_fan_out_of_16_children_costs_a_fraction_of_the_page_tables() {
        let mut r = rig();
        let pages = (4 << 20) / PAGE;
        let a = r.map_fixed(BASE, pages * PAGE, Prot::RW);
        r.cpu.fill(a, pages * PAGE, 1).unwrap();
        let kids: Vec<_> = (0..16).map(|_| r.cpu.fork(&r.proc.clone()).unwrap()).collect();
        r.check();
        let st = stats(&r);
        assert_eq!(st.reverse_maps, pages, "every page has a chain: {st:?}");
        assert_eq!(st.mapped_ptes, pages * 17, "{st:?}");
        // Two page-table pages, each with one chain of 17 entries shared by
        // its 512 pages: three nodes each.
        assert_eq!(st.chain_nodes, 2 * 17u64.div_ceil(6), "{st:?}");
        assert_eq!(st.chain_bytes, st.chain_nodes * 64);
        assert!(st.chain_page_bytes >= st.chain_bytes);
        assert!(
            st.chain_bytes * 4 <= st.page_table_bytes,
            "chains {} bytes vs page tables {} bytes",
            st.chain_bytes,
            st.page_table_bytes
        );
        // Every page is found in all 17 processes.
        let pfn = r.pfn_of(&r.proc.clone(), a + 700 * PAGE);
        assert_eq!(r.rmap_of(pfn).len(), 17);
        for k in kids {
            r.cpu.exit_process(k);
        }
        let st = stats(&r);
        assert_eq!(st.chain_nodes, 2, "one one-entry chain per table (no collapse to direct): {st:?}");
    }

    #[test]
    fn mremap_of_a_shared_range_uses_explicit_entries() {
        let mut r = rig();
        let pages = 64;
        let a = r.map_fixed(BASE, pages * PAGE, Prot::RW);
        r.cpu.fill(a, pages * PAGE, 2).unwrap();
        let parent = r.proc.clone();
        let kids: Vec<_> = (0..3).map(|_| r.cpu.fork(&parent).unwrap()).collect();
        let before = stats(&r);
        // Kid 0 moves 16 pages from the middle to an address with another
        // slot (explicit entries); kid 1 moves them by exactly 2 MiB (same
        // slots, another table: plain table entries).
        let src = a + 8 * PAGE;
        r.cpu.switch_to(&kids[0]);
        let unaligned = BASE + 5 * TWO_MIB + 3 * PAGE;
        let m0 = r.cpu.mremap(src.as_u64(), 16 * PAGE, 16 * PAGE, MOVE_FIXED, unaligned).unwrap();
        assert_eq!(m0.as_u64(), unaligned);
        r.check();
        r.cpu.switch_to(&kids[1]);
        let m1 = r.cpu.mremap(src.as_u64(), 16 * PAGE, 16 * PAGE, MOVE_FIXED, src.as_u64() + TWO_MIB).unwrap();
        r.check();
        for i in 0..16 {
            let pfn = r.pfn_of(&parent, src + i * PAGE);
            let mut want = at(&[&parent, &kids[2]], src + i * PAGE);
            want.push((kids[0].mm().id(), (m0 + i * PAGE).as_u64()));
            want.push((kids[1].mm().id(), (m1 + i * PAGE).as_u64()));
            want.sort_unstable();
            assert_eq!(r.rmap_of(pfn), want, "page {i}");
        }
        let after = stats(&r);
        assert_eq!(after.reverse_maps, before.reverse_maps, "{before:?} -> {after:?}");
        assert_eq!(after.mapped_ptes, before.mapped_ptes);
        // The moved pages are still COW-shared: a write in kid 0 copies.
        r.cpu.switch_to(&kids[0]);
        r.cpu.write_u8(m0 + PAGE, 7).unwrap();
        assert_eq!(r.cpu.sum(m0, 16 * PAGE).unwrap(), 2 * 16 * PAGE + 5);
        r.cpu.switch_to(&parent);
        assert_eq!(r.cpu.sum(a, pages * PAGE).unwrap(), 2 * pages * PAGE);
        r.check();
        for k in kids {
            r.cpu.exit_process(k);
            r.check();
        }
    }
}

mod coalesce {
    use super::*;

    /// Fragment node pages: two regions X and Y shared by nine processes;
    /// one child COWs X and Y pages alternately (each gets its own chain of
    /// eight entries — two nodes, a head and a tail — allocated
    /// interleaved), then Y goes everywhere, leaving every node page about
    /// half empty. Returns (parent, kids, X, COWed X pages).
    fn fragment(r: &mut Rig) -> (Process, Vec<Process>, VirtAddr, u64) {
        let pages = 256u64;
        let cowed = 200u64;
        let x = r.map_fixed(BASE, pages * PAGE, Prot::RW);
        let y = r.map_fixed(BASE + TWO_MIB, pages * PAGE, Prot::RW);
        r.cpu.fill(x, pages * PAGE, 1).unwrap();
        r.cpu.fill(y, pages * PAGE, 2).unwrap();
        let parent = r.proc.clone();
        let kids: Vec<_> = (0..8).map(|_| r.cpu.fork(&parent).unwrap()).collect();
        r.cpu.switch_to(&kids[0]);
        for i in 0..pages {
            if i < cowed {
                r.cpu.write_u8(x + i * PAGE, 3).unwrap();
            }
            r.cpu.write_u8(y + i * PAGE, 4).unwrap();
        }
        for p in std::iter::once(&parent).chain(kids.iter()) {
            r.cpu.switch_to(p);
            r.cpu.munmap(y.as_u64(), pages * PAGE).unwrap();
        }
        r.cpu.switch_to(&parent);
        r.check();
        (parent, kids, x, cowed)
    }

    #[test]
    fn frees_node_pages_and_keeps_every_chain() {
        let mut r = rig();
        let (parent, kids, x, cowed) = fragment(&mut r);
        let before = stats(&r);
        // X's 200 COWed pages have two nodes each, the other 56 one shared
        // chain of nine entries (two nodes).
        assert_eq!(before.chain_nodes, 2 * cowed + 2, "{before:?}");
        assert!(
            before.chain_page_bytes >= 2 * before.chain_bytes * 3 / 4,
            "the set-up should leave node pages sparse: {before:?}"
        );
        let maps = snapshot(&r, &parent, x, 256);
        for (i, (pfn, m)) in &maps {
            let want = if *i < cowed { 8 } else { 9 };
            assert_eq!(m.len(), want, "page {i} (pfn {pfn:#x}): COWed pages are mapped by all but kid 0");
        }

        let sys = r.machine.sys().clone();
        let freed = sys.rmap().chains.coalesce(&sys, r.cpu.id());
        let after = stats(&r);
        assert!(freed > 0, "nothing coalesced: {before:?}");
        assert_eq!(after.chain_page_bytes, before.chain_page_bytes - freed * PAGE, "{before:?} -> {after:?}");
        assert_eq!(after.chain_nodes, before.chain_nodes, "nodes move, none is lost");
        assert_eq!(after.reverse_maps, before.reverse_maps);
        assert!(
            after.chain_page_bytes < before.chain_page_bytes * 3 / 4,
            "node pages should shrink substantially: {before:?} -> {after:?}"
        );
        r.check();
        assert_eq!(snapshot(&r, &parent, x, 256), maps, "mappings after the move");
        // A second pass has nothing sparse left to move.
        let again = sys.rmap().chains.coalesce(&sys, r.cpu.id());
        assert_eq!(stats(&r).chain_nodes, before.chain_nodes);
        let _ = again;
        r.check();

        // The moved chains still change correctly: COW in kid 1, munmap in
        // kid 2, exits.
        r.cpu.switch_to(&kids[1]);
        r.cpu.fill(x, 64 * PAGE, 5).unwrap();
        r.cpu.switch_to(&kids[2]);
        r.cpu.munmap((x + 100 * PAGE).as_u64(), 50 * PAGE).unwrap();
        r.check();
        let pfn = r.pfn_of(&parent, x + 120 * PAGE);
        assert_eq!(r.rmap_of(pfn).len(), 7);
        r.cpu.switch_to(&parent);
        assert_eq!(r.cpu.sum(x, 256 * PAGE).unwrap(), 256 * PAGE);
        for k in kids {
            r.cpu.exit_process(k);
            r.check();
        }
        let freed = sys.rmap().chains.coalesce(&sys, r.cpu.id());
        let st = stats(&r);
        r.check();
        assert_eq!(r.rmap_of(pfn), at(&[&parent], x + 120 * PAGE), "after {freed} more pages freed: {st:?}");
    }

    #[test]
    fn on_an_empty_or_dense_store_is_a_no_op() {
        let mut r = rig();
        let sys = r.machine.sys().clone();
        assert_eq!(sys.rmap().chains.coalesce(&sys, r.cpu.id()), 0);
        let a = r.map_fixed(BASE, 512 * PAGE, Prot::RW);
        r.cpu.fill(a, 512 * PAGE, 1).unwrap();
        let kid = r.cpu.fork(&r.proc.clone()).unwrap();
        let before = stats(&r);
        sys.rmap().chains.coalesce(&sys, r.cpu.id());
        assert_eq!(stats(&r).chain_nodes, before.chain_nodes);
        r.check();
        r.cpu.exit_process(kid);
    }

    #[test]
    fn races_with_cow_faults_on_other_cpus() {
        let mut r = Rig::with(MachineConfig {
            mem_bytes: 64 << 20,
            nodes: 1,
            cpus: 4,
            movable_percent: 75,
            rmap: RmapScheme::PteChains,
        });
        let pages = 192u64;
        let a = r.map_fixed(BASE, pages * PAGE, Prot::RW);
        r.cpu.fill(a, pages * PAGE, 1).unwrap();
        let parent = r.proc.clone();
        // Nine processes: every chain has two nodes.
        let kids: Vec<_> = (0..8).map(|_| r.cpu.fork(&parent).unwrap()).collect();
        let machine = r.machine.clone();
        let done = AtomicBool::new(false);
        let start = Barrier::new(4);
        let rounds = std::thread::scope(|s| {
            let writers: Vec<_> = (0..3)
                .map(|w| {
                    let (machine, kid, start) = (&machine, kids[w].clone(), &start);
                    s.spawn(move || {
                        let mut cpu = machine.cpu(w + 1).unwrap();
                        cpu.switch_to(&kid);
                        start.wait();
                        // Each writer COWs every page, in its own order, so
                        // chains are rebuilt (and nodes freed) all over.
                        for k in 0..pages {
                            let i = (k * [5, 7, 11][w]) % pages;
                            cpu.write_u64(a + i * PAGE + 8 * w as u64, 100 + w as u64).unwrap();
                        }
                        cpu.sum(a, pages * PAGE).unwrap()
                    })
                })
                .collect();
            start.wait();
            let sys = machine.sys();
            let mut rounds = 0u64;
            while !done.load(Ordering::Relaxed) {
                sys.rmap().chains.coalesce(sys, r.cpu.id());
                rounds += 1;
                if writers.iter().all(|w| w.is_finished()) {
                    done.store(true, Ordering::Relaxed);
                }
            }
            for (w, h) in writers.into_iter().enumerate() {
                let sum = h.join().unwrap();
                let want = pages * PAGE - pages * 8
                    + pages * (100 + w as u64).to_le_bytes().iter().map(|b| *b as u64).sum::<u64>();
                assert_eq!(sum, want, "writer {w} sees its own data");
            }
            rounds
        });
        assert!(rounds > 0);
        r.check();
        assert_eq!(r.cpu.sum(a, pages * PAGE).unwrap(), pages * PAGE, "the parent keeps its data");
        assert_eq!(r.machine.meminfo().anon, 4 * pages, "one copy per page per writer");
        let pfn = r.pfn_of(&parent, a);
        assert_eq!(r.rmap_of(pfn).len(), 6, "parent and five kids that did not write");
        let sys = r.machine.sys().clone();
        sys.rmap().chains.coalesce(&sys, r.cpu.id());
        r.check();
        for k in kids {
            r.cpu.exit_process(k);
        }
    }
}

mod bugs {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// `try_to_unmap` takes the chain lock for reading (`rmap::guard`) and
    /// then, through `for_each_locked` → `mappings`, takes it for reading
    /// again. The chain lock is a writer-priority `BrLock`: if `coalesce`
    /// sets its writer flag between the two, the inner read backs off
    /// forever while the outer one keeps the writer waiting — a
    /// self-deadlock of two CPUs.
    #[test]

    fn try_to_unmap_racing_coalesce_does_not_deadlock() {
        let mut r = rig();
        let pages = 64u64;
        let a = r.map_fixed(BASE, pages * PAGE, Prot::RW);
        r.cpu.fill(a, pages * PAGE, 1).unwrap();
        let parent = r.proc.clone();
        let kid = r.cpu.fork(&parent).unwrap();
        let machine = r.machine.clone();
        let (tx, rx) = mpsc::channel();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        {
            let (machine, stop, kid) = (machine.clone(), stop.clone(), kid.clone());
            std::thread::spawn(move || {
                let mut cpu = machine.cpu(1).unwrap();
                cpu.switch_to(&kid);
                for round in 0..2000u64 {
                    let va = a + (round % pages) * PAGE;
                    cpu.write_u8(va, 1).unwrap();
                    let pfn = kid.mm().pte(cpu.id(), va).unwrap().pfn();
                    rmap::try_to_unmap(machine.sys(), cpu.id(), pfn).unwrap();
                }
                stop.store(true, Ordering::Relaxed);
                let _ = tx.send(());
            });
        }
        {
            let (machine, stop) = (machine.clone(), stop.clone());
            std::thread::spawn(move || {
                let cpu = machine.cpu(2).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    machine.sys().rmap().chains.coalesce(machine.sys(), cpu.id());
                }
            });
        }
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            // The threads are stuck for good; leak the rig rather than run
            // the checker (it would wait for the locks too).
            std::mem::forget(r);
            panic!("try_to_unmap and coalesce deadlocked");
        }
        r.cpu.exit_process(kid);
    }
}

/// fork changes pte chains only with the chain lock held shared, so it
/// waits while the node coalescer holds it exclusively. (Regression test
/// from review: fork used to run its batches without the lock.)
#[test]
fn fork_waits_for_the_coalescer() {
    let mut r = Rig::with_rmap(RmapScheme::PteChains);
    let a = r.map(64 * PAGE, Prot::RW);
    r.cpu.fill(a, 64 * PAGE, 1).unwrap();
    let m = r.machine.clone();
    let parent = r.proc.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = m.sys().rmap().chains.lock.write();
    let (d2, m2, p2) = (done.clone(), m.clone(), parent.clone());
    let forker = std::thread::spawn(move || {
        let mut cpu = m2.cpu(1).unwrap();
        let kid = cpu.fork(&p2).unwrap();
        d2.store(true, std::sync::atomic::Ordering::SeqCst);
        cpu.exit_process(kid);
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let finished_under_writer = done.load(std::sync::atomic::Ordering::SeqCst);
    drop(writer);
    forker.join().unwrap();
    assert!(!finished_under_writer, "fork changed pte chains while the coalescer held the chain lock");
    assert!(done.load(std::sync::atomic::Ordering::SeqCst));
}

/// Removing a mapping from a page's chain builds a new chain (chains are
/// shared and immutable), so it needs node memory; a removal that cannot
/// get it must still remove the entry, or the page keeps one naming a PTE
/// that no longer maps it — and, once that mm exits, a freed page table.
mod out_of_node_memory {
    use super::*;
    use oxmm::mm::MapFlags;
    use oxmm_host::MachineConfig;

    fn small() -> Rig {
        Rig::with(MachineConfig {
            mem_bytes: 16 << 20,
            nodes: 1,
            cpus: 2,
            movable_percent: 75,
            rmap: RmapScheme::PteChains,
        })
    }

    /// Map and touch anonymous memory on the rig's CPU until no frame is
    /// left (movable allocations fall back into the normal zone, so it is
    /// empty too), then unmap `give_back` of those pages. Returns the region.
    fn fill_machine(r: &mut Rig, give_back: u64) -> (VirtAddr, u64) {
        let big = r.machine.sys().phys.total_frames() * 2;
        let q = r.cpu.mmap(0, big * PAGE, Prot::RW, ANON.union(MapFlags::NORESERVE)).unwrap();
        let mut filled = 0;
        while r.cpu.write_u8(q + filled * PAGE, 1).is_ok() {
            filled += 1;
        }
        assert!(filled > 1000, "filled only {filled} pages");
        r.cpu.munmap(q.as_u64(), give_back * PAGE).unwrap();
        (q, big)
    }

    /// A COW by the first of `children` forks of 64 pages (one page
    /// table, so one chain shared by them all) on a machine left with
    /// `give_back` free frames: the COW succeeds, no chain change is left
    /// undone, every page's chain names exactly its mappings (the checker
    /// checks every page too), and after the children exit no entry names
    /// a freed table. Returns the reverse-map statistics after the COW.
    fn cow_on_a_full_machine(children: usize, give_back: u64, writer_cpu: usize) -> rmap::RmapStats {
        let mut r = small();
        let n = 64u64;
        let a = r.map_fixed(BASE, n * PAGE, Prot::RW);
        for i in 0..n {
            r.cpu.write_u64(a + i * PAGE, i + 1).unwrap();
        }
        let parent = r.proc.clone();
        let kids: Vec<Process> = (0..children).map(|_| r.cpu.fork(&parent).unwrap()).collect();
        r.check();
        let (q, big) = fill_machine(&mut r, give_back);
        let fails = r.stat("rmap_alloc_fail");
        if writer_cpu == 0 {
            // Where the frames were given back.
            r.cpu.switch_to(&kids[0]);
            for i in 0..n {
                r.cpu.write_u64(a + i * PAGE, 0xc0de).unwrap();
            }
            r.cpu.switch_to(&parent);
        } else {
            Remote::new(&r.machine, writer_cpu, &kids[0]).run(move |cpu| {
                for i in 0..n {
                    cpu.write_u64(a + i * PAGE, 0xc0de).unwrap();
                }
            });
        }
        assert_eq!(r.stat("rmap_alloc_fail"), fails, "a chain change was left undone");
        let after = stats(&r);
        r.check();
        let others: Vec<&Process> = std::iter::once(&parent).chain(&kids[1..]).collect();
        for i in 0..n {
            let pfn = r.pfn_of(&parent, a + i * PAGE);
            assert_eq!(r.rmap_of(pfn), at(&others, a + i * PAGE), "page {i}: its chain names the mappings it has");
            assert_ne!(r.pfn_of(&kids[0], a + i * PAGE), pfn, "page {i}: the child has its copy");
        }
        for k in kids {
            r.cpu.exit_process(k);
        }
        r.check();
        let sys = r.machine.sys().clone();
        for i in 0..n {
            assert_eq!(r.cpu.read_u64(a + i * PAGE).unwrap(), i + 1, "page {i}: the parent's data");
            for rf in rmap::chain_refs(&sys, r.pfn_of(&parent, a + i * PAGE)) {
                let t = sys.phys.frame(rf.table());
                assert_ne!(t.flags() & oxmm::phys::frame::flags::PAGETABLE, 0, "page {i}: entry names a freed table");
            }
        }
        r.cpu.munmap(q.as_u64(), big * PAGE).unwrap();
        r.check();
        after
    }

    /// The normal zone is empty but user pages were freed: the new chain's
    /// node comes from the movable zone, as page tables do. (Regression
    /// test from review: the removal was dropped, 64 times of 64.)
    #[test]
    fn a_cow_with_the_normal_zone_empty_takes_its_node_from_the_movable_zone() {
        cow_on_a_full_machine(2, 256, 1);
    }

    // In the next two, the machine has exactly the 64 frames the copies
    // take. Each COW gives its parent page a new one-node chain; fork's
    // shared chain and 63 of them fill the one node page there is, so the
    // 64th removal finds no node: it is the one these tests are about,
    // and the node pages held show that no other was found for it.

    /// A page mapped twice keeps one mapping: it goes back to a direct
    /// reference, which needs no node.
    #[test]
    fn with_no_frame_left_a_chain_shrinking_to_one_entry_goes_direct() {
        let st = cow_on_a_full_machine(1, 64, 0);
        assert_eq!(st.chain_page_bytes, 4096, "{st:?}");
        assert_eq!(st.reverse_maps, 63, "the last page went direct: {st:?}");
    }

    /// A page mapped three times, whose chain no other page shares any
    /// more (the 63 COWs before moved the others off it), loses the entry
    /// in place.
    #[test]
    fn with_no_frame_left_an_unshared_chain_loses_the_entry_in_place() {
        let st = cow_on_a_full_machine(2, 64, 0);
        assert_eq!(st.chain_page_bytes, 4096, "{st:?}");
        assert_eq!((st.reverse_maps, st.chain_nodes), (64, 64), "{st:?}");
    }

    /// fork on a machine with a few frames left, for every number of them
    /// until it succeeds: each attempt either fails with ENOMEM and leaves
    /// nothing behind, or gives a child whose every copied PTE the reverse
    /// map knows. The attempt that gets the child's page tables but no
    /// node for its chains is the one this is about: its copies must be
    /// taken back, not left without reverse-map entries.
    #[test]
    fn fork_that_gets_its_page_tables_but_no_chain_node_fails_cleanly() {
        use oxmm::errno::Errno;
        use oxmm::mm::Advice;
        let mut r = small();
        let n = 64u64;
        let a = r.map_fixed(BASE, n * PAGE, Prot::RW);
        for i in 0..n {
            r.cpu.write_u64(a + i * PAGE, i + 1).unwrap();
        }
        let big = r.machine.sys().phys.total_frames() * 2;
        let q = r.cpu.mmap(0, big * PAGE, Prot::RW, ANON.union(MapFlags::NORESERVE)).unwrap();
        r.cpu.madvise(q.as_u64(), big * PAGE, Advice::DontFork as u32).unwrap();
        let mut filled = 0;
        while r.cpu.write_u8(q + filled * PAGE, 1).is_ok() {
            filled += 1;
        }
        let parent = r.proc.clone();
        let mut enomem = 0;
        let mut child = None;
        for give_back in 0..16u64 {
            r.cpu.madvise(q.as_u64(), give_back * PAGE, Advice::DontNeed as u32).unwrap();
            let free = r.machine.sys().phys.free_frames();
            match r.cpu.fork(&parent) {
                Ok(c) => {
                    child = Some(c);
                    break;
                }
                Err(e) => {
                    assert_eq!(e, Errno::ENOMEM);
                    enomem += 1;
                    r.check();
                    assert_eq!(r.machine.sys().phys.free_frames(), free, "a failed fork gives back what it took");
                }
            }
            for i in 0..give_back {
                r.cpu.write_u8(q + i * PAGE, 1).unwrap();
            }
        }
        let child = child.expect("fork succeeds once it has the frames it needs");
        assert!(enomem > 0, "the machine was not full");
        r.check();
        let ps = [&parent, &child];
        for i in 0..n {
            assert_eq!(r.rmap_of(r.pfn_of(&parent, a + i * PAGE)), at(&ps, a + i * PAGE), "page {i}");
        }
        r.cpu.switch_to(&child);
        for i in 0..n {
            assert_eq!(r.cpu.read_u64(a + i * PAGE).unwrap(), i + 1, "page {i}: the child's data");
        }
        r.cpu.switch_to(&parent);
        r.cpu.exit_process(child);
        r.cpu.munmap(q.as_u64(), big * PAGE).unwrap();
        r.check();
    }

    /// A chain three mappings share, with node allocation failing (fault
    /// injection): tearing down one of them — a whole page table, at exit
    /// or by MADV_DONTNEED of all of it — removes its entry in place at the
    /// end of the batch, since every page sharing the chain lost it there.
    /// (Removing it from only some of the pages still cannot be done without
    /// a node: that is counted in `rmap_alloc_fail`, and the checker reports
    /// the entries left.)
    #[test]
    fn a_teardown_of_a_whole_table_needs_no_node() {
        use oxmm::mm::Advice;
        let mut r = Rig::with_rmap(RmapScheme::PteChains);
        let n = 64u64;
        let a = r.map_fixed(BASE, n * PAGE, Prot::RW);
        for i in 0..n {
            r.cpu.write_u64(a + i * PAGE, i + 1).unwrap();
        }
        let parent = r.proc.clone();
        let c1 = r.cpu.fork(&parent).unwrap();
        let c2 = r.cpu.fork(&parent).unwrap();
        let c3 = r.cpu.fork(&parent).unwrap();
        let sys = r.machine.sys().clone();
        let fails = r.stat("rmap_alloc_fail");
        sys.rmap().chains.fail_node_allocs.store(u64::MAX, Ordering::Relaxed);
        r.cpu.exit_process(c1);
        r.cpu.switch_to(&c2);
        r.cpu.madvise(a.as_u64(), n * PAGE, Advice::DontNeed as u32).unwrap();
        r.cpu.switch_to(&parent);
        sys.rmap().chains.fail_node_allocs.store(0, Ordering::Relaxed);
        assert_eq!(r.stat("rmap_alloc_fail"), fails, "nothing left undone");
        r.check();
        for i in 0..n {
            assert_eq!(r.rmap_of(r.pfn_of(&parent, a + i * PAGE)), at(&[&parent, &c3], a + i * PAGE), "page {i}");
        }
        r.cpu.exit_process(c2);
        r.cpu.exit_process(c3);
    }
}
