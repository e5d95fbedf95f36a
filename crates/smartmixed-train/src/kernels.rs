//! CPU kernels over row-major `[batch, neurons]` slices: bias add and activation fused into
//! one pass forward and one pass backward. Pure functions on slices, so they are tested
//! directly and wrapped as dfdx ops in [`crate::ops`].

use smartmixed_core::Activation;

/// Phase 1 clamps every candidate activation, and the mixture, to `[-CLAMP, CLAMP]`
/// (the authors' code).
pub const CLAMP: f32 = 10.0;

/// A contiguous block of neurons that share one activation.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub activation: &'static Activation,
    pub start: usize,
    pub len: usize,
}

/// Groups covering `0..choices.len()` where consecutive neurons with the same choice
/// share a group (after the phase-2 permutation that is one group per activation).
pub fn groups_from_choices(choices: &[u8], pool: &[&'static Activation]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, &c) in choices.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if std::ptr::eq(g.activation, pool[c as usize]) => g.len += 1,
            _ => groups.push(Group {
                activation: pool[c as usize],
                start: i,
                len: 1,
            }),
        }
    }
    groups
}

/// `out = act(pre + bias)` group by group; with `deriv`, also `deriv = act'(pre + bias)`.
pub fn grouped_forward(
    pre: &[f32],
    bias: &[f32],
    groups: &[Group],
    out: &mut [f32],
    mut deriv: Option<&mut [f32]>,
) {
    let n = bias.len();
    for (row, (p, o)) in pre.chunks_exact(n).zip(out.chunks_exact_mut(n)).enumerate() {
        for g in groups {
            let r = g.start..g.start + g.len;
            match deriv.as_deref_mut() {
                Some(d) => {
                    let d = &mut d[row * n + g.start..row * n + g.start + g.len];
                    (g.activation.apply_with_derivative)(
                        &p[r.clone()],
                        &bias[r.clone()],
                        &mut o[r],
                        d,
                    )
                }
                None => (g.activation.apply)(&p[r.clone()], &bias[r.clone()], &mut o[r]),
            }
        }
    }
}

/// Backward of [`grouped_forward`]: `g_pre += g_out * deriv`, `g_bias += sum over rows`.
pub fn grouped_backward(g_out: &[f32], deriv: &[f32], g_pre: &mut [f32], g_bias: &mut [f32]) {
    let n = g_bias.len();
    for ((go, d), gp) in g_out
        .chunks_exact(n)
        .zip(deriv.chunks_exact(n))
        .zip(g_pre.chunks_exact_mut(n))
    {
        for i in 0..n {
            let g = go[i] * d[i];
            gp[i] += g;
            g_bias[i] += g;
        }
    }
}

/// What phase 1's backward needs from its forward.
#[derive(Debug, Default)]
pub struct SelectiveSaved {
    /// `[pool][batch * neurons]`: every candidate's clamped value.
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
        // Inference needs only the chosen activation per neuron.
        let groups = groups_from_choices(choices, pool);
        grouped_forward(pre, bias, &groups, out, None);
        for v in out.iter_mut() {
            *v = v.clamp(-CLAMP, CLAMP);
        }
        return;
    };
    s.values.resize(pool.len() * len, 0.0);
    s.deriv.resize(len, 0.0);
    // Candidate j's values and derivatives for one row.
    let mut y = vec![0.0f32; n];
    let mut dy = vec![0.0f32; n];
    for (row, p) in pre.chunks_exact(n).enumerate() {
        let base = row * n;
        for (j, act) in pool.iter().enumerate() {
            (act.apply_with_derivative)(p, bias, &mut y, &mut dy);
            let values = &mut s.values[j * len + base..j * len + base + n];
            let deriv = &mut s.deriv[base..base + n];
            let o = &mut out[base..base + n];
            for i in 0..n {
                let v = y[i].clamp(-CLAMP, CLAMP);
                values[i] = v;
                if choices[i] as usize == j {
                    o[i] = v;
                    deriv[i] = if (-CLAMP..=CLAMP).contains(&y[i]) {
                        dy[i]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Backward of [`selective_forward`] with the straight-through estimator: the hard sample
/// passes the gradient to the soft sample unchanged, so
/// `g_soft[j][i] += sum_rows g_out * value_j` and `g_pre += g_out * deriv_chosen`.
pub fn selective_backward(
    g_out: &[f32],
    saved: &SelectiveSaved,
    g_pre: &mut [f32],
    g_bias: &mut [f32],
    g_soft: &mut [f32],
) {
    grouped_backward(g_out, &saved.deriv, g_pre, g_bias);
    let n = g_bias.len();
    let len = g_out.len();
    for (j, gs) in g_soft.chunks_exact_mut(n).enumerate() {
        let values = &saved.values[j * len..(j + 1) * len];
        for (go, v) in g_out.chunks_exact(n).zip(values.chunks_exact(n)) {
            for i in 0..n {
                gs[i] += go[i] * v[i];
            }
        }
    }
}
