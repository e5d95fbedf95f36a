//! Dynamic batching: single requests from any number of threads or async tasks, run
//! together as one batch (up to a size, or after a wait), each answered on its own.
//!
//! Why: a batch-1 forward pass streams every weight for one row, so many small requests
//! cost 4-5x more per row than the same rows in one batch of 32 (measured: 8 callers of
//! batch 1 reached 14k rows/s, one caller of batch 32 35-51k). Services put a dynamic
//! batcher in front of a model (Triton's dynamic batching, TorchServe's
//! `batch_size`/`max_batch_delay`); this is that, in the library, with a bounded queue that
//! refuses work when full instead of growing.
//!
//! One batch runs at a time, on a caller's thread: a caller that blocks for its answer
//! ([`Ticket::wait`], [`BatchedModel::logits`]) and finds no batch running takes every row
//! queued (its own among them, up to the batch size) and runs them, then hands the role to
//! the caller waiting for the first row still queued, or lets it go. So a lone caller runs
//! its row on its own thread, with no hand-off to another thread and back (two wake-ups of
//! an idle CPU, which on a virtual machine cost 0.1-0.2 ms a request and ms at the tail:
//! measured at one caller, 2.5k rows/s and p99 2.2 ms through a batching thread against
//! 5.4k and 0.4 ms now, as fast as calling the model). Rows whose tickets are awaited as a
//! [`Future`] (which needs no particular executor) or dropped are run by the batcher's own
//! thread, which no blocking caller needs.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::exec::{locked as lock, Scratch};
use crate::model::{check_finite, Model, Prediction};
use crate::{Error, Result};

/// How a [`BatchedModel`] groups requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// The most rows in one batch (1 to [`MAX_BATCH_ROWS`]).
    pub max_batch: usize,
    /// The longest a request waits for others to join its batch, from its arrival (zero:
    /// it joins whatever is queued when no batch is running; at most [`MAX_WAIT`]).
    pub max_wait: Duration,
    /// Rows (requests of [`BatchedModel::submit`]) waiting beyond the batch being
    /// computed; one more is refused with [`Error::QueueFull`] (1 to [`MAX_QUEUE`]).
    pub queue_capacity: usize,
    /// How much longer than `max_wait` a request may wait while fewer rows are queued than
    /// the last batch took plus those it left queued (at most [`MAX_REGATHER`]; zero:
    /// never). Callers that wait for their answer
    /// submit again only after it, one by one as each wakes: without this, a batch would
    /// start with the first of them back and the rest would form the next, so batches
    /// would stay far below the number of callers. A lone caller's batches are of one row,
    /// which is always there: it never waits.
    pub regather: Duration,
}

/// Largest accepted [`BatchOptions::max_wait`]: a batcher is for answers within
/// milliseconds; a longer wait is a mistake (a lone row would sit that long, and a
/// shut-down could take that long).
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// Largest accepted [`BatchOptions::regather`].
pub const MAX_REGATHER: Duration = Duration::from_secs(1);

/// Largest accepted [`BatchOptions::max_batch`].
pub const MAX_BATCH_ROWS: usize = 4096;
/// Largest accepted [`BatchOptions::queue_capacity`].
pub const MAX_QUEUE: usize = 1 << 20;

impl Default for BatchOptions {
    /// Batches of up to 32 rows (where a batch costs per row about what 256 does), no
    /// wait, 1024 requests queued. Each batch runs on the model's pool (see
    /// [`Model::with_pool`]): all its threads when nothing else computes.
    ///
    /// No wait: a batch starts as soon as no other is running, with every row queued by
    /// then, and rows that arrive while it computes form the next. A lone caller
    /// then pays nothing for batching, and many callers still share batches: measured on
    /// 2 cores with 784-768-...-10, a 1 ms wait made one caller 9x slower (764 against
    /// 6785 rows/s) and 64 callers 23% slower (21.9k against 28.4k).
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::ZERO,
            queue_capacity: 1024,
            regather: Duration::from_micros(100),
        }
    }
}

/// Counters of a [`BatchedModel`] since it started (for a `/metrics` endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStats {
    /// Requests (rows) accepted.
    pub requests: u64,
    /// Rows refused because the queue had no room for them.
    pub refused: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Batches run.
    pub batches: u64,
    /// Rows those batches held, all together (the batch-size histogram's sum).
    pub batched_rows: u64,
    /// Requests waiting now.
    pub queued: usize,
    /// Batches by size: `batch_sizes[i]` counts batches of at most [`BATCH_BUCKETS`]`[i]`
    /// rows (and more than the bucket before).
    pub batch_sizes: Vec<u64>,
}

