//! Linux errno values returned by the syscall-like calls of [`crate::mm`].
//!
//! Every call that takes user input answers bad input with the errno Linux
//! gives for it, never with a panic. The numeric values are Linux's (x86-64
//! generic table) so that a kernel adopting oxmm can hand them to user space
//! unchanged, and the names are what op scripts print.

use core::fmt;

/// A Linux error number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Errno {
    /// Operation not permitted.
    EPERM = 1,
    /// Out of memory, or an address range that is not mapped.
    ENOMEM = 12,
    /// Permission denied.
    EACCES = 13,
    /// Input/output error.
    EIO = 5,
    /// Bad file descriptor.
    EBADF = 9,
    /// Bad address.
    EFAULT = 14,
    /// Device or resource busy.
    EBUSY = 16,
    /// File exists (`MAP_FIXED_NOREPLACE` over an existing mapping).
    EEXIST = 17,
    /// No such device (mapping something that cannot be mapped).
    ENODEV = 19,
    /// Invalid argument.
    EINVAL = 22,
    /// Too many open files / mappings.
    EMFILE = 24,
    /// Value too large (a file mapping past the largest file offset).
    EOVERFLOW = 75,
    /// Operation not supported.
    EOPNOTSUPP = 95,
    /// Try again.
    EAGAIN = 11,
    /// Function not implemented.
    ENOSYS = 38,
}

impl Errno {
    /// The symbolic name, as `strerrorname_np(3)` gives it (`"EINVAL"`).
    pub const fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ENOMEM => "ENOMEM",
            Errno::EACCES => "EACCES",
            Errno::EIO => "EIO",
            Errno::EBADF => "EBADF",
            Errno::EFAULT => "EFAULT",
            Errno::EBUSY => "EBUSY",
            Errno::EEXIST => "EEXIST",
            Errno::ENODEV => "ENODEV",
            Errno::EINVAL => "EINVAL",
            Errno::EMFILE => "EMFILE",
            Errno::EOVERFLOW => "EOVERFLOW",
            Errno::EOPNOTSUPP => "EOPNOTSUPP",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOSYS => "ENOSYS",
        }
    }

    /// The errno for a raw Linux error number, if oxmm's calls can return it.
    pub const fn from_raw(raw: i32) -> Option<Errno> {
        Some(match raw {
            1 => Errno::EPERM,
            5 => Errno::EIO,
            9 => Errno::EBADF,
            11 => Errno::EAGAIN,
            12 => Errno::ENOMEM,
            13 => Errno::EACCES,
            14 => Errno::EFAULT,
            16 => Errno::EBUSY,
            17 => Errno::EEXIST,
            19 => Errno::ENODEV,
            22 => Errno::EINVAL,
            24 => Errno::EMFILE,
            38 => Errno::ENOSYS,
            75 => Errno::EOVERFLOW,
            95 => Errno::EOPNOTSUPP,
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of a syscall-like call.
pub type SysResult<T> = Result<T, Errno>;
