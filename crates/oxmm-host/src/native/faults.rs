//! Native target of `oxmm bench faults`: the host kernel's anonymous fault
//! path, driven with the same pattern the hosted machine runs.
//!
//! The pattern is the one of the seed-003 table: map a private anonymous
//! region, write one byte to each page (the first touch of each page is a
//! minor fault that allocates and zeroes a frame), unmap. Here that is a
//! real `mmap(PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS)`, volatile
//! byte stores, and a real `munmap`.
//!
//! Why the mapping is an owned value ([`NativeMapping`]) and not a bare
//! address: writing through an address is only sound while the caller
//! knows the range is mapped and nobody else relies on its contents. Owning
//! the mapping makes `touch_pages` and `unmap` safe to call (the CLI crate
//! forbids `unsafe`), and dropping it unmaps, so an error half-way through a
//! benchmark leaks nothing.
//!
//! Transparent huge pages are switched off on each mapping
//! (`MADV_NOHUGEPAGE`) unless asked for: with THP one fault maps 512 pages,
//! and the figure would no longer be "faults per second" on the 4 KiB
//! pattern the hosted machine runs.
//!
//! CPU time comes from `getrusage(RUSAGE_THREAD)` ([`thread_rusage`]): the
//! harness reads it on each worker thread before and after its touch phase.

use std::io;
use std::ptr::NonNull;
use std::time::Duration;

/// The host's base page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY:
    // - `sysconf` has no memory-safety preconditions; `_SC_PAGESIZE` is a
    //   valid name and the call only returns a value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // POSIX guarantees `_SC_PAGESIZE` is supported; fall back to 4 KiB on a
    // host that does not say.
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// Resource usage of a thread or a process, as `getrusage` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rusage {
    /// CPU time spent in user mode.
    pub user: Duration,
    /// CPU time spent in the kernel.
    pub system: Duration,
    /// Faults served without I/O (`ru_minflt`): first touches of anonymous
    /// memory are counted here.
    pub minor_faults: u64,
    /// Faults that needed I/O (`ru_majflt`).
    pub major_faults: u64,
}

impl Rusage {
    /// User plus system time.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }

    /// The usage between `earlier` and `self` (saturating, so a counter
    /// that went backwards reads as zero rather than wrapping).
    pub fn since(&self, earlier: &Rusage) -> Rusage {
        Rusage {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
            major_faults: self.major_faults.saturating_sub(earlier.major_faults),
        }
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
}

fn rusage(who: libc::c_int) -> io::Result<Rusage> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY:
    // - `usage.as_mut_ptr()` points to writable, properly aligned storage
    //   for one `rusage`, live for the whole call.
    // - `who` is `RUSAGE_SELF` or `RUSAGE_THREAD` (the only callers), both
    //   valid; an invalid one would only make the call fail with EINVAL.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY:
    // - `rusage` is plain old data (integers and `timeval`s), so the
    //   zeroed bytes were already a valid value, and `getrusage` returned
    //   0, so it has filled the struct in.
    let usage = unsafe { usage.assume_init() };
    Ok(Rusage {
        user: timeval(usage.ru_utime),
        system: timeval(usage.ru_stime),
        minor_faults: u64::try_from(usage.ru_minflt).unwrap_or(0),
        major_faults: u64::try_from(usage.ru_majflt).unwrap_or(0),
    })
}

/// Resource usage of the calling thread (`getrusage(RUSAGE_THREAD)`).
///
/// Read it on the thread to be measured, before and after the measured
/// phase, and subtract with [`Rusage::since`].
pub fn thread_rusage() -> io::Result<Rusage> {
    rusage(libc::RUSAGE_THREAD)
}

/// Resource usage of the whole process (`getrusage(RUSAGE_SELF)`), summed
/// over its threads, dead ones included.
pub fn process_rusage() -> io::Result<Rusage> {
    rusage(libc::RUSAGE_SELF)
}

/// Maker of native anonymous mappings for the fault benchmark.
#[derive(Clone, Copy, Debug)]
pub struct NativeFaults {
    page_size: u64,
    huge_pages: bool,
}

impl Default for NativeFaults {
    fn default() -> Self {
        Self::new()
    }
}

impl NativeFaults {
    /// Base pages only (each mapping gets `MADV_NOHUGEPAGE`).
    pub fn new() -> Self {
        NativeFaults { page_size: page_size(), huge_pages: false }
    }

    /// Leave transparent huge pages to the host's policy instead of
    /// switching them off per mapping.
    pub fn with_huge_pages(mut self, allowed: bool) -> Self {
        self.huge_pages = allowed;
        self
    }

    /// The page size that [`NativeMapping::touch_pages`] steps by.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS)`.
    ///
    /// No page is touched: every page faults on its first write. `len` is
    /// rounded up to whole pages by the kernel; `len == 0` fails with
    /// `EINVAL`, as `mmap` does.
    pub fn map(&self, len: u64) -> io::Result<NativeMapping> {
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY:
        // - A NULL hint with no `MAP_FIXED` lets the kernel pick fresh
        //   address space, so no existing mapping (and no Rust object) is
        //   replaced.
        // - `MAP_ANONYMOUS` with fd -1 and offset 0 is the documented form.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        let mapping = NativeMapping { ptr, len, page_size: self.page_size as usize };
        if !self.huge_pages {
            // SAFETY:
            // - `[ptr, ptr + len)` is the mapping just created and owned by
            //   `mapping`; `MADV_NOHUGEPAGE` only changes the fault policy,
            //   never contents or protection.
            let rc = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_NOHUGEPAGE) };
            // EINVAL: a kernel built without THP; there is nothing to switch
            // off then.
            if rc != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINVAL) {
                    return Err(err); // `mapping` unmaps on drop.
                }
            }
        }
        Ok(mapping)
    }
}

