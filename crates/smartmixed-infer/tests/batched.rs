//! The dynamic batcher against the model it batches: answers equal to the row run alone,
//! from many threads and from a future; batches that really form; a bounded queue that
//! refuses instead of growing; a shut-down that answers what it accepted; bad rows and a
//! panicking activation answered as errors while the other rows of their batch succeed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use safetensors::tensor::{Dtype, TensorView};
use smartmixed_infer::{
    register_activation, BatchOptions, BatchedModel, Error, Model, Pool, Scratch, MAX_WAIT,
};

/// Panics on exactly one value, so a test can make one row of a batch panic.
const MAGIC: f32 = 12345.0;

/// Makes the activation record which thread computes it.
const RECORD: f32 = 54321.0;

/// The names of the threads that met [`RECORD`].
static RECORDED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

register_activation!(
    "batched_test_panics_on_magic",
    forward: |x| {
        if x == MAGIC {
            panic!("activation met the magic value");
        }
        if x == RECORD {
            let name = std::thread::current().name().unwrap_or("?").to_string();
            RECORDED.lock().unwrap().push(name);
        }
        x
    },
    derivative: |_x, _y| 1.0,
);

const MANIFEST: &str = r#"format = "smartmixed-manifest"
version = 2
inputs = 2
output_activation = "identity"

[input]
shape = [2]
divisor = 1.0

[[layers]]
inputs = 2
outputs = 3
original_index = [0, 1, 2]

[[layers.groups]]
activation = "batched_test_panics_on_magic"
start = 0
len = 1

[[layers.groups]]
activation = "tanh"
start = 1
len = 2

[[layers]]
inputs = 3
outputs = 2
"#;

/// Neuron 0 sees `x[0]` unchanged (weight row [1, 0], bias 0), so a raw row
/// `[MAGIC, _]` panics and no other row does. On the process's pool.
fn model() -> Arc<Model> {
    Arc::new(network())
}

/// [`model`]'s network, not yet shared.
fn network() -> Model {
    network_with_output_weights(vec![0.001, 1.0, -0.5, -0.002, 0.25, 1.5])
}

/// The network with `output` (2 x 3) as its last layer's weights.
fn network_with_output_weights(output: Vec<f32>) -> Model {
    let tensors: [(&str, Vec<usize>, Vec<f32>); 4] = [
        (
            "layers.0.weight",
            vec![3, 2],
            vec![1.0, 0.0, 0.5, -0.25, -1.0, 0.75],
        ),
        ("layers.0.bias", vec![3], vec![0.0, 0.1, -0.2]),
        ("layers.1.weight", vec![2, 3], output),
        ("layers.1.bias", vec![2], vec![0.05, -0.05]),
    ];
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.to_string(), s.clone(), b)
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let weights = safetensors::serialize(views, &None).unwrap();
    Model::from_bytes(&weights, MANIFEST.as_bytes()).unwrap()
}

/// Row `i` of a deterministic stream of inputs.
fn row(i: usize) -> Vec<f32> {
    vec![(i % 17) as f32 * 0.37 - 3.0, (i % 11) as f32 * -0.61 + 2.0]
}

/// The logits of `raw` run alone on one thread.
fn alone(model: &Model, raw: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; model.classes()];
    model
        .forward_raw(raw, 1, &mut Scratch::new(), &mut out)
        .unwrap();
    out
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
}

/// Aborts the test binary if `f` has not returned within `limit`: a hang is a failure.
fn within<T>(limit: Duration, f: impl FnOnce() -> T) -> T {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        if !flag.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("batched test hangs (over {limit:?})");
            std::process::abort();
        }
    });
    let out = f();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    out
}

