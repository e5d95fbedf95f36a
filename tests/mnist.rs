//! The vendored MNIST read by our IDX reader against the published facts: image shape,
//! class counts of both files, and the paper's 54,000 / 6,000 stratified split.

use std::path::PathBuf;

use smartmixed_train::data::Splits;
use smartmixed_train::DataConfig;

fn counts(labels: &[u8]) -> Vec<usize> {
    (0..10)
        .map(|c| labels.iter().filter(|&&l| l == c).count())
        .collect()
}

#[test]
fn vendored_mnist_matches_the_published_class_counts_and_split() {
    let cfg = DataConfig {
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist"),
        ..Default::default()
    };
    let s = Splits::load(&cfg, 10).unwrap();
    assert_eq!(s.train.features(), 784);
    assert_eq!(
        (s.train.len(), s.validation.len(), s.test.len()),
        (54_000, 6_000, 10_000)
    );
    let train: Vec<usize> = counts(s.train.labels())
        .iter()
        .zip(counts(s.validation.labels()))
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(
        train,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        counts(s.test.labels()),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    // Stratified: each class contributes 10% (rounded) to validation.
    for (c, (&v, &all)) in counts(s.validation.labels()).iter().zip(&train).enumerate() {
        assert_eq!(v, (all as f64 * 0.1).round() as usize, "class {c}");
    }
    // The first test image is a 7 whose centre pixel row has ink.
    assert_eq!(s.test.labels()[0], 7);
    assert!(s.test.image(0).iter().any(|&p| p > 200));
}
