//! Test helpers: a small machine, and the invariant checker run at the end
//! of every test (the `Rig` runs it when dropped, unless the test panicked).
#![allow(dead_code)]

use std::sync::Arc;

use oxmm::addr::VirtAddr;
use oxmm::mm::{MapFlags, Prot};
use oxmm_host::{Cpu, Machine, MachineConfig, Process};

pub const PAGE: u64 = 4096;

pub struct Rig {
    pub machine: Arc<Machine>,
    pub cpu: Cpu,
    pub proc: Process,
}

impl Rig {
    #[track_caller]
    pub fn new() -> Rig {
        Rig::with(MachineConfig {
            mem_bytes: 64 << 20,
            nodes: 1,
            cpus: 4,
            movable_percent: 75,
            ..MachineConfig::default()
        })
    }

    #[track_caller]
    pub fn with(cfg: MachineConfig) -> Rig {
        let machine = Machine::new(cfg).expect("machine boots");
        let mut cpu = machine.cpu(0).expect("cpu 0");
        let proc = machine.new_process(&cpu).expect("process");
        cpu.switch_to(&proc);
        Rig { machine, cpu, proc }
    }

    #[track_caller]
    pub fn map(&mut self, len: u64, prot: Prot) -> VirtAddr {
        self.cpu.mmap(0, len, prot, MapFlags::PRIVATE.union(MapFlags::ANONYMOUS)).expect("mmap")
    }

    pub fn rss_anon(&self) -> u64 {
        self.proc.rss().anon
    }

    #[track_caller]
    pub fn check(&self) {
        if let Err(e) = self.machine.check() {
            panic!("invariant checker: {e}");
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        self.check();
        let p = self.proc.clone();
        self.cpu.exit_process(p);
        let leftovers: Vec<u64> =
            self.machine.sys().mms().into_iter().filter(|m| !m.is_dead()).map(|m| m.id()).collect();
        // A test exits every process it made, so that the leak check below
        // runs (it can only run with every mm gone).
        assert!(leftovers.is_empty(), "mms {leftovers:?} outlive the rig: exit them so the leak check can run");
        // Every mm has exited: free frames must be back at boot count.
        if let Err(e) = self.machine.check() {
            panic!("invariant checker after exit: {e}");
        }
        let mi = self.machine.meminfo();
        assert_eq!(mi.page_tables, 0, "page tables leaked after exit");
        assert_eq!(mi.anon, 0, "anonymous pages leaked after exit");
    }
}

pub fn va(a: u64) -> VirtAddr {
    VirtAddr::new_truncate(a)
}

// ---- helpers added for the foundation tests (anon_fault, errno, mprotect,
// madvise, pgtable, oom, concurrency, tlb) ---------------------------------

/// `MAP_PRIVATE | MAP_ANONYMOUS`.
pub const ANON: MapFlags = MapFlags(MapFlags::PRIVATE.0 | MapFlags::ANONYMOUS.0);

impl Rig {
    /// A vmstat counter by name (panics on an unknown name).
    #[track_caller]
    pub fn stat(&self, name: &str) -> i64 {
        self.machine.vmstat().get(name).unwrap_or_else(|| panic!("no vmstat counter {name:?}"))
    }

    /// Assert that a read of `a` faults with SEGV exactly at `a`.
    #[track_caller]
    pub fn assert_read_segv(&mut self, a: VirtAddr) {
        assert_eq!(
            self.cpu.read_u8(a),
            Err(oxmm_host::Fault { kind: oxmm::fault::FaultError::Segv, addr: a }),
            "read of {a:?}"
        );
    }

    /// Assert that a write to `a` faults with SEGV exactly at `a`.
    #[track_caller]
    pub fn assert_write_segv(&mut self, a: VirtAddr) {
        assert_eq!(
            self.cpu.write_u8(a, 0xee),
            Err(oxmm_host::Fault { kind: oxmm::fault::FaultError::Segv, addr: a }),
            "write of {a:?}"
        );
    }
}

type Job = Box<dyn FnOnce(&mut Cpu) + Send>;

/// Another CPU of the machine, run by its own thread, switched to a
/// process. [`Remote::run`] executes a closure on it and waits for the
/// result, so tests sequence CPUs deterministically. Between jobs the
/// thread is blocked outside any access window (as an idle CPU is).
pub struct Remote {
    tx: Option<std::sync::mpsc::Sender<Job>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Remote {
    /// Take CPU `i` of `machine` on a new thread and switch it to `p`.
    #[track_caller]
    pub fn new(machine: &Arc<Machine>, i: usize, p: &Process) -> Remote {
        let mut cpu = machine.cpu(i).expect("remote cpu");
        let p = p.clone();
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let handle = std::thread::spawn(move || {
            cpu.switch_to(&p);
            drop(p);
            for job in rx {
                job(&mut cpu);
            }
        });
        Remote { tx: Some(tx), handle: Some(handle) }
    }

    /// Run `f` on the remote CPU and return its result.
    #[track_caller]
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce(&mut Cpu) -> R + Send + 'static) -> R {
        let (rtx, rrx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .as_ref()
            .expect("remote alive")
            .send(Box::new(move |cpu| {
                let _ = rtx.send(f(cpu));
            }))
            .expect("remote CPU thread is gone");
        rrx.recv().expect("remote CPU thread panicked")
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            if h.join().is_err() && !std::thread::panicking() {
                panic!("remote CPU thread panicked");
            }
        }
    }
}

// ---- helpers added for the prefault / scalable-fault tests ----------------

impl Rig {
    /// A rig whose process keeps its RSS counters in `mode`.
    #[track_caller]
    pub fn with_rss(cfg: MachineConfig, mode: oxmm::system::RssMode) -> Rig {
        let machine = Machine::new(cfg).expect("machine boots");
        let mut cpu = machine.cpu(0).expect("cpu 0");
        let proc = machine.new_process_with_rss(&cpu, mode).expect("process");
        cpu.switch_to(&proc);
        Rig { machine, cpu, proc }
    }

