//! The runtime when a thread computing a call panics (an activation from a plugin crate,
//! here one registered by this test that panics on a magic input), and under concurrent
//! use: one model shared by threads, each with its own scratch, every answer bit for bit
//! one thread's. Each test has a watchdog: a hang (a thread left waiting for one that
//! panicked) aborts the test process instead of stalling CI.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use safetensors::tensor::{Dtype, TensorView};
use smartmixed_infer::{fpenv, register_activation, Error, Model, Pool, Scratch};

use smartmixed_activations_extra as _;

/// The pre-activation (after weights and bias) at which `test_panics_at_magic` panics.
const MAGIC: f32 = 12345.0;

register_activation!(
    "test_panics_at_magic",
    forward: |x| {
        if x == 12345.0 {
            panic!("test_panics_at_magic reached its magic input");
        }
        x.max(0.0)
    },
    derivative: |x, _y| if x > 0.0 { 1.0 } else { 0.0 },
);

/// Calls of `test_counts_workers` made on a pool worker while `COUNTING` is set.
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static ON_WORKERS: AtomicUsize = AtomicUsize::new(0);

register_activation!(
    "test_counts_workers",
    forward: |x| {
        if COUNTING.load(Ordering::Relaxed)
            && std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("smartmixed-infer-"))
        {
            ON_WORKERS.fetch_add(1, Ordering::Relaxed);
        }
        x.max(0.0)
    },
    derivative: |x, _y| if x > 0.0 { 1.0 } else { 0.0 },
);

/// Aborts the process if the returned sender is not dropped within `secs` seconds.
fn watchdog(what: &'static str, secs: u64) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
            eprintln!("{what}: still running after {secs} s (a thread waits forever?)");
            std::process::abort();
        }
    });
    tx
}

/// A network of layers `widths[i] -> widths[i + 1]`; `groups[i]` the hidden layer `i`'s
/// `(activation, len)` groups in order; `weight(layer, out, in)` and `bias(layer, out)`.
fn network(
    widths: &[usize],
    groups: &[Vec<(&str, usize)>],
    weight: impl Fn(usize, usize, usize) -> f32,
    bias: impl Fn(usize, usize) -> f32,
) -> Model {
    let mut manifest = format!(
        "format = \"smartmixed-manifest\"\nversion = 1\ninputs = {}\noutput_activation = \"identity\"\n",
        widths[0]
    );
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for l in 0..widths.len() - 1 {
        let (k, n) = (widths[l], widths[l + 1]);
        manifest += &format!("\n[[layers]]\ninputs = {k}\noutputs = {n}\n");
        if let Some(gs) = groups.get(l) {
            let index: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            manifest += &format!("original_index = [{}]\n", index.join(", "));
            let mut start = 0;
            for (act, len) in gs {
                manifest += &format!(
                    "\n[[layers.groups]]\nactivation = \"{act}\"\nstart = {start}\nlen = {len}\n"
                );
                start += len;
            }
        }
        let w: Vec<u8> = (0..n * k)
            .flat_map(|i| weight(l, i / k, i % k).to_le_bytes())
            .collect();
        let b: Vec<u8> = (0..n).flat_map(|o| bias(l, o).to_le_bytes()).collect();
        tensors.push((format!("layers.{l}.weight"), vec![n, k], w));
        tensors.push((format!("layers.{l}.bias"), vec![n], b));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, &None).unwrap();
    Model::from_bytes(&bytes, manifest.as_bytes()).unwrap()
}

/// A value in [-1.6, 1.6] that is never exactly 1 (so no neuron but the trigger maps the
/// magic input to the magic pre-activation).
fn pattern(i: usize) -> f32 {
    ((i * 7 % 23) as f32 - 11.3) / 7.0
}

