//! The invariant checker finds what it is meant to find: each test breaks
//! one invariant by hand, checks that `check` names it, and repairs it (the
//! rig checks again when dropped).

mod common;

use common::*;
use oxmm::mm::Prot;
use oxmm::phys::frame::flags;
use oxmm::phys::ZoneKind;

fn violations(rig: &Rig) -> Vec<String> {
    rig.machine.check().err().map(|e| e.violations).unwrap_or_default()
}

/// Invariant 9: a frame of a movable zone that was allocated unmovable.
#[test]
fn an_unmovable_frame_in_a_movable_zone_is_reported() {
    let mut rig = Rig::new();
    let p = rig.map(PAGE, Prot::RW);
    rig.cpu.write_u8(p, 1).unwrap();
    let pfn = rig.pfn_of(&rig.proc, p);
    let sys = rig.machine.sys();
    let zone = sys.phys.zones().iter().find(|z| z.start <= pfn && pfn < z.end).expect("a zone holds the frame");
    assert_eq!(zone.kind, ZoneKind::Movable, "a user page comes from the movable zone");
    assert!(violations(&rig).is_empty());
    let f = sys.phys.frame(pfn);
    f.flags.fetch_and(!flags::MOVABLE, std::sync::atomic::Ordering::Relaxed);
    let v = violations(&rig);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("movable zone allocated unmovable"), "{v:?}");
    f.flags.fetch_or(flags::MOVABLE, std::sync::atomic::Ordering::Relaxed);
    assert!(violations(&rig).is_empty());
}
