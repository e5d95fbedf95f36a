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
//! One thread owns the [`Scratch`] and runs the batches; callers wait on their own
//! [`Ticket`] (blocking with [`Ticket::wait`], or `.await` as a [`Future`], which needs no
//! particular executor).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    /// it joins whatever is queued when the batching thread is next free).
    pub max_wait: Duration,
    /// Requests waiting beyond the batch being computed; one more is refused with
    /// [`Error::QueueFull`] (1 to [`MAX_QUEUE`]).
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
    /// No wait: a batch starts as soon as the batching thread is free, with every row
    /// queued by then, and rows that arrive while it computes form the next. A lone caller
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
    /// Requests accepted.
    pub requests: u64,
    /// Requests refused because the queue was full.
    pub refused: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Batches run.
    pub batches: u64,
    /// Requests waiting now.
    pub queued: usize,
    /// Batches by size: `batch_sizes[i]` counts batches of at most [`BATCH_BUCKETS`]`[i]`
    /// rows (and more than the bucket before).
    pub batch_sizes: Vec<u64>,
}

/// Upper bounds of the batch-size histogram's buckets.
pub const BATCH_BUCKETS: [usize; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// One answer, filled in by the batching thread.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<Vec<f32>>>,
    waker: Option<Waker>,
}

impl Slot {
    fn fill(&self, result: Result<Vec<f32>>) {
        let waker = {
            let mut s = lock(&self.state);
            s.result = Some(result);
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
pub struct Ticket {
    slot: Arc<Slot>,
}

impl Ticket {
    /// Blocks until the request's batch has run.
    pub fn wait(self) -> Result<Vec<f32>> {
        let mut s = lock(&self.slot.state);
        loop {
            if let Some(r) = s.result.take() {
                return r;
            }
            s = self.slot.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Future for Ticket {
    type Output = Result<Vec<f32>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = lock(&self.slot.state);
        match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

struct Request {
    raw: Vec<f32>,
    arrived: Instant,
    slot: Arc<Slot>,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Request>,
    closed: bool,
}

struct Shared {
    model: Arc<Model>,
    options: BatchOptions,
    queue: Mutex<Queue>,
    arrived: Condvar,
    requests: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    batches: AtomicU64,
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
    /// Starts the batching thread over `model`.
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
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            batches: AtomicU64::new(0),
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
        let model = &self.shared.model;
        if raw.len() != model.input_size() {
            return Err(Error::InputSize {
                len: raw.len(),
                batch: 1,
                inputs: model.input_size(),
            });
        }
        check_finite(&raw, model.input_size())?;
        let slot = Arc::new(Slot::default());
        {
            let mut q = lock(&self.shared.queue);
            if q.closed {
                return Err(Error::ShutDown);
            }
            if q.pending.len() >= self.shared.options.queue_capacity {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Error::QueueFull {
                    capacity: self.shared.options.queue_capacity,
                });
            }
            q.pending.push_back(Request {
                raw,
                arrived: Instant::now(),
                slot: slot.clone(),
            });
        }
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        self.shared.arrived.notify_one();
        Ok(Ticket { slot })
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
            queued: lock(&s.queue).pending.len(),
            batch_sizes: s
                .batch_sizes
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// Refuses new requests, answers every accepted one, and ends the batching thread.
    pub fn shut_down(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.arrived.notify_all();
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
    /// The batching thread: take a batch, run it, answer it; until closed and drained.
    fn serve(&self) {
        let mut scratch = Scratch::new();
        let (mut raw, mut logits) = (Vec::new(), Vec::new());
        let mut last = 1;
        while let Some((batch, left)) = self.next_batch(last) {
            // Rows taken and rows left queued: the callers now active. (The batch alone
            // would settle below them: callers answered late land in the next batch.)
            last = (batch.len() + left).min(self.options.max_batch);
            self.batches.fetch_add(1, Ordering::Relaxed);
            let bucket = BATCH_BUCKETS
                .iter()
                .position(|&b| batch.len() <= b)
                .unwrap_or(BATCH_BUCKETS.len() - 1);
            self.batch_sizes[bucket].fetch_add(1, Ordering::Relaxed);
            self.run(&batch, &mut scratch, &mut raw, &mut logits);
        }
    }

    /// Waits for a first request, then for more until the batch is full, the first has
    /// waited `max_wait` (plus `regather` while fewer than `last` rows are queued), or the
    /// queue closes; returns the batch and the rows left queued. `None`: closed and empty.
    fn next_batch(&self, last: usize) -> Option<(Vec<Request>, usize)> {
        let mut q = lock(&self.queue);
        loop {
            if let Some(first) = q.pending.front() {
                let wait = if q.pending.len() < last.min(self.options.max_batch) {
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
                    return Some((batch, q.pending.len()));
                }
                q = match deadline {
                    Some(d) => self
                        .arrived
                        .wait_timeout(q, d - now)
                        .map_or_else(|p| p.into_inner().0, |(g, _)| g),
                    None => self.arrived.wait(q).unwrap_or_else(|p| p.into_inner()),
                };
            } else if q.closed {
                return None;
            } else {
                q = self.arrived.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    /// Runs `batch` as one forward pass; if that fails (a row whose logits overflow, an
    /// activation that panics), runs each row alone so each gets its own answer.
    fn run(
        &self,
        batch: &[Request],
        scratch: &mut Scratch,
        raw: &mut Vec<f32>,
        logits: &mut Vec<f32>,
    ) {
        let (width, classes) = (self.model.input_size(), self.model.classes());
        raw.clear();
        for r in batch {
            raw.extend_from_slice(&r.raw);
        }
        logits.clear();
        logits.resize(batch.len() * classes, 0.0);
        // A panic (a plugin activation's) comes back as `Error::Panicked` and leaves the
        // model and the scratch usable, so the batching thread lives on.
        if self
            .model
            .forward_raw(raw, batch.len(), scratch, logits)
            .is_ok()
        {
            for (r, row) in batch.iter().zip(logits.chunks_exact(classes)) {
                r.slot.fill(Ok(row.to_vec()));
            }
            return;
        }
        for (i, r) in batch.iter().enumerate() {
            let mut out = vec![0.0; classes];
            let result = self
                .model
                .forward_raw(&raw[i * width..(i + 1) * width], 1, scratch, &mut out)
                .map(|()| out);
            if result.is_err() {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            r.slot.fill(result);
        }
    }
}