/// Upper bounds of the batch-size histogram's buckets.
pub const BATCH_BUCKETS: [usize; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// One answer, filled in by whichever thread runs its batch.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<Vec<f32>>>,
    waker: Option<Waker>,
    /// A thread blocks in [`Ticket::wait`] on this slot: it can be handed the runner's role.
    waiting: bool,
    /// The runner's role was handed to this slot's waiting thread.
    lead: bool,
    /// `result` was filled (it may have been taken since).
    answered: bool,
}

impl Slot {
    /// Fills the answer `result()` unless it already has one (a request dropped
    /// unanswered gets an error, so no waiter blocks forever; the error is not built for
    /// a request already answered).
    fn fill(&self, result: impl FnOnce() -> Result<Vec<f32>>) {
        let waker = {
            let mut s = lock(&self.state);
            if s.answered {
                return;
            }
            s.answered = true;
            s.result = Some(result());
            s.waker.take()
        };
        // Woken with the lock released: an executor may poll the ticket inside `wake`.
        if let Some(w) = waker {
            w.wake();
        }
        self.done.notify_all();
    }
}

/// The answer to one submitted request: the row's logits, or why there are none.
///
/// [`Self::wait`] runs batches on the waiting thread when no other thread is running one
/// (so a lone caller pays no hand-off between threads); `.await` leaves them to the
/// batcher's own thread.
pub struct Ticket {
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    /// The answer was taken (by `wait` or a ready `poll`).
    taken: bool,
}

impl Ticket {
    /// Blocks until the request's batch has run; runs it (and any batch queued before it)
    /// on this thread if no other thread is running one.
    pub fn wait(mut self) -> Result<Vec<f32>> {
        self.taken = true;
        self.shared.wait_for(&self.slot)
    }
}

impl Future for Ticket {
    type Output = Result<Vec<f32>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        {
            let mut s = lock(&self.slot.state);
            if let Some(r) = s.result.take() {
                drop(s);
                self.taken = true;
                return Poll::Ready(r);
            }
            s.waker = Some(cx.waker().clone());
        }
        // No thread waits here to run the batch: the batcher's thread will.
        self.shared.wake_the_thread_if_idle();
        Poll::Pending
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.taken {
            // Nobody will wait for this answer: make sure its row does not sit queued.
            self.shared.wake_the_thread_if_idle();
        }
    }
}

struct Request {
    raw: Vec<f32>,
    /// Its place among the rows of its `submit_all` (0 for `submit`): the row its errors
    /// name.
    index: usize,
    arrived: Instant,
    slot: Arc<Slot>,
}

impl Drop for Request {
    fn drop(&mut self) {
        // Answered already, unless the batch that held it unwound (which `forward_raw`
        // never does: it returns panics as errors); then say so rather than hang.
        self.slot.fill(|| {
            Err(Error::Panicked {
                thread: "the batch runner".into(),
                message: "the batch ended without answering this request".into(),
            })
        });
    }
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Request>,
    closed: bool,
    /// A thread (a waiting caller or the batcher's own) is running a batch: one at a time,
    /// so that batches gather every queued row.
    running: bool,
    /// The runner waits on `arrived` for company.
    gathering: bool,
    /// Rows the last batch took plus those it left queued, falling by at most one a
    /// batch (see [`BatchOptions::regather`]).
    last: usize,
}

/// A runner's buffers, reused from batch to batch.
#[derive(Default)]
struct Runner {
    scratch: Scratch,
    raw: Vec<f32>,
    logits: Vec<f32>,
}

struct Shared {
    model: Arc<Model>,
    options: BatchOptions,
    queue: Mutex<Queue>,
    /// Rows arrived, for a runner gathering company.
    arrived: Condvar,
    /// Work for the batcher's own thread: rows no waiting caller will run, or shut-down.
    work: Condvar,
    /// The buffers of the one thread running batches (held while it runs).
    runner: Mutex<Runner>,
    requests: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    batches: AtomicU64,
    batched_rows: AtomicU64,
    batch_sizes: [AtomicU64; BATCH_BUCKETS.len()],
}

