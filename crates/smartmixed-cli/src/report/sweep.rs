//! The report of a sweep: Table II (top three per architecture), MRR per method (eq. 11,
//! Fig. 4), rank counts (Fig. 5), the mean weight between activation groups (Fig. 6),
//! and, with two or more seeds, mean and standard deviation per cell and MRR spread.

use std::collections::BTreeMap;
use std::path::Path;

use super::ranking::{mean_reciprocal_rank, mean_std, rank_counts, ranks, WeightHeatmap};
use anyhow::{Context, Result};
use smartmixed_core::PAPER_POOL;
use smartmixed_train::sweep::{SweepConfig, SMARTMIXED};
use smartmixed_train::Hidden;
use smartmixed_train::{checkpoint, Cpu};

use super::plot::{self, Bars, Figure};
use super::{Writer, TIE_RULE};
use crate::sweep::{finished_cells, Finished, SWEEP_CONFIG};
use smartmixed_train::rundir::SUMMARY;

/// Fig. 6 over every SmartMixed cell's phase-2 checkpoint: hidden-to-hidden matrices only.
/// The heatmap and how many cells it pooled (a cell without a phase-2 checkpoint, trained
/// with `phase2.epochs = 0`, has no groups to pool).
fn heatmap(cells: &[&Finished], pool: &[String]) -> Result<(WeightHeatmap, usize)> {
    let dev = Cpu::default();
    let mut h = WeightHeatmap::new(pool.to_vec());
    let mut pooled = 0;
    for f in cells {
        let path = f.dir.join(smartmixed_core::Phase::Phase2.checkpoint_file());
        if !path.is_file() {
            continue;
        }
        let net = checkpoint::load(&dev, &path)?;
        let Hidden::Grouped { groups, .. } = &net.hidden else {
            continue;
        };
        let names: Vec<Vec<&str>> = groups
            .iter()
            .map(|gs| {
                gs.iter()
                    .flat_map(|g| std::iter::repeat_n(g.activation.name, g.len))
                    .collect()
            })
            .collect();
        // layers[l] maps hidden layer l-1 to hidden layer l for 1 <= l < hidden layers.
        for l in 1..names.len() {
            h.add(&net.layers[l].weight_values(), &names[l - 1], &names[l]);
        }
        // One hidden layer has no hidden-to-hidden matrix to pool.
        pooled += usize::from(names.len() > 1);
    }
    Ok((h, pooled))
}

/// Test accuracy per `(architecture, method)`, per seed.
type Accuracies = BTreeMap<(usize, String), BTreeMap<u64, f64>>;

/// The finished cells of a sweep, arranged for its tables.
struct Sweep<'a> {
    cells: &'a [Finished],
    methods: Vec<String>,
    pool: Vec<String>,
    seeds: Vec<u64>,
    archs: Vec<usize>,
    /// Full widths (input and output from the data) per architecture number.
    widths: BTreeMap<usize, Vec<usize>>,
    acc: Accuracies,
    /// Per architecture, each method's rank by mean test accuracy.
    per_arch: Vec<Vec<(String, usize)>>,
}

impl<'a> Sweep<'a> {
    fn new(dir: &Path, cells: &'a [Finished]) -> Result<Self> {
        let config = SweepConfig::from_file(&dir.join(SWEEP_CONFIG)).ok();
        // The config's order, but only methods with a finished cell: one that never ran
        // has no rank (it would read as MRR 0, NaN accuracy and zero bars).
        let mut methods: Vec<String> = config
            .as_ref()
            .map(|c| c.sweep.methods.clone())
            .unwrap_or_default();
        methods.retain(|m| cells.iter().any(|f| &f.cell.method == m));
        for f in cells {
            if !methods.contains(&f.cell.method) {
                methods.push(f.cell.method.clone());
            }
        }
        let pool: Vec<String> = config
            .as_ref()
            .map(|c| c.sweep.pool.clone())
            .unwrap_or_else(|| PAPER_POOL.iter().map(|s| s.to_string()).collect());
        let mut acc = Accuracies::new();
        let mut widths = BTreeMap::new();
        for f in cells {
            let last = f.summary.phases.last().context("a run has phases")?;
            acc.entry((f.cell.architecture, f.cell.method.clone()))
                .or_default()
                .insert(f.cell.seed, last.test_accuracy);
            widths.insert(f.cell.architecture, f.summary.architecture.clone());
        }
        let mut seeds: Vec<u64> = cells.iter().map(|f| f.cell.seed).collect();
        seeds.sort_unstable();
        seeds.dedup();
        let archs: Vec<usize> = widths.keys().copied().collect();
        let mut sweep = Sweep {
            cells,
            methods,
            pool,
            seeds,
            archs,
            widths,
            acc,
            per_arch: Vec::new(),
        };
        sweep.per_arch = sweep.ranks_where(|by_seed| {
            Some(mean_std(&by_seed.values().copied().collect::<Vec<_>>()).0)
        });
        Ok(sweep)
    }

