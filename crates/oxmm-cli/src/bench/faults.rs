//! `oxmm bench faults`: anonymous first-touch fault throughput, the hosted
//! machine against the host kernel (the seed-003 table).
//!
//! # The pattern
//!
//! For each row shape (`gb`, `threads`, `reps`, `order`), N worker threads
//! each own a slice of `gb GiB / N` (rounded down to whole pages), and, R
//! times over:
//!
//! ```text
//!   gate ─ map slice ─ gate ─ [touch: one byte store per page] ─ gate ─ unmap
//!                             ^ start                        ^ last end
//! ```
//!
//! Only the touch phase counts: every store is the first touch of a
//! private anonymous page, so (without prefault) every store is one fault.
//! `Wall` is, summed over the R reps, the time from the common start (the
//! earliest thread out of the gate) to the last thread's end; `User` and
//! `System` are each thread's `getrusage(RUSAGE_THREAD)` over its own touch
//! phase, summed over threads and reps. Map and unmap are timed the same way
//! but reported apart. With P = pages touched over all threads and reps:
//! `flt/cpu/s = P / (User + System)` and `fault/wsec = P / Wall`, as in the
//! seed's table (which counts faults the same way: pages × reps).
//!
//! # Runs, medians, ratios
//!
//! A row is measured `--runs` times; runs of the two targets alternate
//! (oxmm run 0, kernel run 0, oxmm run 1, …) so slow drift of the host
//! (frequency, other load) hits both alike. The reported row is the median
//! run, taken so that the row still adds up: `Wall` is the median wall,
//! `User`/`System` are those of the run with the median CPU time (the mean
//! of the two middle runs for an even count), and the rates are computed
//! from those times — which, for an odd number of runs, equals the median of
//! the per-run rates. The ratio line divides the first target's median rates
//! by the second's, row shape by row shape.
//!
//! # Targets
//!
//! A [`FaultTarget`] makes per-thread [`FaultThread`]s, each of which can
//! map, touch and unmap. `thread()` is called *on the worker thread that
//! will use the result* (before the first gate of a run), so a target may
//! bind it to the OS thread — the hosted machine binds a CPU — and the
//! thread state need not be `Send`. That, and borrowing the target for the
//! run, is why `Thread` is a generic associated type rather than a boxed
//! object.
//!
//! Adding a column: add a field to [`Figures`] (filled in
//! [`aggregate_run`], reduced in [`median_figures`]) and a [`Column`] in
//! [`target_columns`]; event counts need no code at all, a target just
//! returns them from [`FaultTarget::counters`] and each becomes a column
//! and a JSON field.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use oxmm_host::native::faults::{thread_rusage, Rusage};
use serde::{Serialize, Serializer};

const GIB: f64 = (1u64 << 30) as f64;

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// Order in which each thread touches the pages of its slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Ascending addresses (what fault prediction, seed 003, feeds on).
    Seq,
    /// A fixed pseudo-random permutation per (thread, run), the same for
    /// both targets.
    Random,
}

/// Options of `oxmm bench faults`.
#[derive(clap::Args, Clone, Debug)]
pub struct FaultsArgs {
    /// GiB of anonymous memory per row, split between the threads; a
    /// comma-separated list gives one row per size (e.g. `1,4`).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub gb: Vec<f64>,
    /// Thread counts, comma-separated (e.g. `1,2,4,8`): one row each.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// Map/touch/unmap repetitions within one run.
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    /// Runs per row; the median run is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Page touch order within each thread's slice.
    #[arg(long, value_enum, default_value_t = Order::Seq)]
    pub order: Order,
    /// Print one JSON document (all rows, runs, medians, ratios).
    #[arg(long)]
    pub json: bool,
    /// No progress bar (there is none anyway unless stderr is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

impl Default for FaultsArgs {
    fn default() -> Self {
        FaultsArgs {
            gb: vec![1.0],
            threads: vec![1],
            reps: 3,
            runs: 5,
            order: Order::Seq,
            json: false,
            no_progress: false,
        }
    }
}

impl FaultsArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.gb.is_empty() || self.threads.is_empty() {
            bail!("--gb and --threads need at least one value");
        }
        if let Some(gb) = self.gb.iter().find(|g| !(g.is_finite() && **g > 0.0)) {
            bail!("--gb {gb}: must be a positive size");
        }
        if self.threads.contains(&0) {
            bail!("--threads: counts must be at least 1");
        }
        if self.reps == 0 || self.runs == 0 {
            bail!("--reps and --runs must be at least 1");
        }
        Ok(())
    }

    /// Row shapes in output order: by size, then thread count.
    fn shapes(&self) -> Vec<Shape> {
        let mut shapes = Vec::new();
        for &gb in &self.gb {
            for &threads in &self.threads {
                shapes.push(Shape { gb, reps: self.reps, threads, order: self.order });
            }
        }
        shapes
    }
}

// ---------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------

/// One benchmark target: the host kernel, or the hosted oxmm machine.
pub trait FaultTarget: Sync {
    /// Per-thread state (for oxmm: a CPU handle bound to the process).
    type Thread<'a>: FaultThread
    where
        Self: 'a;

    /// Name in tables and JSON (`oxmm`, `kernel`).
    fn name(&self) -> &str;

    /// Bytes per page: the touch stride, and the unit faults are counted
    /// in.
    fn page_size(&self) -> u64 {
        4096
    }

