//! fork, copy-on-write and exit, under each reverse-map scheme: Linux
//! semantics (private writes invisible to the other process, RSS of both
//! counts shared COW pages) and the checker's rmap verification after
//! every step.

mod common;

use common::*;
use oxmm::mm::{MapFlags, Prot};
use oxmm::rmap::RmapScheme;
use oxmm_host::MachineConfig;

const SCHEMES: [RmapScheme; 3] = [RmapScheme::PteChains, RmapScheme::Object, RmapScheme::None];

fn rig(scheme: RmapScheme) -> Rig {
    Rig::with(MachineConfig { mem_bytes: 64 << 20, nodes: 1, cpus: 4, movable_percent: 75, rmap: scheme })
}

#[test]
fn private_writes_after_fork_are_invisible_to_the_other_process() {
    for scheme in SCHEMES {
        let mut r = rig(scheme);
        let n = 64u64;
        let a = r.map(n * PAGE, Prot::RW);
        r.cpu.fill(a, n * PAGE, 7).unwrap();
        let child = r.cpu.fork(&r.proc).unwrap();
        r.check();
        assert_eq!(child.rss().anon, n, "{scheme:?}: the child's RSS counts the shared COW pages");
        assert_eq!(r.rss_anon(), n);
        assert_eq!(r.machine.meminfo().anon, n, "no page was copied by fork");
        // Parent writes page 0; the child still sees 7.
        r.cpu.write_u8(a, 1).unwrap();
        let parent = r.proc.clone();
        r.cpu.switch_to(&child);
        assert_eq!(r.cpu.read_u8(a).unwrap(), 7, "{scheme:?}");
        // Child writes page 1; the parent still sees 7.
        r.cpu.write_u8(a + PAGE, 2).unwrap();
        assert_eq!(r.cpu.sum(a, n * PAGE).unwrap(), 7 * n * PAGE - 5);
        r.cpu.switch_to(&parent);
        assert_eq!(r.cpu.read_u8(a + PAGE).unwrap(), 7, "{scheme:?}");
        assert_eq!(r.cpu.sum(a, n * PAGE).unwrap(), 7 * n * PAGE - 6);
        assert_eq!(r.machine.meminfo().anon, n + 2, "two pages were copied");
        r.check();
        if scheme != RmapScheme::None {
            // Every shared page is found twice by the reverse map.
            let pfn = r.proc.mm().pte(r.cpu.id(), a + 5 * PAGE).unwrap().pfn();
            let maps = oxmm::rmap::mappings(r.machine.sys(), r.cpu.id(), pfn).unwrap();
            assert_eq!(maps.len(), 2, "{scheme:?}: {maps:?}");
        }
        r.cpu.exit_process(child);
        r.check();
        // The parent is now the only mapper: a write reuses the page.
        let before = r.machine.meminfo().anon;
        r.cpu.write_u8(a + 9 * PAGE, 3).unwrap();
        assert_eq!(r.machine.meminfo().anon, before, "{scheme:?}: sole mapper reuses the page");
    }
}

#[test]
fn shared_zero_page_and_untouched_memory_fork_cheaply() {
    let mut r = rig(RmapScheme::PteChains);
    let a = r.map(256 * PAGE, Prot::RW);
    r.cpu.touch(a, false).unwrap();
    let child = r.cpu.fork(&r.proc).unwrap();
    assert_eq!(child.rss().anon, 0);
    let parent = r.proc.clone();
    r.cpu.switch_to(&child);
    assert_eq!(r.cpu.read_u64(a).unwrap(), 0);
    r.cpu.write_u64(a, 5).unwrap();
    r.cpu.switch_to(&parent);
    assert_eq!(r.cpu.read_u64(a).unwrap(), 0);
    r.check();
    r.cpu.exit_process(child);
}

#[test]
fn fork_fan_out_shares_chains() {
    let mut r = rig(RmapScheme::PteChains);
    let n = 1024u64;
    let a = r.map(n * PAGE, Prot::RW);
    r.cpu.fill(a, n * PAGE, 1).unwrap();
    let mut kids = Vec::new();
    for _ in 0..8 {
        kids.push(r.cpu.fork(&r.proc).unwrap());
    }
    r.check();
    let st = oxmm::rmap::stats(r.machine.sys());
    assert_eq!(st.reverse_maps, n, "every page has a chain");
    assert!(
        st.chain_bytes * 4 <= st.page_table_bytes,
        "chains {} bytes vs page tables {}",
        st.chain_bytes,
        st.page_table_bytes
    );
    for k in kids {
        r.cpu.exit_process(k);
        r.check();
    }
    // No collapse back to direct (seed 000): the parent's pages keep
    // one-entry chains, still one shared chain per page-table page.
    let st = oxmm::rmap::stats(r.machine.sys());
    assert_eq!(st.reverse_maps, n);
    assert_eq!(st.chain_nodes, n / 512, "one shared one-node chain per page table: {st:?}");
}

#[test]
fn dontfork_and_wipeonfork() {
    let mut r = rig(RmapScheme::Object);
    let a = r.map(4 * PAGE, Prot::RW);
    let b = r.map(4 * PAGE, Prot::RW);
    r.cpu.fill(a, 4 * PAGE, 1).unwrap();
    r.cpu.fill(b, 4 * PAGE, 1).unwrap();
    r.cpu.madvise(a.as_u64(), 4 * PAGE, 10).unwrap(); // MADV_DONTFORK
    r.cpu.madvise(b.as_u64(), 4 * PAGE, 18).unwrap(); // MADV_WIPEONFORK
    let child = r.cpu.fork(&r.proc).unwrap();
    let parent = r.proc.clone();
    r.cpu.switch_to(&child);
    assert_eq!(r.cpu.read_u8(a).map_err(|f| f.kind), Err(oxmm::fault::FaultError::Segv));
    assert_eq!(r.cpu.read_u8(b).unwrap(), 0, "wiped in the child");
    r.cpu.switch_to(&parent);
    assert_eq!(r.cpu.read_u8(b).unwrap(), 1);
    r.check();
    r.cpu.exit_process(child);
    let _ = MapFlags::PRIVATE;
}

/// mlock is not inherited: a `MAP_LOCKED` mapping is locked in the parent
/// (MADV_DONTNEED there is EINVAL) and an ordinary one in the child, whose
/// MADV_DONTNEED drops its copy (checked on Linux 6.18: EINVAL in the
/// parent, 0 in the child).
#[test]
fn the_child_of_fork_does_not_inherit_mlock() {
    let mut r = rig(RmapScheme::Object);
    let flags = ANON.union(MapFlags::LOCKED);
    let a = r.cpu.mmap(0, 4 * PAGE, Prot::RW, flags).unwrap();
    r.cpu.fill(a, 4 * PAGE, 7).unwrap();
    let parent = r.proc.clone();
    let child = r.cpu.fork(&parent).unwrap();
    let dontneed = oxmm::mm::Advice::DontNeed as u32;
    assert_eq!(r.cpu.madvise(a.as_u64(), 4 * PAGE, dontneed), Err(oxmm::errno::Errno::EINVAL));
    r.cpu.switch_to(&child);
    assert_eq!(r.cpu.madvise(a.as_u64(), 4 * PAGE, dontneed), Ok(()));
    assert_eq!(r.cpu.read_u8(a).unwrap(), 0, "the child's copy was dropped");
    r.cpu.switch_to(&parent);
    assert_eq!(r.cpu.read_u8(a).unwrap(), 7);
    r.cpu.exit_process(child);
    r.check();
}
