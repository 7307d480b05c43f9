//! The zero-fill limit of this machine: 4 KiB `memset` pages per second,
//! on one core and on several (each thread its own buffer), so fault
//! throughput can be read as a fraction of it.
//!
//! An anonymous fault that maps a fresh page must at least zero it; the
//! fastest a fault path can possibly go is the rate at which a core clears
//! 4 KiB pages of memory that is not in any cache. The buffers are larger
//! than the caches (1 GiB per thread by default), pre-touched (so the host
//! kernel's faults are not in the figure) and mapped like the hosted
//! machine's arena (transparent huge pages requested, then collapsed where
//! the first touch got 4 KiB pages: [`oxmm_host::arena::back_with_huge_pages`]),
//! so the memsets see the same memory the hosted machine's fault path
//! zeroes; the report gives the share of the buffers in huge pages, and the
//! oxmm targets give the arena's. Each thread
//! clears its buffer once, 4 KiB chunk by chunk (`slice::fill(0)`, then
//! `black_box`), and the rate is pages over the wall time from the common
//! start to the last thread's end.

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::Instant;

use anyhow::{bail, Context as _};
use memmap2::{MmapMut, MmapOptions};
use serde::Serialize;

use super::faults::median_f64;

/// The chunk each `fill` clears: one base page.
pub const CHUNK: usize = 4096;

/// Pre-touched buffers, one per thread.
pub struct ZeroFill {
    buffers: Vec<MmapMut>,
}

impl ZeroFill {
    /// `threads` buffers of `bytes` bytes each (whole chunks), touched.
    pub fn new(threads: usize, bytes: u64) -> anyhow::Result<ZeroFill> {
        let len = usize::try_from(bytes).context("buffer size")? / CHUNK * CHUNK;
        if len == 0 || threads == 0 {
            bail!("zero-fill needs at least one thread and one {CHUNK}-byte chunk");
        }
        let buffers = (0..threads)
            .map(|_| {
                let mut map = MmapOptions::new().len(len).map_anon().context("mapping a zero-fill buffer")?;
                #[cfg(target_os = "linux")]
                {
                    // Best effort, as for the arena: THP may be off.
                    let _ = map.advise(memmap2::Advice::HugePage);
                }
                map.fill(1);
                oxmm_host::arena::back_with_huge_pages(&mut map);
                Ok(map)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(ZeroFill { buffers })
    }

    /// The smallest share of any buffer that the host backs with huge
    /// pages (`None` if the host cannot say).
    pub fn huge_page_share(&self) -> Option<f64> {
        self.buffers
            .iter()
            .map(|b| oxmm_host::arena::huge_page_share(b.as_ptr(), b.len()))
            .try_fold(1.0f64, |m, s| Some(m.min(s?)))
    }

    /// Pages per thread.
    pub fn pages_per_thread(&self) -> u64 {
        (self.buffers[0].len() / CHUNK) as u64
    }

    /// One measurement with `threads` threads (at most the number of
    /// buffers): pages cleared per wall second, over all threads.
    pub fn measure(&mut self, threads: usize) -> anyhow::Result<f64> {
        if threads == 0 || threads > self.buffers.len() {
            bail!("zero-fill with {threads} threads, but {} buffers", self.buffers.len());
        }
        let barrier = Barrier::new(threads);
        let spans: Vec<(Instant, Instant)> = thread::scope(|s| {
            let handles: Vec<_> = self.buffers[..threads]
                .iter_mut()
                .map(|buf| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let start = Instant::now();
                        fill_pages(buf);
                        (start, Instant::now())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect::<Result<_, _>>()
        })
        .map_err(|_| anyhow::anyhow!("a zero-fill thread panicked"))?;
        let start = spans.iter().map(|s| s.0).min().context("no spans")?;
        let end = spans.iter().map(|s| s.1).max().context("no spans")?;
        let secs = end.saturating_duration_since(start).as_secs_f64();
        if secs <= 0.0 {
            bail!("zero-fill took no time");
        }
        Ok((self.pages_per_thread() * threads as u64) as f64 / secs)
    }
}

/// Clear `buf` one 4 KiB chunk at a time.
fn fill_pages(buf: &mut [u8]) {
    for chunk in buf.chunks_exact_mut(CHUNK) {
        chunk.fill(0);
        black_box(chunk);
    }
}

/// The zero-fill limit with one thread count.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ZeroFillLimit {
    /// Threads, each clearing its own buffer.
    pub threads: usize,
    /// Median pages per wall second, over all threads.
    pub pages_per_s: f64,
    /// The same in bytes per second.
    pub bytes_per_s: f64,
    /// One value per round of the benchmark, in order (`bench faults`: the
    /// higher of the measurements at the two ends of the round).
    pub runs: Vec<f64>,
}

/// The zero-fill limits of a benchmark run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ZeroFillReport {
    /// Buffer per thread, MiB.
    pub mib_per_thread: u64,
    /// Bytes per memset.
    pub chunk: usize,
    /// Whether huge pages were asked for the buffers (as for the arena).
    pub huge_pages_requested: bool,
    /// The smallest share of a buffer the host backed with huge pages, at
    /// the end of the run (`null` if the host cannot say). Clears of 4 KiB
    /// host pages are slower, so a share below the arena's understates the
    /// limit.
    pub huge_page_share: Option<f64>,
    /// One per thread count, ascending.
    pub limits: Vec<ZeroFillLimit>,
}

/// The report from the measurements `(threads, runs)` over buffers of
/// which at least `huge_page_share` was in huge pages; counts without runs
/// are dropped.
pub fn report(
    mib_per_thread: u64,
    huge_page_share: Option<f64>,
    mut measured: Vec<(usize, Vec<f64>)>,
) -> ZeroFillReport {
    measured.sort_by_key(|m| m.0);
    let limits = measured
        .into_iter()
        .filter(|(_, runs)| !runs.is_empty())
        .map(|(threads, runs)| {
            let pages_per_s = median_f64(&runs);
            ZeroFillLimit { threads, pages_per_s, bytes_per_s: pages_per_s * CHUNK as f64, runs }
        })
        .collect();
    ZeroFillReport {
        mib_per_thread,
        chunk: CHUNK,
        huge_pages_requested: cfg!(target_os = "linux"),
        huge_page_share,
        limits,
    }
}

impl ZeroFillReport {
    /// The limit a row with `threads` threads is compared with: that of the
    /// largest measured thread count not above `threads`. (A row with more
    /// threads than cores is capped by the cores: compare it with the most
    /// threads measured.)
    pub fn limit_for(&self, threads: usize) -> Option<&ZeroFillLimit> {
        self.limits.iter().filter(|l| l.threads <= threads).max_by_key(|l| l.threads)
    }

