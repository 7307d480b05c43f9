//! Native op-script processes: every process of an op script is a real
//! Linux process, so that `stat` reads a resident set that is its own.
//!
//! # Processes
//!
//! [`NativeProc::spawn`] forks the calling process. The child closes every
//! descriptor but its end of a `SOCK_SEQPACKET` socket pair (moved to fd
//! [`CHAN_FD`]) and runs a command loop: it receives one fixed-size request
//! per message, performs it with the raw system call, and sends one
//! fixed-size reply. A sequenced-packet socket rather than two pipes because
//! `fork` must hand a descriptor back: the command-loop process creates a
//! new socket pair, forks, the grandchild keeps one end as its channel and
//! runs the same loop, and the other end travels to the driver attached to
//! the reply (`SCM_RIGHTS`).
//!
//! The child was forked from a possibly multi-threaded driver, so it may
//! only call async-signal-safe functions: the loop uses raw `libc` calls,
//! stack buffers and no heap at all. A panic in the child would unwind into
//! a copy of the driver's stack, so an `ExitOnUnwind` guard turns one into
//! `_exit(101)`.
//!
//! Children are never left behind: the driver holds the only other end of
//! each channel, a command-loop process exits when it reads end-of-file,
//! and dropping a [`NativeProc`] closes the channel, kills the process
//! through a pidfd (so a recycled pid is never hit) and waits for it.
//!
//! # Faults
//!
//! `touch`, `fill` and `sum` must survive `SIGSEGV`/`SIGBUS` and say which
//! byte faulted. Each probed byte is accessed by one of two tiny assembly
//! functions whose *first* instruction is the access (`oxmm_native_load`:
//! `movzx eax, byte ptr [rdi]`; `oxmm_native_store`: `mov [rdi], sil`). The
//! `SA_SIGINFO` handler looks at the interrupted `rip`: if it is the entry of
//! one of them, it sets `rax = 0x100 + signo` and `rip` to a bare `ret`, so
//! the probe returns a value no byte can have, to the caller that made it,
//! with the stack exactly as at entry. A fault anywhere else restores the
//! default action and returns, so the instruction faults again and the
//! process dies as it would have without the handler. This is x86-64
//! specific; other targets get a [`NativeProc::spawn`] that fails.
//!
//! Accesses are made page by page in address order: one probe on the first
//! byte of each page that lies in the range, then, for `fill` and `sum`, the
//! rest of that page in bulk. Protection and backing (`SIGBUS` past the end
//! of a file) are per page, so a page whose first byte can be accessed can
//! be accessed whole, and the probe's address is exactly the first faulting
//! byte. The probe address is reported rather than `si_addr`, which is 0 for
//! a non-canonical address.
//!
//! # Resident set
//!
//! `stat` reads `RssAnon`, `RssFile`, `RssShmem` and `VmSwap` from
//! `/proc/self/status` and subtracts a baseline: the pages the command loop
//! itself holds (the driver's pages it inherited, its stack, its code), so
//! that a fresh `proc` reports zeroes. Before the baseline is read the loop
//! makes sure that serving requests will map no page of its own:
//!
//! - it pre-faults 128 KiB of its stack (far more than a request uses,
//!   signal frames included) and keeps all its state there; the signal
//!   handler keeps none, so no `.data`/`.bss` page is written later;
//! - it populates (`MADV_POPULATE_READ`) every readable file mapping it has
//!   at startup (its code and libraries), so no code path run later can
//!   fault code in (fault-around would map 16 pages at once);
//! - it runs every request path once on a scratch mapping (faults of both
//!   probes and a `fork` included), then unmaps it.
//!
//! How exact that is:
//!
//! - A spawned process: exact for all four counters, as long as the host
//!   does not reclaim the loop's own pages under memory pressure (then
//!   `rss_file` could read low, saturating at 0) and `khugepaged` does not
//!   collapse the loop's own anonymous memory into a huge page.
//! - A forked process keeps its parent's baseline. `fork` copies every
//!   anonymous PTE, so its `RssAnon` starts as the parent's and the
//!   baseline is exact for it; it does not pre-fault the stack again (going
//!   deeper than the parent did would add pages). `fork` copies no PTE of a
//!   file mapping that was never written, so the new process populates the
//!   parent's list of own file mappings again, which brings its own
//!   `RssFile` back to the parent's baseline. The script's shared (shmem
//!   and file) pages are not copied by `fork` either and reappear as the
//!   new process touches them, exactly as on Linux.
//! - Transparent huge pages are left as the host has them configured: with
//!   THP `always`, a write to a 2 MiB-aligned stretch of a large private
//!   anonymous region maps 512 pages, and `stat` says so.

use std::fmt;
use std::io;
use std::path::Path;

use oxmm::errno::Errno;

/// The page size of the op-script contract (and of x86-64 Linux).
pub const PAGE: u64 = 4096;

/// The descriptor number of a command-loop process's channel.
pub const CHAN_FD: i32 = 3;

/// Longest `file=` path a request carries.
pub const PATH_MAX: usize = 4096;

/// How an access faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NativeFaultKind {
    /// `SIGSEGV`: no mapping, or the protection forbids the access.
    Segv,
    /// `SIGBUS`: the mapping has no backing there (past the end of a file).
    Bus,
}

/// An access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NativeFault {
    /// The signal.
    pub kind: NativeFaultKind,
    /// The absolute address of the first byte that could not be accessed.
    pub addr: u64,
}

/// The resident set of a process, in 4 KiB pages, less its baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NativeRss {
    /// `RssAnon`.
    pub anon: u64,
    /// `RssFile`.
    pub file: u64,
    /// `RssShmem`.
    pub shmem: u64,
    /// `VmSwap`.
    pub swap: u64,
}

/// Why a request to a native process failed.
#[derive(Debug)]
pub enum NativeError {
    /// The call failed with this errno.
    Errno(Errno),
    /// The access faulted.
    Fault(NativeFault),
    /// The process could not do what was asked at all (a `file=` that
    /// cannot be opened, an errno oxmm does not know, a process that died,
    /// a broken channel).
    Broken(String),
}

