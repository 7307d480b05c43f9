//! The invariant checker finds what it is meant to find: each test breaks
//! one invariant by hand (every one of `oxmm::check`'s nine), checks that
//! `check` names it, and repairs it (the rig checks again when dropped).

mod common;

use std::sync::atomic::Ordering::Relaxed;

use common::*;
use oxmm::addr::{Pfn, VirtAddr};
use oxmm::arch::Pte;
use oxmm::mm::MapFlags;
use oxmm::mm::Prot;
use oxmm::phys::frame::flags;
use oxmm::phys::Gfp;
use oxmm::phys::ZoneKind;
use oxmm_host::{MachineConfig, Process};
use std::sync::atomic::AtomicU64;

fn violations(rig: &Rig) -> Vec<String> {
    rig.machine.check().err().map(|e| e.violations).unwrap_or_default()
}

/// A rig with one anonymous page written: its address and its frame.
fn rig_with_a_page() -> (Rig, VirtAddr, Pfn) {
    let mut rig = Rig::new();
    let p = rig.map(PAGE, Prot::RW);
    rig.cpu.write_u8(p, 1).unwrap();
    let pfn = rig.pfn_of(&rig.proc, p);
    assert!(violations(&rig).is_empty());
    (rig, p, pfn)
}

/// Invariant 9: a frame of a movable zone that was allocated unmovable.
#[test]
fn an_unmovable_frame_in_a_movable_zone_is_reported() {
    let (rig, _, pfn) = rig_with_a_page();
    let sys = rig.machine.sys();
    let zone = sys.phys.zones().iter().find(|z| z.contains(pfn)).expect("a zone holds the frame");
    assert_eq!(zone.kind, ZoneKind::Movable, "a user page comes from the movable zone");
    let f = sys.phys.frame(pfn);
    f.flags.fetch_and(!flags::MOVABLE, Relaxed);
    let v = violations(&rig);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("movable zone allocated unmovable"), "{v:?}");
    f.flags.fetch_or(flags::MOVABLE, Relaxed);
    assert!(violations(&rig).is_empty());
}

/// Invariant 1: a page-table page that no root reaches.
#[test]
fn an_unreachable_page_table_is_reported() {
    let rig = Rig::new();
    let sys = rig.machine.sys();
    let table = sys.alloc_table(rig.cpu.id(), rig.proc.mm().id()).expect("a frame");
    let v = violations(&rig);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("not reachable: leaked"), "{v:?}");
    sys.free_table(rig.cpu.id(), table);
    assert!(violations(&rig).is_empty());
}

/// Invariant 3: a mapcount that disagrees with the PTEs.
#[test]
fn a_wrong_mapcount_is_reported() {
    let (rig, _, pfn) = rig_with_a_page();
    let f = rig.machine.sys().phys.frame(pfn);
    f.mapcount.fetch_add(1, Relaxed);
    let v = violations(&rig);
    assert!(v.iter().any(|m| m.contains("mapcount 2 but 1 PTEs map it")), "{v:?}");
    f.mapcount.fetch_sub(1, Relaxed);
    assert!(violations(&rig).is_empty());
}

/// Invariant 4: an RSS counter that disagrees with the PTEs.
#[test]
fn a_wrong_rss_is_reported() {
    let mut rig = Rig::new();
    let p = rig.map(2 * PAGE, Prot::RW);
    rig.cpu.write_u8(p, 1).unwrap();
    let mm = rig.proc.mm();
    mm.add_rss(rig.cpu.id(), oxmm::mm::rss::RssKind::Anon, 1);
    let v = violations(&rig);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("RSS anon 2 but 1 PTEs map such frames"), "{v:?}");
    mm.add_rss(rig.cpu.id(), oxmm::mm::rss::RssKind::Anon, -1);
    assert!(violations(&rig).is_empty());
}

/// Invariant 5: an anonymous frame that nothing maps.
#[test]
fn a_leaked_anonymous_frame_is_reported() {
    let rig = Rig::new();
    let sys = rig.machine.sys();
    let pfn = sys.phys.alloc_frame(rig.cpu.id(), oxmm::phys::Gfp::MOVABLE).expect("a frame");
    let f = sys.phys.frame(pfn);
    f.flags.fetch_or(flags::ANON, Relaxed);
    let v = violations(&rig);
    assert!(v.iter().any(|m| m.contains("allocated but mapped nowhere: leaked")), "{v:?}");
    assert!(v.iter().any(|m| m.contains("NrAnonPages 0 but 1 frames are anonymous")), "{v:?}");
    f.flags.fetch_and(!flags::ANON, Relaxed);
    sys.phys.free_frame(rig.cpu.id(), pfn);
    assert!(violations(&rig).is_empty());
}