    /// `mmap(addr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)`.
    #[track_caller]
    pub fn map_fixed(&mut self, addr: u64, len: u64, prot: Prot) -> VirtAddr {
        let a = self.cpu.mmap(addr, len, prot, ANON.union(MapFlags::FIXED)).expect("mmap fixed");
        assert_eq!(a.as_u64(), addr);
        a
    }

    /// The PTE mapping `a` in the rig's process (`Pte::NONE` when no PTE
    /// table covers it), read under the mmap read lock.
    pub fn pte(&self, a: VirtAddr) -> oxmm::arch::Pte {
        self.proc.mm().pte(self.cpu.id(), a).unwrap_or(oxmm::arch::Pte::NONE)
    }

    /// `mincore` of `pages` pages from `a`.
    #[track_caller]
    pub fn resident(&mut self, a: VirtAddr, pages: u64) -> Vec<u8> {
        self.cpu.mincore(a.as_u64(), pages * PAGE).expect("mincore")
    }
}

// ---- helpers added for the reverse-map, COW and mremap tests --------------

impl Rig {
    /// A 64 MiB, 4-CPU rig running reverse-map scheme `scheme`.
    #[track_caller]
    pub fn with_rmap(scheme: oxmm::rmap::RmapScheme) -> Rig {
        Rig::with(MachineConfig { mem_bytes: 64 << 20, nodes: 1, cpus: 4, movable_percent: 75, rmap: scheme })
    }

    /// The frame `p` maps at `a` (panics if no present PTE maps a frame).
    #[track_caller]
    pub fn pfn_of(&self, p: &Process, a: VirtAddr) -> oxmm::addr::Pfn {
        let pte = p.mm().pte(self.cpu.id(), a).unwrap_or(oxmm::arch::Pte::NONE);
        assert!(pte.maps_frame(), "no frame mapped at {a:?} in mm {}: {pte:?}", p.mm().id());
        pte.pfn()
    }

    /// `oxmm::rmap::mappings` of `pfn` as sorted (mm id, address) pairs.
    #[track_caller]
    pub fn rmap_of(&self, pfn: oxmm::addr::Pfn) -> Vec<(u64, u64)> {
        let maps = oxmm::rmap::mappings(self.machine.sys(), self.cpu.id(), pfn).expect("rmap::mappings");
        let mut v: Vec<(u64, u64)> = maps.iter().map(|m| (m.mm, m.va.as_u64())).collect();
        v.sort_unstable();
        v
    }

    /// The frame's mapcount.
    pub fn mapcount_of(&self, pfn: oxmm::addr::Pfn) -> i32 {
        self.machine.sys().phys.frame(pfn).mapcount()
    }
}

/// Sorted (mm id, address) pairs for processes `ps` all mapping at `a`.
pub fn at(ps: &[&Process], a: VirtAddr) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ps.iter().map(|p| (p.mm().id(), a.as_u64())).collect();
    v.sort_unstable();
    v
}

/// A file of `pages` zero pages kept in memory, opened for writing or not.
pub struct ZeroFile {
    pub pages: u64,
    pub writable: bool,
}

impl oxmm::pagecache::FileSource for ZeroFile {
    fn size(&self) -> u64 {
        self.pages * PAGE
    }
    fn writable(&self) -> bool {
        self.writable
    }
    fn read_page(&self, _index: u64, buf: &mut [u8]) -> oxmm::errno::SysResult<()> {
        buf.fill(0);
        Ok(())
    }
    fn write_page(&self, _index: u64, _buf: &[u8]) -> oxmm::errno::SysResult<()> {
        if self.writable {
            Ok(())
        } else {
            Err(oxmm::errno::Errno::EBADF)
        }
    }
}

impl Rig {
    /// The page cache of a [`ZeroFile`] of `pages` pages.
    pub fn zero_file(&self, pages: u64, writable: bool) -> Arc<oxmm::pagecache::PageCache> {
        self.machine.sys().open_file(Arc::new(ZeroFile { pages, writable }))
    }
}
