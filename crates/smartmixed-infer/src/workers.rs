//! The worker threads a [`crate::Scratch`] keeps for split forward passes (by columns or
//! by rows). Spawning
//! threads per call costs more than a batch-1 pass takes (measured: 0.38 ms against
//! 0.21 ms on one thread), so the workers live as long as the scratch: between calls they
//! spin briefly (back-to-back calls start at once), then sleep on a condition variable.
//! A job that panics on any thread (an activation from a plugin crate, say) is caught
//! where it runs; the thread still counts itself finished, so [`Workers::run`] returns the
//! panic's message and the workers stay ready for the next call.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use smartmixed_core::fpenv::FlushDenormals;

/// A buffer several threads write in disjoint parts (rows or column ranges), each part
/// read only by its writer or after the writes have ended (a barrier, or the end of
/// [`Workers::run`]).
#[derive(Clone, Copy)]
pub(crate) struct Shared(pub(crate) *mut f32);
// SAFETY: see the type's contract; every use states which part a thread owns.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    pub(crate) fn new(buf: &mut [f32]) -> Self {
        Self(buf.as_mut_ptr())
    }

    /// Rows `rows` of a row-major buffer `width` values wide.
    ///
    /// # Safety
    /// The buffer must hold `rows.end * width` values, and no other thread may touch these
    /// rows while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn rows(&self, rows: std::ops::Range<usize>, width: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(rows.start * width), rows.len() * width)
    }
}

/// A job for every thread: called with the thread's index (1.. for workers).
type Job<'a> = dyn Fn(usize) + Sync + 'a;

/// How long an idle worker spins before sleeping, in spin-loop iterations (about 50 µs).
const SPINS: u32 = 20_000;

struct State {
    /// The address of the current job's `&Job`, valid from a generation's publication
    /// until every worker has counted itself in `finished` (see [`Workers::run`]).
    job: AtomicUsize,
    generation: AtomicUsize,
    finished: AtomicUsize,
    shutdown: AtomicBool,
    /// The first panic a worker caught in the current job: the thread's name and the
    /// panic's message. Written before the worker counts itself in `finished`.
    panic: Mutex<Option<Panic>>,
    sleep: Mutex<()>,
    wake: Condvar,
}

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

/// `threads - 1` worker threads (the caller is thread 0).
pub(crate) struct Workers {
    state: Arc<State>,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workers({})", self.handles.len())
    }
}

impl Workers {
    /// Starts `threads - 1` workers; `None` if the OS refuses a thread (the caller then
    /// runs on fewer).
    pub(crate) fn new(threads: usize) -> Option<Self> {
        let state = Arc::new(State {
            job: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panic: Mutex::new(None),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Self {
            state,
            handles: Vec::new(),
        };
        for t in 1..threads {
            let state = workers.state.clone();
            let handle = std::thread::Builder::new()
                .name(format!("smartmixed-infer-{t}"))
                .spawn(move || worker(&state, t))
                .ok()?;
            workers.handles.push(handle);
        }
        Some(workers)
    }

    /// Threads including the caller's.
    pub(crate) fn threads(&self) -> usize {
        self.handles.len() + 1
    }

    /// Runs `job(t)` on every thread `t` (0 on the caller's) and returns when all are done.
    /// A panicking job is caught on its thread (the others run their jobs to the end: a job
    /// that makes threads wait for each other must let them stop waiting, as
    /// `split::forward` does), and the first panic is returned: the caller's own, else a
    /// worker's. The workers are ready for the next call either way.
    pub(crate) fn run(&self, job: &Job<'_>) -> Result<(), Panic> {
        let s = &*self.state;
        // Workers read the job through this address: `job` lives on this frame, which
        // returns only after every worker has finished with it (a panic cannot leave this
        // frame early: the caller's share is caught below).
        let job_ref: &Job<'_> = job;
        s.job
            .store(&job_ref as *const &Job<'_> as usize, Ordering::Relaxed);
        s.finished.store(0, Ordering::Relaxed);
        {
            let _lock = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.generation.fetch_add(1, Ordering::Release);
        }
        s.wake.notify_all();
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        let mut spins = 0u32;
        while s.finished.load(Ordering::Acquire) < self.handles.len() {
            std::hint::spin_loop();
            spins += 1;
            if spins > SPINS {
                std::thread::yield_now();
            }
        }
        // Taken even when the caller panicked too, so no stale panic reaches the next call.
        let theirs = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (mine, theirs) {
            (Err(payload), _) => Err(Panic::new("the calling thread".into(), &*payload)),
            (Ok(()), Some(panic)) => Err(panic),
            (Ok(()), None) => Ok(()),
        }
    }
}

fn worker(s: &State, t: usize) {
    let _mode = FlushDenormals::set(true);
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        let generation = loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen || s.shutdown.load(Ordering::Acquire) {
                break g;
            }
            spins += 1;
            if spins < SPINS {
                std::hint::spin_loop();
                continue;
            }
            let lock = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            let _lock = s
                .wake
                .wait_while(lock, |_| {
                    s.generation.load(Ordering::Acquire) == seen
                        && !s.shutdown.load(Ordering::Acquire)
                })
                .unwrap_or_else(|e| e.into_inner());
        };
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = generation;
        // SAFETY: `Workers::run` stored the address of a live `&Job` before publishing this
        // generation (Release, read here with Acquire), and keeps it alive until
        // `finished` counts this worker.
        let job: &Job<'_> = unsafe { *(s.job.load(Ordering::Relaxed) as *const &Job<'_>) };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job(t))) {
            let name = std::thread::current()
                .name()
                .map_or_else(|| format!("worker thread {t}"), |n| format!("thread `{n}`"));
            let panic = Panic::new(name, &*payload);
            // A payload whose drop panics must not end this thread before it counts itself.
            let _ = catch_unwind(AssertUnwindSafe(|| drop(payload)));
            let mut slot = s.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(panic);
        }
        // Counted whether the job returned or panicked: the caller waits for every worker.
        s.finished.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        {
            let _lock = self.state.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.state.shutdown.store(true, Ordering::Release);
        }
        self.state.wake.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