/// Invariant 8: a reverse map that no longer finds the PTE.
#[test]
fn a_lost_reverse_mapping_is_reported() {
    let (rig, _, pfn) = rig_with_a_page();
    let f = rig.machine.sys().phys.frame(pfn);
    let saved = f.rmap.swap(0, Relaxed);
    let v = violations(&rig);
    assert!(v.iter().any(|m| m.contains("but the reverse map gives")), "{v:?}");
    f.rmap.store(saved, Relaxed);
    assert!(violations(&rig).is_empty());
}

/// Invariant 2: a PTE that allows more than its VMA.
#[test]
fn a_pte_allowing_more_than_its_vma_is_reported() {
    let (mut rig, p, _) = rig_with_a_page();
    rig.cpu.mprotect(p.as_u64(), PAGE, Prot::READ).unwrap();
    let sys = rig.machine.sys();
    let mm = rig.proc.mm();
    let flip = |on: bool| {
        let _guard = mm.read(rig.cpu.id());
        // SAFETY: the mmap read lock is held while the slot is used, and
        // no other CPU runs this process.
        let slot = unsafe { oxmm::pgtable::pte_slot(sys, mm.root(), p) }.expect("the PTE table exists");
        let w = oxmm::arch::Pte::WRITABLE;
        if on {
            slot.fetch_or(w, Relaxed);
        } else {
            slot.fetch_and(!w, Relaxed);
        }
    };
    flip(true);
    let v = violations(&rig);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("writable PTE at"), "{v:?}");
    flip(false);
    assert!(violations(&rig).is_empty());
}

/// Invariant 6: a frame freed twice (the allocator refuses the second
/// free and counts it; the count stays, so no rig here).
#[test]
fn a_double_free_is_reported() {
    let m = oxmm_host::Machine::new(oxmm_host::MachineConfig { mem_bytes: 16 << 20, ..Default::default() }).unwrap();
    let cpu = m.cpu(0).unwrap();
    assert!(m.check().is_ok());
    let pfn = m.sys().phys.alloc_frame(cpu.id(), oxmm::phys::Gfp::MOVABLE).unwrap();
    m.sys().phys.free_frame(cpu.id(), pfn);
    m.sys().phys.free_frame(cpu.id(), pfn);
    let v = m.check().err().map(|e| e.violations).unwrap_or_default();
    assert_eq!(v, ["1 frame(s) freed twice"]);
}

/// Run `f` on the PTE slot mapping `va` in `p`, under its mmap read lock.
fn with_pte(rig: &Rig, p: &Process, va: VirtAddr, f: impl FnOnce(&AtomicU64)) {
    let mm = p.mm();
    let _g = mm.read(rig.cpu.id());
    // SAFETY: the mmap read lock is held while the slot is used, and no
    // other CPU runs.
    let slot = unsafe { oxmm::pgtable::pte_slot(rig.machine.sys(), mm.root(), va) }.expect("a PTE table");
    f(slot)
}

/// Invariant 2: an executable PTE (NX clear) in a VMA without PROT_EXEC.
#[test]
fn an_executable_pte_in_a_non_executable_vma_is_reported() {
    let (rig, p, _) = rig_with_a_page();
    with_pte(&rig, &rig.proc, p, |s| assert_ne!(s.fetch_and(!Pte::NX, Relaxed) & Pte::NX, 0, "anon PTEs carry NX"));
    let v = violations(&rig);
    assert!(v.iter().any(|m| m.contains("executable PTE")), "{v:?}");
    with_pte(&rig, &rig.proc, p, |s| {
        s.fetch_or(Pte::NX, Relaxed);
    });
    assert!(violations(&rig).is_empty());
}

/// Invariant 2: after fork, a writable PTE to the page both mms map (one
/// process could write into the other's memory).
#[test]
fn a_writable_pte_to_a_page_shared_after_fork_is_reported() {
    let (mut rig, p, pfn) = rig_with_a_page();
    let child = rig.cpu.fork(&rig.proc).unwrap();
    assert_eq!(rig.mapcount_of(pfn), 2);
    with_pte(&rig, &child, p, |s| {
        s.fetch_or(Pte::WRITABLE | Pte::DIRTY, Relaxed);
    });
    let v = violations(&rig);
    assert!(v.iter().any(|m| m.contains("which 2 PTEs map")), "{v:?}");
    with_pte(&rig, &child, p, |s| {
        s.fetch_and(!(Pte::WRITABLE | Pte::DIRTY), Relaxed);
    });
    assert!(violations(&rig).is_empty());
    rig.cpu.exit_process(child);
}

