//! When a phase ends before its epoch budget: phase 1's automatic transition (choices
//! settled and validation loss no longer improving) and early stopping of phase 2 and of
//! fixed baselines (`training.patience`). Pure bookkeeping over per-epoch observations,
//! saved in the resume state so that a resumed run decides exactly as an uninterrupted one.

use serde::{Deserialize, Serialize};

use crate::{AutoTransition, Select};

/// What a phase has seen so far, beyond its best checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    /// Per hidden layer and neuron, the last epoch whose argmax choice differed from the
    /// epoch before (0: never changed). Empty outside phase 1.
    pub last_change: Vec<Vec<u32>>,
    /// The epoch with the lowest validation loss so far, and that loss.
    pub lowest_loss: Option<(usize, f64)>,
}

impl Watch {
    /// Records epoch `epoch`: the choices before and after it (phase 1) and its validation
    /// loss. Returns the fraction of hidden neurons whose choice changed in this epoch.
    pub fn observe(
        &mut self,
        epoch: usize,
        before: Option<&[Vec<u8>]>,
        after: Option<&[Vec<u8>]>,
        validation_loss: f64,
    ) -> f64 {
        if self.lowest_loss.is_none_or(|(_, l)| validation_loss < l) {
            self.lowest_loss = Some((epoch, validation_loss));
        }
        let (Some(before), Some(after)) = (before, after) else {
            return 0.0;
        };
        if self.last_change.len() != after.len() {
            self.last_change = after.iter().map(|l| vec![0; l.len()]).collect();
        }
        let (mut changed, mut total) = (0usize, 0usize);
        for ((last, b), a) in self.last_change.iter_mut().zip(before).zip(after) {
            for ((last, b), a) in last.iter_mut().zip(b).zip(a) {
                if a != b {
                    *last = epoch as u32;
                    changed += 1;
                }
                total += 1;
            }
        }
        changed as f64 / total.max(1) as f64
    }

    /// The fraction of hidden neurons whose choice changed in epochs
    /// `epoch - window + 1 ..= epoch`.
    pub fn changed_within(&self, epoch: usize, window: usize) -> f64 {
        let since = epoch.saturating_sub(window) as u32;
        let (mut changed, mut total) = (0usize, 0usize);
        for &last in self.last_change.iter().flatten() {
            changed += usize::from(last > since);
            total += 1;
        }
        changed as f64 / total.max(1) as f64
    }
}

/// How a phase may end early.
#[derive(Debug, Clone, Copy)]
pub enum EndRule<'a> {
    /// Train every configured epoch.
    Never,
    /// Phase 1 with `transition = "auto"`.
    Settled(&'a AutoTransition),
    /// Stop when the selected figure has not improved for this many epochs.
    Patience(usize, Select),
}

impl EndRule<'_> {
    /// Why the phase ends after `epoch`, if it does; `best_epoch` is the epoch of the
    /// selected checkpoint.
    pub fn reason(&self, watch: &Watch, epoch: usize, best_epoch: usize) -> Option<String> {
        match *self {
            EndRule::Never => None,
            EndRule::Settled(rule) => {
                let loss_epoch = watch.lowest_loss.map_or(epoch, |(e, _)| e);
                let changed = watch.changed_within(epoch, rule.window);
                let settled = epoch >= rule.min_epochs.max(rule.window)
                    && changed < rule.threshold
                    && epoch - loss_epoch >= rule.patience;
                settled.then(|| {
                    format!(
                        "choices settled ({:.2}% of neurons changed in the last {} epochs) and validation loss not improved since epoch {loss_epoch}",
                        100.0 * changed,
                        rule.window
                    )
                })
            }
            EndRule::Patience(patience, select) => (epoch - best_epoch >= patience).then(|| {
                format!(
                    "validation {} not improved for {patience} epochs (best at epoch {best_epoch})",
                    match select {
                        Select::ValLoss => "loss",
                        Select::ValAccuracy => "accuracy",
                    }
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(min_epochs: usize, window: usize, threshold: f64, patience: usize) -> AutoTransition {
        AutoTransition {
            min_epochs,
            window,
            threshold,
            patience,
        }
    }

    #[test]
    fn changes_are_counted_per_neuron_and_age_out_of_the_window() {
        let mut w = Watch::default();
        let a = vec![vec![0u8, 1, 2, 3]];
        let b = vec![vec![0u8, 1, 2, 0]];
        assert_eq!(w.observe(1, Some(&a), Some(&b), 1.0), 0.25);
        assert_eq!(w.observe(2, Some(&b), Some(&b), 0.9), 0.0);
        assert_eq!(w.changed_within(2, 2), 0.25);
        assert_eq!(w.changed_within(3, 2), 0.0);
        assert_eq!(w.lowest_loss, Some((2, 0.9)));
    }

    #[test]
    fn the_transition_needs_every_condition() {
        let mut w = Watch::default();
        let c = vec![vec![0u8; 10]];
        let mut d = c.clone();
        d[0][3] = 1;
        // Epoch 1 changes one neuron in ten; loss improves until epoch 3.
        w.observe(1, Some(&c), Some(&d), 1.0);
        for (e, loss) in [(2, 0.9), (3, 0.8), (4, 0.85), (5, 0.85), (6, 0.9)] {
            w.observe(e, Some(&d), Some(&d), loss);
        }
        let r = rule(4, 3, 0.05, 2);
        // Epoch 6: no change in epochs 4-6, loss last improved at 3 (3 epochs ago).
        assert!(EndRule::Settled(&r).reason(&w, 6, 3).is_some());
        // Too early, or a window that still sees epoch 1's change, or too little patience.
        assert!(EndRule::Settled(&rule(7, 3, 0.05, 2))
            .reason(&w, 6, 3)
            .is_none());
        assert!(EndRule::Settled(&rule(4, 6, 0.05, 2))
            .reason(&w, 6, 3)
            .is_none());
        assert!(EndRule::Settled(&rule(4, 3, 0.05, 4))
            .reason(&w, 6, 3)
            .is_none());
        // A threshold at or below the measured fraction keeps training.
        assert!(EndRule::Settled(&rule(4, 6, 0.1, 2))
            .reason(&w, 6, 3)
            .is_none());
        assert!(EndRule::Settled(&rule(4, 6, 0.11, 2))
            .reason(&w, 6, 3)
            .is_some());
    }

    #[test]
    fn patience_counts_epochs_since_the_selected_best() {
        let w = Watch::default();
        let p = EndRule::Patience(3, Select::ValAccuracy);
        assert!(p.reason(&w, 5, 3).is_none());
        let why = p.reason(&w, 6, 3).unwrap();
        assert!(
            why.contains("accuracy not improved for 3 epochs (best at epoch 3)"),
            "{why}"
        );
        assert!(EndRule::Never.reason(&w, 100, 1).is_none());
    }
}