#[test]
fn many_threads_get_the_answer_their_row_gets_alone() {
    let model = model();
    let batched = Arc::new(BatchedModel::new(model.clone(), BatchOptions::default()).unwrap());
    within(Duration::from_secs(60), || {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (batched, model) = (batched.clone(), model.clone());
                std::thread::spawn(move || {
                    for i in 0..300 {
                        let raw = row(t * 1000 + i);
                        let got = batched.logits(&raw).unwrap();
                        assert!(close(&got, &alone(&model, &raw)), "{got:?}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    let stats = batched.stats();
    assert_eq!(stats.requests, 2400);
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.batch_sizes.iter().sum::<u64>(), stats.batches);
}

/// Submitted without waiting, eight rows fill a batch of eight: one batch, whatever the
/// timing (the wait, `MAX_WAIT`, is far longer than the submissions take).
#[test]
fn requests_queued_together_run_as_one_batch() {
    let model = model();
    let options = BatchOptions {
        max_batch: 8,
        max_wait: MAX_WAIT,
        ..BatchOptions::default()
    };
    let batched = BatchedModel::new(model.clone(), options).unwrap();
    within(Duration::from_secs(20), || {
        let tickets: Vec<_> = (0..8).map(|i| batched.submit(row(i)).unwrap()).collect();
        for (i, t) in tickets.into_iter().enumerate() {
            assert!(close(&t.wait().unwrap(), &alone(&model, &row(i))));
        }
    });
    let stats = batched.stats();
    assert_eq!((stats.requests, stats.batches), (8, 1));
    assert_eq!(stats.batch_sizes[3], 1, "{stats:?}"); // bucket "at most 8"
}

/// A lone request is not held for company past `max_wait`.
#[test]
fn a_lone_request_runs_after_the_wait() {
    let model = model();
    let options = BatchOptions {
        max_batch: 64,
        max_wait: Duration::from_millis(20),
        ..BatchOptions::default()
    };
    let batched = BatchedModel::new(model.clone(), options).unwrap();
    let start = std::time::Instant::now();
    let got = within(Duration::from_secs(20), || batched.logits(&row(3)).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert!(close(&got, &alone(&model, &row(3))));
    assert_eq!(batched.stats().batch_sizes[0], 1);
}

/// The queue holds `queue_capacity` requests and refuses the next; shutting down answers
/// the accepted ones and refuses anything after.
#[test]
fn a_full_queue_refuses_and_a_shut_down_answers_what_it_accepted() {
    let model = model();
    let options = BatchOptions {
        max_batch: 4,
        max_wait: MAX_WAIT,
        queue_capacity: 2,
        ..BatchOptions::default()
    };
    let batched = BatchedModel::new(model.clone(), options).unwrap();
    let a = batched.submit(row(1)).unwrap();
    let b = batched.submit(row(2)).unwrap();
    assert!(matches!(
        batched.submit(row(3)),
        Err(Error::QueueFull { capacity: 2 })
    ));
    within(Duration::from_secs(20), || batched.shut_down());
    assert!(close(&a.wait().unwrap(), &alone(&model, &row(1))));
    assert!(close(&b.wait().unwrap(), &alone(&model, &row(2))));
    assert!(matches!(batched.submit(row(4)), Err(Error::ShutDown)));
    let stats = batched.stats();
    assert_eq!((stats.requests, stats.refused), (2, 1));
}

/// `submit_all` queues every row or none: a request the queue cannot hold whole leaves
/// nothing queued (nothing computed and thrown away), and a bad row is named by its index.
#[test]
fn submit_all_queues_every_row_or_none() {
    let model = model();
    let options = BatchOptions {
        max_batch: 4,
        max_wait: Duration::from_secs(1),
        queue_capacity: 3,
        ..BatchOptions::default()
    };
    let batched = BatchedModel::new(model.clone(), options).unwrap();
    let first = batched.submit(row(0)).unwrap();
    assert!(matches!(
        batched.submit_all((1..4).map(row).collect()),
        Err(Error::QueueFull { capacity: 3 })
    ));
    let stats = batched.stats();
    assert_eq!((stats.requests, stats.refused, stats.queued), (1, 3, 1));
    assert!(matches!(
        batched.submit_all(vec![row(1), row(2), vec![1.0, f32::NAN]]),
        Err(Error::NonFiniteInput {
            row: 2,
            index: 1,
            ..
        })
    ));
    let tickets = batched.submit_all(vec![row(1), row(2)]).unwrap();
    within(Duration::from_secs(20), || batched.shut_down());
    assert!(close(&first.wait().unwrap(), &alone(&model, &row(0))));
    for (i, t) in tickets.into_iter().enumerate() {
        assert!(close(&t.wait().unwrap(), &alone(&model, &row(i + 1))));
    }
    assert_eq!(batched.stats().requests, 3);
}

/// Audit defect 5: a shut-down waited out `max_wait` (and any wait at all was accepted, so
/// one could never end). `close` makes the gathering batch run at once, without blocking;
/// a wait over `MAX_WAIT` is refused.
#[test]
fn close_runs_a_waiting_batch_at_once_and_long_waits_are_refused() {
    let model = model();
    let options = BatchOptions {
        max_batch: 4,
        max_wait: MAX_WAIT,
        ..BatchOptions::default()
    };
    let batched = Arc::new(BatchedModel::new(model.clone(), options).unwrap());
    let start = std::time::Instant::now();
    let ticket = batched.submit(row(5)).unwrap();
    let waiter = std::thread::spawn(move || ticket.wait());
    while batched.stats().queued == 0 && !waiter.is_finished() {
        std::thread::yield_now();
    }
    batched.close();
    let answer = within(Duration::from_secs(20), || waiter.join().unwrap()).unwrap();
    assert!(
        start.elapsed() < MAX_WAIT,
        "answered only after the wait: {:?}",
        start.elapsed()
    );
    assert!(close(&answer, &alone(&model, &row(5))));
    assert!(matches!(batched.submit(row(6)), Err(Error::ShutDown)));
    let too_long = BatchOptions {
        max_wait: MAX_WAIT + Duration::from_nanos(1),
        ..BatchOptions::default()
    };
    assert!(matches!(
        BatchedModel::new(model, too_long),
        Err(Error::BatchOptions { field, .. }) if field == "max_wait"
    ));
}

/// Audit defect 11: a row that failed inside a batch was rerun alone, and its error named
/// "input row 0" whatever its place; now it names its index among the rows submitted.
#[test]
fn a_row_that_fails_in_its_batch_is_named_by_its_place() {
    // Neuron 0 passes x[0] on; times 10 in class 0, f32::MAX overflows.
    let model = Arc::new(network_with_output_weights(vec![
        10.0, 1.0, -0.5, -0.002, 0.25, 1.5,
    ]));
    let batched = BatchedModel::new(model.clone(), BatchOptions::default()).unwrap();
    let rows = vec![row(1), row(2), row(3), vec![f32::MAX, f32::MAX]];
    let tickets = batched.submit_all(rows).unwrap();
    let answers: Vec<_> = within(Duration::from_secs(20), || {
        tickets.into_iter().map(|t| t.wait()).collect()
    });
    for (i, answer) in answers.iter().take(3).enumerate() {
        assert!(close(answer.as_ref().unwrap(), &alone(&model, &row(i + 1))));
    }
    match &answers[3] {
        Err(e @ Error::NonFiniteOutput { row: 3, .. }) => {
            assert!(e.to_string().contains("input row 3"), "{e}")
        }
        other => panic!("expected row 3's overflow, got {other:?}"),
    }
}

#[test]
fn bad_rows_and_options_are_refused_at_once() {
    let model = model();
    let batched = BatchedModel::new(model.clone(), BatchOptions::default()).unwrap();
    assert!(matches!(
        batched.submit(vec![1.0; 3]),
        Err(Error::InputSize { len: 3, .. })
    ));
    assert!(matches!(
        batched.submit(vec![1.0, f32::NAN]),
        Err(Error::NonFiniteInput { index: 1, .. })
    ));
    for (max_batch, queue_capacity) in [(0, 8), (1 << 20, 8), (8, 0)] {
        let options = BatchOptions {
            max_batch,
            queue_capacity,
            ..BatchOptions::default()
        };
        let e = BatchedModel::new(model.clone(), options).unwrap_err();
        assert!(matches!(e, Error::BatchOptions { .. }), "{e}");
    }
}

/// One row of a batch panics inside an activation: that row gets `Error::Panicked`, the
/// other rows of the same batch their answers, and the batcher serves on.
#[test]
fn a_panicking_row_fails_alone_and_the_batcher_serves_on() {
    for threads in [1, 2] {
        let model = Arc::new(network().with_pool(Pool::new(threads).unwrap()));
        let options = BatchOptions {
            max_batch: 4,
            max_wait: MAX_WAIT,
            ..BatchOptions::default()
        };
        let batched = BatchedModel::new(model.clone(), options).unwrap();
        within(Duration::from_secs(30), || {
            let rows = [row(1), vec![MAGIC, 0.5], row(2), row(3)];
            let tickets: Vec<_> = rows
                .iter()
                .map(|r| batched.submit(r.clone()).unwrap())
                .collect();
            for (r, t) in rows.iter().zip(tickets) {
                match t.wait() {
                    Ok(got) => assert!(close(&got, &alone(&model, r))),
                    Err(Error::Panicked { message, .. }) => {
                        assert_eq!(r[0], MAGIC);
                        assert!(message.contains("magic value"), "{message}");
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            let again: Vec<_> = (0..4).map(|i| batched.submit(row(i)).unwrap()).collect();
            for (i, t) in again.into_iter().enumerate() {
                assert!(close(&t.wait().unwrap(), &alone(&model, &row(i))));
            }
        });
        assert_eq!(batched.stats().errors, 1);
    }
}

/// A ticket is a future: awaited on a minimal executor (no runtime crate), it resolves
/// to the same answer.
#[test]
fn a_ticket_can_be_awaited() {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let model = model();
    let batched = BatchedModel::new(model.clone(), BatchOptions::default()).unwrap();
    let mut ticket = Box::pin(batched.submit(row(5)).unwrap());
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let got = within(Duration::from_secs(20), || loop {
        match ticket.as_mut().poll(&mut cx) {
            Poll::Ready(r) => break r.unwrap(),
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(100)),
        }
    });
    assert!(close(&got, &alone(&model, &row(5))));
}

/// Eight callers, each submitting a row and waiting for its answer, 50 times: after the
/// first few batches the batcher waits for the callers it has just answered (`regather`),
/// so batches hold most of the eight rows; without it, each batch starts with the first caller
/// back and most batches hold one or two rows (measured with `regather` zero: 303 batches).
#[test]
fn callers_that_wait_for_their_answers_are_regathered_into_full_batches() {
    let model = model();
    let options = BatchOptions {
        max_batch: 8,
        regather: Duration::from_millis(200),
        ..BatchOptions::default()
    };
    let batched = Arc::new(BatchedModel::new(model.clone(), options).unwrap());
    let rounds = 50;
    // All eight at once, each row queued before any is waited for: started one by one,
    // the first caller could finish its 50 rows (a few microseconds each, run on its own
    // thread) before the last has begun, and no batch would have company to wait for.
    let start_line = Arc::new(std::sync::Barrier::new(8));
    within(Duration::from_secs(60), || {
        let callers: Vec<_> = (0..8)
            .map(|c| {
                let (batched, model) = (batched.clone(), model.clone());
                let start_line = start_line.clone();
                std::thread::spawn(move || {
                    let first = row(c * 1000);
                    let mut queued = Some((batched.submit(first.clone()).unwrap(), first));
                    start_line.wait();
                    for i in 1..=rounds {
                        let (ticket, r) = queued.take().unwrap();
                        assert!(close(&ticket.wait().unwrap(), &alone(&model, &r)));
                        if i < rounds {
                            let r = row(c * 1000 + i);
                            queued = Some((batched.submit(r.clone()).unwrap(), r));
                        }
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
    });
    let stats = batched.stats();
    assert_eq!(stats.requests, 8 * rounds as u64);
    // 50 full batches, plus those while the first batches grow to eight rows (and, when
    // the host staggers the callers, more: 78 seen once in six runs on two loaded cores).
    assert!(
        stats.batches <= 120,
        "{} batches {:?}",
        stats.batches,
        stats.batch_sizes
    );
}

/// A caller alone runs its batch on its own thread (no hand-off to the batcher's thread and
/// back, which on a virtual machine costs two wake-ups of an idle CPU); an awaited ticket's
/// batch runs on the batcher's thread, as no caller's thread waits to run it.
#[test]
fn a_waiting_caller_runs_its_batch_and_an_awaited_ticket_the_batchers_thread() {
    use std::task::{Context, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let model = Arc::new(network().with_pool(Pool::new(1).unwrap()));
    let batched = Arc::new(BatchedModel::new(model.clone(), BatchOptions::default()).unwrap());
    let recorded = |f: &(dyn Fn() + Sync)| {
        RECORDED.lock().unwrap().clear();
        within(Duration::from_secs(20), f);
        std::mem::take(&mut *RECORDED.lock().unwrap())
    };
    let got = recorded(&|| {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("lone caller".into())
                .spawn_scoped(s, || {
                    for _ in 0..3 {
                        batched.logits(&[RECORD, 0.0]).unwrap();
                    }
                    let ticket = batched.submit(vec![RECORD, 1.0]).unwrap();
                    ticket.wait().unwrap();
                })
                .unwrap();
        });
    });
    assert_eq!(got, vec!["lone caller"; 4]);
    let got = recorded(&|| {
        let mut ticket = Box::pin(batched.submit(vec![RECORD, 2.0]).unwrap());
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        while ticket.as_mut().poll(&mut cx).is_pending() {
            std::thread::park_timeout(Duration::from_millis(100));
        }
    });
    assert_eq!(got, vec!["smartmixed-batcher"]);
    // A ticket dropped unawaited still has its row run (by the batcher's thread), so the
    // queue does not keep it.
    RECORDED.lock().unwrap().clear();
    drop(batched.submit(vec![RECORD, 3.0]).unwrap());
    within(Duration::from_secs(20), || {
        while batched.stats().queued > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    assert_eq!(batched.stats().errors, 0);
}

/// An executor's waker that panics when the batch answers its ticket does not take the
/// batcher down: later requests are answered and shutting down ends.
#[test]
fn a_waker_that_panics_leaves_the_batcher_serving() {
    use std::task::{Context, Wake, Waker};
    struct Panics;
    impl Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("this waker panics");
        }
    }
    let model = model();
    let batched = BatchedModel::new(model.clone(), BatchOptions::default()).unwrap();
    let mut ticket = Box::pin(batched.submit(row(1)).unwrap());
    let waker = Waker::from(Arc::new(Panics));
    assert!(ticket
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    within(Duration::from_secs(20), || {
        while batched.stats().errors == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(close(
            &batched.logits(&row(2)).unwrap(),
            &alone(&model, &row(2))
        ));
        batched.shut_down();
    });
}
