//! The reverse-map interface (`oxmm::rmap::{mappings, page_referenced,
//! try_to_unmap}`), under both schemes that have one: it answers exactly
//! the (mm, address) pairs that map a page through fork fan-out, COW,
//! munmap and mremap; test-and-clear of accessed bits works with the TLB
//! (a cleared bit is set again by the next access through the MMU); and
//! unmapping every mapping leaves each process faulting in zero-fill.

mod common;

use common::*;
use oxmm::errno::Errno;
use oxmm::mm::flags::RemapFlags;
use oxmm::mm::Prot;
use oxmm::rmap::{self, RmapScheme};

const SCHEMES: [RmapScheme; 2] = [RmapScheme::PteChains, RmapScheme::Object];
const PAGES: u64 = 8;

mod mappings {
    use super::*;

    #[test]
    fn follow_fork_fan_out_cow_munmap_and_mremap() {
        for scheme in SCHEMES {
            let mut r = Rig::with_rmap(scheme);
            // A read-only page right above the region stops it growing in
            // place, so the mremap below has to move it.
            let blocker = r.map(PAGE, Prot::READ);
            let a = r.map(PAGES * PAGE, Prot::RW);
            assert_eq!(a + PAGES * PAGE, blocker, "top-down layout");
            r.cpu.fill(a, PAGES * PAGE, 0x5a).unwrap();
            let page = a + 3 * PAGE;
            let parent = r.proc.clone();
            let pfn = r.pfn_of(&parent, page);
            assert_eq!(r.rmap_of(pfn), at(&[&parent], page), "{scheme:?}: mapped once");

            let kids: Vec<_> = (0..4).map(|_| r.cpu.fork(&parent).unwrap()).collect();
            let grandchild = r.cpu.fork(&kids[0]).unwrap();
            let mut all: Vec<&oxmm_host::Process> = vec![&parent, &grandchild];
            all.extend(kids.iter());
            assert_eq!(r.rmap_of(pfn), at(&all, page), "{scheme:?}: after fan-out");
            assert_eq!(r.mapcount_of(pfn), 6);
            r.check();

            // COW in kid 1: it leaves the old page's map and is the only
            // mapper of its copy.
            r.cpu.switch_to(&kids[1]);
            r.cpu.write_u8(page, 1).unwrap();
            let copy = r.pfn_of(&kids[1], page);
            assert_ne!(copy, pfn);
            assert_eq!(r.rmap_of(copy), at(&[&kids[1]], page), "{scheme:?}: the copy");
            all.retain(|p| p.mm().id() != kids[1].mm().id());
            assert_eq!(r.rmap_of(pfn), at(&all, page), "{scheme:?}: after COW");
            r.check();

            // munmap of the page in kid 2.
            r.cpu.switch_to(&kids[2]);
            r.cpu.munmap(page.as_u64(), PAGE).unwrap();
            all.retain(|p| p.mm().id() != kids[2].mm().id());
            assert_eq!(r.rmap_of(pfn), at(&all, page), "{scheme:?}: after munmap");
            assert_eq!(r.mapcount_of(pfn), 4);
            r.check();

            // mremap moves kid 3's region: the page is reported at its new
            // address there, at the old one elsewhere.
            r.cpu.switch_to(&kids[3]);
            let moved = r.cpu.mremap(a.as_u64(), PAGES * PAGE, 2 * PAGES * PAGE, RemapFlags::MAYMOVE, 0).unwrap();
            assert_ne!(moved, a, "blocked: the region must move");
            let new_page = moved + 3 * PAGE;
            assert_eq!(r.pfn_of(&kids[3], new_page), pfn);
            all.retain(|p| p.mm().id() != kids[3].mm().id());
            let mut want = at(&all, page);
            want.push((kids[3].mm().id(), new_page.as_u64()));
            want.sort_unstable();
            assert_eq!(r.rmap_of(pfn), want, "{scheme:?}: after mremap");
            assert_eq!(r.cpu.read_u8(new_page).unwrap(), 0x5a);
            r.check();

            // Every other page of the region is still shared by all that
            // did not COW it.
            let other = r.pfn_of(&parent, a + 6 * PAGE);
            assert_eq!(r.rmap_of(other).len(), 6, "{scheme:?}");

            r.cpu.switch_to(&parent);
            for k in kids {
                r.cpu.exit_process(k);
                r.check();
            }
            assert_eq!(r.rmap_of(pfn), at(&[&parent, &grandchild], page), "{scheme:?}: after exits");
            r.cpu.exit_process(grandchild);
            assert_eq!(r.rmap_of(pfn), at(&[&parent], page), "{scheme:?}: alone again");
        }
    }

    #[test]
    fn are_enosys_without_a_reverse_map() {
        let mut r = Rig::with_rmap(RmapScheme::None);
        let a = r.map(PAGE, Prot::RW);
        r.cpu.write_u8(a, 1).unwrap();
        let pfn = r.pfn_of(&r.proc.clone(), a);
        let sys = r.machine.sys();
        assert_eq!(rmap::mappings(sys, r.cpu.id(), pfn).unwrap_err(), Errno::ENOSYS);
        assert_eq!(rmap::page_referenced(sys, r.cpu.id(), pfn).unwrap_err(), Errno::ENOSYS);
        assert_eq!(rmap::try_to_unmap(sys, r.cpu.id(), pfn).unwrap_err(), Errno::ENOSYS);
        assert_eq!(r.cpu.read_u8(a).unwrap(), 1, "nothing was unmapped");
    }
}

mod page_referenced {
    use super::*;

