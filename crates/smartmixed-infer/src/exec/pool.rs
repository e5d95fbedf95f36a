//! [`Pool`]: the `n - 1` worker threads that help split forward passes, shared by every
//! caller of the models that use it. A call always computes on its own thread; it
//! borrows idle workers only when it is alone (no other caller computing, none met for
//! [`CONTENDED_FOR`]). So one caller gets `n` threads, and many callers each run on their
//! own with no worker beside them: the pool never adds a thread to a busy host, and no
//! caller waits at a barrier for a worker another caller's thread has pushed off a core.
//! (Making callers beyond `n` sleep for a permit instead cost 20-25% of the throughput of
//! eight callers at batches 32 and 256, measured on two cores: the hand-offs through a
//! condition variable cost more than the OS's own time slicing.)
//!
//! Why our own threads rather than rayon's pool (which the trainer uses): a split pass
//! meets at a barrier after every layer, so its threads must all be running at once. Rayon
//! hands jobs to whichever thread is free and offers no way to reserve a set of threads;
//! a spin barrier inside a rayon job can wait forever for a thread that runs another
//! caller's job, and a fork-join per layer instead (`rayon::scope` seven times a pass)
//! adds its wake-ups to every layer of a batch-1 pass that takes about 80 µs in all.
//! A worker spins briefly after a job (back-to-back calls start at once), then sleeps.
//! When the host runs more threads than it has cores (other processes), a split pass waits
//! a scheduler slice at each barrier for a thread the OS parked (measured: batch 1 at
//! 133 rows/s against 2,000 on the caller's thread alone, on two cores loaded 4x): a wait
//! that lasts past [`STALL`] marks the pool stalled, and for a while no call takes helpers
//! (10 ms, doubling while stalls recur, up to [`BACK_OFF`]), so a loaded host gets
//! single-thread speed instead of a collapse. A job that
//! any subset of its threads can finish (the row split's chunks from a counter) runs with
//! [`Lease::run_shared`]: the caller calls off the helpers that have not begun once its own
//! share is done, so it never waits for a thread that is not running, and such calls take
//! helpers even while the pool backs off.
//! A job that panics on any thread is caught where it runs; the thread still counts itself
//! finished, so [`Lease::run`] returns the panic's message and the pool serves the next call.
//! After `fork()` the child has none of the workers (only the forking thread is copied),
//! while its copy of the pool still lists them idle: a `pthread_atfork` handler counts
//! forks, and a pool made before the last fork lends no worker (each call runs on its
//! caller's thread alone, never touching the gate a vanished thread may have held) and is
//! dropped without joining them. (A relaxed load of the counter per call; `getpid` would be
//! a system call.)

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smartmixed_core::fpenv::FlushDenormals;

use crate::{Error, Result};

/// The most threads a pool may have: an absurd request must not reach the OS.
pub const MAX_THREADS: usize = 256;

/// A slot's `call` telling its worker to end (no `Call` lives at address 1).
const SHUT_DOWN: usize = 1;

/// The `fork()`s this process has been made by: its parent's count plus one in a child.
static FORKS: AtomicU64 = AtomicU64::new(0);

#[cfg(unix)]
extern "C" {
    /// POSIX `<pthread.h>` (in every Unix libc; declared here rather than a new dependency of
    /// the runtime): handlers the C library runs around `fork()`.
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> std::ffi::c_int;
}

