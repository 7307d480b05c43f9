//! The page-fault handler.
//!
//! Entered by the MMU when a walk finds no usable translation. Takes the
//! mmap lock for reading, finds the VMA, checks the access against it
//! (outside any VMA, or forbidden by its protection: SEGV), reaches the PTE
//! slot (installing missing tables by CAS — OOM if no frame), and then
//! dispatches on the PTE found:
//!
//! | PTE | access | action |
//! |---|---|---|
//! | none | read | map the shared zero page read-only ([`anon`]), and more ahead if predicted ([`prefault`]) |
//! | none | write | map a zeroed private page ([`anon`]), and more ahead if predicted ([`prefault`]) |
//! | present, read-only | write | zero page: replace it; anon exclusive: make writable; shared: copy ([`wp`]) |
//! | present, allowing the access | any | nothing: another CPU won the race, or this CPU's TLB was stale |
//!
//! Every PTE change is a compare-and-swap against the value this handler
//! read; a lost race just returns, and the MMU retries the access.
//!
//! Enters with: no lock. Returns with: no lock.

pub mod anon;
pub mod file;
pub mod prefault;
pub mod wp;

use crate::addr::VirtAddr;
use crate::arch::load_entry;
use crate::mm::{Mm, MmState, TASK_SIZE};
use crate::pgtable::walk::translate;
use crate::pgtable::{pte_table_alloc, SlotError};
use crate::platform::CpuId;
use crate::stats::Stat;

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
}

/// A fault the handler cannot resolve: delivered to the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// No mapping, or the mapping forbids the access (`SIGSEGV`).
    Segv,
    /// The mapping exists but its backing does not (`SIGBUS`).
    Bus,
    /// No memory to back the page (the OOM path).
    Oom,
}

impl FaultError {
    /// The name op scripts print.
    pub const fn name(self) -> &'static str {
        match self {
            FaultError::Segv => "segv",
            FaultError::Bus => "bus",
            FaultError::Oom => "oom",
        }
    }
}

/// Resolve a fault at `va` on `cpu`.
///
/// Enters with: no lock; `cpu` is the CPU running `mm`. Returns with: no
/// lock. `Ok` means the access should be retried (it may fault again if
/// another CPU changed the mapping meanwhile).
pub fn handle_fault(mm: &Mm, cpu: CpuId, va: VirtAddr, access: Access) -> Result<(), FaultError> {
    fault(mm, cpu, va, access, true)
}

/// Why [`populate_page`] could not populate a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopulateError {
    /// No mapping at the address.
    Unmapped,
    /// The mapping does not allow the access.
    Access,
    /// The fault failed (`Bus`: the mapping cannot back the page; `Oom`).
    Fault(FaultError),
}

/// Fault in the page at `va` for `access` on the mm's own behalf —
/// `MAP_POPULATE`, `MAP_LOCKED`, `MADV_POPULATE_*` (Linux's
/// `get_user_pages` loop: look the page up, fault only if that fails, look
/// again).
///
/// The mapping is checked, the page looked up and the fault taken under
/// one hold of the mmap read lock, as Linux's GUP holds it, so a
/// concurrent munmap or mprotect is seen as a missing or inaccessible
/// mapping, never as a failed fault.
///
/// A page already mapped for the access is not faulted (nor counted in
/// `pgfault`); the walk sets its accessed bit, and its dirty bit for a
/// write, as Linux's lookup does. A fault taken here maps this page alone
/// and leaves the prefault predictor as it was: the caller asked for
/// exactly its range, and this is not the program's own access pattern.
///
/// Enters with: no lock. Returns with: no lock.
pub fn populate_page(mm: &Mm, cpu: CpuId, va: VirtAddr, access: Access) -> Result<(), PopulateError> {
    let sys = &**mm.sys();
    loop {
        let st = mm.read(cpu);
        if st.dead {
            return Err(PopulateError::Fault(FaultError::Segv));
        }
        let vma = st.vmas.find(va.as_u64()).ok_or(PopulateError::Unmapped)?;
        if !allows(vma, access) {
            return Err(PopulateError::Access);
        }
        // SAFETY: `mm.root()` is the root of a live mm (not dead, under
        // its mmap read lock), and tables are freed only under the write
        // lock, so every table the walk reaches stays allocated. (Should
        // tables ever be moved or freed under the read lock — seed 004's
        // relocatable page tables — this walk must run in an access window
        // instead, as the MMU's does.)
        if unsafe { translate(sys, mm.root(), va, access == Access::Write) }.is_ok() {
            return Ok(());
        }
        fault_under(mm, &st, cpu, va, access, false).map_err(PopulateError::Fault)?;
    }
}

