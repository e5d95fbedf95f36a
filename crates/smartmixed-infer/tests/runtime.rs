//! The runtime against a hand-computed network, its input checks, and a robustness run:
//! thousands of mutated copies of a valid model must each load or fail with an error,
//! never panic.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};
use smartmixed_infer::{Error, Model, Pool, Scratch};

use smartmixed_activations_extra as _;

const MANIFEST: &str = r#"format = "smartmixed-manifest"
version = 1
inputs = 2
output_activation = "identity"

[[layers]]
inputs = 2
outputs = 3
original_index = [1, 2, 0]

[[layers.groups]]
activation = "relu"
start = 0
len = 2

[[layers.groups]]
activation = "silu"
start = 2
len = 1

[[layers]]
inputs = 3
outputs = 2
"#;

fn weights(tensors: &[(&str, Vec<usize>, Vec<f32>)], metadata: Option<&str>) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.to_string(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
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
    let meta = metadata.map(|m| {
        std::collections::HashMap::from([("smartmixed.manifest".to_string(), m.to_string())])
    });
    safetensors::serialize(views, &meta).unwrap()
}

fn valid_weights() -> Vec<u8> {
    hand_weights(Some(MANIFEST))
}

/// The hand-computed network's tensors, with `metadata` as the manifest copy.
fn hand_weights(metadata: Option<&str>) -> Vec<u8> {
    weights(
        &[
            (
                "layers.0.weight",
                vec![3, 2],
                vec![1.0, -1.0, 0.5, 2.0, -1.0, 1.0],
            ),
            ("layers.0.bias", vec![3], vec![0.0, -1.0, 0.5]),
            (
                "layers.1.weight",
                vec![2, 3],
                vec![1.0, 0.0, 2.0, -1.0, 1.0, 0.0],
            ),
            ("layers.1.bias", vec![2], vec![0.25, 0.0]),
        ],
        metadata,
    )
}