#[cfg(unix)]
extern "C" fn count_fork_in_child() {
    // Async-signal-safe: one atomic add, in the child's only thread.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The fork count now, with the handler that keeps it registered (once per process; a child
/// inherits the registration).
fn forks() -> u64 {
    #[cfg(unix)]
    {
        static REGISTERED: std::sync::Once = std::sync::Once::new();
        REGISTERED.call_once(|| {
            // SAFETY: registers a handler that only does an atomic add. If registration
            // fails (ENOMEM), forked children of this process are not detected: the
            // behaviour before this handler existed.
            unsafe {
                pthread_atfork(None, None, Some(count_fork_in_child));
            }
        });
    }
    FORKS.load(Ordering::Relaxed)
}

/// How long an idle worker spins before sleeping (back-to-back calls find it awake).
const SPIN: Duration = Duration::from_micros(50);

thread_local! {
    /// Set while this thread computes a call (a caller inside `forward`, or a worker): a
    /// call started from inside one (an activation that runs a model) runs on this thread
    /// alone, borrowing no worker (the workers may all be busy with its own call).
    static IN_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A wait inside a call (at a barrier, or for helpers to finish) longer than this means a
/// thread of the call is not running: a layer's share of work takes well under it.
const STALL: Duration = Duration::from_millis(1);

/// How long calls take no helpers after a stall that follows none: a passing hiccup (the
/// hypervisor descheduling a virtual CPU for a millisecond or two). Each stall within one
/// back-off's length of the last back-off's end doubles it, up to [`BACK_OFF`]: a host
/// that stays busier than its cores. (A fixed 200 ms after every hiccup left a lone caller
/// of batch 1 on this virtual machine on one thread for several percent of its calls: p99
/// 0.29-0.36 ms against 0.17-0.26 with no back-off, alternating.)
const BACK_OFF_FIRST: Duration = Duration::from_millis(10);

/// The longest back-off after a stall (see [`BACK_OFF_FIRST`]).
const BACK_OFF: Duration = Duration::from_millis(200);

/// The back-off (µs) after a stall at `now`, when the last one lasted `last` and ended at
/// `ended` (all µs since the pool's epoch; `last` 0: none yet).
fn next_back_off(last: u64, ended: u64, now: u64) -> u64 {
    let first = BACK_OFF_FIRST.as_micros() as u64;
    if last > 0 && now <= ended.saturating_add(last) {
        last.saturating_mul(2).min(BACK_OFF.as_micros() as u64)
    } else {
        first
    }
}

/// How long after a call last met another calls take no helpers.
/// Callers in a loop finish together as often as not, and one that then found every
/// worker idle would split its pass while the other competed for the cores: measured with two
/// callers at batch 256, 35-45k rows/s against 47-53k for each on its own thread.
const CONTENDED_FOR: Duration = Duration::from_millis(20);

/// A job for every thread of a call: called with the thread's index in the call (0 on the
/// caller's thread, 1.. on its helpers).
pub(crate) type Job<'a> = dyn Fn(usize) + Sync + 'a;

/// A panic caught on a thread computing a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Panic {
    /// Which thread: "the calling thread" or a worker's name.
    pub(crate) thread: String,
    /// The panic's message (its `&str` or `String` payload), or a note that it had none.
    pub(crate) message: String,
}

impl Panic {
    /// `payload` (from `catch_unwind`) caught on `thread`.
    pub(crate) fn new(thread: String, payload: &(dyn Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "(a panic without a message)".to_string()
        };
        Self { thread, message }
    }
}

/// The execution pool: worker threads lent to a caller that is alone. Cheap to clone (a handle); the workers end when the last handle and every
/// model using it are dropped. [`Pool::global`] is the process's default, sized to the
/// cores; an embedder may make its own and give it to models with
/// [`crate::Model::with_pool`].
#[derive(Clone)]
pub struct Pool(Arc<Owner>);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads())
    }
}

/// Joins the workers when the last [`Pool`] handle goes.
struct Owner {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

/// What the callers and the workers share.
struct Shared {
    threads: usize,
    gate: Mutex<Gate>,
    /// One slot per worker (worker `i` is `slots[i]`).
    slots: Vec<Slot>,
    /// Calls take no helpers until this many microseconds after `epoch`.
    backing_off_until: AtomicU64,
    /// The length of the last back-off, in microseconds (see [`next_back_off`]).
    back_off: AtomicU64,
    epoch: Instant,
    /// [`FORKS`] when the workers started: another count means this is a forked child,
    /// where they do not exist.
    forks: u64,
}

impl Shared {
    fn micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether this process was forked since the workers started (they are not here).
    fn forked(&self) -> bool {
        FORKS.load(Ordering::Relaxed) != self.forks
    }
}

/// The callers and the idle workers, under one lock.
struct Gate {
    /// Workers with no job, by slot index.
    idle: Vec<usize>,
    /// Callers computing now (nested calls not counted).
    callers: usize,
    /// When a call last entered while another was computing.
    contended: Option<Instant>,
}

/// A worker's mailbox: the call it is to help with.
struct Slot {
    /// The address of the call's [`Call`] until the worker claims it (swapping in 0) or
    /// the caller retracts it (see [`Lease::run_shared`]); a claimed call stays valid
    /// until the worker has counted itself in its `finished`. [`SHUT_DOWN`]: end.
    call: AtomicUsize,
    /// The worker's index within that call (1..).
    index: AtomicUsize,
    generation: AtomicUsize,
    sleep: Mutex<bool>,
    wake: Condvar,
}

/// One call's job as its helpers see it, on the caller's stack.
struct Call<'a> {
    job: &'a Job<'a>,
    /// Helpers that have begun the job: a wait for one that has not is a stall.
    started: AtomicUsize,
    finished: AtomicUsize,
    /// The first panic a helper caught: written before the helper counts itself finished.
    panic: Mutex<Option<Panic>>,
}

