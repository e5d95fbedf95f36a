//! The two output losses against values computed by hand (Python's math module): softmax
//! cross-entropy, and the authors' double softmax (cross-entropy of the softmax), both
//! averaged over the batch as PyTorch's `CrossEntropyLoss` does.

use dfdx::prelude::*;
use smartmixed_train::internals::loss;
use smartmixed_train::Matrix;
use smartmixed_train::OutputLoss;

#[test]
fn cross_entropy_and_double_softmax_match_hand_computed_values() {
    let dev = Cpu::default();
    let logits =
        || -> Matrix<Cpu> { dev.tensor_from_vec(vec![1.0, 2.0, 3.0, 0.5, -1.0, 0.0], (2, 3)) };
    // Classes 2 and 0, one-hot.
    let targets =
        || -> Matrix<Cpu> { dev.tensor_from_vec(vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0], (2, 3)) };
    for (kind, want) in [
        (OutputLoss::CrossEntropy, 0.505_868_3f32),
        (OutputLoss::DoubleSoftmax, 0.848_784_3),
    ] {
        let got = loss(logits(), targets(), kind).as_vec()[0];
        assert!((got - want).abs() < 1e-6, "{kind:?}: {got} vs {want}");
    }
}
