//! CPU kernels over row-major `[batch, neurons]` slices: bias add and activation fused into
//! one pass forward and one pass backward, each split by rows over the current rayon pool
//! (the run's training threads) when the work is large enough to pay for the split. Pure functions on slices, so they are tested directly and
//! wrapped as the dense-layer dfdx op in [`crate::ops`].

use rayon::prelude::*;

use crate::pool::{least_items_for, SPLIT_FROM_EVALUATIONS};
use smartmixed_core::{apply_blocks, Activation};

/// Phase 1 clamps every candidate activation, and the mixture, to `[-CLAMP, CLAMP]`
/// (the authors' code).
pub const CLAMP: f32 = 10.0;

pub use smartmixed_core::Block;

/// Groups covering `0..choices.len()` where consecutive neurons with the same choice
/// share a group (after the phase-2 permutation that is one group per activation).
pub fn groups_from_choices(choices: &[u8], pool: &[&'static Activation]) -> Vec<Block> {
    let mut groups: Vec<Block> = Vec::new();
    for (i, &c) in choices.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if std::ptr::eq(g.activation, pool[c as usize]) => g.len += 1,
            _ => groups.push(Block {
                activation: pool[c as usize],
                start: i,
                len: 1,
            }),
        }
    }
    groups
}

/// How a `[rows, width]` slice whose every value costs `cost` activation evaluations is
/// split: `(values per share, least shares a thread takes)`. Whole rows, one share per
/// thread of the pool, always: the shares fix the order in which column sums add up, so
/// results depend on the thread count only. Work too small to pay for a split (see
/// [`SPLIT_FROM_EVALUATIONS`]) runs every share in order on the calling thread.
fn share(len: usize, width: usize, cost: usize) -> (usize, usize) {
    let rows = len / width.max(1);
    let chunk = rows.div_ceil(rayon::current_num_threads()).max(1) * width.max(1);
    (
        chunk,
        least_items_for(len.saturating_mul(cost), SPLIT_FROM_EVALUATIONS),
    )
}

/// Adds each share's partial column sums into `total`, in share order, so the result
/// depends on the thread count but never on how rayon scheduled the shares (a resumed run
/// must repeat an uninterrupted one bit for bit).
fn sum_partials(total: &mut [f32], partials: impl IndexedParallelIterator<Item = Vec<f32>>) {
    let partials: Vec<Vec<f32>> = partials.collect();
    for part in &partials {
        total.iter_mut().zip(part).for_each(|(t, s)| *t += s);
    }
}

/// `out = act(pre + bias)` group by group; with `deriv`, also `deriv = act'(pre + bias)`.
pub fn grouped_forward(
    pre: &[f32],
    bias: &[f32],
    groups: &[Block],
    out: &mut [f32],
    deriv: Option<&mut [f32]>,
) {
    let n = bias.len();
    let (chunk, least) = share(pre.len(), n, 1);
    let rows = pre.par_chunks(chunk).zip(out.par_chunks_mut(chunk));
    match deriv {
        Some(d) => rows
            .zip(d.par_chunks_mut(chunk))
            .with_min_len(least)
            .for_each(|((p, o), d)| grouped_rows(p, bias, groups, o, Some(d))),
        None => rows
            .with_min_len(least)
            .for_each(|(p, o)| grouped_rows(p, bias, groups, o, None)),
    }
}

fn grouped_rows(
    pre: &[f32],
    bias: &[f32],
    groups: &[Block],
    out: &mut [f32],
    mut deriv: Option<&mut [f32]>,
) {
    let n = bias.len();
    for (row, (p, o)) in pre.chunks_exact(n).zip(out.chunks_exact_mut(n)).enumerate() {
        let Some(d) = deriv.as_deref_mut() else {
            // The runtime's epilogue, exactly.
            apply_blocks(p, bias, groups, o);
            continue;
        };
        for g in groups {
            let r = g.range();
            let d = &mut d[row * n + g.start..row * n + g.start + g.len];
            (g.activation.apply_with_derivative)(&p[r.clone()], &bias[r.clone()], &mut o[r], d)
        }
    }
}