/// A poisoned lock only means another thread panicked while holding it; the data (a queue,
/// an answer, the idle list) is still whole, so carry on with it.
pub(crate) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// A pool of `threads` threads (capped to [`MAX_THREADS`]; 1 = every call on its own
    /// thread, one at a time): `threads - 1` workers start now.
    pub fn new(threads: usize) -> Result<Self> {
        let mut owner = Self::unstarted(threads.clamp(1, MAX_THREADS));
        for i in 0..owner.shared.slots.len() {
            let shared = owner.shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("smartmixed-infer-{}", i + 1))
                .spawn(move || worker(&shared, i))
                .map_err(|e| Error::Thread(format!("starting pool worker {}: {e}", i + 1)))?;
            owner.handles.push(handle);
        }
        Ok(Self(Arc::new(owner)))
    }

    /// The gate and slots of a pool of `threads`, its workers not yet started.
    fn unstarted(threads: usize) -> Owner {
        let shared = Arc::new(Shared {
            threads,
            gate: Mutex::new(Gate {
                idle: (0..threads - 1).collect(),
                callers: 0,
                contended: None,
            }),
            slots: (0..threads - 1)
                .map(|_| Slot {
                    call: AtomicUsize::new(0),
                    index: AtomicUsize::new(0),
                    generation: AtomicUsize::new(0),
                    sleep: Mutex::new(false),
                    wake: Condvar::new(),
                })
                .collect(),
            backing_off_until: AtomicU64::new(0),
            back_off: AtomicU64::new(0),
            epoch: Instant::now(),
            forks: forks(),
        });
        Owner {
            shared,
            handles: Vec::new(),
        }
    }

    /// The process's pool, started on first use with one thread per core this process may
    /// use (`std::thread::available_parallelism`, which follows CPU affinity and cgroup
    /// quotas). If the OS refuses a worker, a pool of one thread.
    pub fn global() -> &'static Pool {
        static GLOBAL: OnceLock<Pool> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Pool::new(cores).unwrap_or_else(|_| Pool(Arc::new(Self::unstarted(1))))
        })
    }

    /// Threads a lone call computes on (its own and the workers').
    pub fn threads(&self) -> usize {
        self.0.shared.threads
    }

    /// A call on the calling thread and, when it is alone, up to `helpers` idle workers,
    /// listed in `workers` (the caller's buffer, so a warm call allocates nothing).
    /// `shared`: the call will run [`Lease::run_shared`], where a helper the OS has not
    /// run costs nothing, so helpers are lent even while the pool backs off after a stall.
    pub(crate) fn enter<'a>(
        &'a self,
        helpers: usize,
        workers: &'a mut Vec<usize>,
        shared: bool,
    ) -> Lease<'a> {
        let s = &*self.0.shared;
        workers.clear();
        if IN_CALL.with(|c| c.replace(true)) {
            return Lease::new(s, workers, Entry::Nested);
        }
        if s.forked() {
            return Lease::new(s, workers, Entry::Forked);
        }
        let mut gate = locked(&s.gate);
        if gate.callers > 0 {
            gate.contended = Some(Instant::now());
        }
        gate.callers += 1;
        let backing_off = || s.backing_off_until.load(Ordering::Relaxed) > s.micros();
        let alone = gate.callers == 1 && gate.contended.is_none_or(|t| t.elapsed() > CONTENDED_FOR);
        if helpers > 0 && alone && (shared || !backing_off()) {
            let take = helpers.min(gate.idle.len());
            let at = gate.idle.len() - take;
            workers.extend(gate.idle.drain(at..));
        }
        drop(gate);
        Lease::new(s, workers, Entry::Gated)
    }
}