impl fmt::Display for NativeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NativeError::Errno(e) => write!(f, "{e}"),
            NativeError::Fault(fault) => write!(f, "{:?} at {:#x}", fault.kind, fault.addr),
            NativeError::Broken(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for NativeError {}

/// The result of one request.
pub type NativeResult<T> = Result<T, NativeError>;

// ---------------------------------------------------------------------------
// Wire format. Every request and every reply is one message of fixed size,
// little-endian fields at fixed offsets, encoded without `unsafe`.

/// Request opcodes.
mod op {
    pub const MMAP: u32 = 1;
    pub const MUNMAP: u32 = 2;
    pub const MPROTECT: u32 = 3;
    pub const MADVISE: u32 = 4;
    pub const TOUCH: u32 = 5;
    pub const FILL: u32 = 6;
    pub const SUM: u32 = 7;
    pub const MREMAP: u32 = 8;
    pub const FORK: u32 = 9;
    pub const EXIT: u32 = 10;
    pub const STAT: u32 = 11;
    pub const MINCORE: u32 = 12;
}

/// Reply kinds.
mod kind {
    pub const OK: u32 = 0;
    pub const ERRNO: u32 = 1;
    pub const FAULT: u32 = 2;
    pub const OPEN_FAILED: u32 = 3;
    pub const BAD_REQUEST: u32 = 4;
}

const REQ_HEAD: usize = 48;
const REQ_LEN: usize = REQ_HEAD + PATH_MAX;
const REP_LEN: usize = 40;

/// A request: opcode, up to four arguments, an optional path.
struct Request {
    op: u32,
    args: [u64; 4],
    path: [u8; PATH_MAX],
    path_len: usize,
}

impl Request {
    const fn new(op: u32, args: [u64; 4]) -> Request {
        Request { op, args, path: [0; PATH_MAX], path_len: 0 }
    }

    fn encode(&self, buf: &mut [u8; REQ_LEN]) -> usize {
        buf[0..4].copy_from_slice(&self.op.to_le_bytes());
        buf[4..8].copy_from_slice(&(self.path_len as u32).to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            buf[8 + 8 * i..16 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        buf[REQ_HEAD..REQ_HEAD + self.path_len].copy_from_slice(&self.path[..self.path_len]);
        REQ_HEAD + self.path_len
    }
}

/// A reply: a kind, a code (errno or signal) and up to four values.
#[derive(Clone, Copy, Debug, Default)]
struct Reply {
    kind: u32,
    code: u32,
    vals: [u64; 4],
}

impl Reply {
    const fn ok(vals: [u64; 4]) -> Reply {
        Reply { kind: kind::OK, code: 0, vals }
    }

    const fn ok0() -> Reply {
        Reply::ok([0; 4])
    }

    fn encode(&self) -> [u8; REP_LEN] {
        let mut buf = [0u8; REP_LEN];
        buf[0..4].copy_from_slice(&self.kind.to_le_bytes());
        buf[4..8].copy_from_slice(&self.code.to_le_bytes());
        for (i, v) in self.vals.iter().enumerate() {
            buf[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        buf
    }

    fn decode(buf: &[u8; REP_LEN]) -> Reply {
        let u32_at = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[o..o + 8]);
            u64::from_le_bytes(b)
        };
        Reply { kind: u32_at(0), code: u32_at(4), vals: [u64_at(8), u64_at(16), u64_at(24), u64_at(32)] }
    }
}

fn errno_of(raw: i32) -> NativeError {
    match Errno::from_raw(raw) {
        Some(e) => NativeError::Errno(e),
        None => NativeError::Broken(format!("unexpected errno {raw} ({})", io::Error::from_raw_os_error(raw))),
    }
}

// ---------------------------------------------------------------------------
// The driver's side.

/// A real Linux process running the op-script command loop.
#[derive(Debug)]
pub struct NativeProc {
    pid: libc::pid_t,
    /// The driver's end of the channel; `None` once the process has exited.
    chan: Option<std::os::fd::OwnedFd>,
    /// A pidfd for the process: kills and waits never hit a recycled pid.
    pidfd: Option<std::os::fd::OwnedFd>,
    /// True if the driver forked it (and so must reap it).
    direct_child: bool,
}

impl NativeProc {
    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Forks a new command-loop process with an empty op-script address
    /// space (its own pages are the baseline `stat` subtracts).
    pub fn spawn() -> io::Result<NativeProc> {
        imp::spawn()
    }

    /// `mmap(NULL, len, prot, MAP_PRIVATE|MAP_SHARED [|MAP_ANONYMOUS], fd,
    /// offset)`. A file is opened read-write if it can be, read-only
    /// otherwise, and closed again after the call.
    pub fn mmap(&mut self, len: u64, prot: u32, shared: bool, file: Option<(&Path, u64)>) -> NativeResult<u64> {
        let mut req = Request::new(op::MMAP, [len, u64::from(prot), u64::from(shared), 0]);
        if let Some((path, offset)) = file {
            use std::os::unix::ffi::OsStrExt;
            let bytes = path.as_os_str().as_bytes();
            if bytes.is_empty() || bytes.len() >= PATH_MAX || bytes.contains(&0) {
                return Err(NativeError::Broken(format!("cannot open `{}`: bad path", path.display())));
            }
            req.path[..bytes.len()].copy_from_slice(bytes);
            req.path_len = bytes.len();
            req.args[3] = offset;
        }
        let rep = self.call(&req)?;
        if rep.kind == kind::OPEN_FAILED {
            return Err(NativeError::Broken(format!(
                "cannot open `{}`: {}",
                path_of(file),
                io::Error::from_raw_os_error(rep.code as i32)
            )));
        }
        check(rep).map(|v| v[0])
    }

    /// `munmap(addr, len)`.
    pub fn munmap(&mut self, addr: u64, len: u64) -> NativeResult<()> {
        check(self.call(&Request::new(op::MUNMAP, [addr, len, 0, 0]))?).map(drop)
    }

    /// `mprotect(addr, len, prot)`.
    pub fn mprotect(&mut self, addr: u64, len: u64, prot: u32) -> NativeResult<()> {
        let req = Request::new(op::MPROTECT, [addr, len, u64::from(prot), 0]);
        check(self.call(&req)?).map(drop)
    }

    /// `madvise(addr, len, advice)`.
    pub fn madvise(&mut self, addr: u64, len: u64, advice: u32) -> NativeResult<()> {
        let req = Request::new(op::MADVISE, [addr, len, u64::from(advice), 0]);
        check(self.call(&req)?).map(drop)
    }

    /// One access per 4 KiB page overlapping `[addr, addr+len)`, in address
    /// order, at the first byte of the page that lies in the range: a load,
    /// or a store of `0x01`.
    pub fn touch(&mut self, addr: u64, len: u64, write: bool) -> NativeResult<()> {
        let req = Request::new(op::TOUCH, [addr, len, u64::from(write), 0]);
        check(self.call(&req)?).map(drop)
    }

    /// Stores `byte` to every byte of `[addr, addr+len)`, in address order.
    pub fn fill(&mut self, addr: u64, len: u64, byte: u8) -> NativeResult<()> {
        let req = Request::new(op::FILL, [addr, len, u64::from(byte), 0]);
        check(self.call(&req)?).map(drop)
    }

    /// Loads every byte of `[addr, addr+len)` and adds them up.
    pub fn sum(&mut self, addr: u64, len: u64) -> NativeResult<u64> {
        check(self.call(&Request::new(op::SUM, [addr, len, 0, 0]))?).map(|v| v[0])
    }

    /// `mremap(addr, old, new, MREMAP_MAYMOVE)`: the new address.
    pub fn mremap(&mut self, addr: u64, old: u64, new: u64) -> NativeResult<u64> {
        check(self.call(&Request::new(op::MREMAP, [addr, old, new, 0]))?).map(|v| v[0])
    }

    /// Forks this process: the new process runs the command loop too, has
    /// this one's address space, and keeps its baseline.
    pub fn fork(&mut self) -> NativeResult<NativeProc> {
        imp::fork(self)
    }

    /// Makes the process exit and waits until its address space is gone.
    pub fn exit(mut self) -> NativeResult<()> {
        // `Drop` then has nothing left to do (or kills the process, if the
        // exit request failed).
        imp::exit(&mut self)
    }

    /// The resident set, less the baseline.
    pub fn stat(&mut self) -> NativeResult<NativeRss> {
        let v = check(self.call(&Request::new(op::STAT, [0; 4]))?)?;
        Ok(NativeRss { anon: v[0], file: v[1], shmem: v[2], swap: v[3] })
    }

    /// `mincore(addr, len)`: the number of resident pages.
    pub fn mincore(&mut self, addr: u64, len: u64) -> NativeResult<u64> {
        check(self.call(&Request::new(op::MINCORE, [addr, len, 0, 0]))?).map(|v| v[0])
    }

    fn call(&mut self, req: &Request) -> NativeResult<Reply> {
        imp::call(self, req, None)
    }
}

impl Drop for NativeProc {
    fn drop(&mut self) {
        imp::reap(self);
    }
}

fn path_of(file: Option<(&Path, u64)>) -> String {
    file.map(|(p, _)| p.display().to_string()).unwrap_or_default()
}

fn check(rep: Reply) -> NativeResult<[u64; 4]> {
    match rep.kind {
        kind::OK => Ok(rep.vals),
        kind::ERRNO => Err(errno_of(rep.code as i32)),
        kind::FAULT => Err(NativeError::Fault(NativeFault {
            kind: if rep.code as i32 == libc::SIGBUS { NativeFaultKind::Bus } else { NativeFaultKind::Segv },
            addr: rep.vals[0],
        })),
        other => Err(NativeError::Broken(format!("native process answered kind {other} (code {})", rep.code))),
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod imp {
    use super::*;

    pub(super) fn spawn() -> io::Result<NativeProc> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "native op scripts need x86-64 Linux"))
    }
    pub(super) fn fork(_: &mut NativeProc) -> NativeResult<NativeProc> {
        Err(NativeError::Broken("unsupported".into()))
    }
    pub(super) fn exit(_: &mut NativeProc) -> NativeResult<()> {
        Ok(())
    }
    pub(super) fn call(_: &mut NativeProc, _: &Request, _: Option<&mut i32>) -> NativeResult<Reply> {
        Err(NativeError::Broken("unsupported".into()))
    }
    pub(super) fn reap(_: &mut NativeProc) {}
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod imp {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    fn last_errno() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
    }

    fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut sv = [-1 as RawFd; 2];
        // SAFETY:
        // - `sv` is a valid, writable array of two descriptors, as
        //   `socketpair` requires; the call has no other preconditions.
        let r =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY:
        // - `socketpair` succeeded, so both descriptors are open and owned
        //   by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
    }

    fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
        // SAFETY:
        // - `pidfd_open(pid, 0)` takes no pointers; it only returns a new
        //   descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = RawFd::try_from(fd).ok().filter(|&fd| fd >= 0)?;
        // SAFETY:
        // - the call succeeded, so `fd` is a new open descriptor owned by
        //   nobody else.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub(super) fn spawn() -> io::Result<NativeProc> {
        let (ours, theirs) = socket_pair()?;
        // SAFETY:
        // - `fork` has no memory-safety preconditions. The child may have
        //   been forked from a multi-threaded process, so it only calls
        //   `child::run`, which uses async-signal-safe calls and no heap and
        //   never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            child::run(theirs.as_raw_fd());
        }
        drop(theirs);
        let pidfd = pidfd_open(pid);
        Ok(NativeProc { pid, chan: Some(ours), pidfd, direct_child: true })
    }

    pub(super) fn fork(p: &mut NativeProc) -> NativeResult<NativeProc> {
        let mut fd = -1;
        let rep = call(p, &Request::new(op::FORK, [0; 4]), Some(&mut fd))?;
        // SAFETY:
        // - a non-negative `fd` was just received with `SCM_RIGHTS` (and
        //   `MSG_CMSG_CLOEXEC`), so it is a new open descriptor that
        //   nobody else owns.
        let chan = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) });
        let vals = check(rep)?;
        let Some(chan) = chan else {
            return Err(NativeError::Broken("fork: no channel received".into()));
        };
        let pid = vals[0] as libc::pid_t;
        // The new process blocks on its channel until we write to it, so it
        // cannot have exited and its pid cannot have been recycled yet.
        let pidfd = pidfd_open(pid);
        Ok(NativeProc { pid, chan: Some(chan), pidfd, direct_child: false })
    }

    pub(super) fn exit(p: &mut NativeProc) -> NativeResult<()> {
        check(call(p, &Request::new(op::EXIT, [0; 4]), None)?)?;
        // The process exits right after the reply; `exit_mm` runs before
        // `exit_files`, so end-of-file on the channel means its address
        // space is gone.
        let Some(chan) = p.chan.as_ref() else {
            return Ok(());
        };
        let mut buf = [0u8; REP_LEN];
        loop {
            // SAFETY:
            // - `chan` is an open descriptor and `buf` is valid for
            //   `buf.len()` writable bytes.
            let n = unsafe { libc::recv(chan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 || (n < 0 && last_errno() == libc::EINTR) {
                continue;
            }
            break;
        }
        p.chan = None;
        reap(p);
        Ok(())
    }

    /// Sends `req` and receives the reply; a descriptor attached to the
    /// reply is stored in `fd_out`.
    pub(super) fn call(p: &mut NativeProc, req: &Request, fd_out: Option<&mut i32>) -> NativeResult<Reply> {
        let pid = p.pid;
        let Some(chan) = p.chan.as_ref() else {
            return Err(NativeError::Broken(format!("process {pid} has exited")));
        };
        let fd = chan.as_raw_fd();
        let mut buf = [0u8; REQ_LEN];
        let len = req.encode(&mut buf);
        loop {
            // SAFETY:
            // - `fd` is an open socket and `buf[..len]` is initialized
            //   (len <= REQ_LEN).
            let n = unsafe { libc::send(fd, buf.as_ptr().cast(), len, libc::MSG_NOSIGNAL) };
            if n == len as isize {
                break;
            }
            if n < 0 && last_errno() == libc::EINTR {
                continue;
            }
            return Err(dead(pid, "send", n));
        }
        let mut rep = [0u8; REP_LEN];
        // Room for one `SCM_RIGHTS` descriptor, aligned for `cmsghdr`.
        let mut cbuf = [0u64; 4];
        loop {
            let mut iov = libc::iovec { iov_base: rep.as_mut_ptr().cast(), iov_len: rep.len() };
            // SAFETY:
            // - `msghdr` is plain data for which all-zero is a valid value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&cbuf);
            // SAFETY:
            // - `msg` points at `iov` (valid for `rep.len()` bytes) and at
            //   `cbuf` (valid for `msg_controllen` bytes), both live for the
            //   call.
            let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if n < 0 && last_errno() == libc::EINTR {
                continue;
            }
            let received = take_fd(&msg);
            if n != REP_LEN as isize {
                if let Some(rfd) = received {
                    // SAFETY: `rfd` was just received and is owned by us.
                    drop(unsafe { OwnedFd::from_raw_fd(rfd) });
                }
                return Err(dead(pid, "recv", n));
            }
            match (received, fd_out) {
                (Some(rfd), Some(out)) => *out = rfd,
                (Some(rfd), None) => {
                    // SAFETY: `rfd` was just received and is owned by us.
                    drop(unsafe { OwnedFd::from_raw_fd(rfd) });
                }
                _ => {}
            }
            return Ok(Reply::decode(&rep));
        }
    }

    /// The descriptor of an `SCM_RIGHTS` message in `msg`, if there is one.
    fn take_fd(msg: &libc::msghdr) -> Option<RawFd> {
        // SAFETY:
        // - `msg` was filled by `recvmsg`, so its control fields describe a
        //   live buffer; `CMSG_FIRSTHDR` returns null or a header inside it.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
        if cmsg.is_null() {
            return None;
        }
        // SAFETY:
        // - `cmsg` is non-null and points at a header inside the control
        //   buffer (checked by `CMSG_FIRSTHDR`).
        let hdr = unsafe { &*cmsg };
        let want = std::mem::size_of::<RawFd>();
        // SAFETY: `CMSG_LEN` is a pure computation.
        let full = unsafe { libc::CMSG_LEN(want as u32) } as usize;
        if hdr.cmsg_level != libc::SOL_SOCKET || hdr.cmsg_type != libc::SCM_RIGHTS || hdr.cmsg_len < full {
            return None;
        }
        // SAFETY:
        // - the header is an `SCM_RIGHTS` message at least `CMSG_LEN(4)`
        //   long, so `CMSG_DATA` points at one (possibly unaligned) fd.
        Some(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>()) })
    }

    fn dead(pid: libc::pid_t, what: &str, n: isize) -> NativeError {
        let why = if n < 0 {
            io::Error::last_os_error().to_string()
        } else {
            format!("channel closed or short message ({n} bytes)")
        };
        NativeError::Broken(format!("native process {pid} is gone ({what}: {why})"))
    }

    /// Closes the channel, kills the process and waits for it.
    pub(super) fn reap(p: &mut NativeProc) {
        // End-of-file makes an idle command loop exit by itself.
        p.chan = None;
        if let Some(pidfd) = p.pidfd.take() {
            // SAFETY:
            // - `pidfd` is an open pidfd; the call takes no pointers (the
            //   null `info` is allowed).
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
            if !p.direct_child {
                // Not ours to reap: wait until it has exited (the pidfd
                // becomes readable), at most a second.
                let mut pfd = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: `pfd` is one valid `pollfd`.
                unsafe { libc::poll(&mut pfd, 1, 1000) };
            }
        }
        if p.direct_child {
            p.direct_child = false;
            let mut status = 0;
            loop {
                // SAFETY:
                // - `status` is a valid `c_int` to write to; `pid` is our
                //   own child, not yet reaped (reaping clears
                //   `direct_child`).
                let r = unsafe { libc::waitpid(p.pid, &mut status, 0) };
                if r < 0 && last_errno() == libc::EINTR {
                    continue;
                }
                break;
            }
        }
    }

    /// The command loop. Everything here runs in a forked child: raw
    /// system calls, stack buffers, no heap, no locks, no panics.
    mod child {
        use super::super::*;
        use core::ffi::c_void;
        use core::hint::black_box;
        use std::os::fd::RawFd;

        core::arch::global_asm!(
            ".pushsection .text.oxmm_native_probe,\"ax\",@progbits",
            ".p2align 4",
            ".globl oxmm_native_load",
            ".hidden oxmm_native_load",
            "oxmm_native_load:",
            "    movzx eax, byte ptr [rdi]",
            "    ret",
            ".p2align 4",
            ".globl oxmm_native_store",
            ".hidden oxmm_native_store",
            "oxmm_native_store:",
            "    mov byte ptr [rdi], sil",
            "    xor eax, eax",
            "    ret",
            ".p2align 4",
            ".globl oxmm_native_ret",
            ".hidden oxmm_native_ret",
            "oxmm_native_ret:",
            "    ret",
            ".popsection",
        );

        extern "C" {
            /// Loads the byte at `addr` (0..=255), or returns `0x100 +
            /// signo` if the load faulted.
            fn oxmm_native_load(addr: *const u8) -> u32;
            /// Stores `val` at `addr` and returns 0, or returns `0x100 +
            /// signo` if the store faulted.
            fn oxmm_native_store(addr: *mut u8, val: u32) -> u32;
            /// A bare `ret`, where a faulted probe resumes.
            fn oxmm_native_ret();
        }

        /// A value a probe returns only when it faulted.
        const FAULTED: u32 = 0x100;

        /// `SIGSEGV`/`SIGBUS` handler: resumes a faulted probe; any other
        /// fault is re-raised with the default action.
        extern "C" fn on_fault(sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
            let uc = ctx.cast::<libc::ucontext_t>();
            // SAFETY:
            // - the kernel passes a valid `ucontext_t` as the third argument
            //   of an `SA_SIGINFO` handler; it is ours to read and modify
            //   until the handler returns, and its `gregs` are what
            //   `rt_sigreturn` restores.
            let gregs = unsafe { &mut (*uc).uc_mcontext.gregs };
            let rip = gregs[libc::REG_RIP as usize] as usize;
            let load: unsafe extern "C" fn(*const u8) -> u32 = oxmm_native_load;
            let store: unsafe extern "C" fn(*mut u8, u32) -> u32 = oxmm_native_store;
            if rip == load as usize || rip == store as usize {
                gregs[libc::REG_RAX as usize] = i64::from(FAULTED) + i64::from(sig);
                let ret: unsafe extern "C" fn() = oxmm_native_ret;
                gregs[libc::REG_RIP as usize] = ret as usize as i64;
                return;
            }
            // SAFETY:
            // - `signal` is async-signal-safe; restoring the default action
            //   makes the faulting instruction kill the process on return.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }

        fn errno() -> i32 {
            // SAFETY: `__errno_location` returns this thread's errno slot.
            unsafe { *libc::__errno_location() }
        }

        fn fail() -> Reply {
            Reply { kind: kind::ERRNO, code: errno() as u32, vals: [0; 4] }
        }

        /// Turns an unwinding panic into `_exit(101)`: the child must never
        /// unwind into its copy of the driver's stack.
        struct ExitOnUnwind;

        impl Drop for ExitOnUnwind {
            fn drop(&mut self) {
                // SAFETY: `_exit` is async-signal-safe and never returns.
                unsafe { libc::_exit(101) }
            }
        }

        /// Per-process state; lives on the command loop's stack.
        struct State {
            /// Baseline in kB: anon, file, shmem, swap.
            base: [u64; 4],
            /// The loop's own file-backed mappings (code, libraries), as
            /// found at startup, before any script mapping existed.
            own: [(u64, u64); MAX_OWN],
            /// How many of `own` are used.
            n_own: usize,
        }

        /// At most this many own file mappings are kept populated (a
        /// process has a few dozen).
        const MAX_OWN: usize = 256;

        /// `MADV_POPULATE_READ` (Linux 5.14), missing from `libc`.
        const MADV_POPULATE_READ: i32 = 22;

        /// Runs the command loop on channel `chan`; never returns.
        pub(in super::super) fn run(chan: RawFd) -> ! {
            let _guard = ExitOnUnwind;
            // SAFETY:
            // - `dup2` and `close_range` take no pointers. After them the
            //   process holds only fds 0-2 and its channel at `CHAN_FD`,
            //   which nothing in the child has wrapped in an owner.
            unsafe {
                if chan != CHAN_FD && libc::dup2(chan, CHAN_FD) < 0 {
                    libc::_exit(102);
                }
                libc::close_range(CHAN_FD as u32 + 1, u32::MAX, 0);
            }
            install_signals();
            let mut st = State { base: [0; 4], own: [(0, 0); MAX_OWN], n_own: 0 };
            find_own_file_mappings(&mut st);
            populate_own(&st);
            pretouch_stack();
            warm_up(&mut st);
            st.base = read_status().unwrap_or([0; 4]);
            command_loop(&mut st);
            // SAFETY: `_exit` is async-signal-safe and never returns.
            unsafe { libc::_exit(0) }
        }

        fn install_signals() {
            // SAFETY:
            // - `sigaction` is given a fully initialized action (zeroed,
            //   then handler, flags and an empty mask set) and a null old
            //   action; `on_fault` has the `SA_SIGINFO` signature.
            // - `sigprocmask` is given a valid set and a null old set.
            unsafe {
                let mut sa: libc::sigaction = core::mem::zeroed();
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) = on_fault;
                sa.sa_sigaction = handler as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(libc::SIGSEGV, &sa, core::ptr::null_mut());
                libc::sigaction(libc::SIGBUS, &sa, core::ptr::null_mut());
                let mut ign: libc::sigaction = core::mem::zeroed();
                ign.sa_sigaction = libc::SIG_IGN;
                libc::sigemptyset(&mut ign.sa_mask);
                // Forked command loops are reaped by the kernel.
                libc::sigaction(libc::SIGCHLD, &ign, core::ptr::null_mut());
                libc::sigaction(libc::SIGPIPE, &ign, core::ptr::null_mut());
                let mut set: libc::sigset_t = core::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGSEGV);
                libc::sigaddset(&mut set, libc::SIGBUS);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
            }
        }

        /// Runs every request path once, so that serving requests later
        /// maps no new page of the loop's own. A forked loop runs it too
        /// (its code pages were not copied), but does not pre-fault the
        /// stack again: its parent's pre-faulted stack was copied, and
        /// going deeper would add pages to the inherited baseline.
        #[inline(never)]
        fn warm_up(st: &mut State) {
            let _ = read_status();
            let m = do_mmap(2 * PAGE, 3, false, None, 0);
            if m.kind != kind::OK {
                return;
            }
            let a = m.vals[0];
            let _ = do_touch(a, 2 * PAGE, true);
            let _ = do_touch(a, 2 * PAGE, false);
            let _ = do_fill(a, 2 * PAGE, 7);
            let _ = do_sum(a, 2 * PAGE);
            let _ = do_mincore(a, 2 * PAGE);
            let _ = do_stat(st);
            // SAFETY: `a` is the scratch mapping made above, nothing else
            // lives there.
            unsafe { libc::mprotect((a + PAGE) as *mut c_void, PAGE as usize, libc::PROT_READ) };
            let _ = do_touch(a + PAGE, PAGE, true); // SIGSEGV path, store probe
            let _ = do_fill(a + PAGE, PAGE, 1);
            // SAFETY: as above.
            unsafe { libc::mprotect((a + PAGE) as *mut c_void, PAGE as usize, libc::PROT_NONE) };
            let _ = do_touch(a + PAGE, PAGE, false); // load probe
            let _ = do_sum(a + PAGE, PAGE);
            let _ = do_madvise(a, 2 * PAGE, libc::MADV_DONTNEED as u64);
            let r = do_mremap(a, 2 * PAGE, 3 * PAGE);
            let (a, len) = if r.kind == kind::OK { (r.vals[0], 3 * PAGE) } else { (a, 2 * PAGE) };
            let _ = do_munmap(a, len);
            // A fork whose child exits at once; the parent side goes through
            // the same calls as a real fork, less the reply.
            let _ = do_fork(st, true);
            // The reply path, without a peer to read it: a zero-length
            // send to an invalid descriptor exercises the same code.
            let _ = send_reply(-1, &Reply::ok0(), -1);
        }

        /// Records the file-backed mappings of `/proc/self/maps` (those
        /// with an inode) in `st.own`.
        fn find_own_file_mappings(st: &mut State) {
            // SAFETY: the path is a NUL-terminated literal.
            let fd = unsafe { libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return;
            }
            let mut buf = [0u8; 4096];
            let mut have = 0usize;
            // True while the rest of an over-long line is skipped.
            let mut skipping = false;
            loop {
                // SAFETY: `buf[have..]` is valid for `buf.len() - have` bytes.
                let n = unsafe { libc::read(fd, buf[have..].as_mut_ptr().cast(), buf.len() - have) };
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                let eof = n <= 0;
                if !eof {
                    have += n as usize;
                }
                let mut start = 0;
                while let Some(pos) = buf[start..have].iter().position(|&b| b == b'\n') {
                    if !skipping {
                        own_mapping(st, &buf[start..start + pos]);
                    }
                    skipping = false;
                    start += pos + 1;
                }
                buf.copy_within(start..have, 0);
                have -= start;
                if eof {
                    if have > 0 && !skipping {
                        own_mapping(st, &buf[..have]);
                    }
                    break;
                }
                if have == buf.len() {
                    // A line longer than the buffer: its first 4 KiB hold
                    // every field but the path.
                    if !skipping {
                        own_mapping(st, &buf[..have]);
                    }
                    skipping = true;
                    have = 0;
                }
            }
            // SAFETY: `fd` was opened above and is closed once.
            unsafe { libc::close(fd) };
        }

        /// One `/proc/self/maps` line: `start-end perms offset dev inode path`.
        fn own_mapping(st: &mut State, line: &[u8]) {
            let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
            let (Some(range), Some(perms), _, _, Some(inode)) =
                (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return;
            };
            if inode == b"0" || perms.first() != Some(&b'r') || st.n_own == MAX_OWN {
                return;
            }
            let mut ends = range.split(|&b| b == b'-');
            let hex = |f: Option<&[u8]>| {
                f.filter(|f| !f.is_empty() && f.len() <= 16)
                    .and_then(|f| f.iter().try_fold(0u64, |n, &d| Some(n << 4 | u64::from((d as char).to_digit(16)?))))
            };
            if let (Some(start), Some(end)) = (hex(ends.next()), hex(ends.next())) {
                st.own[st.n_own] = (start, end);
                st.n_own += 1;
            }
        }

        /// Maps every page of the loop's own readable file mappings, so no
        /// code path run later can add file pages to its resident set
        /// (fault-around would map 16 at a time).
        fn populate_own(st: &State) {
            for &(start, end) in &st.own[..st.n_own.min(MAX_OWN)] {
                // SAFETY:
                // - `MADV_POPULATE_READ` only faults pages in, as reads; the
                //   range is one of this process's own readable mappings.
                unsafe { libc::madvise(start as *mut c_void, (end - start) as usize, MADV_POPULATE_READ) };
            }
        }

        #[inline(never)]
        fn pretouch_stack() {
            let mut buf = [0u8; 128 * 1024];
            black_box(&mut buf);
        }

        fn command_loop(st: &mut State) {
            let mut buf = [0u8; REQ_LEN];
            loop {
                // SAFETY: `buf` is valid for `REQ_LEN` writable bytes.
                let n = unsafe { libc::recv(CHAN_FD, buf.as_mut_ptr().cast(), REQ_LEN, 0) };
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                if n < REQ_HEAD as isize {
                    return; // end-of-file or a broken channel: exit
                }
                let n = n as usize;
                let u32_at = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
                let u64_at = |o: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[o..o + 8]);
                    u64::from_le_bytes(b)
                };
                let op = u32_at(0);
                let path_len = (u32_at(4) as usize).min(PATH_MAX - 1).min(n - REQ_HEAD);
                let a = [u64_at(8), u64_at(16), u64_at(24), u64_at(32)];
                let (rep, fd) = match op {
                    op::MMAP => {
                        let path = &mut buf[REQ_HEAD..REQ_HEAD + path_len + 1];
                        path[path_len] = 0;
                        let file = if path_len > 0 { Some(&*path) } else { None };
                        (do_mmap(a[0], a[1] as u32, a[2] != 0, file, a[3]), -1)
                    }
                    op::MUNMAP => (do_munmap(a[0], a[1]), -1),
                    op::MPROTECT => (do_mprotect(a[0], a[1], a[2]), -1),
                    op::MADVISE => (do_madvise(a[0], a[1], a[2]), -1),
                    op::TOUCH => (do_touch(a[0], a[1], a[2] != 0), -1),
                    op::FILL => (do_fill(a[0], a[1], a[2] as u8), -1),
                    op::SUM => (do_sum(a[0], a[1]), -1),
                    op::MREMAP => (do_mremap(a[0], a[1], a[2]), -1),
                    op::STAT => (do_stat(st), -1),
                    op::MINCORE => (do_mincore(a[0], a[1]), -1),
                    op::FORK => match do_fork(st, false) {
                        Forked::Parent(rep, fd) => (rep, fd),
                        // The new process: its channel is now `CHAN_FD`.
                        Forked::Child => continue,
                    },
                    op::EXIT => {
                        let _ = send_reply(CHAN_FD, &Reply::ok0(), -1);
                        return;
                    }
                    _ => (Reply { kind: kind::BAD_REQUEST, code: op, vals: [0; 4] }, -1),
                };
                let sent = send_reply(CHAN_FD, &rep, fd);
                if fd >= 0 {
                    // SAFETY: `fd` is the driver's end of a socket pair
                    // made by `do_fork`; it has been sent and is closed
                    // here exactly once.
                    unsafe { libc::close(fd) };
                }
                if !sent {
                    return;
                }
            }
        }

        /// Sends `rep`, with descriptor `fd` attached if it is >= 0.
        fn send_reply(chan: RawFd, rep: &Reply, fd: RawFd) -> bool {
            let mut bytes = rep.encode();
            let mut iov = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: REP_LEN };
            let mut cbuf = [0u64; 4];
            // SAFETY: `msghdr` is plain data for which all-zero is valid.
            let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if fd >= 0 {
                msg.msg_control = cbuf.as_mut_ptr().cast();
                // SAFETY: `CMSG_SPACE` is a pure computation.
                msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
                // SAFETY:
                // - the control buffer is 32 bytes, aligned for `cmsghdr`,
                //   and `msg_controllen` (CMSG_SPACE(4) = 24) fits in it, so
                //   `CMSG_FIRSTHDR` is non-null and the header and its 4
                //   data bytes are inside `cbuf`.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&msg);
                    (*c).cmsg_level = libc::SOL_SOCKET;
                    (*c).cmsg_type = libc::SCM_RIGHTS;
                    (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
                    core::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
                }
            }
            loop {
                // SAFETY: `msg` points at `iov` and `cbuf`, live for the call.
                let n = unsafe { libc::sendmsg(chan, &msg, libc::MSG_NOSIGNAL) };
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                return n == REP_LEN as isize;
            }
        }

        fn do_mmap(len: u64, prot: u32, shared: bool, file: Option<&[u8]>, off: u64) -> Reply {
            let mut flags = if shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
            let mut fd = -1;
            if let Some(path) = file {
                // SAFETY: `path` is NUL-terminated (the loop wrote the NUL).
                fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) };
                if fd < 0 && matches!(errno(), libc::EACCES | libc::EROFS | libc::EISDIR) {
                    // SAFETY: as above.
                    fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
                }
                if fd < 0 {
                    return Reply { kind: kind::OPEN_FAILED, code: errno() as u32, vals: [0; 4] };
                }
            } else {
                flags |= libc::MAP_ANONYMOUS;
            }
            // SAFETY:
            // - a null hint without `MAP_FIXED` never replaces an existing
            //   mapping, so no memory the loop uses can change under it.
            let p = unsafe { libc::mmap(core::ptr::null_mut(), len as usize, prot as i32, flags, fd, off as i64) };
            let rep = if p == libc::MAP_FAILED { fail() } else { Reply::ok([p as u64, 0, 0, 0]) };
            if fd >= 0 {
                // SAFETY: `fd` was opened above and is closed once.
                unsafe { libc::close(fd) };
            }
            rep
        }

        // `munmap`, `mprotect`, `madvise` and `mremap` are passed the
        // script's arguments as they are. They can only affect the script's
        // own mappings or fail: the loop's own memory (stack, code, the
        // driver's inherited heap) is never named by a script, whose
        // addresses are region starts returned by `mmap` plus offsets.
        // A script can still name them with a large enough offset; that is
        // Linux's semantics too, and at worst kills this child, which the
        // driver reports as a broken process.

        fn do_munmap(addr: u64, len: u64) -> Reply {
            // SAFETY: see the comment above: arguments pass through.
            let r = unsafe { libc::munmap(addr as *mut c_void, len as usize) };
            if r == 0 {
                Reply::ok0()
            } else {
                fail()
            }
        }

        fn do_mprotect(addr: u64, len: u64, prot: u64) -> Reply {
            // SAFETY: see above.
            let r = unsafe { libc::mprotect(addr as *mut c_void, len as usize, prot as i32) };
            if r == 0 {
                Reply::ok0()
            } else {
                fail()
            }
        }

        fn do_madvise(addr: u64, len: u64, advice: u64) -> Reply {
            // SAFETY: see above.
            let r = unsafe { libc::madvise(addr as *mut c_void, len as usize, advice as i32) };
            if r == 0 {
                Reply::ok0()
            } else {
                fail()
            }
        }

        fn do_mremap(addr: u64, old: u64, new: u64) -> Reply {
            // SAFETY: see above; `MREMAP_MAYMOVE` never replaces a mapping.
            let p = unsafe { libc::mremap(addr as *mut c_void, old as usize, new as usize, libc::MREMAP_MAYMOVE) };
            if p == libc::MAP_FAILED {
                fail()
            } else {
                Reply::ok([p as u64, 0, 0, 0])
            }
        }

        fn fault(ret: u32, addr: u64) -> Reply {
            Reply { kind: kind::FAULT, code: ret - FAULTED, vals: [addr, 0, 0, 0] }
        }

        /// The page-sized pieces of `[addr, addr+len)`, in address order,
        /// clipped at the top of the address space.
        fn pieces(addr: u64, len: u64, mut f: impl FnMut(u64, u64) -> Option<Reply>) -> Reply {
            let end = addr.saturating_add(len);
            let mut a = addr;
            while a < end {
                let next = (a & !(PAGE - 1)).saturating_add(PAGE).min(end);
                if let Some(rep) = f(a, next - a) {
                    return rep;
                }
                if next == a {
                    break;
                }
                a = next;
            }
            Reply::ok0()
        }

        fn do_touch(addr: u64, len: u64, write: bool) -> Reply {
            pieces(addr, len, |a, _| {
                let r = if write {
                    // SAFETY: a fault is caught by `on_fault` (see the
                    // module doc); any address may be probed.
                    unsafe { oxmm_native_store(a as *mut u8, 1) }
                } else {
                    // SAFETY: as above.
                    unsafe { oxmm_native_load(a as *const u8) }
                };
                (r >= FAULTED).then(|| fault(r, a))
            })
        }

        fn do_fill(addr: u64, len: u64, byte: u8) -> Reply {
            pieces(addr, len, |a, n| {
                // SAFETY: as in `do_touch`.
                let r = unsafe { oxmm_native_store(a as *mut u8, u32::from(byte)) };
                if r >= FAULTED {
                    return Some(fault(r, a));
                }
                // SAFETY:
                // - the store to `a` succeeded, so the page holding
                //   `[a, a+n)` (n stops at the page end) is mapped writable
                //   and backed: protection and backing are per page.
                // - it is script memory, which no Rust reference points at.
                unsafe { core::ptr::write_bytes((a + 1) as *mut u8, byte, (n - 1) as usize) };
                None
            })
        }

        fn do_sum(addr: u64, len: u64) -> Reply {
            let mut total = 0u64;
            let rep = pieces(addr, len, |a, n| {
                // SAFETY: as in `do_touch`.
                let r = unsafe { oxmm_native_load(a as *const u8) };
                if r >= FAULTED {
                    return Some(fault(r, a));
                }
                total += u64::from(r);
                // SAFETY:
                // - the load from `a` succeeded, so the whole page holding
                //   `[a, a+n)` (n stops at the page end) is mapped readable
                //   and backed: protection and backing are per page.
                // - it is script memory: no Rust reference points at it, and
                //   nothing writes it while this process runs a request
                //   (the driver runs one request at a time, on any process).
                let rest = unsafe { core::slice::from_raw_parts((a + 1) as *const u8, (n - 1) as usize) };
                total += rest.iter().map(|&b| u64::from(b)).sum::<u64>();
                None
            });
            if rep.kind == kind::OK {
                Reply::ok([total, 0, 0, 0])
            } else {
                rep
            }
        }

        fn do_mincore(addr: u64, len: u64) -> Reply {
            // Counted in chunks of `vec.len()` pages. The first chunk gets
            // the script's arguments as they are (so alignment and range
            // errors are the kernel's); later chunks continue page-aligned.
            let mut vec = [0u8; 16 * 1024];
            let chunk = vec.len() as u64 * PAGE;
            let mut resident = 0u64;
            let mut a = addr;
            let mut left = len;
            loop {
                let n = left.min(chunk);
                // SAFETY:
                // - `vec` holds `chunk / PAGE` bytes, enough for the pages
                //   of any `n <= chunk` starting page-aligned (an unaligned
                //   `a` fails with EINVAL before anything is written).
                let r = unsafe { libc::mincore(a as *mut c_void, n as usize, vec.as_mut_ptr()) };
                if r != 0 {
                    return fail();
                }
                let pages = n.div_ceil(PAGE) as usize;
                resident += vec[..pages.min(vec.len())].iter().filter(|&&b| b & 1 != 0).count() as u64;
                left -= n;
                if left == 0 {
                    return Reply::ok([resident, 0, 0, 0]);
                }
                a = a.wrapping_add(n);
            }
        }

        fn do_stat(st: &State) -> Reply {
            match read_status() {
                Some(now) => {
                    let mut v = [0u64; 4];
                    for ((v, now), base) in v.iter_mut().zip(now).zip(st.base) {
                        *v = now.saturating_sub(base) / 4;
                    }
                    Reply::ok(v)
                }
                None => fail(),
            }
        }

        /// `RssAnon`, `RssFile`, `RssShmem`, `VmSwap` of `/proc/self/status`,
        /// in kB.
        fn read_status() -> Option<[u64; 4]> {
            let mut buf = [0u8; 8192];
            // SAFETY: the path is a NUL-terminated literal.
            let fd = unsafe { libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return None;
            }
            let mut len = 0usize;
            while len < buf.len() {
                // SAFETY: `buf[len..]` is valid for `buf.len() - len` bytes.
                let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                if n <= 0 {
                    break;
                }
                len += n as usize;
            }
            // SAFETY: `fd` was opened above and is closed once.
            unsafe { libc::close(fd) };
            let keys: [&[u8]; 4] = [b"RssAnon:", b"RssFile:", b"RssShmem:", b"VmSwap:"];
            let mut out = [0u64; 4];
            for line in buf[..len].split(|&b| b == b'\n') {
                for (k, key) in keys.iter().enumerate() {
                    if let Some(rest) = line.strip_prefix(*key) {
                        out[k] = rest
                            .iter()
                            .skip_while(|b| !b.is_ascii_digit())
                            .take_while(|b| b.is_ascii_digit())
                            .fold(0u64, |n, &d| n.saturating_mul(10).saturating_add(u64::from(d - b'0')));
                    }
                }
            }
            Some(out)
        }

        enum Forked {
            /// The forking process: the reply and the descriptor to send.
            Parent(Reply, RawFd),
            /// The new process, now serving its own channel.
            Child,
        }

        /// Forks this command loop. The new process moves its end of a new
        /// socket pair to `CHAN_FD`, warms up and keeps the baseline; the
        /// old one sends the other end to the driver with the reply. With
        /// `dummy`, the new process exits at once (warm-up).
        fn do_fork(st: &mut State, dummy: bool) -> Forked {
            let mut sv = [-1 as RawFd; 2];
            // SAFETY: `sv` is a valid array of two descriptors.
            let r = unsafe {
                libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr())
            };
            if r != 0 {
                return Forked::Parent(fail(), -1);
            }
            // SAFETY: `fork` has no preconditions; this process is
            // single-threaded.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                if dummy {
                    // SAFETY: `_exit` never returns.
                    unsafe { libc::_exit(0) };
                }
                // SAFETY:
                // - `dup2` replaces the old channel at `CHAN_FD` with the
                //   new end; `close_range` then closes both raw `sv` fds
                //   (both > CHAN_FD, since 0..=CHAN_FD are open), which
                //   nothing else refers to.
                unsafe {
                    if libc::dup2(sv[1], CHAN_FD) < 0 {
                        libc::_exit(102);
                    }
                    libc::close_range(CHAN_FD as u32 + 1, u32::MAX, 0);
                }
                // `fork` copied no PTE of the unwritten file mappings:
                // populate them again, as the parent did before its
                // baseline.
                populate_own(st);
                let base = st.base;
                warm_up(st);
                st.base = base;
                return Forked::Child;
            }
            // SAFETY: `sv[1]` is ours and closed once; it is the new
            // process's end.
            unsafe { libc::close(sv[1]) };
            if pid < 0 {
                let rep = fail();
                // SAFETY: `sv[0]` is ours and closed once.
                unsafe { libc::close(sv[0]) };
                return Forked::Parent(rep, -1);
            }
            if dummy {
                // SAFETY: as above.
                unsafe { libc::close(sv[0]) };
                return Forked::Parent(Reply::ok0(), -1);
            }
            Forked::Parent(Reply::ok([pid as u64, 0, 0, 0]), sv[0])
        }
    }
}

