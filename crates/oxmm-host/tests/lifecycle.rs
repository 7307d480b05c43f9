//! Handles that outlive what they name: an exited address space, a CPU
//! handed back and taken again. (Regression tests for review findings.)

use oxmm::addr::VirtAddr;
use oxmm::fault::FaultError;
use oxmm::mm::{MapFlags, Prot};
use oxmm::platform::CpuId;
use oxmm::Errno;
use oxmm_host::{Machine, MachineConfig};

const ANON: MapFlags = MapFlags(MapFlags::PRIVATE.0 | MapFlags::ANONYMOUS.0);

fn machine() -> std::sync::Arc<Machine> {
    Machine::new(MachineConfig {
        mem_bytes: 64 << 20,
        nodes: 1,
        cpus: 2,
        movable_percent: 75,
        ..MachineConfig::default()
    })
    .unwrap()
}

#[test]
fn calls_on_an_exited_address_space_fail_and_touch_nothing() {
    let machine = machine();
    let mut cpu = machine.cpu(0).unwrap();
    let a = machine.new_process(&cpu).unwrap();
    let a2 = a.clone(); // a handle kept past exit
    cpu.switch_to(&a);
    cpu.exit_process(a);
    // B may get A's freed root frame (LIFO per-CPU cache).
    let b = machine.new_process(&cpu).unwrap();
    cpu.switch_to(&b);
    let pb = cpu.mmap(0, 4096, Prot::RW, ANON).unwrap();
    cpu.write_u64(pb, 0xb0b).unwrap();
    let mm = a2.mm();
    let fixed = MapFlags(ANON.0 | MapFlags::POPULATE.0 | MapFlags::FIXED.0);
    assert_eq!(mm.mmap(CpuId(0), 0x1000_0000, 4096, Prot::RW, fixed), Err(Errno::EINVAL));
    assert_eq!(mm.munmap(CpuId(0), pb.as_u64(), 4096), Err(Errno::EINVAL));
    assert_eq!(mm.mprotect(CpuId(0), pb.as_u64(), 4096, Prot::READ), Err(Errno::EINVAL));
    assert_eq!(mm.madvise(CpuId(0), 0x1000_0000, 4096, 22), Err(Errno::EINVAL));
    assert_eq!(mm.mincore_count(CpuId(0), pb.as_u64(), 4096), Err(Errno::EINVAL));
    let brk = mm.brk(CpuId(0), 0);
    assert_eq!(mm.brk(CpuId(0), brk + (1 << 20)), brk, "brk cannot grow an exited mm");
    assert_eq!(
        oxmm::fault::handle_fault(mm, CpuId(0), VirtAddr::new_truncate(0x1000_0000), oxmm::fault::Access::Write),
        Err(FaultError::Segv)
    );
    assert_eq!(cpu.read_u64(VirtAddr::new_truncate(0x1000_0000)).map_err(|f| f.kind), Err(FaultError::Segv));
    assert_eq!(cpu.read_u64(pb).unwrap(), 0xb0b);
    machine.check().unwrap();
    let bb = b.clone();
    cpu.exit_process(b);
    drop(bb);
    drop(a2);
    machine.check().unwrap();
    assert_eq!(machine.meminfo().anon, 0);
}

#[test]
fn a_cpu_taken_again_starts_with_an_empty_tlb() {
    let machine = machine();
    let mut cpu = machine.cpu(0).unwrap();
    let x = machine.new_process(&cpu).unwrap();
    cpu.switch_to(&x);
    let a = cpu.mmap(0, 4096, Prot::RW, ANON).unwrap();
    cpu.write_u64(a, 0x1234).unwrap();
    drop(cpu);
    let mut cpu = machine.cpu(0).unwrap();
    assert!(cpu.current().is_none());
    assert_eq!(cpu.read_u64(a).map_err(|f| f.kind), Err(FaultError::Segv));
    assert_eq!(cpu.write_u64(a, 0x5678).map_err(|f| f.kind), Err(FaultError::Segv));
    cpu.switch_to(&x);
    assert_eq!(cpu.read_u64(a).unwrap(), 0x1234);
    cpu.exit_process(x);
    machine.check().unwrap();
}

#[test]
fn the_last_reference_dropped_anywhere_tears_down() {
    let machine = machine();
    let cpu = machine.cpu(0).unwrap();
    let p = machine.new_process(&cpu).unwrap();
    let mut cpu1 = machine.cpu(1).unwrap();
    cpu1.switch_to(&p);
    let a = cpu1.mmap(0, 16 * 4096, Prot::RW, ANON).unwrap();
    cpu1.fill(a, 16 * 4096, 9).unwrap();
    drop(cpu1); // the CPU handle held an Arc to the mm
    drop(p); // last reference: exit from no CPU
    machine.check().unwrap();
    assert_eq!(machine.meminfo().anon, 0);
    assert_eq!(machine.meminfo().page_tables, 0);
    drop(cpu);
}

#[test]
fn mincore_of_a_huge_range_allocates_nothing() {
    let machine = machine();
    let mut cpu = machine.cpu(0).unwrap();
    let p = machine.new_process(&cpu).unwrap();
    cpu.switch_to(&p);
    let len = 0x7e00_0000_0000u64;
    let a = cpu.mmap(0, len, Prot::RW, MapFlags(ANON.0 | MapFlags::NORESERVE.0)).unwrap();
    cpu.write_u64(a, 1).unwrap();
    assert_eq!(cpu.mincore_count(a.as_u64(), len), Ok(1));
    // Without NORESERVE, Linux's heuristic overcommit refuses it.
    assert_eq!(cpu.mmap(0, len / 2, Prot::RW, ANON), Err(Errno::ENOMEM));
    cpu.exit_process(p);
    machine.check().unwrap();
}
