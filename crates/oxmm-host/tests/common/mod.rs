//! Test helpers: a small machine, and the invariant checker run at the end
//! of every test (the `Rig` runs it when dropped, unless the test panicked).
#![allow(dead_code)]

use std::sync::Arc;

use oxmm::addr::VirtAddr;
use oxmm::mm::{MapFlags, Prot};
use oxmm_host::{Cpu, Machine, MachineConfig, Process};

pub const PAGE: u64 = 4096;

pub struct Rig {
    pub machine: Arc<Machine>,
    pub cpu: Cpu,
    pub proc: Process,
}

impl Rig {
    #[track_caller]
    pub fn new() -> Rig {
        Rig::with(MachineConfig { mem_bytes: 64 << 20, nodes: 1, cpus: 4, movable_percent: 75 })
    }

    #[track_caller]
    pub fn with(cfg: MachineConfig) -> Rig {
        let machine = Machine::new(cfg).expect("machine boots");
        let mut cpu = machine.cpu(0).expect("cpu 0");
        let proc = machine.new_process(&cpu).expect("process");
        cpu.switch_to(&proc);
        Rig { machine, cpu, proc }
    }

    #[track_caller]
    pub fn map(&mut self, len: u64, prot: Prot) -> VirtAddr {
        self.cpu.mmap(0, len, prot, MapFlags::PRIVATE.union(MapFlags::ANONYMOUS)).expect("mmap")
    }

    pub fn rss_anon(&self) -> u64 {
        self.proc.rss().anon
    }

    #[track_caller]
    pub fn check(&self) {
        if let Err(e) = self.machine.check() {
            panic!("invariant checker: {e}");
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        self.check();
        let p = self.proc.clone();
        self.cpu.exit_process(p);
        let leftovers: Vec<_> = self.machine.sys().mms().into_iter().filter(|m| !m.is_dead()).collect();
        if leftovers.is_empty() {
            // Every mm has exited: free frames must be back at boot count.
            if let Err(e) = self.machine.check() {
                panic!("invariant checker after exit: {e}");
            }
            let mi = self.machine.meminfo();
            assert_eq!(mi.page_tables, 0, "page tables leaked after exit");
            assert_eq!(mi.anon, 0, "anonymous pages leaked after exit");
        }
    }
}

pub fn va(a: u64) -> VirtAddr {
    VirtAddr::new_truncate(a)
}