    /// State for worker `index` of a run, called on that worker's own
    /// thread before the run's first gate (so not timed), once per run.
    fn thread(&self, index: usize) -> anyhow::Result<Self::Thread<'_>>;

    /// Event counters, read on the harness thread before and after each
    /// run; their deltas are reported per row (e.g. fault-handler entries,
    /// pages prefaulted). May be empty.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// What one worker thread does to its slice.
pub trait FaultThread {
    /// Map `len` bytes of private anonymous read-write memory, untouched;
    /// returns its address.
    fn map(&mut self, len: u64) -> anyhow::Result<u64>;

    /// Write one byte to each page of `[addr, addr + len)`. `order` lists
    /// page indices (relative to `addr`) in touch order; empty means every
    /// page, ascending.
    fn touch_pages(&mut self, addr: u64, len: u64, order: &[u32]) -> anyhow::Result<()>;

    /// Unmap what `map` returned.
    fn unmap(&mut self, addr: u64, len: u64) -> anyhow::Result<()>;
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// What makes two rows comparable: the same pattern.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Shape {
    /// GiB per row, over all threads.
    pub gb: f64,
    /// Repetitions per run.
    pub reps: u32,
    /// Worker threads.
    pub threads: usize,
    /// Touch order.
    pub order: Order,
}

/// Figures of one run, or the median of a row's runs. Times are totals
/// over the run's reps (and, for CPU time, over threads).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// User CPU time of the touch phases.
    #[serde(rename = "user_s", serialize_with = "secs")]
    pub user: Duration,
    /// System CPU time of the touch phases.
    #[serde(rename = "system_s", serialize_with = "secs")]
    pub system: Duration,
    /// Wall time of the touch phases.
    #[serde(rename = "wall_s", serialize_with = "secs")]
    pub wall: Duration,
    /// Wall time of the map phases (not in the rates).
    #[serde(rename = "map_wall_s", serialize_with = "secs")]
    pub map_wall: Duration,
    /// Wall time of the unmap phases (not in the rates).
    #[serde(rename = "unmap_wall_s", serialize_with = "secs")]
    pub unmap_wall: Duration,
    /// Pages touched per second of CPU time (`flt/cpu/s`); `null` if no
    /// CPU time was measured.
    pub flt_per_cpu_s: Option<f64>,
    /// Pages touched per wall second (`fault/wsec`).
    pub fault_per_wsec: Option<f64>,
    /// The target's counter deltas over the run.
    pub counters: BTreeMap<String, u64>,
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn rate(count: u64, time: Duration) -> Option<f64> {
    let secs = time.as_secs_f64();
    (secs > 0.0).then(|| count as f64 / secs)
}

impl Figures {
    /// Recompute the rates from the times, for `pages` pages touched.
    fn with_rates(mut self, pages: u64) -> Self {
        self.flt_per_cpu_s = rate(pages, self.user + self.system);
        self.fault_per_wsec = rate(pages, self.wall);
        self
    }
}

/// One target on one shape: every run, and the median.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Target name.
    pub target: String,
    /// The pattern.
    #[serde(flatten)]
    pub shape: Shape,
    /// The target's page size.
    pub page_size: u64,
    /// Slice per thread, in bytes.
    pub bytes_per_thread: u64,
    /// Pages touched per run (pages per thread × threads × reps): the
    /// numerator of both rates.
    pub pages_touched: u64,
    /// The median run (see the module doc).
    pub median: Figures,
    /// Every run, in order.
    pub runs: Vec<Figures>,
}

/// First target's median rates over the second's, on one shape (> 1: the
/// first is faster).
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// Numerator target.
    pub target: String,
    /// Denominator target.
    pub baseline: String,
    /// The pattern.
    #[serde(flatten)]
    pub shape: Shape,
    /// Ratio of `flt/cpu/s`.
    pub flt_per_cpu_s: Option<f64>,
    /// Ratio of `fault/wsec`.
    pub fault_per_wsec: Option<f64>,
}

/// Where and how the benchmark ran.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// Sizes, GiB.
    pub gb: Vec<f64>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Reps per run.
    pub reps: u32,
    /// Runs per row.
    pub runs: u32,
    /// Touch order.
    pub order: Order,
    /// CPUs available to the process.
    pub host_cpus: usize,
    /// The host kernel's release, if readable.
    pub host_kernel: Option<String>,
}

/// The whole result: what `--json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct FaultsReport {
    /// Always `"faults"`.
    pub benchmark: &'static str,
    /// Options and host.
    pub config: Config,
    /// Targets, in slot order (numerator first).
    pub targets: Vec<String>,
    /// First target's rows, then the second's, each in shape order.
    pub rows: Vec<Row>,
    /// One per shape.
    pub ratios: Vec<Ratio>,
}

// ---------------------------------------------------------------------------
// Statistics (pure)
// ---------------------------------------------------------------------------

/// Indices of the middle element(s) of `keys` in sorted order: the same
/// index twice for an odd count, the two middle ones for an even count.
/// Panics on an empty slice.
fn middle<K: PartialOrd>(keys: &[K]) -> (usize, usize) {
    assert!(!keys.is_empty(), "median of nothing");
    let mut idx: Vec<usize> = (0..keys.len()).collect();
    idx.sort_by(|&a, &b| keys[a].partial_cmp(&keys[b]).unwrap_or(std::cmp::Ordering::Equal));
    let n = idx.len();
    (idx[(n - 1) / 2], idx[n / 2])
}

