//! The hosted oxmm machine as a [`FaultTarget`].
//!
//! One process; each benchmark thread takes CPU `index` of the machine and
//! switches to the process, so N threads fault one address space
//! concurrently, as in seed 003's test. Every touch goes through the
//! software MMU (TLB miss → walk → fault handler → retry), and the arena was
//! pre-touched at boot, so the figures contain no host-kernel faults.

use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use oxmm::addr::VirtAddr;
use oxmm::mm::{MapFlags, Prot};
use oxmm_host::{Cpu, Machine, Process};

use super::faults::{FaultTarget, FaultThread};

/// The hosted machine's fault path.
pub struct OxmmTarget {
    machine: Arc<Machine>,
    process: Process,
}

impl OxmmTarget {
    /// A target with one fresh process on `machine`.
    pub fn new(machine: Arc<Machine>) -> anyhow::Result<OxmmTarget> {
        let cpu = machine.cpu(0).context("taking CPU 0 to create the benchmark process")?;
        let process = machine.new_process(&cpu).map_err(|e| anyhow!("creating the benchmark process: {e}"))?;
        drop(cpu);
        Ok(OxmmTarget { machine, process })
    }

    /// The machine.
    pub fn machine(&self) -> &Arc<Machine> {
        &self.machine
    }
}

impl FaultTarget for OxmmTarget {
    type Thread<'a> = OxmmThread;

    fn name(&self) -> &str {
        "oxmm"
    }

    fn thread(&self, index: usize) -> anyhow::Result<OxmmThread> {
        let mut cpu = self.machine.cpu(index).with_context(|| format!("benchmark thread {index} needs CPU {index}"))?;
        cpu.switch_to(&self.process);
        Ok(OxmmThread { cpu })
    }

    /// `pgfault`: fault-handler entries of the hosted machine.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let v = self.machine.vmstat();
        vec![("pgfault", v.get("pgfault").unwrap_or(0).max(0) as u64)]
    }
}

/// One benchmark thread: a CPU running the benchmark process.
pub struct OxmmThread {
    cpu: Cpu,
}

impl FaultThread for OxmmThread {
    fn map(&mut self, len: u64) -> anyhow::Result<u64> {
        let va = self
            .cpu
            .mmap(0, len, Prot::RW, MapFlags::PRIVATE.union(MapFlags::ANONYMOUS))
            .map_err(|e| anyhow!("mmap({len}): {e}"))?;
        Ok(va.as_u64())
    }

    fn touch_pages(&mut self, addr: u64, len: u64, order: &[u32]) -> anyhow::Result<()> {
        let pages = len.div_ceil(4096);
        let mut touch = |i: u64| {
            self.cpu
                .write_u8(VirtAddr::new_truncate(addr + i * 4096), 1)
                .map_err(|f| anyhow!("write fault {:?} at {:#x}", f.kind, f.addr.as_u64()))
        };
        if order.is_empty() {
            for i in 0..pages {
                touch(i)?;
            }
        } else {
            for &i in order {
                touch(u64::from(i))?;
            }
        }
        Ok(())
    }

    fn unmap(&mut self, addr: u64, len: u64) -> anyhow::Result<()> {
        self.cpu.munmap(addr, len).map_err(|e| anyhow!("munmap: {e}"))
    }
}
