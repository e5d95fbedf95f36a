//! The report of one run: loss curves (Figs. 1-2), Table I, activation shares per layer
//! after phase 1 (Fig. 3) and how they moved over the phase-1 epochs; beyond
//! [`MAX_PANELS`] layers, shares are pooled over bands of consecutive layers.

use std::path::Path;

use anyhow::{bail, Context, Result};
use smartmixed_core::Phase;
use smartmixed_train::rundir::{
    self, ChoiceShares, EpochRecord, CHOICES, CONFIG, METRICS, SUMMARY,
};
use smartmixed_train::Summary;
use smartmixed_train::{Mode, Select, TrainConfig};

use super::plot::{self, Marker, MarkerKind, Series, MAX_PANELS};
use super::Writer;

/// A band of layers as the report names it: `3` or `1-250`.
fn band_name((first, last): (usize, usize)) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

/// A band as a panel's or a bar's title: `layer 3` or `layers 1-250`.
fn band_title(band: (usize, usize)) -> String {
    let noun = if band.0 == band.1 { "layer" } else { "layers" };
    format!("{noun} {}", band_name(band))
}

/// A single layer's width as ` (64)`, from the run's widths (input first); nothing for a
/// band of layers or a layer the widths lack.
fn band_width(widths: &[usize], (first, last): (usize, usize)) -> String {
    match widths.get(first) {
        Some(w) if first == last && first + 1 < widths.len() => format!(" ({w})"),
        _ => String::new(),
    }
}

/// What the loss figure of one phase marks: the selected epoch and an early end.
struct Marks {
    phase: Phase,
    best_epoch: usize,
    ended: Option<usize>,
}

/// The phases a run's config asks for, in order, with their epoch budgets (a fixed
/// baseline trains `phase1.epochs + phase2.epochs` epochs in one phase).
fn planned_phases(cfg: &TrainConfig) -> Vec<(Phase, usize)> {
    match cfg.model.mode {
        Mode::Fixed => vec![(
            Phase::Fixed,
            cfg.phase1.epochs.saturating_add(cfg.phase2.epochs),
        )],
        Mode::Smartmixed => vec![
            (Phase::Phase1, cfg.phase1.epochs),
            (Phase::Phase2, cfg.phase2.epochs),
        ],
    }
}

/// Where an unfinished run is, from its files: `running: phase2 epoch 3 of 10`, or that
/// no epoch has finished (a run interrupted looks the same: the files cannot tell).
pub(super) fn running_status(cfg: &TrainConfig, metrics: &[EpochRecord]) -> String {
    let Some(last) = metrics.last() else {
        return "running: no epoch has finished yet (metrics.csv has no rows)".into();
    };
    let budget = planned_phases(cfg)
        .iter()
        .find(|(p, _)| *p == last.phase)
        .map_or_else(|| "?".to_string(), |(_, n)| n.to_string());
    format!("running: {} epoch {} of {budget}", last.phase, last.epoch)
}

/// A run directory's config and the metrics rows written so far (none before the first
/// epoch ends).
pub(super) fn progress_so_far(dir: &Path) -> Result<(TrainConfig, Vec<EpochRecord>)> {
    let cfg = TrainConfig::from_file(&dir.join(CONFIG))?;
    let metrics = if dir.join(METRICS).is_file() {
        rundir::read_metrics(&dir.join(METRICS))?
    } else {
        Vec::new()
    };
    Ok((cfg, metrics))
}