    /// Per architecture, the methods ranked by `score` of their per-seed accuracies.
    fn ranks_where(
        &self,
        score: impl Fn(&BTreeMap<u64, f64>) -> Option<f64>,
    ) -> Vec<Vec<(String, usize)>> {
        self.archs
            .iter()
            .map(|&a| {
                let scores: Vec<(String, f64)> = self
                    .methods
                    .iter()
                    .filter_map(|m| Some((m.clone(), score(self.acc.get(&(a, m.clone()))?)?)))
                    .collect();
                ranks(&scores)
            })
            .collect()
    }

    fn mean_acc(&self, a: usize, m: &str) -> Option<(f64, f64)> {
        self.acc
            .get(&(a, m.to_string()))
            .map(|by_seed| mean_std(&by_seed.values().copied().collect::<Vec<_>>()))
    }
}

impl Writer<'_> {
    /// Table II: the top three methods per architecture.
    fn table_two(&mut self, sw: &Sweep) {
        self.md.push_str("## Table II: top three per architecture\n\n| # | Architecture | 1st | 2nd | 3rd |\n|---|---|---|---|---|\n");
        for (i, &a) in sw.archs.iter().enumerate() {
            let mut r = sw.per_arch[i].clone();
            r.sort_by(|x, y| x.1.cmp(&y.1).then_with(|| x.0.cmp(&y.0)));
            let mut top: Vec<String> = r
                .iter()
                .take(3)
                .map(|(m, k)| {
                    let mean = sw.mean_acc(a, m).map_or(0.0, |v| v.0);
                    format!("{m} ({k}, {:.2}%)", 100.0 * mean)
                })
                .collect();
            top.resize(3, "-".into());
            self.md.push_str(&format!(
                "| {a} | {:?} | {} |\n",
                sw.widths[&a],
                top.join(" | ")
            ));
        }
    }

    /// Eq. 11 and Fig. 4, with the per-seed spread when there are several seeds.
    fn mrr(&mut self, sw: &Sweep) -> Result<()> {
        let mrr = mean_reciprocal_rank(&sw.per_arch, &sw.methods);
        let per_seed: Vec<Vec<(String, f64)>> = if sw.seeds.len() > 1 {
            sw.seeds
                .iter()
                .map(|s| {
                    mean_reciprocal_rank(&sw.ranks_where(|by| by.get(s).copied()), &sw.methods)
                })
                .collect()
        } else {
            Vec::new()
        };
        self.md
            .push_str("\n## Mean Reciprocal Rank (eq. 11, Fig. 4)\n\n| Method | MRR |");
        if per_seed.is_empty() {
            self.md.push_str("\n|---|---|\n");
        } else {
            self.md
                .push_str(" per-seed MRR (mean ± sd) |\n|---|---|---|\n");
        }
        for (i, (m, v)) in mrr.iter().enumerate() {
            self.md.push_str(&format!("| {m} | {v:.4} |"));
            if !per_seed.is_empty() {
                let vals: Vec<f64> = per_seed.iter().map(|p| p[i].1).collect();
                let (mean, sd) = mean_std(&vals);
                self.md.push_str(&format!(" {mean:.4} ± {sd:.4} |"));
            }
            self.md.push('\n');
        }
        let fig = plot::mrr(&sw.methods, &mrr, &per_seed, SMARTMIXED, sw.archs.len());
        self.save(&fig, "fig4-mrr", "MRR")?;
        if !per_seed.is_empty() {
            let fig = Figure::Bars(Bars {
                title: "Mean Reciprocal Rank per method and seed".into(),
                x_label: "method".into(),
                y_label: "MRR".into(),
                groups: sw.methods.clone(),
                series: sw.seeds.iter().map(|s| format!("seed {s}")).collect(),
                values: (0..sw.methods.len())
                    .map(|m| per_seed.iter().map(|p| p[m].1).collect())
                    .collect(),
                ..Bars::default()
            });
            self.save(&fig, "fig4b-mrr-per-seed", "MRR per seed")?;
        }
        Ok(())
    }

    /// Fig. 5: how often each method took each rank.
    fn rank_counts(&mut self, sw: &Sweep) -> Result<()> {
        let counts = rank_counts(&sw.per_arch, &sw.methods);
        let n = sw.methods.len();
        let header: Vec<String> = (1..=n).map(|r| format!("rank {r}")).collect();
        self.md.push_str(&format!(
            "\n## Rank counts (Fig. 5)\n\n| Method | {} |\n|---|{}\n",
            header.join(" | "),
            "---|".repeat(n)
        ));
        for (m, c) in sw.methods.iter().zip(&counts) {
            let c: Vec<String> = c.iter().map(|v| v.to_string()).collect();
            self.md.push_str(&format!("| {m} | {} |\n", c.join(" | ")));
        }
        // A rank can occur only up to the most methods ranked in one architecture.
        let max_rank = sw.per_arch.iter().map(Vec::len).max().unwrap_or(0);
        let fig = plot::rank_counts(&sw.methods, &counts, max_rank);
        self.save(&fig, "fig5-rank-counts", "rank counts")
    }

    /// Fig. 6: the mean hidden-to-hidden weight between activation groups.
    fn weights(&mut self, sw: &Sweep) -> Result<()> {
        let smart: Vec<&Finished> = sw
            .cells
            .iter()
            .filter(|f| f.cell.method == SMARTMIXED)
            .collect();
        if smart.is_empty() {
            // A heatmap of nothing but n/a, as for a sweep run without SmartMixed cells.
            self.md.push_str("\n## Mean weight between activation groups (Fig. 6)\n\nNo SmartMixed cell has finished, so there are no activation groups to pool.\n");
            return Ok(());
        }
        let pool = &sw.pool;
        let (h, pooled) = heatmap(&smart, pool)?;
        let without = smart.len() - pooled;
        let note = if without > 0 {
            format!(
                " ({without} more with nothing to pool: no phase-2 checkpoint, as after `phase2.epochs = 0`, or one hidden layer)"
            )
        } else {
            String::new()
        };
        let values: Vec<Vec<Option<f64>>> = (0..pool.len())
            .map(|s| (0..pool.len()).map(|t| h.mean(s, t)).collect())
            .collect();
        self.md.push_str(&format!(
            "\n## Mean weight between activation groups (Fig. 6)\n\nPooled over the hidden-to-hidden weight matrices of {pooled} `{SMARTMIXED}` cells{note} (phase-2 best checkpoints; input-to-hidden and hidden-to-output matrices left out; other methods' cells, `smartmixed-auto` too, are not pooled). Rows: source activation; columns: target.\n\n| source \\ target | {} |\n|---|{}\n",
            pool.join(" | "),
            "---|".repeat(pool.len())
        ));
        for (s, row) in values.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(t, v)| v.map_or("n/a".into(), |v| format!("{v:+.5} (n={})", h.count(s, t))))
                .collect();
            self.md
                .push_str(&format!("| {} | {} |\n", pool[s], cells.join(" | ")));
        }
        let counts = (0..pool.len())
            .map(|s| (0..pool.len()).map(|t| h.count(s, t)).collect())
            .collect();
        let fig = plot::weights(pool, values, counts, pooled);
        self.save(&fig, "fig6-weight-heatmap", "weight heatmap")
    }

    /// Test accuracy per architecture and method.
    fn per_cell(&mut self, sw: &Sweep) {
        let several = sw.seeds.len() > 1;
        self.md.push_str(&format!(
            "\n## Test accuracy per cell{}\n\n| # | {} |\n|---|{}\n",
            if several {
                " (mean ± sd over seeds)"
            } else {
                ""
            },
            sw.methods.join(" | "),
            "---|".repeat(sw.methods.len())
        ));
        for &a in &sw.archs {
            let row: Vec<String> = sw
                .methods
                .iter()
                .map(|m| match sw.mean_acc(a, m) {
                    Some((mean, sd)) if several => {
                        format!("{:.2} ± {:.2}%", 100.0 * mean, 100.0 * sd)
                    }
                    Some((mean, _)) => format!("{:.2}%", 100.0 * mean),
                    None => "-".into(),
                })
                .collect();
            self.md
                .push_str(&format!("| {a} | {} |\n", row.join(" | ")));
        }
    }

    /// Per method over all its cells: test accuracy, epochs trained and wall time, each as
    /// mean ± sd (what an automatic schedule saves, and what it costs).
    fn cost_per_method(&mut self, sw: &Sweep) {
        self.md.push_str("\n## Accuracy, epochs and time per method (mean ± sd over cells)\n\n| Method | Cells | Test accuracy | Epochs | Wall time (s) | Ended early |\n|---|---|---|---|---|---|\n");
        for m in &sw.methods {
            let cells: Vec<&Finished> = sw.cells.iter().filter(|f| &f.cell.method == m).collect();
            let figure = |f: &dyn Fn(&Finished) -> f64| {
                mean_std(&cells.iter().map(|c| f(c)).collect::<Vec<_>>())
            };
            let acc = figure(&|c| {
                c.summary
                    .phases
                    .last()
                    .map_or(f64::NAN, |p| p.test_accuracy)
            });
            let epochs = figure(&|c| c.summary.phases.iter().map(|p| p.epochs as f64).sum());
            let secs = figure(&|c| c.summary.seconds);
            let early: usize = cells
                .iter()
                .map(|c| {
                    c.summary
                        .phases
                        .iter()
                        .filter(|p| p.ended_early.is_some())
                        .count()
                })
                .sum();
            self.md.push_str(&format!(
                "| {m} | {} | {:.2} ± {:.2}% | {:.1} ± {:.1} | {:.1} ± {:.1} | {early} phases |\n",
                cells.len(),
                100.0 * acc.0,
                100.0 * acc.1,
                epochs.0,
                epochs.1,
                secs.0,
                secs.1
            ));
        }
    }
}

