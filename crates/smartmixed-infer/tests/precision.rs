//! Models loaded in bf16 against the same models in f32: close logits and the same
//! classes, one thread's bits whatever the pool, and the precision reported.

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
    let widths = [97, 130, 90, 90, 64, 64, 40, 10];
    let net = files(&widths);
    let (f32m, bf16m) = (
        load(&net, Precision::F32, 1),
        load(&net, Precision::Bf16, 1),
    );
    assert_eq!(bf16m.precision(), Precision::Bf16);
    assert!(bf16m.kernel_description().starts_with("bf16: "));
    assert!(f32m.kernel_description().starts_with("f32: "));
    let rows = 300;
    let x: Vec<f32> = (0..rows * 97)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let (mut a, mut b) = (vec![0.0; rows * 10], vec![0.0; rows * 10]);
    f32m.forward(&x, rows, &mut Scratch::new(), &mut a).unwrap();
    bf16m
        .forward(&x, rows, &mut Scratch::new(), &mut b)
        .unwrap();
    assert_ne!(a, b, "bf16 must differ from f32 somewhere");
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

/// In bf16 too, a split pass (rows over a pool of two or three) gives one thread's bits,
/// at batch 1 (no split), 8, 32 and 40 (chunks of 16 rows) and 300, and raw rows go
/// through the same path.
#[test]
fn bf16_splits_give_one_threads_bits() {
    let net = files(&[33, 70, 45, 10]);
    let alone = load(&net, Precision::Bf16, 1);
    for threads in [2, 3] {
        let model = load(&net, Precision::Bf16, threads);
        let mut scratch = Scratch::new();
        for batch in [1, 8, 32, 40, 300] {
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

#[test]
fn precision_names_round_trip_and_unknown_ones_are_refused() {
    for p in [Precision::F32, Precision::Bf16] {
        assert_eq!(p.name().parse::<Precision>(), Ok(p));
    }
    let err = "int4".parse::<Precision>().unwrap_err();
    assert!(err.contains("int4") && err.contains("bf16"), "{err}");
}
