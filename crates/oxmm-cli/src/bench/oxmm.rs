//! The hosted oxmm machine as a [`FaultTarget`].
//!
//! One process per target; each benchmark thread takes CPU `index` of the machine and
//! switches to the process, so N threads fault one address space
//! concurrently, as in seed 003's test. Every touch goes through the
//! software MMU (TLB miss → walk → fault handler → retry), and the arena was
//! pre-touched at boot, so the figures contain no host-kernel faults.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use oxmm::addr::VirtAddr;
use oxmm::mm::{MapFlags, Prot};
use oxmm::system::RssMode;
use oxmm_host::{Cpu, Machine, Process};

use super::faults::{FaultTarget, FaultThread, SHARED_WRITES};

/// The hosted machine's fault path, in one configuration (prefault, RSS
/// counting). Several targets may share one machine: each has its own
/// process, and sets the machine-wide prefault policy to its own before
/// each of its runs ([`FaultTarget::begin_run`]); runs never overlap.
pub struct OxmmTarget {
    machine: Arc<Machine>,
    process: Process,
    name: String,
    prefault: Option<u8>,
    rss: RssMode,
    reference: Option<String>,
}

impl OxmmTarget {
    /// A target named `name` with prefault `prefault` (`Some(max_order)`
    /// or off) and RSS counters kept in `rss`.
    pub fn with_config(
        machine: Arc<Machine>,
        name: impl Into<String>,
        prefault: Option<u8>,
        rss: RssMode,
    ) -> anyhow::Result<OxmmTarget> {
        let cpu = machine.cpu(0).context("taking CPU 0 to create the benchmark process")?;
        let process =
            machine.new_process_with_rss(&cpu, rss).map_err(|e| anyhow!("creating the benchmark process: {e}"))?;
        drop(cpu);
        Ok(OxmmTarget { machine, process, name: name.into(), prefault, rss, reference: None })
    }

    /// Also compare this target with the target named `name`.
    pub fn compared_with(mut self, name: impl Into<String>) -> Self {
        self.reference = Some(name.into());
        self
    }
}

impl FaultTarget for OxmmTarget {
    type Thread<'a> = OxmmThread;

    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> String {
        let prefault = match self.prefault {
            Some(order) => format!("prefault on (max order {order}: up to {} extra pages)", 1u32 << order),
            None => "prefault off".to_string(),
        };
        let rss = match self.rss {
            RssMode::PerCpu => "per-CPU RSS counters",
            RssMode::Shared => "one shared set of RSS counters",
        };
        let c = self.machine.config();
        let huge = self
            .machine
            .arena_huge_page_share()
            .map(|s| format!(", arena {:.1}% in huge pages", s * 100.0))
            .unwrap_or_default();
        format!("oxmm hosted machine ({} CPUs, {} MiB{huge}), {prefault}, {rss}", c.cpus, c.mem_bytes >> 20)
    }

    fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }

    fn entry_counter(&self) -> Option<&'static str> {
        Some("pgfault")
    }

    fn begin_run(&self) -> anyhow::Result<()> {
        self.machine.sys().set_prefault(self.prefault);
        let now = self.machine.sys().prefault();
        let want = self.prefault.map(|o| o.min(oxmm::system::PREFAULT_MAX_ORDER));
        if now != want {
            bail!("prefault is {now:?} after setting {want:?}");
        }
        Ok(())
    }

    fn thread(&self, index: usize) -> anyhow::Result<OxmmThread> {
        let mut cpu = self.machine.cpu(index).with_context(|| format!("benchmark thread {index} needs CPU {index}"))?;
        cpu.switch_to(&self.process);
        Ok(OxmmThread { cpu })
    }

    /// Fault-handler entries (`pgfault`), the prefault counters, and
    /// writes to shared cache lines (`shared_writes`: all of them, zone-lock
    /// batches of the page allocator included, which are also shown apart).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let v = self.machine.vmstat();
        let get = |name: &str| v.get(name).unwrap_or(0).max(0) as u64;
        let mut c: Vec<(&'static str, u64)> =
            ["pgfault", "prefault_windows", "prefault_pages", "prefault_unused", "zone_lock_batches"]
                .into_iter()
                .map(|n| (n, get(n)))
                .collect();
        c.push((SHARED_WRITES, self.machine.sys().shared_writes()));
        c
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