#[test]
fn forward_matches_a_hand_computed_network() {
    let model = Model::from_bytes(&valid_weights(), MANIFEST.as_bytes()).unwrap();
    // x = (1, 2): pre = (1-2, 0.5+4-1, -1+2+0.5) = (-1, 3.5, 1.5);
    // h = (relu(-1), relu(3.5), silu(1.5)) = (0, 3.5, 1.5 * sigmoid(1.5));
    // out = (0 + 0 + 2 * silu(1.5) + 0.25, 0 + 3.5 + 0).
    let silu = 1.5 / (1.0 + (-1.5f32).exp());
    let want = [2.0 * silu + 0.25, 3.5];
    let mut out = vec![0.0; 4];
    let mut scratch = Scratch::new();
    model
        .forward(&[1.0, 2.0, 1.0, 2.0], 2, &mut scratch, &mut out)
        .unwrap();
    for (g, w) in out.iter().zip(want.iter().chain(want.iter())) {
        assert!((g - w).abs() < 1e-6, "{out:?} vs {want:?}");
    }
    assert_eq!(model.group_sizes(), vec![vec![("relu", 2), ("silu", 1)]]);
    let p = model.predict(&[1.0, 2.0]).unwrap();
    assert_eq!(p.class, 1);
    assert!((p.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    // Same answers from the metadata copy of the manifest.
    let again = Model::from_safetensors(&valid_weights()).unwrap();
    let mut out2 = vec![0.0; 4];
    again
        .forward(&[1.0, 2.0, 1.0, 2.0], 2, &mut scratch, &mut out2)
        .unwrap();
    assert_eq!(out, out2);
}

#[test]
fn wrong_sizes_and_bad_files_are_typed_errors() {
    let model = Model::from_bytes(&valid_weights(), MANIFEST.as_bytes()).unwrap();
    let mut s = Scratch::new();
    assert!(matches!(
        model.forward(&[1.0; 3], 2, &mut s, &mut [0.0; 4]),
        Err(Error::InputSize {
            len: 3,
            batch: 2,
            inputs: 2
        })
    ));
    assert!(matches!(
        model.forward(&[1.0; 4], 2, &mut s, &mut [0.0; 3]),
        Err(Error::OutputSize { .. })
    ));
    let wrong_shape = weights(
        &[
            ("layers.0.weight", vec![2, 3], vec![0.0; 6]),
            ("layers.0.bias", vec![3], vec![0.0; 3]),
            ("layers.1.weight", vec![2, 3], vec![0.0; 6]),
            ("layers.1.bias", vec![2], vec![0.0; 2]),
        ],
        None,
    );
    assert!(matches!(
        Model::from_bytes(&wrong_shape, MANIFEST.as_bytes()),
        Err(Error::Shape { .. })
    ));
    let missing = weights(&[("layers.0.weight", vec![3, 2], vec![0.0; 6])], None);
    // A missing or an extra tensor is named (it once said only "1 tensors in the
    // weights, the manifest describes 4").
    match Model::from_bytes(&missing, MANIFEST.as_bytes()) {
        Err(Error::MissingTensor(name)) => assert_eq!(name, "layers.0.bias"),
        other => panic!("expected a missing tensor, got {other:?}"),
    }
    let extra = weights(
        &[
            ("layers.0.weight", vec![3, 2], vec![0.0; 6]),
            ("layers.0.bias", vec![3], vec![0.0; 3]),
            ("layers.1.weight", vec![2, 3], vec![0.0; 6]),
            ("layers.1.bias", vec![2], vec![0.0; 2]),
            ("layers.2.bias", vec![2], vec![0.0; 2]),
        ],
        None,
    );
    let e = Model::from_bytes(&extra, MANIFEST.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor `layers.2.bias` is in the weights but not in the manifest"),
        "{e}"
    );
    let v2 = MANIFEST.replace("version = 1", "version = 3");
    // The manifest is validated first, so an unsupported version is a manifest error
    // naming the field, whatever the weights' metadata copy says.
    match Model::from_bytes(&valid_weights(), v2.as_bytes()) {
        Err(Error::Core(smartmixed_infer::CoreError::Manifest { field, message })) => {
            assert_eq!(field, "version", "{message}")
        }
        other => panic!("expected a manifest error, got {other:?}"),
    }
    let gap = MANIFEST.replace("start = 2", "start = 3");
    let e = Model::from_bytes(&weights(&[], None), gap.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("gap"), "{e}");
    let unknown = MANIFEST.replace("\"silu\"", "\"wobble\"");
    let e = Model::from_bytes(&weights(&[], None), unknown.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("wobble") && e.contains("relu"), "{e}");
    let bytes = valid_weights();
    assert!(matches!(
        Model::from_bytes(&bytes[..bytes.len() - 5], MANIFEST.as_bytes()),
        Err(Error::Safetensors(_))
    ));
    assert!(matches!(
        Model::load_dir("/nonexistent"),
        Err(Error::Io { .. })
    ));
}

#[test]
fn thousands_of_mutated_models_never_panic() {
    let base_weights = valid_weights();
    let mut rng = StdRng::seed_from_u64(99);
    let (mut ok, mut err) = (0, 0);
    for i in 0..4000 {
        let mut w = base_weights.clone();
        let mut m = MANIFEST.as_bytes().to_vec();
        match i % 5 {
            0 => w.truncate(rng.gen_range(0..w.len())),
            1 => {
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..w.len());
                    w[at] ^= 1 << rng.gen_range(0..8);
                }
            }
            2 => {
                // Bit flips in the header region, where offsets and shapes live.
                let at = rng.gen_range(0..w.len().min(300));
                w[at] ^= 1 << rng.gen_range(0..8);
            }
            3 => {
                let at = rng.gen_range(0..m.len());
                m[at] = b"0123456789 =[]\"x\n"[rng.gen_range(0..17)];
            }
            _ => {
                let text = String::from_utf8(m.clone()).unwrap();
                let lines: Vec<&str> = text.lines().collect();
                let drop = rng.gen_range(0..lines.len());
                m = lines
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != drop)
                    .map(|(_, l)| *l)
                    .collect::<Vec<_>>()
                    .join("\n")
                    .into_bytes();
            }
        }
        match Model::from_bytes(&w, &m) {
            Ok(model) => {
                ok += 1;
                let mut out = vec![0.0; model.classes()];
                let input = vec![0.5; model.input_size()];
                model
                    .forward(&input, 1, &mut Scratch::new(), &mut out)
                    .unwrap();
                // What loads is a valid model: finite outputs from finite inputs.
                assert!(out.iter().all(|v| v.is_finite()), "mutant {i}: {out:?}");
            }
            Err(e) => {
                err += 1;
                // Every refusal is one line that says something.
                let text = e.to_string();
                assert!(
                    !text.is_empty() && !text.contains('\n'),
                    "mutant {i}: {text:?}"
                );
            }
        }
    }
    // Truncations (every fifth mutant) never load; most other mutants do not either, and
    // some (a flipped bit in a weight's low mantissa) must.
    assert!(err >= 800 && ok > 0, "ok {ok}, err {err}");
}