#[cfg(all(test, target_os = "linux", target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn fresh_process_is_empty_and_counts_its_writes() {
        let mut p = NativeProc::spawn().unwrap();
        assert_eq!(p.stat().unwrap(), NativeRss::default());
        let a = p.mmap(16 * PAGE, 3, false, None).unwrap();
        p.touch(a, 16 * PAGE, false).unwrap();
        assert_eq!(p.stat().unwrap().anon, 0, "zero page is not counted");
        p.touch(a, 16 * PAGE, true).unwrap();
        assert_eq!(p.stat().unwrap().anon, 16);
        assert_eq!(p.mincore(a, 16 * PAGE).unwrap(), 16);
        p.fill(a, 2 * PAGE, 2).unwrap();
        assert_eq!(p.sum(a, 3 * PAGE).unwrap(), 2 * 2 * PAGE + 1);
        p.mprotect(a + 4 * PAGE, PAGE, 1).unwrap();
        match p.touch(a, 16 * PAGE, true) {
            Err(NativeError::Fault(f)) => {
                assert_eq!(f, NativeFault { kind: NativeFaultKind::Segv, addr: a + 4 * PAGE })
            }
            other => panic!("{other:?}"),
        }
        match p.munmap(a + 1, PAGE) {
            Err(NativeError::Errno(Errno::EINVAL)) => {}
            other => panic!("{other:?}"),
        }
        let mut c = p.fork().unwrap();
        assert_eq!(c.stat().unwrap().anon, 16, "fork copies anonymous PTEs");
        assert_eq!(c.sum(a, PAGE).unwrap(), 2 * PAGE - 1, "the faulted touch wrote 0x01 first");
        c.exit().unwrap();
        p.exit().unwrap();
    }
}