/// How a call entered the pool.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Through the gate: counted among the callers, perhaps with helpers.
    Gated,
    /// Inside another call on this thread: alone, not counted.
    Nested,
    /// In a process forked after the workers started: alone, the gate not touched (a
    /// thread that held its lock at the fork is not in this process).
    Forked,
}

/// One call: its thread counted among the callers, and the workers it borrowed.
pub(crate) struct Lease<'a> {
    shared: &'a Shared,
    /// The helpers' slots.
    workers: &'a mut Vec<usize>,
    /// Set by a wait that lasted past [`STALL`]; the pool backs off when the call ends.
    stalled: AtomicBool,
    /// Whether the helpers were given the job (they then put themselves back among the
    /// idle); if not, dropping the lease puts them back.
    ran: AtomicBool,
    /// Counted among the callers, or alone (nested, or in a forked child).
    entry: Entry,
}

/// A thread's wait inside a call: spins, and past [`STALL`] yields and marks the call
/// stalled.
pub(crate) struct Wait<'l, 'a> {
    lease: &'l Lease<'a>,
    spins: u32,
    since: Option<Instant>,
}

impl<'l, 'a> Wait<'l, 'a> {
    pub(crate) fn new(lease: &'l Lease<'a>) -> Self {
        Self {
            lease,
            spins: 0,
            since: None,
        }
    }

    /// One round of waiting; past [`STALL`], `parked()` says whether the thread waited
    /// for is not running (then the call is marked stalled).
    pub(crate) fn pause(&mut self, parked: impl Fn() -> bool) {
        std::hint::spin_loop();
        self.spins = self.spins.wrapping_add(1);
        if !self.spins.is_multiple_of(256) {
            return;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() > STALL {
            if parked() {
                self.lease.stalled.store(true, Ordering::Relaxed);
            }
            std::thread::yield_now();
        }
    }
}

impl<'a> Lease<'a> {
    fn new(shared: &'a Shared, workers: &'a mut Vec<usize>, entry: Entry) -> Self {
        Self {
            shared,
            workers,
            stalled: AtomicBool::new(false),
            ran: AtomicBool::new(false),
            entry,
        }
    }

    /// Threads this call may use: its own and its helpers'.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `job(t)` on every thread `t` of the call (0 on the caller's) and returns when
    /// all are done. A panicking job is caught on its thread (the others run their jobs to
    /// the end: a job that makes threads wait for each other must let them stop waiting,
    /// as the column split does), and the first panic is returned: the caller's own, else a
    /// helper's. Each helper flushes subnormals during the job, as the caller does.
    pub(crate) fn run(&self, job: &Job<'_>) -> std::result::Result<(), Panic> {
        self.run_with(job, false)
    }

    /// Like [`Self::run`] for a job that any subset of the threads completes (each takes
    /// work from a shared counter until none is left): once the caller's own share
    /// returns, helpers that have not begun are called off and the caller waits only for
    /// those that began. A helper the OS has not run (a host busier than its cores, a
    /// virtual CPU the hypervisor has descheduled) then costs nothing, where [`Self::run`]
    /// must wait until it has run.
    pub(crate) fn run_shared(&self, job: &Job<'_>) -> std::result::Result<(), Panic> {
        self.run_with(job, true)
    }

