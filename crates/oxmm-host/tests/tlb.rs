//! TLB shootdown: after munmap/mprotect/MADV_DONTNEED/zero-page replacement
//! on CPU 0 returns, CPU 1 (another thread, which cached the translation in
//! its TLB) never uses the stale translation.
//!
//! Each test drives CPU 1 through [`Remote::run`], which runs one step on
//! CPU 1's thread and waits for it, so the order of steps is deterministic.
//! A step that re-reads a page without a new fault (`pgfault` unchanged)
//! proves the translation was cached in CPU 1's TLB before CPU 0 acts.

mod common;

use common::*;
use oxmm::addr::VirtAddr;
use oxmm::fault::FaultError;
use oxmm::mm::{Advice, MapFlags, Prot};
use oxmm_host::{Cpu, Fault};

fn segv(addr: VirtAddr) -> Fault {
    Fault { kind: FaultError::Segv, addr }
}

/// CPU 1 reads `a` twice; the second read must hit its TLB (no fault).
#[track_caller]
fn cache_on_remote(rig: &Rig, cpu1: &Remote, a: VirtAddr, write: bool) -> u64 {
    let v = cpu1.run(move |c: &mut Cpu| {
        if write {
            c.write_u64(a, 0x1111).unwrap();
        }
        c.read_u64(a).unwrap()
    });
    let faults = rig.stat("pgfault");
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.read_u64(a).unwrap()), v);
    if write {
        cpu1.run(move |c: &mut Cpu| c.write_u64(a, 0x1111).unwrap());
    }
    assert_eq!(rig.stat("pgfault"), faults, "CPU 1 hit its TLB");
    v
}

#[test]
fn munmap_shoots_down_the_remote_tlb() {
    let mut rig = Rig::new();
    let cpu1 = Remote::new(&rig.machine, 1, &rig.proc);
    let p = rig.map(4 * PAGE, Prot::RW);
    rig.cpu.write_u64(p + PAGE, 42).unwrap();
    assert_eq!(cache_on_remote(&rig, &cpu1, p + PAGE, false), 42);
    cache_on_remote(&rig, &cpu1, p + 2 * PAGE, true);
    let remote = rig.stat("nr_tlb_remote_flush");
    rig.cpu.munmap(p.as_u64(), 4 * PAGE).unwrap();
    assert_eq!(rig.stat("nr_tlb_remote_flush"), remote + 1, "one shootdown for the munmap");
    let a = p + PAGE;
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.read_u64(a)), Err(segv(a)));
    let b = p + 2 * PAGE;
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.write_u64(b, 7)), Err(segv(b)));
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.read_u64(b)), Err(segv(b)));
}

#[test]
fn munmap_and_remap_shows_the_new_page_remotely() {
    // The old frame is freed and may be reused; CPU 1 must see the new
    // mapping's data, not the old frame.
    let mut rig = Rig::new();
    let cpu1 = Remote::new(&rig.machine, 1, &rig.proc);
    let p = rig.map(PAGE, Prot::RW);
    rig.cpu.write_u64(p, 0xaaaa).unwrap();
    assert_eq!(cache_on_remote(&rig, &cpu1, p, false), 0xaaaa);
    rig.cpu.munmap(p.as_u64(), PAGE).unwrap();
    let q = rig.cpu.mmap(p.as_u64(), PAGE, Prot::RW, ANON.union(MapFlags::FIXED)).unwrap();
    assert_eq!(q, p);
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.read_u64(p).unwrap()), 0, "fresh mapping reads zero on CPU 1");
    rig.cpu.write_u64(p, 0xbbbb).unwrap();
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.read_u64(p).unwrap()), 0xbbbb);
}

#[test]
fn mprotect_read_only_shoots_down_writable_entries() {
    let mut rig = Rig::new();
    let cpu1 = Remote::new(&rig.machine, 1, &rig.proc);
    let p = rig.map(2 * PAGE, Prot::RW);
    cache_on_remote(&rig, &cpu1, p, true);
    let remote = rig.stat("nr_tlb_remote_flush");
    rig.cpu.mprotect(p.as_u64(), 2 * PAGE, Prot::READ).unwrap();
    assert!(rig.stat("nr_tlb_remote_flush") > remote, "mprotect shot CPU 1 down");
    let a = p + 8;
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.write_u64(a, 2)), Err(segv(a)));
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.read_u64(p).unwrap()), 0x1111, "reads still work, data kept");
    assert_eq!(rig.cpu.read_u64(a).unwrap(), 0, "the refused write did not land");
    // And back: CPU 1 can write again.
    rig.cpu.mprotect(p.as_u64(), 2 * PAGE, Prot::RW).unwrap();
    cpu1.run(move |c: &mut Cpu| c.write_u64(a, 3).unwrap());
    assert_eq!(rig.cpu.read_u64(a).unwrap(), 3);
}

#[test]
fn mprotect_none_shoots_down_readable_entries() {
    let mut rig = Rig::new();
    let cpu1 = Remote::new(&rig.machine, 1, &rig.proc);
    let p = rig.map(PAGE, Prot::RW);
    rig.cpu.write_u64(p, 5).unwrap();
    cache_on_remote(&rig, &cpu1, p, false);
    rig.cpu.mprotect(p.as_u64(), PAGE, Prot::NONE).unwrap();
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.read_u64(p)), Err(segv(p)));
}