/// Median; the mean of the two middle values for an even count.
fn median_duration(values: &[Duration]) -> Duration {
    let (a, b) = middle(values);
    (values[a] + values[b]) / 2
}

fn median_u64(values: &[u64]) -> u64 {
    let (a, b) = middle(values);
    values[a] / 2 + values[b] / 2 + (values[a] % 2 + values[b] % 2) / 2
}

/// The median run of a row, as described in the module doc: median wall
/// (and map/unmap wall), user/system of the median-CPU run(s), counters
/// each by its own median, rates from those times. Panics on no runs.
pub fn median_figures(runs: &[Figures], pages: u64) -> Figures {
    let pick = |f: fn(&Figures) -> Duration| median_duration(&runs.iter().map(f).collect::<Vec<_>>());
    let cpu: Vec<Duration> = runs.iter().map(|r| r.user + r.system).collect();
    let (a, b) = middle(&cpu);
    let mut names: Vec<&String> = runs.iter().flat_map(|r| r.counters.keys()).collect();
    names.sort();
    names.dedup();
    let counters = names
        .into_iter()
        .map(|name| {
            let values: Vec<u64> = runs.iter().map(|r| r.counters.get(name).copied().unwrap_or(0)).collect();
            (name.clone(), median_u64(&values))
        })
        .collect();
    Figures {
        user: (runs[a].user + runs[b].user) / 2,
        system: (runs[a].system + runs[b].system) / 2,
        wall: pick(|r| r.wall),
        map_wall: pick(|r| r.map_wall),
        unmap_wall: pick(|r| r.unmap_wall),
        flt_per_cpu_s: None,
        fault_per_wsec: None,
        counters,
    }
    .with_rates(pages)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// `first / second` on each shape both have a row for.
pub fn ratios(first: &[Row], second: &[Row]) -> Vec<Ratio> {
    first
        .iter()
        .filter_map(|a| {
            let b = second.iter().find(|b| b.shape == a.shape)?;
            Some(Ratio {
                target: a.target.clone(),
                baseline: b.target.clone(),
                shape: a.shape,
                flt_per_cpu_s: ratio(a.median.flt_per_cpu_s, b.median.flt_per_cpu_s),
                fault_per_wsec: ratio(a.median.fault_per_wsec, b.median.fault_per_wsec),
            })
        })
        .collect()
}

/// What one worker measured in one rep.
#[derive(Clone, Copy, Debug)]
pub struct RepTimes {
    /// Map phase: from the gate to this thread's map returning.
    pub map: (Instant, Instant),
    /// Touch phase: from the gate to this thread's last store.
    pub touch: (Instant, Instant),
    /// This thread's CPU usage over its touch phase.
    pub usage: Rusage,
    /// Unmap phase.
    pub unmap: (Instant, Instant),
}

/// Wall time of one phase over all threads: earliest start to latest end.
fn span(phases: impl Iterator<Item = (Instant, Instant)>) -> Duration {
    let mut start: Option<Instant> = None;
    let mut end: Option<Instant> = None;
    for (s, e) in phases {
        start = Some(start.map_or(s, |x| x.min(s)));
        end = Some(end.map_or(e, |x| x.max(e)));
    }
    match (start, end) {
        (Some(s), Some(e)) => e.saturating_duration_since(s),
        _ => Duration::ZERO,
    }
}

/// Counter deltas `after - before`, by name (a counter absent before
/// counts from zero).
fn counter_deltas(before: &[(&'static str, u64)], after: &[(&'static str, u64)]) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|&(name, a)| {
            let b = before.iter().find(|(n, _)| *n == name).map_or(0, |&(_, v)| v);
            (name.to_string(), a.saturating_sub(b))
        })
        .collect()
}

/// One run's figures from every worker's reps (`per_thread[t][rep]`).
pub fn aggregate_run(per_thread: &[Vec<RepTimes>], pages: u64, counters: BTreeMap<String, u64>) -> Figures {
    let reps = per_thread.iter().map(Vec::len).max().unwrap_or(0);
    let mut f = Figures { counters, ..Figures::default() };
    for rep in 0..reps {
        let this = || per_thread.iter().filter_map(move |t| t.get(rep));
        f.map_wall += span(this().map(|r| r.map));
        f.wall += span(this().map(|r| r.touch));
        f.unmap_wall += span(this().map(|r| r.unmap));
        for r in this() {
            f.user += r.usage.user;
            f.system += r.usage.system;
        }
    }
    f.with_rates(pages)
}

/// A fixed pseudo-random permutation of `0..n` (Fisher–Yates over
/// splitmix64), so both targets see the same order.
pub fn shuffled(n: u32, seed: u64) -> Vec<u32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut v: Vec<u32> = (0..n).collect();
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// A shape as one target runs it.
#[derive(Clone, Copy, Debug)]
struct Plan {
    shape: Shape,
    page_size: u64,
    bytes_per_thread: u64,
    pages_per_thread: u32,
}

impl Plan {
    fn new(shape: Shape, page_size: u64) -> anyhow::Result<Plan> {
        if page_size == 0 {
            bail!("target page size is 0");
        }
        let total = (shape.gb * GIB).round() as u64;
        let pages = total / shape.threads as u64 / page_size;
        if pages == 0 {
            bail!("{} GiB over {} threads is less than a page ({page_size} B) per thread", shape.gb, shape.threads);
        }
        let pages_per_thread =
            u32::try_from(pages).map_err(|_| anyhow!("{pages} pages per thread: too many to order"))?;
        Ok(Plan { shape, page_size, bytes_per_thread: pages * page_size, pages_per_thread })
    }