    fn run_with(&self, job: &Job<'_>, shared: bool) -> std::result::Result<(), Panic> {
        // Once only: after a job the helpers are idle again, perhaps lent to another call.
        assert!(
            !self.ran.swap(true, Ordering::Relaxed),
            "a lease runs one job"
        );
        let call = Call {
            job,
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            panic: Mutex::new(None),
        };
        let address = &call as *const Call<'_> as usize;
        for (i, &w) in self.workers.iter().enumerate() {
            let slot = &self.shared.slots[w];
            // The index first: the worker reads it after claiming the address (Release).
            slot.index.store(i + 1, Ordering::Relaxed);
            slot.call.store(address, Ordering::Release);
            let asleep = {
                let asleep = locked(&slot.sleep);
                slot.generation.fetch_add(1, Ordering::Release);
                *asleep
            };
            if asleep {
                slot.wake.notify_one();
            }
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        // `call` lives on this frame, which returns only after every helper has finished
        // with it: a panic cannot leave early, the caller's share is caught above.
        // A helper still in its share is no stall (a row chunk can take milliseconds); one
        // that has not begun the job after STALL is a thread the OS has not run.
        let mut helpers = self.workers.len();
        if shared {
            // Call off the helpers that have not claimed the call: the work is done. Each
            // goes back among the idle here, as it will not do so itself.
            let mut off = 0;
            for &w in self.workers.iter() {
                let slot = &self.shared.slots[w];
                let retracted = slot
                    .call
                    .compare_exchange(address, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if retracted {
                    off += 1;
                    locked(&self.shared.gate).idle.push(w);
                }
            }
            helpers -= off;
        }
        let mut wait = Wait::new(self);
        while call.finished.load(Ordering::Acquire) < helpers {
            wait.pause(|| call.started.load(Ordering::Relaxed) < helpers);
        }
        let theirs = locked(&call.panic).take();
        match (mine, theirs) {
            (Err(payload), _) => Err(Panic::new("the calling thread".into(), &*payload)),
            (Ok(()), Some(panic)) => Err(panic),
            (Ok(()), None) => Ok(()),
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let s = self.shared;
        match self.entry {
            Entry::Nested => return,
            Entry::Forked => return IN_CALL.with(|c| c.set(false)),
            Entry::Gated => IN_CALL.with(|c| c.set(false)),
        }
        if self.stalled.load(Ordering::Relaxed) {
            // (Callers stalling at once may race here; any of their lengths will do.)
            let now = s.micros();
            let ended = s.backing_off_until.load(Ordering::Relaxed);
            let length = next_back_off(s.back_off.load(Ordering::Relaxed), ended, now);
            s.back_off.store(length, Ordering::Relaxed);
            s.backing_off_until
                .fetch_max(now.saturating_add(length), Ordering::Relaxed);
        }
        let mut gate = locked(&s.gate);
        if !self.ran.load(Ordering::Relaxed) {
            gate.idle.extend_from_slice(self.workers);
        }
        gate.callers -= 1;
    }
}

fn worker(s: &Shared, i: usize) {
    let _mode = FlushDenormals::set(true);
    IN_CALL.with(|c| c.set(true));
    let slot = &s.slots[i];
    let mut seen = 0usize;
    loop {
        let (mut spins, idle_since) = (0u32, Instant::now());
        loop {
            if slot.generation.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) || idle_since.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut asleep = locked(&slot.sleep);
            *asleep = true;
            let mut asleep = slot
                .wake
                .wait_while(asleep, |_| slot.generation.load(Ordering::Acquire) == seen)
                .unwrap_or_else(|e| e.into_inner());
            *asleep = false;
        }
        seen = slot.generation.load(Ordering::Acquire);
        // Claimed by taking it: a caller can no longer call it off (see `run_shared`).
        let address = slot.call.swap(0, Ordering::AcqRel);
        match address {
            0 => continue,       // called off, or already taken: wait for the next
            SHUT_DOWN => return, // see `Drop for Owner`
            _ => {}
        }
        // SAFETY: `Lease::run` stored the address of a live `Call` (Release, taken above
        // with Acquire) and keeps it alive until `finished` counts this worker; having
        // taken it, this worker alone may use it, and the caller waits for it.
        let call: &Call<'_> = unsafe { &*(address as *const Call<'_>) };
        let index = slot.index.load(Ordering::Relaxed);
        call.started.fetch_add(1, Ordering::Relaxed);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (call.job)(index))) {
            let name = std::thread::current().name().map_or_else(
                || format!("worker thread {index}"),
                |n| format!("thread `{n}`"),
            );
            let panic = Panic::new(name, &*payload);
            // A payload whose drop panics must not end this thread before it counts itself.
            let _ = catch_unwind(AssertUnwindSafe(|| drop(payload)));
            locked(&call.panic).get_or_insert(panic);
        }
        // Idle again before the caller can return: a lone caller's next call finds it.
        locked(&s.gate).idle.push(i);
        // The last touch of `call`: the caller may return as soon as it sees the count.
        call.finished.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if self.shared.forked() {
            // A forked child: the workers are not in this process, so there is no one to
            // tell or to join (joining would wait forever). Their handles are leaked.
            for h in self.handles.drain(..) {
                std::mem::forget(h);
            }
            return;
        }
        // No call is in flight: every call borrows a model or pool handle, and this is the
        // last. SHUT_DOWN tells each worker to stop.
        for slot in &self.shared.slots {
            slot.call.store(SHUT_DOWN, Ordering::Release);
            {
                let _asleep = locked(&slot.sleep);
                slot.generation.fetch_add(1, Ordering::Release);
            }
            slot.wake.notify_one();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child (which has none of the workers) a call that would have borrowed a
    /// worker runs on its own thread, even one that waits for every helper (`run`, which
    /// spun forever before), and dropping the pool returns (joining would wait forever);
    /// a pool made in the child lends its own workers. The parent's pool still lends.
    #[cfg(unix)]
    #[test]
    fn a_forked_child_computes_on_its_own_thread() {
        let pool = Pool::new(2).unwrap();
        until_the_worker_is_idle(&pool);
        let mut lent = Vec::with_capacity(4);
        let child = || -> bool {
            let lease = pool.enter(1, &mut lent, false);
            let alone = lease.threads() == 1;
            let ran = AtomicUsize::new(0);
            let ok = lease
                .run(&|_| {
                    ran.fetch_add(1, Ordering::Relaxed);
                })
                .is_ok();
            drop(lease);
            let fresh = Pool::new(2).unwrap();
            until_the_worker_is_idle(&fresh);
            let lends = fresh.enter(1, &mut Vec::new(), false).threads() == 2;
            drop(fresh);
            alone && ok && ran.load(Ordering::Relaxed) == 1 && lends
        };
        // SAFETY: the child only computes with this pool and a new one, then `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = catch_unwind(AssertUnwindSafe(child)).unwrap_or(false);
            drop(pool);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let until = Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        let done = loop {
            // SAFETY: waits for our own child without blocking.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break true;
            }
            if Instant::now() > until {
                // SAFETY: our own child, hung.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(done, "the forked child hung");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child's checks failed (status {status})"
        );
        until_the_worker_is_idle(&pool);
        assert_eq!(
            pool.enter(1, &mut lent, false).threads(),
            2,
            "the parent's pool lends"
        );
    }

    /// A shared job whose helper never runs (a pool whose worker thread was never
    /// started stands for a virtual CPU the host has descheduled) completes on the
    /// caller's thread, and the helper is idle again for the next call; a helper that
    /// does run takes its share.
    #[test]
    fn a_shared_job_does_not_wait_for_a_helper_that_never_runs() {
        let pool = Pool(Arc::new(Pool::unstarted(2)));
        let mut lent = Vec::new();
        let next = AtomicUsize::new(0);
        let done = Mutex::new(Vec::new());
        let job = |t: usize| loop {
            let item = next.fetch_add(1, Ordering::Relaxed);
            if item >= 10 {
                return;
            }
            locked(&done).push((item, t));
        };
        {
            let lease = pool.enter(1, &mut lent, true);
            assert_eq!(lease.threads(), 2);
            lease.run_shared(&job).unwrap();
        }
        let done = locked(&done).clone();
        assert_eq!(done, (0..10).map(|i| (i, 0)).collect::<Vec<_>>());
        assert_eq!(
            locked(&pool.0.shared.gate).idle,
            vec![0],
            "called off and idle"
        );
        assert_eq!(pool.0.shared.slots[0].call.load(Ordering::Relaxed), 0);

        // A started pool: the worker takes part whenever it claims the call first. The
        // caller's share first waits (up to 20 ms) for the worker to take an item, so a
        // fast caller does not finish all 64 before a worker the OS runs a little later
        // (on a Zen 5 under the parallel test suite, 2000 calls of 64 bare items all
        // finished first).
        let pool = Pool::new(2).unwrap();
        until_the_worker_is_idle(&pool);
        let mut helped = false;
        for _ in 0..100 {
            let next = AtomicUsize::new(0);
            let by_worker = AtomicUsize::new(0);
            let lease = pool.enter(1, &mut lent, true);
            lease
                .run_shared(&|t| {
                    let since = Instant::now();
                    while t == 0
                        && by_worker.load(Ordering::Relaxed) == 0
                        && since.elapsed() < Duration::from_millis(20)
                    {
                        std::hint::spin_loop();
                    }
                    while next.fetch_add(1, Ordering::Relaxed) < 64 {
                        if t == 1 {
                            by_worker.fetch_add(1, Ordering::Relaxed);
                        }
                        std::hint::spin_loop();
                    }
                })
                .unwrap();
            drop(lease);
            helped |= by_worker.load(Ordering::Relaxed) > 0;
            if helped {
                break;
            }
            until_the_worker_is_idle(&pool);
        }
        assert!(helped, "the worker never took a share in 100 calls");
    }

    /// A stall after none backs off BACK_OFF_FIRST; each stall within a back-off's length of
    /// the last one's end doubles it, up to BACK_OFF; a stall long after starts again.
    #[test]
    fn back_offs_double_while_stalls_recur() {
        let first = BACK_OFF_FIRST.as_micros() as u64;
        let most = BACK_OFF.as_micros() as u64;
        assert_eq!(next_back_off(0, 0, 5_000_000), first);
        let (mut length, mut ended) = (0, 0);
        let mut now = 1_000_000;
        for want in [
            first,
            2 * first,
            4 * first,
            8 * first,
            16 * first,
            most,
            most,
        ] {
            length = next_back_off(length, ended, now);
            assert_eq!(length, want.min(most));
            ended = now + length;
            now = ended + length / 2; // the next stall soon after this back-off ends
        }
        assert_eq!(
            next_back_off(length, ended, ended + length + 1),
            first,
            "long after"
        );
    }

    /// A call that waited past STALL makes the next calls run alone for a while; then
    /// helpers are lent again. A call that meets another gets none, and none for
    /// CONTENDED_FOR after.
    /// Waits (up to 10 s) until the pool's worker is idle: a worker registers itself when
    /// its thread first runs, which a loaded host may delay past the first call.
    fn until_the_worker_is_idle(pool: &Pool) {
        let until = Instant::now() + Duration::from_secs(10);
        while locked(&pool.0.shared.gate).idle.is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn stalls_and_other_callers_make_calls_run_alone_for_a_while() {
        let pool = Pool::new(2).unwrap();
        let mut lent = Vec::new();
        until_the_worker_is_idle(&pool);
        {
            let lease = pool.enter(1, &mut lent, false);
            assert_eq!(lease.threads(), 2);
            let mut wait = Wait::new(&lease);
            let start = Instant::now();
            while start.elapsed() < STALL * 3 {
                wait.pause(|| true);
            }
        }
        let stalled = Instant::now();
        let threads = pool.enter(1, &mut lent, false).threads();
        // (Unless this thread was descheduled past the back-off meanwhile.)
        if stalled.elapsed() < BACK_OFF_FIRST {
            assert_eq!(threads, 1, "backing off");
        }
        std::thread::sleep(BACK_OFF + Duration::from_millis(50));
        until_the_worker_is_idle(&pool);
        assert_eq!(
            pool.enter(1, &mut lent, false).threads(),
            2,
            "backed off long enough"
        );
        let lease = pool.enter(1, &mut lent, false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut mine = Vec::new();
                assert_eq!(
                    pool.enter(1, &mut mine, false).threads(),
                    1,
                    "another is computing"
                );
            });
        });
        drop(lease);
        assert_eq!(
            pool.enter(1, &mut lent, false).threads(),
            1,
            "met another caller just now"
        );
        std::thread::sleep(CONTENDED_FOR + Duration::from_millis(20));
        until_the_worker_is_idle(&pool);
        assert_eq!(
            pool.enter(1, &mut lent, false).threads(),
            2,
            "alone long enough"
        );
    }
}
