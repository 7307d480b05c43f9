//! The memory arena: the hosted machine's physical memory.
//!
//! One anonymous host mapping, every page of which is touched at boot, so
//! that the host kernel's first-touch faults are paid before anything is
//! measured: zeroing and copying a frame then cost what they cost on
//! hardware, and a benchmark of oxmm's faults measures oxmm, not the host.
//! Transparent huge pages are requested for the arena (fewer host TLB
//! misses, as a kernel's direct map uses large pages), and where the first
//! touch did not get them the arena is collapsed into them
//! ([`back_with_huge_pages`]); [`huge_page_share`] tells how much is huge.

use memmap2::{MmapMut, MmapOptions};

use crate::HostError;

/// Physical memory of the hosted machine.
pub struct Arena {
    map: MmapMut,
}

impl Arena {
    /// Map and pre-touch `bytes` (a multiple of 4 KiB).
    pub fn new(bytes: u64) -> Result<Arena, HostError> {
        let len = usize::try_from(bytes)
            .map_err(|_| HostError::Config(format!("memory size {bytes} does not fit this host")))?;
        let mut map = MmapOptions::new().len(len).map_anon().map_err(HostError::Arena)?;
        #[cfg(target_os = "linux")]
        {
            // Best effort: THP may be disabled on the host.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        // Pre-touch: one write per 4 KiB host page.
        for off in (0..len).step_by(4096) {
            map[off] = 0;
        }
        back_with_huge_pages(&mut map);
        Ok(Arena { map })
    }

    /// Base address and length.
    pub fn raw(&mut self) -> (*mut u8, usize) {
        (self.map.as_mut_ptr(), self.map.len())
    }
}

/// Best effort: have the host back the whole of `map` (already touched)
/// with transparent huge pages now.
///
/// A huge page is only given at first touch if the host has a free 2 MiB
/// block at that moment, so a large mapping made after others (a benchmark's
/// buffers, made after the arena) can end up partly in 4 KiB pages, which
/// clear ~10 % slower here (more host TLB misses). `MADV_COLLAPSE` (Linux
/// 6.1+) rebuilds the rest synchronously, compacting if it must; where it is
/// missing or fails, the mapping stays as it is and [`huge_page_share`]
/// says how much is huge. Over a range already in huge pages the call
/// costs well under a millisecond (0.08 ms for 2 GiB here).
///
/// `MADV_COLLAPSE` ignores the host's THP policy, so it is not asked for
/// when the host has THP set to `never`: the administrator's choice
/// stands, as it does for the `MADV_HUGEPAGE` request.
pub fn back_with_huge_pages(map: &mut MmapMut) {
    #[cfg(target_os = "linux")]
    {
        let policy = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if policy.is_empty() || policy.contains("[never]") {
            return;
        }
        // SAFETY: the range is exactly the live mapping `map` owns;
        // MADV_COLLAPSE changes how it is backed, never its contents.
        let _ = unsafe { libc::madvise(map.as_mut_ptr().cast(), map.len(), libc::MADV_COLLAPSE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = map;
}

/// The fraction of `[addr, addr + len)` the host backs with transparent
/// huge pages, from the `AnonHugePages` of the mappings overlapping the
/// range in `/proc/self/smaps`. smaps counts per mapping, and the kernel
/// may merge the range's mapping with a neighbour mapped alike, so a
/// mapping that reaches outside the range is counted at its average share.
/// `None` off Linux, or if smaps cannot be read.
pub fn huge_page_share(addr: *const u8, len: usize) -> Option<f64> {
    if len == 0 {
        return None;
    }
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let (lo, hi) = (addr as u64, addr as u64 + len as u64);
    Some(huge_kib_in(&smaps, lo, hi)? as f64 * 1024.0 / len as f64)
}

/// KiB of `AnonHugePages` that the mappings of `smaps` overlapping
/// `[lo, hi)` hold inside it, each mapping's share spread evenly over it
/// (smaps has no finer figure); `None` if no mapping overlaps.
fn huge_kib_in(smaps: &str, lo: u64, hi: u64) -> Option<u64> {
    let mut total = None;
    // (overlap with the range, size), in bytes, of the mapping being read.
    let mut current = None;
    for line in smaps.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = head.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                current = (a < hi && lo < b && a < b).then(|| (b.min(hi) - a.max(lo), b - a));
                continue;
            }
        }
        if let (Some((overlap, size)), Some(rest)) = (current, line.strip_prefix("AnonHugePages:")) {
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            let inside = u128::from(kib) * u128::from(overlap) / u128::from(size);
            *total.get_or_insert(0) += u64::try_from(inside).unwrap_or(u64::MAX);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
7f0000000000-7f0000400000 rw-p 00000000 00:00 0 
Size:               4096 kB
AnonHugePages:      2048 kB
7f0000400000-7f0000600000 r--p 00000000 08:01 1234                       /usr/lib/x.so
Size:               2048 kB
AnonHugePages:         0 kB
7f0000600000-7f0000a00000 rw-p 00000000 00:00 0 
Size:               4096 kB
AnonHugePages:      4096 kB
";

    #[test]
    fn smaps_huge_pages_are_summed_over_the_overlapping_mappings() {
        // All three mappings.
        assert_eq!(huge_kib_in(SMAPS, 0x7f00_0000_0000, 0x7f00_00a0_0000), Some(6144));
        // Half of the last one, counted at its share (all of it huge).
        assert_eq!(huge_kib_in(SMAPS, 0x7f00_0080_0000, 0x7f00_00a0_0000), Some(2048));
        // Half of the first one, which is half huge: half of its 2048 KiB.
        assert_eq!(huge_kib_in(SMAPS, 0x7f00_0000_0000, 0x7f00_0020_0000), Some(1024));
        // Nothing there.
        assert_eq!(huge_kib_in(SMAPS, 0x1000, 0x2000), None);
    }

    #[test]
    fn a_fresh_arena_reports_its_huge_page_share() {
        let mut a = Arena::new(8 << 20).unwrap();
        let (p, len) = a.raw();
        let share = huge_page_share(p, len);
        #[cfg(target_os = "linux")]
        {
            // The arena's mapping is in smaps, whether or not THP backs it.
            let s = share.expect("the arena is listed in /proc/self/smaps");
            assert!((0.0..=1.0).contains(&s), "share {s}");
        }
        #[cfg(not(target_os = "linux"))]
        assert_eq!(share, None);
        // Touching survived the collapse: the arena still reads as mapped.
        // SAFETY: `p` is the start of the arena's live mapping.
        assert_eq!(unsafe { *p }, 0);
    }
}
