//! The op-script runner: executes parsed [`Line`]s on a [`Backend`] and
//! prints one JSON object per operation.
//!
//! The runner owns the names: it maps each process name to the backend's
//! process handle and each (process, region) to the region's start address
//! and size, so backends only ever see addresses and lengths, exactly the
//! arguments the Linux calls take. `R+OFF` is computed with wrapping
//! arithmetic, as pointer arithmetic in C would be, and reaches the backend
//! as it is.
//!
//! Names, not calls, make a script unrunnable: an unknown process or region,
//! `proc` of a name that exists, `fork` to a name that exists stop the run
//! with a [`ScriptError`] (exit status 2). A call that fails prints its
//! errno and the run goes on; a `map` that fails binds no region, one that
//! succeeds (re)binds the name, so a script may `unmap` a region and `map`
//! the name again. `unmap` never unbinds a name: touching an unmapped
//! region is how a script shows the `segv`.
//!
//! Every process still alive when the run ends, or stops on an error, is
//! exited through the backend.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use oxmm::errno::Errno;
use oxmm::mm::flags::{Advice, Prot};
use serde::Serialize;

use super::parse::{Access, Line, Op, Range, ScriptError};

/// A backend failure that is no answer of the machine (a process that
/// died, a file that cannot be opened): the run stops.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// How an access faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// No mapping there, or the protection forbids the access.
    Segv,
    /// The mapping has no backing there (past the end of a file).
    Bus,
    /// No memory to back the page.
    Oom,
}

impl FaultKind {
    /// The name the output prints.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Segv => "segv",
            FaultKind::Bus => "bus",
            FaultKind::Oom => "oom",
        }
    }
}

/// An access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fault {
    /// How.
    pub kind: FaultKind,
    /// The absolute address of the first byte that could not be accessed.
    pub addr: u64,
}

/// A resident set in 4 KiB pages, as `/proc/PID/status` reports it (the
/// shared zero page is not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rss {
    /// `RssAnon`.
    pub anon: u64,
    /// `RssFile`.
    pub file: u64,
    /// `RssShmem`.
    pub shmem: u64,
    /// `VmSwap`.
    pub swap: u64,
}

/// How a memory call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SysError {
    /// The call returned this errno; the script goes on.
    Errno(Errno),
    /// The backend broke; the script stops.
    Backend(BackendError),
}

impl From<Errno> for SysError {
    fn from(e: Errno) -> Self {
        SysError::Errno(e)
    }
}

impl From<BackendError> for SysError {
    fn from(e: BackendError) -> Self {
        SysError::Backend(e)
    }
}

/// How an access (`touch`, `fill`, `sum`) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// The access faulted; what was done before the fault stays done.
    Fault(Fault),
    /// The backend broke; the script stops.
    Backend(BackendError),
}

impl From<Fault> for AccessError {
    fn from(f: Fault) -> Self {
        AccessError::Fault(f)
    }
}

impl From<BackendError> for AccessError {
    fn from(e: BackendError) -> Self {
        AccessError::Backend(e)
    }
}

/// A machine that runs op scripts: the Linux memory calls of one process
/// at a time, on addresses and lengths exactly as the script gives them.
pub trait Backend {
    /// A process of this machine.
    type Proc;

