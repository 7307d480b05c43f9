//! The invariant checker finds what it is meant to find: each test breaks
//! one invariant by hand (invariants 1–6, 8 and 9 of `oxmm::check`), checks
//! that `check` names it, and repairs it (the rig checks
//! again when dropped). Invariant 7, the free count, has no public way to
//! be broken.

mod common;

use std::sync::atomic::Ordering::Relaxed;

use common::*;
use oxmm::addr::{Pfn, VirtAddr};
use oxmm::mm::Prot;
use oxmm::phys::frame::flags;
use oxmm::phys::ZoneKind;

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