    fn pages_touched(&self) -> u64 {
        u64::from(self.pages_per_thread) * self.shape.threads as u64 * u64::from(self.shape.reps)
    }

    /// Touch order of worker `index` in run `run` (empty: sequential).
    fn order(&self, index: usize, run: u32) -> Vec<u32> {
        match self.shape.order {
            Order::Seq => Vec::new(),
            Order::Random => shuffled(self.pages_per_thread, (index as u64) << 32 | u64::from(run)),
        }
    }
}

/// A reusable barrier that can be abandoned: once a worker fails, every
/// wait (current and future) returns `Err`, so no worker is left blocked.
struct Gate {
    size: usize,
    state: Mutex<GateState>,
    cv: Condvar,
}

struct GateState {
    arrived: usize,
    generation: u64,
    aborted: bool,
}

struct Aborted;

impl Gate {
    fn new(size: usize) -> Gate {
        Gate { size, state: Mutex::new(GateState { arrived: 0, generation: 0, aborted: false }), cv: Condvar::new() }
    }

    fn wait(&self) -> Result<(), Aborted> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.aborted {
            return Err(Aborted);
        }
        s.arrived += 1;
        if s.arrived == self.size {
            s.arrived = 0;
            s.generation += 1;
            self.cv.notify_all();
            return Ok(());
        }
        let generation = s.generation;
        while s.generation == generation && !s.aborted {
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if s.generation == generation {
            Err(Aborted)
        } else {
            Ok(())
        }
    }

    fn abort(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).aborted = true;
        self.cv.notify_all();
    }
}

/// Why a worker stopped early.
enum Stop {
    /// Another worker failed first.
    Aborted,
    /// This one failed.
    Failed(anyhow::Error),
}

impl From<Aborted> for Stop {
    fn from(_: Aborted) -> Stop {
        Stop::Aborted
    }
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Stop {
        Stop::Failed(e)
    }
}

fn worker<T: FaultTarget>(
    target: &T,
    plan: &Plan,
    run: u32,
    index: usize,
    gate: &Gate,
    progress: &ProgressBar,
) -> Result<Vec<RepTimes>, Stop> {
    let mut thread = target.thread(index).with_context(|| format!("{}: setting up thread {index}", target.name()))?;
    let order = plan.order(index, run);
    let len = plan.bytes_per_thread;
    let mut reps = Vec::with_capacity(plan.shape.reps as usize);
    for _ in 0..plan.shape.reps {
        gate.wait()?;
        let map_start = Instant::now();
        let addr = thread.map(len)?;
        let map_end = Instant::now();
        let touched = (|| -> Result<_, Stop> {
            gate.wait()?;
            let start = Instant::now();
            let before = thread_rusage().context("getrusage")?;
            thread.touch_pages(addr, len, &order)?;
            let after = thread_rusage().context("getrusage")?;
            let end = Instant::now();
            gate.wait()?;
            Ok(((start, end), after.since(&before)))
        })();
        // Unmap even when the touch failed, so nothing stays mapped.
        let unmap_start = Instant::now();
        let unmapped = thread.unmap(addr, len);
        let unmap_end = Instant::now();
        let (touch, usage) = touched?;
        unmapped?;
        reps.push(RepTimes { map: (map_start, map_end), touch, usage, unmap: (unmap_start, unmap_end) });
        if index == 0 {
            progress.inc(1);
        }
    }
    Ok(reps)
}

/// One run of `plan` on `target`: N workers, `reps` reps.
fn measure_run<T: FaultTarget>(target: &T, plan: &Plan, run: u32, progress: &ProgressBar) -> anyhow::Result<Figures> {
    let n = plan.shape.threads;
    let gate = Gate::new(n);
    let before = target.counters();
    let outcomes: Vec<Result<Vec<RepTimes>, Stop>> = thread::scope(|s| {
        let mut handles = Vec::with_capacity(n);
        for index in 0..n {
            let (gate, plan) = (&gate, plan);
            let spawned = thread::Builder::new().name(format!("faults-{index}")).spawn_scoped(s, move || {
                let out = catch_unwind(AssertUnwindSafe(|| worker(target, plan, run, index, gate, progress)))
                    .unwrap_or_else(|_| Err(Stop::Failed(anyhow!("{}: thread {index} panicked", target.name()))));
                if out.is_err() {
                    gate.abort();
                }
                out
            });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    gate.abort();
                    handles.clear(); // joined by the scope
                    return vec![Err(Stop::Failed(anyhow::Error::new(e).context("spawning a worker thread")))];
                }
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Stop::Failed(anyhow!("worker thread panicked")))))
            .collect()
    });
    let after = target.counters();
    let mut per_thread = Vec::with_capacity(n);
    let mut aborted = false;
    for outcome in outcomes {
        match outcome {
            Ok(reps) => per_thread.push(reps),
            Err(Stop::Failed(e)) => return Err(e),
            Err(Stop::Aborted) => aborted = true,
        }
    }
    if aborted {
        bail!("{}: run aborted", target.name());
    }
    Ok(aggregate_run(&per_thread, plan.pages_touched(), counter_deltas(&before, &after)))
}