    /// A new process with an empty address space.
    fn new_proc(&mut self) -> Result<Self::Proc, BackendError>;
    /// `mmap(NULL, len, prot, shared ? MAP_SHARED : MAP_PRIVATE, fd, offset)`,
    /// anonymous (`MAP_ANONYMOUS`) without `file`: the mapping's address.
    fn mmap(
        &mut self,
        p: &mut Self::Proc,
        len: u64,
        prot: Prot,
        shared: bool,
        file: Option<(&Path, u64)>,
    ) -> Result<u64, SysError>;
    /// `munmap(addr, len)`.
    fn munmap(&mut self, p: &mut Self::Proc, addr: u64, len: u64) -> Result<(), SysError>;
    /// `mprotect(addr, len, prot)`.
    fn mprotect(&mut self, p: &mut Self::Proc, addr: u64, len: u64, prot: Prot) -> Result<(), SysError>;
    /// `madvise(addr, len, advice)`.
    fn madvise(&mut self, p: &mut Self::Proc, addr: u64, len: u64, advice: Advice) -> Result<(), SysError>;
    /// One access per 4 KiB page overlapping `[addr, addr+len)`, in address
    /// order, to the first byte of the page that lies in the range (the
    /// page's first byte when `addr` is page-aligned): a load, or with
    /// `write` a store of `0x01`. Stops at the first fault.
    fn touch(&mut self, p: &mut Self::Proc, addr: u64, len: u64, write: bool) -> Result<(), AccessError>;
    /// Stores `byte` to every byte of `[addr, addr+len)` in address order;
    /// stops at the first faulting byte.
    fn fill(&mut self, p: &mut Self::Proc, addr: u64, len: u64, byte: u8) -> Result<(), AccessError>;
    /// Loads every byte of `[addr, addr+len)` and adds them up; stops at
    /// the first faulting byte.
    fn sum(&mut self, p: &mut Self::Proc, addr: u64, len: u64) -> Result<u64, AccessError>;
    /// `mremap(addr, old, new, MREMAP_MAYMOVE)`: the new address.
    fn mremap(&mut self, p: &mut Self::Proc, addr: u64, old: u64, new: u64) -> Result<u64, SysError>;
    /// `fork()`: a new process with a copy of `p`'s address space.
    fn fork(&mut self, p: &mut Self::Proc) -> Result<Self::Proc, SysError>;
    /// The process exits; all its mappings are torn down.
    fn exit(&mut self, p: Self::Proc) -> Result<(), BackendError>;
    /// The resident set of the script's memory in `p`.
    fn stat(&mut self, p: &mut Self::Proc) -> Result<Rss, SysError>;
    /// `mincore(addr, len)`: the number of resident pages.
    fn mincore(&mut self, p: &mut Self::Proc, addr: u64, len: u64) -> Result<u64, SysError>;
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The script cannot be run (exit status 2).
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// The backend broke while running a line.
    #[error("line {line}: {error}")]
    Backend {
        /// The script line, 1-based.
        line: usize,
        /// What broke.
        error: BackendError,
    },
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

impl RunError {
    /// The exit status of `oxmm run` for this error: 2 for a script that
    /// cannot be run, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Script(_) => 2,
            _ => 1,
        }
    }
}

/// One output line. Field order is the contract's: `line`, `op`, `ok`,
/// then what the operation reports.
#[derive(Debug, Default, Serialize)]
struct Record {
    line: usize,
    op: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    addr_off: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_anon: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_file: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_shmem: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swap: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resident: Option<u64>,
}

/// A region: where the script's name points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    addr: u64,
    size: u64,
}

struct ProcState<P> {
    handle: P,
    regions: BTreeMap<String, Region>,
}

/// The runner's tables, generic over the backend's process type.
struct Runner<'b, B: Backend> {
    backend: &'b mut B,
    procs: Procs<B::Proc>,
}

