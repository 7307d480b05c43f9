//! Host files as the core's [`FileSource`]: the page cache reads and writes
//! them with positioned I/O.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use oxmm::errno::{Errno, SysResult};
use oxmm::pagecache::FileSource;

/// An open host file.
pub struct HostFile {
    file: File,
    writable: bool,
}

impl HostFile {
    /// Open `path` read-write if possible, else read-only (as a program
    /// opening a file to map it would: `O_RDWR`, falling back to
    /// `O_RDONLY`).
    pub fn open(path: &Path) -> std::io::Result<HostFile> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Ok(HostFile { file, writable: true }),
            Err(_) => Ok(HostFile { file: File::open(path)?, writable: false }),
        }
    }
}

fn errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().and_then(Errno::from_raw).unwrap_or(Errno::EIO)
}

impl FileSource for HostFile {
    fn size(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn writable(&self) -> bool {
        self.writable
    }

    fn read_page(&self, index: u64, buf: &mut [u8]) -> SysResult<()> {
        buf.fill(0);
        let off = index * 4096;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(errno(&e)),
            }
        }
        Ok(())
    }

    fn write_page(&self, index: u64, buf: &[u8]) -> SysResult<()> {
        if !self.writable {
            return Err(Errno::EBADF);
        }
        // Never extend the file: only the part of the page inside it.
        let off = index * 4096;
        let size = self.size();
        if off >= size {
            return Ok(());
        }
        let n = ((size - off) as usize).min(buf.len());
        self.file.write_all_at(&buf[..n], off).map_err(|e| errno(&e))
    }
}
