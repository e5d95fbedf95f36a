//! The threads that train: one rayon pool per run, on which the whole run executes, so
//! the loop, dfdx's matmul workers (they use the current rayon pool) and the trainer's own
//! parallel kernels all run on threads whose floating-point mode the run chose, and the
//! caller's thread is left as it was.

use smartmixed_core::fpenv;

use crate::{Error, Result};

/// A rayon pool whose every worker has the flush-to-zero mode `flush_denormals`.
#[derive(Debug)]
pub struct TrainPool {
    pool: rayon::ThreadPool,
    flush_denormals: bool,
}

/// The most training threads a run may ask for (a typo of `--threads` must not try to
/// start a million threads).
pub const MAX_THREADS: usize = 1024;

/// The most training threads a run starts per core: beyond a few, threads only wait for
/// each other (1024 threads on 2 cores spent 190 times the CPU time of 2).
pub const THREADS_PER_CORE: usize = 4;

/// The number of threads a run uses when none is given: every core the OS lets it use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The threads a run asking for `threads` starts: [`default_threads`] for 0, and no more
/// than [`THREADS_PER_CORE`] per core (callers warn when this is fewer than asked).
pub fn capped_threads(threads: usize) -> usize {
    match threads {
        0 => default_threads(),
        n => n.min(THREADS_PER_CORE.saturating_mul(default_threads())),
    }
}

/// Activation evaluations (or additions) below which a kernel runs on its calling thread
/// alone, and multiply-adds below which a product does: under these, waking another
/// worker (a futex, then the OS scheduling it: tens of microseconds on a virtual machine)
/// costs more than half the work saves. Small tables train on one thread: wine's fit
/// (13-64-32-3, batch 32) spent about a fifth of its time in rayon's wake-ups, yields and
/// steals when every kernel split its rows over two threads.
pub(crate) const SPLIT_FROM_EVALUATIONS: usize = 1 << 15;
/// See [`SPLIT_FROM_EVALUATIONS`].
pub(crate) const SPLIT_FROM_MULTIPLY_ADDS: usize = 1 << 20;

/// The threads of the current pool worth splitting `work` over: one below `split_from`.
pub(crate) fn threads_for(work: usize, split_from: usize) -> usize {
    if work < split_from {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// The least items one rayon task takes (`with_min_len`) in a split of `work`: all of them
/// below `split_from`, so the items (the shares a split would make) run in order on the
/// calling thread, with the split's results bit for bit.
pub(crate) fn least_items_for(work: usize, split_from: usize) -> usize {
    if threads_for(work, split_from) > 1 {
        1
    } else {
        usize::MAX
    }
}

impl TrainPool {
    /// [`capped_threads`]`(threads)` workers, each flushing subnormals to zero when
    /// `flush_denormals` (set in the start hook, before the worker runs any job; a rayon
    /// pool never adds workers later).
    pub fn new(threads: usize, flush_denormals: bool) -> Result<Self> {
        if threads > MAX_THREADS {
            return Err(Error::Device(format!(
                "{threads} training threads asked for; at most {MAX_THREADS}"
            )));
        }
        let threads = capped_threads(threads);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("smartmixed-train-{i}"))
            .start_handler(move |_| fpenv::set_flush_denormals(flush_denormals))
            .build()
            .map_err(|e| Error::Device(format!("cannot start {threads} training threads: {e}")))?;
        Ok(Self {
            pool,
            flush_denormals,
        })
    }

    /// Runs `f` on one of the pool's workers; rayon work inside it stays in the pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Worker count.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Whether the workers flush subnormals (as asked; `false` where the CPU cannot).
    pub fn flushes_denormals(&self) -> bool {
        self.flush_denormals && fpenv::SUPPORTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_has_the_mode_asked_for_and_the_caller_keeps_its_own() {
        let caller = fpenv::flush_denormals_enabled();
        for flush in [true, false] {
            let pool = TrainPool::new(3, flush).unwrap();
            assert_eq!(pool.threads(), 3);
            // Each worker's mode, read back from inside the worker.
            let modes = pool.pool.broadcast(|_| fpenv::flush_denormals_enabled());
            assert_eq!(modes, vec![flush && fpenv::SUPPORTED; 3]);
            // Work inside `install` (the trainer's loop) and nested parallel work (dfdx's
            // matmul, the kernels) both see the mode.
            let nested: Vec<bool> = pool.install(|| {
                use rayon::prelude::*;
                (0..64)
                    .into_par_iter()
                    .map(|_| fpenv::flush_denormals_enabled())
                    .collect()
            });
            assert!(nested.iter().all(|&m| m == (flush && fpenv::SUPPORTED)));
            assert_eq!(fpenv::flush_denormals_enabled(), caller);
        }
    }

    /// Issue 18 item 10: `--threads 1024` on 2 cores started 1024 threads.
    #[test]
    fn thread_counts_past_four_per_core_are_capped() {
        let cores = default_threads();
        let cap = (4 * cores).min(MAX_THREADS);
        assert_eq!(TrainPool::new(MAX_THREADS, false).unwrap().threads(), cap);
        assert_eq!(capped_threads(4 * cores + 1), 4 * cores);
        assert_eq!(capped_threads(4 * cores), 4 * cores);
        assert_eq!(capped_threads(1), 1);
        assert_eq!(capped_threads(0), cores);
    }

    #[test]
    fn absurd_thread_counts_are_refused_before_any_thread_starts() {
        let err = TrainPool::new(MAX_THREADS + 1, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 1024"), "{err}");
    }
}
