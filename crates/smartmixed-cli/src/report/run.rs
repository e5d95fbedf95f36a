//! The report of one run: loss curves (Figs. 1-2), Table I, activation shares per layer
//! after phase 1 (Fig. 3) and how they moved over the phase-1 epochs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use smartmixed_core::{Phase, Select};
use smartmixed_train::rundir::{self, EpochRecord, CHOICES, METRICS, SUMMARY};
use smartmixed_train::Summary;

use super::plot::{Figure, Series};
use super::Writer;

/// `epoch -> layer -> activation -> count` from choices.csv (missing file: empty).
type Choices = BTreeMap<usize, BTreeMap<usize, Vec<(String, usize)>>>;

fn read_choices(path: &Path) -> Result<Choices> {
    let mut out = Choices::new();
    for r in rundir::read_choices(path)? {
        out.entry(r.epoch)
            .or_default()
            .entry(r.layer)
            .or_default()
            .push((r.activation, r.count));
    }
    Ok(out)
}

/// Writes `out/report.md` and its figures for the run in `dir`; returns the files written.
pub fn report(dir: &Path, out: &Path) -> Result<Vec<String>> {
    if !dir.join(SUMMARY).is_file() {
        bail!(
            "{}: the run has not finished (no summary.json)",
            dir.display()
        );
    }
    let summary = rundir::read_summary(&dir.join(SUMMARY))?;
    let metrics = rundir::read_metrics(&dir.join(METRICS))?;
    let choices = read_choices(&dir.join(CHOICES))?;
    let mut report = Writer::new(
        out,
        format!(
            "# SmartMixed run report\n\nRun directory: `{}`; architecture {:?}; seed {}; {:.1} s.\n\n",
            dir.display(),
            summary.architecture,
            summary.seed,
            summary.seconds
        ),
    );
    report.table_one(&summary);
    report.loss_curves(&summary, &metrics)?;
    if let Some(final_choices) = &summary.final_choices {
        let pool: Vec<String> = final_choices
            .first()
            .map(|l| l.iter().map(|(a, _)| a.clone()).collect())
            .unwrap_or_default();
        report.final_shares(final_choices, &pool)?;
        if !choices.is_empty() {
            let transition = summary.phases.first().and_then(|p| p.ended_early.as_ref());
            report.shares_over_epochs(&choices, &pool, transition.map(|e| e.epoch))?;
        }
    }
    report.finish()
}

