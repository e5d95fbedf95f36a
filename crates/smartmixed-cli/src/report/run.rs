//! The report of one run: loss curves (Figs. 1-2), Table I, activation shares per layer
//! after phase 1 (Fig. 3) and how they moved over the phase-1 epochs.

use std::collections::BTreeMap;
use std::path::Path;

use crate::write_atomic;
use anyhow::{bail, Result};
use smartmixed_train::rundir::{self, CHOICES, METRICS, SUMMARY};

use super::plot::{Figure, Series};

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
    let mut files = Vec::new();
    let mut md = format!(
        "# SmartMixed run report\n\nRun directory: `{}`; architecture {:?}; seed {}; {:.1} s.\n\n",
        dir.display(),
        summary.architecture,
        summary.seed,
        summary.seconds
    );

    md.push_str("## Table I\n\n| Training phase | Validation accuracy | Test accuracy | Best epoch |\n|---|---|---|---|\n");
    for p in &summary.phases {
        let label = p.phase.label();
        md.push_str(&format!(
            "| {label} | {:.2}% | {:.2}% | {} |\n",
            100.0 * p.validation_accuracy,
            100.0 * p.test_accuracy,
            p.best_epoch
        ));
    }

    md.push_str("\n## Loss curves (Figs. 1-2)\n\n");
    for (n, phase) in summary.phases.iter().map(|p| p.phase).enumerate() {
        let rows: Vec<_> = metrics.iter().filter(|r| r.phase == phase).collect();
        let series: Vec<Series> = vec![
            (
                "train".into(),
                rows.iter()
                    .map(|r| (r.epoch as f64, r.train_loss))
                    .collect(),
            ),
            (
                "validation".into(),
                rows.iter()
                    .map(|r| (r.epoch as f64, r.validation_loss))
                    .collect(),
            ),
        ];
        let (series, left_out) = super::plot::drawable(series);
        if series.is_empty() {
            md.push_str(&format!(
                "{phase}: no finite loss value in metrics.csv, so no figure.\n\n"
            ));
            continue;
        }
        if left_out > 0 {
            md.push_str(&format!(
                "{left_out} non-finite or out-of-range loss values of {phase} are left out of the figure.\n\n"
            ));
        }
        let stem = format!("fig{}-{phase}-loss", n + 1);
        let fig = Figure::Lines {
            title: format!("{phase}: loss per epoch"),
            x_label: "epoch".into(),
            y_label: "cross-entropy".into(),
            series,
        };
        let saved = fig.save(&out.join(&stem))?;
        md.push_str(&format!("![{phase} loss]({})\n\n", saved[1]));
        files.extend(saved);
    }

    if let Some(final_choices) = &summary.final_choices {
        md.push_str("## Activation shares after phase 1 (Fig. 3)\n\n");
        let pool: Vec<String> = final_choices
            .first()
            .map(|l| l.iter().map(|(a, _)| a.clone()).collect())
            .unwrap_or_default();
        md.push_str(&format!(
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
            md.push_str(&format!(
                "| {} | {} |\n",
                l + 1,
                shares
                    .iter()
                    .map(|s| format!("{s:.1}%"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
            values.push(shares);
        }
        let groups: Vec<String> = (1..=final_choices.len())
            .map(|l| format!("layer {l}"))
            .collect();
        let fig = Figure::Bars {
            title: "Share of each activation per hidden layer after phase 1".into(),
            y_label: "% of neurons".into(),
            groups,
            series: pool.clone(),
            values,
        };
        let saved = fig.save(&out.join("fig3-activation-shares"))?;
        md.push_str(&format!("\n![activation shares]({})\n\n", saved[1]));
        files.extend(saved);

        if !choices.is_empty() {
            let layers: Vec<usize> = choices
                .values()
                .next()
                .map(|m| m.keys().copied().collect())
                .unwrap_or_default();
            let panels = layers
                .iter()
                .map(|&l| {
                    let series = pool
                        .iter()
                        .map(|a| {
                            let pts = choices
                                .iter()
                                .filter_map(|(e, by_layer)| {
                                    let row = by_layer.get(&l)?;
                                    let total: usize = row.iter().map(|(_, c)| c).sum();
                                    let c = row.iter().find(|(n, _)| n == a)?.1;
                                    Some((*e as f64, 100.0 * c as f64 / total.max(1) as f64))
                                })
                                .collect();
                            (a.clone(), pts)
                        })
                        .collect();
                    Figure::Lines {
                        title: format!("layer {l}"),
                        x_label: "phase-1 epoch".into(),
                        y_label: "% of neurons".into(),
                        series,
                    }
                })
                .collect();
            let fig = Figure::Grid { columns: 3, panels };
            let saved = fig.save(&out.join("fig3b-shares-over-epochs"))?;
            md.push_str(&format!(
                "## Shares over the phase-1 epochs\n\n![shares over epochs]({})\n",
                saved[1]
            ));
            files.extend(saved);
        }
    }
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    files.push("report.md".into());
    Ok(files)
}