    /// The limit measured with exactly `threads` threads, pages/s.
    pub fn pages_per_s(&self, threads: usize) -> Option<f64> {
        self.limits.iter().find(|l| l.threads == threads).map(|l| l.pages_per_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_takes_medians_and_picks_limits() {
        let r = report(1024, Some(0.5), vec![(2, vec![5.0, 3.0, 4.0]), (1, vec![2.0, 1.0]), (4, vec![])]);
        assert_eq!(r.limits.iter().map(|l| l.threads).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(r.limits[0].pages_per_s, 1.5);
        assert_eq!(r.huge_page_share, Some(0.5));
        assert_eq!(r.limits[1].pages_per_s, 4.0);
        assert_eq!(r.limits[1].bytes_per_s, 4.0 * 4096.0);
        let limit = |t| r.limit_for(t).map(|l| (l.threads, l.pages_per_s));
        assert_eq!(limit(1), Some((1, 1.5)));
        assert_eq!(limit(2), Some((2, 4.0)));
        assert_eq!(limit(4), Some((2, 4.0)), "capped by the most threads measured");
        assert_eq!(limit(0), None);
        assert_eq!(r.pages_per_s(2), Some(4.0));
        assert_eq!(r.pages_per_s(4), None);
        let only_two = report(1, None, vec![(2, vec![1.0])]);
        assert!(only_two.limit_for(1).is_none());
    }

    #[test]
    fn measure_clears_pages() {
        let mut zf = ZeroFill::new(2, 64 * 4096 + 100).unwrap();
        assert_eq!(zf.pages_per_thread(), 64);
        assert!(zf.buffers.iter().all(|b| b.iter().all(|&x| x == 1)), "pre-touched with ones, kept by the collapse");
        #[cfg(target_os = "linux")]
        assert!(zf.huge_page_share().is_some_and(|s| (0.0..=1.0).contains(&s)));
        assert!(zf.measure(1).unwrap() > 0.0);
        assert!(zf.buffers[0].iter().all(|&x| x == 0));
        assert!(zf.buffers[1].iter().all(|&x| x == 1), "one thread clears one buffer");
        assert!(zf.measure(2).unwrap() > 0.0);
        assert!(zf.buffers[1].iter().all(|&x| x == 0));
        assert!(zf.measure(3).is_err());
        assert!(zf.measure(0).is_err());
        assert!(ZeroFill::new(1, 100).is_err());
    }
}