fn progress_bar(args: &FaultsArgs, total: u64) -> ProgressBar {
    if args.no_progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg:32} [{bar:30}] {pos}/{len} reps, eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn row<T: FaultTarget>(target: &T, plan: &Plan, runs: Vec<Figures>) -> Row {
    Row {
        target: target.name().to_string(),
        shape: plan.shape,
        page_size: plan.page_size,
        bytes_per_thread: plan.bytes_per_thread,
        pages_touched: plan.pages_touched(),
        median: median_figures(&runs, plan.pages_touched()),
        runs,
    }
}

/// Measure every shape of `args` on both targets and print the result to
/// `out` (a table, or JSON with `--json`); also returns it.
///
/// `oxmm` is the numerator of the ratios and `kernel` the baseline; any two
/// targets will do (the native one in both slots, for instance).
pub fn run_faults<A: FaultTarget, B: FaultTarget>(
    args: &FaultsArgs,
    oxmm: &A,
    kernel: &B,
    out: &mut impl Write,
) -> anyhow::Result<FaultsReport> {
    args.validate()?;
    let shapes = args.shapes();
    let total = shapes.len() as u64 * 2 * u64::from(args.runs) * u64::from(args.reps);
    let progress = progress_bar(args, total);
    let (mut rows_a, mut rows_b) = (Vec::new(), Vec::new());
    for shape in shapes {
        let plan_a = Plan::new(shape, oxmm.page_size())?;
        let plan_b = Plan::new(shape, kernel.page_size())?;
        let (mut runs_a, mut runs_b) = (Vec::new(), Vec::new());
        for run in 0..args.runs {
            let label = format!("{} GiB, {} thr, run {}/{}", shape.gb, shape.threads, run + 1, args.runs);
            progress.set_message(format!("{} {label}", oxmm.name()));
            runs_a.push(measure_run(oxmm, &plan_a, run, &progress)?);
            progress.set_message(format!("{} {label}", kernel.name()));
            runs_b.push(measure_run(kernel, &plan_b, run, &progress)?);
        }
        rows_a.push(row(oxmm, &plan_a, runs_a));
        rows_b.push(row(kernel, &plan_b, runs_b));
    }
    progress.finish_and_clear();
    let report = FaultsReport {
        benchmark: "faults",
        config: Config {
            gb: args.gb.clone(),
            threads: args.threads.clone(),
            reps: args.reps,
            runs: args.runs,
            order: args.order,
            host_cpus: thread::available_parallelism().map_or(1, |n| n.get()),
            host_kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        },
        targets: vec![oxmm.name().to_string(), kernel.name().to_string()],
        ratios: ratios(&rows_a, &rows_b),
        rows: rows_a.into_iter().chain(rows_b).collect(),
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        out.write_all(render_table(&report).as_bytes())?;
    }
    out.flush()?;
    Ok(report)
}

// ---------------------------------------------------------------------------
// Human output
// ---------------------------------------------------------------------------

/// One table column: a header and how to render a row's cell.
pub struct Column<R> {
    header: String,
    cell: Box<dyn Fn(&R) -> String>,
}

impl<R> Column<R> {
    fn new(header: impl Into<String>, cell: impl Fn(&R) -> String + 'static) -> Self {
        Column { header: header.into(), cell: Box::new(cell) }
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.3}"))
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.3}"))
}

fn shape_columns<R: 'static>(shape: fn(&R) -> &Shape) -> Vec<Column<R>> {
    vec![
        Column::new("Gb", move |r| shape(r).gb.to_string()),
        Column::new("Rep", move |r| shape(r).reps.to_string()),
        Column::new("Threads", move |r| shape(r).threads.to_string()),
    ]
}

/// The seed-003 columns, then unmap time, then the target's counters.
fn target_columns(counters: &[String]) -> Vec<Column<Row>> {
    let mut cols = shape_columns(|r: &Row| &r.shape);
    cols.extend([
        Column::new("User", |r: &Row| fmt_secs(r.median.user)),
        Column::new("System", |r: &Row| fmt_secs(r.median.system)),
        Column::new("Wall", |r: &Row| fmt_secs(r.median.wall)),
        Column::new("flt/cpu/s", |r: &Row| fmt_rate(r.median.flt_per_cpu_s)),
        Column::new("fault/wsec", |r: &Row| fmt_rate(r.median.fault_per_wsec)),
        Column::new("unmap", |r: &Row| fmt_secs(r.median.unmap_wall)),
    ]);
    for name in counters {
        let key = name.clone();
        cols.push(Column::new(name.clone(), move |r: &Row| {
            r.median.counters.get(&key).map_or_else(|| "-".into(), u64::to_string)
        }));
    }
    cols
}

fn ratio_columns() -> Vec<Column<Ratio>> {
    let mut cols = shape_columns(|r: &Ratio| &r.shape);
    cols.extend([
        Column::new("flt/cpu/s", |r: &Ratio| fmt_ratio(r.flt_per_cpu_s)),
        Column::new("fault/wsec", |r: &Ratio| fmt_ratio(r.fault_per_wsec)),
    ]);
    cols
}

/// Right-aligned columns, two spaces apart.
fn render<R>(out: &mut String, cols: &[Column<R>], rows: &[&R]) {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| cols.iter().map(|c| (c.cell)(r)).collect()).collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].len()).fold(c.header.len(), usize::max))
        .collect();
    let mut line = |fields: Vec<&str>| {
        let text: Vec<String> = fields.iter().zip(&widths).map(|(f, w)| format!("{f:>w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  "));
    };
    line(cols.iter().map(|c| c.header.as_str()).collect());
    for r in &cells {
        line(r.iter().map(String::as_str).collect());
    }
}

