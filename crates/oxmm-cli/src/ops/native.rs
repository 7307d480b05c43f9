//! The native backend: each op-script process is a real Linux process of
//! this machine ([`oxmm_host::native::ops::NativeProc`]), so a script's
//! output is what the host kernel answers.

use std::path::Path;

use oxmm::mm::flags::{Advice, Prot};
use oxmm_host::native::ops::{NativeError, NativeFaultKind, NativeProc};

use super::run::{AccessError, Backend, BackendError, Fault, FaultKind, Rss, SysError};

/// The host kernel as an op-script machine.
#[derive(Debug, Default)]
pub struct Native;

fn sys(e: NativeError) -> SysError {
    match e {
        NativeError::Errno(e) => SysError::Errno(e),
        NativeError::Fault(f) => SysError::Backend(BackendError(format!("unexpected fault in a call: {f:?}"))),
        NativeError::Broken(msg) => SysError::Backend(BackendError(msg)),
    }
}

fn access(e: NativeError) -> AccessError {
    match e {
        NativeError::Fault(f) => AccessError::Fault(Fault {
            kind: match f.kind {
                NativeFaultKind::Segv => FaultKind::Segv,
                NativeFaultKind::Bus => FaultKind::Bus,
            },
            addr: f.addr,
        }),
        NativeError::Errno(e) => AccessError::Backend(BackendError(format!("unexpected errno in an access: {e}"))),
        NativeError::Broken(msg) => AccessError::Backend(BackendError(msg)),
    }
}

impl Backend for Native {
    type Proc = NativeProc;

    fn new_proc(&mut self) -> Result<NativeProc, BackendError> {
        NativeProc::spawn().map_err(|e| BackendError(format!("cannot start a process: {e}")))
    }

    fn mmap(
        &mut self,
        p: &mut NativeProc,
        len: u64,
        prot: Prot,
        shared: bool,
        file: Option<(&Path, u64)>,
    ) -> Result<u64, SysError> {
        p.mmap(len, prot.0, shared, file).map_err(sys)
    }

    fn munmap(&mut self, p: &mut NativeProc, addr: u64, len: u64) -> Result<(), SysError> {
        p.munmap(addr, len).map_err(sys)
    }

    fn mprotect(&mut self, p: &mut NativeProc, addr: u64, len: u64, prot: Prot) -> Result<(), SysError> {
        p.mprotect(addr, len, prot.0).map_err(sys)
    }

    fn madvise(&mut self, p: &mut NativeProc, addr: u64, len: u64, advice: Advice) -> Result<(), SysError> {
        p.madvise(addr, len, advice as u32).map_err(sys)
    }

    fn touch(&mut self, p: &mut NativeProc, addr: u64, len: u64, write: bool) -> Result<(), AccessError> {
        p.touch(addr, len, write).map_err(access)
    }

    fn fill(&mut self, p: &mut NativeProc, addr: u64, len: u64, byte: u8) -> Result<(), AccessError> {
        p.fill(addr, len, byte).map_err(access)
    }

    fn sum(&mut self, p: &mut NativeProc, addr: u64, len: u64) -> Result<u64, AccessError> {
        p.sum(addr, len).map_err(access)
    }

    fn mremap(&mut self, p: &mut NativeProc, addr: u64, old: u64, new: u64) -> Result<u64, SysError> {
        p.mremap(addr, old, new).map_err(sys)
    }

    fn fork(&mut self, p: &mut NativeProc) -> Result<NativeProc, SysError> {
        p.fork().map_err(sys)
    }

    fn exit(&mut self, p: NativeProc) -> Result<(), BackendError> {
        p.exit().map_err(|e| BackendError(e.to_string()))
    }

    fn stat(&mut self, p: &mut NativeProc) -> Result<Rss, SysError> {
        let r = p.stat().map_err(sys)?;
        Ok(Rss { anon: r.anon, file: r.file, shmem: r.shmem, swap: r.swap })
    }

    fn mincore(&mut self, p: &mut NativeProc, addr: u64, len: u64) -> Result<u64, SysError> {
        p.mincore(addr, len).map_err(sys)
    }
}
