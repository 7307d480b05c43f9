//! The host kernel's fork+exit, as the baseline of `oxmm bench fork`.
//!
//! Run in a fresh, single-threaded process (the `oxmm` binary's hidden
//! worker command), so that the process being forked holds only the
//! measured mapping — not the benchmark's own memory arena, whose page
//! tables the kernel would otherwise copy too.

use std::io;
use std::time::{Duration, Instant};

/// Map `bytes` of anonymous private memory (THP off, so each 4 KiB page is
/// a PTE as in oxmm), write one byte per page, then time `reps` rounds of
/// `fork()` + the child's `_exit(0)` + `waitpid` in the parent.
pub fn fork_exit_times(bytes: u64, reps: u32) -> io::Result<Vec<Duration>> {
    let len = usize::try_from(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size"))?;
    // SAFETY:
    // - anonymous private mapping of `len` bytes at an address the kernel
    //   chooses; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `p..p+len` is the mapping just created; advice only.
    unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
    for off in (0..len).step_by(4096) {
        // SAFETY: `off < len`: inside the mapping, which is writable.
        unsafe { std::ptr::write_volatile((p as *mut u8).add(off), 1) };
    }
    let mut times = Vec::with_capacity(reps as usize);
    for _ in 0..reps {
        let t = Instant::now();
        // SAFETY: the process is single-threaded (the worker command), so
        // the child may run any code; it calls only `_exit`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child: leave at once without running any
            // destructor or atexit handler of the parent's state.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked; `status` is a valid out
        // pointer.
        if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        times.push(t.elapsed());
    }
    // SAFETY: unmaps exactly the mapping created above.
    unsafe { libc::munmap(p, len) };
    Ok(times)
}
