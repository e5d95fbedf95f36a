//! The exported model in `smartmixed-infer` against the trainer's phase-2 network on the
//! whole MNIST test set, and against an independent reader (tests/independent_reader.py,
//! numpy + safetensors only).

use std::path::Path;
use std::process::Command;

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smartmixed_core::{lookup, PAPER_POOL};
use smartmixed_infer::{LoadOptions, Model, Pool, Precision, Scratch};
use smartmixed_train::data::Dataset;
use smartmixed_train::export;
use smartmixed_train::{Hidden, Network};

use smartmixed_activations_extra as _;

fn mnist_test() -> Dataset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    Dataset::from_idx(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
        10,
    )
    .unwrap()
}

/// A phase-2 network from a phase-1 network with spread logits, so every layer has
/// several groups; the pool includes a plugin activation.
fn phase2(dev: &Cpu, widths: &[usize]) -> Network<Cpu> {
    let mut rng = StdRng::seed_from_u64(17);
    let mut names = PAPER_POOL.to_vec();
    names.push("silu");
    let pool = names.iter().map(|n| lookup(n).unwrap()).collect();
    let mut net = Network::selective(dev, widths, pool, 0.3, &mut rng);
    if let Hidden::Selective { logits, .. } = &mut net.hidden {
        for l in logits.iter_mut() {
            let v: Vec<f32> = (0..l.shape().0 * l.shape().1)
                .map(|_| rng.gen_range(-2.0..2.0))
                .collect();
            *l = dev.tensor_from_vec(v, *l.shape());
        }
    }
    net.to_mixed(None).unwrap()
}

use smartmixed_core::math::argmax;

#[test]
fn runtime_matches_the_trainer_on_the_mnist_test_set() {
    let dev = Cpu::default();
    let net = phase2(&dev, &[784, 256, 128, 64, 10]);
    let dir = tempfile::tempdir().unwrap();
    export::export(&net, dir.path(), false).unwrap();
    let on = |threads| {
        Model::load_dir(dir.path())
            .unwrap()
            .with_pool(Pool::new(threads).unwrap())
    };
    let (model, one_thread) = (on(2), on(1));
    assert_eq!((model.input_size(), model.classes()), (784, 10));
    let test = mnist_test();
    let (mut max_diff, mut same) = (0.0f32, 0usize);
    let mut scratch = Scratch::new();
    let all: Vec<usize> = (0..test.len()).collect();
    for chunk in all.chunks(1000) {
        let b = test.batch(chunk, 10);
        let x = dev.tensor_from_vec(b.inputs.clone(), (chunk.len(), 784));
        let want = net.forward(x, None).as_vec();
        let mut got = vec![0.0; chunk.len() * 10];
        model
            .forward(&b.inputs, chunk.len(), &mut scratch, &mut got)
            .unwrap();
        for (w, g) in want.chunks_exact(10).zip(got.chunks_exact(10)) {
            max_diff = w
                .iter()
                .zip(g)
                .map(|(a, b)| (a - b).abs())
                .fold(max_diff, f32::max);
            same += usize::from(argmax(w) == argmax(g));
        }
    }
    // Rows split across threads give the same logits as one thread.
    let b = test.batch(&(0..999).collect::<Vec<_>>(), 10);
    let (mut one, mut two) = (vec![0.0; 9990], vec![0.0; 9990]);
    one_thread
        .forward(&b.inputs, 999, &mut Scratch::new(), &mut one)
        .unwrap();
    model
        .forward(&b.inputs, 999, &mut Scratch::new(), &mut two)
        .unwrap();
    assert_eq!(one, two);
    // Any pool size and batch, on a scratch reused across calls, gives the single-thread
    // bits: AVX-512 CPUs split columns, others rows.
    for threads in [2, 3] {
        let model = on(threads);
        let mut scratch = Scratch::new();
        for batch in [4, 5, 33, 999, 7] {
            let mut split = vec![0.0; batch * 10];
            model
                .forward(&b.inputs[..batch * 784], batch, &mut scratch, &mut split)
                .unwrap();
            assert_eq!(split, one[..batch * 10], "{threads} threads, batch {batch}");
        }
        // Below four rows the GEMV runs, split by panels: again one thread's bits.
        for batch in 1..4 {
            let (x, mut alone, mut split) = (&b.inputs[..batch * 784], vec![0.0; 10], vec![]);
            alone.resize(batch * 10, 0.0);
            split.resize(batch * 10, f32::NAN);
            one_thread
                .forward(x, batch, &mut Scratch::new(), &mut alone)
                .unwrap();
            model.forward(x, batch, &mut scratch, &mut split).unwrap();
            assert_eq!(split, alone, "{threads} threads, batch {batch}");
        }
    }
    // Batches below four rows take the skip-zero GEMV path: same logits within 1e-5.
    for row in 0..3 {
        let mut single = vec![0.0; 10];
        model
            .forward(
                &b.inputs[row * 784..(row + 1) * 784],
                1,
                &mut Scratch::new(),
                &mut single,
            )
            .unwrap();
        for (s, o) in single.iter().zip(&one[row * 10..(row + 1) * 10]) {
            assert!((s - o).abs() <= 1e-5, "batch-1 {s} vs batched {o}");
        }
    }
    println!("max |trainer - runtime| over 10000 test images: {max_diff:e}");
    assert!(max_diff <= 1e-5, "max abs difference {max_diff}");
    assert_eq!(same, test.len(), "predictions differ");
}