/// The report of a run without summary.json: where it is, the best epoch of each phase so
/// far, the loss curves and the shares over the phase-1 epochs so far.
fn unfinished(dir: &Path, out: &Path) -> Result<Vec<String>> {
    if !dir.join(CONFIG).is_file() {
        bail!(
            "{}: neither a finished run (summary.json) nor one in progress (config.toml)",
            dir.display()
        );
    }
    let (cfg, metrics) = progress_so_far(dir)?;
    let status = running_status(&cfg, &metrics);
    let mut report = Writer::new(
        out,
        format!(
            "# SmartMixed run report\n\nRun directory: `{}`; hidden widths {:?}; seed {}.\n\n**{status}** (no summary.json yet, so this run is still training or was interrupted; figures and the table are as of the last finished epoch).\n\n",
            dir.display(),
            cfg.model.hidden,
            cfg.training.seed
        ),
    );
    if metrics.is_empty() {
        return report.finish();
    }
    let select = cfg.training.select;
    report.md.push_str(&format!("## Progress\n\n| Training phase | Epochs done | Best epoch so far ({}) | Validation loss | Validation accuracy |\n|---|---|---|---|---|\n", select.name()));
    let mut marks = Vec::new();
    for (phase, budget) in planned_phases(&cfg) {
        let rows: Vec<&EpochRecord> = metrics.iter().filter(|r| r.phase == phase).collect();
        let Some(best) = rows.iter().copied().reduce(|best, r| {
            let better = select.better(
                (r.validation_loss, r.validation_accuracy),
                (best.validation_loss, best.validation_accuracy),
            );
            if better {
                r
            } else {
                best
            }
        }) else {
            continue;
        };
        report.md.push_str(&format!(
            "| {} | {} of {budget} | {} | {:.4} | {:.2}% |\n",
            phase.label(),
            rows.len(),
            best.epoch,
            best.validation_loss,
            100.0 * best.validation_accuracy
        ));
        marks.push(Marks {
            phase,
            best_epoch: best.epoch,
            ended: None,
        });
    }
    report.loss_curves(&marks, &metrics)?;
    let choices = rundir::read_choice_shares(&dir.join(CHOICES), MAX_PANELS)?;
    if !choices.bands.is_empty() {
        // The hidden widths between placeholders for the input and output widths, which
        // only summary.json records (`band_width` reads hidden layers only).
        let widths: Vec<usize> = std::iter::once(0)
            .chain(cfg.model.hidden.iter().copied())
            .chain(std::iter::once(0))
            .collect();
        let selected = marks
            .iter()
            .find(|m| m.phase == Phase::Phase1)
            .map(|m| m.best_epoch);
        report.shares_over_epochs(&choices, &cfg.model.pool, &widths, selected, None)?;
    }
    report.finish()
}

