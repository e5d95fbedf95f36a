//! Damaged checkpoints, one kind of damage at a time, are refused with an error that names
//! the file and what is wrong, and a sound one reloads whole. The damage is made with the
//! `safetensors` crate itself (an independent writer), not by the trainer's serialiser.

use std::collections::HashMap;
use std::path::Path;

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use smartmixed_core::lookup;
use smartmixed_train::checkpoint;
use smartmixed_train::Network;

/// One tensor as written: name, dtype, shape, bytes.
type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

fn phase1() -> Network<Cpu> {
    let pool = ["relu", "tanh", "elu"]
        .iter()
        .map(|n| lookup(n).unwrap())
        .collect();
    Network::selective(
        &Cpu::default(),
        &[6, 5, 4, 3],
        pool,
        0.5,
        &mut StdRng::seed_from_u64(1),
    )
}

/// Reads `bytes`, lets `damage` change tensors and metadata, writes them back.
fn rewrite(
    bytes: &[u8],
    damage: impl FnOnce(&mut Vec<Tensor>, &mut HashMap<String, String>),
) -> Vec<u8> {
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<Tensor> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    damage(&mut tensors, &mut meta);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, &Some(meta)).unwrap()
}

fn tensor<'a>(tensors: &'a mut [Tensor], name: &str) -> &'a mut Tensor {
    tensors.iter_mut().find(|t| t.0 == name).unwrap()
}

fn refused(bytes: &[u8], expected: &str) {
    let path = Path::new("damaged.safetensors");
    match checkpoint::from_bytes(&Cpu::default(), bytes, path) {
        Ok(_) => panic!("accepted a checkpoint that should fail with `{expected}`"),
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.starts_with("damaged.safetensors: invalid checkpoint: "),
                "{e}"
            );
            assert!(e.contains(expected), "expected `{expected}` in: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}

#[test]
fn an_undamaged_rewrite_loads_to_the_same_network() {
    let net = phase1();
    let bytes = rewrite(&checkpoint::to_bytes(&net), |_, _| {});
    let back = checkpoint::from_bytes(&Cpu::default(), &bytes, Path::new("x")).unwrap();
    for (a, b) in net.layers.iter().zip(&back.layers) {
        assert_eq!(a.weight.as_vec(), b.weight.as_vec());
        assert_eq!(a.bias.as_vec(), b.bias.as_vec());
    }
    assert_eq!(net.argmax_choices(), back.argmax_choices());
}

#[test]
fn damaged_phase1_checkpoints_are_refused_naming_what_is_wrong() {
    let good = checkpoint::to_bytes(&phase1());
    let meta = |key: &'static str, value: &'static str| {
        rewrite(&good, move |_, m| {
            m.insert(key.into(), value.into());
        })
    };
    refused(&meta("format", "other-1"), "metadata `format` is `other-1`");
    refused(&meta("kind", "wobbly"), "metadata `kind` is `wobbly`");
    refused(
        &meta("pool", "[\"relu\",\"nope\",\"elu\"]"),
        "unknown activation `nope`",
    );
    refused(&meta("pool", "relu"), "metadata `pool`");
    refused(&meta("temperature", "warm"), "metadata `temperature`");
    let dropped = rewrite(&good, |_, m| {
        m.remove("kind");
    });
    refused(&dropped, "metadata key `kind` missing");
    let nan = rewrite(&good, |t, _| {
        tensor(t, "layers.1.weight").3[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    refused(
        &nan,
        "tensor `layers.1.weight` holds a NaN or infinite value at element 2",
    );
    let f16 = rewrite(&good, |t, _| {
        let w = tensor(t, "layers.0.bias");
        w.1 = Dtype::F16;
        w.2 = vec![10];
    });
    refused(&f16, "tensor `layers.0.bias` has dtype F16, expected F32");
    let bias = rewrite(&good, |t, _| {
        let b = tensor(t, "layers.2.bias");
        b.2 = vec![2];
        b.3.truncate(8);
    });
    refused(&bias, "tensor `layers.2.bias` has shape [2], expected [3]");
    let chain = rewrite(&good, |t, _| {
        let w = tensor(t, "layers.1.weight");
        w.2 = vec![5, 4];
        w.3.truncate(80);
    });
    refused(
        &chain,
        "tensor `layers.1.weight` has shape [5, 4], expected [out, 5]",
    );
    let logits = rewrite(&good, |t, _| t.retain(|t| t.0 != "layers.1.logits"));
    refused(&logits, "tensor `layers.1.logits` missing");
    let first = rewrite(&good, |t, _| t.retain(|t| !t.0.starts_with("layers.0.")));
    refused(&first, "tensor `layers.0.weight` missing");
}

#[test]
fn damaged_phase2_checkpoints_are_refused_naming_what_is_wrong() {
    let good = checkpoint::to_bytes(&phase1().to_mixed(None).unwrap());
    let (_, header) = SafeTensors::read_metadata(&good).unwrap();
    let meta = header.metadata().clone().unwrap();
    let groups: Vec<Vec<(String, usize, usize)>> = serde_json::from_str(&meta["groups"]).unwrap();
    let with_groups = |groups: &Vec<Vec<(String, usize, usize)>>| {
        let text = serde_json::to_string(groups).unwrap();
        rewrite(&good, move |_, m| {
            m.insert("groups".into(), text);
        })
    };
    let mut gap = groups.clone();
    gap[0][0].2 -= 1; // the first block ends one early: the next one leaves a gap
    let expected = if gap[0][0].2 == 0 {
        "metadata `groups` layer 0 group 0: empty group"
    } else if gap[0].len() == 1 {
        "metadata `groups` layer 0: cover"
    } else {
        "metadata `groups` layer 0 group 1: starts at"
    };
    refused(&with_groups(&gap), expected);
    let mut unknown = groups.clone();
    unknown[1][0].0 = "wobble".into();
    refused(&with_groups(&unknown), "unknown activation `wobble`");
    let mut fewer = groups.clone();
    fewer.pop();
    refused(
        &with_groups(&fewer),
        "metadata describes 1 hidden layers, the tensors 2",
    );
    let repeated = rewrite(&good, |_, m| {
        m.insert("original_index".into(), "[[0,0,1,2,3],[0,1,2,3]]".into());
    });
    refused(
        &repeated,
        "metadata `original_index` layer 0: 0 is out of range or repeated",
    );
    let short = rewrite(&good, |_, m| {
        m.insert("original_index".into(), "[[0,1,2,3],[0,1,2,3]]".into());
    });
    refused(
        &short,
        "metadata `original_index` layer 0: 4 entries for 5 neurons",
    );
}
