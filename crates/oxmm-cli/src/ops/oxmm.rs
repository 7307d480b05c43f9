//! The hosted oxmm machine as an op-script [`Backend`].
//!
//! One CPU runs every script process in turn (switching address spaces as
//! a scheduler would); each operation switches to its process first.
//! `file=` opens the host file through the machine (one page cache per
//! file, shared by every process mapping it).

use std::path::Path;
use std::sync::Arc;

use oxmm::addr::VirtAddr;
use oxmm::fault::FaultError;
use oxmm::mm::flags::{Advice, MapFlags, Prot, RemapFlags};
use oxmm_host::{Cpu, Machine, Process};

use super::run::{AccessError, Backend, BackendError, Fault, FaultKind, Rss, SysError};

/// Op scripts on a hosted machine.
pub struct OxmmBackend {
    machine: Arc<Machine>,
    cpu: Cpu,
}

impl OxmmBackend {
    /// A backend on `machine`, using its CPU 0.
    pub fn new(machine: Arc<Machine>) -> anyhow::Result<OxmmBackend> {
        let cpu = machine.cpu(0)?;
        Ok(OxmmBackend { machine, cpu })
    }

    /// The machine (for the invariant checker after a run).
    pub fn machine(&self) -> &Arc<Machine> {
        &self.machine
    }

    fn on(&mut self, p: &Process) -> &mut Cpu {
        self.cpu.switch_to(p);
        &mut self.cpu
    }
}

fn fault(f: oxmm_host::Fault) -> AccessError {
    let kind = match f.kind {
        FaultError::Segv => FaultKind::Segv,
        FaultError::Bus => FaultKind::Bus,
        FaultError::Oom => FaultKind::Oom,
    };
    AccessError::Fault(Fault { kind, addr: f.addr.as_u64() })
}

/// The script's address as a virtual address: one outside the canonical
/// 48-bit space faults (SEGV) like any unmapped address, as on Linux.
fn user_va(a: u64) -> Result<VirtAddr, AccessError> {
    VirtAddr::try_new(a).map_err(|_| AccessError::Fault(Fault { kind: FaultKind::Segv, addr: a }))
}

impl Backend for OxmmBackend {
    type Proc = Process;

    fn new_proc(&mut self) -> Result<Process, BackendError> {
        self.machine.new_process(&self.cpu).map_err(|e| BackendError(format!("cannot create a process: {e}")))
    }

    fn mmap(
        &mut self,
        p: &mut Process,
        len: u64,
        prot: Prot,
        shared: bool,
        file: Option<(&Path, u64)>,
    ) -> Result<u64, SysError> {
        let sharing = if shared { MapFlags::SHARED } else { MapFlags::PRIVATE };
        if let Some((path, offset)) = file {
            // The file is opened for the call, as a program would open it,
            // map it and close it: the mapping keeps the page cache alive.
            let cache = self
                .machine
                .open_file(path)
                .map_err(|e| SysError::Backend(BackendError(format!("cannot open `{}`: {e}", path.display()))))?;
            return Ok(self.on(p).mmap_file(0, len, prot, sharing, &cache, offset)?.as_u64());
        }
        let flags = sharing.union(MapFlags::ANONYMOUS);
        Ok(self.on(p).mmap(0, len, prot, flags)?.as_u64())
    }

    fn munmap(&mut self, p: &mut Process, addr: u64, len: u64) -> Result<(), SysError> {
        Ok(self.on(p).munmap(addr, len)?)
    }

    fn mprotect(&mut self, p: &mut Process, addr: u64, len: u64, prot: Prot) -> Result<(), SysError> {
        Ok(self.on(p).mprotect(addr, len, prot)?)
    }

    fn madvise(&mut self, p: &mut Process, addr: u64, len: u64, advice: Advice) -> Result<(), SysError> {
        Ok(self.on(p).madvise(addr, len, advice as u32)?)
    }

    fn touch(&mut self, p: &mut Process, addr: u64, len: u64, write: bool) -> Result<(), AccessError> {
        let cpu = self.on(p);
        let end = addr.saturating_add(len);
        let mut a = addr;
        while a < end {
            cpu.touch(user_va(a)?, write).map_err(fault)?;
            a = (a & !0xfff) + 4096;
        }
        Ok(())
    }

    fn fill(&mut self, p: &mut Process, addr: u64, len: u64, byte: u8) -> Result<(), AccessError> {
        let va = user_va(addr)?;
        self.on(p).fill(va, len, byte).map_err(fault)
    }

    fn sum(&mut self, p: &mut Process, addr: u64, len: u64) -> Result<u64, AccessError> {
        let va = user_va(addr)?;
        self.on(p).sum(va, len).map_err(fault)
    }

    fn mremap(&mut self, p: &mut Process, addr: u64, old: u64, new: u64) -> Result<u64, SysError> {
        Ok(self.on(p).mremap(addr, old, new, RemapFlags::MAYMOVE, 0)?.as_u64())
    }

    fn fork(&mut self, p: &mut Process) -> Result<Process, SysError> {
        Ok(self.cpu.fork(p)?)
    }

    fn exit(&mut self, p: Process) -> Result<(), BackendError> {
        self.cpu.exit_process(p);
        Ok(())
    }

    fn stat(&mut self, p: &mut Process) -> Result<Rss, SysError> {
        let r = p.rss();
        Ok(Rss { anon: r.anon, file: r.file, shmem: r.shmem, swap: r.swap })
    }

    fn mincore(&mut self, p: &mut Process, addr: u64, len: u64) -> Result<u64, SysError> {
        Ok(self.on(p).mincore_count(addr, len)?)
    }
}
