//! Running out of memory: a fault that cannot get a frame returns
//! `Fault { kind: Oom }` at the faulting address — never a panic — and
//! everything is freed afterwards.

mod common;

use common::*;
use oxmm::fault::FaultError;
use oxmm::mm::{MapFlags, Prot};
use oxmm_host::MachineConfig;

fn tiny(mem_bytes: u64) -> Rig {
    Rig::with(MachineConfig { mem_bytes, nodes: 1, cpus: 2, movable_percent: 75, ..MachineConfig::default() })
}

/// Write one byte per page of `[p, p+len)` until a fault; the number of
/// pages written and the fault.
fn write_until_fault(rig: &mut Rig, p: oxmm::addr::VirtAddr, len: u64) -> (u64, Option<oxmm_host::Fault>) {
    for i in 0..len / PAGE {
        if let Err(f) = rig.cpu.write_u8(p + i * PAGE, (i as u8) | 1) {
            return (i, Some(f));
        }
    }
    (len / PAGE, None)
}

#[test]
fn writing_more_pages_than_exist_is_oom() {
    let mut rig = tiny(2 << 20);
    let total = rig.machine.meminfo().total;
    let boot_free = rig.machine.meminfo().free;
    let len = 2 * total * PAGE;
    // Larger than memory: Linux's heuristic overcommit wants MAP_NORESERVE.
    let p = rig.cpu.mmap(0, len, Prot::RW, ANON.union(MapFlags::NORESERVE)).unwrap();
    let (done, fault) = write_until_fault(&mut rig, p, len);
    let f = fault.expect("a machine cannot back twice its frames");
    assert_eq!(f.kind, FaultError::Oom);
    assert_eq!(f.addr, p + done * PAGE, "the fault names the page that could not be backed");
    assert!(done > 0 && done < total, "wrote {done} of {total} frames");
    assert_eq!(rig.rss_anon(), done);
    assert!(rig.stat("fault_oom") >= 1);
    // The pages that were backed hold their data.
    for i in 0..done {
        assert_eq!(rig.cpu.read_u8(p + i * PAGE).unwrap(), (i as u8) | 1);
    }
    // Retrying still fails cleanly (nothing was freed meanwhile).
    assert_eq!(rig.cpu.write_u8(p + done * PAGE, 1).unwrap_err().kind, FaultError::Oom);
    // Reads of unbacked pages still work: they need no frame (the zero page).
    assert_eq!(rig.cpu.read_u8(p + (done + 1) * PAGE).unwrap(), 0);
    rig.check();
    rig.cpu.munmap(p.as_u64(), len).unwrap();
    assert_eq!(rig.rss_anon(), 0);
    assert_eq!(rig.machine.meminfo().page_tables, 1);
    assert_eq!(rig.machine.meminfo().free, boot_free, "everything came back");
    // The memory is usable again.
    let q = rig.map(4 * PAGE, Prot::RW);
    rig.cpu.fill(q, 4 * PAGE, 1).unwrap();
}

#[test]
fn oom_while_allocating_page_tables_is_a_fault_too() {
    // Fill memory with data pages, then touch a page far away that needs
    // new page tables.
    let mut rig = tiny(1 << 20);
    let total = rig.machine.meminfo().total;
    let len = 2 * total * PAGE;
    // Larger than memory: Linux's heuristic overcommit wants MAP_NORESERVE.
    let p = rig.cpu.mmap(0, len, Prot::RW, ANON.union(MapFlags::NORESERVE)).unwrap();
    let (done, fault) = write_until_fault(&mut rig, p, len);
    assert_eq!(fault.expect("oom").kind, FaultError::Oom);
    // 1 GiB away: a new PMD and PTE table would be needed.
    let far = rig.cpu.mmap(p.as_u64() - (1 << 30), PAGE, Prot::RW, ANON.union(MapFlags::FIXED)).unwrap();
    let r = rig.cpu.read_u8(far);
    assert_eq!(r.unwrap_err().kind, FaultError::Oom, "a read needing a table it cannot get is OOM");
    assert_eq!(rig.cpu.write_u8(far, 1).unwrap_err().kind, FaultError::Oom);
    rig.check();
    // Free half and the far page can be backed.
    rig.cpu.munmap(p.as_u64(), (done / 2) * PAGE).unwrap();
    rig.cpu.write_u8(far, 1).unwrap();
    assert_eq!(rig.cpu.read_u8(far).unwrap(), 1);
}

#[test]
fn map_populate_beyond_memory_does_not_panic() {
    let mut rig = tiny(1 << 20);
    let total = rig.machine.meminfo().total;
    let p =
        rig.cpu.mmap(0, 2 * total * PAGE, Prot::RW, ANON.union(MapFlags::POPULATE).union(MapFlags::NORESERVE)).unwrap();
    assert!(rig.rss_anon() < total);
    assert_eq!(rig.cpu.write_u8(p + (2 * total - 1) * PAGE, 1).unwrap_err().kind, FaultError::Oom);
    rig.cpu.munmap(p.as_u64(), 2 * total * PAGE).unwrap();
    assert_eq!(rig.machine.meminfo().page_tables, 1);
}
