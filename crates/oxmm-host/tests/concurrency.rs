//! Concurrent faults: several CPUs (threads) of one machine running the same
//! process fault the same pages, and neighbouring pages, at once. Whatever
//! the interleaving, every page ends with exactly one frame, the data each
//! CPU wrote is there, and the checker finds no leaked frame or table (a
//! lost CAS race frees its page; a lost table-install race frees its table).

mod common;

use std::sync::Barrier;

use common::*;
use oxmm::addr::VirtAddr;
use oxmm::fault::FaultError;
use oxmm::mm::Prot;
use oxmm_host::MachineConfig;

fn rig_with_cpus(cpus: usize) -> Rig {
    Rig::with(MachineConfig { mem_bytes: 32 << 20, nodes: 1, cpus, movable_percent: 75, ..MachineConfig::default() })
}

fn val(t: u64, i: u64) -> u64 {
    (t + 1) << 32 | i
}

/// `threads` CPUs (1..=threads) all switched to the rig's process run
/// `f(cpu, thread_index)` at once (released by a barrier).
fn on_cpus(rig: &Rig, threads: usize, f: impl Fn(&mut oxmm_host::Cpu, u64) + Sync) {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let mut cpu = rig.machine.cpu(t + 1).expect("cpu");
            let proc = rig.proc.clone();
            let (barrier, f) = (&barrier, &f);
            s.spawn(move || {
                cpu.switch_to(&proc);
                barrier.wait();
                f(&mut cpu, t as u64);
            });
        }
    });
}

/// Each CPU writes its own word of every page and reads the others' words,
/// walking the pages from a different starting point; odd CPUs read every
/// page first so that zero-page mappings race with write faults.
#[track_caller]
fn same_pages(threads: usize) {
    let mut rig = rig_with_cpus(threads + 1);
    let n = 256u64;
    for _round in 0..4 {
        let p = rig.map(n * PAGE, Prot::RW);
        on_cpus(&rig, threads, |cpu, t| {
            if t % 2 == 1 {
                for i in 0..n {
                    // Its own word: nobody else writes it.
                    let v = cpu.read_u64(p + ((i * 7 + t * 31) % n) * PAGE + t * 8).unwrap();
                    assert_eq!(v, 0);
                }
            }
            for k in 0..n {
                let i = (k + t * n / threads as u64) % n;
                let page = p + i * PAGE;
                cpu.write_u64(page + t * 8, val(t, i)).unwrap();
                for o in 0..threads as u64 {
                    let v = cpu.read_u64(page + o * 8).unwrap();
                    assert!(v == 0 || v == val(o, i), "page {i} word {o}: {v:#x}");
                }
                assert_eq!(cpu.read_u64(page + t * 8).unwrap(), val(t, i), "own write lost on page {i}");
            }
        });
        assert_eq!(rig.rss_anon(), n, "exactly one frame per page");
        assert_eq!(rig.machine.meminfo().anon, n);
        for i in 0..n {
            for t in 0..threads as u64 {
                assert_eq!(rig.cpu.read_u64(p + i * PAGE + t * 8).unwrap(), val(t, i), "page {i} word {t}");
            }
        }
        rig.check();
        rig.cpu.munmap(p.as_u64(), n * PAGE).unwrap();
        assert_eq!(rig.machine.meminfo().anon, 0);
        assert_eq!(rig.machine.meminfo().page_tables, 1);
    }
}

#[test]
fn two_cpus_fault_the_same_pages() {
    same_pages(2);
}

#[test]
fn four_cpus_fault_the_same_pages() {
    same_pages(4);
}

/// Each CPU writes every `threads`-th page of a fresh mapping that spans
/// several PTE tables: the CPUs race to install the same tables, and fault
/// neighbouring PTEs of one table at once.
#[track_caller]
fn neighbouring_pages(threads: usize) {
    let mut rig = rig_with_cpus(threads + 1);
    let n = 1536u64; // 6 MiB: three or four PTE tables
    for _round in 0..3 {
        let p = rig.map(n * PAGE, Prot::RW);
        on_cpus(&rig, threads, |cpu, t| {
            let mut i = t;
            while i < n {
                cpu.write_u64(p + i * PAGE + 64, val(t, i)).unwrap();
                i += threads as u64;
            }
        });
        assert_eq!(rig.rss_anon(), n);
        assert_eq!(rig.machine.meminfo().anon, n);
        for i in 0..n {
            assert_eq!(rig.cpu.read_u64(p + i * PAGE + 64).unwrap(), val(i % threads as u64, i), "page {i}");
            assert_eq!(rig.cpu.read_u64(p + i * PAGE).unwrap(), 0);
        }
        rig.check();
        rig.cpu.munmap(p.as_u64(), n * PAGE).unwrap();
        assert_eq!(rig.machine.meminfo().page_tables, 1, "lost table-install races freed their tables");
    }
}

#[test]
fn two_cpus_fault_neighbouring_pages() {
    neighbouring_pages(2);
}

