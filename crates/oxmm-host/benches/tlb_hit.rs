//! Criterion micro-benchmarks of the software MMU's access paths.
//!
//! - `tlb_hit_read_u64`: an aligned 8-byte load whose translation is in the
//!   TLB (window open/close, TLB lookup, the load). Target: ≤ 10 ns.
//! - `tlb_hit_write_u64`: the same for a store to a dirty, writable page.
//! - `host_read_u64`: a plain volatile load of host memory, the floor.
//! - `tlb_miss_walk_read_u64`: a load that misses the TLB (the 512-entry
//!   TLB is cycled through 1024 pages) and walks the 4-level table.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use oxmm::addr::VirtAddr;
use oxmm::mm::{MapFlags, Prot};
use oxmm_host::{Machine, MachineConfig};

fn bench(c: &mut Criterion) {
    let m = Machine::new(MachineConfig {
        mem_bytes: 64 << 20,
        nodes: 1,
        cpus: 1,
        movable_percent: 75,
        ..MachineConfig::default()
    })
    .expect("machine");
    let mut cpu = m.cpu(0).expect("cpu");
    let p = m.new_process(&cpu).expect("process");
    cpu.switch_to(&p);
    let pages = 1024u64;
    let va = cpu.mmap(0, pages * 4096, Prot::RW, MapFlags::PRIVATE.union(MapFlags::ANONYMOUS)).expect("mmap");
    for i in 0..pages {
        cpu.write_u64(va + i * 4096, i).expect("populate");
    }
    let target = va + 64;
    cpu.read_u64(target).expect("warm");

    c.bench_function("tlb_hit_read_u64", |b| b.iter(|| black_box(cpu.read_u64(black_box(target)))));
    c.bench_function("tlb_hit_write_u64", |b| b.iter(|| cpu.write_u64(black_box(target), black_box(7))));
    let host = [5u64; 16];
    c.bench_function("host_read_u64", |b| {
        // SAFETY: `host[3]` is a valid, aligned u64 owned by this function.
        b.iter(|| black_box(unsafe { std::ptr::read_volatile(black_box(&host[3]) as *const u64) }))
    });
    let mut i = 0u64;
    c.bench_function("tlb_miss_walk_read_u64", |b| {
        b.iter(|| {
            i = (i + 1) % pages;
            black_box(cpu.read_u64(VirtAddr::new_truncate(va.as_u64() + i * 4096)))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
