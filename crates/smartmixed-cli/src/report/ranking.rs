//! The paper's comparisons (section IV.D): ranks of methods per architecture, Mean
//! Reciprocal Rank (eq. 11), how often each method takes each rank (Fig. 5), and the
//! mean weight between activation groups (Fig. 6). Pure functions on plain data.
//!
//! Ties in accuracy get competition ranks ("1224"): tied methods share the best rank of
//! their tie and the next rank is skipped, so a tie never helps a method.

/// Accuracies closer than this are tied: a mean over seeds of the same accuracies in
/// another order differs by an ulp or so (seeds 0-2 of one method at 98.01, 97.53, 97.12
/// and of another at 97.12, 98.01, 97.53 have means 1e-16 apart), while accuracies of N
/// test items averaged over S seeds that truly differ do so by at least 1 / (N S), far
/// above it.
const TIE: f64 = 1e-12;

/// Ranks `(method, accuracy)` pairs: 1 + the number of methods more accurate by more than
/// [`TIE`].
pub fn ranks(scores: &[(String, f64)]) -> Vec<(String, usize)> {
    scores
        .iter()
        .map(|(m, acc)| {
            (
                m.clone(),
                1 + scores
                    .iter()
                    .filter(|(_, other)| *other > acc + TIE)
                    .count(),
            )
        })
        .collect()
}

/// MRR of each method in `methods` over architectures, each given as its ranks:
/// `(1/n) * sum_i 1/rank_i` with `n` the number of architectures; an architecture without
/// the method counts as 0.
pub fn mean_reciprocal_rank(
    per_architecture: &[Vec<(String, usize)>],
    methods: &[String],
) -> Vec<(String, f64)> {
    let n = per_architecture.len().max(1) as f64;
    methods
        .iter()
        .map(|m| {
            let sum: f64 = per_architecture
                .iter()
                .filter_map(|ranks| ranks.iter().find(|(x, _)| x == m))
                .fold(0.0, |acc, (_, r)| acc + 1.0 / *r as f64);
            (m.clone(), sum / n)
        })
        .collect()
}

/// `counts[m][r - 1]`: how many architectures gave method `methods[m]` rank `r`
/// (ranks 1..=methods.len()).
pub fn rank_counts(
    per_architecture: &[Vec<(String, usize)>],
    methods: &[String],
) -> Vec<Vec<usize>> {
    methods
        .iter()
        .map(|m| {
            let mut c = vec![0; methods.len()];
            for ranks in per_architecture {
                if let Some((_, r)) = ranks.iter().find(|(x, _)| x == m) {
                    if (1..=methods.len()).contains(r) {
                        c[r - 1] += 1;
                    }
                }
            }
            c
        })
        .collect()
}

/// Mean and (sample) standard deviation; the deviation is 0 for fewer than two values.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() < 2 {
        0.0
    } else {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    };
    (mean, var.sqrt())
}

/// Fig. 6: the mean weight from source neurons of activation `a` to target neurons of
/// activation `b`, pooled over every hidden-to-hidden matrix added.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightHeatmap {
    pub activations: Vec<String>,
    sum: Vec<f64>,
    count: Vec<u64>,
}

impl WeightHeatmap {
    pub fn new(activations: Vec<String>) -> Self {
        let k = activations.len();
        Self {
            activations,
            sum: vec![0.0; k * k],
            count: vec![0; k * k],
        }
    }

    /// Adds a `[out, in]` weight matrix whose input neurons have activations `source` and
    /// output neurons `target`. Activations not in the list are skipped.
    pub fn add(&mut self, weight: &[f32], source: &[&str], target: &[&str]) {
        let k = self.activations.len();
        let index = |name: &str| self.activations.iter().position(|a| a == name);
        let src: Vec<Option<usize>> = source.iter().map(|s| index(s)).collect();
        for (o, t) in target.iter().enumerate() {
            let Some(t) = index(t) else { continue };
            for (i, s) in src.iter().enumerate() {
                if let Some(s) = s {
                    self.sum[s * k + t] += weight[o * source.len() + i] as f64;
                    self.count[s * k + t] += 1;
                }
            }
        }
    }

