//! The argument flags of mmap/mprotect/madvise, with Linux's values.
//!
//! Values are those of `<asm-generic/mman-common.h>` on x86-64 so a kernel
//! can pass user arguments straight through; unknown bits are rejected
//! where Linux rejects them (`EINVAL`).

/// `PROT_*` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Prot(pub u32);

impl Prot {
    /// No access.
    pub const NONE: Prot = Prot(0);
    /// Pages may be read.
    pub const READ: Prot = Prot(0x1);
    /// Pages may be written.
    pub const WRITE: Prot = Prot(0x2);
    /// Pages may be executed.
    pub const EXEC: Prot = Prot(0x4);
    /// Read and write.
    pub const RW: Prot = Prot(0x3);
    /// Every bit Linux accepts for mmap/mprotect (`PROT_GROWSDOWN`/`GROWSUP` aside).
    pub const ALL: u32 = 0x7;

    /// True if every bit of `other` is set in `self`.
    pub const fn contains(self, other: Prot) -> bool {
        self.0 & other.0 == other.0
    }
    /// Readable (on x86, write or exec implies read).
    pub const fn readable(self) -> bool {
        self.0 != 0
    }
    /// Writable.
    pub const fn writable(self) -> bool {
        self.0 & Self::WRITE.0 != 0
    }
    /// Executable.
    pub const fn executable(self) -> bool {
        self.0 & Self::EXEC.0 != 0
    }
}

/// `MAP_*` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MapFlags(pub u32);

impl MapFlags {
    /// Share changes.
    pub const SHARED: MapFlags = MapFlags(0x01);
    /// Changes are private (copy-on-write).
    pub const PRIVATE: MapFlags = MapFlags(0x02);
    /// `MAP_SHARED` with validation of every other flag.
    pub const SHARED_VALIDATE: MapFlags = MapFlags(0x03);
    /// Interpret the address exactly, replacing what is there.
    pub const FIXED: MapFlags = MapFlags(0x10);
    /// Not backed by a file.
    pub const ANONYMOUS: MapFlags = MapFlags(0x20);
    /// Stack-like segment (accepted, ignored as on Linux).
    pub const GROWSDOWN: MapFlags = MapFlags(0x0100);
    /// Ignored (historical).
    pub const DENYWRITE: MapFlags = MapFlags(0x0800);
    /// Ignored (historical).
    pub const EXECUTABLE: MapFlags = MapFlags(0x1000);
    /// Lock the pages (accepted; no reclaim exists yet, so every page stays resident).
    pub const LOCKED: MapFlags = MapFlags(0x2000);
    /// Do not reserve swap (accepted; no overcommit accounting).
    pub const NORESERVE: MapFlags = MapFlags(0x4000);
    /// Prefault the mapping.
    pub const POPULATE: MapFlags = MapFlags(0x8000);
    /// Do not block on I/O (accepted, ignored as on Linux).
    pub const NONBLOCK: MapFlags = MapFlags(0x10000);
    /// Stack (accepted, ignored).
    pub const STACK: MapFlags = MapFlags(0x20000);
    /// Huge pages from hugetlbfs (not supported).
    pub const HUGETLB: MapFlags = MapFlags(0x40000);
    /// Synchronous page faults (only valid with `MAP_SHARED_VALIDATE` on DAX).
    pub const SYNC: MapFlags = MapFlags(0x80000);
    /// Like `MAP_FIXED` but fail with `EEXIST` rather than replace.
    pub const FIXED_NOREPLACE: MapFlags = MapFlags(0x100000);
    /// `MAP_DROPPABLE` (a sharing type, anonymous only): private memory the
    /// kernel may drop under pressure; not inherited by fork.
    pub const DROPPABLE: MapFlags = MapFlags(0x08);
    /// `MAP_UNINITIALIZED` (ignored without `CONFIG_MMAP_ALLOW_UNINITIALIZED`).
    pub const UNINITIALIZED: MapFlags = MapFlags(0x0400_0000);
    /// The mask of the sharing type.
    pub const TYPE_MASK: u32 = 0x0f;

    /// True if every bit of `other` is set in `self`.
    pub const fn contains(self, other: MapFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// The bitwise union.
    pub const fn union(self, other: MapFlags) -> MapFlags {
        MapFlags(self.0 | other.0)
    }
}

/// `MADV_*` advice values (every value Linux 6.18's `madvise_behavior_valid`
/// accepts, except the memory-failure and guard-region ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Advice {
    /// No special treatment.
    Normal = 0,
    /// Expect random page references (turns prefault off).
    Random = 1,
    /// Expect sequential page references.
    Sequential = 2,
    /// Will need these pages.
    WillNeed = 3,
    /// Don't need these pages: private anonymous pages read back as zeroes.
    DontNeed = 4,
    /// Free lazily (no reclaim yet: the pages simply stay).
    Free = 8,
    /// Punch a hole in the backing store (only for shared file/shmem).
    Remove = 9,
    /// Do not inherit across fork.
    DontFork = 10,
    /// Inherit across fork (undoes `DontFork`).
    DoFork = 11,
    /// KSM may merge these pages (accepted; no KSM).
    Mergeable = 12,
    /// KSM may not merge these pages.
    Unmergeable = 13,
    /// Worth backing with transparent huge pages.
    HugePage = 14,
    /// Not worth backing with transparent huge pages.
    NoHugePage = 15,
    /// Leave out of core dumps.
    DontDump = 16,
    /// Include in core dumps.
    DoDump = 17,
    /// The child of a fork sees zeroes here.
    WipeOnFork = 18,
    /// Undo `WipeOnFork`.
    KeepOnFork = 19,
    /// Deactivate these pages.
    Cold = 20,
    /// Reclaim these pages.
    PageOut = 21,
    /// Fault the pages in for reading.
    PopulateRead = 22,
    /// Fault the pages in for writing.
    PopulateWrite = 23,
    /// `DontNeed` that also applies to locked mappings.
    DontNeedLocked = 24,
    /// Collapse into transparent huge pages (no THP yet: nothing to do).
    Collapse = 25,
}

impl Advice {
    /// The advice for a raw Linux value, or `None` if oxmm does not know it
    /// (the call then fails with `EINVAL`, as Linux does for unknown advice).
    pub const fn from_raw(raw: u32) -> Option<Advice> {
        Some(match raw {
            0 => Advice::Normal,
            1 => Advice::Random,
            2 => Advice::Sequential,
            3 => Advice::WillNeed,
            4 => Advice::DontNeed,
            8 => Advice::Free,
            9 => Advice::Remove,
            10 => Advice::DontFork,
            11 => Advice::DoFork,
            12 => Advice::Mergeable,
            13 => Advice::Unmergeable,
            14 => Advice::HugePage,
            15 => Advice::NoHugePage,
            16 => Advice::DontDump,
            17 => Advice::DoDump,
            18 => Advice::WipeOnFork,
            19 => Advice::KeepOnFork,
            20 => Advice::Cold,
            21 => Advice::PageOut,
            22 => Advice::PopulateRead,
            23 => Advice::PopulateWrite,
            24 => Advice::DontNeedLocked,
            25 => Advice::Collapse,
            _ => return None,
        })
    }
}

/// `MREMAP_*` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RemapFlags(pub u32);

impl RemapFlags {
    /// The mapping may move.
    pub const MAYMOVE: RemapFlags = RemapFlags(1);
    /// Move to the given address.
    pub const FIXED: RemapFlags = RemapFlags(2);
}