/// A phase-1 network exported as it is (its argmax choices) computes what phase 1
/// evaluates: every hidden output clamped to +-10. Without the manifest's `hidden_clamp`
/// the exported model's accuracy differed from the phase-1 test accuracy of summary.json
/// (89.06% against 89.12% on the quick config's 3 epochs).
#[test]
fn a_phase1_export_clamps_its_hidden_outputs_as_phase1_does() {
    let dev = Cpu::default();
    // Weights large enough that unbounded activations (relu, elu, selu, ...) pass 10.
    let mut rng = StdRng::seed_from_u64(5);
    let pool = PAPER_POOL.iter().map(|n| lookup(n).unwrap()).collect();
    let mut net = Network::selective(&dev, &[784, 64, 32, 10], pool, 0.3, &mut rng);
    if let Hidden::Selective { logits, .. } = &mut net.hidden {
        for l in logits.iter_mut() {
            let v: Vec<f32> = (0..l.shape().0 * l.shape().1)
                .map(|_| rng.gen_range(-2.0..2.0))
                .collect();
            *l = dev.tensor_from_vec(v, *l.shape());
        }
    }
    for layer in &mut net.layers {
        let w: Vec<f32> = layer.weight.as_vec().iter().map(|w| w * 12.0).collect();
        layer.weight = dev.tensor_from_vec(w, *layer.weight.shape());
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest = export::export(&net, dir.path(), false).unwrap();
    assert_eq!(manifest.hidden_clamp, Some(10.0));
    let model = Model::load_dir(dir.path()).unwrap();
    let b = mnist_test().batch(&(0..300).collect::<Vec<_>>(), 10);
    let want = net
        .forward(dev.tensor_from_vec(b.inputs.clone(), (300, 784)), None)
        .as_vec();
    let mut got = vec![0.0; 300 * 10];
    model
        .forward(&b.inputs, 300, &mut Scratch::new(), &mut got)
        .unwrap();
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&want, &got);
    assert!(
        diff <= 1e-5 * scale,
        "max |phase 1 - runtime| = {diff} (logits up to {scale})"
    );
    // The clamp is active here: phase 2's network of the same weights (no clamp) gives
    // other logits.
    let other = net
        .to_mixed(None)
        .unwrap()
        .forward(dev.tensor_from_vec(b.inputs.clone(), (300, 784)), None)
        .as_vec();
    let gap = max_abs_diff(&want, &other);
    assert!(
        gap > 100.0 * diff.max(1e-6 * scale),
        "unclamped differs by only {gap}"
    );
    // bf16 and int8 clamp too: far nearer phase 1 than the unclamped network is.
    for precision in [Precision::Bf16, Precision::Int8] {
        let reduced = Model::load_dir_with(dir.path(), &LoadOptions { precision }).unwrap();
        let mut got = vec![0.0; 300 * 10];
        reduced
            .forward(&b.inputs, 300, &mut Scratch::new(), &mut got)
            .unwrap();
        let d = max_abs_diff(&want, &got);
        assert!(
            d < gap / 10.0,
            "{precision:?}: {d} against the unclamped {gap}"
        );
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The Python the reader runs on: `SMARTMIXED_PYTHON`, else `python3`.
fn reader_python() -> String {
    std::env::var("SMARTMIXED_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn independent_python_reader_agrees() {
    let python = reader_python();
    let probe = Command::new(&python)
        .args(["-c", "import numpy, safetensors"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        assert!(
            std::env::var_os("SMARTMIXED_REQUIRE_PYTHON").is_none(),
            "SMARTMIXED_REQUIRE_PYTHON is set but `{python}` with numpy and safetensors is missing"
        );
        // Straight to the terminal: `cargo test` drops a passing test's captured output,
        // so an `eprintln!` here would leave nothing but "ok".
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED independent_python_reader_agrees: `{python}` lacks numpy or safetensors (`pip install numpy safetensors`)"
        );
        return;
    }
    let dev = Cpu::default();
    let net = phase2(&dev, &[784, 64, 48, 10]);
    let dir = tempfile::tempdir().unwrap();
    export::export(&net, dir.path(), false).unwrap();
    let model = Model::load_dir(dir.path()).unwrap();
    let test = mnist_test();
    let n = 500;
    let b = test.batch(&(0..n).collect::<Vec<_>>(), 10);
    let mut logits = vec![0.0; n * 10];
    model
        .forward(&b.inputs, n, &mut Scratch::new(), &mut logits)
        .unwrap();
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.path().join("inputs.f32"), le(&b.inputs)).unwrap();
    std::fs::write(dir.path().join("logits.f32"), le(&logits)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent_reader.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("agree"), "{stdout}");
}

/// Without numpy and safetensors the reader test says SKIPPED where `cargo test` shows it,
/// and fails under `SMARTMIXED_REQUIRE_PYTHON=1` (as CI sets): run as a child of this test
/// binary with a Python that does not exist.
#[test]
fn the_python_reader_test_says_skipped_or_fails_when_python_is_required() {
    let name = "independent_python_reader_agrees";
    let child = |require: bool| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--exact", name, "--test-threads=1"])
            .env("SMARTMIXED_PYTHON", "/nonexistent/python3")
            .env_remove("SMARTMIXED_REQUIRE_PYTHON");
        if require {
            c.env("SMARTMIXED_REQUIRE_PYTHON", "1");
        }
        c.output().unwrap()
    };
    let out = child(false);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("SKIPPED {name}")), "{text}");
    assert!(text.contains("1 passed"), "the child ran the test: {text}");
    assert!(
        !child(true).status.success(),
        "SMARTMIXED_REQUIRE_PYTHON=1 did not fail"
    );
}