fn fault(mm: &Mm, cpu: CpuId, va: VirtAddr, access: Access, prefault: bool) -> Result<(), FaultError> {
    let st = mm.read(cpu);
    let r = fault_under(mm, &st, cpu, va, access, prefault);
    // Only where no mapping was found (the rare path): an address below a
    // MAP_GROWSDOWN mapping grows it, under the write lock, and faults again
    // (Linux's `lock_mm_and_find_vma` → `expand_stack_locked`).
    if r == Err(FaultError::Segv) && st.vmas.find(va.as_u64()).is_none() && below_a_stack(&st, va) {
        drop(st);
        if mm.expand_stack(va) {
            // This entry is taken back: the fault after the growth is the
            // one that counts, once, as on Linux.
            let sys = &**mm.sys();
            sys.stats.add(cpu, Stat::PgFault, -1);
            sys.stats.add(cpu, Stat::FaultSegv, -1);
            return fault(mm, cpu, va, access, prefault);
        }
    }
    r
}

/// Whether `va` lies below a `MAP_GROWSDOWN` mapping (with no mapping at
/// `va` itself): a fault there may grow it.
fn below_a_stack(st: &MmState, va: VirtAddr) -> bool {
    va.as_u64() < TASK_SIZE
        && st.vmas.find_from(va.as_u64()).is_some_and(|v| v.flags & crate::mm::vma::vmflags::GROWSDOWN != 0)
}

/// The fault, counted, with the mmap read lock (`st`) held by the caller.
fn fault_under(
    mm: &Mm,
    st: &MmState,
    cpu: CpuId,
    va: VirtAddr,
    access: Access,
    prefault: bool,
) -> Result<(), FaultError> {
    let sys = &**mm.sys();
    sys.stats.inc(cpu, Stat::PgFault);
    let r = handle_locked(mm, st, cpu, va, access, prefault);
    match r {
        Err(FaultError::Segv) => sys.stats.inc(cpu, Stat::FaultSegv),
        Err(FaultError::Oom) => sys.stats.inc(cpu, Stat::FaultOom),
        _ => {}
    }
    r
}

/// Whether `vma` allows `access` (x86: write or exec implies read).
fn allows(vma: &crate::mm::vma::Vma, access: Access) -> bool {
    match access {
        Access::Read => vma.prot.readable(),
        Access::Write => vma.prot.writable(),
    }
}

/// Enters with: the mmap read lock (`st`).
fn handle_locked(
    mm: &Mm,
    st: &MmState,
    cpu: CpuId,
    va: VirtAddr,
    access: Access,
    prefault: bool,
) -> Result<(), FaultError> {
    if va.as_u64() >= TASK_SIZE {
        return Err(FaultError::Segv);
    }
    // An exited mm has no tables left to install into (exit sets `dead`
    // under the write lock, so this read is race-free).
    if st.dead {
        return Err(FaultError::Segv);
    }
    let vma = *st.vmas.find(va.as_u64()).ok_or(FaultError::Segv)?;
    if !allows(&vma, access) {
        return Err(FaultError::Segv);
    }
    let sys = &**mm.sys();
    let page = va.align_down(4096);
    let table = match pte_table_alloc(sys, cpu, mm.id(), mm.root(), page) {
        Ok(t) => t,
        Err(SlotError::Oom) => return Err(FaultError::Oom),
        // A huge leaf maps it: the walk will use it.
        Err(SlotError::Huge(_)) | Err(SlotError::Missing) => return Ok(()),
    };
    // SAFETY: `table` is a live PTE table while the mmap read lock is held
    // (tables are freed only under the write lock); the index is < 512.
    let slot = unsafe { sys.entry(table, page.table_index(1)) };
    let pte = load_entry(slot);
    if vma.file != 0 {
        let cache = st.files.get(&vma.file).ok_or(FaultError::Bus)?;
        if access == Access::Write && !vma.is_shared() {
            // A write to a private file mapping copies on write (at first
            // touch, or from a read-only file page) or reuses a private
            // page it already has: the mapping has private pages from now
            // on, even once they are gone (Linux sets the VMA's anon_vma
            // here, in `vmf_anon_prepare`, and keeps it).
            st.vmas.mark_private_pages(&vma);
        }
        if pte.is_none() {
            return file::do_file_page(mm, cpu, &vma, cache, page, table, access);
        }
        if pte.is_present() && access == Access::Write && !pte.is_writable() && vma.is_shared() {
            return file::do_shared_wp(mm, cpu, cache, slot, pte);
        }
    } else if pte.is_none() {
        return anon::do_anonymous_page(mm, cpu, &vma, page, table, access, prefault);
    }
    if pte.is_present() {
        if access == Access::Write && !pte.is_writable() {
            return wp::do_wp_page(mm, cpu, &vma, page, table, slot, pte);
        }
        sys.stats.inc(cpu, Stat::FaultRaceLost);
        return Ok(());
    }
    // PROT_NONE PTE under a VMA that allows the access: mprotect changes the
    // VMA and its PTEs under the write lock, so this cannot be seen here.
    Err(FaultError::Segv)
}