impl Writer<'_> {
    /// Table I, with the epochs each phase trained and why one ended early.
    fn table_one(&mut self, summary: &Summary) {
        self.md.push_str("## Table I\n\n| Training phase | Validation accuracy | Test accuracy | Best epoch | Epochs |\n|---|---|---|---|---|\n");
        for p in &summary.phases {
            self.md.push_str(&format!(
                "| {} | {:.2}% | {:.2}% | {} | {} |\n",
                p.phase.label(),
                100.0 * p.validation_accuracy,
                100.0 * p.test_accuracy,
                p.best_epoch,
                p.epochs
            ));
        }
        self.md.push_str(&format!(
            "\nEach phase's checkpoint is the epoch with the best {} (`training.select = \"{}\"`).\n",
            match summary.select {
                Select::ValLoss => "validation loss",
                Select::ValAccuracy => "validation accuracy",
            },
            summary.select.name()
        ));
        for p in &summary.phases {
            if let Some(end) = &p.ended_early {
                self.md.push_str(&format!(
                    "\n{} ended after epoch {}: {}.\n",
                    p.phase, end.epoch, end.reason
                ));
            }
        }
    }

    /// Figs. 1-2: train and validation loss per phase, the selected epoch and an early end
    /// marked.
    fn loss_curves(&mut self, summary: &Summary, metrics: &[EpochRecord]) -> Result<()> {
        self.md.push_str("\n## Loss curves (Figs. 1-2)\n\n");
        for (n, p) in summary.phases.iter().enumerate() {
            let phase = p.phase;
            let rows: Vec<_> = metrics.iter().filter(|r| r.phase == phase).collect();
            let curve = |f: fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
                rows.iter().map(|r| (r.epoch as f64, f(r))).collect()
            };
            let series: Vec<Series> = vec![
                ("train".into(), curve(|r| r.train_loss)),
                ("validation".into(), curve(|r| r.validation_loss)),
            ];
            let (series, left_out) = super::plot::drawable(series);
            if series.is_empty() {
                self.md.push_str(&format!(
                    "{phase}: no finite loss value in metrics.csv, so no figure.\n\n"
                ));
                continue;
            }
            if left_out > 0 {
                self.md.push_str(&format!(
                    "{left_out} non-finite or out-of-range loss values of {phase} are left out of the figure.\n\n"
                ));
            }
            let mut markers = vec![(
                p.best_epoch as f64,
                format!("selected (epoch {})", p.best_epoch),
            )];
            if let Some(end) = &p.ended_early {
                let what = if phase == Phase::Phase1 {
                    "transition"
                } else {
                    "early stop"
                };
                markers.push((end.epoch as f64, format!("{what} (epoch {})", end.epoch)));
            }
            let fig = Figure::Lines {
                title: format!("{phase}: loss per epoch"),
                x_label: "epoch".into(),
                y_label: "cross-entropy".into(),
                series,
                markers,
            };
            self.save(
                &fig,
                &format!("fig{}-{phase}-loss", n + 1),
                &format!("{phase} loss"),
            )?;
        }
        Ok(())
    }

    /// Fig. 3: the share of each activation per hidden layer after phase 1.
    fn final_shares(
        &mut self,
        final_choices: &[Vec<(String, usize)>],
        pool: &[String],
    ) -> Result<()> {
        self.md
            .push_str("## Activation shares after phase 1 (Fig. 3)\n\n");
        self.md.push_str(&format!(
            "| Layer | {} |\n|---|{}\n",
            pool.join(" | "),
            "---|".repeat(pool.len())
        ));
        let mut values = Vec::new();
        for (l, layer) in final_choices.iter().enumerate() {
            let total: usize = layer.iter().map(|(_, c)| c).sum();
            let shares: Vec<f64> = layer
                .iter()
                .map(|(_, c)| 100.0 * *c as f64 / total.max(1) as f64)
                .collect();
            let cells: Vec<String> = shares.iter().map(|s| format!("{s:.1}%")).collect();
            self.md
                .push_str(&format!("| {} | {} |\n", l + 1, cells.join(" | ")));
            values.push(shares);
        }
        self.md.push('\n');
        let fig = Figure::Bars {
            title: "Share of each activation per hidden layer after phase 1".into(),
            y_label: "% of neurons".into(),
            groups: (1..=final_choices.len())
                .map(|l| format!("layer {l}"))
                .collect(),
            series: pool.to_vec(),
            values,
        };
        self.save(&fig, "fig3-activation-shares", "activation shares")
    }

    /// Per hidden layer, each activation's share over the phase-1 epochs.
    fn shares_over_epochs(
        &mut self,
        choices: &Choices,
        pool: &[String],
        transition: Option<usize>,
    ) -> Result<()> {
        let layers: Vec<usize> = choices
            .values()
            .next()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        let share = |l: usize, a: &str| -> Vec<(f64, f64)> {
            choices
                .iter()
                .filter_map(|(e, by_layer)| {
                    let row = by_layer.get(&l)?;
                    let total: usize = row.iter().map(|(_, c)| c).sum();
                    let c = row.iter().find(|(n, _)| n == a)?.1;
                    Some((*e as f64, 100.0 * c as f64 / total.max(1) as f64))
                })
                .collect()
        };
        let markers: Vec<(f64, String)> = transition
            .map(|e| (e as f64, format!("transition (epoch {e})")))
            .into_iter()
            .collect();
        let panels = layers
            .iter()
            .map(|&l| Figure::Lines {
                title: format!("layer {l}"),
                x_label: "phase-1 epoch".into(),
                y_label: "% of neurons".into(),
                series: pool.iter().map(|a| (a.clone(), share(l, a))).collect(),
                markers: markers.clone(),
            })
            .collect();
        self.md.push_str("## Shares over the phase-1 epochs\n\n");
        let fig = Figure::Grid {
            columns: layers.len().clamp(1, 3),
            panels,
        };
        self.save(&fig, "fig3b-shares-over-epochs", "shares over epochs")
    }
}