/// `out = pre + bias` on every row (the output layer, whose activation is the identity).
pub fn bias_forward(pre: &[f32], bias: &[f32], out: &mut [f32]) {
    let n = bias.len();
    let (chunk, least) = share(pre.len(), n, 1);
    pre.par_chunks(chunk)
        .zip(out.par_chunks_mut(chunk))
        .with_min_len(least)
        .for_each(|(p, o)| {
            for (p, o) in p.chunks_exact(n).zip(o.chunks_exact_mut(n)) {
                for ((o, p), b) in o.iter_mut().zip(p).zip(bias) {
                    *o = p + b;
                }
            }
        });
}

/// Column sums of `g` (`[rows, n]`) added into `g_bias` (`n`): the bias gradient.
pub fn bias_backward(g: &[f32], g_bias: &mut [f32]) {
    let n = g_bias.len();
    let (chunk, least) = share(g.len(), n, 1);
    let partials = g.par_chunks(chunk).with_min_len(least).map(|g| {
        let mut sum = vec![0.0f32; n];
        for row in g.chunks_exact(n) {
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        sum
    });
    sum_partials(g_bias, partials);
}

/// Backward of [`grouped_forward`]: `g_pre = g_out * deriv`, `g_bias += sum over rows`.
pub fn grouped_backward(g_out: &[f32], deriv: &[f32], g_pre: &mut [f32], g_bias: &mut [f32]) {
    let n = g_bias.len();
    let (chunk, least) = share(g_out.len(), n, 1);
    let partials = g_out
        .par_chunks(chunk)
        .zip(deriv.par_chunks(chunk))
        .zip(g_pre.par_chunks_mut(chunk))
        .with_min_len(least)
        .map(|((go, d), gp)| {
            let mut sum = vec![0.0f32; n];
            for ((go, d), gp) in go
                .chunks_exact(n)
                .zip(d.chunks_exact(n))
                .zip(gp.chunks_exact_mut(n))
            {
                for i in 0..n {
                    let g = go[i] * d[i];
                    gp[i] = g;
                    sum[i] += g;
                }
            }
            sum
        });
    sum_partials(g_bias, partials);
}

/// What phase 1's backward needs from its forward.
#[derive(Debug, Default)]
pub struct SelectiveSaved {
    /// `[batch][pool][neurons]`: every candidate's clamped value (row-major by batch row,
    /// so a share of rows is one contiguous slice).
    pub values: Vec<f32>,
    /// `[batch * neurons]`: the chosen candidate's derivative, zero where clamped.
    pub deriv: Vec<f32>,
}

/// Phase 1 forward with the hard (one-hot) sample `choices`:
/// `out = clamp(act_{choice}(pre + bias), -CLAMP, CLAMP)`, exactly the selected activation.
/// With `saved`, every candidate is evaluated and kept for the backward pass.
pub fn selective_forward(
    pre: &[f32],
    bias: &[f32],
    pool: &[&'static Activation],
    choices: &[u8],
    out: &mut [f32],
    saved: Option<&mut SelectiveSaved>,
) {
    let n = bias.len();
    let len = pre.len();
    let Some(s) = saved else {
        return chosen_forward(pre, bias, pool, choices, out);
    };
    let p = pool.len();
    s.values.resize(p * len, 0.0);
    s.deriv.resize(len, 0.0);
    let (chunk, least) = share(len, n, p);
    pre.par_chunks(chunk)
        .zip(out.par_chunks_mut(chunk))
        .zip(s.values.par_chunks_mut(chunk * p))
        .zip(s.deriv.par_chunks_mut(chunk))
        .with_min_len(least)
        .for_each(|(((pre, out), values), deriv)| {
            selective_rows(pre, bias, pool, choices, out, values, deriv)
        });
}

/// Inference in phase 1: only the chosen activation per neuron, clamped. The neurons of a
/// row are taken in the order of their choices, so that each activation runs once over a
/// contiguous block: in their own order they form groups of one or two neurons, each a
/// call (one thread, a 133 x 64 layer of wine's evaluations: 41-70 us that way, 13-19 us
/// sorted). The activations are elementwise, so the values are the same either way.
fn chosen_forward(
    pre: &[f32],
    bias: &[f32],
    pool: &[&'static Activation],
    choices: &[u8],
    out: &mut [f32],
) {
    let n = bias.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&j| choices[j]);
    let sorted: Vec<u8> = order.iter().map(|&j| choices[j]).collect();
    let groups = groups_from_choices(&sorted, pool);
    let sorted_bias: Vec<f32> = order.iter().map(|&j| bias[j]).collect();
    let (chunk, least) = share(pre.len(), n, 1);
    pre.par_chunks(chunk)
        .zip(out.par_chunks_mut(chunk))
        .with_min_len(least)
        .for_each(|(pre, out)| {
            let (mut z, mut y) = (vec![0.0f32; n], vec![0.0f32; n]);
            for (p, o) in pre.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
                z.iter_mut().zip(&order).for_each(|(z, &j)| *z = p[j]);
                apply_blocks(&z, &sorted_bias, &groups, &mut y);
                y.iter()
                    .zip(&order)
                    .for_each(|(&v, &j)| o[j] = v.clamp(-CLAMP, CLAMP));
            }
        });
}

fn selective_rows(
    pre: &[f32],
    bias: &[f32],
    pool: &[&'static Activation],
    choices: &[u8],
    out: &mut [f32],
    values: &mut [f32],
    deriv: &mut [f32],
) {
    let (n, p) = (bias.len(), pool.len());
    // Every candidate's derivative for one row, `[pool][neurons]`.
    let mut dy = vec![0.0f32; p * n];
    for (row, pre) in pre.chunks_exact(n).enumerate() {
        let values = &mut values[row * p * n..(row + 1) * p * n];
        for ((act, v), d) in pool
            .iter()
            .zip(values.chunks_exact_mut(n))
            .zip(dy.chunks_exact_mut(n))
        {
            (act.apply_with_derivative)(pre, bias, v, d);
        }
        // Branch-free passes over all candidates: zero derivatives where the clamp is
        // active, then clamp; the chosen candidate is then picked per neuron.
        for (v, d) in values.iter_mut().zip(dy.iter_mut()) {
            *d = if (-CLAMP..=CLAMP).contains(v) {
                *d
            } else {
                0.0
            };
            *v = v.clamp(-CLAMP, CLAMP);
        }
        let (o, dr) = (
            &mut out[row * n..(row + 1) * n],
            &mut deriv[row * n..(row + 1) * n],
        );
        for (i, &c) in choices.iter().enumerate() {
            let at = c as usize * n + i;
            o[i] = values[at];
            dr[i] = dy[at];
        }
    }
}

/// Backward of [`selective_forward`] with the straight-through estimator: the hard sample
/// passes the gradient to the soft sample unchanged, so
/// `g_soft[j][i] += sum_rows g_out * value_j`, `g_pre = g_out * deriv_chosen` and
/// `g_bias += sum_rows g_pre`.
pub fn selective_backward(
    g_out: &[f32],
    saved: &SelectiveSaved,
    g_pre: &mut [f32],
    g_bias: &mut [f32],
    g_soft: &mut [f32],
) {
    grouped_backward(g_out, &saved.deriv, g_pre, g_bias);
    let n = g_bias.len();
    let p = g_soft.len() / n.max(1);
    let (chunk, least) = share(g_out.len(), n, p);
    let partials = g_out
        .par_chunks(chunk)
        .zip(saved.values.par_chunks(chunk * p))
        .with_min_len(least)
        .map(|(go, values)| {
            let mut sum = vec![0.0f32; p * n];
            for (go, v) in go.chunks_exact(n).zip(values.chunks_exact(p * n)) {
                for (gs, v) in sum.chunks_exact_mut(n).zip(v.chunks_exact(n)) {
                    for i in 0..n {
                        gs[i] += go[i] * v[i];
                    }
                }
            }
            sum
        });
    sum_partials(g_soft, partials);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's six activations, in its order.
    fn paper_pool() -> Vec<&'static Activation> {
        ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu"]
            .iter()
            .map(|n| smartmixed_core::lookup(n).unwrap())
            .collect()
    }

    /// Every kernel split over three threads (work above [`SPLIT_FROM_EVALUATIONS`])
    /// against the same call on one thread: forward values bit for bit (rows are
    /// independent), the column sums of the backward within rounding (their order of
    /// addition depends on the split).
    #[test]
    fn split_kernels_agree_with_one_thread() {
        let pool = paper_pool();
        let (rows, n, p) = (600, 64, pool.len());
        assert!(rows * n >= SPLIT_FROM_EVALUATIONS);
        let values = |len: usize, seed: f32| -> Vec<f32> {
            (0..len)
                .map(|i| ((i as f32 + seed) * 0.37).sin() * 3.0)
                .collect()
        };
        let (pre, g_out, bias) = (values(rows * n, 1.0), values(rows * n, 2.0), values(n, 3.0));
        let choices: Vec<u8> = (0..n).map(|i| (i * 7 % p) as u8).collect();
        let groups = groups_from_choices(&choices, &pool);
        let run = |threads: usize| {
            let rayon = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            rayon.install(|| {
                let (mut out, mut deriv) = (vec![0.0; rows * n], vec![0.0; rows * n]);
                grouped_forward(&pre, &bias, &groups, &mut out, Some(&mut deriv));
                let (mut g_pre, mut g_bias) = (vec![0.0; rows * n], vec![0.0; n]);
                grouped_backward(&g_out, &deriv, &mut g_pre, &mut g_bias);
                let mut plain = vec![0.0; rows * n];
                bias_forward(&pre, &bias, &mut plain);
                let mut plain_bias = vec![0.0; n];
                bias_backward(&g_out, &mut plain_bias);
                let (mut sel, mut saved) = (vec![0.0; rows * n], SelectiveSaved::default());
                selective_forward(&pre, &bias, &pool, &choices, &mut sel, Some(&mut saved));
                let mut inferred = vec![0.0; rows * n];
                selective_forward(&pre, &bias, &pool, &choices, &mut inferred, None);
                let (mut s_pre, mut s_bias, mut s_soft) =
                    (vec![0.0; rows * n], vec![0.0; n], vec![0.0; p * n]);
                selective_backward(&g_out, &saved, &mut s_pre, &mut s_bias, &mut s_soft);
                let exact = [
                    out,
                    deriv,
                    g_pre,
                    plain,
                    sel,
                    inferred,
                    saved.values,
                    saved.deriv,
                    s_pre,
                ];
                (exact, [g_bias, plain_bias, s_bias, s_soft])
            })
        };
        let (one, one_sums) = run(1);
        let (three, three_sums) = run(3);
        for (i, (a, b)) in one.iter().zip(&three).enumerate() {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "output {i}"
            );
        }
        for (i, (a, b)) in one_sums.iter().zip(&three_sums).enumerate() {
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                    "sum {i}: {x} vs {y}"
                );
            }
        }
        assert!(
            one_sums[0].iter().any(|v| v.abs() > 1.0),
            "sums of something"
        );
    }

    /// Phase 1's inference (neurons sorted by their choice) against the chosen
    /// activation of each value on its own, hand-applied with its scalar `forward` and
    /// clamped, and against the training forward's output: the same bits, with choices
    /// that alternate, values past the clamp and a layer of one neuron.
    #[test]
    fn phase1_inference_gives_each_neurons_chosen_activation() {
        let pool = paper_pool();
        for (rows, n) in [(5, 37), (3, 1), (2, 64)] {
            let pre: Vec<f32> = (0..rows * n)
                .map(|i| ((i as f32) * 0.61).sin() * 40.0)
                .collect();
            let bias: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).cos()).collect();
            let choices: Vec<u8> = (0..n).map(|i| ((i * 5 + i / 3) % 6) as u8).collect();
            let mut got = vec![f32::NAN; rows * n];
            selective_forward(&pre, &bias, &pool, &choices, &mut got, None);
            let mut trained = vec![f32::NAN; rows * n];
            let mut saved = SelectiveSaved::default();
            selective_forward(&pre, &bias, &pool, &choices, &mut trained, Some(&mut saved));
            for (i, (&g, &t)) in got.iter().zip(&trained).enumerate() {
                let c = i % n;
                let act = pool[choices[c] as usize];
                let want = (act.forward)(pre[i] + bias[c]).clamp(-CLAMP, CLAMP);
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "{rows} x {n} at {i} ({})",
                    act.name
                );
                assert_eq!(g.to_bits(), t.to_bits(), "against training, {i}");
            }
        }
    }
}
