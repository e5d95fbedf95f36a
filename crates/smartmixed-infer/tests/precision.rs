//! Models loaded in bf16 and int8 against the same models in f32: close logits and the
//! same classes, one thread's bits whatever the pool, and the precision reported.

use safetensors::tensor::{Dtype, TensorView};
use smartmixed_infer::{LoadOptions, Model, Pool, Precision, Scratch};

/// A network of `widths` with weights uniform in +-1/sqrt(inputs) (a fixed xorshift
/// stream) and every hidden layer split between relu, tanh and elu blocks.
fn files(widths: &[usize]) -> (Vec<u8>, String) {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut manifest = format!(
        "format = \"smartmixed-manifest\"\nversion = 1\ninputs = {}\noutput_activation = \"identity\"\n",
        widths[0]
    );
    let mut tensors = Vec::new();
    for l in 0..widths.len() - 1 {
        let (k, n) = (widths[l], widths[l + 1]);
        manifest += &format!("\n[[layers]]\ninputs = {k}\noutputs = {n}\n");
        if l + 2 < widths.len() {
            let index: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            manifest += &format!("original_index = [{}]\n", index.join(", "));
            let third = n / 3;
            for (act, start, len) in [
                ("relu", 0, third),
                ("tanh", third, third),
                ("elu", 2 * third, n - 2 * third),
            ] {
                manifest += &format!(
                    "\n[[layers.groups]]\nactivation = \"{act}\"\nstart = {start}\nlen = {len}\n"
                );
            }
        }
        let scale = 2.0 / (k as f32).sqrt();
        let w: Vec<u8> = (0..n * k)
            .flat_map(|_| (uniform() * scale).to_le_bytes())
            .collect();
        let b: Vec<u8> = (0..n)
            .flat_map(|_| (uniform() * 0.1).to_le_bytes())
            .collect();
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
    (safetensors::serialize(views, &None).unwrap(), manifest)
}

/// Counts this thread's allocations, so a test can see a warm call allocate nothing
/// (other tests' threads count on their own).
struct Counting;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn load(files: &(Vec<u8>, String), precision: Precision, threads: usize) -> Model {
    Model::from_bytes_with(&files.0, files.1.as_bytes(), &LoadOptions { precision })
        .unwrap()
        .with_pool(Pool::new(threads).unwrap())
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// bf16 logits of a 7-layer network stay within 3% of the logits' range of f32's and
/// pick the same class for at least 97% of 300 random rows (each layer adds about 2^-8 of
/// relative error: rounding its input and its weights to 8 significant bits).
#[test]
fn bf16_logits_stay_close_to_f32_and_pick_the_same_classes() {
    stays_close_to_f32(Precision::Bf16, "bf16: ");
}

/// `precision`'s logits of a 7-layer network (its kernel named `prefix...`) differ from
/// f32's, by at most 3% of the logits' range, and pick the same class for at least 97% of
/// 300 random rows.
fn stays_close_to_f32(precision: Precision, prefix: &str) {
    let widths = [97, 130, 90, 90, 64, 64, 40, 10];
    let net = files(&widths);
    let (f32m, reduced) = (load(&net, Precision::F32, 1), load(&net, precision, 1));
    assert_eq!(reduced.precision(), precision);
    assert!(
        reduced.kernel_description().starts_with(prefix),
        "{}",
        reduced.kernel_description()
    );
    assert!(f32m.kernel_description().starts_with("f32: "));
    // The test network has tanh groups: on AVX-512 they run in the fast forms, and the
    // description says so; f32 never does.
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        reduced.kernel_description().contains("fast forms"),
        std::is_x86_feature_detected!("avx512f")
    );
    assert!(!f32m.kernel_description().contains("fast forms"));
    let rows = 300;
    let x: Vec<f32> = (0..rows * 97)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let (mut a, mut b) = (vec![0.0; rows * 10], vec![0.0; rows * 10]);
    f32m.forward(&x, rows, &mut Scratch::new(), &mut a).unwrap();
    reduced
        .forward(&x, rows, &mut Scratch::new(), &mut b)
        .unwrap();
    assert_ne!(a, b, "{prefix}must differ from f32 somewhere");
    let range = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(worst <= 0.03 * range, "worst {worst} of range {range}");
    let same = a
        .chunks(10)
        .zip(b.chunks(10))
        .filter(|(p, q)| argmax(p) == argmax(q))
        .count();
    assert!(same * 100 >= rows * 97, "{same} of {rows} rows agree");
}

/// In bf16 too, a split pass over a pool of two or three gives one thread's bits: by
/// columns at batches 1, 8 and 31 where the kernel computes panels (AMX, AVX512-BF16),
/// by rows at 40 (chunks of 16 rows) and 300, and 32 by either as the kernel decides.
#[test]
fn bf16_splits_give_one_threads_bits() {
    let net = files(&[33, 70, 45, 10]);
    let alone = load(&net, Precision::Bf16, 1);
    for threads in [2, 3] {
        let model = load(&net, Precision::Bf16, threads);
        let mut scratch = Scratch::new();
        for batch in [1, 8, 31, 32, 40, 300] {
            let x: Vec<f32> = (0..batch * 33)
                .map(|i| (i % 17) as f32 / 8.0 - 1.0)
                .collect();
            let (mut want, mut got) = (vec![0.0; batch * 10], vec![f32::NAN; batch * 10]);
            alone
                .forward(&x, batch, &mut Scratch::new(), &mut want)
                .unwrap();
            model.forward(&x, batch, &mut scratch, &mut got).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{threads} threads, batch {batch}");
        }
    }
}

/// A batch larger than a chunk (one thread runs the network 128 rows at a time, in its
/// own few rows of scratch) gives, in every precision, the bits of its halves run as two
/// calls, whose chunks begin at other rows: no row's answer depends on where its chunk
/// begins or on rows other chunks left in the scratch.
#[test]
fn a_batch_of_many_chunks_gives_the_bits_of_its_parts() {
    let net = files(&[33, 70, 45, 10]);
    for precision in [Precision::F32, Precision::Bf16, Precision::Int8] {
        let model = load(&net, precision, 1);
        let batch = 301;
        let x: Vec<f32> = (0..batch * 33)
            .map(|i| ((i * 7) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let mut whole = vec![f32::NAN; batch * 10];
        model
            .forward(&x, batch, &mut Scratch::new(), &mut whole)
            .unwrap();
        let mut scratch = Scratch::new();
        let mut parts = vec![f32::NAN; batch * 10];
        for rows in [0..150, 150..301] {
            let (xs, out) = (
                &x[rows.start * 33..rows.end * 33],
                &mut parts[rows.start * 10..rows.end * 10],
            );
            model.forward(xs, rows.len(), &mut scratch, out).unwrap();
        }
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&whole), bits(&parts), "{}", precision.name());
    }
}

/// The input is checked inside the pass, each chunk its own rows, on whichever thread
/// takes it: with values that are not finite in two chunks (rows 650 and 300, and a
/// second bad value later in row 300), every precision and thread count names the first
/// of them, and the next call computes as before.
#[test]
fn the_first_non_finite_input_is_named_however_the_pass_splits() {
    let net = files(&[33, 70, 45, 10]);
    let batch = 700;
    let good: Vec<f32> = (0..batch * 33)
        .map(|i| (i % 13) as f32 / 6.0 - 1.0)
        .collect();
    let mut bad = good.clone();
    bad[650 * 33 + 2] = f32::NAN;
    bad[300 * 33 + 7] = f32::INFINITY;
    bad[300 * 33 + 20] = f32::NAN;
    for precision in [Precision::F32, Precision::Bf16, Precision::Int8] {
        for threads in [1, 2, 3] {
            let model = load(&net, precision, threads);
            let mut scratch = Scratch::new();
            let mut out = vec![0.0; batch * 10];
            match model.forward(&bad, batch, &mut scratch, &mut out) {
                Err(smartmixed_infer::Error::NonFiniteInput {
                    row: 300,
                    index: 7,
                    value,
                }) => assert_eq!(value, f32::INFINITY),
                other => panic!("{} on {threads}: {other:?}", precision.name()),
            }
            let mut want = vec![f32::NAN; batch * 10];
            model
                .forward(&good, batch, &mut Scratch::new(), &mut want)
                .unwrap();
            model.forward(&good, batch, &mut scratch, &mut out).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&out), bits(&want), "{} on {threads}", precision.name());
        }
    }
}