#[test]
fn dontneed_shoots_down_the_remote_tlb() {
    let mut rig = Rig::new();
    let cpu1 = Remote::new(&rig.machine, 1, &rig.proc);
    let p = rig.map(PAGE, Prot::RW);
    cache_on_remote(&rig, &cpu1, p, true);
    rig.cpu.madvise(p.as_u64(), PAGE, Advice::DontNeed as u32).unwrap();
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.read_u64(p).unwrap()), 0, "CPU 1 sees the zapped page as zero");
    // A write on CPU 1 gets a new page that CPU 0 sees.
    cpu1.run(move |c: &mut Cpu| c.write_u64(p, 9).unwrap());
    assert_eq!(rig.cpu.read_u64(p).unwrap(), 9);
    assert_eq!(rig.rss_anon(), 1);
}

#[test]
fn zero_page_replaced_by_a_write_is_seen_remotely() {
    let mut rig = Rig::new();
    let cpu1 = Remote::new(&rig.machine, 1, &rig.proc);
    let p = rig.map(2 * PAGE, Prot::RW);
    // CPU 1 caches the read-only zero-page translation.
    assert_eq!(cache_on_remote(&rig, &cpu1, p, false), 0);
    let remote = rig.stat("nr_tlb_remote_flush");
    rig.cpu.write_u64(p, 0xdead).unwrap();
    assert!(rig.stat("nr_tlb_remote_flush") > remote, "replacing the zero page shot CPU 1 down");
    assert_eq!(
        cpu1.run(move |c: &mut Cpu| c.read_u64(p).unwrap()),
        0xdead,
        "CPU 1 sees CPU 0's data, not the zero page"
    );
    // A write on CPU 1 lands in the same private page.
    cpu1.run(move |c: &mut Cpu| c.write_u64(p + 8, 0xbeef).unwrap());
    assert_eq!(rig.cpu.read_u64(p + 8).unwrap(), 0xbeef);
    assert_eq!(rig.cpu.read_u64(p).unwrap(), 0xdead);
    assert_eq!(rig.rss_anon(), 1);
    // The other way round: CPU 0 caches the zero page, CPU 1 replaces it.
    assert_eq!(rig.cpu.read_u64(p + PAGE).unwrap(), 0);
    cpu1.run(move |c: &mut Cpu| c.write_u64(p + PAGE, 0xf00d).unwrap());
    assert_eq!(rig.cpu.read_u64(p + PAGE).unwrap(), 0xf00d);
    assert_eq!(rig.rss_anon(), 2);
    // Nothing was written into the zero page.
    let q = rig.map(PAGE, Prot::READ);
    assert_eq!(rig.cpu.sum(q, PAGE).unwrap(), 0);
}

#[test]
fn a_write_on_the_remote_cpu_after_the_zero_page_was_replaced() {
    // CPU 1 holds the zero page read-only; CPU 0 writes (new page); then
    // CPU 1 *writes*: it must write into CPU 0's page, not a second one.
    let mut rig = Rig::new();
    let cpu1 = Remote::new(&rig.machine, 1, &rig.proc);
    let p = rig.map(PAGE, Prot::RW);
    cache_on_remote(&rig, &cpu1, p, false);
    rig.cpu.write_u64(p, 1).unwrap();
    cpu1.run(move |c: &mut Cpu| c.write_u64(p + 16, 2).unwrap());
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.read_u64(p).unwrap()), 1);
    assert_eq!(rig.cpu.read_u64(p + 16).unwrap(), 2);
    assert_eq!(rig.rss_anon(), 1);
}

#[test]
fn flushes_stay_local_when_only_one_cpu_runs_the_mm() {
    let mut rig = Rig::new();
    let p = rig.map(4 * PAGE, Prot::RW);
    rig.cpu.fill(p, 4 * PAGE, 1).unwrap();
    let (local, remote) = (rig.stat("nr_tlb_flush"), rig.stat("nr_tlb_remote_flush"));
    rig.cpu.mprotect(p.as_u64(), 4 * PAGE, Prot::READ).unwrap();
    rig.cpu.munmap(p.as_u64(), 4 * PAGE).unwrap();
    assert_eq!(rig.stat("nr_tlb_flush"), local + 2, "one flush per call");
    assert_eq!(rig.stat("nr_tlb_remote_flush"), remote, "no other CPU runs this mm");
}

#[test]
fn munmap_of_many_pages_is_one_batched_shootdown() {
    let mut rig = Rig::new();
    let cpu1 = Remote::new(&rig.machine, 1, &rig.proc);
    let n = 64u64;
    let p = rig.map(n * PAGE, Prot::RW);
    cpu1.run(move |c: &mut Cpu| c.fill(p, n * PAGE, 1).unwrap());
    let (local, remote) = (rig.stat("nr_tlb_flush"), rig.stat("nr_tlb_remote_flush"));
    rig.cpu.munmap(p.as_u64(), n * PAGE).unwrap();
    assert_eq!(rig.stat("nr_tlb_flush"), local + 1);
    assert_eq!(rig.stat("nr_tlb_remote_flush"), remote + 1);
    assert_eq!(cpu1.run(move |c: &mut Cpu| c.sum(p, n * PAGE)), Err(segv(p)));
}
