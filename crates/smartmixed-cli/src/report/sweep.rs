//! The report of a sweep: Table II (top three per architecture), MRR per method (eq. 11,
//! Fig. 4), rank counts (Fig. 5), the mean weight between activation groups (Fig. 6),
//! and, with two or more seeds, mean and standard deviation per cell and MRR spread.

use std::collections::BTreeMap;
use std::path::Path;

use super::ranking::{mean_reciprocal_rank, mean_std, rank_counts, ranks, WeightHeatmap};
use crate::write_atomic;
use anyhow::{Context, Result};
use smartmixed_core::sweep::{SweepConfig, SMARTMIXED};
use smartmixed_core::PAPER_POOL;
use smartmixed_train::Hidden;
use smartmixed_train::{checkpoint, Cpu};

use super::plot::Figure;
use super::TIE_RULE;
use crate::sweep::{finished_cells, Finished, SWEEP_CONFIG};

/// Fig. 6 over every SmartMixed cell's phase-2 checkpoint: hidden-to-hidden matrices only.
fn heatmap(cells: &[&Finished], pool: &[String]) -> Result<WeightHeatmap> {
    let dev = Cpu::default();
    let mut h = WeightHeatmap::new(pool.to_vec());
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
    }
    Ok(h)
}

pub fn report(dir: &Path, out: &Path) -> Result<Vec<String>> {
    let cells = finished_cells(dir)?;
    if cells.is_empty() {
        anyhow::bail!("{}: no finished cells", dir.display());
    }
    let config = SweepConfig::from_file(&dir.join(SWEEP_CONFIG)).ok();
    let mut methods: Vec<String> = config
        .as_ref()
        .map(|c| c.sweep.methods.clone())
        .unwrap_or_default();
    for f in &cells {
        if !methods.contains(&f.cell.method) {
            methods.push(f.cell.method.clone());
        }
    }
    let pool: Vec<String> = config
        .as_ref()
        .map(|c| c.sweep.pool.clone())
        .unwrap_or_else(|| PAPER_POOL.iter().map(|s| s.to_string()).collect());
    // accuracy[(arch, method)][seed]
    let mut acc: BTreeMap<(usize, String), BTreeMap<u64, f64>> = BTreeMap::new();
    // Full widths (input and output from the data) per architecture number.
    let mut widths: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for f in &cells {
        let last = f.summary.phases.last().context("a run has phases")?;
        acc.entry((f.cell.architecture, f.cell.method.clone()))
            .or_default()
            .insert(f.cell.seed, last.test_accuracy);
        widths.insert(f.cell.architecture, f.summary.architecture.clone());
    }
    let seeds: Vec<u64> = {
        let mut s: Vec<u64> = cells.iter().map(|f| f.cell.seed).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    let archs: Vec<usize> = widths.keys().copied().collect();
    let mean_acc = |a: usize, m: &str| {
        acc.get(&(a, m.to_string()))
            .map(|by_seed| mean_std(&by_seed.values().copied().collect::<Vec<_>>()))
    };
    let per_arch: Vec<Vec<(String, usize)>> = archs
        .iter()
        .map(|&a| {
            ranks(
                &methods
                    .iter()
                    .filter_map(|m| Some((m.clone(), mean_acc(a, m)?.0)))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();

    let mut md = format!(
        "# SmartMixed sweep report\n\nSweep directory: `{}`; {} finished cells; {} architectures; methods {}; seeds {:?}.\n\n{TIE_RULE} Methods are ranked per architecture by test accuracy{}.\n\n",
        dir.display(),
        cells.len(),
        archs.len(),
        methods.join(", "),
        seeds,
        if seeds.len() > 1 { " averaged over seeds" } else { "" }
    );
    let mut files = Vec::new();

    md.push_str("## Table II: top three per architecture\n\n| # | Architecture | 1st | 2nd | 3rd |\n|---|---|---|---|---|\n");
    for (i, &a) in archs.iter().enumerate() {
        let mut r = per_arch[i].clone();
        r.sort_by(|x, y| x.1.cmp(&y.1).then_with(|| x.0.cmp(&y.0)));
        let mut top: Vec<String> = r
            .iter()
            .take(3)
            .map(|(m, k)| {
                format!(
                    "{m} ({k}, {:.2}%)",
                    100.0 * mean_acc(a, m).map_or(0.0, |v| v.0)
                )
            })
            .collect();
        top.resize(3, "-".into());
        md.push_str(&format!(
            "| {a} | {:?} | {} |\n",
            widths[&a],
            top.join(" | ")
        ));
    }

    let mrr = mean_reciprocal_rank(&per_arch, &methods);
    md.push_str("\n## Mean Reciprocal Rank (eq. 11, Fig. 4)\n\n| Method | MRR |");
    let per_seed_mrr: Vec<Vec<(String, f64)>> = if seeds.len() > 1 {
        seeds
            .iter()
            .map(|s| {
                let pa: Vec<Vec<(String, usize)>> = archs
                    .iter()
                    .map(|&a| {
                        ranks(
                            &methods
                                .iter()
                                .filter_map(|m| {
                                    Some((m.clone(), *acc.get(&(a, m.clone()))?.get(s)?))
                                })
                                .collect::<Vec<_>>(),
                        )
                    })
                    .collect();
                mean_reciprocal_rank(&pa, &methods)
            })
            .collect()
    } else {
        Vec::new()
    };
    if per_seed_mrr.is_empty() {
        md.push_str("\n|---|---|\n");
    } else {
        md.push_str(" per-seed MRR (mean ± sd) |\n|---|---|---|\n");
    }
    for (i, (m, v)) in mrr.iter().enumerate() {
        md.push_str(&format!("| {m} | {v:.4} |"));
        if !per_seed_mrr.is_empty() {
            let vals: Vec<f64> = per_seed_mrr.iter().map(|p| p[i].1).collect();
            let (mean, sd) = mean_std(&vals);
            md.push_str(&format!(" {mean:.4} ± {sd:.4} |"));
        }
        md.push('\n');
    }
    let fig = Figure::Bars {
        title: "Mean Reciprocal Rank per method".into(),
        y_label: "MRR".into(),
        groups: methods.clone(),
        series: vec!["MRR".into()],
        values: mrr.iter().map(|(_, v)| vec![*v]).collect(),
    };
    let saved = fig.save(&out.join("fig4-mrr"))?;
    md.push_str(&format!("\n![MRR]({})\n", saved[1]));
    files.extend(saved);
    if !per_seed_mrr.is_empty() {
        let fig = Figure::Bars {
            title: "MRR per method, one bar per seed (the spread across seeds)".into(),
            y_label: "MRR".into(),
            groups: methods.clone(),
            series: seeds.iter().map(|s| format!("seed {s}")).collect(),
            values: (0..methods.len())
                .map(|m| per_seed_mrr.iter().map(|p| p[m].1).collect())
                .collect(),
        };
        let saved = fig.save(&out.join("fig4b-mrr-per-seed"))?;
        md.push_str(&format!("\n![MRR per seed]({})\n", saved[1]));
        files.extend(saved);
    }

    let counts = rank_counts(&per_arch, &methods);
    md.push_str(&format!(
        "\n## Rank counts (Fig. 5)\n\n| Method | {} |\n|---|{}\n",
        (1..=methods.len())
            .map(|r| format!("rank {r}"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(methods.len())
    ));
    for (m, c) in methods.iter().zip(&counts) {
        md.push_str(&format!(
            "| {m} | {} |\n",
            c.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    let fig = Figure::Bars {
        title: "How often each method took each rank".into(),
        y_label: "architectures".into(),
        groups: methods.clone(),
        series: (1..=methods.len()).map(|r| format!("rank {r}")).collect(),
        values: counts
            .iter()
            .map(|c| c.iter().map(|&v| v as f64).collect())
            .collect(),
    };
    let saved = fig.save(&out.join("fig5-rank-counts"))?;
    md.push_str(&format!("\n![rank counts]({})\n", saved[1]));
    files.extend(saved);

    let smart: Vec<&Finished> = cells
        .iter()
        .filter(|f| f.cell.method == SMARTMIXED)
        .collect();
    let h = heatmap(&smart, &pool)?;
    let values: Vec<Vec<Option<f64>>> = (0..pool.len())
        .map(|s| (0..pool.len()).map(|t| h.mean(s, t)).collect())
        .collect();
    md.push_str(&format!(
        "\n## Mean weight between activation groups (Fig. 6)\n\nPooled over the hidden-to-hidden weight matrices of {} SmartMixed cells (phase-2 best checkpoints; input-to-hidden and hidden-to-output matrices left out). Rows: source activation; columns: target.\n\n| source \\ target | {} |\n|---|{}\n",
        smart.len(),
        pool.join(" | "),
        "---|".repeat(pool.len())
    ));
    for (s, row) in values.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(t, v)| v.map_or("n/a".into(), |v| format!("{v:+.5} (n={})", h.count(s, t))))
            .collect();
        md.push_str(&format!("| {} | {} |\n", pool[s], cells.join(" | ")));
    }
    let fig = Figure::Heatmap {
        title: "Mean weight from source to target activation group".into(),
        rows: pool.clone(),
        cols: pool.clone(),
        values,
    };
    let saved = fig.save(&out.join("fig6-weight-heatmap"))?;
    md.push_str(&format!("\n![weight heatmap]({})\n", saved[1]));
    files.extend(saved);

    md.push_str(&format!(
        "\n## Test accuracy per cell{}\n\n| # | {} |\n|---|{}\n",
        if seeds.len() > 1 {
            " (mean ± sd over seeds)"
        } else {
            ""
        },
        methods.join(" | "),
        "---|".repeat(methods.len())
    ));
    for &a in &archs {
        let row: Vec<String> = methods
            .iter()
            .map(|m| match mean_acc(a, m) {
                Some((mean, sd)) if seeds.len() > 1 => {
                    format!("{:.2} ± {:.2}%", 100.0 * mean, 100.0 * sd)
                }
                Some((mean, _)) => format!("{:.2}%", 100.0 * mean),
                None => "-".into(),
            })
            .collect();
        md.push_str(&format!("| {a} | {} |\n", row.join(" | ")));
    }
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    files.push("report.md".into());
    Ok(files)
}
