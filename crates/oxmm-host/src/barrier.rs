//! The initiator's heavy fence: `membarrier(2)`.
//!
//! `MEMBARRIER_CMD_PRIVATE_EXPEDITED` makes every CPU currently running a
//! thread of this process execute a full memory barrier (by IPI) before the
//! call returns. That is the hardware shootdown IPI of the software MMU: it
//! lets each CPU's access window open with a compiler fence only (see
//! [`crate::tlb`]).

use std::io;

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

fn membarrier(cmd: libc::c_int) -> io::Result<libc::c_long> {
    // SAFETY:
    // - membarrier takes (cmd, flags, cpu_id) integers and touches no
    //   memory of ours;
    // - an unsupported command returns -1 with errno set, handled below.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_uint, 0 as libc::c_int) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Register this process for expedited private membarriers. Required once
/// before [`heavy_fence`]; fails if the kernel lacks the command.
pub fn register() -> io::Result<()> {
    let supported = membarrier(MEMBARRIER_CMD_QUERY)?;
    if supported & libc::c_long::from(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "membarrier PRIVATE_EXPEDITED is not supported by this kernel",
        ));
    }
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED).map(|_| ())
}

/// A full memory barrier on every CPU running a thread of this process.
#[inline]
pub fn heavy_fence() {
    #[cfg(not(loom))]
    {
        if membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED).is_err() {
            // Registration is checked at machine start, so this cannot fail;
            // if it somehow does, fall back to the global (slow) barrier
            // rather than break the protocol.
            // SAFETY: as in `membarrier`; MEMBARRIER_CMD_GLOBAL is 1.
            let r =
                unsafe { libc::syscall(libc::SYS_membarrier, 1 as libc::c_int, 0 as libc::c_uint, 0 as libc::c_int) };
            assert!(r >= 0, "membarrier failed: {}", io::Error::last_os_error());
        }
    }
    #[cfg(loom)]
    oxmm::sync::fence(oxmm::sync::Ordering::SeqCst);
}
