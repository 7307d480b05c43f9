//! The hosted machine: a memory arena, CPUs as threads, the oxmm core.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use oxmm::check::{CheckError, CheckSummary};
use oxmm::mm::Mm;
use oxmm::platform::{CpuId, MAX_CPUS};
use oxmm::stats::{MemInfo, VmStat};
use oxmm::system::{System, SystemConfig};

use crate::arena::Arena;
use crate::cpu::{Cpu, Process};
use crate::platform::HostPlatform;
use crate::HostError;

/// The machine's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    /// Physical memory in bytes (a multiple of 4 KiB; at least 1 MiB).
    pub mem_bytes: u64,
    /// NUMA nodes.
    pub nodes: usize,
    /// CPUs (at most 64).
    pub cpus: usize,
    /// Percent of each node in the movable zone.
    pub movable_percent: u64,
    /// The reverse-map scheme.
    pub rmap: oxmm::rmap::RmapScheme,
}

impl Default for MachineConfig {
    /// The built-in default machine: 2 GiB, one node, 4 CPUs.
    fn default() -> Self {
        MachineConfig {
            mem_bytes: 2 << 30,
            nodes: 1,
            cpus: 4,
            movable_percent: 75,
            rmap: oxmm::rmap::RmapScheme::PteChains,
        }
    }
}

/// A hosted machine.
pub struct Machine {
    sys: Arc<System>,
    platform: Arc<HostPlatform>,
    claimed: Vec<AtomicBool>,
    config: MachineConfig,
    open_files: std::sync::Mutex<std::collections::HashMap<(u64, u64), std::sync::Weak<oxmm::pagecache::PageCache>>>,
}

impl Machine {
    /// Boot a machine: map and pre-touch the arena, lay out frames.
    pub fn new(config: MachineConfig) -> Result<Arc<Machine>, HostError> {
        if config.cpus == 0 || config.cpus > MAX_CPUS {
            return Err(HostError::Config(format!("cpus must be 1..={MAX_CPUS}, got {}", config.cpus)));
        }
        if config.nodes == 0 || config.nodes > config.cpus.max(1) * 8 {
            return Err(HostError::Config(format!("nodes must be at least 1, got {}", config.nodes)));
        }
        if config.mem_bytes < (1 << 20) || !config.mem_bytes.is_multiple_of(4096) {
            return Err(HostError::Config(format!(
                "memory must be a multiple of 4 KiB and at least 1 MiB, got {}",
                config.mem_bytes
            )));
        }
        if config.mem_bytes / 4096 > u64::from(u32::MAX) {
            return Err(HostError::Config("memory above 16 TiB is not supported".into()));
        }
        crate::barrier::register().map_err(HostError::Membarrier)?;
        let arena = Arena::new(config.mem_bytes)?;
        let platform = Arc::new(HostPlatform::new(arena, config.cpus));
        let sys = System::new(
            platform.clone(),
            SystemConfig {
                nodes: config.nodes,
                movable_percent: config.movable_percent,
                rmap: config.rmap,
                ..SystemConfig::default()
            },
        )
        .map_err(|e| HostError::Config(format!("boot failed: {e}")))?;
        Ok(Arc::new(Machine {
            sys,
            platform,
            claimed: (0..config.cpus).map(|_| AtomicBool::new(false)).collect(),
            config,
            open_files: std::sync::Mutex::new(std::collections::HashMap::new()),
        }))
    }

    /// The configuration it booted with.
    pub fn config(&self) -> MachineConfig {
        self.config
    }

    /// The core's system object.
    pub fn sys(&self) -> &Arc<System> {
        &self.sys
    }

    /// How much of the arena the host backs with transparent huge pages
    /// (0 to 1; `None` where the host cannot say): benchmarks print it
    /// beside the zero-fill buffers' share, since 4 KiB host pages clear
    /// slower.
    pub fn arena_huge_page_share(&self) -> Option<f64> {
        let (base, frames) = oxmm::platform::Platform::direct_map(&*self.platform);
        crate::arena::huge_page_share(base, usize::try_from(frames).ok()? * 4096)
    }

    /// Take CPU `i` for the calling thread. Each CPU has one handle at a
    /// time; dropping it gives the CPU back.
    pub fn cpu(self: &Arc<Self>, i: usize) -> Result<Cpu, HostError> {
        let flag = self
            .claimed
            .get(i)
            .ok_or_else(|| HostError::Config(format!("no CPU {i}: the machine has {}", self.claimed.len())))?;
        if flag.swap(true, Ordering::AcqRel) {
            return Err(HostError::CpuBusy(i));
        }
        let base = oxmm::platform::Platform::direct_map(&*self.platform).0;
        Ok(Cpu::new(CpuId(i as u32), self.clone(), self.platform.tlbs[i].clone(), base))
    }

    pub(crate) fn release_cpu(&self, id: CpuId) {
        if let Some(f) = self.claimed.get(id.index()) {
            f.store(false, Ordering::Release);
        }
    }

    /// A new process with an empty address space, its root table allocated
    /// on `cpu`.
    pub fn new_process(&self, cpu: &Cpu) -> Result<Process, oxmm::Errno> {
        Ok(Process::new(Mm::new(&self.sys, cpu.id())?))
    }

    /// A new process whose RSS counters are kept in `mode` (per CPU, or one
    /// shared set), whatever the machine's default.
    pub fn new_process_with_rss(&self, cpu: &Cpu, mode: oxmm::system::RssMode) -> Result<Process, oxmm::Errno> {
        Ok(Process::new(Mm::with_rss_mode(&self.sys, cpu.id(), mode)?))
    }

    /// Open the host file `path` for mapping: one page cache per file
    /// (by device and inode), shared by every process that maps it while
    /// any handle or mapping keeps it alive.
    pub fn open_file(&self, path: &std::path::Path) -> std::io::Result<Arc<oxmm::pagecache::PageCache>> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        let key = (meta.dev(), meta.ino());
        let mut open = self.open_files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = open.get(&key).and_then(std::sync::Weak::upgrade) {
            return Ok(c);
        }
        let src = Arc::new(crate::file::HostFile::open(path)?);
        let c = self.sys.open_file(src);
        open.insert(key, Arc::downgrade(&c));
        Ok(c)
    }

    /// Run the invariant checker.
    pub fn check(&self) -> Result<CheckSummary, CheckError> {
        oxmm::check::check(&self.sys)
    }

    /// meminfo.
    pub fn meminfo(&self) -> MemInfo {
        self.sys.meminfo()
    }

    /// vmstat.
    pub fn vmstat(&self) -> VmStat {
        self.sys.vmstat()
    }
}