#[test]
fn four_cpus_fault_neighbouring_pages() {
    neighbouring_pages(4);
}

/// Readers and writers of the same fresh pages: a reader sees 0 or the
/// writer's value, never anything else, and every page ends with one frame.
#[test]
fn readers_race_writers_on_fresh_pages() {
    let threads = 4;
    let mut rig = rig_with_cpus(threads + 1);
    let n = 512u64;
    for _round in 0..4 {
        let p = rig.map(n * PAGE, Prot::RW);
        on_cpus(&rig, threads, |cpu, t| {
            for k in 0..n {
                let i = if t < 2 { k } else { n - 1 - k };
                let a = p + i * PAGE + 8 * (i % 8);
                if t % 2 == 0 {
                    cpu.write_u64(a, val(0, i)).unwrap();
                } else {
                    let v = cpu.read_u64(a).unwrap();
                    assert!(v == 0 || v == val(0, i), "page {i}: {v:#x}");
                }
            }
        });
        assert_eq!(rig.rss_anon(), n);
        for i in 0..n {
            assert_eq!(rig.cpu.read_u64(p + i * PAGE + 8 * (i % 8)).unwrap(), val(0, i));
        }
        rig.check();
        rig.cpu.munmap(p.as_u64(), n * PAGE).unwrap();
    }
}

/// CPUs keep faulting and writing a range while CPU 0 unmaps it piece by
/// piece: every access either succeeds or is a SEGV at an address CPU 0 has
/// already started unmapping, and nothing leaks.
#[test]
fn faults_race_munmap() {
    let threads = 3;
    let mut rig = rig_with_cpus(threads + 1);
    let n = 512u64;
    let p = rig.map(n * PAGE, Prot::RW);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let mut cpu = rig.machine.cpu(t + 1).expect("cpu");
            let proc = rig.proc.clone();
            let (barrier, stop) = (&barrier, &stop);
            s.spawn(move || {
                cpu.switch_to(&proc);
                barrier.wait();
                let mut k = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let i = (k * 13 + t as u64 * 101) % n;
                    let a: VirtAddr = p + i * PAGE;
                    match cpu.write_u64(a, val(t as u64, i)) {
                        Ok(()) => {}
                        Err(f) => assert_eq!((f.kind, f.addr), (FaultError::Segv, a)),
                    }
                    k += 1;
                }
            });
        }
        barrier.wait();
        for chunk in 0..16 {
            std::thread::yield_now();
            rig.cpu.munmap(p.as_u64() + chunk * (n / 16) * PAGE, (n / 16) * PAGE).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(rig.rss_anon(), 0);
    assert_eq!(rig.machine.meminfo().anon, 0);
    assert_eq!(rig.machine.meminfo().page_tables, 1);
}

/// CPUs keep writing and reading pages while CPU 0 repeatedly zaps them
/// with MADV_DONTNEED (which runs under the mmap read lock, concurrently
/// with faults, as on Linux): a read sees 0 or the value written there,
/// and afterwards RSS equals the pages still mapped (the checker verifies
/// it against the page tables) and nothing leaks.
#[test]
fn faults_race_madvise_dontneed() {
    let threads = 3;
    let mut rig = rig_with_cpus(threads + 1);
    let n = 256u64;
    let p = rig.map(n * PAGE, Prot::RW);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let mut cpu = rig.machine.cpu(t + 1).expect("cpu");
            let proc = rig.proc.clone();
            let (barrier, stop) = (&barrier, &stop);
            s.spawn(move || {
                cpu.switch_to(&proc);
                barrier.wait();
                let mut k = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let i = (k * 7 + t as u64 * 59) % n;
                    let a = p + i * PAGE + t as u64 * 8;
                    cpu.write_u64(a, val(t as u64, i)).unwrap();
                    let v = cpu.read_u64(a).unwrap();
                    assert!(v == 0 || v == val(t as u64, i), "page {i}: {v:#x}");
                    k += 1;
                }
            });
        }
        barrier.wait();
        for round in 0..40u64 {
            let (start, len) = if round % 2 == 0 { (0, n) } else { (round % n, n / 4) };
            let len = len.min(n - start);
            rig.cpu.madvise(p.as_u64() + start * PAGE, len * PAGE, oxmm::mm::Advice::DontNeed as u32).unwrap();
            std::thread::yield_now();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // Count the private pages still mapped. Not mincore: a read after a zap
    // maps the zero page, which mincore reports resident but RSS (rightly)
    // does not count.
    let zero = rig.machine.sys().zero_pfn();
    let resident =
        (0..n).map(|i| rig.pte(p + i * PAGE)).filter(|pte| pte.is_present() && pte.pfn() != zero).count() as u64;
    assert_eq!(rig.rss_anon(), resident, "RSS equals the written pages still mapped");
    assert_eq!(rig.machine.meminfo().anon, resident);
    rig.check();
    rig.cpu.munmap(p.as_u64(), n * PAGE).unwrap();
    assert_eq!(rig.machine.meminfo().anon, 0);
}