/// A shared [`Model`] behind a dynamic batcher. `Send + Sync`: share it in an `Arc`.
/// Dropping it (or [`Self::shut_down`]) refuses new requests and answers every one
/// already accepted before its thread ends.
pub struct BatchedModel {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for BatchedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedModel")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl BatchedModel {
    /// Starts the batcher's thread (for awaited tickets) over `model`.
    pub fn new(model: Arc<Model>, options: BatchOptions) -> Result<Self> {
        let bad = |what: &str, value: usize, max: usize| Error::BatchOptions {
            field: what.to_string(),
            message: format!("{value}, expected 1 to {max}"),
        };
        if !(1..=MAX_BATCH_ROWS).contains(&options.max_batch) {
            return Err(bad("max_batch", options.max_batch, MAX_BATCH_ROWS));
        }
        if !(1..=MAX_QUEUE).contains(&options.queue_capacity) {
            return Err(bad("queue_capacity", options.queue_capacity, MAX_QUEUE));
        }
        if options.max_wait > MAX_WAIT {
            return Err(Error::BatchOptions {
                field: "max_wait".into(),
                message: format!("{:?}, expected at most {MAX_WAIT:?}", options.max_wait),
            });
        }
        if options.regather > MAX_REGATHER {
            return Err(Error::BatchOptions {
                field: "regather".into(),
                message: format!("{:?}, expected at most {MAX_REGATHER:?}", options.regather),
            });
        }
        let shared = Arc::new(Shared {
            model,
            options,
            queue: Mutex::new(Queue::default()),
            arrived: Condvar::new(),
            work: Condvar::new(),
            runner: Mutex::new(Runner::default()),
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batched_rows: AtomicU64::new(0),
            batch_sizes: Default::default(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("smartmixed-batcher".into())
            .spawn(move || worker.serve())
            .map_err(|e| Error::Thread(e.to_string()))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The model the batches run.
    pub fn model(&self) -> &Model {
        &self.shared.model
    }

    /// The options in force.
    pub fn options(&self) -> BatchOptions {
        self.shared.options
    }

    /// Queues one raw row (the model's input width, before preprocessing); its answer
    /// comes through the ticket. A row of the wrong width or with a non-finite value is
    /// refused here, so that it cannot fail the batch it would join.
    pub fn submit(&self, raw: Vec<f32>) -> Result<Ticket> {
        self.check_row(&raw, 0)?;
        let mut tickets = self.enqueue(vec![raw])?;
        Ok(tickets.remove(0))
    }

    /// Queues several raw rows, all or none: if the queue has no room for every one,
    /// none is queued ([`Error::QueueFull`]), so no row is computed for a caller that
    /// could not get all its answers. A bad row (wrong width, non-finite value) is refused
    /// with its index in `rows` as the error's row.
    pub fn submit_all(&self, rows: Vec<Vec<f32>>) -> Result<Vec<Ticket>> {
        for (i, raw) in rows.iter().enumerate() {
            self.check_row(raw, i)?;
        }
        self.enqueue(rows)
    }

    /// A row the model can take: its width, and every value finite (row `index` in the
    /// error).
    fn check_row(&self, raw: &[f32], index: usize) -> Result<()> {
        let model = &self.shared.model;
        if raw.len() != model.input_size() {
            return Err(Error::InputSize {
                len: raw.len(),
                batch: 1,
                inputs: model.input_size(),
            });
        }
        check_finite(raw, model.input_size()).map_err(|e| match e {
            Error::NonFiniteInput {
                index: i, value, ..
            } => Error::NonFiniteInput {
                row: index,
                index: i,
                value,
            },
            e => e,
        })
    }

    /// Queues checked rows, all or none.
    fn enqueue(&self, rows: Vec<Vec<f32>>) -> Result<Vec<Ticket>> {
        let slots: Vec<Arc<Slot>> = rows.iter().map(|_| Arc::default()).collect();
        {
            let mut q = lock(&self.shared.queue);
            if q.closed {
                return Err(Error::ShutDown);
            }
            let capacity = self.shared.options.queue_capacity;
            if q.pending.len().saturating_add(rows.len()) > capacity {
                self.shared
                    .refused
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                return Err(Error::QueueFull { capacity });
            }
            let arrived = Instant::now();
            for (index, (raw, slot)) in rows.into_iter().zip(&slots).enumerate() {
                q.pending.push_back(Request {
                    raw,
                    index,
                    arrived,
                    slot: slot.clone(),
                });
            }
            if q.gathering {
                self.shared.arrived.notify_one();
            }
        }
        self.shared
            .requests
            .fetch_add(slots.len() as u64, Ordering::Relaxed);
        Ok(slots
            .into_iter()
            .map(|slot| Ticket {
                slot,
                shared: self.shared.clone(),
                taken: false,
            })
            .collect())
    }

    /// One raw row's logits, blocking until its batch has run.
    pub fn logits(&self, raw: &[f32]) -> Result<Vec<f32>> {
        self.submit(raw.to_vec())?.wait()
    }

    /// One raw row's class and probabilities, blocking until its batch has run.
    pub fn predict_raw(&self, raw: &[f32]) -> Result<Prediction> {
        self.logits(raw).map(|l| Prediction::from_logits(&l))
    }

    /// Counters since the start.
    pub fn stats(&self) -> BatchStats {
        let s = &self.shared;
        BatchStats {
            requests: s.requests.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            batched_rows: s.batched_rows.load(Ordering::Relaxed),
            queued: lock(&s.queue).pending.len(),
            batch_sizes: s
                .batch_sizes
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// Refuses new requests and runs the queued ones at once (no batch waits out
    /// `max_wait` any more), without waiting for them: what a server calls when its
    /// shutdown starts, from a thread that must not block. [`Self::shut_down`] then waits.
    pub fn close(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.arrived.notify_all();
        self.shared.work.notify_all();
    }

    /// Refuses new requests, answers every accepted one, and ends the batcher's thread.
    pub fn shut_down(&self) {
        self.close();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for BatchedModel {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl Shared {
    /// The batcher's own thread: runs the batches that no waiting caller runs (rows whose
    /// tickets are awaited, or dropped), until closed and drained.
    fn serve(&self) {
        let mut q = lock(&self.queue);
        loop {
            if !q.running && !q.pending.is_empty() {
                q.running = true;
                while !q.pending.is_empty() {
                    q = self.run_one(q).0;
                }
                q.running = false;
            } else if q.closed && q.pending.is_empty() && !q.running {
                return;
            } else {
                q = self.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    /// Wakes the batcher's thread if rows wait and no thread runs batches (a row whose
    /// ticket is awaited or was dropped: no caller's thread will run it).
    fn wake_the_thread_if_idle(&self) {
        let q = lock(&self.queue);
        if !q.running && !q.pending.is_empty() {
            self.work.notify_one();
        }
    }

    /// A caller's wait for `slot`: while no thread runs batches (or the role is handed to
    /// it), this thread runs them, until its own row has run; else it sleeps until
    /// answered or handed the role.
    fn wait_for(&self, slot: &Slot) -> Result<Vec<f32>> {
        loop {
            let mut q = lock(&self.queue);
            let lead = {
                let mut s = lock(&slot.state);
                let lead = std::mem::take(&mut s.lead);
                if let Some(r) = s.result.take() {
                    s.waiting = false;
                    drop(s);
                    // (Handed the role but answered already: pass it on, never keep it.)
                    if lead {
                        self.hand_on(q);
                    }
                    return r;
                }
                lead
            };
            // Unanswered and no batch running: the row is still queued (a runner answers
            // its rows before it lets go of the role).
            if lead || !q.running {
                q.running = true;
                loop {
                    let ran;
                    (q, ran) = self.run_one(q);
                    // (Not `ran` with the row unanswered: it is queued, and ran next time.)
                    if !ran || lock(&slot.state).answered {
                        break;
                    }
                }
                self.hand_on(q);
                continue;
            }
            drop(q);
            let mut s = lock(&slot.state);
            s.waiting = true;
            while s.result.is_none() && !s.lead {
                s = slot.done.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    /// A caller whose row has run lets go of the runner's role: to the thread waiting
    /// for the first queued row if there is one (it runs that row's batch at once), else
    /// to the batcher's thread; with nothing queued, to nobody.
    fn hand_on(&self, mut q: MutexGuard<'_, Queue>) {
        if let Some(first) = q.pending.front() {
            let mut s = lock(&first.slot.state);
            if s.waiting {
                s.lead = true;
                drop(s);
                first.slot.done.notify_all();
                return;
            }
        }
        q.running = false;
        if !q.pending.is_empty() || q.closed {
            self.work.notify_one();
        }
    }

    /// Gathers one batch (see [`Self::gather`]) and runs it, with the queue unlocked while
    /// it computes; the caller holds the runner's role throughout. `false`: nothing was
    /// queued.
    fn run_one<'q>(&'q self, q: MutexGuard<'q, Queue>) -> (MutexGuard<'q, Queue>, bool) {
        let (mut q, batch) = self.gather(q);
        if batch.is_empty() {
            return (q, false);
        }
        // Rows taken and rows left queued: the callers now active. (The batch alone
        // would settle below them: callers answered late land in the next batch.) Down
        // by one row a batch at most: a caller that runs its own batch is back before
        // the callers it answered have woken, and a batch of its row alone must not
        // make the next ones wait for nobody else.
        let now_active = batch.len() + q.pending.len();
        q.last = now_active
            .max(q.last.saturating_sub(1))
            .min(self.options.max_batch);
        drop(q);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_rows
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let bucket = BATCH_BUCKETS
            .iter()
            .position(|&b| batch.len() <= b)
            .unwrap_or(BATCH_BUCKETS.len() - 1);
        self.batch_sizes[bucket].fetch_add(1, Ordering::Relaxed);
        let mut runner = lock(&self.runner);
        // Nothing in a run unwinds (the model returns panics as errors) but a waker an
        // executor gave a ticket: caught, so the role is never lost with this thread.
        let run = catch_unwind(AssertUnwindSafe(|| self.run(&batch, &mut runner)));
        if run.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            *runner = Runner::default();
        }
        drop(runner);
        // Dropping the batch's requests answers any the run left unanswered.
        drop(batch);
        (lock(&self.queue), true)
    }

    /// Waits (the lock released) until the batch is full, the first row has waited
    /// `max_wait` (plus `regather` while fewer than the last batch's rows are queued), or
    /// the queue closes; takes the batch. Empty if nothing is queued.
    fn gather<'q>(&'q self, mut q: MutexGuard<'q, Queue>) -> (MutexGuard<'q, Queue>, Vec<Request>) {
        loop {
            let Some(first) = q.pending.front() else {
                return (q, Vec::new());
            };
            let wait = if q.pending.len() < q.last.min(self.options.max_batch) {
                self.options.max_wait.saturating_add(self.options.regather)
            } else {
                self.options.max_wait
            };
            // A deadline past what `Instant` can hold: no deadline.
            let deadline = first.arrived.checked_add(wait);
            let now = Instant::now();
            let due = deadline.is_some_and(|d| now >= d);
            if q.pending.len() >= self.options.max_batch || q.closed || due {
                let n = q.pending.len().min(self.options.max_batch);
                let batch: Vec<Request> = q.pending.drain(..n).collect();
                return (q, batch);
            }
            q.gathering = true;
            q = match deadline {
                Some(d) => self
                    .arrived
                    .wait_timeout(q, d - now)
                    .map_or_else(|p| p.into_inner().0, |(g, _)| g),
                None => self.arrived.wait(q).unwrap_or_else(|p| p.into_inner()),
            };
            q.gathering = false;
        }
    }

    /// Runs `batch` as one forward pass; if that fails (a row whose logits overflow, an
    /// activation that panics), runs each row alone so each gets its own answer.
    fn run(&self, batch: &[Request], runner: &mut Runner) {
        let Runner {
            scratch,
            raw,
            logits,
        } = runner;
        let (width, classes) = (self.model.input_size(), self.model.classes());
        raw.clear();
        for r in batch {
            raw.extend_from_slice(&r.raw);
        }
        logits.clear();
        logits.resize(batch.len() * classes, 0.0);
        // A panic (a plugin activation's) comes back as `Error::Panicked` and leaves the
        // model and the scratch usable, so the thread running batches lives on.
        if self
            .model
            .forward_raw(raw, batch.len(), scratch, logits)
            .is_ok()
        {
            for (r, row) in batch.iter().zip(logits.chunks_exact(classes)) {
                r.slot.fill(|| Ok(row.to_vec()));
            }
            return;
        }
        for (i, r) in batch.iter().enumerate() {
            let mut out = vec![0.0; classes];
            let result = self
                .model
                .forward_raw(&raw[i * width..(i + 1) * width], 1, scratch, &mut out)
                .map(|()| out)
                .map_err(|e| e.at_row(r.index));
            if result.is_err() {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            r.slot.fill(|| result);
        }
    }
}