#[test]
fn precision_names_round_trip_and_unknown_ones_are_refused() {
    for p in [Precision::F32, Precision::Bf16, Precision::Int8] {
        assert_eq!(p.name().parse::<Precision>(), Ok(p));
    }
    assert_eq!(Precision::Int8.name(), "int8");
    let err = "int4".parse::<Precision>().unwrap_err();
    assert!(
        err.contains("int4") && err.contains("bf16") && err.contains("int8"),
        "{err}"
    );
}

/// The test network's weights and biases read back from its safetensors bytes (f32, as
/// the model holds them), and each hidden layer's activation per neuron.
type Net = Vec<(usize, usize, Vec<f32>, Vec<f32>)>;

fn layers_of(files: &(Vec<u8>, String), widths: &[usize]) -> Net {
    let st = safetensors::SafeTensors::deserialize(&files.0).unwrap();
    let f32s = |name: String| -> Vec<f32> {
        let t = st.tensor(&name).unwrap();
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    (0..widths.len() - 1)
        .map(|l| {
            (
                widths[l],
                widths[l + 1],
                f32s(format!("layers.{l}.weight")),
                f32s(format!("layers.{l}.bias")),
            )
        })
        .collect()
}

/// `files`' activation of neuron `j` of a hidden layer of `n`: relu, tanh, elu by thirds.
fn act(j: usize, n: usize, v: f64) -> f64 {
    match j / (n / 3) {
        0 => v.max(0.0),
        1 => v.tanh(),
        _ if v > 0.0 => v,
        _ => v.exp_m1(),
    }
}

/// One row through `net` in f64, with a bound on how far the runtime's answer (in int8
/// if `int8`, else f32) can be from it at each logit. Per layer, with `x` the exact
/// input, `e` the bound on the runtime's input error and `w` a weight:
/// - int8: its input within `e + s_x / 2` of `x` (the row step `s_x`, at most the exact
///   row's range widened by `e`, over 255), each weight within `s_w / 2` (its column's
///   step), so each product within `(e + s_x/2)(|w| + s_w/2) + |x| s_w / 2`; the i32 sum
///   is exact and its dequantise rounds three times (`3 x 2^-24` relative);
/// - f32: `e |w|` a product, and any order of f32 sums within `k 2^-24` of the sum of
///   magnitudes;
/// - both: the bias add rounds once more, and the activations (relu, tanh, elu) are
///   1-Lipschitz and computed within 1e-6 (core's `math` is within 5e-7).
fn reference(net: &Net, x: &[f32], int8: bool) -> (Vec<f64>, Vec<f64>) {
    let u = 2f64.powi(-24);
    let mut xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut es = vec![0.0f64; x.len()];
    for (l, (k, n, w, b)) in net.iter().enumerate() {
        let (k, n) = (*k, *n);
        let hi = (0..k).map(|i| xs[i] + es[i]).fold(0.0f64, f64::max);
        let lo = (0..k).map(|i| xs[i] - es[i]).fold(0.0f64, f64::min);
        let sx = (hi - lo) / 255.0 * (1.0 + 1e-6);
        let (mut ys, mut ey) = (vec![0.0; n], vec![0.0; n]);
        for c in 0..n {
            let row = &w[c * k..(c + 1) * k];
            let sw = row.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64 / 127.0;
            let (mut y, mut err, mut size) = (b[c] as f64, 0.0f64, b[c].abs() as f64);
            for i in 0..k {
                let wv = row[i] as f64;
                y += xs[i] * wv;
                size += (xs[i].abs() + es[i]) * wv.abs();
                err += if int8 {
                    (es[i] + sx / 2.0) * (wv.abs() + sw / 2.0) + xs[i].abs() * sw / 2.0
                } else {
                    es[i] * wv.abs()
                };
            }
            let rounding = if int8 {
                4.0 * u * (size + err)
            } else {
                (k + 1) as f64 * u * size
            };
            let last = l + 1 == net.len();
            ys[c] = if last { y } else { act(c, n, y) };
            ey[c] = (err + rounding) * (1.0 + 1e-6) + if last { 0.0 } else { 1e-6 };
        }
        (xs, es) = (ys, ey);
    }
    (xs, es)
}

/// int8 logits of a two-layer network against f32's, row by row, within the sum of the
/// two derived bounds of [`reference`] (each from the f64 forward pass of the same
/// weights). Worst-case bounds multiply by each layer's `sum |w|` (about 5 here), so they
/// say something only for shallow networks: the deep one is held to the bf16 test's
/// measure below.
#[test]
fn int8_logits_stay_within_the_derived_bound_of_f32() {
    let widths = [97, 130, 10];
    let net = files(&widths);
    let (f32m, int8m) = (
        load(&net, Precision::F32, 1),
        load(&net, Precision::Int8, 1),
    );
    let rows = 100;
    let x: Vec<f32> = (0..rows * 97)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let (mut a, mut b) = (vec![0.0; rows * 10], vec![0.0; rows * 10]);
    f32m.forward(&x, rows, &mut Scratch::new(), &mut a).unwrap();
    int8m
        .forward(&x, rows, &mut Scratch::new(), &mut b)
        .unwrap();
    assert_ne!(a, b, "int8 must differ from f32 somewhere");
    let layers = layers_of(&net, &widths);
    let (mut loosest, mut worst) = (0.0f64, 0.0f64);
    for r in 0..rows {
        let row = &x[r * 97..(r + 1) * 97];
        let (exact, e8) = reference(&layers, row, true);
        let (_, e32) = reference(&layers, row, false);
        for c in 0..10 {
            let (p, q) = (a[r * 10 + c] as f64, b[r * 10 + c] as f64);
            let bound = e8[c] + e32[c];
            assert!(
                (p - q).abs() <= bound,
                "row {r} class {c}: f32 {p}, int8 {q}, exact {}, bound {bound}",
                exact[c]
            );
            (loosest, worst) = (loosest.max(bound), worst.max((p - q).abs()));
        }
    }
    // The bound is a constraint: under the largest logit (measured: 0.28 against 0.40,
    // the worst error 0.0056; a worst case is loose, every error adding up at once).
    let range = a.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    assert!(
        loosest < range,
        "bound {loosest} (worst error {worst}) against range {range}"
    );
}

/// int8 logits of a 7-layer network stay within 3% of the logits' range of f32's and
/// pick the same class for at least 97% of 300 random rows, the bf16 test's measure (each
/// layer adds about 1/255 of its input's range and 1/254 of each weight's column maximum).
#[test]
fn int8_logits_stay_close_to_f32_and_pick_the_same_classes() {
    stays_close_to_f32(Precision::Int8, "int8: ");
}

/// In int8 too, a split pass (rows over a pool of two or three) gives one thread's bits,
/// at batch 1 (no split), 8 and 300 (each row is quantised with its own scale, so a row's
/// answer cannot depend on its chunk), and repeated calls on one scratch agree.
#[test]
fn int8_splits_give_one_threads_bits() {
    let net = files(&[33, 70, 45, 10]);
    let alone = load(&net, Precision::Int8, 1);
    for threads in [2, 3] {
        let model = load(&net, Precision::Int8, threads);
        let mut scratch = Scratch::new();
        for batch in [300, 1, 8, 300] {
            let x: Vec<f32> = (0..batch * 33)
                .map(|i| (i % 17) as f32 / 8.0 - 1.0)
                .collect();
            let (mut want, mut got) = (vec![0.0; batch * 10], vec![f32::NAN; batch * 10]);
            alone
                .forward(&x, batch, &mut Scratch::new(), &mut want)
                .unwrap();
            model.forward(&x, batch, &mut scratch, &mut got).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{threads} threads, batch {batch}");
            // Row 0 alone gives its bits in the batch: per-row scales.
            let mut one = vec![0.0; 10];
            alone
                .forward(&x[..33], 1, &mut Scratch::new(), &mut one)
                .unwrap();
            assert_eq!(bits(&one), bits(&want[..10]), "batch {batch} row 0");
        }
    }
}

/// A layer wider than int8's exact i32 sums allow is refused with an error naming the
/// tensor and the limit (in f32 the same model loads).
#[test]
fn int8_refuses_a_layer_too_wide_for_exact_sums() {
    let net = files(&[65_537, 2]);
    let opts = LoadOptions {
        precision: Precision::Int8,
    };
    let err = Model::from_bytes_with(&net.0, net.1.as_bytes(), &opts).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("layers.0.weight") && text.contains("65537") && text.contains("65536"),
        "{text}"
    );
    Model::from_bytes(&net.0, net.1.as_bytes()).unwrap();
}

/// A warm int8 (and bf16) call allocates nothing: the quantised rows and their scales live
/// in the scratch, the AMX sums on the stack. One thread, so the whole pass runs on this
/// one (whose allocations are counted); batches 1 (the GEMV size), 5 and 40. (Checked to
/// fail with a fresh scratch per call.)
#[test]
fn reduced_precision_calls_allocate_nothing_once_warm() {
    let net = files(&[97, 130, 90, 10]);
    for precision in [Precision::Int8, Precision::Bf16] {
        let model = load(&net, precision, 1);
        let mut scratch = Scratch::new();
        let x = vec![0.25f32; 40 * 97];
        let mut out = vec![0.0; 40 * 10];
        model.forward(&x, 40, &mut scratch, &mut out).unwrap();
        for batch in [1, 5, 40] {
            let before = ALLOCATIONS.with(|c| c.get());
            model
                .forward(
                    &x[..batch * 97],
                    batch,
                    &mut scratch,
                    &mut out[..batch * 10],
                )
                .unwrap();
            let after = ALLOCATIONS.with(|c| c.get());
            assert_eq!(after, before, "{precision:?} batch {batch}");
        }
    }
}
