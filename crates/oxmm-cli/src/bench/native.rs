//! The host kernel as a [`FaultTarget`]: real `mmap`, real first-touch
//! faults, real `munmap` (see `oxmm_host::native::faults`).
//!
//! The host side hands out owned mappings rather than bare addresses (that
//! is what makes touching them safe to call from this `unsafe`-free crate);
//! [`NativeThread`] keeps the live ones and finds them again by address,
//! which is how the harness names them. Lookups are per call, not per page,
//! so they cost nothing measurable.

use anyhow::{anyhow, bail, Context as _};
use oxmm_host::native::faults::{process_rusage, NativeFaults, NativeMapping};

use super::faults::{FaultTarget, FaultThread};

/// The host kernel's anonymous fault path.
#[derive(Clone, Debug)]
pub struct NativeTarget {
    name: String,
    faults: NativeFaults,
}

impl Default for NativeTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl NativeTarget {
    /// The kernel target, named `kernel`; base pages only (THP off per
    /// mapping).
    pub fn new() -> Self {
        Self::named("kernel")
    }

    /// The kernel target under another name (e.g. to put it in both slots
    /// of the harness).
    pub fn named(name: impl Into<String>) -> Self {
        NativeTarget { name: name.into(), faults: NativeFaults::new() }
    }
}

impl FaultTarget for NativeTarget {
    type Thread<'a> = NativeThread;

    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> String {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string());
        format!(
            "host kernel{}: mmap, first-touch faults, munmap; THP off per mapping",
            release.map(|r| format!(" (Linux {r})")).unwrap_or_default()
        )
    }

    fn page_size(&self) -> u64 {
        self.faults.page_size()
    }

    fn entry_counter(&self) -> Option<&'static str> {
        Some("minflt")
    }

    fn thread(&self, _index: usize) -> anyhow::Result<NativeThread> {
        Ok(NativeThread { faults: self.faults, live: Vec::new() })
    }

    /// `minflt`: the process's minor faults (`getrusage(RUSAGE_SELF)`), so
    /// the table shows the kernel took one fault per page touched.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        match process_rusage() {
            Ok(usage) => vec![("minflt", usage.minor_faults)],
            Err(_) => Vec::new(),
        }
    }
}

/// One worker's live mappings; dropping it unmaps whatever is left.
#[derive(Debug)]
pub struct NativeThread {
    faults: NativeFaults,
    live: Vec<NativeMapping>,
}

impl NativeThread {
    fn find(&self, addr: u64) -> anyhow::Result<usize> {
        self.live.iter().position(|m| m.addr() == addr).ok_or_else(|| anyhow!("no native mapping at {addr:#x}"))
    }
}

impl FaultThread for NativeThread {
    fn map(&mut self, len: u64) -> anyhow::Result<u64> {
        let mapping = self.faults.map(len).with_context(|| format!("mmap of {len} bytes"))?;
        let addr = mapping.addr();
        self.live.push(mapping);
        Ok(addr)
    }

    fn touch_pages(&mut self, addr: u64, len: u64, order: &[u32]) -> anyhow::Result<()> {
        let i = self.find(addr)?;
        let mapping = &mut self.live[i];
        if mapping.len() != len {
            bail!("touch of {len} bytes at {addr:#x}, but the mapping there has {}", mapping.len());
        }
        mapping.touch_pages(order).with_context(|| format!("touching {len} bytes at {addr:#x}"))
    }

    fn unmap(&mut self, addr: u64, len: u64) -> anyhow::Result<()> {
        let i = self.find(addr)?;
        if self.live[i].len() != len {
            bail!("unmap of {len} bytes at {addr:#x}, but the mapping there has {}", self.live[i].len());
        }
        self.live.swap_remove(i).unmap().with_context(|| format!("munmap of {len} bytes at {addr:#x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_maps_touches_unmaps_by_address() {
        let target = NativeTarget::new();
        let page = target.page_size();
        let mut t = target.thread(0).unwrap();
        let a = t.map(4 * page).unwrap();
        let b = t.map(2 * page).unwrap();
        t.touch_pages(b, 2 * page, &[1, 0]).unwrap();
        t.touch_pages(a, 4 * page, &[]).unwrap();
        assert!(t.touch_pages(a, 3 * page, &[]).is_err(), "length mismatch");
        t.unmap(a, 4 * page).unwrap();
        assert!(t.unmap(a, 4 * page).is_err(), "already unmapped");
        assert!(t.touch_pages(a, 4 * page, &[]).is_err());
        t.unmap(b, 2 * page).unwrap();
        assert!(t.live.is_empty());
    }

    #[test]
    fn counters_name_minor_faults() {
        let c = NativeTarget::new().counters();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, "minflt");
    }
}