/// `rows` rows of 3 features in [-1.6, 1.6].
fn inputs(rows: usize, seed: usize) -> Vec<f32> {
    (0..rows * 3).map(|i| pattern(i * 13 + seed)).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Hidden neuron 150 of the first layer (panel 4 of 10, so one thread's columns in a
/// column split) computes exactly `x[0]` and applies `test_panics_at_magic`; every thread
/// count and batch size (1 and 3: column split with the GEMV; 32: column split with the
/// matmul; 300: row split; one thread: no split) must turn the panic into an error naming
/// it, in bounded time, and then give the same bits as the same network on one thread.
#[test]
fn a_panicking_activation_is_an_error_and_the_model_and_scratch_stay_usable() {
    let _dog = watchdog("panicking activation", 90);
    let make = || {
        network(
            &[3, 300, 40, 5],
            &[
                vec![("relu", 150), ("test_panics_at_magic", 1), ("tanh", 149)],
                vec![("tanh", 20), ("relu", 20)],
            ],
            |l, o, i| match (l, o) {
                (0, 150) => [1.0, 0.0, 0.0][i],
                _ => pattern(l * 1000 + o * 31 + i),
            },
            |l, o| {
                if (l, o) == (0, 150) {
                    0.0
                } else {
                    pattern(o + l) / 4.0
                }
            },
        )
    };
    // The reference: one thread, no split.
    let alone = make().with_pool(Pool::new(1).unwrap());
    for threads in [1, 2, 4] {
        let model = make().with_pool(Pool::new(threads).unwrap());
        let mut scratch = Scratch::new();
        for batch in [1, 3, 12, 32, 300] {
            let mut out = vec![0.0f32; batch * model.classes()];
            let mut want = out.clone();
            for (round, row) in [0, batch - 1, batch / 2, 0, batch - 1]
                .into_iter()
                .enumerate()
            {
                let thread = panic_at_row(&model, &mut scratch, batch, row);
                assert!(
                    thread == "the calling thread" || (threads > 1 && is_worker(&thread)),
                    "{threads} threads, batch {batch}: {thread}"
                );
                // The next call on the same scratch: one thread's bits, from a fresh scratch.
                let x = inputs(batch, round + 7);
                model.forward(&x, batch, &mut scratch, &mut out).unwrap();
                alone
                    .forward(&x, batch, &mut Scratch::new(), &mut want)
                    .unwrap();
                assert_eq!(
                    bits(&out),
                    bits(&want),
                    "{threads} threads, batch {batch}, after a panic at row {row}"
                );
            }
        }
    }
    // Which thread meets the magic row depends on who takes its work first: repeat until a
    // worker has (with packed weights: column split at batch 12, row split at 32 and 300;
    // else row split at 32 and 300), so that path surely ran. For
    // up to 20 s, not a count: on a loaded host the pool stops lending workers for 200 ms
    // after each stall, and a count of calls could all fall in such pauses.
    let model = make().with_pool(Pool::new(2).unwrap());
    for batch in [12, 32, 300] {
        let mut scratch = Scratch::new();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        let worker = std::iter::from_fn(|| (std::time::Instant::now() < until).then_some(()))
            .any(|()| is_worker(&panic_at_row(&model, &mut scratch, batch, batch - 1)));
        assert!(worker, "batch {batch}: no worker ever met the magic row");
        let x = inputs(batch, 3);
        let (mut out, mut want) = (vec![0.0; batch * 5], vec![0.0; batch * 5]);
        model.forward(&x, batch, &mut scratch, &mut out).unwrap();
        alone
            .forward(&x, batch, &mut Scratch::new(), &mut want)
            .unwrap();
        assert_eq!(bits(&out), bits(&want), "batch {batch}");
    }
}

fn is_worker(thread: &str) -> bool {
    thread.starts_with("thread `smartmixed-infer-")
}

/// Runs `batch` rows with the magic input at `row`: the error must be `Panicked` with the
/// activation's message, and the caller's floating-point mode must be its own again (the
/// call flushes subnormals while it runs); returns the thread the error names.
fn panic_at_row(model: &Model, scratch: &mut Scratch, batch: usize, row: usize) -> String {
    let mut x = inputs(batch, row);
    x[row * 3..row * 3 + 3].copy_from_slice(&[MAGIC, 0.0, 0.0]);
    let mut out = vec![0.0f32; batch * model.classes()];
    let result = model.forward(&x, batch, scratch, &mut out);
    assert!(
        !fpenv::flush_denormals_enabled(),
        "the caller's mode changed"
    );
    match result {
        Err(Error::Panicked { thread, message }) => {
            assert_eq!(message, "test_panics_at_magic reached its magic input");
            thread
        }
        other => panic!("batch {batch}, row {row}: {other:?}"),
    }
}

/// One model in an `Arc` on a pool of three threads, six caller threads each with its
/// own scratch, many calls at batches 1, 7, 32 and 200 (GEMV, column split, row split;
/// a call gets the helpers no other caller waits for, so splits of every width happen):
/// every answer is, bit for bit, the single-threaded reference's.
#[test]
fn threads_sharing_one_model_get_one_threads_bits() {
    let _dog = watchdog("shared model", 60);
    let make = || {
        network(
            &[3, 70, 45, 10],
            &[
                vec![("relu", 30), ("tanh", 25), ("silu", 15)],
                vec![("elu", 20), ("relu", 25)],
            ],
            |l, o, i| pattern(l * 1000 + o * 17 + i * 5),
            |l, o| pattern(o * 3 + l) / 2.0,
        )
    };
    let alone = make().with_pool(Pool::new(1).unwrap());
    let model = Arc::new(make().with_pool(Pool::new(3).unwrap()));
    let batches = [1usize, 7, 32, 200];
    // (batch, input, the reference's bits)
    type Case = (usize, Vec<f32>, Vec<u32>);
    let cases: Arc<Vec<Case>> = Arc::new(
        batches
            .iter()
            .flat_map(|&b| (0..3).map(move |seed| (b, seed)))
            .map(|(batch, seed)| {
                let x = inputs(batch, seed);
                let mut out = vec![0.0f32; batch * alone.classes()];
                alone
                    .forward(&x, batch, &mut Scratch::new(), &mut out)
                    .unwrap();
                (batch, x, bits(&out))
            })
            .collect(),
    );
    let handles: Vec<_> = (0..6)
        .map(|t| {
            let (model, cases) = (model.clone(), cases.clone());
            std::thread::spawn(move || {
                let mut scratch = Scratch::new();
                for round in 0..20 {
                    for c in 0..cases.len() {
                        let (batch, x, want) = &cases[(c + t + round) % cases.len()];
                        let mut out = vec![f32::NAN; batch * model.classes()];
                        model.forward(x, *batch, &mut scratch, &mut out).unwrap();
                        assert_eq!(
                            &bits(&out),
                            want,
                            "thread {t}, round {round}, batch {batch}"
                        );
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Eight callers of one model on a pool of two threads, at batch sizes that split by
/// columns, by rows and not at all: while they all call, no pool worker computes (each
/// caller runs on its own thread; a worker helps only a caller that is alone). Per-caller
/// worker threads, as scratches once had, would compute a share of every split pass. A
/// lone caller, afterwards, does get the pool's worker.
#[test]
fn concurrent_callers_run_alone_and_a_lone_caller_gets_the_pools_worker() {
    let _dog = watchdog("busy threads", 60);
    let model = Arc::new(
        network(
            &[3, 96, 10],
            &[vec![("test_counts_workers", 96)]],
            |l, o, i| pattern(l * 1000 + o * 17 + i * 5),
            |l, o| pattern(o * 3 + l) / 2.0,
        )
        .with_pool(Pool::new(2).unwrap()),
    );
    let start = std::sync::Barrier::new(8);
    let first_done = std::sync::atomic::AtomicBool::new(false);
    let calling = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (model, start, first_done, calling) = (&model, &start, &first_done, &calling);
            s.spawn(move || {
                let mut scratch = Scratch::new();
                let mut call = |round: usize| {
                    let batch = [1, 5, 40, 200][(t + round) % 4];
                    let x = inputs(batch, t);
                    let mut out = vec![0.0f32; batch * model.classes()];
                    model.forward(&x, batch, &mut scratch, &mut out).unwrap();
                };
                start.wait();
                // Every caller has begun: the others are met from here on.
                for round in 0..3 {
                    call(round);
                }
                // Counting starts once every caller has joined the loop, which none leaves
                // before the first end: no caller pauses at a barrier while counted (the
                // first out of a barrier could be alone for a moment, and rightly get the
                // worker, if the wait had outlasted the pool's memory of the others).
                if calling.fetch_add(1, Ordering::SeqCst) + 1 == 8 {
                    COUNTING.store(true, Ordering::SeqCst);
                }
                let (mut round, mut counted) = (3, 0);
                while counted < 40 && !first_done.load(Ordering::SeqCst) {
                    call(round);
                    round += 1;
                    counted += usize::from(COUNTING.load(Ordering::SeqCst));
                }
                // The last callers standing may be alone: stop counting at the first end.
                COUNTING.store(false, Ordering::SeqCst);
                first_done.store(true, Ordering::SeqCst);
            });
        }
    });
    assert_eq!(
        ON_WORKERS.load(Ordering::SeqCst),
        0,
        "a worker computed beside other callers"
    );
    // Alone (after the pool's memory of the others fades), batch 1 splits by columns onto
    // the worker: the worker computes some of the activation's calls. (On a loaded host a
    // split pass that waits for a parked thread backs the pool off for 200 ms, so keep
    // calling for a while.)
    std::thread::sleep(Duration::from_millis(60));
    COUNTING.store(true, Ordering::SeqCst);
    let mut scratch = Scratch::new();
    let x = inputs(1, 0);
    let mut out = vec![0.0f32; model.classes()];
    let began = std::time::Instant::now();
    while ON_WORKERS.load(Ordering::SeqCst) == 0 && began.elapsed() < Duration::from_secs(10) {
        model.forward(&x, 1, &mut scratch, &mut out).unwrap();
    }
    COUNTING.store(false, Ordering::SeqCst);
    if smartmixed_infer::Kernel::detect() == smartmixed_infer::Kernel::Avx512 {
        assert!(
            ON_WORKERS.load(Ordering::SeqCst) > 0,
            "the lone caller got no worker"
        );
    }
}

/// The model `test_runs_a_model` runs, on the same one-thread pool as the model using it.
static INNER: std::sync::OnceLock<Model> = std::sync::OnceLock::new();

register_activation!(
    "test_runs_a_model",
    forward: |x| {
        // A call started inside a call: it must run on this thread, not wait for the
        // pool's only permit, which the outer call holds.
        let inner = INNER.get().expect("set before use");
        let p = inner.predict(&[x, 0.5, -0.5]).expect("inner call");
        x.max(0.0) + p.probabilities[0] * 0.0
    },
    derivative: |x, _y| if x > 0.0 { 1.0 } else { 0.0 },
);

/// An activation that runs another model on the same pool: the inner call runs on the
/// calling thread (borrowing no worker), and the outer answer is the plain ReLU network's.
#[test]
fn a_call_from_inside_a_call_runs_on_its_thread() {
    let _dog = watchdog("nested call", 30);
    let pool = Pool::new(1).unwrap();
    let weights = |l: usize, o: usize, i: usize| pattern(l * 1000 + o * 17 + i * 5);
    let bias = |l: usize, o: usize| pattern(o * 3 + l) / 2.0;
    let inner = network(&[3, 8, 4], &[vec![("relu", 8)]], weights, bias).with_pool(pool.clone());
    assert!(INNER.set(inner).is_ok());
    let outer = network(&[3, 8, 4], &[vec![("test_runs_a_model", 8)]], weights, bias)
        .with_pool(pool.clone());
    let plain = network(&[3, 8, 4], &[vec![("relu", 8)]], weights, bias).with_pool(pool);
    let x = inputs(2, 1);
    let (mut got, mut want) = (vec![0.0; 8], vec![0.0; 8]);
    outer.forward(&x, 2, &mut Scratch::new(), &mut got).unwrap();
    plain
        .forward(&x, 2, &mut Scratch::new(), &mut want)
        .unwrap();
    assert_eq!(bits(&got), bits(&want));
}