/// Every thread computing a call flushes subnormals (a service sent subnormal inputs would
/// otherwise run up to 85x slower), and the caller's mode is as it was after the call.
#[test]
fn forward_flushes_subnormals_and_leaves_the_callers_mode_alone() {
    use smartmixed_core::fpenv;
    // x = (s, 0) with s subnormal: h0 = relu(s) = s, and out1 = -h0 + h1 = -s unless s is
    // flushed (h1 = relu(0.5 s - 1) = 0).
    let s = f32::from_bits(1000);
    for (threads, batch) in [(1, 1), (1, 8), (2, 8)] {
        let model = Model::from_bytes(&valid_weights(), MANIFEST.as_bytes())
            .unwrap()
            .with_pool(Pool::new(threads).unwrap());
        for callers_mode in [false, true] {
            let _caller = fpenv::FlushDenormals::set(callers_mode);
            let input: Vec<f32> = [s, 0.0].repeat(batch);
            let mut out = vec![f32::NAN; 2 * batch];
            model
                .forward(&input, batch, &mut Scratch::new(), &mut out)
                .unwrap();
            if fpenv::SUPPORTED {
                assert!(
                    out.chunks(2).all(|o| o[1] == 0.0),
                    "threads {threads} batch {batch}: {out:?}"
                );
            }
            assert_eq!(
                fpenv::flush_denormals_enabled(),
                callers_mode && fpenv::SUPPORTED
            );
        }
    }
}

/// An absurd thread count is capped (a pool starts its threads), and the capped split
/// still computes the one-thread logits.
#[test]
fn absurd_thread_counts_are_capped() {
    let load = || Model::from_bytes(&valid_weights(), MANIFEST.as_bytes()).unwrap();
    let pool = Pool::new(usize::MAX).unwrap();
    assert_eq!(pool.threads(), smartmixed_infer::MAX_THREADS);
    let (one, many) = (
        load().with_pool(Pool::new(1).unwrap()),
        load().with_pool(pool),
    );
    let batch = 4 * smartmixed_infer::MAX_THREADS + 3;
    let input: Vec<f32> = (0..2 * batch).map(|i| (i % 7) as f32 - 3.0).collect();
    let (mut a, mut b) = (vec![0.0; 2 * batch], vec![f32::NAN; 2 * batch]);
    one.forward(&input, batch, &mut Scratch::new(), &mut a)
        .unwrap();
    many.forward(&input, batch, &mut Scratch::new(), &mut b)
        .unwrap();
    assert_eq!(a, b);
}

/// Hostile batch sizes: a batch whose size products wrap around must not pass the length
/// checks with empty slices, and one whose buffers would be enormous is refused before
/// anything grows.
#[test]
fn hostile_batch_sizes_are_errors() {
    let model = Model::from_bytes(&valid_weights(), MANIFEST.as_bytes()).unwrap();
    let mut scratch = Scratch::new();
    for batch in [1usize << 63, 1 << 62, usize::MAX, (1 << 30) + 1] {
        let err = model
            .forward(&[], batch, &mut scratch, &mut [])
            .unwrap_err();
        assert!(
            matches!(err, Error::BatchTooLarge { .. }),
            "batch {batch}: {err}"
        );
        assert!(!err.to_string().is_empty());
    }
    // Large but allowed: a length mismatch, reported with the full product.
    let err = model
        .forward(&[], 1 << 20, &mut scratch, &mut [])
        .unwrap_err();
    assert!(matches!(err, Error::InputSize { .. }), "{err}");
    assert!(err.to_string().contains("2097152"), "{err}");
}

