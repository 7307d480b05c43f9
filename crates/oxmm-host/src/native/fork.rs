//! The host kernel's fork+exit, as the baseline of `oxmm bench fork`.
//!
//! Run in a fresh, single-threaded process (the `oxmm` binary's hidden
//! worker command), so that the process being forked holds only the
//! measured mapping — not the benchmark's own memory arena, whose page
//! tables the kernel would otherwise copy too.

use std::io;
use std::time::{Duration, Instant};

use super::faults::NativeFaults;

/// Map `bytes` of anonymous private memory (THP off, so each 4 KiB page is
/// a PTE as in oxmm), write one byte per page, then time `reps` rounds of
/// `fork()` + the child's `_exit(0)` + `waitpid` in the parent.
pub fn fork_exit_times(bytes: u64, reps: u32) -> io::Result<Vec<Duration>> {
    let mut mapping = NativeFaults::new().map(bytes)?;
    mapping.touch_pages(&[])?;
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
    drop(mapping);
    Ok(times)
}