/// Running cells with where each is, and the ids of cells not run.
type Unfinished = (Vec<(String, String)>, Vec<String>);

/// The cells of a sweep that have not finished: each running one (a directory without
/// summary.json) with where it is, and the cells of the sweep config that have no
/// directory yet.
fn unfinished_cells(dir: &Path) -> Result<Unfinished> {
    let cells = dir.join("cells");
    let mut running = Vec::new();
    let entries = std::fs::read_dir(&cells)
        .with_context(|| format!("{}: not a sweep directory", dir.display()))?;
    for e in entries {
        let path = e?.path();
        if !path.is_dir() || path.join(SUMMARY).is_file() {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let status = match super::run::progress_so_far(&path) {
            Ok((cfg, metrics)) => super::run::running_status(&cfg, &metrics),
            Err(e) => format!("unreadable ({})", crate::shown(&e.to_string())),
        };
        running.push((crate::shown(&name), status));
    }
    running.sort();
    let not_run = match SweepConfig::from_file(&dir.join(SWEEP_CONFIG)) {
        Ok(cfg) => cfg
            .cells()
            .iter()
            .map(|c| c.id())
            .filter(|id| !cells.join(id).exists())
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok((running, not_run))
}

impl Writer<'_> {
    /// The cells still running and those not run, which the tables leave out.
    fn unfinished(&mut self, running: &[(String, String)], not_run: &[String]) {
        if running.is_empty() && not_run.is_empty() {
            return;
        }
        self.md.push_str("## Cells not in the tables\n\n");
        if !running.is_empty() {
            self.md.push_str(&format!(
                "Unfinished ({}; no summary.json yet: still training or interrupted):\n\n",
                running.len()
            ));
            for (id, status) in running {
                self.md.push_str(&format!("- {id}: {status}\n"));
            }
            self.md.push('\n');
        }
        if !not_run.is_empty() {
            self.md.push_str(&format!(
                "Not run: {} ({} cells of sweep.toml without a directory).\n\n",
                not_run.join(", "),
                not_run.len()
            ));
        }
    }
}

/// Writes `out/report.md` and its figures for the sweep in `dir`; returns the files.
/// Tables and figures rank the finished cells only; the others are listed.
pub fn report(dir: &Path, out: &Path) -> Result<Vec<String>> {
    // Only cells of sweep.toml count: a directory trained under an earlier config keeps
    // that config's cells, which would be ranked with this one's.
    let recorded = dir.join(SWEEP_CONFIG);
    let (cells, stale) = if recorded.exists() {
        let cfg = SweepConfig::from_file(&recorded)?;
        crate::sweep::of_config(finished_cells(dir)?, &cfg)?
    } else {
        (finished_cells(dir)?, Vec::new())
    };
    if !stale.is_empty() {
        eprintln!(
            "{}: left out of the report, not cells of {SWEEP_CONFIG}: {}",
            dir.join("cells").display(),
            stale.join(", ")
        );
    }
    let (running, not_run) = unfinished_cells(dir)?;
    if cells.is_empty() {
        if running.is_empty() {
            anyhow::bail!("{}: no finished cells", dir.display());
        }
        let mut w = Writer::new(
            out,
            format!(
                "# SmartMixed sweep report\n\nSweep directory: `{}`; no finished cells yet.\n\n",
                dir.display()
            ),
        );
        w.unfinished(&running, &not_run);
        return w.finish();
    }
    let sw = Sweep::new(dir, &cells)?;
    let mut w = Writer::new(
        out,
        format!(
            "# SmartMixed sweep report\n\nSweep directory: `{}`; {} finished cells; {} architectures; methods {}; seeds {:?}.\n\n{TIE_RULE} Methods are ranked per architecture by test accuracy{}.\n\n",
            dir.display(),
            cells.len(),
            sw.archs.len(),
            sw.methods.join(", "),
            sw.seeds,
            if sw.seeds.len() > 1 { " averaged over seeds" } else { "" }
        ),
    );
    let mut rules: Vec<&str> = cells.iter().map(|f| f.summary.select.name()).collect();
    rules.sort_unstable();
    rules.dedup();
    w.md.push_str(&format!(
        "Each phase's checkpoint was selected by `{}` (`training.select`).\n\n",
        rules.join("`, `")
    ));
    if !stale.is_empty() {
        w.md.push_str(&format!(
            "Left out: {} ({} finished cells that are not cells of {SWEEP_CONFIG}: an earlier config's).\n\n",
            stale.join(", "),
            stale.len()
        ));
    }
    w.unfinished(&running, &not_run);
    let unfinished = running.len() + not_run.len();
    if unfinished > 0 {
        w.md.push_str(&format!(
            "**Provisional**: {unfinished} {} of {SWEEP_CONFIG} {} not finished, so the ranks, the MRR and the rank counts below compare only the methods finished on each architecture (a method with no finished cell there counts 0 in the MRR).\n\n",
            if unfinished == 1 { "cell" } else { "cells" },
            if unfinished == 1 { "has" } else { "have" }
        ));
    }
    w.table_two(&sw);
    w.mrr(&sw)?;
    w.rank_counts(&sw)?;
    w.weights(&sw)?;
    w.per_cell(&sw);
    w.cost_per_method(&sw);
    w.finish()
}
