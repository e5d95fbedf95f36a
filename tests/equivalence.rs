//! Equivalences across the pipeline: phase 1 with argmax choices and no noise computes the
//! same function as the phase-2 network built from it (grouping permutation included), the
//! fused CPU ops compute the same network as the device-generic ops, and checkpoints
//! reload to the same function.

use std::path::Path;

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smartmixed_core::{lookup, PAPER_POOL};
use smartmixed_train::checkpoint;
use smartmixed_train::data::Dataset;
use smartmixed_train::Matrix;
use smartmixed_train::{Hidden, Network};

const WIDTHS: [usize; 5] = [784, 48, 40, 32, 10];

fn mnist_batch(dev: &Cpu, n: usize) -> Matrix<Cpu> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let test = Dataset::from_idx(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
        10,
    )
    .unwrap();
    let idx: Vec<usize> = (0..n).collect();
    dev.tensor_from_vec(test.batch(&idx, 10).inputs, (n, 784))
}

/// A phase-1 network whose logits are spread so every activation is someone's argmax.
fn selective(dev: &Cpu, seed: u64) -> Network<Cpu> {
    let mut rng = StdRng::seed_from_u64(seed);
    let pool = PAPER_POOL.iter().map(|n| lookup(n).unwrap()).collect();
    let mut net = Network::selective(dev, &WIDTHS, pool, 0.3, &mut rng);
    if let Hidden::Selective { logits, .. } = &mut net.hidden {
        for l in logits.iter_mut() {
            let v: Vec<f32> = (0..l.shape().0 * l.shape().1)
                .map(|_| rng.gen_range(-2.0..2.0))
                .collect();
            *l = dev.tensor_from_vec(v, *l.shape());
        }
    }
    net
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn phase2_computes_the_phase1_argmax_function() {
    let dev = Cpu::default();
    let x = mnist_batch(&dev, 256);
    for seed in 0..3 {
        let p1 = selective(&dev, seed);
        let p2 = p1.to_mixed(None).unwrap();
        let Hidden::Grouped {
            groups,
            original_index,
        } = &p2.hidden
        else {
            panic!("phase 2 is grouped")
        };
        let choices = p1.argmax_choices().unwrap();
        for (l, gs) in groups.iter().enumerate() {
            // Every activation that some neuron chose owns exactly one contiguous block.
            let used = PAPER_POOL
                .iter()
                .filter(|n| choices[l].iter().any(|&c| PAPER_POOL[c as usize] == **n))
                .count();
            assert_eq!(gs.len(), used, "layer {l}");
            let mut perm = original_index[l].clone();
            perm.sort_unstable();
            assert_eq!(perm, (0..WIDTHS[l + 1] as u32).collect::<Vec<_>>());
            for g in gs {
                for i in g.start..g.start + g.len {
                    assert_eq!(
                        PAPER_POOL[choices[l][original_index[l][i] as usize] as usize],
                        g.activation.name
                    );
                }
            }
        }
        let y1 = p1.forward(x.clone(), None).as_vec();
        let y2 = p2.forward(x.clone(), None).as_vec();
        let diff = max_abs_diff(&y1, &y2);
        assert!(diff < 1e-5, "seed {seed}: max |phase1 - phase2| = {diff}");
        assert!(
            y1.iter().any(|v| v.abs() > 0.05),
            "outputs are not trivially zero"
        );
    }
}

#[test]
fn reinit_keeps_the_groups_and_draws_new_weights() {
    let dev = Cpu::default();
    let p1 = selective(&dev, 9);
    let transferred = p1.to_mixed(None).unwrap();
    let reinit = p1.to_mixed(Some(&mut StdRng::seed_from_u64(1))).unwrap();
    let sizes = |n: &Network<Cpu>| match &n.hidden {
        Hidden::Grouped { groups, .. } => groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|g| (g.activation.name, g.len))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>(),
        _ => unreachable!(),
    };
    assert_eq!(sizes(&transferred), sizes(&reinit));
    assert_ne!(
        transferred.layers[0].weight.as_vec(),
        reinit.layers[0].weight.as_vec()
    );
}

#[test]
fn fused_and_generic_ops_compute_the_same_networks() {
    let dev = Cpu::default();
    let x = mnist_batch(&dev, 64);
    let p1 = selective(&dev, 4);
    let p2 = p1.to_mixed(None).unwrap();
    let fixed = Network::fixed(
        &dev,
        &WIDTHS,
        lookup("selu").unwrap(),
        &mut StdRng::seed_from_u64(3),
    );
    for net in [&p1, &p2, &fixed] {
        let fused = net.forward(x.clone(), None).as_vec();
        let generic = net.forward_generic(x.clone(), None).as_vec();
        assert!(max_abs_diff(&fused, &generic) < 1e-6);
        // With noise: the same draws give the same choices and outputs.
        let fused = net
            .forward(x.clone(), Some(&mut StdRng::seed_from_u64(5)))
            .as_vec();
        let generic = net
            .forward_generic(x.clone(), Some(&mut StdRng::seed_from_u64(5)))
            .as_vec();
        assert!(max_abs_diff(&fused, &generic) < 1e-6);
    }
}

#[test]
fn checkpoints_reload_to_the_same_function() {
    let dev = Cpu::default();
    let x = mnist_batch(&dev, 32);
    let dir = tempfile::tempdir().unwrap();
    let p1 = selective(&dev, 2);
    let p2 = p1.to_mixed(None).unwrap();
    for (name, net) in [("p1.safetensors", &p1), ("p2.safetensors", &p2)] {
        let path = dir.path().join(name);
        checkpoint::save(net, &path).unwrap();
        let back = checkpoint::load(&dev, &path).unwrap();
        assert_eq!(
            net.forward(x.clone(), None).as_vec(),
            back.forward(x.clone(), None).as_vec()
        );
        assert_eq!(net.argmax_choices(), back.argmax_choices());
    }
    // Groups and permutation are checked as a manifest's are: one changed entry of
    // original_index makes a value repeat or fall out of range.
    let path = dir.path().join("p2.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(16)
        .position(|w| w == b"original_index\":")
        .expect("metadata original_index");
    let digit = at + bytes[at..].iter().position(u8::is_ascii_digit).unwrap();
    bytes[digit] = if bytes[digit] == b'9' {
        b'8'
    } else {
        bytes[digit] + 1
    };
    std::fs::write(dir.path().join("perm.safetensors"), &bytes).unwrap();
    let err = checkpoint::load(&dev, &dir.path().join("perm.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("original_index") && err.contains("out of range or repeated"),
        "{err}"
    );
    // A damaged checkpoint is an error naming the file, never a panic.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&path, &bytes).unwrap();
    let err = checkpoint::load(&dev, &path).unwrap_err().to_string();
    assert!(err.contains("p2.safetensors"), "{err}");
}