/// A private anonymous mapping owned by the benchmark; unmapped on drop.
#[derive(Debug)]
pub struct NativeMapping {
    /// Start of the mapping; page aligned, mapped read-write for `len`
    /// bytes until `self` is dropped or unmapped.
    ptr: NonNull<u8>,
    len: usize,
    page_size: usize,
}

// SAFETY:
// - `NativeMapping` owns its address range exclusively (nothing else has
//   its address), and memory mappings are process-wide, so moving the owner
//   to another thread and touching or unmapping it there is sound.
unsafe impl Send for NativeMapping {}

impl NativeMapping {
    /// The start address.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as usize as u64
    }

    /// The length asked for, in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether the mapping is empty (never: `map` refuses length 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pages covered (the last one may be partial).
    pub fn pages(&self) -> u64 {
        self.len.div_ceil(self.page_size) as u64
    }

    /// Write one byte at the start of each page, with volatile stores so
    /// the compiler keeps every one.
    ///
    /// `order` lists page indices in the order to touch them (a shuffled
    /// order defeats sequential-fault prediction); an empty `order` means
    /// every page in ascending order. An index past the end fails with
    /// `InvalidInput` before any page is touched.
    pub fn touch_pages(&mut self, order: &[u32]) -> io::Result<()> {
        let pages = self.len.div_ceil(self.page_size);
        if order.is_empty() {
            for page in 0..pages {
                self.touch(page);
            }
            return Ok(());
        }
        if let Some(&bad) = order.iter().find(|&&p| p as usize >= pages) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("page index {bad} outside a mapping of {pages} pages"),
            ));
        }
        for &page in order {
            self.touch(page as usize);
        }
        Ok(())
    }

    /// Store one byte at the start of page `page`; `page` must be below
    /// `self.pages()` (checked by the callers).
    #[inline]
    fn touch(&mut self, page: usize) {
        debug_assert!(page * self.page_size < self.len);
        // SAFETY:
        // - `page * page_size < len` (the callers bound `page` by the page
        //   count), so the byte lies inside the mapping, which is mapped
        //   read-write while `self` lives.
        // - `&mut self` excludes other writers through this owner, and no
        //   Rust reference into the mapping exists; a `u8` store needs no
        //   alignment.
        unsafe { self.ptr.as_ptr().add(page * self.page_size).write_volatile(1) };
    }

    /// `munmap` the range, reporting the kernel's error if any.
    pub fn unmap(self) -> io::Result<()> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY:
        // - `[ptr, ptr + len)` is exactly the mapping `map` created and
        //   `this` owns; `ManuallyDrop` keeps `Drop` from unmapping it a
        //   second time, and no reference into it outlives this call.
        let rc = unsafe { libc::munmap(this.ptr.as_ptr().cast(), this.len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for NativeMapping {
    fn drop(&mut self) {
        // SAFETY:
        // - `[ptr, ptr + len)` is the mapping `map` created and `self`
        //   owns; it is unmapped once, here (`unmap` skips this `Drop`).
        // A failure cannot be reported from `drop`; the range stays mapped.
        let _ = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_touch_unmap_counts_one_fault_per_page() {
        let faults = NativeFaults::new();
        let pages = 64;
        let mut m = faults.map(pages * faults.page_size()).unwrap();
        assert_eq!(m.pages(), pages);
        assert_eq!(m.addr() % faults.page_size(), 0);
        let before = thread_rusage().unwrap();
        m.touch_pages(&[]).unwrap();
        let after = thread_rusage().unwrap();
        // At least one fault per page (exactly one on a quiet host: the
        // test thread does nothing else in between).
        assert!(after.since(&before).minor_faults >= pages);
        m.unmap().unwrap();
    }

    #[test]
    fn touch_in_given_order() {
        let faults = NativeFaults::new();
        let mut m = faults.map(4 * faults.page_size()).unwrap();
        m.touch_pages(&[3, 0, 2, 1]).unwrap();
        let err = m.touch_pages(&[0, 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn partial_last_page_is_touched() {
        let faults = NativeFaults::new();
        let mut m = faults.map(faults.page_size() + 1).unwrap();
        assert_eq!(m.pages(), 2);
        m.touch_pages(&[1]).unwrap();
    }

    #[test]
    fn zero_length_is_einval() {
        let err = NativeFaults::new().map(0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn rusage_is_monotonic() {
        let a = thread_rusage().unwrap();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let b = thread_rusage().unwrap();
        assert!(b.cpu() >= a.cpu());
        assert_eq!(a.since(&b).minor_faults, 0, "since saturates");
        assert!(process_rusage().unwrap().cpu() >= b.cpu());
    }
}