/// A version-2 manifest's input table is what `forward_raw` applies: the same logits as
/// `forward` on rows preprocessed by hand; a version-1 manifest's raw input is pixels.
#[test]
fn forward_raw_applies_the_manifests_preprocessing() {
    let v2 = MANIFEST.replace("version = 1", "version = 2").replace(
        "output_activation = \"identity\"\n",
        "output_activation = \"identity\"\nclass_names = [\"cat\", \"dog\"]\n\n[input]\nshape = [2]\ndivisor = 2.0\nmean = [1.0, -2.0]\nstd = [2.0, 4.0]\nfeature_names = [\"height\", \"weight\"]\n",
    );
    let weights = hand_weights(None);
    let model = Model::from_bytes(&weights, v2.as_bytes()).unwrap();
    let raw = [6.0f32, 4.0, -2.0, 10.0];
    // By hand: (raw / 2 - mean) / std.
    let by_hand = [1.0f32, 1.0, -1.0, 1.75];
    let (mut a, mut b) = ([0.0f32; 4], [0.0f32; 4]);
    let mut scratch = Scratch::new();
    model.forward_raw(&raw, 2, &mut scratch, &mut a).unwrap();
    model.forward(&by_hand, 2, &mut scratch, &mut b).unwrap();
    assert_eq!(a, b);
    let mut pre = [0.0f32; 4];
    model.preprocess(&raw, 2, &mut pre).unwrap();
    assert_eq!(pre, by_hand);
    assert_eq!(
        model.predict_raw(&raw[..2]).unwrap(),
        model.predict(&by_hand[..2]).unwrap()
    );
    assert_eq!(
        (model.class_name(0), model.class_name(1)),
        ("cat".into(), "dog".into())
    );
    assert!(matches!(
        model.forward_raw(&raw[..3], 2, &mut scratch, &mut a),
        Err(Error::InputSize { .. })
    ));
    // Version 1: raw pixels, divided by 255; classes by number.
    let v1 = Model::from_bytes(&weights, MANIFEST.as_bytes()).unwrap();
    let pixels = [255.0f32, 51.0];
    v1.forward_raw(&pixels, 1, &mut scratch, &mut a[..2])
        .unwrap();
    v1.forward(&[1.0, 0.2], 1, &mut scratch, &mut b[..2])
        .unwrap();
    assert_eq!(a[..2], b[..2]);
    assert_eq!(v1.class_name(1), "1");
}

/// NaN in, infinity out: each is an error naming the row (and the feature), never a
/// prediction. The hand network's second layer overflows for inputs of 3e38: 0.5 * 3e38 +
/// 2 * 3e38 is past f32's 3.4e38.
#[test]
fn non_finite_inputs_preprocessed_values_and_outputs_are_errors() {
    let model = Model::from_bytes(&valid_weights(), MANIFEST.as_bytes()).unwrap();
    let mut s = Scratch::new();
    let mut out = [0.0f32; 4];
    match model.forward(&[1.0, 2.0, 0.5, f32::NAN], 2, &mut s, &mut out) {
        Err(Error::NonFiniteInput {
            row: 1,
            index: 1,
            value,
        }) => assert!(value.is_nan()),
        other => panic!("expected a non-finite input, got {other:?}"),
    }
    match model.forward(&[1.0, 2.0, 3e38, 3e38], 2, &mut s, &mut out) {
        Err(Error::NonFiniteOutput { row: 1, .. }) => {}
        other => panic!("expected a non-finite output, got {other:?}"),
    }
    assert!(model
        .forward(&[1.0, 2.0, 1e3, 1e3], 2, &mut s, &mut out)
        .is_ok());
    let e = model.predict(&[3e38, 3e38]).unwrap_err().to_string();
    assert!(e.contains("output for input row 0 is not finite"), "{e}");
    // raw / 0.5 = 6e38: past f32, although the manifest's map (scale 1, offset 0.5) is sane.
    let v2 = MANIFEST.replace("version = 1", "version = 2").replace(
        "output_activation = \"identity\"\n",
        "output_activation = \"identity\"\n\n[input]\nshape = [2]\ndivisor = 0.5\nmean = [0.0, -1.0]\nstd = [2.0, 2.0]\nfeature_names = [\"height\", \"weight\"]\n",
    );
    let table = Model::from_bytes(&hand_weights(None), v2.as_bytes()).unwrap();
    match table.forward_raw(&[1.0, 1.0, 1.0, 3e38], 2, &mut s, &mut out) {
        Err(Error::NonFinitePreprocessed {
            row: 1,
            feature,
            raw,
            value,
        }) => {
            assert_eq!(feature, "feature `weight`");
            assert_eq!((raw, value), (3e38, f32::INFINITY));
        }
        other => panic!("expected a non-finite preprocessed value, got {other:?}"),
    }
    let e = table
        .predict_raw(&[f32::INFINITY, 0.0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("input row 0, value 0 is inf"), "{e}");
}
