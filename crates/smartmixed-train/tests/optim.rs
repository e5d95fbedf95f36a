//! Adam and global-norm clipping against PyTorch: values computed with
//! `torch.optim.Adam(lr=0.1)` and `torch.nn.utils.clip_grad_norm_(params, 1.0)` (PyTorch
//! 2.15) on a loss linear in the parameters, so each step's gradient is known exactly.

use dfdx::prelude::*;
use smartmixed_train::Adam;
use smartmixed_train::Matrix;

#[test]
fn adam_with_clipping_matches_pytorch() {
    let dev = Cpu::default();
    let mut w: Matrix<Cpu> = dev.tensor_from_vec(vec![0.5, -1.0, 2.0, 0.0, 0.3, -0.7], (2, 3));
    let mut b: Matrix<Cpu> = dev.tensor_from_vec(vec![0.1, -0.2], (1, 2));
    let c1 = [1.0f32, -2.0, 3.0, 0.5, 0.0, -1.5];
    let c2 = [2.0f32, -0.5];
    let mut adam = Adam::new(&[&w, &b], 0.1).unwrap();
    let mut norms = Vec::new();
    for step in 0..3 {
        // loss = sum(W * C1 * (step + 1)) + sum(b * C2): dW = C1 * (step + 1), db = C2.
        let scale = (step + 1) as f32;
        let cw = dev.tensor_from_vec(c1.iter().map(|v| v * scale).collect(), (2, 3));
        let cb = dev.tensor_from_vec(c2.to_vec(), (1, 2));
        let loss = (w.clone().leaky_traced() * cw).sum::<Rank0, _>()
            + (b.clone().leaky_traced() * cb).sum::<Rank0, _>();
        let mut grads = loss.backward();
        norms.push(adam.step(vec![&mut w, &mut b], &mut grads, 1.0).unwrap());
    }
    let close = |got: &[f32], want: &[f32]| {
        for (g, e) in got.iter().zip(want) {
            assert!((g - e).abs() <= 2e-6, "{got:?} vs PyTorch {want:?}");
        }
    };
    for (n, want) in norms.iter().zip([4.555_216_8, 8.381_528, 12.359_208]) {
        assert!((n - want).abs() <= 1e-5, "norm {n} vs PyTorch {want}");
    }
    close(
        &w.as_vec(),
        &[
            0.199_622_56,
            -0.699_622_5,
            1.699_622_5,
            -0.300_377_43,
            0.3,
            -0.399_622_56,
        ],
    );
    close(&b.as_vec(), &[-0.183_536_36, 0.083_536_34]);
}