/// Invariant 2: a private file mapping with a writable PTE to the page
/// cache's own page (a write would reach the file).
#[test]
fn a_writable_pte_to_a_page_cache_page_of_a_private_mapping_is_reported() {
    let dir = std::env::temp_dir().join(format!("oxmm-checker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("data");
    std::fs::write(&path, [7u8; 4096]).unwrap();
    let mut rig = Rig::new();
    let file = rig.machine.open_file(&path).unwrap();
    let a = rig.cpu.mmap_file(0, PAGE, Prot::RW, MapFlags::PRIVATE, &file, 0).unwrap();
    assert_eq!(rig.cpu.read_u8(a).unwrap(), 7);
    with_pte(&rig, &rig.proc, a, |s| {
        s.fetch_or(Pte::WRITABLE, Relaxed);
    });
    let v = violations(&rig);
    assert!(v.iter().any(|m| m.contains("maps page-cache page")), "{v:?}");
    with_pte(&rig, &rig.proc, a, |s| {
        s.fetch_and(!Pte::WRITABLE, Relaxed);
    });
    assert!(violations(&rig).is_empty());
    rig.cpu.munmap(a.as_u64(), PAGE).unwrap();
    drop(file);
    let _ = std::fs::remove_dir_all(dir);
}

/// Invariant 4: an RSS counter driven below zero (the fold reads it as
/// zero, the checker compares the raw sum).
#[test]
fn an_rss_counter_below_zero_is_reported() {
    let (rig, _, _) = rig_with_a_page();
    let mm = rig.proc.mm();
    mm.add_rss(rig.cpu.id(), oxmm::mm::rss::RssKind::File, -1);
    assert_eq!(mm.rss().file, 0, "the fold clamps");
    let v = violations(&rig);
    assert!(v.iter().any(|m| m.contains("RSS file -1 but 0")), "{v:?}");
    mm.add_rss(rig.cpu.id(), oxmm::mm::rss::RssKind::File, 1);
    assert!(violations(&rig).is_empty());
}

/// Invariant 7: free plus allocated frames is the boot count; a frame that
/// lost its ALLOCATED flag without going back to a free list breaks it.
#[test]
fn a_frame_neither_free_nor_allocated_is_reported() {
    let (rig, _, _) = rig_with_a_page();
    let sys = rig.machine.sys();
    let pfn = sys.phys.alloc_frame(rig.cpu.id(), Gfp::KERNEL).expect("a frame");
    let f = sys.phys.frame(pfn);
    f.flags.fetch_and(!flags::ALLOCATED, Relaxed);
    let v = violations(&rig);
    assert!(v.iter().any(|m| m.contains("!= boot free")), "{v:?}");
    f.flags.fetch_or(flags::ALLOCATED, Relaxed);
    sys.phys.free_frame(rig.cpu.id(), pfn);
    assert!(violations(&rig).is_empty());
}

/// Invariant 8: a page nothing maps any more (a cached file page) whose
/// reverse map still names a PTE.
#[test]
fn a_stale_reverse_map_on_an_unmapped_page_is_reported() {
    let dir = std::env::temp_dir().join(format!("oxmm-checker-rmap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("data");
    std::fs::write(&path, [7u8; 4096]).unwrap();
    let mut rig = Rig::with_rmap(oxmm::rmap::RmapScheme::PteChains);
    let file = rig.machine.open_file(&path).unwrap();
    let a = rig.cpu.mmap_file(0, PAGE, Prot::READ, MapFlags::SHARED, &file, 0).unwrap();
    assert_eq!(rig.cpu.read_u8(a).unwrap(), 7);
    let pfn = rig.pfn_of(&rig.proc, a);
    let f = rig.machine.sys().phys.frame(pfn);
    let live = f.rmap.load(Relaxed);
    rig.cpu.munmap(a.as_u64(), PAGE).unwrap();
    assert_ne!(f.flags() & flags::ALLOCATED, 0, "the page stays cached while the file is open");
    assert_eq!(f.rmap.swap(live, Relaxed), 0, "munmap removed the entry");
    let v = violations(&rig);
    assert!(v.iter().any(|m| m.contains("no PTE maps it but the reverse map gives")), "{v:?}");
    f.rmap.store(0, Relaxed);
    assert!(violations(&rig).is_empty());
    drop(file);
    let _ = std::fs::remove_dir_all(dir);
}

/// Invariant 9: a page-table page allocated unmovable, outside any movable
/// zone (seed 004's tables must be relocatable).
#[test]
fn an_unmovable_page_table_is_reported() {
    let mut rig = Rig::with(MachineConfig { movable_percent: 0, ..Default::default() });
    let p = rig.map(PAGE, Prot::RW);
    rig.cpu.write_u8(p, 1).unwrap();
    let t = {
        let mm = rig.proc.mm();
        let _g = mm.read(rig.cpu.id());
        // SAFETY: the read lock is held while walking.
        unsafe { oxmm::pgtable::pte_table(rig.machine.sys(), mm.root(), p) }.expect("a PTE table")
    };
    let f = rig.machine.sys().phys.frame(t);
    f.flags.fetch_and(!flags::MOVABLE, Relaxed);
    let v = violations(&rig);
    assert!(v.iter().any(|m| m.contains("page-table page") && m.contains("unmovable")), "{v:?}");
    f.flags.fetch_or(flags::MOVABLE, Relaxed);
    assert!(violations(&rig).is_empty());
}