/// Writes `out/report.md` and its figures for the run in `dir`; returns the files written.
/// A run without summary.json is reported as far as it got.
pub fn report(dir: &Path, out: &Path) -> Result<Vec<String>> {
    if !dir.join(SUMMARY).is_file() {
        return unfinished(dir, out);
    }
    let summary = rundir::read_summary(&dir.join(SUMMARY))?;
    let metrics = rundir::read_metrics(&dir.join(METRICS))?;
    let choices = rundir::read_choice_shares(&dir.join(CHOICES), MAX_PANELS)?;
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
    let marks: Vec<Marks> = summary
        .phases
        .iter()
        .map(|p| Marks {
            phase: p.phase,
            best_epoch: p.best_epoch,
            ended: p.ended_early.as_ref().map(|e| e.epoch),
        })
        .collect();
    report.loss_curves(&marks, &metrics)?;
    if let Some(final_choices) = &summary.final_choices {
        let pool: Vec<String> = final_choices
            .first()
            .map(|l| l.iter().map(|(a, _)| a.clone()).collect())
            .unwrap_or_default();
        let phase1 = summary.phases.iter().find(|p| p.phase == Phase::Phase1);
        let selected = phase1.map(|p| p.best_epoch);
        report.final_shares(
            final_choices,
            &pool,
            &dir.join(SUMMARY),
            &summary.architecture,
            selected,
        )?;
        if !choices.bands.is_empty() {
            let transition = phase1.and_then(|p| p.ended_early.as_ref());
            report.shares_over_epochs(
                &choices,
                &pool,
                &summary.architecture,
                selected,
                transition.map(|e| e.epoch),
            )?;
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
    fn loss_curves(&mut self, phases: &[Marks], metrics: &[EpochRecord]) -> Result<()> {
        self.md.push_str("\n## Loss curves (Figs. 1-2)\n\n");
        for (n, p) in phases.iter().enumerate() {
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
            let mut markers = vec![Marker {
                x: p.best_epoch as f64,
                kind: MarkerKind::Selected,
                label: format!("selected (epoch {})", p.best_epoch),
            }];
            if let Some(end) = p.ended {
                let what = if phase == Phase::Phase1 {
                    "transition"
                } else {
                    "early stop"
                };
                markers.push(Marker {
                    x: end as f64,
                    kind: MarkerKind::Ended,
                    label: format!("{what} (epoch {end})"),
                });
            }
            let fig = plot::loss(phase, series, markers);
            self.save(
                &fig,
                &format!("fig{}-{phase}-loss", n + 1),
                &format!("{phase} loss"),
            )?;
        }
        Ok(())
    }

    /// Fig. 3: the share of each activation per hidden layer after phase 1 (per band of
    /// layers beyond [`MAX_PANELS`] layers).
    fn final_shares(
        &mut self,
        final_choices: &[Vec<(String, usize)>],
        pool: &[String],
        summary: &Path,
        widths: &[usize],
        selected: Option<usize>,
    ) -> Result<()> {
        self.md
            .push_str("## Activation shares after phase 1 (Fig. 3)\n\n");
        let bands = rundir::layer_bands(final_choices.len(), MAX_PANELS);
        if bands.len() < final_choices.len() {
            self.md.push_str(&format!(
                "The run has {} hidden layers: shares are pooled over {} bands of consecutive layers.\n\n",
                final_choices.len(),
                bands.len()
            ));
        }
        self.md.push_str(&format!(
            "| Layer | {} |\n|---|{}\n",
            pool.join(" | "),
            "---|".repeat(pool.len())
        ));
        let mut values = Vec::new();
        for &(first, last) in &bands {
            // Counts per pool entry over the band's layers, added with checked arithmetic.
            let mut counts = vec![0u64; pool.len()];
            for layer in &final_choices[first - 1..last] {
                for (name, c) in layer {
                    if let Some(i) = pool.iter().position(|p| p == name) {
                        counts[i] = counts[i].checked_add(*c as u64).with_context(|| {
                            format!(
                                "{}: final_choices: the counts of layers {} add up to more than 2^64",
                                summary.display(),
                                band_name((first, last))
                            )
                        })?;
                    }
                }
            }
            let total = counts
                .iter()
                .try_fold(0u64, |t, &c| t.checked_add(c))
                .with_context(|| {
                    format!(
                        "{}: final_choices: the counts of layers {} add up to more than 2^64",
                        summary.display(),
                        band_name((first, last))
                    )
                })?;
            let shares: Vec<f64> = counts
                .iter()
                .map(|&c| 100.0 * c as f64 / total.max(1) as f64)
                .collect();
            let cells: Vec<String> = shares.iter().map(|s| format!("{s:.1}%")).collect();
            self.md.push_str(&format!(
                "| {} | {} |\n",
                band_name((first, last)),
                cells.join(" | ")
            ));
            values.push(shares);
        }
        self.md.push('\n');
        // Tick labels are layer numbers (or a band's range) with the layer's width: "layer
        // 288-300" times 24 would overlap.
        let groups = bands
            .iter()
            .map(|&b| band_name(b) + &band_width(widths, b))
            .collect();
        let fig = plot::final_shares(groups, pool, values, selected);
        self.save(&fig, "fig3-activation-shares", "activation shares")
    }

    /// Per hidden layer (or band of layers), each activation's share over the phase-1
    /// epochs.
    fn shares_over_epochs(
        &mut self,
        choices: &ChoiceShares,
        pool: &[String],
        widths: &[usize],
        selected: Option<usize>,
        transition: Option<usize>,
    ) -> Result<()> {
        let selected = selected.map(|e| Marker {
            x: e as f64,
            kind: MarkerKind::Selected,
            label: format!("selected (epoch {e})"),
        });
        let ended = transition.map(|e| Marker {
            x: e as f64,
            kind: MarkerKind::Ended,
            label: format!("transition (epoch {e})"),
        });
        let markers: Vec<Marker> = selected.into_iter().chain(ended).collect();
        // Series in the pool's order, then any other name choices.csv holds.
        let mut order: Vec<usize> = pool
            .iter()
            .filter_map(|p| choices.activations.iter().position(|a| a == p))
            .collect();
        let others: Vec<usize> = (0..choices.activations.len())
            .filter(|i| !order.contains(i))
            .collect();
        order.extend(others);
        let panels = choices
            .bands
            .iter()
            .map(|band| {
                let series: Vec<Series> = order
                    .iter()
                    .map(|&a| (choices.activations[a].clone(), band.series[a].clone()))
                    .collect();
                (
                    band_title(band.layers) + &band_width(widths, band.layers),
                    series,
                )
            })
            .collect();
        self.md.push_str("## Shares over the phase-1 epochs\n\n");
        if choices.bands.len() < choices.layers {
            self.md.push_str(&format!(
                "choices.csv records {} hidden layers: each panel pools a band of consecutive layers ({} panels).\n\n",
                choices.layers,
                choices.bands.len()
            ));
        }
        let fig = plot::shares_over_epochs(panels, markers);
        self.save(&fig, "fig3b-shares-over-epochs", "shares over epochs")
    }
}
