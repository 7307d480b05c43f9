//! A test double for the platform seam: frame memory from the heap, a TLB
//! flush that only counts, and a frame source that fails the test on a
//! leaked or double-freed frame (arceos `tests/alloc_tests.rs` style).
#![allow(dead_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use oxmm::platform::{CpuId, FlushRequest, Platform};
use oxmm::system::{System, SystemConfig};

/// Frame memory on the heap; flushes recorded.
pub struct TestPlatform {
    mem: *mut u8,
    layout: Layout,
    frames: u64,
    cpus: usize,
    pub flushes: AtomicU64,
    pub last_flush: Mutex<Option<FlushRequest>>,
}

// SAFETY: `mem` is owned by the platform and only handed out as the direct
// map; the core accesses it atomically or through frames it owns.
unsafe impl Send for TestPlatform {}
// SAFETY: as for Send; the rest is atomics and a mutex.
unsafe impl Sync for TestPlatform {}

impl TestPlatform {
    pub fn new(frames: u64, cpus: usize) -> Arc<TestPlatform> {
        let layout = Layout::from_size_align((frames * 4096) as usize, 4096).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let mem = unsafe { alloc_zeroed(layout) };
        assert!(!mem.is_null(), "test memory");
        Arc::new(TestPlatform { mem, layout, frames, cpus, flushes: AtomicU64::new(0), last_flush: Mutex::new(None) })
    }
}

impl Drop for TestPlatform {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.mem, self.layout) }
    }
}

// SAFETY: the direct map is `frames * 4096` bytes owned by the platform for
// its whole life; there are no real CPUs caching translations, so an
// immediate return meets the flush guarantee.
unsafe impl Platform for TestPlatform {
    fn direct_map(&self) -> (*mut u8, u64) {
        (self.mem, self.frames)
    }
    fn cpus(&self) -> usize {
        self.cpus
    }
    fn flush_tlb(&self, req: &FlushRequest) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        *self.last_flush.lock().unwrap() = Some(*req);
    }
    fn now_ns(&self) -> u64 {
        0
    }
}

/// A system over the test double; dropping it fails the test if a frame
/// leaked (free count not back at boot once every mm is gone) or was freed
/// twice.
pub struct Harness {
    pub platform: Arc<TestPlatform>,
    pub sys: Arc<System>,
}

pub const CPU0: CpuId = CpuId(0);

impl Harness {
    pub fn new(frames: u64) -> Harness {
        let platform = TestPlatform::new(frames, 2);
        let sys = System::new(platform.clone(), SystemConfig::default()).expect("boot");
        Harness { platform, sys }
    }

    /// What is wrong with the frame accounting now, if anything.
    pub fn leak_report(&self) -> Option<String> {
        let phys = &self.sys.phys;
        if phys.bad_frees() != 0 {
            return Some(format!("{} frame(s) freed twice", phys.bad_frees()));
        }
        let live = self.sys.mms().into_iter().filter(|m| !m.is_dead()).count();
        let want = phys.boot_free() - 1; // the zero page
        if live == 0 && phys.free_frames() != want {
            return Some(format!("{} frame(s) leaked", want as i64 - phys.free_frames() as i64));
        }
        None
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Err(e) = oxmm::check::check(&self.sys) {
            panic!("invariant checker: {e}");
        }
        if let Some(r) = self.leak_report() {
            panic!("frame source: {r}");
        }
    }
}
