//! The core through its seam alone: a test-double platform (heap memory, a
//! counting TLB flush) and a frame source that fails on leaks and double
//! frees. No hosted machine: faults are raised by hand and translations
//! read with the MMU walk, as a kernel's tests would.

mod common;

use common::{Harness, CPU0};
use oxmm::addr::{Pfn, VirtAddr};
use oxmm::fault::{handle_fault, Access, FaultError};
use oxmm::mm::{MapFlags, Mm, Prot};
use oxmm::pgtable::walk::{translate, WalkFault};
use oxmm::platform::CpuId;

fn anon() -> MapFlags {
    MapFlags::PRIVATE.union(MapFlags::ANONYMOUS)
}

#[track_caller]
fn frame_of(h: &Harness, mm: &Mm, va: VirtAddr, write: bool) -> Result<Pfn, WalkFault> {
    let _lock = mm.read(CPU0);
    // SAFETY: the mmap read lock is held for the walk.
    unsafe { translate(&h.sys, mm.root(), va, write) }.map(|t| t.pfn)
}

#[test]
fn read_fault_maps_the_zero_page_and_write_fault_a_private_one() {
    let h = Harness::new(1024);
    let mm = Mm::new(&h.sys, CPU0).unwrap();
    let va = mm.mmap(CPU0, 0, 8 * 4096, Prot::RW, anon()).unwrap();
    assert_eq!(frame_of(&h, &mm, va, false), Err(WalkFault::NotPresent));
    handle_fault(&mm, CPU0, va, Access::Read).unwrap();
    assert_eq!(frame_of(&h, &mm, va, false), Ok(h.sys.zero_pfn()));
    assert_eq!(frame_of(&h, &mm, va, true), Err(WalkFault::Protection), "zero page is read-only");
    assert_eq!(mm.rss().anon, 0);
    handle_fault(&mm, CPU0, va, Access::Write).unwrap();
    let p = frame_of(&h, &mm, va, true).unwrap();
    assert_ne!(p, h.sys.zero_pfn());
    assert_eq!(mm.rss().anon, 1);
    assert_eq!(h.sys.phys.frame(p).mapcount(), 1);
    assert!(h.platform.flushes.load(std::sync::atomic::Ordering::Relaxed) >= 1, "replacing the zero page flushes");
    mm.exit(CPU0);
}

#[test]
fn munmap_frees_frames_and_tables_after_one_flush() {
    let h = Harness::new(2048);
    let mm = Mm::new(&h.sys, CPU0).unwrap();
    let len = 4 << 20;
    let va = mm.mmap(CPU0, 0, len, Prot::RW, anon()).unwrap();
    for i in (0..len).step_by(4096) {
        handle_fault(&mm, CpuId((i / 4096 % 2) as u32), va + i, Access::Write).unwrap();
    }
    assert_eq!(mm.rss().anon, len / 4096);
    let before = h.platform.flushes.load(std::sync::atomic::Ordering::Relaxed);
    mm.munmap(CPU0, va.as_u64(), len).unwrap();
    assert_eq!(h.platform.flushes.load(std::sync::atomic::Ordering::Relaxed), before + 1, "one batched flush per call");
    let req = h.platform.last_flush.lock().unwrap().unwrap();
    assert!(req.tables_freed, "empty page tables were freed with the flush");
    assert_eq!(mm.rss().anon, 0);
    assert_eq!(h.sys.meminfo().page_tables, 1, "only the root remains");
    oxmm::check::check(&h.sys).unwrap();
    mm.exit(CPU0);
}

#[test]
fn out_of_frames_is_an_oom_fault_not_a_panic() {
    let h = Harness::new(64);
    let mm = Mm::new(&h.sys, CPU0).unwrap();
    // Larger than memory: Linux's heuristic overcommit refuses it without
    // MAP_NORESERVE, and so does oxmm.
    assert_eq!(mm.mmap(CPU0, 0, 1 << 20, Prot::RW, anon()), Err(oxmm::Errno::ENOMEM));
    let va = mm.mmap(CPU0, 0, 1 << 20, Prot::RW, anon().union(MapFlags::NORESERVE)).unwrap();
    let mut got = None;
    for i in 0..256u64 {
        if let Err(e) = handle_fault(&mm, CPU0, va + i * 4096, Access::Write) {
            got = Some((i, e));
            break;
        }
    }
    let (i, e) = got.expect("64 frames cannot back 256 pages");
    assert_eq!(e, FaultError::Oom);
    assert!(i > 32, "most frames were usable: {i}");
    mm.exit(CPU0);
}

#[test]
fn the_frame_source_catches_a_leak() {
    let h = Harness::new(256);
    let p = h.sys.phys.alloc_frame(CPU0, oxmm::phys::Gfp::MOVABLE).unwrap();
    assert_eq!(h.leak_report().as_deref(), Some("1 frame(s) leaked"));
    h.sys.phys.free_frame(CPU0, p);
    assert_eq!(h.leak_report(), None);
}

#[test]
fn the_frame_source_catches_a_double_free() {
    let h = Harness::new(256);
    let p = h.sys.phys.alloc_frame(CPU0, oxmm::phys::Gfp::MOVABLE).unwrap();
    h.sys.phys.free_frame(CPU0, p);
    h.sys.phys.free_frame(CPU0, p);
    assert_eq!(h.leak_report().as_deref(), Some("1 frame(s) freed twice"));
    // The harness would fail this test on drop; it was the point.
    std::mem::forget(h);
}

#[test]
fn numa_nodes_and_zones_split_memory() {
    let platform = common::TestPlatform::new(4096, 4);
    let sys = oxmm::system::System::new(
        platform,
        oxmm::system::SystemConfig { nodes: 2, movable_percent: 50, ..Default::default() },
    )
    .unwrap();
    let zones = sys.phys.zones();
    assert_eq!(zones.len(), 4);
    assert_eq!(zones.iter().map(|z| z.end.as_u64() - z.start.as_u64()).sum::<u64>(), 4096);
    // CPU 1 lives on node 1: its movable allocations come from node 1's movable zone.
    let p = sys.phys.alloc_frame(CpuId(1), oxmm::phys::Gfp::MOVABLE).unwrap();
    let z = zones.iter().find(|z| z.contains(p)).unwrap();
    assert_eq!((z.node, z.kind), (1, oxmm::phys::ZoneKind::Movable));
    sys.phys.free_frame(CpuId(1), p);
}