    #[test]
    fn counts_and_clears_accessed_bits() {
        for scheme in SCHEMES {
            let mut r = Rig::with_rmap(scheme);
            let a = r.map(PAGES * PAGE, Prot::RW);
            r.cpu.fill(a, PAGES * PAGE, 3).unwrap();
            let parent = r.proc.clone();
            let kids: Vec<_> = (0..3).map(|_| r.cpu.fork(&parent).unwrap()).collect();
            let pfn = r.pfn_of(&parent, a);
            let (sys, cpu) = (r.machine.sys().clone(), r.cpu.id());
            let referenced = |r: &Rig| rmap::page_referenced(&sys, r.cpu.id(), pfn).unwrap();

            // Whatever fork left set, one call clears it all.
            let first = referenced(&r);
            assert!(first >= 1, "{scheme:?}: the parent's fill set its accessed bit");
            assert_eq!(referenced(&r), 0, "{scheme:?}: cleared");
            assert!(!r.pte(a).is_accessed());

            // Each access through the MMU sets the bit again: reads in the
            // parent and in two children.
            assert_eq!(r.cpu.read_u8(a).unwrap(), 3);
            assert_eq!(referenced(&r), 1, "{scheme:?}: the parent's read");
            assert_eq!(referenced(&r), 0);
            // The parent's translation is still in this CPU's TLB unless
            // page_referenced flushed it: a second read must walk again.
            assert_eq!(r.cpu.read_u8(a).unwrap(), 3);
            assert_eq!(referenced(&r), 1, "{scheme:?}: the read after the flush set the bit again");
            for k in &kids[..2] {
                r.cpu.switch_to(k);
                assert_eq!(r.cpu.read_u8(a).unwrap(), 3);
            }
            assert_eq!(referenced(&r), 2, "{scheme:?}: two children read");
            assert_eq!(referenced(&r), 0);
            // Pages nobody touched are not counted.
            let other = r.pfn_of(&parent, a + PAGE);
            assert_eq!(rmap::page_referenced(&sys, cpu, other).unwrap(), 1, "{scheme:?}: fill only");
            r.cpu.switch_to(&parent);
            for k in kids {
                r.cpu.exit_process(k);
            }
        }
    }
}

mod try_to_unmap {
    use super::*;

    #[test]
    fn removes_every_mapping() {
        for scheme in SCHEMES {
            let mut r = Rig::with_rmap(scheme);
            let a = r.map(PAGES * PAGE, Prot::RW);
            r.cpu.fill(a, PAGES * PAGE, 9).unwrap();
            let parent = r.proc.clone();
            let kids: Vec<_> = (0..3).map(|_| r.cpu.fork(&parent).unwrap()).collect();
            let grandchild = r.cpu.fork(&kids[0]).unwrap();
            let page = a + 2 * PAGE;
            // Warm every TLB entry for the page (they must be shot down).
            let mut all = vec![parent.clone(), grandchild.clone()];
            all.extend(kids.iter().cloned());
            for p in &all {
                r.cpu.switch_to(p);
                assert_eq!(r.cpu.read_u8(page).unwrap(), 9);
            }
            r.cpu.switch_to(&parent);
            let pfn = r.pfn_of(&parent, page);
            let anon = r.machine.meminfo().anon;
            let n = rmap::try_to_unmap(r.machine.sys(), r.cpu.id(), pfn).unwrap();
            assert_eq!(n, all.len(), "{scheme:?}");
            assert_eq!(r.mapcount_of(pfn), 0);
            assert_eq!(r.rmap_of(pfn), vec![]);
            assert_eq!(r.machine.meminfo().anon, anon - 1, "{scheme:?}: the page was freed");
            for p in &all {
                assert_eq!(p.rss().anon, PAGES - 1, "{scheme:?}: RSS dropped in mm {}", p.mm().id());
                assert!(!p.mm().pte(r.cpu.id(), page).unwrap_or(oxmm::arch::Pte::NONE).maps_frame());
            }
            r.check();
            // Each process faults again: private anonymous memory reads back
            // as zero-fill; neighbours keep their data.
            for p in &all {
                r.cpu.switch_to(p);
                assert_eq!(r.cpu.read_u64(page).unwrap(), 0, "{scheme:?}");
                assert_eq!(r.cpu.read_u8(a + PAGE).unwrap(), 9);
                assert_eq!(r.cpu.read_u8(page + PAGE).unwrap(), 9);
                r.cpu.write_u8(page, 1).unwrap();
            }
            r.check();
            r.cpu.switch_to(&parent);
            drop(all);
            for k in kids {
                r.cpu.exit_process(k);
            }
            r.cpu.exit_process(grandchild);
        }
    }

    #[test]
    fn of_a_page_mapped_once_and_moved() {
        for scheme in SCHEMES {
            let mut r = Rig::with_rmap(scheme);
            let blocker = r.map(PAGE, Prot::READ);
            let a = r.map(4 * PAGE, Prot::RW);
            assert_eq!(a + 4 * PAGE, blocker);
            r.cpu.fill(a, 4 * PAGE, 4).unwrap();
            let b = r.cpu.mremap(a.as_u64(), 4 * PAGE, 8 * PAGE, RemapFlags::MAYMOVE, 0).unwrap();
            let pfn = r.pfn_of(&r.proc.clone(), b + PAGE);
            assert_eq!(r.rmap_of(pfn), at(&[&r.proc.clone()], b + PAGE), "{scheme:?}");
            assert_eq!(rmap::try_to_unmap(r.machine.sys(), r.cpu.id(), pfn).unwrap(), 1);
            assert_eq!(r.rss_anon(), 3);
            assert_eq!(r.cpu.read_u8(b + PAGE).unwrap(), 0);
            assert_eq!(r.cpu.read_u8(b).unwrap(), 4);
        }
    }
}