    /// The mean weight from `source` to `target` activation, or `None` with no such pair.
    pub fn mean(&self, source: usize, target: usize) -> Option<f64> {
        let k = self.activations.len();
        let c = self.count[source * k + target];
        (c > 0).then(|| self.sum[source * k + target] / c as f64)
    }

    /// Number of weights behind `mean(source, target)`.
    pub fn count(&self, source: usize, target: usize) -> u64 {
        self.count[source * self.activations.len() + target]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[(&str, f64)]) -> Vec<(String, f64)> {
        v.iter().map(|(m, a)| (m.to_string(), *a)).collect()
    }

    #[test]
    fn ties_share_the_best_rank_and_skip_the_next() {
        let r = ranks(&s(&[("a", 0.97), ("b", 0.98), ("c", 0.97), ("d", 0.90)]));
        let got: Vec<usize> = r.iter().map(|(_, r)| *r).collect();
        assert_eq!(got, [2, 1, 2, 4]);
        // Equal means over seeds taken in another order are tied, not split by rounding.
        let (a, _) = mean_std(&[0.9801, 0.9753, 0.9712]);
        let (b, _) = mean_std(&[0.9712, 0.9801, 0.9753]);
        assert_ne!(a, b, "the two sums round apart");
        let (c, _) = mean_std(&[0.9712, 0.9801, 0.9754]);
        let r = ranks(&s(&[("a", a), ("b", b), ("c", c)]));
        let got: Vec<usize> = r.iter().map(|(_, r)| *r).collect();
        assert_eq!(got, [2, 2, 1]);
    }

    #[test]
    fn mrr_and_rank_counts_by_hand() {
        let methods: Vec<String> = ["x", "y", "z"].iter().map(|m| m.to_string()).collect();
        // Architecture 1: x 1st, y 2nd, z 3rd. Architecture 2: y and z tie for 1st, x 3rd.
        let per_arch = vec![
            ranks(&s(&[("x", 0.99), ("y", 0.98), ("z", 0.97)])),
            ranks(&s(&[("x", 0.90), ("y", 0.95), ("z", 0.95)])),
        ];
        let mrr = mean_reciprocal_rank(&per_arch, &methods);
        // x: (1 + 1/3) / 2 = 2/3; y: (1/2 + 1) / 2 = 3/4; z: (1/3 + 1) / 2 = 2/3.
        let want = [2.0 / 3.0, 0.75, 2.0 / 3.0];
        for ((_, got), w) in mrr.iter().zip(want) {
            assert!((got - w).abs() < 1e-12, "{mrr:?}");
        }
        assert_eq!(
            rank_counts(&per_arch, &methods),
            vec![vec![1, 0, 1], vec![1, 1, 0], vec![1, 0, 1]]
        );
    }

    #[test]
    fn mean_and_standard_deviation_by_hand() {
        let (m, sd) = mean_std(&[0.97, 0.98, 0.99]);
        assert!((m - 0.98).abs() < 1e-12 && (sd - 0.01).abs() < 1e-12);
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }

    #[test]
    fn heatmap_pools_weights_by_source_and_target_activation() {
        let mut h = WeightHeatmap::new(vec!["relu".into(), "elu".into()]);
        // 2 outputs (relu, elu) x 3 inputs (relu, elu, elu).
        h.add(
            &[1.0, 2.0, 4.0, -1.0, 0.5, 1.5],
            &["relu", "elu", "elu"],
            &["relu", "elu"],
        );
        // A second matrix: 1 output (elu) x 1 input (relu), weight 3.
        h.add(&[3.0], &["relu"], &["elu"]);
        assert_eq!(h.mean(0, 0), Some(1.0)); // relu -> relu: 1
        assert_eq!(h.mean(1, 0), Some(3.0)); // elu -> relu: (2 + 4) / 2
        assert_eq!(h.mean(0, 1), Some(1.0)); // relu -> elu: (-1 + 3) / 2, pooled
        assert_eq!(h.mean(1, 1), Some(1.0)); // elu -> elu: (0.5 + 1.5) / 2
        assert_eq!(h.count(0, 1), 2);
        let empty = WeightHeatmap::new(vec!["tanh".into()]);
        assert_eq!(empty.mean(0, 0), None);
    }
}