/// The human-readable report: one seed-style table per target, then the
/// ratios.
pub fn render_table(report: &FaultsReport) -> String {
    let c = &report.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "faults: anonymous private memory, one write per page, {} order; \
         median of {} run{} (host: {} CPUs{})",
        match c.order {
            Order::Seq => "sequential",
            Order::Random => "random",
        },
        c.runs,
        if c.runs == 1 { "" } else { "s" },
        c.host_cpus,
        c.host_kernel.as_deref().map(|k| format!(", Linux {k}")).unwrap_or_default(),
    );
    for target in &report.targets {
        let rows: Vec<&Row> = report.rows.iter().filter(|r| &r.target == target).collect();
        let mut counters: Vec<String> = rows.iter().flat_map(|r| r.median.counters.keys().cloned()).collect();
        counters.sort();
        counters.dedup();
        let page = rows.first().map_or(0, |r| r.page_size);
        let _ = writeln!(out, "\n{target} ({page}-byte pages)");
        render(&mut out, &target_columns(&counters), &rows);
    }
    if let Some(first) = report.ratios.first() {
        let _ = writeln!(out, "\nratio {}/{} (> 1: {} faster)", first.target, first.baseline, first.target);
        let ratios: Vec<&Ratio> = report.ratios.iter().collect();
        render(&mut out, &ratio_columns(), &ratios);
    }
    out
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fig(user: u64, system: u64, wall: u64) -> Figures {
        Figures { user: ms(user), system: ms(system), wall: ms(wall), ..Figures::default() }
    }

    fn shape(threads: usize) -> Shape {
        Shape { gb: 0.5, reps: 3, threads, order: Order::Seq }
    }

    fn row_of(target: &str, threads: usize, median: Figures) -> Row {
        Row {
            target: target.into(),
            shape: shape(threads),
            page_size: 4096,
            bytes_per_thread: 1 << 20,
            pages_touched: 1000,
            runs: vec![median.clone()],
            median,
        }
    }

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median_duration(&[ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median_duration(&[ms(4), ms(1), ms(3), ms(10)]), ms(3) + ms(1) / 2);
        assert_eq!(median_duration(&[ms(7)]), ms(7));
        assert_eq!(median_u64(&[3, 1, 2]), 2);
        assert_eq!(median_u64(&[1, 2]), 1);
        assert_eq!(median_u64(&[3, 5]), 4);
        assert_eq!(median_u64(&[u64::MAX, u64::MAX]), u64::MAX);
    }

    #[test]
    fn median_row_adds_up() {
        // CPU times 30, 10, 20 ms: the median-CPU run is the third one.
        let runs = vec![fig(10, 20, 50), fig(5, 5, 40), fig(2, 18, 60)];
        let m = median_figures(&runs, 1000);
        assert_eq!((m.user, m.system), (ms(2), ms(18)));
        assert_eq!(m.wall, ms(50));
        // Rates come from the median times...
        assert_eq!(m.flt_per_cpu_s, Some(1000.0 / 0.020));
        assert_eq!(m.fault_per_wsec, Some(1000.0 / 0.050));
        // ...and equal the median of the per-run rates for an odd count.
        let mut per_run: Vec<f64> = runs.iter().map(|r| 1000.0 / r.wall.as_secs_f64()).collect();
        per_run.sort_by(f64::total_cmp);
        assert_eq!(m.fault_per_wsec, Some(per_run[1]));
    }

    #[test]
    fn median_row_even_runs_averages_middle_pair() {
        let runs = vec![fig(1, 9, 10), fig(3, 27, 30), fig(2, 18, 20), fig(4, 36, 40)];
        let m = median_figures(&runs, 100);
        assert_eq!((m.user, m.system, m.wall), (ms(2) + ms(1) / 2, ms(22) + ms(1) / 2, ms(25)));
    }

    #[test]
    fn median_counters_per_name() {
        let mut runs = vec![fig(1, 1, 1), fig(1, 1, 1), fig(1, 1, 1)];
        for (r, v) in runs.iter_mut().zip([7, 3, 5]) {
            r.counters.insert("entries".into(), v);
        }
        runs[2].counters.insert("prefaulted".into(), 9);
        let m = median_figures(&runs, 1);
        assert_eq!(m.counters["entries"], 5);
        assert_eq!(m.counters["prefaulted"], 0, "missing counts as 0");
    }

    #[test]
    fn zero_time_has_no_rate() {
        let m = median_figures(&[Figures::default()], 10);
        assert_eq!((m.flt_per_cpu_s, m.fault_per_wsec), (None, None));
    }

    #[test]
    fn ratios_pair_rows_by_shape() {
        let a = vec![
            row_of("oxmm", 1, fig(0, 10, 10).with_rates(1000)),
            row_of("oxmm", 2, fig(0, 10, 20).with_rates(1000)),
        ];
        let b = vec![
            row_of("kernel", 2, fig(0, 20, 10).with_rates(1000)),
            row_of("kernel", 1, fig(0, 40, 40).with_rates(1000)),
        ];
        let r = ratios(&a, &b);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].target.as_str(), r[0].baseline.as_str()), ("oxmm", "kernel"));
        assert_eq!(r[0].shape.threads, 1);
        assert_eq!(r[0].flt_per_cpu_s, Some(4.0));
        assert_eq!(r[0].fault_per_wsec, Some(4.0));
        assert_eq!(r[1].flt_per_cpu_s, Some(2.0));
        assert_eq!(r[1].fault_per_wsec, Some(0.5));
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    }

    #[test]
    fn aggregate_sums_reps_and_spans_threads() {
        let t0 = Instant::now();
        let at = |a: u64, b: u64| (t0 + ms(a), t0 + ms(b));
        let usage = |u: u64, s: u64| Rusage { user: ms(u), system: ms(s), ..Rusage::default() };
        let rep = |touch, u, s| RepTimes { map: at(0, 1), touch, usage: usage(u, s), unmap: at(100, 103) };
        // Two threads, two reps; rep walls are 10..40 and 5..25 ms.
        let per_thread = vec![
            vec![rep(at(10, 30), 1, 19), rep(at(5, 25), 0, 20)],
            vec![rep(at(12, 40), 2, 26), rep(at(6, 20), 1, 13)],
        ];
        let mut counters = BTreeMap::new();
        counters.insert("minflt".to_string(), 4000);
        let f = aggregate_run(&per_thread, 4000, counters);
        assert_eq!(f.wall, ms(30) + ms(20));
        assert_eq!(f.user, ms(4));
        assert_eq!(f.system, ms(78));
        assert_eq!(f.map_wall, ms(2));
        assert_eq!(f.unmap_wall, ms(6));
        assert_eq!(f.fault_per_wsec, Some(4000.0 / 0.050));
        assert_eq!(f.flt_per_cpu_s, Some(4000.0 / 0.082));
        assert_eq!(f.counters["minflt"], 4000);
    }

    #[test]
    fn counter_deltas_by_name() {
        let d = counter_deltas(&[("a", 5), ("b", 9)], &[("b", 12), ("a", 7), ("c", 1)]);
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            [("a".to_string(), 2), ("b".to_string(), 3), ("c".to_string(), 1)]
        );
    }

    #[test]
    fn plan_splits_into_whole_pages() {
        let p = Plan::new(Shape { gb: 0.25, reps: 3, threads: 3, order: Order::Seq }, 4096).unwrap();
        assert_eq!(p.pages_per_thread, 65536 / 3);
        assert_eq!(p.bytes_per_thread, 21845 * 4096);
        assert_eq!(p.pages_touched(), 21845 * 3 * 3);
        assert!(p.order(0, 0).is_empty());
        let tiny = Shape { gb: 1e-9, ..shape(1) };
        assert!(Plan::new(tiny, 4096).is_err());
    }

    #[test]
    fn shuffle_is_a_fixed_permutation() {
        let a = shuffled(1000, 42);
        assert_eq!(a, shuffled(1000, 42));
        assert_ne!(a, shuffled(1000, 43));
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert!(shuffled(0, 1).is_empty());
    }

    #[test]
    fn args_validate() {
        assert!(FaultsArgs::default().validate().is_ok());
        let bad = |f: fn(&mut FaultsArgs)| {
            let mut a = FaultsArgs::default();
            f(&mut a);
            a.validate().is_err()
        };
        assert!(bad(|a| a.threads = vec![1, 0]));
        assert!(bad(|a| a.gb = vec![-1.0]));
        assert!(bad(|a| a.gb = vec![f64::NAN]));
        assert!(bad(|a| a.runs = 0));
        assert!(bad(|a| a.reps = 0));
        assert!(bad(|a| a.threads.clear()));
    }

    #[test]
    fn args_parse_from_command_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: FaultsArgs,
        }
        let cli =
            Cli::try_parse_from(["x", "--gb", "0.25,4", "--threads", "1,2,4", "--order", "random", "--json"]).unwrap();
        assert_eq!(cli.args.gb, [0.25, 4.0]);
        assert_eq!(cli.args.threads, [1, 2, 4]);
        assert_eq!((cli.args.reps, cli.args.runs), (3, 5));
        assert_eq!(cli.args.order, Order::Random);
        assert!(cli.args.json && !cli.args.no_progress);
        assert_eq!(cli.args.shapes().len(), 6);
    }

    fn sample_report() -> FaultsReport {
        let mut m = fig(47, 2163, 2212).with_rates(196_608);
        m.counters.insert("minflt".into(), 196_610);
        let a = vec![row_of("oxmm", 1, m.clone())];
        let b = vec![row_of("kernel", 1, fig(20, 2000, 2000).with_rates(196_608))];
        FaultsReport {
            benchmark: "faults",
            config: Config {
                gb: vec![0.5],
                threads: vec![1],
                reps: 3,
                runs: 1,
                order: Order::Seq,
                host_cpus: 8,
                host_kernel: None,
            },
            targets: vec!["oxmm".into(), "kernel".into()],
            ratios: ratios(&a, &b),
            rows: a.into_iter().chain(b).collect(),
        }
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(v["benchmark"], "faults");
        assert_eq!(v["config"]["order"], "seq");
        assert_eq!(v["targets"], serde_json::json!(["oxmm", "kernel"]));
        let row = &v["rows"][0];
        for key in ["target", "gb", "reps", "threads", "order", "page_size", "pages_touched"] {
            assert!(!row[key].is_null(), "row lacks {key}");
        }
        let m = &row["median"];
        assert_eq!(m["user_s"], 0.047);
        assert_eq!(m["system_s"], 2.163);
        assert_eq!(m["wall_s"], 2.212);
        assert_eq!(m["counters"]["minflt"], 196_610);
        assert!((m["fault_per_wsec"].as_f64().unwrap() - 88_882.459).abs() < 0.001);
        assert!(row["runs"].is_array());
        let ratio = &v["ratios"][0];
        assert_eq!(ratio["target"], "oxmm");
        assert_eq!(ratio["baseline"], "kernel");
        assert_eq!(ratio["threads"], 1);
        assert!(ratio["fault_per_wsec"].as_f64().unwrap() < 1.0);
    }

    #[test]
    fn table_has_seed_columns() {
        let t = render_table(&sample_report());
        let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        let lines: Vec<String> = t.lines().map(words).collect();
        let has = |l: &str| lines.iter().any(|x| x == l);
        assert!(has("oxmm (4096-byte pages)"), "{t}");
        assert!(has("Gb Rep Threads User System Wall flt/cpu/s fault/wsec unmap minflt"), "{t}");
        assert!(has("0.5 3 1 0.047s 2.163s 2.212s 88962.896 88882.459 0.000s 196610"), "{t}");
        assert!(has("Gb Rep Threads User System Wall flt/cpu/s fault/wsec unmap"), "{t}");
        assert!(has("ratio oxmm/kernel (> 1: oxmm faster)"), "{t}");
        assert!(has("0.5 3 1 0.914 0.904"), "{t}");
        // Columns are right-aligned: every line of a table is equally wide.
        let table: Vec<&str> = t.lines().skip(3).take(2).collect();
        assert_eq!(table[0].len(), table[1].len(), "{t}");
    }

    /// A target with no memory behind it: counts calls, fails on demand.
    struct Fake {
        fail_thread: Option<usize>,
        panic: bool,
        touched: std::sync::atomic::AtomicU64,
        unmapped: std::sync::atomic::AtomicU64,
    }

    struct FakeThread<'a> {
        target: &'a Fake,
        index: usize,
    }

    impl Fake {
        fn new(fail_thread: Option<usize>, panic: bool) -> Fake {
            Fake { fail_thread, panic, touched: 0.into(), unmapped: 0.into() }
        }
    }

    impl FaultTarget for Fake {
        type Thread<'a> = FakeThread<'a>;
        fn name(&self) -> &str {
            "fake"
        }
        fn thread(&self, index: usize) -> anyhow::Result<FakeThread<'_>> {
            Ok(FakeThread { target: self, index })
        }
        fn counters(&self) -> Vec<(&'static str, u64)> {
            use std::sync::atomic::Ordering::Relaxed;
            vec![("touched", self.touched.load(Relaxed))]
        }
    }

    impl FaultThread for FakeThread<'_> {
        fn map(&mut self, _len: u64) -> anyhow::Result<u64> {
            Ok(0x1000_0000 * (self.index as u64 + 1))
        }
        fn touch_pages(&mut self, _addr: u64, len: u64, order: &[u32]) -> anyhow::Result<()> {
            use std::sync::atomic::Ordering::Relaxed;
            if self.target.fail_thread == Some(self.index) {
                if self.target.panic {
                    panic!("fake panic");
                }
                bail!("fake failure");
            }
            let pages = if order.is_empty() { len / 4096 } else { order.len() as u64 };
            self.target.touched.fetch_add(pages, Relaxed);
            Ok(())
        }
        fn unmap(&mut self, _addr: u64, _len: u64) -> anyhow::Result<()> {
            self.target.unmapped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn harness_runs_every_rep_on_every_thread() {
        let args = FaultsArgs {
            gb: vec![1.0 / 1024.0],
            threads: vec![1, 4],
            reps: 2,
            runs: 3,
            order: Order::Random,
            json: true,
            no_progress: true,
        };
        let (a, b) = (Fake::new(None, false), Fake::new(None, false));
        let mut out = Vec::new();
        let report = run_faults(&args, &a, &b, &mut out).unwrap();
        // 1 MiB = 256 pages per row and rep; 2 shapes × 2 reps × 3 runs.
        assert_eq!(a.touched.into_inner(), 256 * 2 * 3 * 2);
        assert_eq!(a.unmapped.into_inner(), (1 + 4) * 2 * 3);
        assert_eq!(report.rows.len(), 4);
        assert_eq!(report.ratios.len(), 2);
        for row in &report.rows {
            assert_eq!(row.pages_touched, 512);
            assert_eq!(row.runs.len(), 3);
            assert_eq!(row.median.counters["touched"], 512);
        }
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["rows"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn a_failing_thread_stops_the_run_without_hanging() {
        for panic in [false, true] {
            let args = FaultsArgs {
                gb: vec![1.0 / 1024.0],
                threads: vec![3],
                runs: 1,
                no_progress: true,
                ..FaultsArgs::default()
            };
            let (a, b) = (Fake::new(Some(1), panic), Fake::new(None, false));
            let err = run_faults(&args, &a, &b, &mut Vec::new()).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(if panic { "panicked" } else { "fake failure" }), "{msg}");
            // Every mapping was unmapped, the failed thread's included
            // (unless it panicked: then its thread state's drop must do it).
            assert_eq!(a.unmapped.into_inner(), if panic { 2 } else { 3 });
        }
    }
}