/// Runs `lines` on `backend`, printing one JSON object per line to `out`.
/// Processes still alive at the end (or when the run stops) are exited.
pub fn run_script<B: Backend>(lines: &[Line], backend: &mut B, out: &mut impl Write) -> Result<(), RunError> {
    let mut runner = Runner { backend, procs: BTreeMap::new() };
    let mut result = Ok(());
    for line in lines {
        match runner.step(line) {
            Ok(rec) => {
                if let Err(e) = write_record(out, &rec) {
                    result = Err(e.into());
                    break;
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    for (_, st) in std::mem::take(&mut runner.procs) {
        let _ = runner.backend.exit(st.handle);
    }
    let flushed = out.flush();
    result?;
    Ok(flushed?)
}

fn write_record(out: &mut impl Write, rec: &Record) -> io::Result<()> {
    serde_json::to_writer(&mut *out, rec).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

fn script(line: usize, message: String) -> RunError {
    RunError::Script(ScriptError { line, message })
}

impl Record {
    fn ok(line: usize, op: &'static str) -> Record {
        Record { line, op, ok: true, ..Record::default() }
    }

    fn errno(line: usize, op: &'static str, e: Errno) -> Record {
        Record { line, op, ok: false, errno: Some(e.name()), ..Record::default() }
    }
}

type Procs<P> = BTreeMap<String, ProcState<P>>;

fn proc_mut<'a, P>(procs: &'a mut Procs<P>, line: usize, name: &str) -> Result<&'a mut ProcState<P>, RunError> {
    procs.get_mut(name).ok_or_else(|| script(line, format!("unknown process `{name}`")))
}

/// The process and the region called `region` in process `proc`.
fn region<'a, P>(
    procs: &'a mut Procs<P>,
    line: usize,
    proc: &str,
    region: &str,
) -> Result<(&'a mut P, Region), RunError> {
    let st = proc_mut(procs, line, proc)?;
    let r =
        *st.regions.get(region).ok_or_else(|| script(line, format!("process `{proc}` has no region `{region}`")))?;
    Ok((&mut st.handle, r))
}

/// The process, the region and `R+OFF` of a range.
fn range<'a, P>(procs: &'a mut Procs<P>, line: usize, r: &Range) -> Result<(&'a mut P, Region, u64), RunError> {
    let (p, reg) = region(procs, line, &r.proc, &r.region)?;
    Ok((p, reg, reg.addr.wrapping_add(r.off)))
}

impl<B: Backend> Runner<'_, B> {
    fn step(&mut self, l: &Line) -> Result<Record, RunError> {
        let line = l.line;
        let name = l.op.name();
        let broke = |error: BackendError| RunError::Backend { line, error };
        // The record of a call: ok with `f`'s fields, or its errno.
        let sys = |r: Result<Record, SysError>| match r {
            Ok(rec) => Ok(rec),
            Err(SysError::Errno(e)) => Ok(Record::errno(line, name, e)),
            Err(SysError::Backend(e)) => Err(broke(e)),
        };
        // The record of an access: ok, or the fault relative to `region`.
        let access = |r: Result<Record, AccessError>, region: Region| match r {
            Ok(rec) => Ok(rec),
            Err(AccessError::Fault(f)) => Ok(Record {
                line,
                op: name,
                ok: false,
                fault: Some(f.kind.name()),
                addr_off: Some(f.addr.wrapping_sub(region.addr)),
                ..Record::default()
            }),
            Err(AccessError::Backend(e)) => Err(broke(e)),
        };
        let ok = Record::ok(line, name);
        match &l.op {
            Op::Proc { proc } => {
                if self.procs.contains_key(proc) {
                    return Err(script(line, format!("process `{proc}` already exists")));
                }
                let handle = self.backend.new_proc().map_err(broke)?;
                self.procs.insert(proc.clone(), ProcState { handle, regions: BTreeMap::new() });
                Ok(ok)
            }
            Op::Map { proc, region, size, prot, shared, file } => {
                let st = self.procs.get_mut(proc.as_str());
                let st = st.ok_or_else(|| script(line, format!("unknown process `{proc}`")))?;
                let file = file.as_ref().map(|f| (f.path.as_path(), f.offset));
                let r = self.backend.mmap(&mut st.handle, *size, *prot, *shared, file);
                if let Ok(addr) = r {
                    st.regions.insert(region.clone(), Region { addr, size: *size });
                }
                sys(r.map(|_| ok))
            }
            Op::Unmap(r) => {
                let (p, _, addr) = range(&mut self.procs, line, r)?;
                sys(self.backend.munmap(p, addr, r.size).map(|()| ok))
            }
            Op::Protect(r, prot) => {
                let (p, _, addr) = range(&mut self.procs, line, r)?;
                sys(self.backend.mprotect(p, addr, r.size, *prot).map(|()| ok))
            }
            Op::Advise(r, advice) => {
                let (p, _, addr) = range(&mut self.procs, line, r)?;
                sys(self.backend.madvise(p, addr, r.size, *advice).map(|()| ok))
            }
            Op::Mincore(r) => {
                let (p, _, addr) = range(&mut self.procs, line, r)?;
                let res = self.backend.mincore(p, addr, r.size);
                sys(res.map(|n| Record { resident: Some(n), ..ok }))
            }
            Op::Touch(r, how) => {
                let (p, region, addr) = range(&mut self.procs, line, r)?;
                let write = *how == Access::Write;
                access(self.backend.touch(p, addr, r.size, write).map(|()| ok), region)
            }
            Op::Fill(r, byte) => {
                let (p, region, addr) = range(&mut self.procs, line, r)?;
                access(self.backend.fill(p, addr, r.size, *byte).map(|()| ok), region)
            }
            Op::Sum(r) => {
                let (p, region, addr) = range(&mut self.procs, line, r)?;
                let res = self.backend.sum(p, addr, r.size);
                access(res.map(|v| Record { value: Some(v), ..ok }), region)
            }
            Op::Remap { proc, region: reg, new_size } => {
                let (p, old) = region(&mut self.procs, line, proc, reg)?;
                let res = self.backend.mremap(p, old.addr, old.size, *new_size);
                if let Ok(addr) = res {
                    let st = proc_mut(&mut self.procs, line, proc)?;
                    st.regions.insert(reg.clone(), Region { addr, size: *new_size });
                }
                sys(res.map(|_| ok))
            }
            Op::Fork { parent, child } => {
                if self.procs.contains_key(child) {
                    return Err(script(line, format!("process `{child}` already exists")));
                }
                let st = proc_mut(&mut self.procs, line, parent)?;
                let regions = st.regions.clone();
                match self.backend.fork(&mut st.handle) {
                    Ok(handle) => {
                        self.procs.insert(child.clone(), ProcState { handle, regions });
                        Ok(ok)
                    }
                    Err(e) => sys(Err(e)),
                }
            }
            Op::Exit { proc } => {
                let st = self.procs.remove(proc.as_str());
                let st = st.ok_or_else(|| script(line, format!("unknown process `{proc}`")))?;
                self.backend.exit(st.handle).map_err(broke)?;
                Ok(ok)
            }
            Op::Stat { proc } => {
                let st = proc_mut(&mut self.procs, line, proc)?;
                sys(self.backend.stat(&mut st.handle).map(|rss| Record {
                    rss_anon: Some(rss.anon),
                    rss_file: Some(rss.file),
                    rss_shmem: Some(rss.shmem),
                    swap: Some(rss.swap),
                    ..ok
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    const PAGE: u64 = 4096;

    /// A toy machine: each process's mappings are a list of (addr, len,
    /// prot); memory itself is not kept (every byte reads as 1).
    #[derive(Default)]
    struct Toy {
        next: u64,
        exited: usize,
    }

    #[derive(Clone, Default)]
    struct ToyProc {
        maps: Vec<(u64, u64, Prot)>,
        written: u64,
    }

    impl ToyProc {
        fn prot_at(&self, a: u64) -> Option<Prot> {
            // Prot(0x100) marks an unmapped range.
            let m = self.maps.iter().rev().find(|m| a >= m.0 && a < m.0 + m.1)?;
            Some(m.2).filter(|p| p.0 != 0x100)
        }
        fn access(&self, addr: u64, len: u64, write: bool) -> Result<(), AccessError> {
            for a in addr..addr + len {
                match self.prot_at(a) {
                    Some(p) if (write && p.writable()) || (!write && p.readable()) => {}
                    _ => return Err(Fault { kind: FaultKind::Segv, addr: a }.into()),
                }
            }
            Ok(())
        }
    }

    impl Backend for Toy {
        type Proc = ToyProc;
        fn new_proc(&mut self) -> Result<ToyProc, BackendError> {
            Ok(ToyProc::default())
        }
        fn mmap(
            &mut self,
            p: &mut ToyProc,
            len: u64,
            prot: Prot,
            _shared: bool,
            file: Option<(&Path, u64)>,
        ) -> Result<u64, SysError> {
            if file.is_some_and(|f| f.0 == Path::new("missing")) {
                return Err(BackendError("cannot open `missing`".into()).into());
            }
            if len == 0 {
                return Err(Errno::EINVAL.into());
            }
            self.next += 0x10_0000;
            p.maps.push((self.next, len, prot));
            Ok(self.next)
        }
        fn munmap(&mut self, p: &mut ToyProc, addr: u64, len: u64) -> Result<(), SysError> {
            if addr & (PAGE - 1) != 0 {
                return Err(Errno::EINVAL.into());
            }
            p.maps.push((addr, len, Prot(0x100)));
            Ok(())
        }
        fn mprotect(&mut self, p: &mut ToyProc, a: u64, l: u64, prot: Prot) -> Result<(), SysError> {
            p.maps.push((a, l, prot));
            Ok(())
        }
        fn madvise(&mut self, _: &mut ToyProc, _: u64, _: u64, _: Advice) -> Result<(), SysError> {
            Ok(())
        }
        fn touch(&mut self, p: &mut ToyProc, a: u64, l: u64, w: bool) -> Result<(), AccessError> {
            p.access(a, l, w)?;
            p.written += u64::from(w) * l.div_ceil(PAGE);
            Ok(())
        }
        fn fill(&mut self, p: &mut ToyProc, a: u64, l: u64, _: u8) -> Result<(), AccessError> {
            p.access(a, l, true)
        }
        fn sum(&mut self, p: &mut ToyProc, a: u64, l: u64) -> Result<u64, AccessError> {
            p.access(a, l, false).map(|()| l)
        }
        fn mremap(&mut self, p: &mut ToyProc, a: u64, _: u64, new: u64) -> Result<u64, SysError> {
            self.next += 0x10_0000;
            p.maps.push((a, new, Prot(0x100)));
            p.maps.push((self.next, new, Prot::RW));
            Ok(self.next)
        }
        fn fork(&mut self, p: &mut ToyProc) -> Result<ToyProc, SysError> {
            Ok(p.clone())
        }
        fn exit(&mut self, _: ToyProc) -> Result<(), BackendError> {
            self.exited += 1;
            Ok(())
        }
        fn stat(&mut self, p: &mut ToyProc) -> Result<Rss, SysError> {
            Ok(Rss { anon: p.written, ..Rss::default() })
        }
        fn mincore(&mut self, _: &mut ToyProc, _: u64, len: u64) -> Result<u64, SysError> {
            Ok(len / PAGE)
        }
    }

    fn run(src: &str) -> (String, Result<(), RunError>, usize) {
        let mut toy = Toy::default();
        let mut out = Vec::new();
        let res = run_script(&parse(src).unwrap(), &mut toy, &mut out);
        (String::from_utf8(out).unwrap(), res, toy.exited)
    }

    #[test]
    fn output_format_is_the_contract() {
        let src = "\
proc A
map A x 64K rw private
map A bad 0 rw private
touch A x 0 16K write
stat A
protect A x 8K 4K r
touch A x 0 16K write
sum A x 0 100
unmap A x 1 4K
mincore A x 0 48K
remap A x 128K
fill A x 4K 1 7
fork A B
advise B x 0 4K dontneed
exit B
";
        let (out, res, exited) = run(src);
        res.unwrap();
        let want = r#"{"line":1,"op":"proc","ok":true}
{"line":2,"op":"map","ok":true}
{"line":3,"op":"map","ok":false,"errno":"EINVAL"}
{"line":4,"op":"touch","ok":true}
{"line":5,"op":"stat","ok":true,"rss_anon":4,"rss_file":0,"rss_shmem":0,"swap":0}
{"line":6,"op":"protect","ok":true}
{"line":7,"op":"touch","ok":false,"fault":"segv","addr_off":8192}
{"line":8,"op":"sum","ok":true,"value":100}
{"line":9,"op":"unmap","ok":false,"errno":"EINVAL"}
{"line":10,"op":"mincore","ok":true,"resident":12}
{"line":11,"op":"remap","ok":true}
{"line":12,"op":"fill","ok":true}
{"line":13,"op":"fork","ok":true}
{"line":14,"op":"advise","ok":true}
{"line":15,"op":"exit","ok":true}
"#;
        assert_eq!(out, want);
        assert_eq!(exited, 2, "B by `exit`, A at the end");
    }

    #[test]
    fn a_failed_map_binds_nothing() {
        let (out, res, _) = run("proc A\nmap A x 0 rw private\ntouch A x 0 1 read\n");
        assert_eq!(out.lines().count(), 2);
        let e = res.unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "line 3: process `A` has no region `x`");
    }

    #[test]
    fn names_must_exist_or_be_new() {
        for (src, want) in [
            ("stat A", "line 1: unknown process `A`"),
            ("proc A\nproc A", "line 2: process `A` already exists"),
            ("proc A\nproc B\nfork A B", "line 3: process `B` already exists"),
            ("proc A\nfork C B", "line 2: unknown process `C`"),
            ("proc A\nexit A\nstat A", "line 3: unknown process `A`"),
            ("proc A\nexit A\nexit A", "line 3: unknown process `A`"),
            ("proc A\nmap B x 4K rw private", "line 2: unknown process `B`"),
            ("proc A\nremap A x 8K", "line 2: process `A` has no region `x`"),
            ("proc A\nproc B\nmap A x 4K rw private\nsum B x 0 1", "line 4: process `B` has no region `x`"),
        ] {
            let (_, res, _) = run(src);
            let e = res.unwrap_err();
            assert_eq!(e.to_string(), want, "{src:?}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn forks_inherit_region_names_and_everything_is_exited() {
        let (out, res, exited) = run("proc A\nmap A x 4K rw private\nfork A B\ntouch B x 0 4K write\n");
        res.unwrap();
        assert_eq!(out.lines().count(), 4);
        assert_eq!(exited, 2);
    }

    #[test]
    fn backend_failures_stop_the_run_with_status_1() {
        let (out, res, exited) = run("proc A\nmap A x 4K r shared file=missing\nstat A\n");
        assert_eq!(out.lines().count(), 1);
        let e = res.unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "line 2: cannot open `missing`");
        assert_eq!(exited, 1, "processes are exited on the way out");
    }

    #[test]
    fn remap_rebinds_and_unmap_does_not_unbind() {
        let src =
            "proc A\nmap A x 4K rw private\nremap A x 8K\ntouch A x 4K 4K write\nunmap A x 0 8K\ntouch A x 0 1 read\n";
        let (out, res, _) = run(src);
        res.unwrap();
        let last = out.lines().last().unwrap();
        assert_eq!(last, r#"{"line":6,"op":"touch","ok":false,"fault":"segv","addr_off":0}"#);
    }
}
